"""The audit trail's hash chain, without a database: entries appended and verified; an edited,
deleted or reordered entry each found and named; the canonical encoding as documented; and
who did what, read from every audited event type."""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from events import (
    ApprovalUpdated,
    CDEvent,
    FlagChangeRequested,
    HoldReleased,
    IncidentAcknowledged,
    PolicyUpdated,
    PromotionApproved,
    ServiceDeployed,
)
from events.testing import sample, variants
from services.audit.api import read_lines
from services.audit.chain import (
    FIELDS,
    GENESIS,
    PREFIX,
    Entry,
    Fact,
    Head,
    canonical,
    chain,
    from_line,
    hash_of,
    parse_head,
    to_line,
    verify,
)
from services.audit.facts import AUDITED, Place, fact_of, incident_of
from shared.bus.consumer import content_digest

T0 = datetime(2026, 5, 4, 10, 0, 0, 123456, tzinfo=UTC)


def fact(n: int, *, actor: str = "alice", service: str = "checkout") -> Fact:
    return Fact(
        occurred_at=T0 + timedelta(seconds=n),
        actor=actor,
        actor_kind="person",
        action="approval.approved",
        service=service,
        environment="prod-eu",
        version=f"1.4.{n}",
        subject=f"{service}@1.4.{n}:prod-eu",
        incident=None,
        detail=f"{actor} approved {service}@1.4.{n} for prod-eu",
        event_id=f"id-{n}",
        event_source="lockstep/cli",
        event_type=ApprovalUpdated.TYPE,
        event_digest="sha256:" + hashlib.sha256(str(n).encode()).hexdigest(),
    )


def made(count: int = 6) -> list[Entry]:
    return chain((fact(n), T0 + timedelta(seconds=n, milliseconds=5)) for n in range(1, count + 1))


def head_of(entries: list[Entry]) -> Head:
    return Head(entries[-1].seq, entries[-1].hash)


def said(entries: list[Entry], head: Head | None = None, **kw: object) -> list[str]:
    return [str(p) for p in verify(entries, head, **kw).problems]  # type: ignore[arg-type]


# -- appending and the encoding ----------------------------------------------------------------


def test_entries_are_numbered_from_one_and_each_chains_to_the_one_before() -> None:
    entries = made()
    assert [e.seq for e in entries] == [1, 2, 3, 4, 5, 6]
    assert entries[0].prev_hash == GENESIS
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(entries))
    report = verify(entries, head_of(entries))
    assert report.intact
    assert report.summary() == f"6 entries, chain intact, head {entries[-1].hash}"


def test_an_empty_chain_is_intact() -> None:
    assert verify([], Head()).summary() == f"0 entries, chain intact, head {GENESIS}"


def test_the_hash_is_sha256_of_the_documented_canonical_json() -> None:
    entry = made(1)[0]
    text = canonical(entry).decode()
    values = json.loads(text)
    assert set(values) == set(FIELDS) and "hash" not in values
    assert "prev_hash" in values
    assert text == json.dumps(values, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert values["seq"] == 1
    assert values["occurred_at"] == "2026-05-04T10:00:01.123456Z"
    assert values["recorded_at"] == "2026-05-04T10:00:01.128456Z"
    assert entry.hash == hashlib.sha256(PREFIX + text.encode()).hexdigest() == hash_of(entry)


def test_times_in_other_zones_hash_as_the_same_instant_in_utc() -> None:
    east = fact(1)
    east = replace(east, occurred_at=east.occurred_at.astimezone(ZoneInfo("Asia/Tokyo")))
    assert chain([(east, T0)])[0].hash == chain([(fact(1), T0)])[0].hash


def test_non_ascii_is_kept_as_utf8() -> None:
    entry = chain([(fact(1, actor="zoë"), T0)])[0]
    assert "zoë".encode() in canonical(entry)
    assert verify([entry], Head(1, entry.hash)).intact


def test_export_lines_read_back_as_the_same_entries() -> None:
    entries = made()
    lines = [to_line(e) for e in entries]
    assert [from_line(line) for line in lines] == entries
    assert json.loads(lines[0])["hash"] == entries[0].hash
    read, problems = read_lines([*lines, "", "not json", b"\xff\xfe"])
    assert read == entries
    assert [str(p) for p in problems] == [
        "file: malformed: line 8: not JSON (Expecting value: line 1 column 1 (char 0))",
        "file: malformed: line 9: not UTF-8",
    ]


# -- tampering, found and named ----------------------------------------------------------------


def test_an_edited_entry_is_named() -> None:
    entries = made()
    entries[2] = replace(entries[2], actor="mallory")
    assert said(entries, head_of(entries)) == [
        "seq 3: edited: its content does not hash to its hash"
    ]


def test_an_edited_entry_whose_hash_was_recomputed_is_named_by_the_next_link() -> None:
    entries = made()
    forged = replace(entries[2], version="6.6.6")
    entries[2] = replace(forged, hash=hash_of(forged))
    assert said(entries, head_of(entries)) == [
        "seq 3: edited: rewritten: seq 4 chains to another hash than the one it has"
    ]


def test_an_edited_time_is_found_too() -> None:
    entries = made()
    entries[0] = replace(entries[0], recorded_at=entries[0].recorded_at + timedelta(microseconds=1))
    assert said(entries) == ["seq 1: edited: its content does not hash to its hash"]


def test_a_deleted_entry_is_named() -> None:
    entries = made()
    head = head_of(entries)
    del entries[3]
    assert said(entries, head) == ["seq 4: deleted: seq 4 missing (after seq 3)"]


def test_deleted_entries_at_the_start_and_at_the_end_are_named() -> None:
    entries = made()
    head = head_of(entries)
    assert said(entries[2:], head) == ["seq 1: deleted: seq 1 to 2 missing (at the start)"]
    assert said(entries[:4], head) == [
        "seq 5: deleted: seq 5 to 6 missing at the end (the head names seq 6)"
    ]
    assert verify(entries[:4]).intact  # without a head, the end cannot be known


def test_entries_added_after_the_head_are_named() -> None:
    entries = made()
    assert said(entries, Head(4, entries[3].hash)) == [
        "seq 5: inserted: seq 5 to 6 after the head (seq 4): added without moving it"
    ]


def test_a_line_moved_in_an_export_is_named_once() -> None:
    entries = made()
    head = head_of(entries)
    swapped = [entries[0], entries[2], entries[1], *entries[3:]]
    # one of the two is named (either way round, it is one move)
    assert said(swapped, head) == ["seq 3: reordered: out of order: stored between seq 1 and seq 2"]
    to_the_front = [entries[4], *entries[:4], entries[5]]
    assert said(to_the_front, head) == [
        "seq 5: reordered: out of order: stored first, before seq 1"
    ]
    to_the_end = [*entries[:1], *entries[2:], entries[1]]
    assert said(to_the_end, head) == ["seq 2: reordered: out of order: stored last, after seq 6"]
    twice = [*entries[:3], entries[1], *entries[3:]]
    assert said(twice, head) == ["seq 2: reordered: a second entry numbered 2, stored as entry 4"]


def test_entries_renumbered_to_swap_places_are_named_as_reordered() -> None:
    entries = made()
    head = head_of(entries)
    a, b = entries[1], entries[2]
    entries[1], entries[2] = replace(b, seq=2), replace(a, seq=3)
    assert said(entries, head) == [
        "seq 2: reordered: its hash says it was written as seq 3",
        "seq 3: reordered: its hash says it was written as seq 2",
    ]


def test_the_first_bad_entry_comes_first() -> None:
    entries = made()
    head = head_of(entries)
    entries[4] = replace(entries[4], actor="mallory")
    del entries[1]
    problems = verify(entries, head).problems
    assert [(p.seq, p.kind) for p in problems] == [(2, "deleted"), (5, "edited")]


def test_a_head_kept_elsewhere_must_still_be_in_the_chain() -> None:
    entries = made()
    kept = Head(4, entries[3].hash)
    assert verify(entries, head_of(entries), kept=kept).intact  # appended since: fine
    assert verify(entries, kept=Head(0, entries[3].hash)).intact
    # everything from seq 3 on rewritten consistently, and the head table with it
    rewritten = chain((fact(n, actor="mallory") if n >= 3 else fact(n),
                       T0 + timedelta(seconds=n, milliseconds=5)) for n in range(1, 7))  # fmt: skip
    assert verify(rewritten, head_of(rewritten)).intact  # what a chain alone cannot show
    assert said(rewritten, head_of(rewritten), kept=kept) == [
        f"seq 4: edited: its hash is not the head kept ({kept.hash}): the chain up to it was "
        "rewritten"
    ]
    assert said(rewritten[:3], kept=kept) == [f"seq 4: deleted: missing: the head kept names it "
                                              f"({kept.hash})"]  # fmt: skip
    assert said(rewritten, kept=Head(0, kept.hash)) == [
        f"head: edited: no entry has the head kept ({kept.hash}): the chain up to it was "
        "rewritten or removed"
    ]


def test_heads_are_read_as_printed() -> None:
    h = "ab" * 32
    assert parse_head(h) == Head(0, h)
    assert parse_head(f"12:{h}") == Head(12, h)
    for bad in ("", "12:", "x:" + h, "0:" + h, h[:-1], h.upper()):
        with pytest.raises(ValueError, match="is not a head"):
            parse_head(bad)


# -- who did what, from each audited event type -------------------------------------------------


def audited_samples() -> list[CDEvent]:
    return [event for model in AUDITED for event in variants(model)]


@pytest.mark.parametrize("event", audited_samples(), ids=lambda e: e.context.type)
def test_every_audited_event_makes_an_entry(event: CDEvent) -> None:
    place = Place("checkout", "prod-eu", "1.4.2") if incident_of(event) else None
    f = fact_of(event, content_digest(event), place)
    assert f.event_id == event.id and f.event_source == event.source
    assert f.event_type == event.context.type
    assert f.event_digest == content_digest(event)
    assert f.actor and f.action and f.detail
    [entry] = chain([(f, T0)])
    assert verify([entry], Head(1, entry.hash)).intact


def test_the_actor_is_the_person_for_peoples_actions() -> None:
    approval = ApprovalUpdated.build(service="checkout", version="1.4.2", environment="prod-eu",
                                     by="alice", decision="rejected")  # fmt: skip
    f = fact_of(approval, content_digest(approval))
    assert (f.actor, f.actor_kind, f.action) == ("alice", "person", "approval.rejected")
    assert (f.service, f.environment, f.version) == ("checkout", "prod-eu", "1.4.2")
    hold = sample(HoldReleased)
    assert fact_of(hold, "d").actor == hold.subject.content.by
    policy = sample(PolicyUpdated)
    assert (fact_of(policy, "d").actor, fact_of(policy, "d").actor_kind) == ("platform-team",
                                                                             "person")  # fmt: skip


def test_the_actor_is_the_emitting_service_or_agent_otherwise() -> None:
    promoted = sample(PromotionApproved, service="billing", environment="staging")
    f = fact_of(promoted, "d")
    assert (f.actor, f.actor_kind) == (promoted.source, "service")
    assert (f.service, f.environment) == ("billing", "staging")
    deployed = sample(ServiceDeployed, service="billing", environment="staging")
    f = fact_of(deployed, "d")
    assert (f.actor, f.actor_kind) == (deployed.custom_data.agent, "agent")
    kill = FlagChangeRequested.build(environment="prod-eu", flag_key="new-flow", action="disable",
                                     requested_by="lockstep/incidents", reason="breach",
                                     incident_id="inc-1", source="lockstep/incidents")  # fmt: skip
    f = fact_of(kill, "d", Place("checkout", "prod-eu", "1.4.2"))
    assert (f.actor, f.actor_kind, f.service) == ("lockstep/incidents", "service", "checkout")


def test_an_acknowledgement_is_placed_where_its_incident_is() -> None:
    ack = sample(IncidentAcknowledged)
    assert incident_of(ack) == ack.subject.content.incident_id
    f = fact_of(ack, "d", Place("checkout", "prod-eu", "1.4.2"))
    assert (f.actor, f.actor_kind) == (ack.subject.content.by, "person")
    assert (f.service, f.environment, f.version) == ("checkout", "prod-eu", "1.4.2")
