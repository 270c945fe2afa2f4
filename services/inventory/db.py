"""Inventory tables (stock per sku, one reservation per order, the stock movement audit) and
every query on them, as repositories that answer with domain objects."""

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    MetaData,
    Row,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
    bindparam,
    column,
    delete,
    func,
    or_,
    select,
    text,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

from libs.kit.db import Database, DbSession
from services.inventory.domain import (
    DEFAULT_LOCATION,
    OPEN_PO_STATUSES,
    Allocation,
    AllocationPolicy,
    Backorder,
    BackorderPolicy,
    BackorderStatus,
    ChannelCap,
    Lines,
    Location,
    LocationDelta,
    Movement,
    POLine,
    PurchaseOrder,
    PurchaseOrderStatus,
    Receipt,
    Reservation,
    ReservationStatus,
    Shelf,
    StockDelta,
    Stocking,
    StockItem,
    StockLevel,
    StockTally,
    Supplier,
    SupplierItem,
    Transfer,
    sku_deltas,
)

metadata = MetaData()

stock_items = Table(
    "stock_items",
    metadata,
    Column("sku", String(64), primary_key=True),
    Column("on_hand", BigInteger, nullable=False),
    Column("reserved", BigInteger, nullable=False, server_default="0"),
    Column("reorder_point", BigInteger, nullable=False, server_default="0"),
    # The current "at or below the reorder point" state was announced (StockLow once per crossing).
    Column("low_reported", Boolean, nullable=False, server_default="false"),
    Column("version", Integer, nullable=False, server_default="1"),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # The invariants live in the database too, so no code path (or race) can break them.
    CheckConstraint("on_hand >= 0", name="ck_stock_items_on_hand_non_negative"),
    CheckConstraint("reserved >= 0", name="ck_stock_items_reserved_non_negative"),
    CheckConstraint("reorder_point >= 0", name="ck_stock_items_reorder_point_non_negative"),
    CheckConstraint("on_hand - reserved >= 0", name="ck_stock_items_available_non_negative"),
)

reservations = Table(
    "reservations",
    metadata,
    # One row per order, whatever happened: the primary key makes OrderPlaced idempotent.
    Column("order_id", String(64), primary_key=True),
    Column("status", String(20), nullable=False),
    Column("lines", JSONB, nullable=False, server_default="[]"),
    Column("reason", String(100)),
    Column("expires_at", DateTime(timezone=True)),
    # The order's correlation id, so events caused by the expiry sweep stay traceable.
    Column("correlation_id", String(200)),
    # Issue 13: where each line's units were taken from ([{sku, location, quantity, capped}]),
    # and the order's sales channel.
    Column("allocations", JSONB, nullable=False, server_default="[]"),
    Column("channel", String(32)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint(
        "status IN ('reserved', 'committed', 'released', 'failed')",
        name="ck_reservations_status",
    ),
    # The expiry sweep only ever looks at live reservations.
    Index(
        "ix_reservations_reserved_expires_at",
        "expires_at",
        postgresql_where=text("status = 'reserved'"),
    ),
)

stock_movements = Table(
    "stock_movements",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("sku", String(64), nullable=False),
    Column("delta_on_hand", BigInteger, nullable=False),
    Column("delta_reserved", BigInteger, nullable=False),
    Column("on_hand", BigInteger, nullable=False),
    Column("reserved", BigInteger, nullable=False),
    Column("reason", String(100), nullable=False),
    Column("order_id", String(64)),
    Column("at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # Issue 13: the location it happened at (its counts are that location's), and a reference
    # (a purchase order or receipt, a transfer id).
    Column("location", String(32), nullable=False, server_default="main"),
    Column("ref", String(100)),
    Index("ix_stock_movements_sku_id", "sku", "id"),
)


# The writes below are text: SQLAlchemy 2.0 never caches PostgreSQL's insert construct (the one
# with ON CONFLICT; inherit_cache=False), multi-row VALUES or a VALUES used as a FROM, so it
# compiled these hot statements again on every execution, while a text constant is compiled once.
# Many rows ride in one statement as arrays (unnest), so its shape is the same for any row count.

# Every column of stock_items, in the Table's order: what `.columns(*stock_items.c)` reads back.
_RETURNING_ITEM = "RETURNING " + ", ".join(f"stock_items.{column.name}" for column in stock_items.c)

# Issue 13: the new item's stock lands at one location (its row is made in the same statement).
CREATE_STOCK_ITEM = text(
    "WITH item AS ("
    "INSERT INTO stock_items (sku, on_hand, reorder_point)"
    " VALUES (:sku, :on_hand, :reorder_point)"
    " ON CONFLICT DO NOTHING"
    f" {_RETURNING_ITEM}"
    "), shelf AS ("
    "INSERT INTO location_stock (sku, location, on_hand, safety_stock)"
    " SELECT item.sku, CAST(:location AS text), item.on_hand, CAST(:safety_stock AS bigint)"
    " FROM item"
    ")"
    " SELECT " + ", ".join(f"item.{column.name}" for column in stock_items.c) + " FROM item"
).columns(*stock_items.c)

# One statement moves the stock and audits it (issue 13: at locations). The location rows are
# upserted by (sku, location) deltas (a move may land where the sku had no row yet), the per-sku
# sums go to stock_items (the lock row), the order's channel caps count the capped units, the
# reservation records its allocations when `book_for` names it, and each location row's audit
# holds its deltas and that location's counts after the move (a missing row is inserted, not
# upserted: CHECKs apply to the proposed row of ON CONFLICT too). Every part of a data-modifying WITH
# sees the same snapshot, so the counts after come from the RETURNING rows, never from the table;
# WITH ORDINALITY ... ORDER BY gives the audit rows their ids in the order of the deltas, and the
# items come back in the order of the sku deltas. (sku, location) pairs are unique per call.
MOVE_AND_RECORD_STOCK = (
    text(
        "WITH d AS ("
        "SELECT * FROM unnest(CAST(:l_skus AS text[]), CAST(:l_locations AS text[]),"
        " CAST(:l_on_hand AS bigint[]), CAST(:l_reserved AS bigint[]))"
        " WITH ORDINALITY AS d (sku, location, d_on_hand, d_reserved, ordinal)"
        "), updated AS ("
        "UPDATE location_stock"
        " SET on_hand = location_stock.on_hand + d.d_on_hand,"
        " reserved = location_stock.reserved + d.d_reserved, updated_at = now()"
        " FROM d WHERE location_stock.sku = d.sku AND location_stock.location = d.location"
        " RETURNING location_stock.sku, location_stock.location, location_stock.on_hand,"
        " location_stock.reserved"
        "), inserted AS ("
        "INSERT INTO location_stock (sku, location, on_hand, reserved)"
        " SELECT d.sku, d.location, d.d_on_hand, d.d_reserved FROM d"
        " WHERE NOT EXISTS (SELECT 1 FROM location_stock ls"
        " WHERE ls.sku = d.sku AND ls.location = d.location)"
        " ORDER BY d.ordinal"
        " RETURNING location_stock.sku, location_stock.location, location_stock.on_hand,"
        " location_stock.reserved"
        "), shelf AS (SELECT * FROM updated UNION ALL SELECT * FROM inserted"
        "), moved AS ("
        "UPDATE stock_items"
        " SET on_hand = stock_items.on_hand + deltas.d_on_hand,"
        " reserved = stock_items.reserved + deltas.d_reserved,"
        " version = stock_items.version + 1,"
        " updated_at = now()"
        " FROM unnest(CAST(:skus AS text[]), CAST(:d_on_hand AS bigint[]),"
        " CAST(:d_reserved AS bigint[])) WITH ORDINALITY AS deltas (sku, d_on_hand, d_reserved, ordinal)"
        " WHERE stock_items.sku = deltas.sku"
        f" {_RETURNING_ITEM}, deltas.ordinal"
        "), caps AS ("
        "UPDATE channel_caps SET used = GREATEST(channel_caps.used + c.d_used, 0), updated_at = now()"
        " FROM unnest(CAST(:cap_skus AS text[]), CAST(:cap_used AS bigint[])) AS c (sku, d_used)"
        " WHERE channel_caps.sku = c.sku AND channel_caps.channel = CAST(:channel AS text)"
        "), booked AS ("
        "UPDATE reservations SET allocations = CAST(:allocations AS jsonb), updated_at = now()"
        " WHERE reservations.order_id = CAST(:book_for AS text)"
        "), audit AS ("
        "INSERT INTO stock_movements"
        " (sku, location, delta_on_hand, delta_reserved, on_hand, reserved, reason, order_id, ref)"
        " SELECT d.sku, d.location, d.d_on_hand, d.d_reserved, shelf.on_hand, shelf.reserved,"
        " CAST(:reason AS text), CAST(:order_id AS text), CAST(:ref AS text)"
        " FROM d JOIN shelf ON shelf.sku = d.sku AND shelf.location = d.location"
        " ORDER BY d.ordinal"
        ")"
        " SELECT " + ", ".join(f"moved.{column.name}" for column in stock_items.c) + " FROM moved"
        " ORDER BY moved.ordinal"
    )
    .columns(*stock_items.c)
    .bindparams(bindparam("allocations", type_=JSONB))
)


# The statements of every reservation (issue 10): fixed text, so they take DbSession's asyncpg
# path. `= ANY(:skus)` rather than an expanding IN, which SQLAlchemy renders per list length.
LOCK_STOCK_ITEMS = text(
    "SELECT " + ", ".join(c.name for c in stock_items.c) + " FROM stock_items"
    " WHERE sku = ANY(:skus) ORDER BY sku FOR UPDATE"
)


class StockItems:
    """Stock rows: one per sku. Every write bumps `version` and `updated_at`."""

    def __init__(self, session: DbSession) -> None:
        self.session = session

    async def get(self, sku: str) -> StockItem | None:
        row = (
            await self.session.execute(select(stock_items).where(stock_items.c.sku == sku))
        ).first()
        return None if row is None else _item(row)

    async def lock(self, sku: str) -> StockItem | None:
        row = (
            await self.session.execute(
                select(stock_items).where(stock_items.c.sku == sku).with_for_update()
            )
        ).first()
        return None if row is None else _item(row)

    async def create(
        self,
        sku: str,
        on_hand: int,
        reorder_point: int,
        location: str = DEFAULT_LOCATION,
        safety_stock: int = 0,
    ) -> StockItem | None:
        """A new item, its stock at `location`; None when the sku exists already (its row is
        then not touched)."""
        row = (
            await self.session.execute(
                CREATE_STOCK_ITEM,
                {
                    "sku": sku,
                    "on_hand": on_hand,
                    "reorder_point": reorder_point,
                    "location": location,
                    "safety_stock": safety_stock,
                },
            )
        ).first()
        return None if row is None else _item(row)

    async def write(self, sku: str, on_hand: int, reorder_point: int | None = None) -> StockItem:
        """New counts for a (locked) item; the reorder point stays unless given."""
        counts = {"on_hand": on_hand}
        if reorder_point is not None:
            counts["reorder_point"] = reorder_point
        row = (
            await self.session.execute(
                update(stock_items)
                .where(stock_items.c.sku == sku)
                .values(**counts, version=stock_items.c.version + 1, updated_at=func.now())
                .returning(*stock_items.c)
            )
        ).one()
        return _item(row)

    async def lock_for(self, skus: Sequence[str]) -> dict[str, StockItem]:
        """Lock the rows of these skus (those that exist) with one statement, in sku order, so
        concurrent orders never deadlock each other."""
        rows = await self.session.execute(LOCK_STOCK_ITEMS, {"skus": sorted(skus)})
        return {row.sku: _item(row) for row in rows}

    async def move_and_record(
        self, deltas: Sequence[StockDelta], reason: str, order_id: str | None
    ) -> list[StockItem]:
        """Apply every delta and audit every moved line (its deltas and its level after the move,
        with `reason` and `order_id`) in one statement (rows locked by `lock_for` first); returns
        the items as they are after it, in `deltas`' order, whose audit rows' ids ascend in that
        order. The CHECK constraints refuse what would break `0 <= reserved <= on_hand`,
        whatever a caller decided. Issue 13: at the default location."""
        return await self.move_at(
            [LocationDelta(d.sku, DEFAULT_LOCATION, d.on_hand, d.reserved) for d in deltas],
            reason,
            order_id,
        )

    async def move_at(
        self,
        deltas: Sequence[LocationDelta],
        reason: str,
        order_id: str | None,
        *,
        ref: str | None = None,
        channel: str | None = None,
        used: Sequence[tuple[str, int]] = (),
        book_for: str | None = None,
        allocations: Sequence[Allocation] = (),
    ) -> list[StockItem]:
        """Issue 13: apply (sku, location) deltas, their sums per sku, the capped units of
        `channel` (`used`: per sku), record `allocations` on the reservation of `book_for`, and
        audit each location row, in one statement (the items locked by `lock_for` first).
        Returns the items after it, one per sku in first-appearance order."""
        if not deltas:
            return []
        sums = sku_deltas(deltas)
        rows = await self.session.execute(
            MOVE_AND_RECORD_STOCK,
            {
                "l_skus": [d.sku for d in deltas],
                "l_locations": [d.location for d in deltas],
                "l_on_hand": [d.on_hand for d in deltas],
                "l_reserved": [d.reserved for d in deltas],
                "skus": [d.sku for d in sums],
                "d_on_hand": [d.on_hand for d in sums],
                "d_reserved": [d.reserved for d in sums],
                "cap_skus": [sku for sku, _ in used],
                "cap_used": [q for _, q in used],
                "channel": channel,
                "book_for": book_for,
                "allocations": [
                    {
                        "sku": a.sku,
                        "location": a.location,
                        "quantity": a.quantity,
                        "capped": a.capped,
                    }
                    for a in allocations
                ],
                "reason": reason,
                "order_id": order_id,
                "ref": ref,
            },
        )
        return [_item(row) for row in rows]

    async def mark_low(self, sku: str, low: bool) -> None:
        """Record whether the item's low state has been announced (StockLow once per crossing)."""
        await self.session.execute(
            update(stock_items).where(stock_items.c.sku == sku).values(low_reported=low)
        )


CREATE_RESERVATION = text(
    "INSERT INTO reservations (order_id, status, lines, expires_at, correlation_id, channel)"
    " VALUES (:order_id, :status, :lines, :expires_at, :correlation_id, :channel)"
    " ON CONFLICT DO NOTHING"
    " RETURNING order_id"
).bindparams(
    bindparam("lines", type_=reservations.c.lines.type),
    bindparam("expires_at", type_=reservations.c.expires_at.type),
)

CLOSE_UNSEEN_RESERVATION = text(
    "INSERT INTO reservations (order_id, status, reason) VALUES (:order_id, :status, :reason)"
    " ON CONFLICT DO NOTHING"
)


LOCK_RESERVATION = text(
    "SELECT " + ", ".join(c.name for c in reservations.c) + " FROM reservations"
    " WHERE order_id = :order_id FOR UPDATE"
)
SET_RESERVATION_STATUS = text(
    "UPDATE reservations SET status = :status, reason = :reason, updated_at = now()"
    " WHERE order_id = :order_id"
)


class Reservations:
    """One row per order, whatever happened to it."""

    def __init__(self, session: DbSession) -> None:
        self.session = session

    async def get(self, order_id: str) -> Reservation | None:
        row = (
            await self.session.execute(
                select(reservations).where(reservations.c.order_id == order_id)
            )
        ).first()
        return None if row is None else _reservation(row)

    async def create(
        self,
        order_id: str,
        lines: Lines,
        expires_at: datetime,
        correlation_id: str | None,
        channel: str | None = None,
    ) -> bool:
        """Claim the order with a live reservation; False when it has a row already (a duplicate
        or concurrent OrderPlaced, or an order event that closed it first): the primary key
        decides, so two transactions never both claim it."""
        claimed = await self.session.scalar(
            CREATE_RESERVATION,
            {
                "order_id": order_id,
                "status": ReservationStatus.RESERVED,
                "lines": [{"sku": sku, "quantity": quantity} for sku, quantity in lines],
                "expires_at": expires_at,
                "correlation_id": correlation_id,
                "channel": channel,
            },
        )
        return claimed is not None

    async def lock(self, order_id: str) -> Reservation | None:
        row = (await self.session.execute(LOCK_RESERVATION, {"order_id": order_id})).first()
        return None if row is None else _reservation(row)

    async def close_unseen(self, order_id: str, reason: str | None) -> None:
        """A released row, with no lines, for an order closed before we saw it placed."""
        await self.session.execute(
            CLOSE_UNSEEN_RESERVATION,
            {"order_id": order_id, "status": ReservationStatus.RELEASED, "reason": reason},
        )

    async def set_status(
        self, order_id: str, status: ReservationStatus, reason: str | None
    ) -> None:
        await self.session.execute(
            SET_RESERVATION_STATUS, {"order_id": order_id, "status": status, "reason": reason}
        )

    async def claim_expired(self, now: datetime) -> Reservation | None:
        """Lock the live reservation overdue longest on `now`, skipping those another
        transaction holds (several sweepers share the work); None when nothing is overdue."""
        row = (
            await self.session.execute(
                select(reservations)
                .where(
                    reservations.c.status == ReservationStatus.RESERVED,
                    reservations.c.expires_at <= now,
                )
                .order_by(reservations.c.expires_at)
                .limit(1)
                .with_for_update(skip_locked=True)
            )
        ).first()
        return None if row is None else _reservation(row)


# WITH ORDINALITY ... ORDER BY: the rows get their ids in the order of `movements`, as they did
# from a multi-row VALUES.
RECORD_MOVEMENTS = text(
    "INSERT INTO stock_movements"
    " (sku, delta_on_hand, delta_reserved, on_hand, reserved, reason, order_id, location, ref)"
    " SELECT m.sku, m.delta_on_hand, m.delta_reserved, m.on_hand, m.reserved,"
    " CAST(:reason AS text), CAST(:order_id AS text), m.location, CAST(:ref AS text)"
    " FROM unnest(CAST(:skus AS text[]), CAST(:deltas_on_hand AS bigint[]),"
    " CAST(:deltas_reserved AS bigint[]), CAST(:on_hand AS bigint[]), CAST(:reserved AS bigint[]),"
    " CAST(:locations AS text[]))"
    " WITH ORDINALITY AS m (sku, delta_on_hand, delta_reserved, on_hand, reserved, location,"
    " ordinal)"
    " ORDER BY m.ordinal"
)


class Movements:
    """The stock movement audit: append only."""

    def __init__(self, session: DbSession) -> None:
        self.session = session

    async def record(
        self,
        movements: Sequence[Movement],
        reason: str,
        order_id: str | None,
        ref: str | None = None,
    ) -> None:
        """Every movement with one INSERT (each at its location; `ref` issue 13)."""
        if not movements:
            return
        await self.session.execute(
            RECORD_MOVEMENTS,
            {
                "skus": [m.sku for m in movements],
                "deltas_on_hand": [m.delta_on_hand for m in movements],
                "deltas_reserved": [m.delta_reserved for m in movements],
                "on_hand": [m.on_hand for m in movements],
                "reserved": [m.reserved for m in movements],
                "locations": [m.location for m in movements],
                "reason": reason,
                "order_id": order_id,
                "ref": ref,
            },
        )


class Store:
    """Inventory's repositories on one session, i.e. in one transaction."""

    def __init__(self, session: DbSession, policy: AllocationPolicy | None = None) -> None:
        self.items = StockItems(session)
        self.reservations = Reservations(session)
        self.movements = Movements(session)
        self.returns = StockReturns(session)
        self.purchasing = Purchasing(session)  # issue 13

        # Issue 13.
        self.policy = policy or AllocationPolicy()
        self.locations = Locations(session)
        self.caps = ChannelCaps(session)
        self.transfers = Transfers(session)
        self.shelves = Shelves(session)


def _item(row: Row[Any]) -> StockItem:
    return StockItem(
        sku=row.sku,
        level=StockLevel(
            on_hand=row.on_hand,
            reserved=row.reserved,
            reorder_point=row.reorder_point,
            low_reported=row.low_reported,
        ),
        updated_at=row.updated_at,
    )


def _reservation(row: Row[Any]) -> Reservation:
    return Reservation(
        order_id=row.order_id,
        status=ReservationStatus(row.status),
        reason=row.reason,
        lines=tuple((line["sku"], int(line["quantity"])) for line in row.lines),
        expires_at=row.expires_at,
        correlation_id=row.correlation_id,
        created_at=row.created_at,
        updated_at=row.updated_at,
        allocations=tuple(
            Allocation(a["sku"], a["location"], int(a["quantity"]), bool(a.get("capped", False)))
            for a in row.allocations
        ),
        channel=row.channel,
    )


# --- returns (issue 12) ---

# One row per return taken back: its primary key makes ReturnReceived idempotent whatever the
# inbox saw, and it keeps what was restocked and written off.
stock_returns = Table(
    "stock_returns",
    metadata,
    Column("return_id", String(64), primary_key=True),
    Column("order_id", String(64), nullable=False),
    Column("restocked", JSONB, nullable=False),
    Column("written_off", JSONB, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

CLAIM_STOCK_RETURN = text(
    "INSERT INTO stock_returns (return_id, order_id, restocked, written_off)"
    " VALUES (:return_id, :order_id, :restocked, :written_off)"
    " ON CONFLICT DO NOTHING RETURNING return_id"
).bindparams(
    bindparam("restocked", type_=JSONB),
    bindparam("written_off", type_=JSONB),
)


class StockReturns:
    """Returns whose units were taken back."""

    def __init__(self, session: DbSession) -> None:
        self.session = session

    async def claim(
        self, return_id: str, order_id: str, restocked: Lines, written_off: Lines
    ) -> bool:
        """Record the return as taken back; False when it was (the primary key decides)."""
        claimed = await self.session.scalar(
            CLAIM_STOCK_RETURN,
            {
                "return_id": return_id,
                "order_id": order_id,
                "restocked": [{"sku": s, "quantity": q} for s, q in restocked],
                "written_off": [{"sku": s, "quantity": q} for s, q in written_off],
            },
        )
        return claimed is not None


# --- purchasing (issue 13) ---
# Suppliers (a sku has at most one supplier item: the latest PUT that lists it takes it over),
# purchase orders and their receipts, each sku's supply (backorder policy, units on order and
# units promised to waiting backorders), and the backorders themselves.

_PO_STATUSES = ", ".join(f"'{s.value}'" for s in PurchaseOrderStatus)
_OPEN_PO = ", ".join(f"'{s.value}'" for s in OPEN_PO_STATUSES)
_BACKORDER_STATUSES = ", ".join(f"'{s.value}'" for s in BackorderStatus)

suppliers = Table(
    "suppliers",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("email", String(254)),
    Column("lead_time_days", Integer, nullable=False),
    Column("location", String(64), nullable=False, server_default="main"),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("lead_time_days >= 0", name="ck_suppliers_lead_time_non_negative"),
)

supplier_items = Table(
    "supplier_items",
    metadata,
    # One supplier per sku: the primary key is the sku.
    Column("sku", String(64), primary_key=True),
    Column("supplier_id", String(64), ForeignKey("suppliers.id"), nullable=False),
    Column("position", Integer, nullable=False, server_default="0"),
    Column("reorder_quantity", BigInteger, nullable=False),
    Column("lead_time_days", Integer),
    Column("unit_cost_amount", BigInteger),
    Column("unit_cost_currency", String(3)),
    CheckConstraint("reorder_quantity > 0", name="ck_supplier_items_reorder_quantity_positive"),
    Index("ix_supplier_items_supplier", "supplier_id", "position"),
)

purchase_orders = Table(
    "purchase_orders",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("supplier_id", String(64), ForeignKey("suppliers.id"), nullable=False),
    Column("location", String(64), nullable=False),
    Column("status", String(20), nullable=False),
    # [{sku, quantity, received}]
    Column("lines", JSONB, nullable=False),
    Column("expected_at", DateTime(timezone=True)),
    Column("reason", String(30), nullable=False),
    # The sku whose reorder-point crossing drafted it (NULL: drafted by hand).
    Column("reorder_sku", String(64)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("sent_at", DateTime(timezone=True)),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint(f"status IN ({_PO_STATUSES})", name="ck_purchase_orders_status"),
    Index("ix_purchase_orders_created", "created_at", "id"),
    Index("ix_purchase_orders_lines", "lines", postgresql_using="gin"),
    # The belt under "once per crossing": one open automatic draft per sku, whatever races.
    Index(
        "ux_purchase_orders_open_reorder_sku",
        "reorder_sku",
        unique=True,
        postgresql_where=text(f"status IN ({_OPEN_PO}) AND reorder_sku IS NOT NULL"),
    ),
)

purchase_receipts = Table(
    "purchase_receipts",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("purchase_order_id", String(64), ForeignKey("purchase_orders.id"), nullable=False),
    Column("idempotency_key", String(200), nullable=False),
    Column("request_hash", String(64), nullable=False),
    Column("location", String(64), nullable=False),
    Column("lines", JSONB, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ux_purchase_receipts_key", "purchase_order_id", "idempotency_key", unique=True),
)

sku_supply = Table(
    "sku_supply",
    metadata,
    Column("sku", String(64), primary_key=True),
    Column("backorders_allowed", Boolean, nullable=False, server_default="false"),
    Column("backorder_expected_at", DateTime(timezone=True)),
    # Units on sent (or partially received) purchase orders not received yet.
    Column("on_order", BigInteger, nullable=False, server_default="0"),
    # Units promised to waiting backorders.
    Column("waiting", BigInteger, nullable=False, server_default="0"),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("on_order >= 0", name="ck_sku_supply_on_order_non_negative"),
    CheckConstraint("waiting >= 0", name="ck_sku_supply_waiting_non_negative"),
)

backorders = Table(
    "backorders",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("order_id", String(64), nullable=False),
    Column("sku", String(64), nullable=False),
    Column("quantity", BigInteger, nullable=False),
    Column("expected_at", DateTime(timezone=True)),
    Column("status", String(20), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint(f"status IN ({_BACKORDER_STATUSES})", name="ck_backorders_status"),
    CheckConstraint("quantity > 0", name="ck_backorders_quantity_positive"),
    Index("ix_backorders_order", "order_id"),
    Index("ix_backorders_waiting_sku", "sku", "id", postgresql_where=text("status = 'waiting'")),
)

PUT_SUPPLIER = text(
    "INSERT INTO suppliers (id, name, email, lead_time_days, location)"
    " VALUES (:id, :name, :email, :lead_time_days, :location)"
    " ON CONFLICT (id) DO UPDATE SET name = excluded.name, email = excluded.email,"
    " lead_time_days = excluded.lead_time_days, location = excluded.location, updated_at = now()"
    " RETURNING (xmax = 0) AS created"
)

# The supplier's items: a sku listed by another supplier moves to this one (latest PUT wins).
PUT_SUPPLIER_ITEMS = text(
    "INSERT INTO supplier_items"
    " (sku, supplier_id, position, reorder_quantity, lead_time_days, unit_cost_amount,"
    " unit_cost_currency)"
    " SELECT i.sku, CAST(:supplier_id AS text), i.position, i.reorder_quantity, i.lead_time_days,"
    " i.unit_cost_amount, i.unit_cost_currency"
    " FROM unnest(CAST(:skus AS text[]), CAST(:positions AS int[]),"
    " CAST(:reorder_quantities AS bigint[]), CAST(:lead_times AS int[]),"
    " CAST(:amounts AS bigint[]), CAST(:currencies AS text[]))"
    " AS i (sku, position, reorder_quantity, lead_time_days, unit_cost_amount, unit_cost_currency)"
    " ON CONFLICT (sku) DO UPDATE SET supplier_id = excluded.supplier_id,"
    " position = excluded.position, reorder_quantity = excluded.reorder_quantity,"
    " lead_time_days = excluded.lead_time_days, unit_cost_amount = excluded.unit_cost_amount,"
    " unit_cost_currency = excluded.unit_cost_currency"
)

_RETURNING_PO = "RETURNING " + ", ".join(
    f"purchase_orders.{column.name}" for column in purchase_orders.c
)

# An automatic draft loses to an open one of the same sku (the partial unique index).
ADD_PURCHASE_ORDER = (
    text(
        "INSERT INTO purchase_orders"
        " (id, supplier_id, location, status, lines, expected_at, reason, reorder_sku)"
        " VALUES (:id, :supplier_id, :location, :status, :lines, :expected_at, :reason,"
        " :reorder_sku)"
        f" ON CONFLICT DO NOTHING {_RETURNING_PO}"
    )
    .bindparams(
        bindparam("lines", type_=JSONB),
        bindparam("expected_at", type_=DateTime(timezone=True)),
    )
    .columns(*purchase_orders.c)
)

ADD_RECEIPT = text(
    "INSERT INTO purchase_receipts"
    " (id, purchase_order_id, idempotency_key, request_hash, location, lines)"
    " VALUES (:id, :purchase_order_id, :idempotency_key, :request_hash, :location, :lines)"
    " ON CONFLICT DO NOTHING RETURNING purchase_receipts.at"
).bindparams(bindparam("lines", type_=JSONB))

# Counters of a sku's supply, created on first use (at zero: a CHECK refuses a negative row
# even when ON CONFLICT would have updated instead), then moved, many skus in one statement.
ENSURE_SUPPLY = text(
    "INSERT INTO sku_supply (sku) SELECT unnest(CAST(:skus AS text[])) AS sku ORDER BY sku"
    " ON CONFLICT (sku) DO NOTHING"
)
MOVE_SUPPLY = text(
    "UPDATE sku_supply SET on_order = sku_supply.on_order + d.on_order,"
    " waiting = sku_supply.waiting + d.waiting, updated_at = now()"
    " FROM unnest(CAST(:skus AS text[]), CAST(:on_order AS bigint[]),"
    " CAST(:waiting AS bigint[])) AS d (sku, on_order, waiting)"
    " WHERE sku_supply.sku = d.sku"
)

PUT_BACKORDER_POLICY = text(
    "INSERT INTO sku_supply (sku, backorders_allowed, backorder_expected_at)"
    " VALUES (:sku, :allowed, :expected_at)"
    " ON CONFLICT (sku) DO UPDATE SET backorders_allowed = excluded.backorders_allowed,"
    " backorder_expected_at = excluded.backorder_expected_at, updated_at = now()"
).bindparams(bindparam("expected_at", type_=DateTime(timezone=True)))

ADD_BACKORDERS = text(
    "INSERT INTO backorders (order_id, sku, quantity, expected_at, status)"
    " SELECT CAST(:order_id AS text), b.sku, b.quantity, b.expected_at, 'waiting'"
    " FROM unnest(CAST(:skus AS text[]), CAST(:quantities AS bigint[]),"
    " CAST(:expected AS timestamptz[])) WITH ORDINALITY AS b (sku, quantity, expected_at, ordinal)"
    " ORDER BY b.ordinal"
)

SET_RESERVATION_LINES = text(
    "UPDATE reservations SET lines = :lines, updated_at = now() WHERE order_id = :order_id"
).bindparams(bindparam("lines", type_=JSONB))

_po = purchase_orders.c
_bo = backorders.c


def _supplier_item(row: Row[Any]) -> SupplierItem:
    return SupplierItem(
        sku=row.sku,
        reorder_quantity=row.reorder_quantity,
        lead_time_days=row.lead_time_days,
        unit_cost_amount=row.unit_cost_amount,
        unit_cost_currency=row.unit_cost_currency,
    )


def _supplier(row: Row[Any], items: Sequence[SupplierItem]) -> Supplier:
    return Supplier(
        id=row.id,
        name=row.name,
        email=row.email,
        lead_time_days=row.lead_time_days,
        location=row.location,
        items=tuple(items),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _purchase_order(row: Row[Any]) -> PurchaseOrder:
    return PurchaseOrder(
        id=row.id,
        supplier_id=row.supplier_id,
        location=row.location,
        status=PurchaseOrderStatus(row.status),
        lines=tuple(
            POLine(line["sku"], int(line["quantity"]), int(line.get("received", 0)))
            for line in row.lines
        ),
        expected_at=row.expected_at,
        reason=row.reason,
        created_at=row.created_at,
        sent_at=row.sent_at,
        updated_at=row.updated_at,
    )


def _po_lines(lines: Sequence[POLine]) -> list[dict[str, Any]]:
    return [{"sku": ln.sku, "quantity": ln.quantity, "received": ln.received} for ln in lines]


def _backorder(row: Row[Any]) -> Backorder:
    return Backorder(
        id=row.id,
        order_id=row.order_id,
        sku=row.sku,
        quantity=row.quantity,
        expected_at=row.expected_at,
        status=BackorderStatus(row.status),
        created_at=row.created_at,
    )


class Purchasing:
    """Suppliers, purchase orders, receipts, sku supply and backorders."""

    def __init__(self, session: DbSession) -> None:
        self.session = session

    # suppliers

    async def put_supplier(
        self,
        supplier_id: str,
        name: str,
        email: str | None,
        lead_time_days: int,
        location: str,
        items: Sequence[SupplierItem],
    ) -> bool:
        """Create or replace the supplier and its items; True when it was new."""
        created = await self.session.scalar(
            PUT_SUPPLIER,
            {
                "id": supplier_id,
                "name": name,
                "email": email,
                "lead_time_days": lead_time_days,
                "location": location,
            },
        )
        skus = [item.sku for item in items]
        await self.session.execute(
            delete(supplier_items).where(
                supplier_items.c.supplier_id == supplier_id,
                supplier_items.c.sku.not_in(skus) if skus else true(),
            )
        )
        if items:
            await self.session.execute(
                PUT_SUPPLIER_ITEMS,
                {
                    "supplier_id": supplier_id,
                    "skus": skus,
                    "positions": list(range(len(items))),
                    "reorder_quantities": [i.reorder_quantity for i in items],
                    "lead_times": [i.lead_time_days for i in items],
                    "amounts": [i.unit_cost_amount for i in items],
                    "currencies": [i.unit_cost_currency for i in items],
                },
            )
        return bool(created)

    async def get_supplier(self, supplier_id: str) -> Supplier | None:
        found = await self.suppliers(ids=[supplier_id])
        return found[0] if found else None

    async def suppliers(
        self, *, ids: Sequence[str] | None = None, after: str | None = None, limit: int = 50
    ) -> list[Supplier]:
        query = select(suppliers).order_by(suppliers.c.id).limit(limit)
        if ids is not None:
            query = query.where(suppliers.c.id.in_(list(ids)))
        if after is not None:
            query = query.where(suppliers.c.id > after)
        rows = list((await self.session.execute(query)).all())
        if not rows:
            return []
        items: dict[str, list[SupplierItem]] = {}
        for item in await self.session.execute(
            select(supplier_items)
            .where(supplier_items.c.supplier_id.in_([row.id for row in rows]))
            .order_by(supplier_items.c.supplier_id, supplier_items.c.position)
        ):
            items.setdefault(item.supplier_id, []).append(_supplier_item(item))
        return [_supplier(row, items.get(row.id, [])) for row in rows]

    async def supplier_of(self, sku: str) -> Supplier | None:
        """The supplier whose item the sku is (with that item among its items)."""
        supplier_id = await self.session.scalar(
            select(supplier_items.c.supplier_id).where(supplier_items.c.sku == sku)
        )
        return None if supplier_id is None else await self.get_supplier(supplier_id)

    # purchase orders

    async def has_open_po(self, sku: str) -> bool:
        found = await self.session.scalar(
            select(_po.id)
            .where(_po.status.in_([s.value for s in OPEN_PO_STATUSES]))
            .where(_po.lines.contains([{"sku": sku}]))
            .limit(1)
        )
        return found is not None

    async def add_po(
        self,
        po_id: str,
        supplier_id: str,
        location: str,
        lines: Sequence[POLine],
        expected_at: datetime | None,
        reason: str,
        reorder_sku: str | None,
    ) -> PurchaseOrder | None:
        """A new draft; None when it is an automatic one and the sku has an open one already."""
        row = (
            await self.session.execute(
                ADD_PURCHASE_ORDER,
                {
                    "id": po_id,
                    "supplier_id": supplier_id,
                    "location": location,
                    "status": PurchaseOrderStatus.DRAFT.value,
                    "lines": _po_lines(lines),
                    "expected_at": expected_at,
                    "reason": reason,
                    "reorder_sku": reorder_sku,
                },
            )
        ).first()
        return None if row is None else _purchase_order(row)

    async def get_po(self, po_id: str) -> PurchaseOrder | None:
        row = (await self.session.execute(select(purchase_orders).where(_po.id == po_id))).first()
        return None if row is None else _purchase_order(row)

    async def lock_po(self, po_id: str) -> PurchaseOrder | None:
        row = (
            await self.session.execute(
                select(purchase_orders).where(_po.id == po_id).with_for_update()
            )
        ).first()
        return None if row is None else _purchase_order(row)

    async def save_po(
        self, po_id: str, status: PurchaseOrderStatus, lines: Sequence[POLine], *, sent: bool
    ) -> PurchaseOrder:
        values: dict[str, Any] = {
            "status": status.value,
            "lines": _po_lines(lines),
            "updated_at": func.now(),
        }
        if sent:
            values["sent_at"] = func.now()
        row = (
            await self.session.execute(
                update(purchase_orders)
                .where(_po.id == po_id)
                .values(**values)
                .returning(*purchase_orders.c)
            )
        ).one()
        return _purchase_order(row)

    async def purchase_orders(
        self,
        *,
        status: str | None,
        sku: str | None,
        supplier_id: str | None,
        before: tuple[datetime, str] | None,
        limit: int,
    ) -> list[PurchaseOrder]:
        """Newest first, after the cursor's (created_at, id)."""
        query = select(purchase_orders).order_by(_po.created_at.desc(), _po.id.desc()).limit(limit)
        if status is not None:
            query = query.where(_po.status == status)
        if sku is not None:
            query = query.where(_po.lines.contains([{"sku": sku}]))
        if supplier_id is not None:
            query = query.where(_po.supplier_id == supplier_id)
        if before is not None:
            at, po_id = before
            query = query.where(
                or_(_po.created_at < at, and_(_po.created_at == at, _po.id < po_id))
            )
        return [_purchase_order(row) for row in await self.session.execute(query)]

    async def earliest_expected(self, sku: str) -> datetime | None:
        """When the first sent purchase order still bringing the sku is expected."""
        result: datetime | None = await self.session.scalar(
            select(func.min(_po.expected_at))
            .where(
                _po.status.in_(
                    [PurchaseOrderStatus.SENT.value, PurchaseOrderStatus.PARTIALLY_RECEIVED.value]
                )
            )
            .where(_po.lines.contains([{"sku": sku}]))
        )
        return result

    # receipts

    async def receipt_by_key(self, po_id: str, key: str) -> tuple[Receipt, str] | None:
        row = (
            await self.session.execute(
                select(purchase_receipts).where(
                    purchase_receipts.c.purchase_order_id == po_id,
                    purchase_receipts.c.idempotency_key == key,
                )
            )
        ).first()
        if row is None:
            return None
        receipt = Receipt(
            id=row.id,
            purchase_order_id=row.purchase_order_id,
            location=row.location,
            lines=tuple((ln["sku"], int(ln["quantity"])) for ln in row.lines),
            at=row.at,
        )
        return receipt, row.request_hash

    async def add_receipt(
        self,
        receipt_id: str,
        po_id: str,
        key: str,
        request_hash: str,
        location: str,
        lines: Lines,
    ) -> datetime | None:
        """Record the receipt; None when the key was used on the order already."""
        at: datetime | None = await self.session.scalar(
            ADD_RECEIPT,
            {
                "id": receipt_id,
                "purchase_order_id": po_id,
                "idempotency_key": key,
                "request_hash": request_hash,
                "location": location,
                "lines": [{"sku": s, "quantity": q} for s, q in lines],
            },
        )
        return at

    # supply

    async def add_supply(self, deltas: Sequence[tuple[str, int, int]]) -> None:
        """(sku, delta on_order, delta waiting) per sku, in sku order; the CHECKs refuse less
        than zero."""
        merged: dict[str, tuple[int, int]] = {}
        for sku, on_order, waiting in deltas:
            before = merged.get(sku, (0, 0))
            merged[sku] = (before[0] + on_order, before[1] + waiting)
        if not merged:
            return
        deltas = sorted((sku, *counts) for sku, counts in merged.items())
        await self.session.execute(ENSURE_SUPPLY, {"skus": [d[0] for d in deltas]})
        await self.session.execute(
            MOVE_SUPPLY,
            {
                "skus": [d[0] for d in deltas],
                "on_order": [d[1] for d in deltas],
                "waiting": [d[2] for d in deltas],
            },
        )

    async def supply(self, skus: Sequence[str]) -> dict[str, BackorderPolicy]:
        if not skus:
            return {}
        rows = await self.session.execute(
            select(sku_supply).where(sku_supply.c.sku.in_(sorted(set(skus))))
        )
        return {
            row.sku: BackorderPolicy(
                allowed=row.backorders_allowed,
                expected_at=row.backorder_expected_at,
                on_order=row.on_order,
                waiting=row.waiting,
            )
            for row in rows
        }

    async def set_backorder_policy(
        self, sku: str, allowed: bool, expected_at: datetime | None
    ) -> None:
        await self.session.execute(
            PUT_BACKORDER_POLICY, {"sku": sku, "allowed": allowed, "expected_at": expected_at}
        )

    # backorders

    async def add_backorders(
        self, order_id: str, lines: Sequence[tuple[str, int, datetime | None]]
    ) -> None:
        if not lines:
            return
        await self.session.execute(
            ADD_BACKORDERS,
            {
                "order_id": order_id,
                "skus": [s for s, _, _ in lines],
                "quantities": [q for _, q, _ in lines],
                "expected": [e for _, _, e in lines],
            },
        )

    async def waiting_order_ids(self, skus: Sequence[str]) -> list[str]:
        rows = await self.session.execute(
            select(_bo.order_id)
            .where(_bo.sku.in_(list(skus)), _bo.status == BackorderStatus.WAITING.value)
            .distinct()
        )
        return sorted(row.order_id for row in rows)

    async def lock_waiting(self, sku: str) -> list[Backorder]:
        """The sku's waiting backorders, oldest first, locked."""
        rows = await self.session.execute(
            select(backorders)
            .where(_bo.sku == sku, _bo.status == BackorderStatus.WAITING.value)
            .order_by(_bo.id)
            .with_for_update()
        )
        return [_backorder(row) for row in rows]

    async def set_backorder_status(self, ids: Sequence[int], status: BackorderStatus) -> None:
        if ids:
            await self.session.execute(
                update(backorders)
                .where(_bo.id.in_(list(ids)))
                .values(status=status.value, updated_at=func.now())
            )

    async def backorders_of(self, order_id: str) -> list[Backorder]:
        rows = await self.session.execute(
            select(backorders).where(_bo.order_id == order_id).order_by(_bo.id)
        )
        return [_backorder(row) for row in rows]

    async def cancel_waiting(self, order_id: str) -> list[Backorder]:
        """Cancel the order's waiting backorders; those it cancelled."""
        rows = await self.session.execute(
            update(backorders)
            .where(_bo.order_id == order_id, _bo.status == BackorderStatus.WAITING.value)
            .values(status=BackorderStatus.CANCELLED.value, updated_at=func.now())
            .returning(*backorders.c)
        )
        return [_backorder(row) for row in rows]

    # reservations (the units a backorder fill adds)

    async def lock_reservations(self, order_ids: Sequence[str]) -> dict[str, Reservation]:
        """Lock these orders' reservations in order id order (the order every path takes)."""
        if not order_ids:
            return {}
        rows = await self.session.execute(
            select(reservations)
            .where(reservations.c.order_id.in_(sorted(order_ids)))
            .order_by(reservations.c.order_id)
            .with_for_update()
        )
        return {row.order_id: _reservation(row) for row in rows}

    async def set_reservation_lines(self, order_id: str, lines: Lines) -> None:
        await self.session.execute(
            SET_RESERVATION_LINES,
            {"order_id": order_id, "lines": [{"sku": s, "quantity": q} for s, q in lines]},
        )


# --- locations, stock per location, channel caps, transfers (issue 13) ---

locations = Table(
    "locations",
    metadata,
    Column("code", String(32), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("kind", String(20), nullable=False, server_default="warehouse"),
    # Lower is preferred.
    Column("priority", Integer, nullable=False, server_default="100"),
    # Shipping regions it serves (the `region` strategy prefers them); empty: none in particular.
    Column("regions", ARRAY(Text), nullable=False, server_default="{}"),
    Column("active", Boolean, nullable=False, server_default="true"),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("kind IN ('warehouse', 'store')", name="ck_locations_kind"),
)

# One sku at one location; stock_items holds the sums (and is the row every change locks first).
location_stock = Table(
    "location_stock",
    metadata,
    Column("sku", String(64), ForeignKey("stock_items.sku"), primary_key=True),
    Column("location", String(32), ForeignKey("locations.code"), primary_key=True),
    Column("on_hand", BigInteger, nullable=False, server_default="0"),
    Column("reserved", BigInteger, nullable=False, server_default="0"),
    Column("safety_stock", BigInteger, nullable=False, server_default="0"),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("on_hand >= 0", name="ck_location_stock_on_hand_non_negative"),
    CheckConstraint("reserved >= 0", name="ck_location_stock_reserved_non_negative"),
    CheckConstraint("safety_stock >= 0", name="ck_location_stock_safety_non_negative"),
    CheckConstraint("reserved <= on_hand", name="ck_location_stock_reserved_within"),
)

channel_caps = Table(
    "channel_caps",
    metadata,
    Column("sku", String(64), ForeignKey("stock_items.sku"), primary_key=True),
    Column("channel", String(32), primary_key=True),
    Column("cap", BigInteger, nullable=False),
    # Units of the sku in the channel's live reservations and committed orders.
    Column("used", BigInteger, nullable=False, server_default="0"),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("cap >= 0", name="ck_channel_caps_cap_non_negative"),
    CheckConstraint("used >= 0", name="ck_channel_caps_used_non_negative"),
)

# One row per transfer; the Idempotency-Key is unique, so a retried transfer moves once.
stock_transfers = Table(
    "stock_transfers",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("idempotency_key", String(200), nullable=False),
    Column("request_hash", String(64), nullable=False),
    Column("sku", String(64), nullable=False),
    Column("from_location", String(32), nullable=False),
    Column("to_location", String(32), nullable=False),
    Column("quantity", BigInteger, nullable=False),
    Column("reason", String(100)),
    Column("at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    UniqueConstraint("idempotency_key", name="uq_stock_transfers_idempotency_key"),
)

# Every location row and capped channel of these skus and the units on order for each, one row
# per sku (read after `lock_for` locked the skus' stock_items rows: every writer of these rows
# holds that lock, so this sees what the lock protects; on_order rides along so that announcing
# a level reads nothing more).
SHELVES_FOR = text(
    "SELECT s.sku,"
    " COALESCE((SELECT json_agg(json_build_array(ls.location, ls.on_hand, ls.reserved,"
    " ls.safety_stock, l.priority, l.regions, l.active) ORDER BY ls.location)"
    " FROM location_stock ls JOIN locations l ON l.code = ls.location WHERE ls.sku = s.sku),"
    " '[]') AS shelves,"
    " COALESCE((SELECT json_agg(json_build_array(c.channel, c.cap, c.used) ORDER BY c.channel)"
    " FROM channel_caps c WHERE c.sku = s.sku), '[]') AS caps,"
    " COALESCE((SELECT p.on_order FROM sku_supply p WHERE p.sku = s.sku), 0) AS on_order"
    " FROM unnest(CAST(:skus AS text[])) AS s (sku)"
).columns(
    column("sku", String),
    column("shelves", JSON),
    column("caps", JSON),
    column("on_order", BigInteger),
)

# An absolute count (and maybe safety stock) at one location, with the per-sku sum and the
# reorder point (when given) in one statement; `delta` is the new count less the old.
SET_SHELF = text(
    "WITH shelf AS ("
    "INSERT INTO location_stock (sku, location, on_hand, safety_stock)"
    " VALUES (:sku, :location, :on_hand, COALESCE(CAST(:safety_stock AS bigint), 0))"
    " ON CONFLICT (sku, location) DO UPDATE SET on_hand = EXCLUDED.on_hand,"
    " safety_stock = COALESCE(CAST(:safety_stock AS bigint), location_stock.safety_stock),"
    " updated_at = now()"
    " RETURNING location_stock.sku"
    "), item AS ("
    "UPDATE stock_items SET on_hand = stock_items.on_hand + CAST(:delta AS bigint),"
    " reorder_point = COALESCE(CAST(:reorder_point AS bigint), stock_items.reorder_point),"
    " version = stock_items.version + 1, updated_at = now()"
    " WHERE stock_items.sku = :sku"
    f" {_RETURNING_ITEM}"
    ")"
    " SELECT " + ", ".join(f"item.{column.name}" for column in stock_items.c) + " FROM item"
).columns(*stock_items.c)


class Shelves:
    """The skus' stock per location, and their channel caps, as allocation reads them."""

    def __init__(self, session: DbSession) -> None:
        self.session = session

    async def of(self, skus: Sequence[str]) -> dict[str, Stocking]:
        if not skus:
            return {}
        rows = await self.session.execute(SHELVES_FOR, {"skus": list(skus)})
        return {
            row.sku: Stocking(
                tuple(
                    Shelf(loc, int(on_hand), int(res), int(safety), int(prio), tuple(regions), act)
                    for loc, on_hand, res, safety, prio, regions, act in row.shelves
                ),
                tuple(ChannelCap(ch, int(cap), int(used)) for ch, cap, used in row.caps),
                int(row.on_order),
            )
            for row in rows
        }

    async def set(
        self,
        sku: str,
        location: str,
        on_hand: int,
        safety_stock: int | None,
        delta: int,
        reorder_point: int | None,
    ) -> StockItem:
        row = (
            await self.session.execute(
                SET_SHELF,
                {
                    "sku": sku,
                    "location": location,
                    "on_hand": on_hand,
                    "safety_stock": safety_stock,
                    "delta": delta,
                    "reorder_point": reorder_point,
                },
            )
        ).one()
        return _item(row)

    async def skus_at(self, location: str) -> list[str]:
        rows = await self.session.execute(
            select(location_stock.c.sku)
            .where(location_stock.c.location == location, location_stock.c.on_hand > 0)
            .order_by(location_stock.c.sku)
        )
        return [row.sku for row in rows]


UPSERT_LOCATION = text(
    "INSERT INTO locations (code, name, kind, priority, regions, active)"
    " VALUES (:code, :name, COALESCE(CAST(:kind AS text), 'warehouse'),"
    " COALESCE(CAST(:priority AS integer), 100), COALESCE(CAST(:regions AS text[]), '{}'),"
    " COALESCE(CAST(:active AS boolean), true))"
    " ON CONFLICT (code) DO UPDATE SET name = EXCLUDED.name,"
    " kind = COALESCE(CAST(:kind AS text), locations.kind),"
    " priority = COALESCE(CAST(:priority AS integer), locations.priority),"
    " regions = COALESCE(CAST(:regions AS text[]), locations.regions),"
    " active = COALESCE(CAST(:active AS boolean), locations.active),"
    " updated_at = now()"
    " RETURNING " + ", ".join(f"locations.{c.name}" for c in locations.c) + ","
    " (xmax = 0) AS created"
).columns(*locations.c, column("created", Boolean))


class Locations:
    def __init__(self, session: DbSession) -> None:
        self.session = session

    async def get(self, code: str) -> Location | None:
        row = (
            await self.session.execute(select(locations).where(locations.c.code == code))
        ).first()
        return None if row is None else _location(row)

    async def lock(self, code: str) -> Location | None:
        row = (
            await self.session.execute(
                select(locations).where(locations.c.code == code).with_for_update()
            )
        ).first()
        return None if row is None else _location(row)

    async def upsert(
        self,
        code: str,
        name: str,
        kind: str | None,
        priority: int | None,
        regions: Sequence[str] | None,
        active: bool | None,
    ) -> tuple[Location, bool]:
        """Create or update (fields left None keep their values); and whether it was created."""
        row = (
            await self.session.execute(
                UPSERT_LOCATION,
                {
                    "code": code,
                    "name": name,
                    "kind": kind,
                    "priority": priority,
                    "regions": None if regions is None else list(regions),
                    "active": active,
                },
            )
        ).one()
        return _location(row), bool(row.created)

    async def page(self, after: str | None, limit: int) -> list[Location]:
        query = select(locations).order_by(locations.c.code).limit(limit)
        if after is not None:
            query = query.where(locations.c.code > after)
        return [_location(row) for row in await self.session.execute(query)]


UPSERT_CAP = text(
    "INSERT INTO channel_caps (sku, channel, cap) VALUES (:sku, :channel, :cap)"
    " ON CONFLICT (sku, channel) DO UPDATE SET cap = EXCLUDED.cap, updated_at = now()"
)


class ChannelCaps:
    def __init__(self, session: DbSession) -> None:
        self.session = session

    async def set(self, sku: str, channel: str, cap: int) -> None:
        await self.session.execute(UPSERT_CAP, {"sku": sku, "channel": channel, "cap": cap})


CLAIM_TRANSFER = text(
    "INSERT INTO stock_transfers (id, idempotency_key, request_hash, sku, from_location,"
    " to_location, quantity, reason)"
    " VALUES (:id, :idempotency_key, :request_hash, :sku, :from_location, :to_location,"
    " :quantity, :reason)"
    " ON CONFLICT (idempotency_key) DO NOTHING"
    " RETURNING " + ", ".join(f"stock_transfers.{c.name}" for c in stock_transfers.c)
).columns(*stock_transfers.c)


class Transfers:
    def __init__(self, session: DbSession) -> None:
        self.session = session

    async def claim(
        self, transfer: Transfer, idempotency_key: str, request_hash: str
    ) -> Transfer | None:
        """Record the transfer; None when its Idempotency-Key was used already (the unique key
        decides: a concurrent retry waits for the first, then finds it)."""
        row = (
            await self.session.execute(
                CLAIM_TRANSFER,
                {
                    "id": transfer.id,
                    "idempotency_key": idempotency_key,
                    "request_hash": request_hash,
                    "sku": transfer.sku,
                    "from_location": transfer.from_location,
                    "to_location": transfer.to_location,
                    "quantity": transfer.quantity,
                    "reason": transfer.reason,
                },
            )
        ).first()
        return None if row is None else _transfer(row)

    async def by_key(self, idempotency_key: str) -> tuple[Transfer, str] | None:
        row = (
            await self.session.execute(
                select(stock_transfers).where(stock_transfers.c.idempotency_key == idempotency_key)
            )
        ).first()
        return None if row is None else (_transfer(row), row.request_hash)


def _location(row: Row[Any]) -> Location:
    return Location(
        code=row.code,
        name=row.name,
        kind=row.kind,
        priority=row.priority,
        regions=tuple(row.regions),
        active=row.active,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _transfer(row: Row[Any]) -> Transfer:
    return Transfer(
        id=row.id,
        sku=row.sku,
        from_location=row.from_location,
        to_location=row.to_location,
        quantity=row.quantity,
        reason=row.reason,
        at=row.at,
    )


# --- metrics (issue 14) ---

# Read by the metrics poller on a timer: reservations still held after their expiry (the expiry
# sweep should have released them; a count that stays up means it is not running).
RESERVATIONS_EXPIRED_COUNT = text(
    "SELECT count(*) FROM reservations WHERE status = 'reserved' AND expires_at < now()"
)


async def count_reservations_expired(db: Database) -> int:
    async with db.engine.connect() as conn:
        return int((await conn.execute(RESERVATIONS_EXPIRED_COUNT)).scalar_one())


# --- reconciliation (issue 14) ---

# The per-sku tallies of the skus changed within :window_s (the most recent :scan of them), in
# one read-only statement: each sum walks one sku's rows by an index (location_stock's primary
# key, ix_stock_movements_sku_id); live reservations come by their partial index.
STOCK_TALLIES = text(
    "WITH s AS ("
    "SELECT sku, on_hand, reserved, updated_at FROM stock_items"
    " WHERE updated_at >= now() - make_interval(secs => CAST(:window_s AS double precision))"
    " ORDER BY updated_at DESC LIMIT :scan"
    "), loc AS ("
    "SELECT ls.sku, sum(ls.on_hand) AS on_hand, sum(ls.reserved) AS reserved"
    " FROM location_stock ls JOIN s ON s.sku = ls.sku GROUP BY ls.sku"
    "), mov AS ("
    "SELECT m.sku, sum(m.delta_on_hand) AS on_hand, sum(m.delta_reserved) AS reserved"
    " FROM stock_movements m JOIN s ON s.sku = m.sku GROUP BY m.sku"
    "), alloc AS ("
    "SELECT a.sku, sum(a.quantity) AS reserved FROM reservations r"
    " CROSS JOIN LATERAL jsonb_to_recordset(r.allocations) AS a (sku text, quantity bigint)"
    " WHERE r.status = 'reserved' AND a.sku IN (SELECT sku FROM s) GROUP BY a.sku"
    ")"
    " SELECT s.sku, s.on_hand, s.reserved, s.updated_at,"
    " coalesce(loc.on_hand, 0) AS location_on_hand, coalesce(loc.reserved, 0) AS location_reserved,"
    " coalesce(mov.on_hand, 0) AS moved_on_hand, coalesce(mov.reserved, 0) AS moved_reserved,"
    " coalesce(alloc.reserved, 0) AS allocated"
    " FROM s LEFT JOIN loc ON loc.sku = s.sku LEFT JOIN mov ON mov.sku = s.sku"
    " LEFT JOIN alloc ON alloc.sku = s.sku"
    " WHERE s.on_hand <> coalesce(loc.on_hand, 0) OR s.reserved <> coalesce(loc.reserved, 0)"
    " OR s.on_hand <> coalesce(mov.on_hand, 0) OR s.reserved <> coalesce(mov.reserved, 0)"
    " OR s.reserved <> coalesce(alloc.reserved, 0)"
    " ORDER BY s.sku LIMIT :limit"
)

# Reservations still held past their expiry (by the partial index the expiry sweep uses).
EXPIRED_HELD = text(
    "SELECT order_id, expires_at, now() AS now FROM reservations"
    " WHERE status = 'reserved' AND expires_at < now() - make_interval(secs => CAST(:grace_s AS"
    " double precision))"
    " ORDER BY expires_at LIMIT :limit"
)


class ReconcileReads:
    """Inventory's reconciliation queries: read-only, bounded, on their own connection."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def stock_tallies(self, window_s: float, scan: int, limit: int) -> list[StockTally]:
        """The tallies that disagree somewhere (the domain says how)."""
        async with self.db.engine.connect() as conn:
            rows = await conn.execute(
                STOCK_TALLIES, {"window_s": window_s, "scan": scan, "limit": limit}
            )
            return [
                StockTally(
                    sku=r.sku,
                    on_hand=int(r.on_hand),
                    reserved=int(r.reserved),
                    updated_at=r.updated_at,
                    location_on_hand=int(r.location_on_hand),
                    location_reserved=int(r.location_reserved),
                    moved_on_hand=int(r.moved_on_hand),
                    moved_reserved=int(r.moved_reserved),
                    allocated=int(r.allocated),
                )
                for r in rows
            ]

    async def expired_held(
        self, grace_s: float, limit: int
    ) -> tuple[list[tuple[str, datetime]], datetime | None]:
        """(order id, expires_at) of reservations held more than `grace_s` past expiry, and the
        database's now (None when there are none)."""
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(EXPIRED_HELD, {"grace_s": grace_s, "limit": limit})).all()
        return [(r.order_id, r.expires_at) for r in rows], (rows[0].now if rows else None)
