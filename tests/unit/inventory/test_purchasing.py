"""Issue 13: suppliers, purchase orders and backorders on in-memory repositories: drafting once
per reorder-point crossing, the purchase order's transitions, receipts, and backorder splits and
fills."""

import pytest

from libs.events.inventory import (
    BackorderFilled,
    PurchaseOrderDrafted,
    PurchaseOrderReceived,
    PurchaseOrderSent,
    StockLevelChanged,
    StockReserved,
)
from libs.kit.errors import Conflict, Invalid
from services.inventory import domain, service
from services.inventory.domain import (
    BackorderPolicy,
    POLine,
    PurchaseOrderStatus,
    ReservationStatus,
    SupplierItem,
)
from tests.support.fakes import FakeTx, MutableClock
from tests.unit.inventory.fakes import START, TTL, FakeStore, order_placed

Tx = FakeTx[FakeStore]


@pytest.fixture
def tx() -> Tx:
    return FakeTx(FakeStore(MutableClock(START)))


def emitted(tx: Tx, kind: type) -> list:  # type: ignore[type-arg]
    return [e for e in tx.events.emitted if isinstance(e, kind)]


async def supplier(tx: Tx, sku: str = "mug", reorder: int = 20) -> None:
    await service.put_supplier(
        tx,
        "acme",
        name="Acme",
        email="orders@acme.example",
        lead_time_days=7,
        location="main",
        items=[SupplierItem(sku, reorder)],
    )


async def sent_po(tx: Tx, sku: str, quantity: int) -> str:
    po = await service.create_purchase_order(tx, "acme", None, [(sku, quantity)])
    await service.send_purchase_order(tx, po.id)
    return po.id


async def receive(tx: Tx, po_id: str, lines: list[tuple[str, int]], key: str = "k1") -> None:
    await service.receive_purchase_order(
        tx, po_id, idempotency_key=key, request_hash=key, location=None, lines=lines
    )


class TestDomain:
    def test_backorder_split_reserves_the_shelf_and_backorders_the_rest(self) -> None:
        split = domain.split_backorders(
            [("a", 5), ("b", 2)],
            {"a": 3, "b": 9},
            {"a": BackorderPolicy(allowed=True, on_order=10, waiting=6)},
        )
        assert split == domain.BackorderSplit(reserve=[("a", 3), ("b", 2)], backorder=[("a", 2)])

    def test_backorder_split_refuses_beyond_what_is_on_order_and_not_promised(self) -> None:
        levels = {"a": 0}
        policy = BackorderPolicy(allowed=True, on_order=10, waiting=8)
        assert domain.split_backorders([("a", 3)], levels, {"a": policy}) is None
        assert domain.split_backorders([("a", 2)], levels, {"a": policy}) is not None

    def test_backorder_split_needs_the_policy_and_a_known_sku(self) -> None:
        levels = {"a": 0}
        off = BackorderPolicy(allowed=False, on_order=10)
        assert domain.split_backorders([("a", 1)], levels, {"a": off}) is None
        assert domain.split_backorders([("x", 1)], levels, {}) is None

    def test_fill_is_first_come_first_served_by_whole_lines(self) -> None:
        def bo(i: int, q: int) -> domain.Backorder:
            return domain.Backorder(i, f"o{i}", "a", q, None, domain.BackorderStatus.WAITING, START)

        waiting = [bo(1, 2), bo(2, 5), bo(3, 1)]
        assert [b.id for b in domain.fill_fifo(waiting, 6)] == [1]  # 5 does not fit: 3 waits too
        assert [b.id for b in domain.fill_fifo(waiting, 8)] == [1, 2, 3]

    def test_purchase_order_transitions(self) -> None:
        po = domain.PurchaseOrder(
            "po", "s", "main", PurchaseOrderStatus.DRAFT, (POLine("a", 5),), None, "manual",
            START, None, START,
        )  # fmt: skip
        with pytest.raises(domain.PurchaseRuleViolation):
            domain.receive_po(po, [("a", 1)])  # never sent
        assert domain.send_po(po.status) is PurchaseOrderStatus.SENT
        sent = domain.PurchaseOrder(**{**po.__dict__, "status": PurchaseOrderStatus.SENT})
        lines, status = domain.receive_po(sent, [("a", 2)])
        assert (lines, status) == ((POLine("a", 5, 2),), PurchaseOrderStatus.PARTIALLY_RECEIVED)
        part = domain.PurchaseOrder(**{**sent.__dict__, "lines": lines, "status": status})
        with pytest.raises(domain.PurchaseRuleViolation):
            domain.cancel_po(part)  # goods arrived already
        with pytest.raises(domain.ReceiptRejected) as over:
            domain.receive_po(part, [("a", 4)])
        assert (over.value.index, over.value.field) == (0, "quantity")
        assert domain.receive_po(part, [("a", 3)])[1] is PurchaseOrderStatus.RECEIVED
        with pytest.raises(domain.PurchaseRuleViolation):
            domain.send_po(PurchaseOrderStatus.SENT)


class TestDrafting:
    async def test_crossing_the_reorder_point_drafts_once_per_crossing(self, tx: Tx) -> None:
        await supplier(tx)
        await service.set_stock(tx, "mug", 10, 3)

        for _ in range(3):  # 10 → 7 → 4 → 1: one crossing
            await service.adjust_stock(tx, "mug", -3, "damage")

        drafted = emitted(tx, PurchaseOrderDrafted)
        assert [(d.supplier_id, d.lines[0].sku, d.lines[0].quantity) for d in drafted] == [
            ("acme", "mug", 20)
        ]
        assert drafted[0].expected_at is not None

    async def test_an_open_purchase_order_holds_the_sku_across_crossings(self, tx: Tx) -> None:
        await supplier(tx)
        await service.set_stock(tx, "mug", 10, 3)
        await service.adjust_stock(tx, "mug", -8, "damage")  # crossing 1: drafted
        await service.adjust_stock(tx, "mug", 10, "restock")  # back above: re-armed
        await service.adjust_stock(tx, "mug", -10, "damage")  # crossing 2: the draft is open

        assert len(emitted(tx, PurchaseOrderDrafted)) == 1

    async def test_a_sku_without_supplier_item_drafts_nothing(self, tx: Tx) -> None:
        await supplier(tx, sku="plate")
        await service.set_stock(tx, "mug", 10, 3)
        await service.adjust_stock(tx, "mug", -8, "damage")

        assert emitted(tx, PurchaseOrderDrafted) == []


class TestReceipts:
    async def test_send_partial_and_full_receipt(self, tx: Tx) -> None:
        await supplier(tx)
        await service.set_stock(tx, "mug", 0, None)
        po_id = await sent_po(tx, "mug", 10)
        sent = emitted(tx, PurchaseOrderSent)[0]
        assert (sent.supplier_name, sent.supplier_email) == ("Acme", "orders@acme.example")
        assert (await service.item_supply(tx, "mug")).on_order == 10

        await receive(tx, po_id, [("mug", 4)], key="r1")
        assert (await service.get_purchase_order(tx, po_id)).status.value == "partially_received"
        assert tx.store.items.level("mug").on_hand == 4
        assert (await service.item_supply(tx, "mug")).on_order == 6
        assert emitted(tx, StockLevelChanged)[-1].on_order == 6

        await receive(tx, po_id, [("mug", 6)], key="r2")
        assert (await service.get_purchase_order(tx, po_id)).status.value == "received"
        assert [r.status for r in emitted(tx, PurchaseOrderReceived)] == [
            "partially_received",
            "received",
        ]
        assert (await service.item_supply(tx, "mug")).on_order == 0

    async def test_over_receipt_names_the_line_and_a_replay_changes_nothing(self, tx: Tx) -> None:
        await supplier(tx)
        await service.set_stock(tx, "mug", 0, None)
        po_id = await sent_po(tx, "mug", 5)

        with pytest.raises(Invalid) as over:
            await receive(tx, po_id, [("mug", 6)])
        assert over.value.errors[0].field == "lines[0].quantity"

        await receive(tx, po_id, [("mug", 2)], key="same")
        replay = await service.receive_purchase_order(
            tx, po_id, idempotency_key="same", request_hash="same", location=None, lines=[]
        )
        assert replay[1] is True
        assert tx.store.items.level("mug").on_hand == 2
        with pytest.raises(Conflict):
            await service.receive_purchase_order(
                tx, po_id, idempotency_key="same", request_hash="other", location=None, lines=[]
            )

    async def test_a_draft_cannot_receive_nor_a_received_one_be_cancelled(self, tx: Tx) -> None:
        await supplier(tx)
        await service.set_stock(tx, "mug", 0, None)
        draft = await service.create_purchase_order(tx, "acme", None, [("mug", 5)])
        with pytest.raises(Conflict):
            await receive(tx, draft.id, [("mug", 1)])
        po_id = await sent_po(tx, "mug", 5)
        await receive(tx, po_id, [("mug", 1)])
        with pytest.raises(Conflict):
            await service.cancel_purchase_order(tx, po_id)
        cancelled = await service.cancel_purchase_order(tx, draft.id)
        assert cancelled.status is PurchaseOrderStatus.CANCELLED


class TestBackorders:
    async def place(self, tx: Tx, order_id: str, lines: list[tuple[str, int]]) -> None:
        await service.reserve_for_order(
            tx, order_placed(order_id, lines, START + TTL), correlation_id=None,
            clock=tx.store.clock, grace_s=60,
        )  # fmt: skip

    async def backordered_sku(self, tx: Tx, on_hand: int = 1, on_order: int = 10) -> str:
        await supplier(tx)
        await service.set_stock(tx, "mug", on_hand, None)
        await service.set_backorders(tx, "mug", True, None)
        return await sent_po(tx, "mug", on_order)

    async def test_the_part_beyond_the_shelf_is_backordered(self, tx: Tx) -> None:
        await self.backordered_sku(tx)

        await self.place(tx, "o1", [("mug", 3)])

        reserved = emitted(tx, StockReserved)[0]
        assert [(b.sku, b.quantity) for b in reserved.backordered] == [("mug", 2)]
        po = next(iter(tx.store.purchasing.pos.values()))
        assert reserved.backordered[0].expected_at == po.expected_at is not None
        assert tx.store.items.level("mug").reserved == 1
        assert (await service.item_supply(tx, "mug")).waiting == 2

    async def test_without_the_policy_the_order_fails_as_before(self, tx: Tx) -> None:
        await self.backordered_sku(tx)
        await service.set_backorders(tx, "mug", False, None)

        await self.place(tx, "o1", [("mug", 3)])

        assert emitted(tx, StockReserved) == []
        assert tx.store.reservations.rows["o1"].status is ReservationStatus.FAILED

    async def test_a_receipt_fills_a_live_reservation(self, tx: Tx) -> None:
        po_id = await self.backordered_sku(tx, on_hand=0)
        await self.place(tx, "o1", [("mug", 3)])

        await receive(tx, po_id, [("mug", 5)])

        filled = emitted(tx, BackorderFilled)
        assert [(f.order_id, f.lines[0].quantity) for f in filled] == [("o1", 3)]
        assert (tx.store.items.level("mug").on_hand, tx.store.items.level("mug").reserved) == (5, 3)
        assert tx.store.reservations.rows["o1"].lines == (("mug", 3),)

    async def test_a_receipt_fills_a_committed_order_at_once(self, tx: Tx) -> None:
        po_id = await self.backordered_sku(tx, on_hand=1)
        await self.place(tx, "o1", [("mug", 3)])
        await service.commit_order(tx, "o1")
        assert tx.store.items.level("mug").on_hand == 0

        await receive(tx, po_id, [("mug", 4)])

        assert len(emitted(tx, BackorderFilled)) == 1
        assert tx.store.items.level("mug").on_hand == 2  # 4 received, 2 left with the order
        assert tx.store.items.level("mug").reserved == 0
        assert tx.store.reservations.rows["o1"].lines == (("mug", 3),)

    async def test_releasing_cancels_waiting_backorders(self, tx: Tx) -> None:
        po_id = await self.backordered_sku(tx, on_hand=1)
        await self.place(tx, "o1", [("mug", 3)])

        await service.release_order(tx, "o1", "payment_declined")

        assert (await service.item_supply(tx, "mug")).waiting == 0
        assert tx.store.items.level("mug").reserved == 0
        await receive(tx, po_id, [("mug", 4)])
        assert emitted(tx, BackorderFilled) == []
        assert tx.store.items.level("mug").on_hand == 5
