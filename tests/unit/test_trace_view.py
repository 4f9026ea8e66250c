"""`lockstep trace` draws the chain as a tree, whatever order spans were stored in."""

from __future__ import annotations

from cli.trace_view import build_tree, render, traces_of


def span(
    span_id: str, parent: str | None, name: str, start_ms: float, end_ms: float, **attrs: object
) -> dict[str, object]:
    return {
        "trace_id": "t1",
        "span_id": span_id,
        "parent_id": parent,
        "name": name,
        "service": "lockstep-x",
        "start_ns": int(start_ms * 1e6),
        "end_ns": int(end_ms * 1e6),
        "status": "UNSET",
        "attributes": attrs,
        "links": [],
    }


def test_tree_orders_children_by_start_and_shows_offsets() -> None:
    spans = [
        span("c2", "root", "process evidence.recorded", 9, 10),
        span("root", None, "ci build checkout@1", 0, 5, **{"lockstep.artifact": "checkout@1"}),
        span("c1", "root", "process artifact.packaged", 2, 4, **{"lockstep.outcome": "registered"}),
        span("g1", "c1", "process artifact.published", 6, 7),
    ]
    lines = render(build_tree(spans))
    assert [line.split("lockstep-x: ")[1] for line in lines] == [
        "ci build checkout@1",
        "process artifact.packaged  [registered]",
        "process artifact.published",
        "process evidence.recorded",
    ]
    assert lines[1].startswith("+     2.0 ms")
    assert "├─ " in lines[1] and "│  └─ " in lines[2] and "└─ " in lines[3]


def test_a_span_whose_parent_is_elsewhere_is_a_root() -> None:
    roots = build_tree([span("a", "ci-span-not-kept", "process artifact.packaged", 0, 1)])
    assert len(roots) == 1


def test_traces_are_found_by_the_artifact_label() -> None:
    spans = [
        span("a", None, "x", 0, 1, **{"lockstep.artifact": "checkout@1"}),
        {**span("b", None, "y", 0, 1, **{"lockstep.artifact": "payments@2"}), "trace_id": "t2"},
    ]
    assert list(traces_of(spans, "checkout@1")) == ["t1"]
    assert traces_of(spans, "nothing@0") == {}
