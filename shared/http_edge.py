"""An HTTP edge a service runs beside its consumer (uvicorn, in the service's event loop).

uvicorn's own signal handlers are left out: the service's SIGTERM drain decides when the
edge stops (``stop``), first of all the service's parts, so no request arrives mid-drain."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import uvicorn

log = logging.getLogger(__name__)


class _QuietServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class HttpServer:
    def __init__(self, app: Any, *, host: str, port: int, name: str) -> None:
        self.name = name
        self._config = uvicorn.Config(
            app, host=host, port=port, log_level="warning", lifespan="off", access_log=False
        )
        self._server = _QuietServer(self._config)
        self._serving: asyncio.Task[None] | None = None
        self.port: int | None = None
        self.started = asyncio.Event()

    async def start(self) -> None:
        """Listen; raises if the port cannot be had."""
        self._serving = asyncio.create_task(self._serve())
        while not self._server.started and not self._serving.done():  # noqa: ASYNC110 - no event
            await asyncio.sleep(0.01)
        if self._serving.done():
            await self._serving  # raises why it stopped
            raise OSError(f"{self.name}: stopped before it listened")
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        self.started.set()
        log.info("%s on http://%s:%s", self.name, self._config.host, self.port)

    async def _serve(self) -> None:
        try:
            await self._server.serve()
        except SystemExit as exc:  # uvicorn exits when it cannot bind: say so, do not exit
            raise OSError(
                f"{self.name}: could not listen on {self._config.host}:{self._config.port} "
                f"(is the port taken?)"
            ) from exc

    async def check(self) -> None:
        """Raise if the server stopped on its own."""
        if self._serving is not None and self._serving.done():
            await self._serving
            raise RuntimeError(f"{self.name}: stopped serving")

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._serving is not None:
            await self._serving

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` (a service companion)."""
        await self.start()
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
            await self.check()
        await self.stop()
