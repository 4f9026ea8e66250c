"""The command line's composition root: one ``Root`` per invocation, made by the root app's
callback and handed to every command through ``ctx.obj``.

It builds the settings once (the only ``Settings()`` of the command line; nothing here reads
the environment otherwise), on first use: commands that need none (``model validate``,
``infra``) still work when a ``LOCKSTEP_*`` variable is wrong. Invalid settings are one line
naming the variable and the form it must take, never a traceback."""

from __future__ import annotations

import asyncio
import getpass
import logging
import sys
from collections.abc import AsyncIterator, Coroutine, Iterator
from contextlib import asynccontextmanager, contextmanager
from functools import cached_property
from typing import Any, TypeVar

import asyncpg
import typer
from opentelemetry.trace import Tracer
from pydantic import ValidationError
from rich.console import Console

from events import ArtifactRef, ArtifactRefError
from shared.settings import Settings

ENV_PREFIX = "LOCKSTEP_"
T = TypeVar("T")


def _console(stderr: bool) -> Console:
    # Piped output (CI logs) is not cut to 80 columns.
    tty = (sys.stderr if stderr else sys.stdout).isatty()
    return Console(stderr=stderr, width=None if tty else 160)


def setting_problems(exc: ValidationError) -> str:
    """One line: each invalid setting by its variable's name, and what it must be."""
    fields = Settings.model_fields
    said = []
    for error in exc.errors():
        name = str(error["loc"][0]) if error["loc"] else ""
        field = fields.get(name)
        alias = field.validation_alias if field is not None else None
        variable = alias if isinstance(alias, str) else ENV_PREFIX + name.upper()
        message = str(error["msg"]).removeprefix("Value error, ")
        given = error.get("input")
        shown = f" (got {str(given)[:60]!r})" if isinstance(given, str | int | float) else ""
        said.append(f"{variable}{shown}: {message}")
    return "; ".join(said)


class Root:
    """What one ``lockstep`` invocation works with: its settings and its two consoles."""

    def __init__(self, out: Console | None = None, err: Console | None = None) -> None:
        self.out = out or _console(stderr=False)
        self.err = err or _console(stderr=True)

    @cached_property
    def settings(self) -> Settings:
        try:
            return Settings()
        except ValidationError as exc:
            problems = setting_problems(exc)
            raise self.fail(f"invalid settings: {problems}", one_line=True) from None

    def fail(self, message: str, code: int = 2, *, one_line: bool = False) -> typer.Exit:
        """Print ``error: message`` and return the exit to raise (``one_line``: never
        wrapped, so a log keeps it whole)."""
        self.err.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=one_line)
        return typer.Exit(code)

    def parse_label(self, label: str) -> ArtifactRef:
        try:
            return ArtifactRef.parse_label(label)
        except ArtifactRefError as exc:
            raise self.fail(exc.reason) from None

    def on_postgres(self, work: Coroutine[Any, Any, T]) -> T:
        """Run ``work`` (which talks to a service's schema); Postgres away is one line."""
        with self.postgres_errors():
            return asyncio.run(work)

    @contextmanager
    def postgres_errors(self) -> Iterator[None]:
        """Postgres away (or refusing) is one line, exit 2, not a traceback."""
        try:
            yield
        except (OSError, asyncpg.PostgresError) as exc:
            where = self.settings.pg_dsn.split("@")[-1]
            raise self.fail(f"cannot reach Postgres at {where}: {exc}") from None

    @asynccontextmanager
    async def tracer(self, service: str) -> AsyncIterator[Tracer]:
        """A tracer of the command line's own for ``service`` (``<service>-cli``), its spans
        flushed when the work is done."""
        from shared.telemetry import tracer, tracer_provider

        provider = tracer_provider(self.settings, f"{service}-cli")
        try:
            yield tracer(provider)
        finally:
            provider.shutdown()

    def configure_logging(self) -> None:
        """For the long-running commands (``run``, ``deployer``), at ``LOCKSTEP_LOG_LEVEL``."""
        logging.basicConfig(
            level=self.settings.log_level,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )


def of(ctx: typer.Context) -> Root:
    """The invocation's ``Root`` (the root app's callback put it there)."""
    found = ctx.find_root().obj
    if not isinstance(found, Root):  # a sub-app invoked on its own (tests): make one
        found = ctx.find_root().obj = Root()
    return found


def whoami() -> str:
    """Whoever runs the command (the default of ``--by``)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
