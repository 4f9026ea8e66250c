"""One bench run's resources and their clean-up.

A ``Run`` owns a fresh namespace (``<prefix>_<8 hex>``), a temp dir for logs, spans, signing
keys (``<tmp>/keys``: one of every role, as ``lockstep keys init`` makes; the processes get it
as ``LOCKSTEP_KEY_DIR``) and other scratch, and every process and client the bench starts in
it. ``guarded`` runs the bench's
work under an overall time limit and always cleans up afterwards: on success, on failure, on
timeout, on Ctrl-C and on SIGTERM. Clean-up stops the processes (SIGTERM, then SIGKILL), closes
the clients, deletes every ``<ns>.…`` topic and consumer group and drops every ``<ns>_…``
schema, each step under its own time limit, and then checks that nothing of the namespace is
left; whatever went wrong is in ``errors``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import signal
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from events.signing import KeyStore, SigningKey
from harness.children import Child, child_env
from harness.load import WARNINGS
from harness.namespace import delete_own_groups, delete_own_topics, leftovers, new_settings
from harness.report import say
from shared.db import drop_namespace_schemas

T = TypeVar("T")
Closer = Callable[[], Any]  # returns an awaitable, or None (a synchronous close)


class Run:
    def __init__(
        self,
        prefix: str = "bench",
        *,
        child_spans: bool = False,
        bench_spans: bool = False,
        **settings: Any,
    ) -> None:
        """``child_spans``: the processes keep spans in ``<tmp>/traces``, to be read back;
        otherwise they keep none (``LOCKSTEP_TRACE_DIR`` empty). ``bench_spans``: the same
        for the bench's own tracer (``self.settings.trace_dir``)."""
        probe = new_settings(prefix, **settings)  # refuses non-loopback hosts before any work
        self.tmp = Path(tempfile.mkdtemp(prefix=f"lockstep-{prefix}-"))
        traces = self.tmp / "traces"
        self.trace_dir = traces if child_spans else None
        self.keys = KeyStore(self.tmp / "keys")
        self.keys.init("bench")
        self.settings = probe.model_copy(
            update={"trace_dir": traces if bench_spans else None, "key_dir": self.keys.directory}
        )
        self.ns = self.settings.namespace
        self.children: list[Child] = []
        self.closers: list[Closer] = []
        self.errors: list[str] = []  # clean-up problems

    def env(self, **extra: str) -> dict[str, str]:
        return child_env(
            self.ns, self.trace_dir, LOCKSTEP_KEY_DIR=str(self.keys.directory), **extra
        )

    def key(self, role: str) -> SigningKey:
        """The run's key of ``role`` (``platform`` signs the release model it puts in force)."""
        return self.keys.signing_key(role)

    def child(
        self, name: str, argv: list[str], log_name: str, env: dict[str, str] | None = None
    ) -> Child:
        """A process of this run (not started yet), logging to ``<tmp>/<log_name>``."""
        child = Child(name, argv, env if env is not None else self.env(), self.tmp / log_name)
        self.children.append(child)
        return child

    def closing(self, close: Closer) -> None:
        """Close this at clean-up unless ``closed`` says it already was."""
        self.closers.append(close)

    def closed(self, close: Closer) -> None:
        self.closers.remove(close)

    async def cleanup(self) -> None:
        for child in self.children:
            with contextlib.suppress(Exception):
                await child.stop()
        for close in reversed(self.closers):
            await self._try("close a client", _maybe_await(close), 15)
        self.closers.clear()
        settings = self.settings
        await self._try("delete namespace topics", delete_own_topics(settings), 30)
        await self._try("drop Postgres schemas", drop_namespace_schemas(settings), 30)
        await self._try("delete consumer groups", delete_own_groups(settings), 30)
        await self._try("check nothing is left", self._nothing_left(), 30)

    async def _nothing_left(self) -> None:
        deadline = time.monotonic() + 15  # topic deletion completes in the background
        while True:
            left = {k: v for k, v in (await leftovers(self.settings)).items() if v}
            if not left:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"still there after clean-up: {left}")
            await asyncio.sleep(0.5)

    async def _try(self, what: str, work: Awaitable[Any], timeout_s: float) -> None:
        try:
            await asyncio.wait_for(work, timeout_s)
        except Exception as exc:
            self.errors.append(f"{what}: {type(exc).__name__}: {exc}")

    def remove_tmp(self, keep: bool = False) -> None:
        if keep:
            say(f"kept {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


async def _maybe_await(close: Closer) -> None:
    result = close()
    if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
        await result


async def guarded(
    run: Run,
    work: Callable[[], Awaitable[T]],
    *,
    timeout_s: float | None,
    keep_temp: bool = False,
) -> tuple[T | None, str | None]:
    """``work()`` under ``timeout_s`` (``None``: no limit), then clean-up whatever happened;
    returns (result, error).
    SIGTERM cancels the work as Ctrl-C does; either way clean-up runs and the cancellation
    goes on up (``main`` turns it into exit status 130)."""
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    # Client-library chatter (aiokafka retries) goes to a file; its tail is shown on failure.
    log_file = run.tmp / "bench.log"
    file_handler = logging.FileHandler(log_file)
    logging.basicConfig(
        level=logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=[file_handler, WARNINGS],
        force=True,
    )
    say(f"namespace {run.ns}; temp dir {run.tmp}")
    result: T | None = None
    error: str | None = None
    try:
        async with asyncio.timeout(timeout_s):
            result = await work()
    except TimeoutError as exc:
        error = (
            f"overall timeout of {timeout_s:g}s reached"
            if timeout_s is not None
            else f"TimeoutError: {exc}"
        )
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        logging.getLogger("bench").exception("the bench failed")
    finally:
        say("cleaning up (processes, topics, consumer groups, schemas)…")
        await run.cleanup()
        for child in run.children:
            if child.exit_code not in (0, None) or child.killed:
                say(f"{child.name}: exit code {child.exit_code}; log tail:\n{child.tail()}")
        if error is not None:
            with contextlib.suppress(OSError):
                lines = log_file.read_text(errors="replace").splitlines()
                if lines:
                    say(f"last client-library messages ({len(lines)} in all):")
                    say("\n".join(lines[-15:]))
        file_handler.close()
        run.remove_tmp(keep_temp)
    if error is not None:
        say(f"bench failed: {error}")
        for message in run.errors:
            say(f"clean-up: {message}")
    return result, error


def main(coroutine: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """``asyncio.run`` it; an interrupted run (Ctrl-C, SIGTERM) has cleaned up and exits 130."""
    try:
        return asyncio.run(coroutine())
    except (KeyboardInterrupt, asyncio.CancelledError):
        say("interrupted (cleaned up)")
        return 130
