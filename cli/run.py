"""``lockstep run`` (a service, or ``all`` of them, each in a process) and ``lockstep
deployer`` (the reference deployer agent): the long-running commands."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from cli.root import of
from shared.settings import user_state_dir


def run(
    ctx: typer.Context,
    services: Annotated[
        list[str],
        typer.Argument(
            help="A service name, several (run together in this process), or `all`",
            show_default=False,
        ),
    ],
    together: Annotated[
        bool,
        typer.Option(
            "--together",
            help="With `all`: every service in one child process, on one event loop",
        ),
    ] = False,
) -> None:
    """Run a service until SIGTERM (then drain, commit, exit 0); `all`: each in a process.

    Several names share this process (each still its own group, schema and principal)."""
    # The catalog is the one place that names every service's assembly: `run` may use it.
    from services.catalog import SERVICES, spec

    root = of(ctx)
    root.configure_logging()
    if services == ["all"]:
        from cli.keys import init_keys

        init_keys(root)  # every signing service finds its key, out of the box
        names = list(SERVICES)
        raise typer.Exit(_run_all([names] if together else [[n] for n in names]))
    if "all" in services:
        raise root.fail("`all` runs every service: name it alone, or name services without it")
    if together:
        raise root.fail("--together goes with `all`; several names already run together")
    if len(set(services)) != len(services):
        raise root.fail("a service is named twice: name each once")
    try:
        specs = [spec(name) for name in services]
    except KeyError as exc:
        raise root.fail(str(exc.args[0])) from None
    from shared.db import NotComingUp
    from shared.service import serve_together

    try:  # Kafka or Postgres away is waited for; one that refuses is one line, exit 2
        asyncio.run(serve_together(specs, root.settings))
    except NotComingUp as exc:
        raise root.fail(str(exc), one_line=True) from None


# A child that dies is started again after RESTART_FIRST_S, the wait doubling with each death
# up to RESTART_MAX_S; once it has stayed up RESTART_RESET_AFTER_S, the next death waits the
# first again.
RESTART_FIRST_S = 1.0
RESTART_MAX_S = 30.0
RESTART_RESET_AFTER_S = 60.0
_TICK_S = 0.2
supervisor_log = logging.getLogger("lockstep.run")


def _how_it_ended(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class _Child:
    """One child process (a service, or services run together), and when to start it again
    if it died."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.name = ", ".join(names)
        self.what = f"service {self.name}" if len(names) == 1 else f"services {self.name}"
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.wait_s = RESTART_FIRST_S  # before the next restart
        self.restart_at: float | None = None
        self.restarts = 0

    def start(self, now: float) -> None:
        # Each child builds its own settings from the same environment, passed on as it is.
        self.process = subprocess.Popen(
            [sys.executable, "-P", "-m", "cli", "run", *self.names], env=os.environ.copy()
        )
        self.started_at, self.restart_at = now, None
        if self.restarts:
            supervisor_log.warning(
                "%s restarted (pid %d, restart %d)",
                self.what,
                self.process.pid,
                self.restarts,
            )
        else:
            supervisor_log.info("%s started (pid %d)", self.what, self.process.pid)

    def died(self, code: int, now: float) -> None:
        """Log the death and set the restart: after ``wait_s``, doubling, capped."""
        assert self.process is not None
        up_s = now - self.started_at
        if up_s >= RESTART_RESET_AFTER_S:
            self.wait_s = RESTART_FIRST_S
        wait_s = self.wait_s
        self.wait_s = min(wait_s * 2, RESTART_MAX_S)
        looping = (
            f" (crash-looping: tried every {RESTART_MAX_S:g} s until it stays up "
            f"{RESTART_RESET_AFTER_S:g} s)"
            if wait_s >= RESTART_MAX_S
            else ""
        )
        supervisor_log.error(
            "%s (pid %d) died after %.1f s (%s); restarting in %g s%s",
            self.what,
            self.process.pid,
            up_s,
            _how_it_ended(code),
            wait_s,
            looping,
        )
        self.process, self.restart_at = None, now + wait_s
        self.restarts += 1


def _run_all(groups: list[list[str]]) -> int:
    """One child process per group of services, each started again when it dies (see
    RESTART_*).
    SIGTERM/SIGINT is passed on to every child and each awaited as it drains; no child is
    started after it. 0 when every child then stopped cleanly, else the first one's failure
    (128 + the signal, for a child a signal ended)."""
    children = [_Child(names) for names in groups]
    received: list[int] = []  # appended by the handler only; forwarded by the loop below

    def on_signal(signum: int, _frame: object) -> None:
        received.append(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    for child in children:
        child.start(time.monotonic())
    forwarded = 0
    worst = 0
    while True:
        if forwarded < len(received):
            # A child started while the signal came is alive here, and told too.
            if forwarded == 0:
                supervisor_log.info("%s: stopping every service", signal.Signals(received[0]).name)
            for signum in received[forwarded:]:
                for child in children:
                    if child.process is not None and child.process.poll() is None:
                        child.process.send_signal(signum)
            forwarded = len(received)
        stopping = forwarded > 0
        now = time.monotonic()
        for child in children:
            if child.process is None:
                if not stopping and child.restart_at is not None and now >= child.restart_at:
                    child.start(now)
                continue
            code = child.process.poll()
            if code is None:
                continue
            if not stopping:
                child.died(code, now)
                continue
            child.process = None
            if code == 0:
                supervisor_log.info("%s stopped", child.what)
            else:
                supervisor_log.error(
                    "%s did not stop cleanly (%s)", child.what, _how_it_ended(code)
                )
                worst = worst or (128 - code if code < 0 else code)
        if stopping and all(child.process is None for child in children):
            return worst
        time.sleep(_TICK_S)


def deployer(
    ctx: typer.Context,
    agent: Annotated[str, typer.Option(help="This agent's name (its consumer group)")],
    env: Annotated[list[str], typer.Option(help="An environment it deploys to (repeatable)")],
    state_dir: Annotated[
        Path | None,
        typer.Option(
            help="Where it records what runs where [default: ~/.local/state/lockstep/deployer]"
        ),
    ] = None,
    fail: Annotated[list[str] | None, typer.Option(help="Fail deployments of this service")] = None,
) -> None:
    """Run the reference deployer agent until SIGTERM."""
    from services.deployer.api import (
        AgentConfig,
        ConfigError,
        DeployerAgent,
        JournalError,
        LocalStateDeployer,
    )
    from shared.telemetry import tracer, tracer_provider

    root = of(ctx)
    root.configure_logging()
    settings = root.settings
    where = state_dir if state_dir is not None else user_state_dir() / "deployer"
    try:  # the agent keeps its journal beside what it records
        config = AgentConfig.from_settings(settings, agent=agent, state_dir=where)
    except ConfigError as exc:
        raise root.fail(str(exc)) from None

    async def go() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        provider = tracer_provider(settings, f"deployer-{agent}")
        target = LocalStateDeployer(where, fail_for=set(fail or []))
        try:
            await DeployerAgent(target, config, environments=env, tracer=tracer(provider)).run(stop)
        finally:
            provider.shutdown()

    try:
        asyncio.run(go())
    except (JournalError, ConfigError) as exc:  # a journal or trust store it cannot use
        raise root.fail(str(exc)) from None
