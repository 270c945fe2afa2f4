"""The owed-call queries on the real PostgreSQL: SKIP LOCKED claims, leases, single outcomes.

Runs before the package's service starts (its charger would claim these rows too)."""

import asyncio
import uuid

from libs.kit.db import Database
from services.payments.db import Store
from services.payments.domain import OrderPayment, Trace, instruct, owe_capture


async def _owe_capture(db: Database) -> str:
    order_id = f"ord-sql-{uuid.uuid4().hex}"
    async with db.transaction() as session:
        store = Store(session)
        order = await store.orders.lock(order_id, "cust-sql", stock_reserved=True)
        order = instruct(order, 500, "EUR", "tok_visa")
        await store.orders.save(owe_capture(order), intent=Trace("req-sql", "evt-sql"))
    return order_id


async def _claim(db: Database, lease_s: float, mine: set[str]) -> list[str]:
    async with db.transaction() as session:
        intents = await Store(session).orders.claim_due(1000, lease_s)
    return [i.order_id for i in intents if i.order_id in mine]


async def test_a_claim_skips_what_another_claim_holds_and_never_waits_for_it(
    db: Database,
) -> None:
    mine = {await _owe_capture(db) for _ in range(3)}
    async with db.transaction() as session:
        held = await Store(session).orders.claim_due(1000, 30.0)
        # While the first claim's transaction is open, a second one takes none of its rows.
        second = await asyncio.wait_for(_claim(db, 30.0, mine), 5)
        assert mine <= {i.order_id for i in held}
        assert second == []
    assert await _claim(db, 30.0, mine) == []  # committed: leased for 30 s


async def test_a_lease_that_ended_lets_the_next_claim_take_the_call_again(db: Database) -> None:
    order_id = await _owe_capture(db)
    async with db.transaction() as session:
        [first] = [
            i for i in await Store(session).orders.claim_due(1000, 0.3) if i.order_id == order_id
        ]
    assert (first.operation, first.attempts, first.amount, first.closed) == (
        "capture",
        1,
        500,
        False,
    )
    assert first.token == "tok_visa" and first.trace == Trace("req-sql", "evt-sql")
    assert await _claim(db, 30.0, {order_id}) == []
    await asyncio.sleep(0.4)
    async with db.transaction() as session:
        [again] = [
            i for i in await Store(session).orders.claim_due(1000, 30.0) if i.order_id == order_id
        ]
    assert again.attempts == 2 and again.may_have_run


async def test_an_outcome_is_recorded_once_and_erases_the_token(db: Database) -> None:
    order_id = await _owe_capture(db)
    async with db.transaction() as session:
        settled = await Store(session).orders.settle_capture(order_id, "captured", "ch_sbx_1")
    async with db.transaction() as session:
        again = await Store(session).orders.settle_capture(order_id, "captured", "ch_sbx_1")
        row = await Store(session).orders.lock(order_id)

    assert isinstance(settled, OrderPayment)
    assert (settled.capture_status, settled.capture_ref, settled.token) == (
        "captured",
        "ch_sbx_1",
        None,
    )
    assert again is None
    assert row.capture_status == "captured" and row.token is None
    assert await _claim(db, 30.0, {order_id}) == []  # nothing owed any more
