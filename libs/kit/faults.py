"""Named crash points for fault-injection tests: the process SIGKILLs itself there, as if the
machine lost power.

Two ways to ask for a crash (only fault tests do; otherwise a crash point costs two dict lookups):

- `BACKROOM_CRASH_AT=<name>[,<name>...]`: die at the first occurrence of any of the names (set it
  when starting the process, start it again without it to recover).
- `BACKROOM_CRASH_DIR=<dir>`: one-shot, armed while the process runs. Writing the names (one a
  line) to `<dir>/<pid>` arms the process with that pid; the first matching crash point renames
  the file to `<pid>.fired` and dies, so a restarted process is not armed again
  (`bench/stack.py` `Stack.arm`).

The crash points (keep this list in step with `bench/faults.py`):

| name | where | between |
|---|---|---|
| `<service>.after_db_commit` | libs/kit/inbox.py | the handler's commit and the Kafka offset commit |
| `relay.after_publish` | libs/kit/outbox.py | Kafka's acks for a batch and the delete of its outbox rows |
| `payments.after_intent_commit` | services/payments/service.py | the commit of a claim of an owed capture or refund and the PSP call |
| `payments.after_provider_capture` | services/payments/service.py | the PSP's capture and the commit of its outcome |
| `payments.after_provider_refund` | services/payments/service.py | the PSP's refund and the commit of its outcome |
| `notifications.after_intent_commit` | services/notifications/service.py | the email worker's claim commit and the SMTP call |
| `notifications.after_smtp_send` | services/notifications/service.py | the SMTP server's accepting a mail and the commit of its outcome |
"""

import os
import signal

_ENV = "BACKROOM_CRASH_AT"
_DIR_ENV = "BACKROOM_CRASH_DIR"


def crash_point(name: str) -> None:
    """Die as if the machine lost power, when the operator asked for a crash at `name`."""
    wanted = os.environ.get(_ENV)
    if wanted and name in wanted.split(","):
        os.kill(os.getpid(), signal.SIGKILL)
    armed_dir = os.environ.get(_DIR_ENV)
    if armed_dir and _take_armed(armed_dir, name):
        os.kill(os.getpid(), signal.SIGKILL)


def _take_armed(armed_dir: str, name: str) -> bool:
    """True (once) if this process was armed for `name`; the arming file is consumed."""
    path = os.path.join(armed_dir, str(os.getpid()))
    try:
        with open(path, encoding="utf-8") as f:
            names = f.read().split()
    except OSError:
        return False
    if name not in names:
        return False
    try:
        # Atomic: of two threads (or event-loop tasks) reaching an armed point, one wins.
        os.replace(path, f"{path}.fired")
    except OSError:
        return False
    return True
