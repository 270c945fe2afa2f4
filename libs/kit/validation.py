"""Input rules every service applies at its HTTP edge: no control characters in any string a client
sends, numbers that are finite, currencies that ISO 4217 knows, payment tokens that are not card
numbers. Pure functions and pydantic types (no web framework): `libs.kit.app` applies the string
rule to every request, api.py modules use the types on their fields."""

import functools
import math
import re
import types
from collections.abc import Iterator
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Strict,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticCustomError

from libs.events.common import ISO_4217_CURRENCIES, is_iso_currency
from libs.kit.errors import FieldError

# C0 controls, DEL and C1 controls, and lone UTF-16 surrogates (JSON can spell one, "\ud800",
# and no database or encoder accepts it). PostgreSQL refuses NUL in text and jsonb outright.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
# In a field documented as multi-line text TAB, LF and CR are allowed.
_UNSAFE_MULTILINE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")

# A cheap test on the raw body that every body with an unsafe string or a non-finite number
# passes (and a clean body almost never does), so only those pay for a walk of the document.
# Measured on a POST /orders body: about 5 us (one alternation regex doing all of it took 16).
# A backslash starts every escape that can spell a control character or a surrogate; raw C0
# bytes (TAB, LF, CR may sit between tokens) also catch every UTF-16/32 body; C2 and ED lead
# the UTF-8 of C1 controls and of surrogates.
_SUSPECT_BYTES = re.compile(rb"[\\\x00-\x08\x0b\x0c\x0e-\x1f\x7f\xc2\xed]")
# What Python's json reads as a non-finite float (PostgreSQL's jsonb has neither NaN nor
# Infinity): the two words, an exponent of three digits, or 300 digits in a row.
_BIG_EXPONENT = re.compile(rb"[eE][+-]?[0-9]{3}")
_LONG_DIGITS = re.compile(rb"[0-9]{300}")
# The same for a raw query string: percent-escapes of C0, DEL and C1 (UTF-8 C2 80..9F), raw bytes.
_SUSPECT_QUERY = re.compile(
    rb"%(?:[01][0-9a-fA-F]|7[fF]|[cC]2%[89][0-9a-fA-F])|[\x00-\x1f\x7f-\x9f]"
)
MAX_ERRORS = 20


# The rules above as JSON Schema patterns (ECMA-262), for the API document: no C0/C1 control
# character; in multi-line text TAB, LF and CR are allowed.
CLEAN_TEXT_PATTERN = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"
CLEAN_MULTILINE_PATTERN = "^[^\\u0000-\\u0008\\u000b\\u000c\\u000e-\\u001f\\u007f-\\u009f]*$"


class Multiline:
    """Marks a field documented as multi-line text: `Annotated[str, MULTILINE]`. Requests'
    strings are checked with TAB, LF and CR allowed there; the schema says so (in requests and in
    the responses that show the text back)."""

    def __repr__(self) -> str:
        return "MULTILINE"

    def __get_pydantic_json_schema__(self, core_schema: Any, handler: Any) -> dict[str, Any]:
        schema: dict[str, Any] = handler(core_schema)
        for part in [schema, *schema.get("anyOf", [])]:
            if part.get("type") == "string" and "pattern" not in part:
                part["pattern"] = CLEAN_MULTILINE_PATTERN
        return schema


MULTILINE = Multiline()


def unsafe_character(text: str, *, multiline: bool = False) -> str | None:
    """Why `text` may not be accepted (a message naming the character, never echoing the text),
    or None when it is fine."""
    found = (_UNSAFE_MULTILINE if multiline else _UNSAFE).search(text)
    if found is None:
        return None
    code = ord(found.group())
    if 0xD800 <= code <= 0xDFFF:
        return f"must be valid Unicode text (an unpaired surrogate at position {found.start()})"
    return f"must not contain control characters (U+{code:04X} at position {found.start()})"


def suspect_json(body: bytes) -> bool:
    return (
        _SUSPECT_BYTES.search(body) is not None
        or b"NaN" in body
        or b"Infinity" in body
        or _BIG_EXPONENT.search(body) is not None
        or (len(body) >= 300 and _LONG_DIGITS.search(body) is not None)
    )


def suspect_query(query_string: bytes) -> bool:
    return _SUSPECT_QUERY.search(query_string) is not None


# A position in a document: (parent position, key or index), None for the document itself.
# Linked rather than a tuple per value, so a deep document costs linear time, not quadratic.
_Position = tuple["_Position", str | int] | None


def unsafe_fields(
    document: Any, multiline: frozenset[tuple[str, ...]] = frozenset()
) -> list[FieldError]:
    """Every string (keys included) and number of a parsed JSON document that breaks the rule,
    in document order, each named by its path as `libs.kit.problems.field_name` names a
    field (`lines[0].sku`; a bad key is reported on the object holding it, `body` at the top).
    `multiline` holds the paths (list indices written `*`) of multi-line text fields. Iterative:
    a deeply nested document cannot exhaust the stack."""
    errors: list[FieldError] = []
    stack: list[tuple[_Position, Any]] = [(None, document)]
    while stack and len(errors) < MAX_ERRORS:
        position, value = stack.pop()
        if isinstance(value, str):
            problem = unsafe_character(value)
            if problem is not None and _shape(position) in multiline:
                problem = unsafe_character(value, multiline=True)
            if problem is not None:
                errors.append(FieldError(_name(position), problem))
        elif isinstance(value, dict):
            for key in value:
                problem = unsafe_character(key) if isinstance(key, str) else None
                if problem is not None:
                    errors.append(FieldError(_name(position) or "body", f"a key {problem}"))
            stack.extend(((position, k), v) for k, v in reversed(value.items()))
        elif isinstance(value, list):
            stack.extend(((position, i), v) for i, v in reversed(list(enumerate(value))))
        elif isinstance(value, float) and not math.isfinite(value):
            errors.append(FieldError(_name(position) or "body", "must be a finite number"))
    return errors[:MAX_ERRORS]


def _path(position: _Position) -> list[str | int]:
    parts: list[str | int] = []
    while position is not None:
        position, part = position
        parts.append(part)
    return parts[::-1]


def _shape(position: _Position) -> tuple[str, ...]:
    return tuple("*" if isinstance(p, int) else p for p in _path(position))


def _name(position: _Position) -> str:
    # The same spelling as libs.kit.problems.field_name (which this pure module cannot import).
    name = ""
    for part in _path(position):
        if isinstance(part, int):
            name += f"[{part}]"
        else:
            name += ("." if name else "") + part
    return name


@functools.cache
def multiline_fields(model: type[BaseModel]) -> frozenset[tuple[str, ...]]:
    """Paths of the fields of `model` (and of the models it nests, lists written `*`) marked
    MULTILINE. Computed once per model."""
    return frozenset(_multiline_paths(model, depth=0))


def _multiline_paths(model: type[BaseModel], depth: int) -> Iterator[tuple[str, ...]]:
    if depth > 5:  # a recursive model: deeper fields stay single-line
        return
    for name, field in model.model_fields.items():
        key = field.alias or name
        if any(isinstance(m, Multiline) for m in field.metadata):
            yield (key,)
        for prefix, nested in _nested_models(field.annotation):
            for path in _multiline_paths(nested, depth + 1):
                yield (key, *prefix, *path)


def _nested_models(annotation: Any) -> Iterator[tuple[tuple[str, ...], type[BaseModel]]]:
    """The models an annotation holds: `M`, `M | None`, `list[M]` (prefix `*`)."""
    origin = get_origin(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield (), annotation
    elif origin is Annotated:
        yield from _nested_models(get_args(annotation)[0])
    elif origin in (Union, types.UnionType):
        for arg in get_args(annotation):
            yield from _nested_models(arg)
    elif origin in (list, tuple, set, frozenset):
        for arg in get_args(annotation):
            for prefix, nested in _nested_models(arg):
                yield ("*", *prefix), nested


def body_models(annotation: Any) -> list[type[BaseModel]]:
    """The request-body models of a route's body annotation (`M` or `M | None`)."""
    return [m for prefix, m in _nested_models(annotation) if not prefix]


# ---- currencies ----


def _iso_currency(code: str) -> str:
    if not is_iso_currency(code):
        raise PydanticCustomError(
            "currency", "must be an active ISO 4217 currency code (EUR, USD, JPY, ...)"
        )
    return code


CurrencyCode = Annotated[
    str,
    AfterValidator(_iso_currency),
    # The rule in the schema too (issue 14): a generated client or schemathesis sends only codes
    # the route accepts.
    WithJsonSchema({"type": "string", "enum": sorted(ISO_4217_CURRENCIES)}),
]
"""A currency a client names: three upper-case letters that ISO 4217 lists as active."""


# ---- card numbers ----

# A run of 13 to 19 digits, single spaces, dashes or underscores allowed between them (as people
# and careless clients write card numbers).
_DIGIT_RUN = re.compile(r"\d(?:[ _-]?\d){12,}")


def luhn_valid(digits: str) -> bool:
    """The Luhn (mod 10) checksum every payment card number carries."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        digit = ord(char) - 48
        if index % 2:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


def contains_card_number(text: str) -> bool:
    """Whether `text` holds a 13..19-digit run (separators aside) that passes Luhn: a primary
    account number, which must never be stored, logged or published."""
    for run in _DIGIT_RUN.finditer(text):
        digits = re.sub(r"\D", "", run.group())
        if 13 <= len(digits) <= 19 and luhn_valid(digits):
            return True
    return False


def _no_card_number(text: str) -> str:
    if contains_card_number(text):
        # The message never repeats the input (pydantic keeps it in `input`, which the kit's
        # problem+json handler does not render).
        raise PydanticCustomError(
            "card_number",
            "must be a payment provider's token, not a card number; tokenize the card first",
        )
    return text


NoCardNumber = AfterValidator(_no_card_number)
"""Refuses a string that contains a card number (`Annotated[str, NoCardNumber]`)."""


# --- strict request bodies (issue 14) ---

REQUEST_BODY = ConfigDict(extra="forbid", strict=True)
"""The config of every request-body model (`RequestBody` carries it): no field the schema does not name, and no lax
coercion the schema does not promise (`false` or "1" as an integer, 0 as a boolean): a body is
accepted exactly when it matches the documented JSON Schema. FastAPI validates the parsed JSON in
python mode, where strict refuses strings for datetimes, so those fields use `Timestamp`."""

# RFC 3339 as the schema's `date-time` format writes it (pydantic alone also reads "0" as 1970).
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})")


def _rfc3339_text(value: Any) -> Any:
    if isinstance(value, str) and _RFC3339.fullmatch(value):
        return value
    raise PydanticCustomError(
        "datetime_type", "must be an RFC 3339 date-time string (2026-01-31T12:00:00Z)"
    )


Timestamp = Annotated[AwareDatetime, Strict(False), BeforeValidator(_rfc3339_text)]
"""A date-time a client sends in a strict body: an RFC 3339 string, never a number."""


def _is_integer(annotation: Any) -> bool:
    origin = get_origin(annotation)
    if origin is Annotated:
        return _is_integer(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return any(_is_integer(arg) for arg in get_args(annotation))
    return annotation is int


@functools.cache
def _integer_fields(model: type[BaseModel]) -> tuple[str, ...]:
    return tuple(
        field.alias or name
        for name, field in model.model_fields.items()
        if _is_integer(field.annotation)
    )


class RequestBody(BaseModel):
    """The base of every request-body model: REQUEST_BODY's strictness, with one allowance JSON
    Schema makes: an `integer` may be written with a zero fraction (`5.0`)."""

    model_config = REQUEST_BODY

    @model_validator(mode="before")
    @classmethod
    def _integral_numbers(cls, data: Any) -> Any:
        names = _integer_fields(cls)
        if not names or not isinstance(data, dict):
            return data
        fixed: dict[str, Any] | None = None
        for name in names:
            value = data.get(name)
            if isinstance(value, float) and value.is_integer():
                fixed = fixed if fixed is not None else dict(data)
                fixed[name] = int(value)
        return data if fixed is None else fixed
