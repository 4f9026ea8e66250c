"""The release model: what it accepts, and how it refuses a bad file (the line, the reason)."""

from __future__ import annotations

import hashlib
import textwrap
from pathlib import Path

import pytest

from policy import ModelError, load, load_text

EXAMPLE = Path(__file__).resolve().parents[2] / "infra" / "release-model.yaml"

BASE = """\
version: 1
environments:
  - name: dev
  - name: staging
    after: [dev]
  - name: prod-eu
    after: [staging]
gates:
  prod-eu:
    criteria:
      - evidence: tests
        key: true
      - evidence: benchmark
        metric: p99_latency
        fail_regression_percent: 10
    soak: 1h
windows:
  - name: holiday freeze
    kind: deny
    start: 2026-12-21T00:00:00
    end: 2027-01-04T09:00:00
    timezone: Europe/Berlin
dependencies:
  checkout:
    - service: payments
      version: ">=2.3"
"""


def refused(text: str) -> list[tuple[int, str, str]]:
    with pytest.raises(ModelError) as caught:
        load_text(textwrap.dedent(text).encode(), source="model.yaml")
    return [(p.line, p.path, p.message) for p in caught.value.problems]


def test_the_example_model_is_valid_and_cited_by_the_hash_of_its_bytes() -> None:
    loaded = load(EXAMPLE)
    assert loaded.sha256 == hashlib.sha256(EXAMPLE.read_bytes()).hexdigest()
    assert [e.name for e in loaded.model.environments] == ["dev", "staging", "prod-eu", "prod-us"]
    assert loaded.model.gates["prod-us"] == loaded.model.gates["prod-eu"]  # a YAML anchor
    assert loaded.model.dependencies["checkout"][0].version == ">=2.3"


def test_a_minimal_model_loads() -> None:
    model = load_text(BASE.encode()).model
    assert model.gates["prod-eu"].criteria[1].fail_regression_percent == 10
    assert model.windows[0].kind == "deny"


@pytest.mark.parametrize(
    ("old", "new", "line", "path", "words"),
    [
        (
            "        key: true\n",
            "        kye: true\n",
            12,
            "gates.prod-eu.criteria.0.kye",
            "misspelt",
        ),
        ("    soak: 1h", "    soak: an hour", 16, "gates.prod-eu.soak", "not a duration"),
        (
            "    timezone: Europe/Berlin",
            "    timezone: Europe/Atlantis",
            22,
            "windows.0.timezone",
            "unknown time zone",
        ),
        (
            '      version: ">=2.3"',
            '      version: "about 2.3"',
            26,
            "dependencies.checkout.0.version",
            "not a version constraint",
        ),
        ("    end: 2027-01-04T09:00:00\n", "", 18, "windows.0", "needs both start and end"),
        (
            "        fail_regression_percent: 10\n",
            "",
            13,
            "gates.prod-eu.criteria.1",
            "needs metric and fail_regression_percent",
        ),
        ("    kind: deny", "    kind: maybe", 19, "windows.0.kind", "'allow' or 'deny'"),
        ("version: 1", "version: 2", 1, "version", "Input should be 1"),
    ],
)
def test_a_schema_fault_names_its_line_and_field(
    old: str, new: str, line: int, path: str, words: str
) -> None:
    assert old in BASE
    [(got_line, got_path, message)] = refused(BASE.replace(old, new))
    assert (got_line, got_path) == (line, path)
    assert words in message


def test_a_missing_required_field_points_at_its_parent() -> None:
    [(line, path, message)] = refused(BASE.replace("    kind: deny\n", ""))
    assert (line, path, message) == (18, "windows.0.kind", "is required but missing")


@pytest.mark.parametrize(
    ("old", "new", "line", "path", "words"),
    [
        (
            "    after: [staging]",
            "    after: [stagin]",
            7,
            "environments.2.after.0",
            "unknown environment 'stagin'",
        ),
        (
            "gates:\n  prod-eu:",
            "gates:\n  prod-asia:",
            9,
            "gates.prod-asia",
            "unknown environment 'prod-asia'",
        ),
        (
            "  - name: dev\n",
            "  - name: dev\n    after: [prod-eu]\n",
            4,
            "environments.0.after",
            "cycle",
        ),
        (
            "    - service: payments",
            "    - service: checkout",
            25,
            "dependencies.checkout.0.service",
            "cannot depend on itself",
        ),
    ],
)
def test_references_to_what_is_not_declared_are_refused(
    old: str, new: str, line: int, path: str, words: str
) -> None:
    assert old in BASE
    [(got_line, got_path, message)] = refused(BASE.replace(old, new))
    assert (got_line, got_path) == (line, path)
    assert words in message


def test_a_service_on_two_trains_to_one_environment_is_refused() -> None:
    text = BASE + textwrap.dedent("""\
        trains:
          - name: shop
            services: [checkout, payments]
            environments: [prod-eu]
          - name: money
            services: [payments]
            environments: [prod-eu]
        """)
    [(line, path, message)] = refused(text)
    assert (line, path) == (32, "trains.1.services.0")
    assert "payments already rides train shop to prod-eu" in message


def test_a_key_written_twice_is_refused_not_silently_replaced() -> None:
    [(line, path, message)] = refused(
        BASE.replace("    soak: 1h\n", "    soak: 1h\n    soak: 2h\n")
    )
    assert (line, path) == (17, "gates.prod-eu.soak")
    assert "declared twice (first on line 16)" in message


def test_yaml_that_does_not_parse_names_its_line() -> None:
    [(line, _, message)] = refused(BASE.replace("    after: [dev]", "    after: [dev"))
    assert line in (5, 6) and "not valid YAML" in message


def test_every_fault_is_reported_at_once() -> None:
    text = BASE.replace("    soak: 1h", "    soak: soon").replace("kind: deny", "kind: never")
    assert [p for _, p, _ in refused(text)] == ["gates.prod-eu.soak", "windows.0.kind"]


# --- any file content: a problem with its line, never another exception -----------------------


def _problems(raw: bytes) -> list[str]:
    with pytest.raises(ModelError) as caught:
        load_text(raw, source="m.yaml")
    said = [str(p) for p in caught.value.problems]
    assert said and all(p.startswith("m.yaml:") for p in said)
    return said


def test_an_invalid_date_names_its_line() -> None:
    raw = EXAMPLE.read_bytes().replace(b"start: 2026-12-21T", b"start: 2026-13-21T")
    line = raw.split(b"2026-13-21")[0].count(b"\n") + 1
    assert _problems(raw) == [
        f"m.yaml:{line}: not valid YAML: '2026-13-21T00:00:00' cannot be read: "
        "month must be in 1..12"
    ]


def test_a_fixed_window_outside_2000_to_2099_is_refused() -> None:
    raw = EXAMPLE.read_bytes().replace(b"end: 2027-01-04", b"end: 9999-01-04")
    [said] = _problems(raw)
    assert "windows.2.end: 9999-01-04T09:00:00 is outside the years 2000-2099" in said


def test_aliases_within_bounds_are_allowed() -> None:
    gates = load(EXAMPLE).model.gates  # prod-us: *production
    assert gates["prod-us"] == gates["prod-eu"]


@pytest.mark.parametrize(
    "raw",
    [
        b"version: 1\nenvironments: &e\n  - name: dev\n    after: *e\n",
        b"version: 1\nx: &m\n  y: [1, *m]\n",
    ],
)
def test_a_recursive_alias_is_refused_at_its_line(raw: bytes) -> None:
    [said] = _problems(raw)
    last_line = len(raw.splitlines())  # where the alias is
    assert said.startswith(f"m.yaml:{last_line}: ") and "recursive" in said


def test_aliases_that_expand_beyond_the_bound_are_refused() -> None:
    rows = ["version: 1", "l0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    rows += [f"l{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    [said] = _problems("\n".join(rows).encode())
    assert "more than 10000 nodes" in said and "billion laughs" in said


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b"version: 1\nenvironments:\n  - name: d\xe9v\n", "m.yaml:3: not UTF-8"),
        (bytes(range(256)), "not UTF-8"),
        (b"version: 1\nx: \x07\n", "m.yaml:2: not valid YAML: character #x0007"),
        (b"a: " + b"{a: " * 2000 + b"}" * 2000, "nested too deeply"),
        (b"x" * (2 * 1024 * 1024), "over 1048576 bytes"),
        (b"version: " + b"7" * 10_000, "thousands of digits"),
        (b"version: !!python/object:os.system x", "could not determine a constructor"),
    ],
)
def test_garbage_is_a_problem_with_a_line(raw: bytes, words: str) -> None:
    assert any(words in p for p in _problems(raw))


def test_a_weight_of_infinity_is_refused() -> None:
    raw = EXAMPLE.read_bytes().replace(b"weight: 2", b"weight: .inf", 1)
    assert any("weight: Input should be a finite number" in p for p in _problems(raw))
