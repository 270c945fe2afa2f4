"""The real webhook sender over an in-memory transport: it connects to the pinned address with
the URL's Host and SNI, follows no redirect, reads at most 64 KiB of an answer and turns
trouble into an Answer (no network)."""

from collections.abc import AsyncIterator

import httpx

from services.notifications.adapters import (
    MAX_RESPONSE_BYTES,
    HttpxWebhookSender,
    PinnedPost,
    SystemResolver,
)

BODY = b'{"id":"ev-1"}'


def post(url: str = "https://hooks.example/a?x=1", address: str = "93.184.216.34") -> PinnedPost:
    return PinnedPost(url, address, BODY, {"webhook-id": "dlv-1"})


def sender(handler: httpx.MockTransport) -> HttpxWebhookSender:
    return HttpxWebhookSender(timeout_s=1.0, transport=handler)


async def test_the_post_goes_to_the_pinned_address_with_the_urls_host_and_sni() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    answer = await sender(httpx.MockTransport(handler)).post(post())
    assert (answer.status_code, answer.error) == (204, None)
    [request] = seen
    assert request.url.host == "93.184.216.34"
    assert (request.url.path, request.url.query) == ("/a", b"x=1")
    assert request.headers["host"] == "hooks.example"
    assert request.extensions["sni_hostname"] == "hooks.example"
    assert request.headers["webhook-id"] == "dlv-1"
    assert request.content == BODY


async def test_a_non_default_port_and_an_ipv6_address_are_kept() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200)

    await sender(httpx.MockTransport(handler)).post(
        post("http://hooks.example:8443/a", "2606:2800:220:1::1")
    )
    [request] = seen
    assert request.url.host == "2606:2800:220:1::1"
    assert request.url.port == 8443
    assert request.headers["host"] == "hooks.example:8443"


async def test_a_redirect_is_not_followed() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(302, headers={"location": "http://169.254.169.254/latest/"})

    answer = await sender(httpx.MockTransport(handler)).post(post())
    assert answer.status_code == 302
    assert answer.error == "HTTP 302 (redirects are not followed)"
    assert len(seen) == 1


async def test_at_most_64_kib_of_an_answer_is_read() -> None:
    produced = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal produced
        while True:
            produced += 16 * 1024
            yield b"x" * 16 * 1024

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(500, stream=_Stream(endless()))

    answer = await sender(httpx.MockTransport(handler)).post(post())
    assert (answer.status_code, answer.error) == (500, "HTTP 500")
    assert MAX_RESPONSE_BYTES <= produced <= MAX_RESPONSE_BYTES + 16 * 1024


async def test_trouble_is_an_answer_without_status_and_without_internals() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused to 10.0.0.1:5432")

    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out")

    refused = await sender(httpx.MockTransport(refuse)).post(post())
    assert (refused.status_code, refused.error) == (None, "could not connect")
    timed_out = await sender(httpx.MockTransport(slow)).post(post())
    assert (timed_out.status_code, timed_out.error) == (None, "no answer within 1 s")


async def test_an_ip_literal_resolves_to_itself_without_dns() -> None:
    resolver = SystemResolver()
    assert await resolver.resolve("169.254.169.254", 80) == ["169.254.169.254"]
    assert await resolver.resolve("::ffff:127.0.0.1", 80) == ["::ffff:7f00:1"]


class _Stream(httpx.AsyncByteStream):
    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self.chunks = chunks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self.chunks:
            yield chunk
