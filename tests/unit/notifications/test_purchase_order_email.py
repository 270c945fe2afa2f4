"""Issue 13: a sent purchase order is emailed to its supplier (none without an address)."""

from services.notifications.adapters import JinjaTemplates
from services.notifications.domain import PURCHASE_ORDER_SENT, plan_email

SENT = {
    "purchase_order_id": "po_1",
    "supplier_id": "acme",
    "supplier_name": "Acme Mugs",
    "supplier_email": "orders@acme.example",
    "location": "main",
    "lines": [{"sku": "MUG-1", "quantity": 20, "received": 0}],
    "expected_at": "2031-01-08T09:00:00Z",
}


def test_the_supplier_gets_the_lines_and_the_expected_date() -> None:
    email = plan_email("PurchaseOrderSent", SENT, "evt-1", "warehouse@backroom.local")

    assert email is not None
    assert (email.template, email.to, email.subject) == (
        PURCHASE_ORDER_SENT,
        "orders@acme.example",
        "po_1",
    )
    rendered = JinjaTemplates().render(email.template, email.context)
    assert rendered.subject == "Purchase order po_1"
    assert "Dear Acme Mugs" in rendered.text
    assert "MUG-1  x 20" in rendered.text
    assert "Expected by: 2031-01-08" in rendered.text


def test_one_email_per_purchase_order() -> None:
    first = plan_email("PurchaseOrderSent", SENT, "evt-1", "w@x.example")
    again = plan_email("PurchaseOrderSent", SENT, "evt-2", "w@x.example")
    assert first is not None and again is not None
    assert first.dedupe_key == again.dedupe_key


def test_a_supplier_without_an_email_address_gets_none() -> None:
    assert plan_email("PurchaseOrderSent", {**SENT, "supplier_email": None}, "e", "w@x.ex") is None


def test_a_supplier_webhook_is_an_ordinary_subscription() -> None:
    from services.notifications.domain import WEBHOOK_EVENT_TYPES

    assert "PurchaseOrderSent" in WEBHOOK_EVENT_TYPES
