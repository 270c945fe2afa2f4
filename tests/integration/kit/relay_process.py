"""A producer process whose relay publishes the outbox, then exits once the outbox is empty.

Run with BACKROOM_CRASH_AT=relay.after_publish to die between the Kafka send and the delete."""

import asyncio

from sqlalchemy import func, select

from libs.kit.db import outbox
from tests.integration.kit.harness import producer_runtime


async def main() -> None:
    runtime = producer_runtime()
    await runtime.start()
    try:
        for _ in range(300):
            async with runtime.db.transaction() as session:
                if not await session.scalar(select(func.count()).select_from(outbox)):
                    return
            runtime.relay.wake()
            await asyncio.sleep(0.1)
        raise SystemExit("outbox did not drain")
    finally:
        await runtime.stop()


if __name__ == "__main__":
    asyncio.run(main())
