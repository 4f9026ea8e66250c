"""``lockstep run`` (a service, or ``all`` of them, each in a process) and ``lockstep
deployer`` (the reference deployer agent): the long-running commands."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from cli.root import Root, of
from shared.settings import user_state_dir


def run(
    ctx: typer.Context,
    service: Annotated[str, typer.Argument(help="A service name, or `all` for every service")],
) -> None:
    """Run a service until SIGTERM (then drain, commit, exit 0); `all`: each in a process."""
    # The catalog is the one place that names every service's assembly: `run` may use it.
    from services.catalog import SERVICES, spec

    root = of(ctx)
    root.configure_logging()
    if service == "all":
        raise typer.Exit(_run_all(root, list(SERVICES)))
    try:
        service_spec = spec(service)
    except KeyError as exc:
        raise root.fail(str(exc.args[0])) from None
    from shared.service import serve

    asyncio.run(serve(service_spec, root.settings))


def _run_all(root: Root, names: list[str]) -> int:
    """One child process per service; SIGTERM/SIGINT is passed on and every child awaited."""
    # Each child builds its own settings from the same environment, passed on as it is.
    children = {
        name: subprocess.Popen(
            [sys.executable, "-P", "-m", "cli", "run", name], env=os.environ.copy()
        )
        for name in names
    }
    stopping = False

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for child in children.values():
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    worst = 0
    while children:
        for name, child in list(children.items()):
            code = child.poll()
            if code is None:
                continue
            del children[name]
            if code != 0:
                root.err.print(f"service {name} exited with {code}")
                worst = worst or code
                if not stopping:
                    forward(signal.SIGTERM, None)
        time.sleep(0.2)
    return worst


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
    except JournalError as exc:
        raise root.fail(str(exc)) from None
