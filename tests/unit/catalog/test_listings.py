"""Channels, listings and the coalesced listing sync on in-memory repositories (issue 13)."""

import re

import pytest

from libs.events.catalog import ChannelChanged, ListingChanged
from libs.events.common import Money
from libs.kit.errors import Conflict, Invalid, NotFound
from services.catalog import service
from services.catalog.domain import (
    CHANNEL_CODE_PATTERN,
    ListingState,
    NewProduct,
    csv_row,
    listing_sync_decision,
    published_on,
)
from tests.support.fakes import FakeTx, FakeUnitOfWork
from tests.unit.catalog.fakes import FakeStore

DELAY_S = 1.0
EUR_10 = Money(amount=1000, currency="EUR")


class Topics:
    def __init__(self) -> None:
        self.asked: list[str] = []

    def ensure_soon(self, channel: str) -> None:
        self.asked.append(channel)


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


@pytest.fixture
def uow(store: FakeStore) -> FakeUnitOfWork[FakeStore]:
    return FakeUnitOfWork(store)


def tx_of(store: FakeStore) -> FakeTx[FakeStore]:
    return FakeTx(store)


async def sync(uow: FakeUnitOfWork[FakeStore], store: FakeStore) -> list[ListingChanged]:
    """Let the delay pass, run one sync pass; the ListingChanged events it emitted."""
    before = len(uow.events.emitted)
    store.clock.advance(DELAY_S)
    await service.sync_listings(uow, store.clock(), DELAY_S, 100)
    return [e for e in uow.events.emitted[before:] if isinstance(e, ListingChanged)]


async def with_marketplace(store: FakeStore, *skus: str) -> None:
    tx = tx_of(store)
    await service.put_channel(tx, Topics(), "mkt", "Marketplace", "marketplace")
    for sku in skus:
        await service.create_product(tx, NewProduct(sku=sku, name=f"Mug {sku}", category="k"))
        await service.record_price(tx, sku, EUR_10)
        await service.record_stock(tx, sku, 10)


def state(**changes: object) -> ListingState:
    base: dict[str, object] = {
        "name": "Mug",
        "status": "active",
        "published": True,
        "price": EUR_10,
        "available": 5,
    }
    return ListingState(**(base | changes))  # type: ignore[arg-type]


# Rules


def test_the_web_shop_shows_every_product_unless_unlisted_other_channels_only_what_is_listed() -> (
    None
):
    assert published_on("web", None) is True
    assert published_on("web", False) is False
    assert published_on("mkt", None) is False
    assert published_on("mkt", True) is True


def test_channel_codes_are_short_lowercase_slugs() -> None:
    for good in ("web", "amazon-de", "0pos"):
        assert re.fullmatch(CHANNEL_CODE_PATTERN, good)
    for bad in ("", "Amazon", "-x", "a" * 33, "a.b", "a_b"):
        assert not re.fullmatch(CHANNEL_CODE_PATTERN, bad)


def test_the_sync_publishes_only_what_differs_from_the_last_event() -> None:
    first = listing_sync_decision(None, state())
    assert first.publish and first.changed == ["published", "price", "available", "status", "name"]
    assert not listing_sync_decision(state(), state()).publish
    moved = listing_sync_decision(state(), state(available=4, price=None))
    assert moved.publish and moved.changed == ["price", "available"]


def test_an_unpublished_sku_is_announced_once_and_a_never_published_one_not_at_all() -> None:
    gone = listing_sync_decision(state(), state(published=False))
    assert gone.publish and gone.changed == ["published"]
    assert not listing_sync_decision(
        state(published=False), state(published=False, available=1)
    ).publish
    assert not listing_sync_decision(None, state(published=False)).publish
    assert not listing_sync_decision(state(), None).publish


def test_csv_rows_follow_rfc_4180() -> None:
    assert csv_row(["a", 1, None, "x"]) == "a,1,,x\r\n"
    assert csv_row(['say "hi"', "a,b", "two\nlines"]) == '"say ""hi""","a,b","two\nlines"\r\n'


# Channels


async def test_a_new_channel_is_announced_and_its_topic_asked_for_after_the_commit(
    store: FakeStore,
) -> None:
    tx, topics = tx_of(store), Topics()
    put = await service.put_channel(tx, topics, "mkt", "Marketplace", "marketplace")
    assert put.created and put.channel.kind == "marketplace" and put.channel.active
    assert tx.events.emitted == [
        ChannelChanged(code="mkt", name="Marketplace", kind="marketplace", active=True)
    ]
    assert topics.asked == []
    tx.commit()
    assert topics.asked == ["mkt"]


async def test_putting_a_channel_unchanged_emits_nothing_and_a_change_emits_once(
    store: FakeStore,
) -> None:
    await service.put_channel(tx_of(store), Topics(), "mkt", "Marketplace", "marketplace")
    again = tx_of(store)
    put = await service.put_channel(again, Topics(), "mkt", "Marketplace", "marketplace")
    assert not put.created and again.events.emitted == []
    off = tx_of(store)
    await service.put_channel(off, Topics(), "mkt", "Marketplace", "marketplace", active=False)
    assert off.events.emitted == [
        ChannelChanged(code="mkt", name="Marketplace", kind="marketplace", active=False)
    ]


async def test_listing_refuses_unknown_sku_unknown_channel_and_inactive_channel(
    store: FakeStore,
) -> None:
    await with_marketplace(store, "A")
    tx = tx_of(store)
    with pytest.raises(NotFound):
        await service.put_listing(tx, "NOPE", "mkt", True)
    with pytest.raises(NotFound):
        await service.put_listing(tx, "A", "nope", True)
    await service.put_channel(tx, Topics(), "old", "Old", "pos", active=False)
    with pytest.raises(Conflict):
        await service.put_listing(tx, "A", "old", True)


async def test_channel_reads_show_only_published_products_at_the_channel_price_and_cap(
    store: FakeStore,
) -> None:
    await with_marketplace(store, "A", "B")
    tx = tx_of(store)
    await service.put_listing(tx, "A", "mkt", True)
    await service.record_price(tx, "A", Money(amount=1200, currency="EUR"), channel="mkt")
    await service.record_stock(tx, "A", 10, {"mkt": 3})

    page = await service.list_offers(tx, "mkt", q=None, category=None, after_sku=None, limit=10)
    assert [(v.product.sku, v.price, v.availability.available) for v in page.items] == [
        ("A", Money(amount=1200, currency="EUR"), 3)
    ]
    web = await service.list_offers(tx, "web", q=None, category=None, after_sku=None, limit=10)
    assert [(v.product.sku, v.price, v.availability.available) for v in web.items] == [
        ("A", EUR_10, 10),
        ("B", EUR_10, 10),
    ]
    with pytest.raises(NotFound):
        await service.get_offer(tx, "mkt", "B")
    with pytest.raises(Invalid) as refused:
        await service.list_offers(tx, "nope", q=None, category=None, after_sku=None, limit=10)
    assert refused.value.errors[0].field == "channel"


# The listing sync


async def test_a_burst_of_stock_moves_becomes_one_event_per_sku_with_the_final_state(
    store: FakeStore, uow: FakeUnitOfWork[FakeStore]
) -> None:
    await with_marketplace(store, "A", "B")
    tx = tx_of(store)
    await service.put_listing(tx, "A", "mkt", True)
    await service.put_listing(tx, "B", "mkt", True)
    await sync(uow, store)  # the first state of each
    for n in range(50):
        store.clock.advance(DELAY_S / 100)  # all inside one delay
        await service.record_stock(tx, "A" if n % 2 else "B", 40 - n // 2)

    events = await sync(uow, store)
    mkt = sorted((e for e in events if e.channel == "mkt"), key=lambda e: e.sku)
    assert [(e.sku, e.available, e.changed, e.version) for e in mkt] == [
        ("A", 16, ["available"], 2),
        ("B", 16, ["available"], 2),
    ]
    published = zip(uow.events.emitted, uow.events.topics, strict=True)
    assert all(
        t == f"backroom.listings.{e.channel}" for e, t in published if isinstance(e, ListingChanged)
    )
    assert await sync(uow, store) == []


async def test_the_first_change_of_a_burst_starts_the_clock(
    store: FakeStore, uow: FakeUnitOfWork[FakeStore]
) -> None:
    await with_marketplace(store, "A")
    await sync(uow, store)
    tx = tx_of(store)
    await service.record_stock(tx, "A", 9)
    store.clock.advance(DELAY_S * 0.9)
    await service.record_stock(tx, "A", 8)  # does not push the publication back
    store.clock.advance(DELAY_S * 0.1)
    await service.sync_listings(uow, store.clock(), DELAY_S, 100)
    published = [e for e in uow.events.emitted if isinstance(e, ListingChanged)]
    assert [e.available for e in published][-1:] == [8]


async def test_nothing_is_published_before_the_delay_or_when_nothing_changed(
    store: FakeStore, uow: FakeUnitOfWork[FakeStore]
) -> None:
    await with_marketplace(store, "A")
    await sync(uow, store)
    tx = tx_of(store)
    await service.record_stock(tx, "A", 9)
    await service.sync_listings(uow, store.clock(), DELAY_S, 100)  # too early
    assert await sync(uow, store) != []
    await service.record_stock(tx, "A", 9)  # the same again
    await service.record_price(tx, "A", EUR_10)
    assert await sync(uow, store) == []


async def test_unpublishing_publishes_published_false_once(
    store: FakeStore, uow: FakeUnitOfWork[FakeStore]
) -> None:
    await with_marketplace(store, "A")
    tx = tx_of(store)
    await service.put_listing(tx, "A", "mkt", True)
    [published] = [e for e in await sync(uow, store) if e.channel == "mkt"]
    assert published.published and published.version == 1
    await service.put_listing(tx, "A", "mkt", False)
    [gone] = await sync(uow, store)
    assert (gone.channel, gone.published, gone.changed, gone.version) == (
        "mkt",
        False,
        ["published"],
        2,
    )
    await service.record_stock(tx, "A", 1)
    assert [e.channel for e in await sync(uow, store)] == ["web"]


async def test_a_product_never_listed_on_a_channel_is_never_announced_there(
    store: FakeStore, uow: FakeUnitOfWork[FakeStore]
) -> None:
    await with_marketplace(store, "A")
    events = await sync(uow, store)
    assert [(e.channel, e.sku) for e in events] == [("web", "A")]
