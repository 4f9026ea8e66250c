"""The audit service on the real Kafka and Postgres: decisions and people's actions chained as
they are published (one entry each, even when redelivered, in one line across partitions);
`lockstep audit verify` finds a row edited or deleted through SQL and names its seq; an export
verifies from its file; `lockstep audit show` lists who did what, citing the events."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from events import (
    ApprovalUpdated,
    CDEvent,
    FlagChanged,
    FlagChangeRequested,
    GateFailed,
    GatePassed,
    HoldReleased,
    IncidentAcknowledged,
    IncidentDetected,
    PolicyUpdated,
    PromotionApproved,
    ServiceDeployed,
)
from events.flags import ChangedContent, ChangedSubject
from events.incidents import AcknowledgedContent, AcknowledgedSubject
from events.testing import sample
from services.audit.app import SPEC as AUDIT
from tests.integration.conftest import Namespace, NamespaceFactory, emitter_role, unique_service

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def lockstep_audit(ns: Namespace, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-P", "-m", "cli", "audit", *args],  # `lockstep audit …`
        capture_output=True, text=True, cwd=ROOT, timeout=60, check=False,
        env={"PATH": "/usr/bin:/bin", "LOCKSTEP_NAMESPACE": ns.settings.namespace,
             "LOCKSTEP_KEY_DIR": str(ns.settings.key_dir),
             "LOCKSTEP_PG_DSN": ns.settings.pg_dsn, "LOCKSTEP_TRACE_DIR": "", "COLUMNS": "400",
             **env},
    )  # fmt: skip


async def cli(ns: Namespace, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(lockstep_audit, ns, *args, **env)


async def count(ns: Namespace) -> int:
    [row] = await ns.sql("audit", "SELECT count(*) AS n FROM entries")
    return int(row["n"])


async def until_chained(ns: Namespace, n: int, timeout: float = 30.0) -> None:
    for _ in range(int(timeout / 0.1)):
        if await count(ns) >= n:
            return
        await asyncio.sleep(0.1)
    pytest.fail(f"the audit service chained {await count(ns)} of {n} events in {timeout}s")


async def publish_all(ns: Namespace, events: list[CDEvent]) -> None:
    await asyncio.gather(*(ns.publish(e, signed_as=emitter_role(e)) for e in events))


def applied(request: FlagChangeRequested) -> FlagChanged:
    """What the flags service says when it applies ``request``."""
    c = request.subject.content
    return FlagChanged(
        context=FlagChanged.new_context("lockstep/flags"),
        subject=ChangedSubject(
            id=request.subject.id,
            content=ChangedContent(
                environment=c.environment, flag_key=c.flag_key, version=2, action="disable",
                changed_by=c.requested_by, reason=c.reason, source="kafka",
                definition={"state": "DISABLED", "variants": {"on": True, "off": False},
                            "defaultVariant": "off"},
                request_id=request.id,
            ),
        ),
    )  # fmt: skip


def acknowledged(incident_id: str, by: str) -> IncidentAcknowledged:
    return IncidentAcknowledged(
        context=IncidentAcknowledged.new_context("lockstep/incidents"),
        subject=AcknowledgedSubject(
            id=incident_id, content=AcknowledgedContent(incident_id=incident_id, by=by)
        ),
    )


async def test_the_trail_chains_what_happened_and_shows_tampering(
    new_namespace: NamespaceFactory, tmp_path: Path
) -> None:
    ns = await new_namespace()
    svc = unique_service()
    approval = ApprovalUpdated.build(service=svc, version="1.0.0", environment="staging",
                                     by="alice", decision="approved")  # fmt: skip
    story: list[CDEvent] = [
        sample(PolicyUpdated, updated_by="platform-team"),
        sample(GatePassed, service=svc, version="1.0.0", environment="staging"),
        approval,
        sample(PromotionApproved, service=svc, version="1.0.0", environment="staging"),
        sample(ServiceDeployed, service=svc, version="1.0.0", environment="staging"),
        sample(HoldReleased, service=svc, version="1.0.0", by="carol"),
    ]
    detected = sample(IncidentDetected, service=svc, version="1.0.0", environment="staging")
    # many decisions at once, for other services: over every partition, handled concurrently
    burst: list[CDEvent] = [
        sample(
            GatePassed if i % 2 else GateFailed,
            service=f"{svc}-{i % 7}",
            version=f"2.0.{i}",
            environment="dev",
        )
        for i in range(40)
    ]
    # a kill switch pulled for the incident, chained before the incident's detection is
    kill = FlagChangeRequested.build(environment="staging", flag_key=f"{svc}-kill",
                                     action="disable", requested_by="lockstep/incidents",
                                     reason="error rate", incident_id=detected.subject.id,
                                     source="lockstep/incidents")  # fmt: skip
    pulled = applied(kill)
    async with ns.service(AUDIT):
        await ns.publish(kill, signed_as="incidents")
        await until_chained(ns, 1)
        await publish_all(ns, [*story, detected, *burst])
        await until_chained(ns, 1 + len(story) + 1 + len(burst))
        ack = acknowledged(detected.subject.id, "bob")  # names only the incident
        await publish_all(ns, [ack, pulled])
        await ns.publish(approval, signed_as="person")  # the same event again: a redelivery
        marker = sample(GateFailed, service=svc, version="1.0.1", environment="staging")
        await ns.publish(marker, signed_as="gates")  # same partition as the copy, after it
        total = 1 + len(story) + 1 + len(burst) + 3
        await until_chained(ns, total)
        await asyncio.sleep(0.5)
        assert await count(ns) == total  # the copy made no entry

        rows = await ns.sql("audit", "SELECT seq, event_id, actor FROM entries ORDER BY seq")
        assert [r["seq"] for r in rows] == list(range(1, total + 1))  # one line, no gaps
        assert len({r["event_id"] for r in rows}) == total
        [head] = await ns.sql("audit", "SELECT seq, hash FROM head")
        assert head["seq"] == total

        verified = await cli(ns, "verify")
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert verified.stdout.strip() == f"{total} entries, chain intact, head {head['hash']}"

        shown = await cli(ns, "show", "--service", svc)
        assert shown.returncode == 0, shown.stderr
        for event in [*story[1:], detected, ack, marker, kill, pulled]:
            assert event.id in shown.stdout, (event, shown.stdout)
        assert story[0].id not in shown.stdout  # a model publish is no service's
        for who in ("alice", "carol", "bob", "lockstep/gates (service)"):
            assert who in shown.stdout, shown.stdout
        assert "approval.approved" in shown.stdout and "incident.acknowledged" in shown.stdout
        assert "1.0.0" in shown.stdout
        in_dev = await cli(ns, "show", "--service", f"{svc}-3", "--env", "dev")
        assert in_dev.returncode == 0 and in_dev.stdout.count("gate.") == len(range(3, 40, 7))
        everything = await cli(ns, "show", "--limit", "1000")
        assert story[0].id in everything.stdout and "platform-team" in everything.stdout

        exported = tmp_path / "audit.jsonl"
        done = await cli(ns, "export", "--out", str(exported))
        assert done.returncode == 0, done.stderr
        lines = exported.read_text(encoding="utf-8").splitlines()
        assert [json.loads(line)["seq"] for line in lines] == list(range(1, total + 1))
        from_file = await cli(ns, "verify", "--file", str(exported))
        assert from_file.stdout.strip() == verified.stdout.strip() + (
            " (its end is not checked: give --head SEQ:HASH to catch a cut-short file)"
        )
        to_stdout = await cli(ns, "export")
        assert to_stdout.stdout.splitlines() == lines

    # An UPDATE through SQL: refused by the trigger; past it, found and named
    ack_seq = next(r["seq"] for r in rows if r["event_id"] == ack.id)
    async with ns.connect("audit") as conn:
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await conn.execute("UPDATE entries SET actor = 'mallory' WHERE seq = $1", ack_seq)
        await conn.execute("ALTER TABLE entries DISABLE TRIGGER entries_append_only")
        await conn.execute("UPDATE entries SET actor = 'mallory' WHERE seq = $1", ack_seq)
    edited = await cli(ns, "verify")
    assert edited.returncode == 1
    assert edited.stdout.splitlines() == [
        f"seq {ack_seq}: edited: its content does not hash to its hash"
    ]
    assert "Traceback" not in edited.stderr
    # the export from before still verifies, and its head is still in the chain
    kept = f"{ack_seq - 1}:{json.loads(lines[ack_seq - 2])['hash']}"
    assert (await cli(ns, "verify", "--file", str(exported), "--head", kept)).returncode == 0

    # put back as it was: intact again (the content is what is checked); then a DELETE
    async with ns.connect("audit") as conn:
        await conn.execute("UPDATE entries SET actor = 'bob' WHERE seq = $1", ack_seq)
        assert (await cli(ns, "verify")).returncode == 0
        await conn.execute("DELETE FROM entries WHERE seq = 5")
    deleted = await cli(ns, "verify")
    assert deleted.returncode == 1
    assert deleted.stdout.splitlines() == ["seq 5: deleted: seq 5 missing (after seq 4)"]

    # the last entry deleted too: only the head says it was there
    async with ns.connect("audit") as conn:
        await conn.execute("DELETE FROM entries WHERE seq = $1", total)
    tail = await cli(ns, "verify")
    assert tail.stdout.splitlines() == [
        "seq 5: deleted: seq 5 missing (after seq 4)",
        f"seq {total}: deleted: seq {total} missing at the end (the head names seq {total})",
    ]

    # an export edited by hand: a line changed, and two lines swapped
    changed = [json.loads(line) for line in lines]
    changed[2]["actor"] = "mallory"
    changed[6], changed[7] = changed[7], changed[6]
    edited_file = tmp_path / "edited.jsonl"
    edited_file.write_text("".join(json.dumps(v) + "\n" for v in changed), encoding="utf-8")
    found = await cli(ns, "verify", "--file", str(edited_file))
    assert found.returncode == 1
    assert found.stdout.splitlines() == [
        "seq 3: edited: its content does not hash to its hash",
        "seq 8: reordered: out of order: stored between seq 6 and seq 7",
    ]


async def test_the_trail_survives_a_restart_of_the_service(new_namespace: NamespaceFactory) -> None:
    ns = await new_namespace()
    svc = unique_service()
    first = [sample(GatePassed, service=svc, version=f"1.0.{i}") for i in range(3)]
    async with ns.service(AUDIT):
        await publish_all(ns, first)
        await until_chained(ns, 3)
    then = [sample(GateFailed, service=svc, version=f"1.1.{i}") for i in range(3)]
    await publish_all(ns, then)  # while the service is down
    async with ns.service(AUDIT):
        await until_chained(ns, 6)
    result = await cli(ns, "verify")
    assert result.returncode == 0 and result.stdout.startswith("6 entries, chain intact")


async def test_no_trail_and_no_postgres_are_one_line(new_namespace: NamespaceFactory) -> None:
    ns = await new_namespace()  # the audit service never ran here
    for args in (("verify",), ("show", "--service", "x"), ("export",)):
        result = await cli(ns, *args)
        assert result.returncode == 1, result
        assert result.stderr.startswith("error: no audit trail in schema "), result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    away = await cli(ns, "verify", LOCKSTEP_PG_DSN="postgresql://lockstep:x@127.0.0.1:1/lockstep")
    assert away.returncode == 2
    assert away.stderr.startswith("error: cannot reach Postgres at 127.0.0.1:1/lockstep (")
    assert "lockstep infra up" in away.stderr and "LOCKSTEP_PG_DSN" in away.stderr
    assert len(away.stderr.strip().splitlines()) == 1 and "Traceback" not in away.stderr
    missing = await cli(ns, "verify", "--file", "/nonexistent/audit.jsonl")
    assert missing.returncode == 2
    assert (
        missing.stderr.strip()
        == "error: cannot read /nonexistent/audit.jsonl: No such file or directory"
    )
