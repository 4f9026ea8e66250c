"""Flag definitions, checked before anything is stored: the official flagd schema (fetched by
``infra/lockstep-infra up``), then what the schema cannot say — a ``$ref`` to an evaluator
that does not exist, a default or fractional variant the flag does not define, fractional
weights that cannot split traffic — and Lockstep's taxonomy metadata. Every problem names
the offending node as a JSON Pointer (``/flags/new-checkout/variants/on``)."""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jsonschema import Draft7Validator
from jsonschema.exceptions import ValidationError, best_match
from openfeature.contrib.tools.flagd.core.model.flag_store import FlagStore
from openfeature.exception import OpenFeatureError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

from services.flags import taxonomy

FLAGS_SCHEMA_ID = "https://flagd.dev/schema/v0/flags.json"
TARGETING_SCHEMA_ID = "https://flagd.dev/schema/v0/targeting.json"
MAX_WEIGHT_SUM = 2_147_483_647  # flagd refuses a fractional whose weights sum above MaxInt32


@dataclass(frozen=True, order=True)
class Problem:
    path: str  # JSON Pointer into the flag set
    reason: str

    def __str__(self) -> str:
        return f"{self.path or '/'}: {self.reason}"


class DefinitionError(ValueError):
    """A flag definition or flag set that Lockstep refuses; ``problems`` says where and why."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(problems)
        super().__init__("; ".join(str(p) for p in self.problems))


class SchemaMissing(RuntimeError):
    pass


def pointer(*parts: str | int) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


@functools.cache
def _validator(schema_dir: Path) -> Draft7Validator:
    files = {name: schema_dir / f"{name}.json" for name in ("flags", "targeting")}
    missing = [str(f) for f in files.values() if not f.is_file()]
    if missing:
        raise SchemaMissing(
            f"the flagd schemas are not at {', '.join(missing)}; `infra/lockstep-infra up` "
            "fetches them (the flagd provider jar on Maven Central, pinned in "
            "infra/flagd-schemas.pom.xml), or set LOCKSTEP_FLAGD_SCHEMA_DIR"
        )
    schemas = {name: json.loads(f.read_text(encoding="utf-8")) for name, f in files.items()}
    registry: Registry[Any] = Registry().with_resources(
        (schema["$id"], Resource.from_contents(schema, default_specification=DRAFT7))
        for schema in schemas.values()
    )
    return Draft7Validator(schemas["flags"], registry=registry)


def check_flag_set(document: Any, schema_dir: Path) -> None:
    """Raise DefinitionError unless ``document`` is a flag set flagd loads and Lockstep keeps."""
    problems = list(_problems(document, schema_dir))
    if problems:
        raise DefinitionError(problems)


def check_flag(
    key: str, definition: Any, evaluators: dict[str, Any] | None, schema_dir: Path
) -> None:
    """One flag, checked within its environment's evaluators (paths start at /flags/<key>)."""
    document: dict[str, Any] = {"flags": {key: definition}}
    if evaluators:
        document["$evaluators"] = evaluators
    check_flag_set(document, schema_dir)


def _problems(document: Any, schema_dir: Path) -> Iterator[Problem]:
    if not isinstance(document, dict):
        yield Problem("", "a flag set is a JSON object with `flags` (and optional `$evaluators`)")
        return
    validator = _validator(schema_dir)
    flags = document.get("flags")
    evaluators = document.get("$evaluators") or {}
    broken: set[str] = set()  # flags the schema refused: the deeper checks would only repeat it
    for error in sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path)):
        path = list(error.absolute_path)
        if len(path) >= 2 and path[0] == "flags":
            key = str(path[1])
            if key in broken:
                continue
            broken.add(key)
            # The schema says "not valid under any of the given schemas" of a whole targeting
            # rule; Lockstep's own check of that rule says which node and why, when it can.
            explained = _explain(error, document)
            if explained.path.startswith(pointer("flags", key, "targeting")):
                ours = _own_targeting_problems(key, flags, evaluators)
                if ours:
                    yield from ours
                    continue
            yield explained
            continue
        yield _explain(error, document)
    if not isinstance(flags, dict) or not isinstance(evaluators, dict):
        return
    for key, flag in flags.items():
        if key in broken or not isinstance(flag, dict):
            continue
        yield from _flag_problems(key, flag, evaluators)
    if not broken:
        yield from _flagd_loads(document)


def _own_targeting_problems(key: str, flags: Any, evaluators: Any) -> list[Problem]:
    flag = flags.get(key) if isinstance(flags, dict) else None
    if not isinstance(flag, dict) or not isinstance(evaluators, dict):
        return []
    found = flag.get("variants")
    variants: dict[str, Any] = found if isinstance(found, dict) else {}
    return list(
        _targeting_problems(
            flag.get("targeting"), ("flags", key, "targeting"), variants, evaluators, set()
        )
    )


def _explain(error: ValidationError, document: dict[str, Any]) -> Problem:
    """The schema's own error, made specific: a flag's ``oneOf`` over the four typed shapes
    says only "not valid under any"; say which variant breaks the flag's type instead."""
    path = list(error.absolute_path)
    if error.validator == "oneOf" and len(path) == 2 and path[0] == "flags":
        flag = document["flags"][path[1]]
        mixed = _mixed_variants(flag) if isinstance(flag, dict) else None
        if mixed is not None:
            return Problem(pointer("flags", path[1], "variants", mixed[0]), mixed[1])
        deepest = best_match(error.context or [error], key=_relevance)
        return Problem(pointer(*deepest.absolute_path), deepest.message)
    if error.context:
        deepest = best_match(error.context, key=_relevance)
        return Problem(pointer(*deepest.absolute_path), deepest.message)
    return Problem(pointer(*path), error.message)


def _relevance(error: ValidationError) -> tuple[int, bool]:
    # Prefer the error deepest in the document, and one that is not about a type mismatch
    # against another branch of a oneOf.
    return (-len(error.absolute_path), error.validator != "type")


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    return "null"


def _mixed_variants(flag: dict[str, Any]) -> tuple[str, str] | None:
    variants = flag.get("variants")
    if not isinstance(variants, dict) or not variants:
        return None
    names = list(variants)
    first = _json_type(variants[names[0]])
    for name in names[1:]:
        kind = _json_type(variants[name])
        if kind != first:
            return name, (
                f"variant {name!r} is a {kind} but {names[0]!r} is a {first}: "
                "all variants of a flag have one type"
            )
    kind = first
    if kind in ("array", "null"):
        return names[0], f"a variant's value is a boolean, string, number or object, not {kind}"
    return None


def _flag_problems(key: str, flag: dict[str, Any], evaluators: dict[str, Any]) -> Iterator[Problem]:
    variants: dict[str, Any] = flag.get("variants") or {}
    default = flag.get("defaultVariant")
    if default is not None and default not in variants:
        yield Problem(
            pointer("flags", key, "defaultVariant"),
            f"default variant {default!r} is not one of the flag's variants "
            f"({', '.join(map(repr, variants))})",
        )
    targeting = flag.get("targeting")
    if targeting:
        yield from _targeting_problems(
            targeting, ("flags", key, "targeting"), variants, evaluators, set()
        )
    for where, reason in taxonomy.problems(flag.get("metadata")):
        yield Problem(
            pointer("flags", key, "metadata", *([where] if where else [])),
            f"{reason} (Lockstep's flag taxonomy: metadata.type, metadata.owner, "
            "optional metadata.release)",
        )


def _targeting_problems(
    node: Any,
    at: tuple[str | int, ...],
    variants: dict[str, Any],
    evaluators: dict[str, Any],
    seen_refs: set[str],
) -> Iterator[Problem]:
    if isinstance(node, list):
        for i, item in enumerate(node):
            yield from _targeting_problems(item, (*at, i), variants, evaluators, seen_refs)
        return
    if not isinstance(node, dict):
        return
    if set(node) == {"$ref"}:
        name = node["$ref"]
        if name not in evaluators:
            known = ", ".join(map(repr, evaluators)) or "none are defined"
            yield Problem(
                pointer(*at, "$ref"), f"no evaluator named {name!r} in $evaluators ({known})"
            )
        elif name not in seen_refs:
            yield from _targeting_problems(
                evaluators[name], (*at, "$ref"), variants, evaluators, {*seen_refs, name}
            )
        return
    for operator, args in node.items():
        if operator == "fractional":
            yield from _fractional_problems(args, (*at, "fractional"), variants)
        yield from _targeting_problems(args, (*at, operator), variants, evaluators, seen_refs)


def _fractional_problems(
    args: Any, at: tuple[str | int, ...], variants: dict[str, Any]
) -> Iterator[Problem]:
    if not isinstance(args, list) or not args:
        yield Problem(pointer(*at), "fractional needs at least one [variant, weight] bucket")
        return
    first = 0 if isinstance(args[0], list) else 1  # an explicit bucketing value comes first
    buckets = args[first:]
    if not buckets:
        yield Problem(pointer(*at), "fractional needs at least one [variant, weight] bucket")
        return
    total = 0
    seen: set[str] = set()
    literal_weights = True
    for i, bucket in enumerate(buckets, start=first):
        if not isinstance(bucket, list) or not 1 <= len(bucket) <= 2:
            yield Problem(pointer(*at, i), "a bucket is [variant] or [variant, weight]")
            continue
        name = bucket[0]
        if isinstance(name, str):
            if name not in variants:
                yield Problem(
                    pointer(*at, i, 0), f"variant {name!r} is not one of the flag's variants"
                )
            if name in seen:
                yield Problem(pointer(*at, i, 0), f"variant {name!r} has two buckets")
            seen.add(name)
        weight = bucket[1] if len(bucket) == 2 else 1
        if isinstance(weight, dict):  # a JsonLogic expression, weighed at evaluation
            literal_weights = False
            continue
        if isinstance(weight, bool) or not isinstance(weight, int):
            yield Problem(pointer(*at, i, 1), f"a weight is a whole number (got {weight!r})")
            literal_weights = False
        elif weight < 0:
            yield Problem(pointer(*at, i, 1), f"a weight cannot be negative (got {weight})")
            literal_weights = False
        else:
            total += weight
    if literal_weights and total == 0:
        yield Problem(pointer(*at), "the weights sum to 0: no variant could ever be chosen")
    if literal_weights and total > MAX_WEIGHT_SUM:
        yield Problem(pointer(*at), f"the weights sum to {total}, above flagd's {MAX_WEIGHT_SUM}")


def _flagd_loads(document: dict[str, Any]) -> Iterator[Problem]:
    """Last word to the evaluation engine itself: what it cannot load is refused too."""
    try:
        FlagStore().update(copy.deepcopy(document))
    except OpenFeatureError as exc:
        yield Problem("", f"flagd cannot load this flag set: {exc.error_message or exc}")
    except (ValueError, TypeError) as exc:
        yield Problem("", f"flagd cannot load this flag set: {exc}")
