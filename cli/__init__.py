"""The ``lockstep`` command line.

A long-running command (``lockstep run``, ``lockstep deployer``) is stopped with SIGTERM, and
a SIGTERM while it is still starting (importing, reading its settings, before its event loop
takes the signal over) finds nothing begun: it exits 0 there too, not killed by the signal.
That is set here, the first code of the command line either entry point runs (the
interpreter's own start-up, some tens of milliseconds, comes before it and keeps the default)."""

import signal
import sys

LONG_RUNNING = ("run", "deployer")


def _stopped_while_starting(signum: int, frame: object) -> None:
    raise SystemExit(0)


_command = sys.argv[1] if len(sys.argv) > 1 else None
if _command in LONG_RUNNING and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
    signal.signal(signal.SIGTERM, _stopped_while_starting)
