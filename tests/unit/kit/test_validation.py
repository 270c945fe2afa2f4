"""The kit's pure input rules: Luhn and card numbers in tokens, ISO 4217 currencies, the string
rule and its document walk (issue 9, item 6)."""

from typing import Annotated

import pytest
from pydantic import BaseModel, ValidationError

from libs.events.common import ISO_4217_CURRENCIES, Money
from libs.kit.errors import FieldError
from libs.kit.validation import (
    CurrencyCode,
    NoCardNumber,
    contains_card_number,
    luhn_valid,
    suspect_json,
    unsafe_character,
    unsafe_fields,
)


@pytest.mark.parametrize(
    "number", ["4242424242424242", "4111111111111111", "5555555555554444", "378282246310005"]
)
def test_test_card_numbers_pass_luhn(number: str) -> None:
    assert luhn_valid(number)


def test_a_changed_digit_fails_luhn() -> None:
    assert not luhn_valid("4242424242424241")


@pytest.mark.parametrize(
    "token",
    [
        "tok_4242424242424242",
        "4242424242424242",
        "tok_visa_4111111111111111_x",
        "tok_4242_4242_4242_4242",
        "tok_4242-4242-4242-4242",
        "tok_378282246310005",  # 15 digits (Amex)
        "tok_6011111111111117",
    ],
)
def test_card_numbers_in_tokens_are_found(token: str) -> None:
    assert contains_card_number(token)


@pytest.mark.parametrize(
    "token",
    [
        "tok_visa",
        "tok_chargeDeclined",
        "tok_1N3T00LkdIwHu7ixt44h1F8k",  # a real provider token: short digit runs
        "tok_4242424242424241",  # 16 digits failing Luhn
        "tok_424242424242",  # 12 digits
        "tok_42424242424242424242",  # 20 digits: longer than any card number
    ],
)
def test_provider_tokens_are_not_card_numbers(token: str) -> None:
    assert not contains_card_number(token)


class PaymentIn(BaseModel):
    token: Annotated[str, NoCardNumber]


def test_the_card_number_error_never_repeats_the_number() -> None:
    with pytest.raises(ValidationError) as caught:
        PaymentIn(token="tok_4242424242424242")
    [error] = caught.value.errors(include_input=False)
    assert error["loc"] == ("token",) and error["type"] == "card_number"
    assert "4242" not in error["msg"]


class PriceIn(BaseModel):
    currency: CurrencyCode


@pytest.mark.parametrize("code", ["EUR", "USD", "JPY", "GBP", "CHF", "KWD"])
def test_active_currencies_are_accepted(code: str) -> None:
    assert PriceIn(currency=code).currency == code


@pytest.mark.parametrize("code", ["AAA", "XXX", "XTS", "XAU", "DEM", "HRK", "eur", "EURO", ""])
def test_unknown_withdrawn_and_non_money_codes_are_refused(code: str) -> None:
    with pytest.raises(ValidationError) as caught:
        PriceIn(currency=code)
    assert caught.value.errors()[0]["type"] == "currency"


def test_the_currency_list_is_three_upper_case_letters_each() -> None:
    assert len(ISO_4217_CURRENCIES) > 150
    assert all(len(c) == 3 and c.isalpha() and c.isupper() for c in ISO_4217_CURRENCIES)


def test_events_keep_accepting_any_three_letters() -> None:
    # Readers validate events: a stricter Money could refuse events already published.
    assert Money(amount=1, currency="AAA").currency == "AAA"


@pytest.mark.parametrize("char", ["\x00", "\x1f", "\x7f", "\x80", "\x9f", "\t", "\n", "\r"])
def test_controls_are_unsafe_in_single_line_text(char: str) -> None:
    assert unsafe_character(f"a{char}b") is not None


def test_multiline_text_allows_tab_and_newlines_only() -> None:
    assert unsafe_character("a\r\n\tb", multiline=True) is None
    assert unsafe_character("a\x00b", multiline=True) is not None


@pytest.mark.parametrize("text", ["Paris", "Zürich", "東京", "emoji \U0001f600", " ", "a\u00a0b"])
def test_ordinary_text_is_safe(text: str) -> None:
    assert unsafe_character(text) is None


def test_the_walk_names_fields_like_the_kit() -> None:
    document = {"lines": [{"sku": "a"}, {"sku": "b\x00"}], "x": {"k\x01": "v"}, "n": float("nan")}
    assert [e.field for e in unsafe_fields(document)] == ["lines[1].sku", "x", "n"]


def test_the_walk_survives_deep_nesting() -> None:
    document: object = "\x00"
    for _ in range(50_000):
        document = [document]
    [error] = unsafe_fields(document)
    assert isinstance(error, FieldError) and error.field.endswith("[0]")


def test_clean_bodies_skip_the_walk() -> None:
    body = b'{"lines": [{"sku": "MUG-1", "quantity": 2}], "region": "FR",\n  "payment": {"token": "tok_visa"}, "shipping_address": {"city": "Z\xc3\xbcrich"}}'
    assert not suspect_json(body)
    assert suspect_json(b'{"a": "\\u0000"}') and suspect_json(b'{"a": "\\n"}')
