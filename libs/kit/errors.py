"""Domain errors: what a use case raises when it cannot do what was asked. They know nothing of
HTTP; `libs/kit/problems.py` maps each kind to its problem+json answer in one place."""

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldError:
    """One bad input field, named as a client writes it (`lines[0].sku`)."""

    field: str
    message: str


class DomainError(Exception):
    """Base of the errors a use case raises on purpose; `detail` is safe to show a client."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NotFound(DomainError):
    """The thing asked for does not exist (or the caller may not know it does)."""

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} not found")


class Conflict(DomainError):
    """The request clashes with the current state (an illegal transition, a reused key)."""


class Forbidden(DomainError):
    """The caller is known but may not do this."""


class Invalid(DomainError):
    """The input is well formed but unacceptable; `errors` name the fields. `malformed` marks
    input that is not even shaped right (answered 400 rather than 422)."""

    def __init__(
        self, detail: str, errors: list[FieldError] | None = None, *, malformed: bool = False
    ) -> None:
        super().__init__(detail)
        self.errors = errors or []
        self.malformed = malformed

    @classmethod
    def field(cls, field: str, message: str) -> "Invalid":
        return cls(f"{field}: {message}", [FieldError(field, message)])


class Unavailable(DomainError):
    """Something this use case depends on is down or answered nonsense: try again later."""

    def __init__(self, detail: str, retry_after_s: int | None = None) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s
