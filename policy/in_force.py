"""The release model in force in a service, as the last ``policy.updated`` delivered it.

Every service that acts on the model keeps it in a ``policy`` table of its own schema
(``sha256``, ``model``, ``updated_by``; ``policy/migrations``, in every such service's
``ServiceSpec.migrations`` as ``POLICY_MIGRATIONS``). A model is validated once per
process, by its hash: a decision reads only the hash unless the model is new to it.

A decision and a change of model are serialised, so none is lost between them. A transaction
that reads the model in force holds it (a shared advisory lock on the schema's model, until
commit); one that puts a new model in force takes it alone, so it waits for the decisions
under way to commit, and then sees what they recorded (the builds a gate judged under the old
model, or under none, are judged again), while a decision that begins after it waits, and
reads the new model. Without this, a build registered in the same moment as the first model
arrived was judged under no model by one transaction and missed by the other's re-judging,
and never judged at all. Services that lock their own subjects (a build, an environment) take
the model first, in the same statement (``HOLD_MODEL``), so the locks are always taken in
one order.

A model is put in force only if it is the one its sha256 names: the update carries the model
file's text, which must hash to the sha256 and read (parsed and validated) as the very model
carried (``check_update``). Anything else is refused with ``PolicyRefused``, and nothing is put
in force (nor kept as the model of that hash). The bus has no way for a handler to refuse an
event for good, so a refusal is retried ``handler_max_attempts`` times like any failure and then
dead-lettered with its reason; a sha256 that is not the text's hash is refused sooner, when
the event is read (``events.policy``: dead-lettered at once).
"""

from __future__ import annotations

import json
from typing import Any

import asyncpg
from pydantic import ValidationError

from events.policy import text_sha256
from policy.loader import ModelError, load_text
from policy.model import ReleaseModel

_PARSED: dict[str, ReleaseModel] = {}

# The lock key of the model in force, as the bus's declared locks name it (``Router.handles(...,
# shared=(MODEL_LOCK,))``: held shared for a batch, taken before the subjects' locks).
MODEL_LOCK = "policy"
_MODEL_KEY = f"hashtextextended(current_schema() || ':{MODEL_LOCK}', 0)"
# SQL: hold the model in force until commit (shared with every other decision).
HOLD_MODEL = f"pg_advisory_xact_lock_shared({_MODEL_KEY})"
_CHANGE_MODEL = f"SELECT pg_advisory_xact_lock({_MODEL_KEY})"


class PolicyRefused(ValueError):
    """A policy update that is not put in force, and why."""


def _differences(ours: Any, theirs: Any, path: str = "") -> list[str]:
    """Paths (``gates.staging``) where two JSON values differ, outermost first."""
    if isinstance(ours, dict) and isinstance(theirs, dict):
        return [
            d
            for key in sorted(set(ours) | set(theirs), key=str)
            for d in _differences(ours.get(key), theirs.get(key), f"{path}.{key}" if path else key)
        ]
    if isinstance(ours, list) and isinstance(theirs, list) and len(ours) == len(theirs):
        return [d for i, (a, b) in enumerate(zip(ours, theirs, strict=True)) for d in
                _differences(a, b, f"{path}.{i}")]  # fmt: skip
    return [] if ours == theirs else [path or "(the whole model)"]


def check_update(sha256: str, raw: dict[str, Any], text: str | None) -> ReleaseModel:
    """The model a policy update carries, if it is the one its sha256 names: ``text`` (the
    model file as published) hashes to
    ``sha256`` and reads, validated, as ``raw`` validated. Raises ``PolicyRefused`` saying why
    not."""
    named = f"policy update {sha256[:12]} refused"
    if text is None:
        raise PolicyRefused(
            f"{named}: it carries no text (the model file), so nothing shows that its model "
            "is the one its sha256 names; publish the file with `lockstep model publish`"
        )
    found = text_sha256(text)
    if found != sha256:
        raise PolicyRefused(
            f"{named}: its text hashes to {found or '(not UTF-8 text)'}, not to the sha256 "
            "it claims"
        )
    try:
        loaded = load_text(text.encode("utf-8"), source=f"policy {sha256[:12]}")
    except ModelError as exc:
        raise PolicyRefused(f"{named}: its text is not a valid release model: {exc}") from None
    try:
        carried = ReleaseModel.model_validate(raw)
    except ValidationError as exc:
        raise PolicyRefused(f"{named}: its model is not a valid release model: {exc}") from None
    if carried != loaded.model:
        where = _differences(carried.model_dump(mode="json"), loaded.model.model_dump(mode="json"))
        shown = ", ".join(where[:5]) + (f" and {len(where) - 5} more" if len(where) > 5 else "")
        raise PolicyRefused(
            f"{named}: its model is not the one its text (the file sha256 names) reads as; "
            f"they differ at {shown or 'their values'}"
        )
    return loaded.model


def model_in_force(sha256: str, raw: dict[str, Any]) -> ReleaseModel:
    """Validate (once) a model in force, or the one ``keep`` has just checked; raises if it does
    not parse."""
    if sha256 not in _PARSED:
        _PARSED[sha256] = ReleaseModel.model_validate(raw)
    return _PARSED[sha256]


async def keep(
    conn: asyncpg.Connection,
    sha256: str,
    raw: dict[str, Any],
    updated_by: str,
    text: str | None,
    memo: dict[str, Any] | None = None,
) -> None:
    """Put a model in force in the caller's schema, once the decisions under way under the old
    one have committed (they are then visible to the caller, which judges them again). Only a
    model its text (``text``, the file as published) shows to be the one its sha256 names
    (``check_update``): else ``PolicyRefused``, and nothing is put in force."""
    # Next step: refuse here a policy update not signed by a platform key (events.signing).
    model = check_update(sha256, raw, text)
    _PARSED[sha256] = model  # the file's own model: no forged update can stand for its hash
    await conn.execute(_CHANGE_MODEL)
    await conn.execute(
        """INSERT INTO policy (only_one, sha256, model, updated_by) VALUES (true, $1, $2::jsonb, $3)
           ON CONFLICT (only_one) DO UPDATE
           SET sha256 = EXCLUDED.sha256, model = EXCLUDED.model,
               updated_by = EXCLUDED.updated_by, updated_at = now()""",
        sha256, json.dumps(model.model_dump(mode="json")), updated_by,
    )  # fmt: skip
    if memo is not None:
        memo[_MEMO] = (sha256, model)  # what the rest of this transaction reads


_MEMO = "policy.in_force"


async def in_force(
    conn: asyncpg.Connection, *, locked: bool = False, memo: dict[str, Any] | None = None
) -> tuple[str, ReleaseModel] | None:
    """(sha256, model) in force in the caller's schema, or None before the first one; held
    until the caller's transaction ends (a change of model waits for it). ``locked``: the
    caller's transaction holds the model already, taken in an earlier statement of its own
    (``HOLD_MODEL`` in its lock of a build or an environment, or the bus's lock of
    ``MODEL_LOCK`` for the batch), which saves a round trip. ``memo``: what the handlers of
    one transaction share (``HandlerContext.memo``): the model is read once per transaction,
    since while it is held it cannot change (but by ``keep``, which updates the memo)."""
    if memo is not None and _MEMO in memo:
        found: tuple[str, ReleaseModel] | None = memo[_MEMO]
        return found
    if memo is not None and not locked:
        raise ValueError("a model read for a whole transaction must be held (locked) by it")
    if not locked:
        await conn.execute(f"SELECT {HOLD_MODEL}")  # its own statement: the next sees a change
    sha256: str | None = await conn.fetchval("SELECT sha256 FROM policy")
    if sha256 is None:
        if memo is not None:
            memo[_MEMO] = None
        return None
    if sha256 not in _PARSED:
        raw = await conn.fetchval("SELECT model FROM policy")
        model_in_force(sha256, json.loads(raw))
    if memo is not None:
        memo[_MEMO] = (sha256, _PARSED[sha256])
    return sha256, _PARSED[sha256]
