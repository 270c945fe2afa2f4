"""Which event types the notifications consumer looks at (no database: a fake one)."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from services.notifications.service import WebhookInterest


class FakeDatabase:
    """Answers the subscriptions read with `types`, once `release` is set."""

    def __init__(self, types: list[str]) -> None:
        self.types = types
        self.release = asyncio.Event()
        self.reading = asyncio.Event()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Any]:
        database = self

        class Session:
            async def scalars(self, _: object) -> list[str]:
                database.reading.set()
                await database.release.wait()
                return database.types

        yield Session()


async def test_until_read_every_type_counts_then_only_email_and_subscribed_ones() -> None:
    interest = WebhookInterest(refresh_s=1.0)
    assert interest("StockLevelChanged") and interest("PaymentCaptured")
    db = FakeDatabase(["PaymentCaptured"])
    db.release.set()
    await interest.refresh(db)  # type: ignore[arg-type]
    assert interest("PaymentCaptured")
    assert interest("OrderConfirmed")  # an email
    assert not interest("StockLevelChanged")


async def test_a_subscription_made_during_a_read_is_not_forgotten() -> None:
    interest = WebhookInterest(refresh_s=1.0)
    db = FakeDatabase([])
    db.release.set()
    await interest.refresh(db)  # type: ignore[arg-type]
    db = FakeDatabase([])  # the read sees the database before the new subscription's commit
    reading = asyncio.create_task(interest.refresh(db))  # type: ignore[arg-type]
    await db.reading.wait()
    interest.widen(["StockLevelChanged"])
    db.release.set()
    await reading
    assert interest("StockLevelChanged")
