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
    bindparam,
    column,
    func,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

from libs.kit.db import DbSession
from services.inventory.domain import (
    DEFAULT_LOCATION,
    Allocation,
    AllocationPolicy,
    ChannelCap,
    Lines,
    Location,
    LocationDelta,
    Movement,
    Reservation,
    ReservationStatus,
    Shelf,
    StockDelta,
    StockItem,
    StockLevel,
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
        rows = await self.session.execute(
            select(stock_items)
            .where(stock_items.c.sku.in_(sorted(skus)))
            .order_by(stock_items.c.sku)
            .with_for_update()
        )
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
        row = (
            await self.session.execute(
                select(reservations).where(reservations.c.order_id == order_id).with_for_update()
            )
        ).first()
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
            update(reservations)
            .where(reservations.c.order_id == order_id)
            .values(status=status, reason=reason, updated_at=func.now())
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

# Every location row and capped channel of these skus, one row per sku (read after `lock_for`
# locked the skus' stock_items rows: every writer of these rows holds that lock, so this sees
# what the lock protects).
SHELVES_FOR = text(
    "SELECT s.sku,"
    " COALESCE((SELECT json_agg(json_build_array(ls.location, ls.on_hand, ls.reserved,"
    " ls.safety_stock, l.priority, l.regions, l.active) ORDER BY ls.location)"
    " FROM location_stock ls JOIN locations l ON l.code = ls.location WHERE ls.sku = s.sku),"
    " '[]') AS shelves,"
    " COALESCE((SELECT json_agg(json_build_array(c.channel, c.cap, c.used) ORDER BY c.channel)"
    " FROM channel_caps c WHERE c.sku = s.sku), '[]') AS caps"
    " FROM unnest(CAST(:skus AS text[])) AS s (sku)"
).columns(column("sku", String), column("shelves", JSON), column("caps", JSON))

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

    async def of(
        self, skus: Sequence[str]
    ) -> dict[str, tuple[tuple[Shelf, ...], tuple[ChannelCap, ...]]]:
        if not skus:
            return {}
        rows = await self.session.execute(SHELVES_FOR, {"skus": list(skus)})
        return {
            row.sku: (
                tuple(
                    Shelf(loc, int(on_hand), int(res), int(safety), int(prio), tuple(regions), act)
                    for loc, on_hand, res, safety, prio, regions, act in row.shelves
                ),
                tuple(ChannelCap(ch, int(cap), int(used)) for ch, cap, used in row.caps),
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
