"""A consume handler that never returns is reported: error log with every task's stack, and
/health/live answers 503 until the batch ends (real broker and database)."""

import asyncio
import logging

import httpx

from libs.kit.app import create_service_app
from libs.kit.inbox import EventContext
from libs.kit.runtime import Runtime
from tests.integration.kit.harness import Ping, new_topic, settings_for
from tests.support.eventually import eventually
from tests.support.kafka import make_event, publish


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


async def test_a_handler_stuck_in_one_batch_fails_liveness_until_it_returns(
    kit_databases: None,
) -> None:
    topic = await new_topic()
    settings = settings_for("kit_b", f"kit-watchdog-{topic}").model_copy(
        update={"consumer_stuck_after_s": 1.0}
    )
    runtime = Runtime(settings)
    entered, release = asyncio.Event(), asyncio.Event()
    handled: list[int] = []

    @runtime.processor.on(Ping, topic=topic)
    async def on_ping(ping: Ping, ctx: EventContext) -> None:
        entered.set()
        await release.wait()  # stands for an await that never comes back
        handled.append(ping.position)

    app = create_service_app(runtime, routers=[], title="watchdog test")
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://svc") as http,
    ):
        assert (await http.get("/health/live")).status_code == 200
        key = f"wd-{topic}"
        await publish(make_event("kit-test", Ping(key=key, position=1), key), topic)
        await asyncio.wait_for(entered.wait(), timeout=30)

        async def live_fails() -> bool:
            return (await http.get("/health/live")).status_code == 503

        # Our own handler: the service's logging set-up replaces the root's (pytest's) ones.
        records = Records()
        logging.getLogger("libs.kit.runtime").addHandler(records)
        try:
            await eventually(live_fails, timeout=15, what="liveness failing")
            stuck = (await http.get("/health/live")).json()
            assert stuck["status"] == "stuck"

            async def reported() -> bool:
                return any("stuck in one batch" in m for m in records.messages)

            await eventually(reported, timeout=15, what="the stuck consumer logged")
            # The task dump came with it, and it shows where the handler waits.
            assert any("on_ping" in m for m in records.messages if m.startswith("task "))
        finally:
            logging.getLogger("libs.kit.runtime").removeHandler(records)

        release.set()

        async def recovered() -> bool:
            return handled == [1] and (await http.get("/health/live")).status_code == 200

        await eventually(recovered, timeout=15, what="liveness back once the batch ended")
