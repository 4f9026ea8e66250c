"""The command line's composition root: settings built once per invocation, on first use,
and invalid settings told in one line (which variable, what form), never a traceback."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import cli.root
from cli.main import app
from shared.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def invoke(*args: str, **env: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), env=env)
    if result.exception is not None:  # an exit, never an exception escaping the command
        assert isinstance(result.exception, SystemExit), repr(result.exception)
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize(
    ("variable", "value", "args", "said"),
    [
        ("LOCKSTEP_TOPIC_PARTITIONS", "0", ["topics", "ensure"], "greater than or equal to 1"),
        ("LOCKSTEP_LOG_LEVEL", "loud", ["run", "artifacts"], "'DEBUG', 'INFO', 'WARNING'"),
        ("LOCKSTEP_NAMESPACE", "Not-A-Name", ["env", "status"], "namespace must be 1-40"),
        ("LOCKSTEP_PG_POOL_SIZE", "many", ["flags", "list"], "a valid integer"),
    ],
)
def test_invalid_settings_are_one_line_naming_the_variable(
    variable: str, value: str, args: list[str], said: str
) -> None:
    code, out, err = invoke(*args, **{variable: value})
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"error: invalid settings: {variable} (got {value!r}): ")
    assert said in err
    assert "Traceback" not in err


def test_a_command_that_needs_no_settings_runs_with_invalid_ones() -> None:
    code, out, _ = invoke(
        "model", "validate", str(ROOT / "infra" / "release-model.yaml"), LOCKSTEP_NAMESPACE="X"
    )
    assert code == 0
    assert ": valid (sha256 " in out


def test_settings_are_built_once_per_invocation(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    built: list[Settings] = []

    def counted() -> Settings:
        built.append(Settings())
        return built[-1]

    monkeypatch.setattr(cli.root, "Settings", counted)
    code, out, _ = invoke("schema", "export", str(tmp_path))  # reads three settings
    assert code == 0, out
    assert len(built) == 1


def test_trace_without_a_span_store_says_so() -> None:
    code, out, err = invoke("trace", "checkout@1.0.0", LOCKSTEP_TRACE_DIR="")
    assert code == 1
    assert out == ""
    assert err.startswith("error: no local span store: LOCKSTEP_TRACE_DIR is empty")
    assert len(err.strip().splitlines()) == 1


def test_trace_with_no_spans_names_the_store(tmp_path: Path) -> None:
    code, _, err = invoke("trace", "checkout@1.0.0", LOCKSTEP_TRACE_DIR=str(tmp_path))
    assert code == 1
    assert f"no spans about checkout@1.0.0 in {tmp_path}" in " ".join(err.split())


@pytest.mark.parametrize("command", ["run", "deployer"])
def test_a_long_running_command_stopped_while_it_starts_exits_0(command: str) -> None:
    # A supervisor's SIGTERM can come before the event loop takes the signal over (a slow
    # start on a loaded machine): nothing has begun, so that is a clean stop, not a kill.
    assert stopped_while_starting(command) == (0, "")


def test_a_short_command_keeps_the_default_sigterm() -> None:
    assert stopped_while_starting("publish")[0] == -signal.SIGTERM


def stopped_while_starting(command: str) -> tuple[int, str]:
    """The exit code and stderr of `lockstep <command>` sent SIGTERM while it imports: the
    package is in, the command not yet begun."""
    done = subprocess.run(
        [sys.executable, "-c", STOPPED_WHILE_STARTING, command],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    return done.returncode, done.stderr


STOPPED_WHILE_STARTING = """
import os, signal, sys, time
sys.argv = ["lockstep", *sys.argv[1:]]
import cli
os.kill(os.getpid(), signal.SIGTERM)
time.sleep(30)
sys.exit(3)
"""
