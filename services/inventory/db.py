"""Inventory tables (stock per sku, one reservation per order, the stock movement audit) and
every query on them, as repositories that answer with domain objects."""

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Identity,
    Index,
    Integer,
    MetaData,
    Row,
    String,
    Table,
    bindparam,
    func,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB

from libs.kit.db import DbSession
from services.inventory.domain import (
    Lines,
    Movement,
    Reservation,
    ReservationStatus,
    StockDelta,
    StockItem,
    StockLevel,
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
    Index("ix_stock_movements_sku_id", "sku", "id"),
)


# The writes below are text: SQLAlchemy 2.0 never caches PostgreSQL's insert construct (the one
# with ON CONFLICT; inherit_cache=False), multi-row VALUES or a VALUES used as a FROM, so it
# compiled these hot statements again on every execution, while a text constant is compiled once.
# Many rows ride in one statement as arrays (unnest), so its shape is the same for any row count.

# Every column of stock_items, in the Table's order: what `.columns(*stock_items.c)` reads back.
_RETURNING_ITEM = "RETURNING " + ", ".join(f"stock_items.{column.name}" for column in stock_items.c)

CREATE_STOCK_ITEM = text(
    "INSERT INTO stock_items (sku, on_hand, reorder_point)"
    " VALUES (:sku, :on_hand, :reorder_point)"
    " ON CONFLICT DO NOTHING"
    f" {_RETURNING_ITEM}"
).columns(*stock_items.c)

# One statement moves the stock and audits it: the UPDATE's RETURNING feeds the INSERT (both parts
# of a data-modifying WITH see the same snapshot, so the levels after the move come from `moved`,
# never from the table). Each audit row holds its line's deltas and the level the move led to
# (domain.Movement.of); WITH ORDINALITY ... ORDER BY gives the audit rows their ids in the order
# of the deltas, and the items come back in that order too.
MOVE_AND_RECORD_STOCK = text(
    "WITH moved AS ("
    "UPDATE stock_items"
    " SET on_hand = stock_items.on_hand + deltas.d_on_hand,"
    " reserved = stock_items.reserved + deltas.d_reserved,"
    " version = stock_items.version + 1,"
    " updated_at = now()"
    " FROM unnest(CAST(:skus AS text[]), CAST(:d_on_hand AS bigint[]),"
    " CAST(:d_reserved AS bigint[])) WITH ORDINALITY AS deltas (sku, d_on_hand, d_reserved, ordinal)"
    " WHERE stock_items.sku = deltas.sku"
    f" {_RETURNING_ITEM}, deltas.d_on_hand, deltas.d_reserved, deltas.ordinal"
    "), audit AS ("
    "INSERT INTO stock_movements"
    " (sku, delta_on_hand, delta_reserved, on_hand, reserved, reason, order_id)"
    " SELECT moved.sku, moved.d_on_hand, moved.d_reserved, moved.on_hand, moved.reserved,"
    " CAST(:reason AS text), CAST(:order_id AS text)"
    " FROM moved ORDER BY moved.ordinal"
    ")"
    " SELECT " + ", ".join(f"moved.{column.name}" for column in stock_items.c) + " FROM moved"
    " ORDER BY moved.ordinal"
).columns(*stock_items.c)


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

    async def create(self, sku: str, on_hand: int, reorder_point: int) -> StockItem | None:
        """A new item; None when the sku exists already (its row is then not touched)."""
        row = (
            await self.session.execute(
                CREATE_STOCK_ITEM,
                {"sku": sku, "on_hand": on_hand, "reorder_point": reorder_point},
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
        whatever a caller decided."""
        if not deltas:
            return []
        rows = await self.session.execute(
            MOVE_AND_RECORD_STOCK,
            {
                "skus": [d.sku for d in deltas],
                "d_on_hand": [d.on_hand for d in deltas],
                "d_reserved": [d.reserved for d in deltas],
                "reason": reason,
                "order_id": order_id,
            },
        )
        return [_item(row) for row in rows]

    async def mark_low(self, sku: str, low: bool) -> None:
        """Record whether the item's low state has been announced (StockLow once per crossing)."""
        await self.session.execute(
            update(stock_items).where(stock_items.c.sku == sku).values(low_reported=low)
        )


CREATE_RESERVATION = text(
    "INSERT INTO reservations (order_id, status, lines, expires_at, correlation_id)"
    " VALUES (:order_id, :status, :lines, :expires_at, :correlation_id)"
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
    " (sku, delta_on_hand, delta_reserved, on_hand, reserved, reason, order_id)"
    " SELECT m.sku, m.delta_on_hand, m.delta_reserved, m.on_hand, m.reserved,"
    " CAST(:reason AS text), CAST(:order_id AS text)"
    " FROM unnest(CAST(:skus AS text[]), CAST(:deltas_on_hand AS bigint[]),"
    " CAST(:deltas_reserved AS bigint[]), CAST(:on_hand AS bigint[]), CAST(:reserved AS bigint[]))"
    " WITH ORDINALITY AS m (sku, delta_on_hand, delta_reserved, on_hand, reserved, ordinal)"
    " ORDER BY m.ordinal"
)


class Movements:
    """The stock movement audit: append only."""

    def __init__(self, session: DbSession) -> None:
        self.session = session

    async def record(
        self, movements: Sequence[Movement], reason: str, order_id: str | None
    ) -> None:
        """Every movement with one INSERT."""
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
                "reason": reason,
                "order_id": order_id,
            },
        )


class Store:
    """Inventory's repositories on one session, i.e. in one transaction."""

    def __init__(self, session: DbSession) -> None:
        self.items = StockItems(session)
        self.reservations = Reservations(session)
        self.movements = Movements(session)
        self.returns = StockReturns(session)


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
