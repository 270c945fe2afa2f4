"""Named crash points for fault-injection tests: `BACKROOM_CRASH_AT=<name>` SIGKILLs the process there.

Only the fault tests set the variable; in normal runs a crash point costs one dict lookup."""

import os
import signal

_ENV = "BACKROOM_CRASH_AT"


def crash_point(name: str) -> None:
    """Die as if the machine lost power, when the operator asked for a crash at `name`."""
    wanted = os.environ.get(_ENV)
    if wanted and name in wanted.split(","):
        os.kill(os.getpid(), signal.SIGKILL)
