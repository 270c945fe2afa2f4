"""Invoices and credit notes on the real PostgreSQL: numbers gap-free under concurrent
confirmations and after a rollback, and the documents through the in-process app's routes."""

import asyncio
import subprocess
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from libs.events import topics
from libs.events.payments import PaymentRefunded
from libs.kit.transactions import DatabaseUnitOfWork, SessionTx
from libs.kit.uow import utc_now
from services.orders import service
from services.orders.db import Store, invoices
from services.orders.domain import Invoicing
from tests.integration.orders.conftest import Priced
from tests.integration.orders.test_orders import (
    PROBLEM,
    confirmed,
    customer,
    eur,
    fact,
    placed,
    read,
)
from tests.support.auth import admin, bearer
from tests.support.eventually import eventually

PDF = "application/pdf"


class RolledBack(Exception):
    pass


def pdftotext(pdf: bytes) -> str:
    done = subprocess.run(
        ["/usr/bin/pdftotext", "-layout", "-", "-"], input=pdf, capture_output=True, check=True
    )
    return done.stdout.decode()


async def reserve(uow: DatabaseUnitOfWork[Store], order_id: str) -> None:
    """Inventory's StockReserved applied: the capture then confirms."""
    async with uow() as tx:
        assert await service.stock_reserved(tx, order_id)


async def confirm(uow: DatabaseUnitOfWork[Store], order_id: str, shop: Invoicing) -> None:
    async with uow() as tx:
        assert await service.payment_captured(tx, order_id, utc_now, shop)


async def numbers_of(uow: DatabaseUnitOfWork[Store], order_ids: list[str]) -> dict[str, str]:
    async with uow() as tx:
        assert isinstance(tx, SessionTx)
        rows = await tx.session.execute(
            select(invoices.c.order_id, invoices.c.number).where(invoices.c.order_id.in_(order_ids))
        )
        return {row.order_id: row.number for row in rows}


async def test_twenty_concurrent_confirmations_take_numbers_one_to_twenty_and_a_rollback_none(
    app: FastAPI, client: httpx.AsyncClient, pricing: Priced
) -> None:
    uow: DatabaseUnitOfWork[Store] = app.state.unit_of_work
    # Numbers are unique across stores: each store (here each run) has its own prefix.
    tag = uuid.uuid4().hex[:8]
    shop = Invoicing(store=f"it-{tag}", invoice_prefix=f"GAP{tag}")
    who = customer()
    orders = [(await placed(client, pricing, who))["id"] for _ in range(22)]
    batch, rolled_back, after = orders[:20], orders[20], orders[21]
    for order_id in orders:
        await reserve(uow, order_id)

    await asyncio.gather(*(confirm(uow, order_id, shop) for order_id in batch))

    year = datetime.now(UTC).year
    given = await numbers_of(uow, batch)
    assert sorted(given.values()) == [f"GAP{tag}-{year}-{n:06d}" for n in range(1, 21)]

    # A confirmation that rolls back (after taking number 21) gives the number back.
    with pytest.raises(RolledBack):
        async with uow() as tx:
            assert await service.payment_captured(tx, rolled_back, utc_now, shop)
            raise RolledBack
    assert await numbers_of(uow, [rolled_back]) == {}
    assert (await read(client, rolled_back))["status"] == "pending"
    await confirm(uow, after, shop)
    assert await numbers_of(uow, [after]) == {after: f"GAP{tag}-{year}-000021"}
    await confirm(uow, rolled_back, shop)
    assert await numbers_of(uow, [rolled_back]) == {rolled_back: f"GAP{tag}-{year}-000022"}


async def test_the_invoice_and_credit_notes_through_the_routes(
    client: httpx.AsyncClient, pricing: Priced
) -> None:
    who, other = customer(), customer()
    pending = await placed(client, pricing, who)
    response = await client.get(f"/orders/{pending['id']}/invoice", headers=bearer(who))
    assert response.status_code == 404 and response.headers["content-type"] == PROBLEM

    order = await confirmed(client, pricing, who)
    assert order["invoice"]["url"] == f"/orders/{order['id']}/invoice"
    number = order["invoice"]["number"]
    assert number.startswith(f"INV-{datetime.now(UTC).year}-")
    assert order["credit_notes"] == []

    response = await client.get(f"/orders/{order['id']}/invoice", headers=bearer(who))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == PDF
    assert response.headers["content-disposition"] == f'inline; filename="{number}.pdf"'
    text = pdftotext(response.content)
    # 2 x 12.50 + 4.99 at 20 %: net 29.99, tax 6.00 (5.00 + 1.00 rounded per line), 35.99.
    for expected in (number, "Subtotal: EUR 29.99", "Tax: EUR 6.00", "Total: EUR 35.99"):
        assert expected in text, expected
    assert "20%: taxable EUR 29.99, tax EUR 6.00" in text
    admin_copy = await client.get(f"/orders/{order['id']}/invoice", headers=admin())
    assert admin_copy.content == response.content
    response = await client.get(f"/orders/{order['id']}/invoice", headers=bearer(other))
    assert response.status_code == 404 and response.headers["content-type"] == PROBLEM

    # A partial refund, reported twice (a redelivery by another event id), is credited once.
    refund = PaymentRefunded(
        order_id=order["id"],
        payment_id=f"pay-{order['id']}",
        amount=eur(1200),
        provider_ref="re_sandbox",
        reason="damaged",
        refund_id=f"refund-{uuid.uuid4().hex[:8]}",
        fully_refunded=False,
    )
    await fact("payments", topics.PAYMENTS, refund, order["id"])
    await fact("payments", topics.PAYMENTS, refund, order["id"])
    # Then another refund: once it shows, the duplicate before it (same key, same partition)
    # was applied too.
    another = refund.model_copy(update={"amount": eur(300), "refund_id": f"{refund.refund_id}-b"})
    await fact("payments", topics.PAYMENTS, another, order["id"])

    async def credited() -> dict[str, Any]:
        seen = await read(client, order["id"])
        assert seen["refunded"] == {"amount": 1500, "currency": "EUR"}, seen["refunded"]
        return seen

    seen = await eventually(credited, timeout=30, what="the refund events applied")
    [note, second] = seen["credit_notes"]
    assert note["amount"] == {"amount": 1200, "currency": "EUR"}
    assert second["amount"] == {"amount": 300, "currency": "EUR"}
    year = datetime.now(UTC).year
    first_seq = int(note["number"].rsplit("-", 1)[1])
    assert second["number"] == f"CN-{year}-{first_seq + 1:06d}"  # consecutive: no gap
    assert note["url"] == f"/orders/{order['id']}/credit-notes/{note['number']}"
    response = await client.get(note["url"], headers=bearer(who))
    assert response.status_code == 200 and response.headers["content-type"] == PDF
    text = pdftotext(response.content)
    # 12.00 of 35.99 at 20 %: tax 12.00 x 6.00 / 35.99 = 2.0006 -> 2.00.
    for expected in (note["number"], number, "damaged", "Tax: EUR 2.00", "EUR 12.00"):
        assert expected in text, expected
    response = await client.get(note["url"], headers=bearer(other))
    assert response.status_code == 404
    response = await client.get(f"/orders/{order['id']}/credit-notes/nope", headers=bearer(who))
    assert response.status_code == 404
