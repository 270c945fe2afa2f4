"""The outside world of notifications behind small protocols: the SMTP server, the email
templates and webhook receivers, with their real implementations."""

import asyncio
import contextlib
import ipaddress
import smtplib
import socket
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any, Protocol

import httpx
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from libs.events.orders import Invoice
from libs.kit import documents
from services.notifications.domain import Attachment, is_success

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"


# --- email -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OutgoingEmail:
    """One message as the mailer sends it; every field is fixed when the email is queued, so a
    resend after a crash is the same message (same Message-ID, same Date)."""

    to: str
    subject: str
    text: str
    message_id: str
    template: str
    date: datetime
    attachments: tuple[Attachment, ...] = ()  # issue 12: the receipt's invoice PDF


class EmailRejected(Exception):
    """The SMTP server answered the message with an error code."""


class EmailDeferred(EmailRejected):
    """A 4xx answer (try again later): worth retrying."""


class EmailRefused(EmailRejected):
    """A 5xx answer (no such user, policy): retrying will not change it."""


class MailServerUnavailable(Exception):
    """The SMTP server could not be reached or dropped the connection."""


class Mailer(Protocol):
    async def send(self, email: OutgoingEmail) -> None:
        """Hand `email` to the mail system; raises EmailRejected or MailServerUnavailable."""
        ...


def build_message(sender: str, email: OutgoingEmail) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = email.to
    message["Subject"] = email.subject
    message["Date"] = format_datetime(email.date)
    message["Message-ID"] = email.message_id
    message["X-Backroom-Template"] = email.template
    message.set_content(email.text)
    for attachment in email.attachments:  # invoice attachments (issue 12)
        maintype, _, subtype = attachment.content_type.partition("/")
        message.add_attachment(
            attachment.content, maintype=maintype, subtype=subtype, filename=attachment.filename
        )
    return message


def _smtp_code(exc: smtplib.SMTPException) -> int:
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in exc.recipients.values()]
        return min(codes) if codes else 550
    if isinstance(exc, smtplib.SMTPResponseException):
        return exc.smtp_code
    return 550


def _rejection(exc: smtplib.SMTPException) -> EmailRejected:
    text = f"SMTP server refused the message: {exc}"
    return EmailDeferred(text) if 400 <= _smtp_code(exc) < 500 else EmailRefused(text)


_REFUSALS = (
    smtplib.SMTPRecipientsRefused,
    smtplib.SMTPResponseException,
    smtplib.SMTPNotSupportedError,
)


class SmtpSession:
    """One SMTP connection kept open from message to message (connect, greeting, EHLO and QUIT
    once, not per mail). A kept connection that turns out dead (server restarted, idle timeout)
    is replaced and the message sent once more on the new one."""

    def __init__(self, host: str, port: int, timeout_s: float) -> None:
        self._lock = threading.Lock()
        self._smtp: smtplib.SMTP | None = None
        self.server = (host, port)
        self.timeout_s = timeout_s

    def send(self, message: EmailMessage) -> None:
        """Blocking; raises EmailRejected for an error answer, OSError if unreachable."""
        with self._lock:
            for fresh in (False, True) if self._smtp is not None else (True,):
                if fresh:
                    self._close()
                    self._smtp = smtplib.SMTP(*self.server, timeout=self.timeout_s)
                assert self._smtp is not None
                try:
                    self._smtp.send_message(message)
                    return
                except _REFUSALS as exc:
                    self._reset()
                    raise _rejection(exc) from exc
                except OSError:
                    self._close()
                    if fresh:
                        raise

    def _reset(self) -> None:
        """Back to a clean session after a refusal (or a new connection next time)."""
        try:
            if self._smtp is not None:
                self._smtp.rset()
        except (OSError, smtplib.SMTPException):
            self._close()

    def _close(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            with contextlib.suppress(OSError, smtplib.SMTPException):
                smtp.close()


class SmtpMailer:
    """The real Mailer: smtplib on a worker thread, over one kept-open session."""

    def __init__(self, host: str, port: int, timeout_s: float, sender: str) -> None:
        self.session = SmtpSession(host, port, timeout_s)
        self.sender = sender

    async def send(self, email: OutgoingEmail) -> None:
        message = build_message(self.sender, email)
        try:
            await asyncio.to_thread(self.session.send, message)
        except OSError as exc:  # SMTPServerDisconnected is one
            raise MailServerUnavailable(f"{type(exc).__name__}: {exc}") from exc


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str


class Templates(Protocol):
    def render(self, template: str, context: Mapping[str, Any]) -> Rendered:
        """The subject line and text body of `template` filled in with `context`."""
        ...


class JinjaTemplates:
    """The Jinja2 files in `templates/`, each with a `subject` and a `text` block."""

    def __init__(self, directory: Path = TEMPLATES_DIR) -> None:
        self._env = Environment(
            loader=FileSystemLoader(directory),
            undefined=StrictUndefined,
            autoescape=False,  # plain-text mail: nothing is interpreted as markup
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
        )

    def render(self, template: str, context: Mapping[str, Any]) -> Rendered:
        tmpl = self._env.get_template(f"{template}.jinja")
        ctx = tmpl.new_context(dict(context))
        subject = " ".join("".join(tmpl.blocks["subject"](ctx)).split())
        text = "".join(tmpl.blocks["text"](ctx)).strip("\n") + "\n"
        return Rendered(subject=subject, text=text)


# --- webhooks ----------------------------------------------------------------------------------


class ResolutionFailed(Exception):
    """A host name that does not resolve (or the resolver is unreachable)."""


class Resolver(Protocol):
    async def resolve(self, host: str, port: int) -> list[str]:
        """Every IP address `host` stands for (an IP literal is itself); ResolutionFailed if
        it has none."""
        ...


class SystemResolver:
    """The real Resolver: the operating system's `getaddrinfo`, without blocking the loop."""

    async def resolve(self, host: str, port: int) -> list[str]:
        with contextlib.suppress(ValueError):
            return [str(ipaddress.ip_address(host))]
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
            )
        except (socket.gaierror, UnicodeError) as exc:
            raise ResolutionFailed(f"{host} does not resolve") from exc
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        if not addresses:
            raise ResolutionFailed(f"{host} does not resolve")
        return addresses


@dataclass(frozen=True)
class PinnedPost:
    """One webhook POST to `url`, connecting to `address` (already vetted): the connection goes
    there and nowhere else, while Host and TLS (SNI and the certificate check) use the URL's
    host name, so a second DNS answer cannot swap the destination."""

    url: str
    address: str
    body: bytes
    headers: Mapping[str, str]


@dataclass(frozen=True)
class Answer:
    """What came of one POST: the status code (None if there was no answer) and, unless it was
    a 2xx, what went wrong in words. `refused`: the target itself was refused (never retried)."""

    status_code: int | None
    error: str | None = None
    refused: bool = False


class WebhookSender(Protocol):
    async def post(self, request: PinnedPost) -> Answer:
        """POST it; never raises for the receiver's trouble (that is the Answer)."""
        ...


MAX_RESPONSE_BYTES = 64 * 1024


class HttpxWebhookSender:
    """The real WebhookSender over httpx: redirects are not followed (a 3xx is a failed attempt),
    at most `max_response_bytes` of an answer are read (then the connection is dropped), and
    each POST has its own connection to the pinned address (a pooled TLS connection made for
    one host name must not carry another's request), closed after the answer. The TLS settings
    are made once and shared."""

    def __init__(
        self,
        timeout_s: float,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.timeout_s = timeout_s
        self.max_response_bytes = max_response_bytes
        self._transport = transport  # tests hand in a MockTransport
        self._tls: ssl.SSLContext | None = None

    def _client(self) -> httpx.AsyncClient:
        if self._transport is not None:
            return httpx.AsyncClient(transport=self._transport, timeout=self.timeout_s)
        if self._tls is None:
            self._tls = httpx.create_ssl_context()
        transport = httpx.AsyncHTTPTransport(verify=self._tls, retries=0)
        return httpx.AsyncClient(transport=transport, timeout=self.timeout_s, trust_env=False)

    async def post(self, request: PinnedPost) -> Answer:
        url = httpx.URL(request.url)
        host = url.raw_host.decode("ascii")
        default_port = 443 if url.scheme == "https" else 80
        headers = dict(request.headers)
        headers["Host"] = host if url.port in (None, default_port) else f"{host}:{url.port}"
        pinned = url.copy_with(host=request.address)
        try:
            async with (
                self._client() as client,
                client.stream(
                    "POST",
                    pinned,
                    content=request.body,
                    headers=headers,
                    follow_redirects=False,
                    extensions={"sni_hostname": host},
                ) as response,
            ):
                await self._read_capped(response)
                status = response.status_code
        except httpx.TimeoutException:
            return Answer(None, f"no answer within {self.timeout_s:g} s")
        except httpx.ConnectError:
            return Answer(None, "could not connect")
        except httpx.HTTPError as exc:
            return Answer(None, f"{type(exc).__name__}"[:200])
        if is_success(status):
            return Answer(status)
        if 300 <= status < 400:
            return Answer(status, f"HTTP {status} (redirects are not followed)")
        return Answer(status, f"HTTP {status}")

    async def _read_capped(self, response: httpx.Response) -> None:
        """Read (and drop) at most `max_response_bytes` of the answer: a receiver cannot make us
        hold or wait for an endless body."""
        if response.is_stream_consumed:  # an answer built in memory (a test transport's)
            return
        read = 0
        async for chunk in response.aiter_raw():
            read += len(chunk)
            if read >= self.max_response_bytes:
                break

    async def aclose(self) -> None:
        """Nothing is kept open between POSTs."""


# --- invoice attachments (issue 12) ---


class Documents(Protocol):
    def invoice_pdf(self, invoice: Invoice) -> bytes:
        """The invoice as orders renders it (the same bytes as GET /orders/{id}/invoice)."""
        ...


class PdfDocuments:
    """`Documents` with the shared renderer of libs/kit/documents.py."""

    def invoice_pdf(self, invoice: Invoice) -> bytes:
        return documents.render_invoice(invoice)
