"""Read a release model file: YAML, validated, every fault reported with its line."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import ValidationError
from yaml.nodes import MappingNode, Node, SequenceNode

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


@dataclass(frozen=True)
class LoadedModel:
    model: ReleaseModel
    sha256: str  # of the file's bytes: what every decision cites
    source: str


def load(path: Path) -> LoadedModel:
    return load_text(path.read_bytes(), source=str(path))


def load_text(raw: bytes, *, source: str = "<release model>") -> LoadedModel:
    digest = hashlib.sha256(raw).hexdigest()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ModelError([Problem(source, 1, "", f"not UTF-8 text ({exc})")]) from None
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        raise ModelError(
            [Problem(source, line, "", f"not valid YAML: {exc.problem or exc}")]
        ) from None
    finally:
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
    return LoadedModel(model=model, sha256=digest, source=source)


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
