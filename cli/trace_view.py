"""Turn locally kept spans into the tree ``lockstep trace`` prints."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class SpanNode:
    span: dict[str, Any]
    children: list[SpanNode] = field(default_factory=list)

    @property
    def start_ns(self) -> int:
        return int(self.span["start_ns"] or 0)

    @property
    def duration_ms(self) -> float:
        return ((self.span["end_ns"] or 0) - (self.span["start_ns"] or 0)) / 1e6


def traces_of(spans: Iterable[dict[str, Any]], label: str) -> dict[str, list[dict[str, Any]]]:
    """The traces (by id) any of whose spans is about ``label`` (``service@version``)."""
    by_trace: dict[str, list[dict[str, Any]]] = defaultdict(list)
    wanted: set[str] = set()
    for s in spans:
        by_trace[s["trace_id"]].append(s)
        if s.get("attributes", {}).get("lockstep.artifact") == label:
            wanted.add(s["trace_id"])
    return {t: by_trace[t] for t in wanted}


def build_tree(spans: list[dict[str, Any]]) -> list[SpanNode]:
    """Roots of the trace, children ordered by start. A span whose parent is not kept here
    (e.g. the CI's own span) is shown as a root."""
    nodes = {s["span_id"]: SpanNode(s) for s in spans}
    roots: list[SpanNode] = []
    for node in nodes.values():
        parent = nodes.get(node.span.get("parent_id") or "")
        (parent.children if parent else roots).append(node)
    for node in nodes.values():
        node.children.sort(key=lambda n: n.start_ns)
    roots.sort(key=lambda n: n.start_ns)
    return roots


def render(roots: list[SpanNode]) -> list[str]:
    """``+offset  duration  service  name`` lines, indented by depth."""
    if not roots:
        return []
    t0 = min(r.start_ns for r in roots)
    lines: list[str] = []

    def walk(node: SpanNode, prefix: str, last: bool, depth: int) -> None:
        s = node.span
        branch = "" if depth == 0 else ("└─ " if last else "├─ ")
        attrs = s.get("attributes", {})
        extra = []
        if attrs.get("lockstep.outcome"):
            extra.append(str(attrs["lockstep.outcome"]))
        if attrs.get("lockstep.duplicate"):
            extra.append("duplicate, skipped")
        if s.get("status") == "ERROR":
            extra.append("ERROR")
        note = f"  [{'; '.join(extra)}]" if extra else ""
        lines.append(
            f"+{(node.start_ns - t0) / 1e6:8.1f} ms {node.duration_ms:7.1f} ms  "
            f"{prefix}{branch}{s.get('service') or '?'}: {s['name']}{note}"
        )
        child_prefix = prefix + ("" if depth == 0 else ("   " if last else "│  "))
        for i, child in enumerate(node.children):
            walk(child, child_prefix, i == len(node.children) - 1, depth + 1)

    for root in roots:
        walk(root, "", True, 0)
    return lines
