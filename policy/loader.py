"""Read a release model file: YAML, validated, every fault reported with its line.

Whatever the file holds, the answer is a ``ModelError`` of ``file:line: reason`` problems,
never another exception: bytes that are not UTF-8 text, characters YAML does not allow, a
value YAML's own types refuse (a date such as 2026-13-01, an integer of thousands of digits),
nesting too deep to walk, a file over ``MAX_MODEL_BYTES``. YAML anchors and aliases are
allowed (a gate written once for several environments: ``prod-us: *production``), within
bounds: an alias may not refer to a node that contains it (a recursive structure has no end),
and all aliases together may add at most ``MAX_ALIAS_NODES`` nodes to the document (a
"billion laughs" of nested aliases is a few lines that expand beyond any memory).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from policy.model import ReleaseModel, cross_checks


@dataclass(frozen=True)
class Problem:
    file: str
    line: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f" {self.path}:" if self.path else ""
        return f"{self.file}:{self.line}:{where} {self.message}"


class ModelError(ValueError):
    """A release model that cannot be used, with every problem found and where it is."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


MAX_MODEL_BYTES = 1024 * 1024  # a release model is a few hundred lines; 1 MiB is thousands
MAX_ALIAS_NODES = 10_000  # nodes all aliases may add (the example model has ~200 in all)


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader with the bounds above, and every fault a YAMLError with a mark."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self._open_anchors: list[str] = []  # anchors of the nodes being composed
        self._sizes: dict[int, int] = {}  # id(node) -> nodes it stands for, aliases expanded
        self._alias_nodes = 0

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        event: Any = self.peek_event()  # type: ignore[no-untyped-call]
        anchor: str | None = event.anchor
        if not self.check_event(AliasEvent):
            if anchor is not None:  # its node is open until composed: an alias to it recurses
                self._open_anchors.append(anchor)
            try:
                return super().compose_node(parent, index)
            finally:
                if anchor is not None:
                    self._open_anchors.pop()
        if anchor in self._open_anchors:
            raise ComposerError(
                None,
                None,
                f"alias *{anchor} is inside the node &{anchor} it refers to: a recursive "
                "structure has no end; a release model cannot use one",
                event.start_mark,
            )
        node = super().compose_node(parent, index)
        if node is not None:
            self._alias_nodes += self._size(node)
        if self._alias_nodes > MAX_ALIAS_NODES:
            raise ComposerError(
                None,
                None,
                f"aliases expand the model by more than {MAX_ALIAS_NODES} nodes (at *{anchor}); "
                "nested aliases multiply (a 'billion laughs'): write the parts out, or alias "
                "less",
                event.start_mark,
            )
        return node

    def _size(self, node: Node) -> int:
        """How many nodes ``node`` stands for with every alias in it written out."""
        known = self._sizes.get(id(node))
        if known is not None:
            return known
        size = 1
        if isinstance(node, SequenceNode):
            size += sum(self._size(item) for item in node.value)
        elif isinstance(node, MappingNode):
            size += sum(self._size(k) + self._size(v) for k, v in node.value)
        self._sizes[id(node)] = size
        return size

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except yaml.YAMLError:
            raise
        except (ValueError, OverflowError, ArithmeticError, TypeError) as exc:
            # PyYAML's own types refuse it: 2026-13-01 (month must be in 1..12), a huge int
            shown = "this value"
            if isinstance(node, ScalarNode):
                text = str(node.value)
                shown = repr(text if len(text) <= 40 else f"{text[:20]}…{text[-10:]}")
            reason = str(exc)
            if "integer string conversion" in reason:
                reason = "an integer of thousands of digits is no number a release model uses"
            raise ConstructorError(
                None, None, f"{shown} cannot be read: {reason}", node.start_mark
            ) from None


def _code_of(character: object) -> int:
    if isinstance(character, int):
        return character
    text = str(character)
    return ord(text[0]) if text else 0


@dataclass(frozen=True)
class LoadedModel:
    model: ReleaseModel
    sha256: str  # of the file's bytes: what every decision cites
    source: str
    text: str  # the file itself (its bytes are UTF-8): what policy.updated carries


def load(path: Path) -> LoadedModel:
    """The model in ``path``; ModelError for any content, OSError if it cannot be read."""
    with path.open("rb") as file:
        raw = file.read(MAX_MODEL_BYTES + 1)  # a huge file is refused, not read whole
    return load_text(raw, source=str(path))


def load_text(raw: bytes, *, source: str = "<release model>") -> LoadedModel:
    try:
        return _load_text(raw, source)
    except RecursionError:
        raise ModelError(
            [Problem(source, 1, "", "nested too deeply to read; a release model is a few levels")]
        ) from None


def _load_text(raw: bytes, source: str) -> LoadedModel:
    if len(raw) > MAX_MODEL_BYTES:
        raise ModelError(
            [
                Problem(
                    source,
                    1,
                    "",
                    f"over {MAX_MODEL_BYTES} bytes, the limit for a release model; "
                    "is this the right file?",
                )
            ]
        )
    digest = hashlib.sha256(raw).hexdigest()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ModelError(
            [Problem(source, line, "", f"not UTF-8 text ({exc.reason} at byte {exc.start})")]
        ) from None
    loader: _BoundedLoader | None = None
    try:
        loader = _BoundedLoader(text)  # its reader refuses a character YAML does not allow
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        raise ModelError(
            [Problem(source, line, "", f"not valid YAML: {exc.problem or exc}")]
        ) from None
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow (e.g. a NUL)
        line = text.count("\n", 0, exc.position) + 1
        raise ModelError(
            [
                Problem(
                    source,
                    line,
                    "",
                    f"not valid YAML: character #x{_code_of(exc.character):04x} is not "
                    f"allowed ({exc.reason}); a release model is plain text",
                )
            ]
        ) from None
    except yaml.YAMLError as exc:
        raise ModelError([Problem(source, 1, "", f"not valid YAML: {exc}")]) from None
    finally:
        if loader is not None:
            loader.dispose()
    if root is None or not isinstance(data, dict):
        raise ModelError(
            [
                Problem(
                    source, 1, "", "a release model is a YAML mapping (version: 1, environments: …)"
                )
            ]
        )
    problems = _duplicate_keys(root, source)
    if problems:
        raise ModelError(problems)
    try:
        model = ReleaseModel.model_validate(data)
    except ValidationError as exc:
        raise ModelError(
            [
                _problem(root, source, err["loc"], _message(err["type"], err["msg"]))
                for err in exc.errors(include_url=False)
            ]
        ) from None
    found = [_problem(root, source, path, message) for path, message in cross_checks(model)]
    if found:
        raise ModelError(found)
    return LoadedModel(model=model, sha256=digest, source=source, text=text)


def _message(kind: str, message: str) -> str:
    if kind == "missing":
        return "is required but missing"
    if kind == "extra_forbidden":
        return "is not a release model field (misspelt?)"
    return message.removeprefix("Value error, ")


def _problem(root: Node, source: str, loc: tuple[str | int, ...], message: str) -> Problem:
    path = ".".join(str(p) for p in loc)
    return Problem(source, _line_of(root, loc), path, message)


def _line_of(root: Node, loc: tuple[str | int, ...]) -> int:
    """The line of the deepest node ``loc`` reaches (a missing key: its parent's line)."""
    node, line = root, root.start_mark.line + 1
    for part in loc:
        if isinstance(node, MappingNode):
            for key, value in node.value:
                if key.value == str(part):
                    node, line = value, key.start_mark.line + 1
                    break
            else:
                break
        elif isinstance(node, SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _duplicate_keys(node: Node, source: str, path: str = "") -> list[Problem]:
    """YAML lets a later key silently replace an earlier one; a release model does not."""
    problems: list[Problem] = []
    if isinstance(node, MappingNode):
        seen: dict[str, int] = {}
        for key, value in node.value:
            name = str(key.value)
            here = f"{path}.{name}" if path else name
            if name in seen:
                problems.append(
                    Problem(
                        source,
                        key.start_mark.line + 1,
                        here,
                        f"declared twice (first on line {seen[name]})",
                    )
                )
            seen.setdefault(name, key.start_mark.line + 1)
            problems += _duplicate_keys(value, source, here)
    elif isinstance(node, SequenceNode):
        for i, item in enumerate(node.value):
            problems += _duplicate_keys(item, source, f"{path}.{i}")
    return problems
