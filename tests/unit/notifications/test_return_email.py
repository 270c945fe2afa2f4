"""The return-completed email (issue 12): one per return, to the customer, with the refund."""

from services.notifications import domain
from services.notifications.adapters import JinjaTemplates
from services.notifications.domain import plan_email

WAREHOUSE = "warehouse@backroom.local"


def completed(return_id: str, amount: int) -> dict[str, object]:
    return {
        "order_id": "o-7",
        "return_id": return_id,
        "customer_id": "alice",
        "email": "alice@example.com",
        "refund": {"amount": amount, "currency": "EUR"},
    }


def test_a_completed_return_mails_the_customer_its_refund() -> None:
    email = plan_email("ReturnCompleted", completed("r-1", 3000), "e-1", WAREHOUSE)
    assert email is not None
    assert (email.template, email.to, email.order_id) == (
        "return_completed",
        "alice@example.com",
        "o-7",
    )
    rendered = JinjaTemplates().render(email.template, email.context)
    assert "o-7" in rendered.subject
    assert "30.00" in rendered.text and "refunded" in rendered.text


def test_each_return_of_an_order_gets_its_own_email() -> None:
    first = plan_email("ReturnCompleted", completed("r-1", 100), "e-1", WAREHOUSE)
    again = plan_email("ReturnCompleted", completed("r-1", 100), "e-2", WAREHOUSE)
    second = plan_email("ReturnCompleted", completed("r-2", 100), "e-3", WAREHOUSE)
    assert first is not None and again is not None and second is not None
    assert first.dedupe_key == again.dedupe_key != second.dedupe_key
    assert "ReturnCompleted" in domain.EMAIL_EVENT_TYPES


def test_a_return_with_nothing_refunded_says_so() -> None:
    email = plan_email("ReturnCompleted", completed("r-1", 0), "e-1", WAREHOUSE)
    assert email is not None
    text = JinjaTemplates().render(email.template, email.context).text
    assert "Nothing was left to refund" in text
