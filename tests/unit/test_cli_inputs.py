"""The command line at the edges of its input: each refusal is an exit code that is not 0 and
one line saying what to write instead, never a traceback (and nothing is sent: these run
with no Kafka to send to)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app

DIGEST = "sha256:" + "0123456789abcdef" * 4
NO_KAFKA = {"LOCKSTEP_KAFKA_BOOTSTRAP": "127.0.0.1:9"}  # nothing listens: nothing is sent
ROOT = Path(__file__).resolve().parents[2]


def refused(*args: str) -> str:
    """Run ``lockstep args``; it must refuse with one line (stderr) and no traceback."""
    result = CliRunner().invoke(app, list(args), env=NO_KAFKA)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def bench(*metrics: str) -> list[str]:
    args = ["publish", "evidence", "benchmark", "checkout@1.4.2", "--name", "load"]
    for m in metrics:
        args += ["--metric", m]
    return args


@pytest.mark.parametrize("value", ["NaN", "nan", "inf", "-inf", "Infinity", "1e999"])
def test_a_metric_that_is_not_a_finite_number_is_refused(value: str) -> None:
    said = refused(*bench(f"p99={value}:ms"))
    assert f"--metric 'p99={value}:ms'" in said
    assert "finite number" in said


@pytest.mark.parametrize(
    ("metric", "words"),
    [
        ("p99=fast:ms", "'fast' is not a number"),
        ("p99=12.5", "NAME=VALUE:UNIT"),
        ("=12.5:ms", "NAME=VALUE:UNIT"),
        ("p99=12.5:ms:up", "NAME=VALUE:UNIT"),
    ],
)
def test_a_malformed_metric_says_the_form(metric: str, words: str) -> None:
    assert words in refused(*bench(metric))


def test_a_metric_given_twice_is_refused() -> None:
    assert "given twice" in refused(*bench("p99=1:ms", "p99=2:ms"))


@pytest.mark.parametrize(
    "digest", [DIGEST.upper(), DIGEST.replace("abcdef", "ABCDEF"), "SHA256:" + DIGEST[7:]]
)
def test_an_upper_case_digest_is_refused_with_the_lower_case_form(digest: str) -> None:
    for args in (
        [
            *[
                "publish",
                "artifact",
                "--service",
                "checkout",
                "--version",
                "1.4.2",
                "--commit",
                "abc",
            ],
            "--digest",
            digest,
        ],
        [
            *["publish", "evidence", "scan", "checkout@1.4.2", "--scanner", "trivy"],
            "--digest",
            digest,
        ],
    ):
        said = refused(*args)
        assert "upper-case" in said
        assert repr(DIGEST) in said


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["evidence", "tests", "checkout@1.4.2", "--suite", "", "--outcome", "success"], "--suite"),
        (["evidence", "scan", "checkout@1.4.2", "--scanner", ""], "--scanner"),
        (["evidence", "benchmark", "checkout@1.4.2", "--name", "", "--metric", "p=1:ms"], "--name"),
        (
            [
                *["artifact", "--service", "checkout", "--version", "1", "--digest"],
                DIGEST,
                "--commit",
                "",
            ],
            "--commit",
        ),
        (
            [
                *["evidence", "tests", "checkout@1.4.2", "--suite", "it", "--outcome", "success"],
                "--source",
                "my ci",
            ],
            "--source",
        ),
    ],
)
def test_an_option_the_contract_refuses_is_named(args: list[str], option: str) -> None:
    assert refused("publish", *args).startswith(f"error: {option}: ")


# --- lockstep model validate / publish: any file content ------------------------------------


def _model_problems(path: Path, command: str = "validate") -> list[str]:
    args = ["model", command, str(path)] + (["--by", "me"] if command == "publish" else [])
    result = CliRunner().invoke(app, args, env=NO_KAFKA)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    *problems, last = result.stderr.strip().splitlines()
    assert last.startswith(f"error: {path}: ") and "refused" in last
    assert problems
    for problem in problems:
        assert problem.startswith(f"{path}:"), problem
        assert problem.split(":")[1].isdigit(), problem  # file:line: reason
    return problems


EXAMPLE = (ROOT / "infra" / "release-model.yaml").read_text(encoding="utf-8")
BOMB = "version: 1\nlol: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"l{i}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 10)}]\n" for i in range(8)
)


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (EXAMPLE.replace("start: 2026-12-21", "start: 2026-13-21").encode(), "month must be"),
        (EXAMPLE.replace("end: 2027-01-04", "end: 9999-01-04").encode(), "2000-2099"),
        (b"version: 1\nenvironments: &e\n  - name: dev\n    after: *e\n", "recursive"),
        (BOMB.encode(), "billion laughs"),
        (bytes(range(256)) * 8, "not UTF-8"),
        (b"version: 1\nenvironments: [\x00]\n", "not allowed"),
        (b"version: 1\nenvironments: " + b"[" * 3000 + b"]" * 3000, "nested too deeply"),
        (b"# " + b"x" * (1024 * 1024 + 10), "limit for a release model"),
        (b"version: " + b"9" * 5000, "thousands of digits"),
    ],
    ids=["date", "year-9999", "recursive", "bomb", "garbage", "nul", "deep", "huge", "int"],
)
@pytest.mark.parametrize("command", ["validate", "publish"])
def test_any_model_file_content_is_refused_as_file_line_reason(
    tmp_path: Path, content: bytes, words: str, command: str
) -> None:
    path = tmp_path / "model.yaml"
    path.write_bytes(content)
    problems = _model_problems(path, command)
    assert any(words in p for p in problems), problems


def test_a_model_file_that_is_a_directory_is_one_line(tmp_path: Path) -> None:
    assert "no such file" in refused("model", "publish", str(tmp_path), "--by", "me")
