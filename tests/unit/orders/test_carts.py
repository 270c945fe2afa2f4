"""Carts with fakes: lines checked against catalog (outside any transaction) and priced live,
another customer's cart unseen, checkout through place_order closing the cart (replays answer the
order, a second checkout is a Conflict), and abandonment reported once per idle period."""

from dataclasses import dataclass, field

import pytest

from libs.events.common import Line
from libs.events.orders import CartAbandoned, OrderPlaced
from libs.kit.auth import Principal
from libs.kit.errors import Conflict, FieldError, Forbidden, Invalid, NotFound, Unavailable
from services.orders import service
from services.orders.domain import CartStatus, CartView, OrderStatus
from services.orders.service import OrderRequest, Placed
from tests.unit.orders.fakes import (
    ALICE,
    BOB,
    OPERATOR,
    SHIPPING,
    TTL_S,
    FakeCatalog,
    World,
    eur,
    product,
)

IDLE_S = 3600


@dataclass
class Shop(World):
    catalog: FakeCatalog = field(default_factory=FakeCatalog)

    async def new_cart(self, lines: list[tuple[str, int]] | None = None) -> CartView:
        return await service.create_cart(
            self.uow,
            self.catalog,
            ALICE,
            lines or [],
            email=ALICE.email,
            clock=self.clock,
            request_id="req-cart",
        )

    async def set(self, cart_id: str, sku: str, quantity: int, who: Principal = ALICE) -> CartView:
        return await service.set_cart_line(
            self.uow,
            self.catalog,
            who,
            cart_id,
            sku,
            quantity,
            email=who.email,
            clock=self.clock,
            request_id="req-line",
        )

    async def read(self, cart_id: str, who: Principal = ALICE) -> CartView:
        return await service.get_cart(self.uow, self.catalog, who, cart_id, "req-read")

    async def checkout(
        self, cart_id: str, key: str = "ck-1", token: str = "tok_visa", who: Principal = ALICE
    ) -> Placed:
        self.pricing.shipping_rates["standard"] = 490
        request = OrderRequest(
            customer_id=who.sub,
            idempotency_key=key,
            request_hash=f"{cart_id}/{token}",
            lines=[],
            region="FR",
            shipping_address=SHIPPING,
            email=who.email,
            payment_token=token,
            shipping_method="standard",
        )
        return await service.checkout_cart(
            self.uow,
            self.pricing,
            who,
            cart_id,
            request,
            clock=self.clock,
            reservation_ttl_s=TTL_S,
            request_id="req-checkout",
            authorization="Bearer alice-token",
        )

    async def sweep(self) -> int:
        return await service.abandon_idle_carts(
            self.uow, self.clock(), idle_after_s=IDLE_S, limit=100
        )


def lines_of(view: CartView) -> list[tuple[str, int, int | None, int | None, int, bool]]:
    return [
        (
            ln.sku,
            ln.quantity,
            ln.unit_price.amount if ln.unit_price else None,
            ln.line_total.amount if ln.line_total else None,
            ln.available,
            ln.in_stock,
        )
        for ln in view.lines
    ]


def field_errors(exc: pytest.ExceptionInfo[Invalid]) -> list[str]:
    return [e.field for e in exc.value.errors]


# --- creating, changing, reading -----------------------------------------------------------------


async def test_a_new_cart_is_open_empty_and_has_no_subtotal() -> None:
    shop = Shop()
    view = await shop.new_cart()
    assert view.cart.status is CartStatus.OPEN and view.cart.customer_id == "alice"
    assert (view.lines, view.subtotal, view.currency, view.cart.order_id) == ((), None, None, None)
    assert (await shop.read(view.cart.id)).cart == view.cart


async def test_a_cart_created_with_lines_shows_their_live_prices_and_stock() -> None:
    shop = Shop()
    view = await shop.new_cart([("MUG-1", 2), ("TEA-9", 1)])
    assert lines_of(view) == [("MUG-1", 2, 1250, 2500, 5, True), ("TEA-9", 1, 499, 499, 0, False)]
    assert (view.subtotal, view.currency) == (eur(2999), "EUR")


async def test_creating_with_an_unknown_sku_names_its_line_and_writes_nothing() -> None:
    shop = Shop()
    with pytest.raises(Invalid) as refused:
        await shop.new_cart([("MUG-1", 1), ("NOPE-1", 1)])
    assert field_errors(refused) == ["lines[1].sku"]
    assert shop.store.carts.rows == {}


async def test_lines_are_added_changed_and_removed_with_the_subtotal_following() -> None:
    shop = Shop()
    cart_id = (await shop.new_cart()).cart.id
    added = await shop.set(cart_id, "MUG-1", 1)
    assert lines_of(added) == [("MUG-1", 1, 1250, 1250, 5, True)] and added.subtotal == eur(1250)
    both = await shop.set(cart_id, "TEA-9", 3)
    assert [ln.sku for ln in both.lines] == ["MUG-1", "TEA-9"]
    assert both.subtotal == eur(1250 + 3 * 499)
    changed = await shop.set(cart_id, "MUG-1", 4)
    # A changed line keeps its place.
    assert lines_of(changed)[0] == ("MUG-1", 4, 1250, 5000, 5, True)
    removed = await shop.set(cart_id, "MUG-1", 0)
    assert [ln.sku for ln in removed.lines] == ["TEA-9"] and removed.subtotal == eur(1497)
    assert removed.cart.revision == 4


async def test_removing_an_absent_line_changes_nothing_and_asks_catalog_nothing() -> None:
    shop = Shop()
    cart = (await shop.new_cart()).cart
    after = await shop.set(cart.id, "NOPE-1", 0)
    assert after.cart == cart and shop.catalog.asked == []


async def test_an_unknown_or_discontinued_sku_is_refused_naming_sku() -> None:
    shop = Shop()
    cart = (await shop.new_cart()).cart
    for sku, message in (("NOPE-1", "unknown sku"), ("OLD-1", "the product is discontinued")):
        with pytest.raises(Invalid) as refused:
            await shop.set(cart.id, sku, 1)
        assert refused.value.errors == [FieldError("sku", message)]
    assert shop.store.carts.rows[cart.id] == cart


async def test_a_line_whose_product_was_discontinued_shows_no_price_and_can_be_removed() -> None:
    shop = Shop()
    cart_id = (await shop.new_cart([("MUG-1", 1), ("TEA-9", 1)])).cart.id
    shop.catalog.products["MUG-1"] = product("MUG-1", 1250, available=5, active=False)
    view = await shop.read(cart_id)
    assert view.lines[0].product_status == "discontinued" and view.lines[0].unit_price is None
    assert view.subtotal is None  # a line that cannot be bought has no price to add up
    del shop.catalog.products["TEA-9"]
    assert (await shop.read(cart_id)).lines[1].product_status == "unknown"
    assert [ln.sku for ln in (await shop.set(cart_id, "MUG-1", 0)).lines] == ["TEA-9"]


async def test_more_than_available_is_kept_and_flagged_by_availability() -> None:
    shop = Shop()
    cart_id = (await shop.new_cart()).cart.id
    view = await shop.set(cart_id, "MUG-1", 9)
    [line] = view.lines
    assert (line.quantity, line.available, line.in_stock) == (9, 5, True)


async def test_reading_refreshes_prices_and_availability_from_catalog() -> None:
    shop = Shop()
    cart_id = (await shop.new_cart([("MUG-1", 2)])).cart.id
    shop.catalog.products["MUG-1"] = product("MUG-1", 1000, available=1)
    assert lines_of(await shop.read(cart_id)) == [("MUG-1", 2, 1000, 2000, 1, True)]


async def test_catalog_is_asked_with_no_transaction_open_and_its_outage_writes_nothing() -> None:
    shop = Shop()
    cart = (await shop.new_cart()).cart
    open_during_catalog: list[int] = []

    async def look() -> None:
        open_during_catalog.append(shop.uow.open)

    shop.catalog.during_call = look
    await shop.set(cart.id, "MUG-1", 1)
    await shop.read(cart.id)
    assert open_during_catalog == [0, 0]
    shop.catalog.failure = Unavailable("catalog is unavailable, try again later")
    before = shop.store.carts.rows[cart.id]
    with pytest.raises(Unavailable):
        await shop.set(cart.id, "TEA-9", 1)
    assert shop.store.carts.rows[cart.id] == before


async def test_another_customers_cart_is_missing_and_an_admin_reads_but_does_not_change_it() -> (
    None
):
    shop = Shop()
    cart_id = (await shop.new_cart([("MUG-1", 1)])).cart.id
    with pytest.raises(NotFound):
        await shop.read(cart_id, who=BOB)
    with pytest.raises(NotFound):
        await shop.set(cart_id, "MUG-1", 2, who=BOB)
    with pytest.raises(NotFound):
        await shop.checkout(cart_id, who=BOB)
    assert (await shop.read(cart_id, who=OPERATOR)).cart.id == cart_id
    with pytest.raises(Forbidden):
        await shop.set(cart_id, "MUG-1", 2, who=OPERATOR)


# --- checkout ------------------------------------------------------------------------------------


async def test_checkout_places_the_carts_lines_as_an_order_and_closes_the_cart() -> None:
    shop = Shop()
    cart_id = (await shop.new_cart([("MUG-1", 2), ("TEA-9", 1)])).cart.id
    placed = await shop.checkout(cart_id)
    order = placed.order
    assert not placed.replayed and order.status is OrderStatus.PENDING
    assert [(ln.sku, ln.quantity) for ln in order.lines] == [("MUG-1", 2), ("TEA-9", 1)]
    # Priced by pricing, as POST /orders is: 3599 for the lines, 490 + 98 tax for shipping.
    assert order.total == eur(4187)
    assert (order.shipping, order.shipping_method) == (eur(490), "standard")
    assert shop.pricing.asked == [([("MUG-1", 2), ("TEA-9", 1)], "Bearer alice-token")]
    assert shop.pricing.shipping_asked == ["standard"]
    [announced] = shop.emitted(OrderPlaced)
    assert announced.order_id == order.id
    cart = (await shop.read(cart_id)).cart
    assert (cart.status, cart.order_id) == (CartStatus.CHECKED_OUT, order.id)


async def test_a_replayed_checkout_answers_the_same_order_and_another_body_is_a_conflict() -> None:
    shop = Shop()
    cart_id = (await shop.new_cart([("MUG-1", 1)])).cart.id
    first = await shop.checkout(cart_id, key="k")
    again = await shop.checkout(cart_id, key="k")
    assert again.replayed and again.order == first.order
    with pytest.raises(Conflict, match="different request body"):
        await shop.checkout(cart_id, key="k", token="tok_other")
    assert len(shop.store.orders.rows) == 1


async def test_a_checked_out_cart_refuses_a_second_checkout_and_line_changes() -> None:
    shop = Shop()
    cart_id = (await shop.new_cart([("MUG-1", 1)])).cart.id
    await shop.checkout(cart_id, key="k1")
    with pytest.raises(Conflict, match="cart already checked out"):
        await shop.checkout(cart_id, key="k2")
    with pytest.raises(Conflict, match="cart already checked out"):
        await shop.set(cart_id, "TEA-9", 1)
    assert len(shop.store.orders.rows) == 1


async def test_an_empty_cart_cannot_be_checked_out() -> None:
    shop = Shop()
    cart_id = (await shop.new_cart()).cart.id
    with pytest.raises(Invalid) as refused:
        await shop.checkout(cart_id)
    assert field_errors(refused) == ["lines"]
    assert shop.pricing.asked == [] and shop.store.orders.rows == {}


async def test_a_cart_changed_while_its_checkout_was_priced_is_a_conflict() -> None:
    shop = Shop()
    cart_id = (await shop.new_cart([("MUG-1", 1)])).cart.id

    async def add_tea() -> None:
        shop.pricing.during_call = None
        await shop.set(cart_id, "TEA-9", 1)

    shop.pricing.during_call = add_tea
    with pytest.raises(Conflict, match="changed during checkout"):
        await shop.checkout(cart_id)
    assert (await shop.read(cart_id)).cart.status is CartStatus.OPEN


# --- abandonment ---------------------------------------------------------------------------------


async def test_an_idle_cart_is_reported_abandoned_once() -> None:
    shop = Shop()
    cart = (await shop.new_cart([("MUG-1", 2), ("TEA-9", 1)])).cart
    shop.clock.advance(IDLE_S - 1)
    assert await shop.sweep() == 0
    shop.clock.advance(2)
    assert await shop.sweep() == 1
    shop.clock.advance(IDLE_S * 5)
    assert await shop.sweep() == 0
    [abandoned] = shop.emitted(CartAbandoned)
    assert (abandoned.cart_id, abandoned.customer_id, abandoned.email) == (
        cart.id,
        "alice",
        "alice@example.com",
    )
    assert abandoned.lines == [Line(sku="MUG-1", quantity=2), Line(sku="TEA-9", quantity=1)]
    assert abandoned.subtotal == eur(2999) and abandoned.idle_since == cart.updated_at
    assert [e.subject for e in shop.events.envelopes] == [cart.id]
    assert (await shop.read(cart.id)).cart.abandoned_at is not None


async def test_a_change_starts_a_new_idle_period_that_may_be_reported_again() -> None:
    shop = Shop()
    cart_id = (await shop.new_cart([("MUG-1", 1)])).cart.id
    shop.clock.advance(IDLE_S + 1)
    assert await shop.sweep() == 1
    assert (await shop.set(cart_id, "MUG-1", 3)).cart.abandoned_at is None
    assert await shop.sweep() == 0
    shop.clock.advance(IDLE_S + 1)
    assert await shop.sweep() == 1
    assert [e.lines[0].quantity for e in shop.emitted(CartAbandoned)] == [1, 3]


async def test_empty_checked_out_and_held_carts_are_not_reported() -> None:
    shop = Shop()
    await shop.new_cart()
    checked_out = (await shop.new_cart([("MUG-1", 1)])).cart.id
    await shop.checkout(checked_out)
    held = (await shop.new_cart([("TEA-9", 1)])).cart.id
    shop.store.carts.held.add(held)  # another sweeper holds it: it reports it, not this one
    shop.clock.advance(IDLE_S + 1)
    assert await shop.sweep() == 0
    shop.store.carts.held.clear()
    assert await shop.sweep() == 1
    assert [e.cart_id for e in shop.emitted(CartAbandoned)] == [held]
