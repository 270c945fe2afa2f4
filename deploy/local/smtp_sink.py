"""A local SMTP sink: accepts every message and stores it as one ``.eml`` file.

Run it (``deploy/local/smtp.sh up`` does)::

    python deploy/local/smtp_sink.py --host 127.0.0.1 --port 2525 --maildir .run/smtp/maildir

Each message lands in the maildir as ``<UTC timestamp>-<uuid>.eml`` (written under a dot-name,
then renamed, so a reader never sees half a message), with the SMTP envelope prepended as
``X-Envelope-From`` / ``X-Envelope-To`` headers (so Bcc recipients are visible too). Tests import
this module for ``read_messages`` / ``wait_for_messages``; only ``serve`` needs aiosmtpd.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import email
import email.policy
import logging
import os
import signal
import time
import uuid
from datetime import UTC, datetime
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aiosmtpd.smtp import SMTP, Envelope, Session

log = logging.getLogger("smtp_sink")

SUFFIX = ".eml"


def message_paths(maildir: str | Path) -> list[Path]:
    """The stored messages, oldest first (file names start with a sortable timestamp)."""
    directory = Path(maildir)
    if not directory.is_dir():
        return []
    return sorted(
        p for p in directory.iterdir() if p.suffix == SUFFIX and not p.name.startswith(".")
    )


def read_messages(maildir: str | Path) -> list[EmailMessage]:
    """Every message in ``maildir``, oldest first, parsed with the modern email API.

    The files hold the bytes as received (CRLF line ends); they are parsed with LF line ends, so
    ``get_content()`` returns ordinary ``\n`` text.
    """
    messages: list[EmailMessage] = []
    for path in message_paths(maildir):
        raw = path.read_bytes().replace(b"\r\n", b"\n")
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        messages.append(message)
    return messages


def wait_for_messages(
    maildir: str | Path, count: int = 1, timeout: float = 10.0, interval: float = 0.05
) -> list[EmailMessage]:
    """Poll until at least ``count`` messages are stored; return them all (TimeoutError if not)."""
    deadline = time.monotonic() + timeout
    while True:
        messages = read_messages(maildir)
        if len(messages) >= count or time.monotonic() >= deadline:
            break
        time.sleep(interval)
    if len(messages) < count:
        raise TimeoutError(f"{len(messages)} of {count} messages in {maildir} after {timeout}s")
    return messages


def clear_messages(maildir: str | Path) -> int:
    """Delete the stored messages (and stray temp files); return how many messages went."""
    removed = 0
    directory = Path(maildir)
    if not directory.is_dir():
        return 0
    for path in directory.iterdir():
        if path.suffix == SUFFIX or path.name.endswith(".tmp"):
            path.unlink(missing_ok=True)
            if path.suffix == SUFFIX:
                removed += 1
    return removed


def store_message(maildir: str | Path, data: bytes) -> Path:
    """Write one raw message atomically; return its final path."""
    directory = Path(maildir)
    directory.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    name = f"{stamp}-{uuid.uuid4()}{SUFFIX}"
    tmp = directory / f".{name}.tmp"
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    final = directory / name
    os.replace(tmp, final)
    return final


def _header_line(name: str, value: str) -> bytes:
    return f"{name}: {value}\r\n".encode("utf-8", "surrogateescape")


class SinkHandler:
    """aiosmtpd handler: stores each message in ``maildir`` and logs from/to/subject."""

    def __init__(self, maildir: str | Path) -> None:
        self.maildir = Path(maildir)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or envelope.content or b""
        if isinstance(content, str):
            content = content.encode("utf-8", "surrogateescape")
        sender = envelope.mail_from or ""
        recipients = ", ".join(envelope.rcpt_tos)
        data = (
            _header_line("X-Envelope-From", f"<{sender}>")
            + _header_line("X-Envelope-To", recipients)
            + content
        )
        path = await asyncio.to_thread(store_message, self.maildir, data)
        headers = BytesHeaderParser(policy=email.policy.default).parsebytes(content)
        log.info(
            "from=%s to=%s subject=%r file=%s",
            sender,
            recipients,
            str(headers.get("Subject", "")),
            path.name,
        )
        return f"250 OK stored as {path.name}"


async def serve(host: str, port: int, maildir: str | Path) -> None:
    """Run the sink until SIGTERM or SIGINT."""
    from aiosmtpd.smtp import SMTP as SMTPProtocol

    loop = asyncio.get_running_loop()
    handler = SinkHandler(maildir)
    Path(maildir).mkdir(parents=True, exist_ok=True)
    server = await loop.create_server(
        # hostname given: the default, socket.getfqdn(), can hang on a host without DNS.
        lambda: SMTPProtocol(
            handler, hostname="backroom-smtp-sink", enable_SMTPUTF8=True, loop=loop
        ),
        host=host,
        port=port,
        reuse_address=True,
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("listening on %s:%d, mail in %s", host, port, Path(maildir).resolve())
    async with server:
        await stop.wait()
    log.info("stopped")


def main(argv: list[str] | None = None) -> None:
    repo_root = Path(__file__).resolve().parents[2]
    run_dir = os.environ.get("BACKROOM_RUN_DIR") or str(repo_root / ".run")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("SMTP_PORT", "2525")))
    parser.add_argument("--maildir", default=str(Path(run_dir) / "smtp" / "maildir"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd logs every command
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port, args.maildir))


if __name__ == "__main__":
    main()
