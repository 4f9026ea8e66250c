"""Evaluation, as flagd does it: the OpenFeature project's flagd engine
(openfeature-flagd-core: JsonLogic with ``fractional``, ``sem_ver``, ``starts_with``,
``ends_with``, ``$ref``, ``$flagd.flagKey`` and ``$flagd.timestamp``) picks the variant, so a
client gets the same variant from Lockstep as from a flagd in-process provider.

Lockstep reports two things more precisely than flagd's reasons can:
- ``SPLIT`` when the variant was chosen by a ``fractional`` split (flagd says
  ``TARGETING_MATCH``);
- ``TARGETING_KEY_MISSING`` when a ``fractional`` needed the targeting key and the context
  has none (flagd silently serves the default variant, which hides a client bug).
"""

from __future__ import annotations

import contextvars
import copy
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

from json_logic import jsonLogic
from openfeature.contrib.tools.flagd.core.model.flag import Flag
from openfeature.contrib.tools.flagd.core.model.flag_store import FlagStore
from openfeature.contrib.tools.flagd.core.targeting import custom_ops
from openfeature.contrib.tools.flagd.core.targeting.targeting import OPERATORS

STATIC: Final = "STATIC"
TARGETING_MATCH: Final = "TARGETING_MATCH"
SPLIT: Final = "SPLIT"
DEFAULT: Final = "DEFAULT"
DISABLED: Final = "DISABLED"
ERROR: Final = "ERROR"

FLAG_NOT_FOUND: Final = "FLAG_NOT_FOUND"
PARSE_ERROR: Final = "PARSE_ERROR"
TYPE_MISMATCH: Final = "TYPE_MISMATCH"
TARGETING_KEY_MISSING: Final = "TARGETING_KEY_MISSING"
INVALID_CONTEXT: Final = "INVALID_CONTEXT"
GENERAL: Final = "GENERAL"

# What each OpenFeature type accepts (bool is an int in Python: refused where it must be).
_TYPES: Final[dict[str, Callable[[Any], bool]]] = {
    "boolean": lambda v: isinstance(v, bool),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "float": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "object": lambda v: isinstance(v, dict | list),
}


@dataclass(frozen=True)
class Evaluation:
    key: str
    reason: str
    value: Any = None  # None with variant None: the caller's own default applies
    variant: str | None = None
    error_code: str | None = None
    error_details: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def is_error(self) -> bool:
        return self.error_code is not None

    def as_type(self, flag_type: str) -> Evaluation:
        """This result for a caller expecting ``flag_type``: TYPE_MISMATCH if the value is not."""
        if self.is_error or self.variant is None or _TYPES[flag_type](self.value):
            return self
        return _error(
            self.key,
            TYPE_MISMATCH,
            f"flag {self.key!r} is not a {flag_type}: variant {self.variant!r} is "
            f"{type(self.value).__name__}",
        )


def _error(key: str, code: str, details: str) -> Evaluation:
    return Evaluation(key=key, reason=ERROR, error_code=code, error_details=details)


class ContextError(ValueError):
    """The evaluation context itself is malformed (INVALID_CONTEXT for every flag)."""


def check_context(context: Any) -> Mapping[str, Any]:
    """The context as OFREP sends it: a JSON object whose ``targetingKey``, if any, is a string."""
    if context is None:
        return {}
    if not isinstance(context, dict):
        raise ContextError(f"the context must be a JSON object, not {type(context).__name__}")
    key = context.get("targetingKey")
    if key is not None and not isinstance(key, str):
        raise ContextError(f"targetingKey must be a string, not {type(key).__name__}")
    return context


# Which fractional splits ran during one evaluation (a ContextVar: evaluations may run
# concurrently in threads).
_splits: contextvars.ContextVar[list[tuple[Any, bool]]] = contextvars.ContextVar("splits")


def _recording_fractional(data: dict[str, Any], *args: Any) -> Any:
    chosen = custom_ops.fractional(data, *args)
    needs_key = bool(args) and isinstance(args[0], list | tuple)
    key_missing = needs_key and not (
        isinstance(data.get("targetingKey"), str) and data.get("targetingKey")
    )
    record = _splits.get(None)
    if record is not None:
        record.append((chosen, key_missing))
    return chosen


_OPERATORS: Final = {**OPERATORS, "fractional": _recording_fractional}

# The engine logs an ERROR with a traceback whenever an operand does not fit an operator
# (a context without the attribute a sem_ver rule reads): normal traffic, and costly on the
# hot path. What matters reaches the caller in the evaluation's reason and error code.
logging.getLogger("openfeature.contrib").setLevel(logging.CRITICAL)


class FlagSet:
    """One environment's flags at one version, parsed once and evaluated many times."""

    def __init__(self, document: Mapping[str, Any], version: int = 0) -> None:
        self.version = version
        self.document = copy.deepcopy(dict(document))
        store = FlagStore()
        store.update(copy.deepcopy(self.document))  # resolves $evaluators ($ref)
        self._flags: dict[str, Flag] = dict(store.flags)
        set_metadata = dict(store.flag_set_metadata)
        # What every evaluation of a flag reports as its metadata, merged once (flag first).
        self._metadata: dict[str, Mapping[str, Any]] = {
            key: MappingProxyType({**set_metadata, **(flag.metadata or {})})
            for key, flag in self._flags.items()
        }

    def keys(self) -> list[str]:
        return list(self._flags)

    def evaluate(self, key: str, context: Any = None, *, now: float | None = None) -> Evaluation:
        """``context`` is the OFREP context: attributes plus an optional ``targetingKey``
        (anything else is INVALID_CONTEXT)."""
        if key not in self._flags:
            return _error(key, FLAG_NOT_FOUND, f"flag {key!r} is not defined here")
        try:
            checked = check_context(context)
        except ContextError as exc:
            return _error(key, INVALID_CONTEXT, str(exc))
        return self._evaluate(key, checked, int(time.time() if now is None else now))

    def evaluate_all(self, context: Any = None, *, now: float | None = None) -> list[Evaluation]:
        """Every flag for one context (checked once, at one timestamp)."""
        try:
            checked = check_context(context)
        except ContextError as exc:
            return [_error(key, INVALID_CONTEXT, str(exc)) for key in self._flags]
        timestamp = int(time.time() if now is None else now)
        return [self._evaluate(key, checked, timestamp) for key in self._flags]

    def _evaluate(self, key: str, context: Mapping[str, Any], timestamp: int) -> Evaluation:
        flag = self._flags[key]
        metadata = self._metadata[key]
        if flag.state == "DISABLED":
            return Evaluation(key=key, reason=DISABLED, metadata=metadata)
        if not flag.targeting:
            return self._default(flag, STATIC, metadata)
        data: dict[str, Any] = dict(context)
        data["$flagd"] = {"flagKey": key, "timestamp": timestamp}
        data["targetingKey"] = context.get("targetingKey")
        splits: list[tuple[Any, bool]] = []
        token = _splits.set(splits)
        try:
            chosen = jsonLogic(flag.targeting, data, _OPERATORS)
        except (TypeError, ValueError, ArithmeticError) as exc:
            return _error(key, INVALID_CONTEXT, f"the context does not fit the targeting: {exc}")
        except Exception as exc:
            return _error(key, PARSE_ERROR, f"flag {key!r} has targeting that fails: {exc!r}")
        finally:
            _splits.reset(token)
        if chosen is None:
            if any(missing for _, missing in splits):
                return _error(
                    key,
                    TARGETING_KEY_MISSING,
                    f"flag {key!r} splits traffic by targeting key; the context has none",
                )
            return self._default(flag, DEFAULT, metadata)
        variant = str(chosen).lower() if isinstance(chosen, bool) else str(chosen)
        if variant not in flag.variants:
            return _error(
                key, GENERAL, f"targeting chose variant {variant!r}, which flag {key!r} lacks"
            )
        split = any(result == chosen for result, _ in splits)
        return Evaluation(
            key=key,
            reason=SPLIT if split else TARGETING_MATCH,
            value=flag.variants[variant],
            variant=variant,
            metadata=metadata,
        )

    @staticmethod
    def _default(flag: Flag, reason: str, metadata: Mapping[str, Any]) -> Evaluation:
        variant, value = flag.default
        if variant is None:  # no default variant: the caller's own default applies
            return Evaluation(key=flag.key, reason=DEFAULT, metadata=metadata)
        return Evaluation(
            key=flag.key, reason=reason, value=value, variant=variant, metadata=metadata
        )
