"""The audit trail's hash chain: pure functions, no database, no clock.

Each entry says who did what, when, about which service, environment and version, and which
event said so (its id, source, type and a digest of its content). Entries are numbered from 1
(``seq``); each carries the hash of the one before (``prev_hash``; the first carries
``GENESIS``) and its own ``hash``, so changing, removing or moving any entry breaks the chain
from there on.

The canonical encoding
----------------------
``hash`` is the lower-case hex sha256 of ``PREFIX`` (``b"lockstep-audit/1\\n"``) followed by
the entry's canonical JSON: a JSON object of every field but ``hash`` (``FIELDS``, with
``prev_hash``), keys sorted, no whitespace (separators ``,`` and ``:``), UTF-8, non-ASCII
characters as they are, absent values as ``null``, ``seq`` as an integer and both times as
RFC 3339 in UTC with microseconds (``2026-05-04T10:00:00.000000Z``). For these values that is
RFC 8785 (JCS), so a verifier in any language recomputes the same bytes. An export line is the
same object with ``hash`` added.

``verify`` reads a chain as stored (in the order given) and names every bad entry:

- ``edited``: an entry's content does not hash to its hash; or its hash was recomputed, and
  the next entry chains to another one;
- ``deleted``: a number missing (at the start, in the middle, or at the end when the head is
  known: the head table, or a head hash kept elsewhere);
- ``reordered``: an entry stored after a later one (or twice), or whose hash says it was
  written under another number;
- ``inserted``: entries after the head stored beside the chain (added without moving it);
- ``malformed``: an export line that is not an entry.

What a hash chain cannot show alone: someone who rewrites every entry from some point on, and
the head with them. Keep the head hash ``verify`` prints somewhere else and check against it
(``lockstep audit verify --head``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields, replace
from datetime import UTC, datetime
from typing import Any, Literal

PREFIX = b"lockstep-audit/1\n"
GENESIS = "0" * 64  # the prev_hash of entry 1
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"

ActorKind = Literal["person", "service", "agent"]
ProblemKind = Literal["edited", "deleted", "reordered", "inserted", "malformed"]


@dataclass(frozen=True)
class Fact:
    """What one event says happened: everything of an entry but its place in the chain."""

    occurred_at: datetime  # the event's time (context.timestamp)
    actor: str  # the person, the deployer agent, or the emitting service (its source)
    actor_kind: ActorKind
    action: str  # e.g. gate.passed, approval.approved, hold.released
    service: str | None
    environment: str | None
    version: str | None
    subject: str  # the event's subject id
    incident: str | None  # the incident it is part of, if any
    detail: str  # one line for people
    event_id: str
    event_source: str
    event_type: str
    event_digest: str  # sha256 of the event's canonical JSON, as the inbox digests it


@dataclass(frozen=True)
class Entry:
    seq: int
    recorded_at: datetime
    occurred_at: datetime
    actor: str
    actor_kind: str
    action: str
    service: str | None
    environment: str | None
    version: str | None
    subject: str
    incident: str | None
    detail: str
    event_id: str
    event_source: str
    event_type: str
    event_digest: str
    prev_hash: str
    hash: str


FIELDS = tuple(f.name for f in fields(Entry) if f.name != "hash")
_TIMES = ("recorded_at", "occurred_at")


@dataclass(frozen=True)
class Head:
    """The last entry's number and hash (``seq`` 0 and ``GENESIS``: an empty chain)."""

    seq: int = 0
    hash: str = GENESIS


def time_text(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError(f"{moment!r} has no time zone")
    return moment.astimezone(UTC).strftime(TIME_FORMAT)


def parse_time(text: str) -> datetime:
    return datetime.strptime(text, TIME_FORMAT).replace(tzinfo=UTC)


def _values(entry: Entry) -> dict[str, Any]:
    values = asdict(entry)
    for name in _TIMES:
        values[name] = time_text(values[name])
    return values


def canonical(entry: Entry) -> bytes:
    """The bytes ``hash`` is taken over (see the module's text): every field but ``hash``."""
    values = _values(entry)
    del values["hash"]
    return json.dumps(values, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def hash_of(entry: Entry) -> str:
    """What ``entry.hash`` must be."""
    return hashlib.sha256(PREFIX + canonical(entry)).hexdigest()


def append(head: Head, fact: Fact, recorded_at: datetime) -> Entry:
    """The entry after ``head`` for ``fact``, hashed. Times are kept to the microsecond (what
    Postgres keeps), in UTC."""
    entry = Entry(
        seq=head.seq + 1,
        recorded_at=recorded_at.astimezone(UTC),
        prev_hash=head.hash,
        hash="",
        **{f.name: getattr(fact, f.name) for f in fields(Fact)},
    )
    entry = replace(entry, occurred_at=entry.occurred_at.astimezone(UTC))
    return replace(entry, hash=hash_of(entry))


def chain(facts: Iterable[tuple[Fact, datetime]], head: Head = Head()) -> list[Entry]:
    """Entries for ``facts`` (each with when it was recorded), appended after ``head``."""
    out: list[Entry] = []
    for fact, at in facts:
        entry = append(head, fact, at)
        out.append(entry)
        head = Head(entry.seq, entry.hash)
    return out


# -- export lines ----------------------------------------------------------------------------


def to_line(entry: Entry) -> str:
    """One JSON line of the export: the canonical object with ``hash``."""
    return json.dumps(_values(entry), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class Malformed(ValueError):
    """A line that is not an audit entry."""


def from_line(line: str) -> Entry:
    try:
        values = json.loads(line)
    except ValueError as exc:
        raise Malformed(f"not JSON ({exc})") from None
    if not isinstance(values, dict):
        raise Malformed("not a JSON object")
    names = {f.name for f in fields(Entry)}
    missing = sorted(names - values.keys())
    if missing:
        raise Malformed(f"missing {', '.join(missing)}")
    try:
        for name in _TIMES:
            values[name] = parse_time(values[name])
    except (TypeError, ValueError) as exc:
        raise Malformed(f"a time that is not {TIME_FORMAT} ({exc})") from None
    if not isinstance(values["seq"], int) or isinstance(values["seq"], bool):
        raise Malformed("seq is not an integer")
    return Entry(**{name: values[name] for name in names})


# -- verifying -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    seq: int | None  # the entry named (a deletion: the first number missing)
    kind: ProblemKind
    reason: str

    def __str__(self) -> str:
        if self.seq is not None:
            where = f"seq {self.seq}"
        else:  # a line that is no entry, or a head kept that no entry has
            where = "file" if self.kind == "malformed" else "head"
        return f"{where}: {self.kind}: {self.reason}"


@dataclass(frozen=True)
class Report:
    count: int
    head: Head  # the last entry's (by number), as stored
    problems: tuple[Problem, ...]

    @property
    def intact(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        return f"{self.count} entries, chain intact, head {self.head.hash}"


def verify(
    entries: Sequence[Entry],
    head: Head | None = None,
    *,
    kept: Head | None = None,
    also: Sequence[Problem] = (),
) -> Report:
    """Every problem of the chain ``entries`` (in the order stored), the first bad entry
    first.

    ``head`` is the head stored beside the chain (the head table), moved by every append:
    the last entry must be it, so entries removed from the end (or added there without it)
    show. ``kept`` is a head kept elsewhere earlier (``seq`` 0: known only by its hash):
    entries may have been appended since, but that entry must still be in the chain, as it
    was. ``also``: problems found before (export lines that are no entry), reported with the
    rest."""
    problems: list[Problem] = list(also)
    problems.extend(_out_of_order(entries))
    ordered = sorted({e.seq: e for e in reversed(entries)}.values(), key=lambda e: e.seq)
    by_hash: dict[str, Entry] = {}
    by_prev: dict[str, Entry] = {}
    for e in ordered:
        by_hash.setdefault(e.hash, e)
        by_prev.setdefault(e.prev_hash, e)
    for first, last in _missing_ranges([e.seq for e in ordered]):
        after = f"after seq {first - 1}" if first > 1 else "at the start"
        problems.append(Problem(first, "deleted", f"{_span(first, last)} missing ({after})"))
    bad: set[int] = set()  # entries whose own hash is wrong
    for e in ordered:
        if hash_of(e) == e.hash:
            continue
        bad.add(e.seq)
        origin = _written_as(e, by_hash, by_prev)
        if origin is not None:
            problems.append(Problem(e.seq, "reordered",
                                    f"its hash says it was written as seq {origin}"))  # fmt: skip
        else:
            problems.append(Problem(e.seq, "edited", "its content does not hash to its hash"))
    previous: Entry | None = None
    for e in ordered:
        expected_seq = previous.seq + 1 if previous is not None else 1
        expected_hash = previous.hash if previous is not None else GENESIS
        if e.seq == expected_seq and e.prev_hash != expected_hash and e.seq not in bad:
            if previous is None:
                problems.append(Problem(e.seq, "edited", "it does not chain to the genesis"))
            elif previous.seq not in bad:
                problems.append(Problem(previous.seq, "edited",
                                        f"rewritten: seq {e.seq} chains to another hash than "
                                        "the one it has"))  # fmt: skip
        previous = e
    stored = Head(ordered[-1].seq, ordered[-1].hash) if ordered else Head()
    if head is not None and head != stored:
        problems.append(_against_head(head, stored))
    if kept is not None:
        problems.extend(_against_kept(kept, ordered, by_hash))
    problems.sort(key=lambda p: (p.seq if p.seq is not None else -1, p.kind))
    return Report(count=len(entries), head=stored, problems=tuple(problems))


def _out_of_order(entries: Sequence[Entry]) -> list[Problem]:
    """The entries stored out of their numbers' order: those outside a longest run of
    increasing numbers (so one entry moved is one problem, not every entry it passed)."""
    seqs = [e.seq for e in entries]
    keep = _longest_increasing(seqs)
    kept_seqs = {entries[j].seq for j in keep}
    problems = []
    for i, e in enumerate(entries):
        if i in keep:
            continue
        if e.seq in kept_seqs:
            problems.append(Problem(e.seq, "reordered", f"a second entry numbered {e.seq}, "
                                    f"stored as entry {i + 1}"))  # fmt: skip
        else:
            problems.append(Problem(e.seq, "reordered", _stored_at(entries, i)))
    return problems


def _stored_at(entries: Sequence[Entry], i: int) -> str:
    before = entries[i - 1].seq if i > 0 else None
    after = entries[i + 1].seq if i + 1 < len(entries) else None
    if before is None and after is None:
        return "out of order"
    if before is None:
        return f"out of order: stored first, before seq {after}"
    if after is None:
        return f"out of order: stored last, after seq {before}"
    return f"out of order: stored between seq {before} and seq {after}"


def _longest_increasing(seqs: Sequence[int]) -> set[int]:
    """The positions of a longest strictly increasing subsequence of ``seqs``."""
    tails: list[int] = []  # tails[k]: position ending the best run of length k + 1
    before: list[int] = [-1] * len(seqs)
    for i, s in enumerate(seqs):
        lo, hi = 0, len(tails)
        while lo < hi:
            mid = (lo + hi) // 2
            if seqs[tails[mid]] < s:
                lo = mid + 1
            else:
                hi = mid
        before[i] = tails[lo - 1] if lo > 0 else -1
        if lo == len(tails):
            tails.append(i)
        else:
            tails[lo] = i
    out: set[int] = set()
    i = tails[-1] if tails else -1
    while i >= 0:
        out.add(i)
        i = before[i]
    return out


def _missing_ranges(numbers: Sequence[int]) -> list[tuple[int, int]]:
    """Runs of numbers absent from ``numbers`` (sorted, distinct), from 1 to the last."""
    gaps, expected = [], 1
    for n in numbers:
        if n > expected:
            gaps.append((expected, n - 1))
        expected = n + 1
    return gaps


def _span(first: int, last: int) -> str:
    return f"seq {first}" if first == last else f"seq {first} to {last}"


def _written_as(e: Entry, by_hash: dict[str, Entry], by_prev: dict[str, Entry]) -> int | None:
    """The number ``e`` was written under, if its hash says it was another one: the number
    after the entry it chains to, or before the entry that chains to it."""
    candidates = []
    if e.prev_hash == GENESIS:
        candidates.append(1)
    elif (before := by_hash.get(e.prev_hash)) is not None:
        candidates.append(before.seq + 1)
    if (after := by_prev.get(e.hash)) is not None:
        candidates.append(after.seq - 1)
    for seq in candidates:
        if seq != e.seq and seq >= 1 and hash_of(replace(e, seq=seq)) == e.hash:
            return seq
    return None


def _against_head(head: Head, stored: Head) -> Problem:
    """The head table does not name the last entry."""
    if head.seq > stored.seq:
        return Problem(stored.seq + 1, "deleted",
                       f"{_span(stored.seq + 1, head.seq)} missing at the end (the head names "
                       f"seq {head.seq})")  # fmt: skip
    if head.seq < stored.seq:
        return Problem(head.seq + 1, "inserted",
                       f"{_span(head.seq + 1, stored.seq)} after the head (seq {head.seq}): "
                       "added without moving it")  # fmt: skip
    return Problem(stored.seq, "edited", f"its hash is not the head's ({head.hash})")


def _against_kept(kept: Head, ordered: list[Entry], by_hash: dict[str, Entry]) -> list[Problem]:
    """A head kept elsewhere must still be in the chain, as it was."""
    if kept.seq == 0:
        if kept.hash in by_hash:
            return []
        return [Problem(None, "edited", f"no entry has the head kept ({kept.hash}): the chain "
                        "up to it was rewritten or removed")]  # fmt: skip
    at = next((e for e in ordered if e.seq == kept.seq), None)
    if at is None:
        return [Problem(kept.seq, "deleted", f"missing: the head kept names it ({kept.hash})")]
    if at.hash != kept.hash:
        return [Problem(kept.seq, "edited", f"its hash is not the head kept ({kept.hash}): the "
                        "chain up to it was rewritten")]  # fmt: skip
    return []


def parse_head(text: str) -> Head:
    """``SEQ:HASH`` or ``HASH`` (a head kept elsewhere, as ``verify`` printed it)."""
    seq_text, _, hash_text = text.strip().rpartition(":")
    if len(hash_text) != 64 or any(c not in "0123456789abcdef" for c in hash_text):
        raise ValueError(f"{text!r} is not a head: give SEQ:HASH or the 64 hex digits of a hash")
    if not seq_text:
        return Head(0, hash_text)
    if not seq_text.isdigit() or int(seq_text) < 1:
        raise ValueError(f"{text!r} is not a head: SEQ must be a number from 1")
    return Head(int(seq_text), hash_text)
