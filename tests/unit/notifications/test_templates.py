"""Email templates render what a customer or the warehouse needs to read."""

from datetime import UTC, datetime
from email import message_from_bytes, policy

from services.notifications.adapters import JinjaTemplates, OutgoingEmail, build_message
from services.notifications.domain import plan_email
from services.notifications.settings import NotificationsSettings

render = JinjaTemplates().render

WAREHOUSE = "warehouse@backroom.local"


def eur(amount: int) -> dict[str, object]:
    return {"amount": amount, "currency": "EUR"}


CONFIRMED = {
    "order_id": "ord-42",
    "customer_id": "alice",
    "email": "alice@example.com",
    "lines": [
        {
            "sku": "MUG-1",
            "quantity": 2,
            "unit_price": eur(1250),
            "discount": eur(0),
            "tax": eur(500),
            "total": eur(3000),
        },
        {
            "sku": "TEA-7",
            "quantity": 10,
            "unit_price": eur(399),
            "discount": eur(200),
            "tax": eur(758),
            "total": eur(4548),
        },
    ],
    "total": eur(7548),
}


def test_receipt_shows_each_line_and_the_total() -> None:
    email = plan_email("OrderConfirmed", CONFIRMED, "ev-1", WAREHOUSE)
    assert email is not None
    rendered = render(email.template, email.context)
    assert rendered.subject == "Your order ord-42 is confirmed"
    assert "2 x MUG-1 at EUR 12.50, discount EUR 0.00, tax EUR 5.00: EUR 30.00" in rendered.text
    assert "10 x TEA-7 at EUR 3.99, discount EUR 2.00, tax EUR 7.58: EUR 45.48" in rendered.text
    assert "Total: EUR 75.48" in rendered.text


def test_rejection_says_why() -> None:
    data = {"order_id": "ord-1", "customer_id": "bob", "reason": "payment_declined"}
    email = plan_email("OrderRejected", data, "ev", WAREHOUSE)
    assert email is not None
    rendered = render(email.template, email.context)
    assert "ord-1" in rendered.subject
    assert "your payment was declined" in rendered.text


def test_cancellation_and_shipping_emails() -> None:
    cancelled = plan_email(
        "OrderCancelled",
        {"order_id": "ord-2", "customer_id": "c", "reason": "customer_request"},
        "ev",
        WAREHOUSE,
    )
    shipped = plan_email(
        "OrderShipped",
        {"order_id": "ord-3", "customer_id": "c", "tracking": {"carrier": "DHL", "number": "JD1"}},
        "ev",
        WAREHOUSE,
    )
    assert cancelled is not None and shipped is not None
    cancelled_text = render(cancelled.template, cancelled.context)
    assert "cancelled because you asked us to cancel it" in cancelled_text.text
    shipped_text = render(shipped.template, shipped.context)
    assert shipped_text.subject == "Your order ord-3 has shipped"
    assert "Carrier: DHL" in shipped_text.text
    assert "Tracking number: JD1" in shipped_text.text


def test_low_stock_alert_names_sku_available_and_reorder_point() -> None:
    email = plan_email(
        "StockLow", {"sku": "MUG-1", "available": 3, "reorder_point": 5}, "ev", WAREHOUSE
    )
    assert email is not None
    rendered = render(email.template, email.context)
    assert rendered.subject == "Low stock: MUG-1 (3 available)"
    assert "Available:     3" in rendered.text
    assert "Reorder point: 5" in rendered.text


def test_message_carries_headers_that_survive_a_mail_parser() -> None:
    email = plan_email("OrderConfirmed", CONFIRMED, "ev-1", WAREHOUSE)
    assert email is not None
    settings = NotificationsSettings()
    rendered = render(email.template, email.context)
    outgoing = OutgoingEmail(
        to=email.to,
        subject=rendered.subject,
        text=rendered.text,
        message_id=email.message_id,
        template=email.template,
        date=datetime(2026, 1, 2, 3, 4, tzinfo=UTC),
    )
    message = build_message(settings.smtp_from, outgoing)
    parsed = message_from_bytes(message.as_bytes(), policy=policy.default)
    assert parsed["Message-ID"] == "<ord-42/order_confirmed@backroom>"
    assert parsed["To"] == "alice@example.com"
    assert parsed["From"] == "Backroom <orders@backroom.local>"
    assert "Total: EUR 75.48" in parsed.get_content()


DISPUTE = {
    "order_id": "o-7",
    "payment_id": "pay-7",
    "amount": eur(4200),
    "reason": "fraudulent",
    "provider_ref": "ch_sbx_7",
    "provider": "sandbox",
}


def test_a_dispute_is_mailed_to_the_operators_with_what_they_need_to_answer_it() -> None:
    email = plan_email("PaymentDisputed", DISPUTE, "ev-d1", WAREHOUSE, "ops@store.example")
    assert email is not None
    assert (email.to, email.order_id, email.template) == (
        "ops@store.example",
        "o-7",
        "payment_disputed",
    )
    rendered = JinjaTemplates().render(email.template, email.context)
    assert "o-7" in rendered.subject and "fraudulent" in rendered.subject
    for shown in ("pay-7", "EUR 42.00", "sandbox", "ch_sbx_7"):
        assert shown in rendered.text, shown
    # Each dispute event is its own alert; without an operator address there is none.
    again = plan_email("PaymentDisputed", DISPUTE, "ev-d2", WAREHOUSE, "ops@store.example")
    assert again is not None and again.dedupe_key != email.dedupe_key
    assert plan_email("PaymentDisputed", DISPUTE, "ev-d1", WAREHOUSE) is None


# --- shipments (issue 12) ---


def test_the_shipped_email_links_to_the_carriers_tracking_page() -> None:
    shipped = plan_email(
        "OrderShipped",
        {
            "order_id": "ord-5",
            "customer_id": "c",
            "tracking": {
                "carrier": "sandbox",
                "tracking_number": "SBX00000000000042",
                "tracking_url": "https://track.example/SBX00000000000042",
                "shipped_at": "2026-12-01T19:00:00+00:00",
            },
        },
        "ev",
        WAREHOUSE,
    )
    assert shipped is not None
    text = render(shipped.template, shipped.context).text
    assert "Track your parcel: https://track.example/SBX00000000000042" in text
    assert "Carrier: sandbox" in text
    assert "Tracking number: SBX00000000000042" in text


def test_the_delivered_email_goes_to_the_customer_once_per_order() -> None:
    data = {"order_id": "ord-6", "customer_id": "c-6", "email": "dora@example.com"}
    delivered = plan_email("OrderDelivered", data, "ev-1", WAREHOUSE)
    again = plan_email("OrderDelivered", data, "ev-2", WAREHOUSE)
    assert delivered is not None and again is not None
    assert delivered.template == "order_delivered"
    assert delivered.to == "dora@example.com"
    # A second OrderDelivered (a redelivery) has the same key: the queue keeps one mail.
    assert delivered.dedupe_key == again.dedupe_key == "ord-6:order_delivered"
    rendered = render(delivered.template, delivered.context)
    assert rendered.subject == "Your order ord-6 has been delivered"
    assert "ord-6 has been delivered" in rendered.text


def test_a_delivered_order_without_an_email_goes_to_the_customers_mailbox() -> None:
    delivered = plan_email(
        "OrderDelivered", {"order_id": "o", "customer_id": "c-7"}, "e", WAREHOUSE
    )
    assert delivered is not None
    assert delivered.to == "c-7@customers.backroom.local"
