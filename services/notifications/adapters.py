"""The outside world of notifications behind small protocols: the SMTP server, the email
templates and webhook receivers, with their real implementations."""

import asyncio
import contextlib
import smtplib
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

from services.notifications.domain import is_success

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


class WebhookSender(Protocol):
    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> str | None:
        """POST `body`; None on a 2xx answer, else what went wrong (never raises for the
        receiver's trouble)."""
        ...


class HttpxWebhookSender:
    """The real WebhookSender: one httpx client, redirects not followed (a subscriber's URL is
    the one the admin registered). The client is made on first use, on the running loop."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._client: httpx.AsyncClient | None = None

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> str | None:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout_s, follow_redirects=False)
        try:
            response = await self._client.post(url, content=body, headers=dict(headers))
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"[:1000]
        if is_success(response.status_code):
            return None
        return f"HTTP {response.status_code}"

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()
