"""Processes a bench starts: Lockstep services, the floor's hops, the command line."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from pathlib import Path

from harness import REPO

STOP_TIMEOUT_S = 30.0  # SIGTERM -> exit, before SIGKILL


def child_env(namespace: str, trace_dir: Path | None, **extra: str) -> dict[str, str]:
    """The environment of a process the bench starts: the bench's namespace, warnings only,
    no OTLP export, and spans kept in ``trace_dir`` (a temp dir the bench reads them back
    from) or, with ``None``, none at all (``LOCKSTEP_TRACE_DIR`` empty). Always set: left to
    the default, a service keeps spans under the working directory."""
    env = {k: v for k, v in os.environ.items() if k != "OTEL_EXPORTER_OTLP_ENDPOINT"}
    env.update(
        LOCKSTEP_NAMESPACE=namespace,
        LOCKSTEP_TRACE_DIR=str(trace_dir) if trace_dir is not None else "",
        LOCKSTEP_LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
        **extra,
    )
    return env


class Child:
    """A process we started; stopped with SIGTERM (SIGKILL only if it does not exit in time).
    Its output goes to ``log_path`` (in the run's temp dir)."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self._argv = argv
        self._env = env
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.exit_code: int | None = None
        self.killed = False

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self._argv,
                cwd=REPO,
                env=self._env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches the bench only; it stops us in order
            )

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(
                f"{self.name} exited early with {self.proc.returncode}:\n{self.tail()}"
            )

    async def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.proc.wait, STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.killed = True
                self.proc.kill()
                await asyncio.to_thread(self.proc.wait, 10)
        self.exit_code = self.proc.returncode
        return self.exit_code

    def tail(self, lines: int = 25) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""
