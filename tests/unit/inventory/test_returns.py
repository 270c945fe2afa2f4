"""A received return on in-memory repositories (issue 12): resellable units are restocked and
announced, damaged ones written off with a movement and no count change, once per return."""

import pytest

from libs.events.common import Money
from libs.events.inventory import StockLevelChanged, StockReturned
from libs.events.orders import ReceivedLine, ReturnReceived
from services.inventory import service
from services.inventory.domain import Movement, StockLevel
from tests.support.fakes import FakeTx, MutableClock
from tests.unit.inventory.fakes import START, AuditEntry, FakeStore

Tx = FakeTx[FakeStore]


@pytest.fixture
def tx() -> Tx:
    store = FakeStore(MutableClock(START))
    # After the order of 2 mugs and 1 tea shipped: on_hand fell when it was committed.
    store.items.put("mug", 3, reorder_point=0)
    store.items.put("tea", 9, reorder_point=0)
    return FakeTx(store)


def received(*lines: tuple[str, int, str], return_id: str = "r-1") -> ReturnReceived:
    return ReturnReceived(
        order_id="o-1",
        return_id=return_id,
        customer_id="alice",
        lines=[ReceivedLine(sku=s, quantity=q, condition=c) for s, q, c in lines],
        refund=Money(amount=100, currency="EUR"),
    )


async def test_resellable_units_are_restocked_and_damaged_ones_written_off(tx: Tx) -> None:
    taken = await service.take_back_return(
        tx, received(("mug", 1, "resellable"), ("mug", 1, "damaged"), ("tea", 1, "damaged"))
    )

    assert taken
    assert tx.store.items.level("mug") == StockLevel(on_hand=4, reserved=0, reorder_point=0)
    assert tx.store.items.level("tea").on_hand == 9
    assert [e for e in tx.store.movements.entries if e.reason.startswith("return_")] == [
        AuditEntry(Movement("mug", 1, 0, 4, 0), "return_restock", "o-1"),
        AuditEntry(Movement("mug", 0, 0, 4, 0), "return_write_off", "o-1"),
        AuditEntry(Movement("tea", 0, 0, 9, 0), "return_write_off", "o-1"),
    ]
    [event] = [e for e in tx.events.emitted if isinstance(e, StockReturned)]
    assert (event.order_id, event.return_id) == ("o-1", "r-1")
    assert [(ln.sku, ln.quantity) for ln in event.restocked] == [("mug", 1)]
    assert [(ln.sku, ln.quantity) for ln in event.written_off] == [("mug", 1), ("tea", 1)]
    levels = [e for e in tx.events.emitted if isinstance(e, StockLevelChanged)]
    assert [(e.sku, e.on_hand, e.available, e.reason) for e in levels] == [
        ("mug", 4, 4, "return_restock")
    ]


async def test_a_return_is_taken_back_once(tx: Tx) -> None:
    await service.take_back_return(tx, received(("mug", 2, "resellable")))
    again = await service.take_back_return(tx, received(("mug", 2, "resellable")))

    assert not again
    assert tx.store.items.level("mug").on_hand == 5
    assert len([e for e in tx.events.emitted if isinstance(e, StockReturned)]) == 1


async def test_a_sku_without_stock_here_is_left_out(tx: Tx) -> None:
    await service.take_back_return(
        tx, received(("ghost", 1, "resellable"), ("tea", 1, "resellable"))
    )

    [event] = [e for e in tx.events.emitted if isinstance(e, StockReturned)]
    assert [(ln.sku, ln.quantity) for ln in event.restocked] == [("tea", 1)]
    assert tx.store.items.level("tea").on_hand == 10
