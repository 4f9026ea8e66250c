"""Signed decisions on the real Kafka and Postgres (issue 11): what an attacker who can write to
the broker sends is refused by whoever would act on it, and nothing is deployed or changed.
Each refusal is a dead letter with the reason (stage ``signature``) and a ``signature.refused``
event on the ``security`` topic, which the audit service chains. Each case has a positive
control beside it: the same decision, properly signed, is acted on.

- the deployer SDK: a promotion unsigned, signed by a gates key, altered (another digest) or
  replayed for another environment;
- promotion: a forged gate.passed; gates and promotion: a forged policy.updated; flags: a
  forged flagchange.requested; gates: alice's key approving as bob;
- keys: a rotated key verifies what it signed before its retirement and not after; a revoked
  key verifies nothing."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from events import (
    ApprovalUpdated,
    CDEvent,
    FlagChangeRequested,
    GatePassed,
    HoldReleased,
    KafkaRecord,
    PolicyUpdated,
    PromotionApproved,
    SignatureRefusal,
    decode,
    encode,
    topics,
)
from events.kafka import reason_of
from events.signing import Signer, sign, signature_of, verify, with_signature
from events.testing import sample
from policy import load_text, policy_updated
from services.audit.app import SPEC as AUDIT
from services.deployer import AgentConfig, Deployer, DeployerAgent, Deployment
from services.flags.app import SPEC as FLAGS
from services.flags.changes import Change, apply_now
from services.gates.app import SPEC as GATES
from services.promotion.app import SPEC as PROMOTION
from shared.bus import Publisher
from tests.integration.conftest import REPO, Namespace, NamespaceFactory, digest, unique_service

MODEL = load_text(b"version: 1\nenvironments:\n  - name: dev\n")
OTHER_MODEL = load_text(b"version: 1\nenvironments:\n  - name: dev\n  - name: anywhere\n")


def signed(ns: Namespace, event: CDEvent, role: str, name: str | None = None) -> KafkaRecord:
    """``event`` as Lockstep encodes it, signed with the namespace's key of ``role`` (whatever
    the role may sign: a forger holding some key)."""
    record = encode(event, topic=ns.topic(event.TOPIC))
    return with_signature(record, sign(event, ns.signing_key(role, name)))


def unsigned(ns: Namespace, event: CDEvent) -> KafkaRecord:
    return encode(event, topic=ns.topic(event.TOPIC))


def rewritten(record: KafkaRecord, change: Any) -> KafkaRecord:
    """``record`` with its value changed by ``change`` (on the parsed JSON), headers and
    signature kept: an event altered after it was signed."""
    document = json.loads(record.value or b"")
    change(document)
    value = json.dumps(document).encode()
    return KafkaRecord(topic=record.topic, key=record.key, value=value, headers=record.headers)


def refusals(ns: Namespace, event_id: str, service: str) -> list[SignatureRefusal]:
    return [
        e
        for e in ns.log.events(SignatureRefusal)
        if isinstance(e, SignatureRefusal)
        and e.subject.content.event_id == event_id
        and e.subject.content.service == service
    ]


def letters(ns: Namespace, event_id: str, group: str) -> list[KafkaRecord]:
    return [
        r
        for r in ns.log.dead_letters()
        if r.header("ce_id") == event_id and r.header("lockstep.dlq.group") == group
    ]


async def assert_refused(
    ns: Namespace, event: CDEvent, *, service: str, group: str, reason: str, key_id: str | None
) -> None:
    """``service`` dead-lettered ``event`` with ``signature <reason>:`` and said so on the
    security topic, naming the event, its claimed source, the key and where it was."""

    def both() -> tuple[list[KafkaRecord], list[SignatureRefusal]] | None:
        """the dead letter and the security event of the refusal"""
        found = letters(ns, event.id, group), refusals(ns, event.id, service)
        return found if all(found) else None

    (letter, *more), (report, *again) = await ns.log.wait_for(both, 45)
    meta = reason_of(letter)
    assert meta["stage"] == "signature" and meta["attempts"] == "1", meta
    assert meta["error"].startswith(f"signature {reason}: "), meta["error"]
    assert event.id in meta["error"]
    c = report.subject.content
    assert (c.reason, c.event_id, c.event_type, c.claimed_source, c.key_id) == (
        reason, event.id, event.context.type, event.source, key_id,
    )  # fmt: skip
    assert (c.topic, str(c.partition), str(c.offset)) == (
        meta["topic"], meta["partition"], meta["offset"],
    )  # fmt: skip
    assert c.topic == ns.topic(event.TOPIC)
    assert report.TOPIC == topics.SECURITY
    assert not more and not again  # once each


# --- the deployer SDK ---------------------------------------------------------------------------


class Recorder(Deployer):
    def __init__(self) -> None:
        self.deployed: list[tuple[str, str, str]] = []

    async def deploy(self, deployment: Deployment) -> None:
        self.deployed.append((deployment.version, deployment.digest, deployment.environment))


@asynccontextmanager
async def agent(ns: Namespace, tmp_path: Path, environments: list[str]) -> AsyncIterator[Any]:
    config = AgentConfig.from_settings(ns.settings, agent="signed", state_dir=tmp_path)
    assert config.trust_store == ns.settings.key_dir / "trust.json"
    target = Recorder()
    running = DeployerAgent(target, config, environments=environments)
    stop = asyncio.Event()
    task = asyncio.create_task(running.run(stop))
    try:
        yield target, running
    finally:
        stop.set()
        await task


@pytest.mark.timeout(180)
async def test_the_deployer_deploys_only_promotions_the_promotion_service_signed(
    new_namespace: NamespaceFactory, tmp_path: Path
) -> None:
    ns = await new_namespace()
    service = unique_service()

    def promotion(version: str, environment: str = "staging") -> PromotionApproved:
        made = sample(PromotionApproved, service=service, version=version,
                      digest=digest(service + version), environment=environment)  # fmt: skip
        assert isinstance(made, PromotionApproved)
        return made

    unsigned_one = promotion("1.0.0")
    by_gates = promotion("1.0.1")
    good_for_prod = promotion("1.0.2", "prod")
    made_up = "sha256:" + "6" * 64

    def another_digest(doc: dict[str, Any]) -> None:  # and its artifact id, to agree
        content = doc["subject"]["content"]
        old = content["digest"]
        content["digest"] = made_up
        content["artifactId"] = content["artifactId"].replace(old, made_up)

    altered = promotion("1.0.3")
    replayed = promotion("1.0.4", "prod")  # signed for prod, sent as staging

    def to_staging(doc: dict[str, Any]) -> None:
        doc["subject"]["content"]["environment"] = "staging"

    good = promotion("2.0.0")
    gates_key = ns.signing_key("gates").key_id
    promotion_key = ns.signing_key("promotion").key_id
    async with agent(ns, tmp_path, ["staging"]) as (target, running):
        await ns.send_raw(
            [
                unsigned(ns, unsigned_one),
                signed(ns, by_gates, "gates"),
                rewritten(signed(ns, altered, "promotion"), another_digest),
                rewritten(signed(ns, replayed, "promotion"), to_staging),
                signed(ns, good_for_prod, "promotion"),  # another environment: not this agent's
            ]
        )
        await ns.publish(good, signed_as="promotion")  # same key: after all of them

        def deployed_good() -> bool:
            """the signed promotion deployed"""
            return ("2.0.0", digest(service + "2.0.0"), "staging") in target.deployed

        await ns.log.wait_for(deployed_good, 45)
        group = running.config.group_id
        who = "deployer/signed"
        await assert_refused(ns, unsigned_one, service=who, group=group, reason="unsigned",
                             key_id=None)  # fmt: skip
        await assert_refused(ns, by_gates, service=who, group=group, reason="role-not-allowed",
                             key_id=gates_key)  # fmt: skip
        await assert_refused(ns, altered, service=who, group=group, reason="altered",
                             key_id=promotion_key)  # fmt: skip
        await assert_refused(ns, replayed, service=who, group=group, reason="altered",
                             key_id=promotion_key)  # fmt: skip
        assert target.deployed == [("2.0.0", digest(service + "2.0.0"), "staging")]
        assert running.refused == 4
    assert not refusals(ns, good_for_prod.id, who) and not refusals(ns, good.id, who)
    reported = [r for r in ns.log.records if r.topic == ns.topic(topics.DEPLOYMENTS)]
    assert len(reported) == 1  # one report: the good promotion's


# --- the services ------------------------------------------------------------------------------


def promoted(ns: Namespace, service: str) -> list[PromotionApproved]:
    return [
        e
        for e in ns.log.events(PromotionApproved)
        if isinstance(e, PromotionApproved) and e.subject.content.service == service
    ]


async def model_in_force(ns: Namespace, service: str) -> str | None:
    rows = await ns.sql(service, "SELECT sha256 FROM policy")
    return str(rows[0]["sha256"]) if rows else None


async def until_in_force(ns: Namespace, sha256: str, *services: str) -> None:
    for _ in range(300):
        if [await model_in_force(ns, s) for s in services] == [sha256] * len(services):
            return
        await asyncio.sleep(0.1)
    pytest.fail(f"model {sha256[:12]} not in force in {', '.join(services)} within 30 s")


@pytest.mark.timeout(180)
async def test_a_forged_gate_decision_is_refused_by_promotion_and_chained_by_audit(
    new_namespace: NamespaceFactory,
) -> None:
    ns = await new_namespace()
    forged_for, real = unique_service(), unique_service()
    never_built = sample(GatePassed, service=forged_for, version="6.6.6",
                         digest="sha256:" + "6" * 64, environment="dev")  # fmt: skip
    by_promotion = sample(GatePassed, service=forged_for, version="6.6.7", environment="dev")
    good = sample(GatePassed, service=real, version="1.0.0", environment="dev")
    async with ns.service(PROMOTION), ns.service(AUDIT):
        await ns.publish(policy_updated(MODEL, updated_by="platform"), signed_as="platform")
        await until_in_force(ns, MODEL.sha256, "promotion")
        await ns.send_raw([unsigned(ns, never_built), signed(ns, by_promotion, "promotion")])
        await ns.publish(good, signed_as="gates")
        await ns.log.wait_for(lambda: promoted(ns, real), 45)
        group = ns.settings.group_id("promotion")
        await assert_refused(ns, never_built, service="promotion", group=group,
                             reason="unsigned", key_id=None)  # fmt: skip
        await assert_refused(ns, by_promotion, service="promotion", group=group,
                             reason="role-not-allowed",
                             key_id=ns.signing_key("promotion").key_id)  # fmt: skip
        await asyncio.sleep(0.5)
        assert promoted(ns, forged_for) == []
        candidates = await ns.sql(
            "promotion", "SELECT count(*) AS n FROM candidates WHERE service = $1", forged_for
        )
        assert candidates[0]["n"] == 0

        async def chained() -> list[Any]:
            return await ns.sql(
                "audit", "SELECT actor, actor_kind, action, event_type FROM entries "
                "WHERE action LIKE 'signature.refused.%' ORDER BY seq",
            )  # fmt: skip

        for _ in range(300):
            if len(await chained()) >= 2:
                break
            await asyncio.sleep(0.1)
        rows = await chained()
    # the audit service refuses the forgeries too (it chains only what verifies), so each
    # forgery is refused by both, and both refusals are chained
    assert sorted((r["actor"], r["action"]) for r in rows) == sorted(
        [
            ("lockstep/promotion", "signature.refused.unsigned"),
            ("lockstep/promotion", "signature.refused.role-not-allowed"),
            ("lockstep/audit", "signature.refused.unsigned"),
            ("lockstep/audit", "signature.refused.role-not-allowed"),
        ]
    )
    assert {r["event_type"] for r in rows} == {SignatureRefusal.TYPE}
    assert {r["actor_kind"] for r in rows} == {"service"}


def retyped(record: KafkaRecord, event_type: str) -> KafkaRecord:
    """``record`` sent as another version of its type (``ce_type`` and ``context.type``)."""
    document = json.loads(record.value or b"")
    document["context"]["type"] = event_type
    headers = tuple((k, v) for k, v in record.headers if k != "ce_type")
    return KafkaRecord(
        topic=record.topic, key=record.key, value=json.dumps(document).encode(),
        headers=(*headers, ("ce_type", event_type.encode())),
    )  # fmt: skip


@pytest.mark.timeout(180)
async def test_a_decision_sent_as_another_version_of_its_type_is_still_a_decision(
    new_namespace: NamespaceFactory,
) -> None:
    """A reader takes any minor or patch version of a type it knows with the model of that
    type, so ``gate.passed.0.9.9`` is a gate decision and must be signed like one. Sent as
    the attacker the issue names: a person's login, which may write the gates topic."""
    ns = await new_namespace()
    forged_for, real = unique_service(), unique_service()
    gate = sample(GatePassed, service=forged_for, version="6.6.6", environment="dev")
    approval = sample(ApprovalUpdated, service=forged_for, version="6.6.6", environment="dev")
    future_gate = GatePassed.TYPE.rsplit(".", 3)[0] + ".0.9.9"
    future_approval = ApprovalUpdated.TYPE.rsplit(".", 3)[0] + ".0.1.7"
    async with ns.service(PROMOTION), ns.service(GATES):
        await ns.publish(policy_updated(MODEL, updated_by="platform"), signed_as="platform")
        await until_in_force(ns, MODEL.sha256, "promotion", "gates")
        async with Publisher(ns.settings.as_principal("person")) as person:
            await person.send_raw(
                [
                    retyped(unsigned(ns, gate), future_gate),
                    retyped(unsigned(ns, approval), future_approval),
                ]
            )
        await ns.publish(sample(GatePassed, service=real, environment="dev"), signed_as="gates")
        await ns.log.wait_for(lambda: promoted(ns, real), 45)
        for event, service in ((gate, "promotion"), (approval, "gates")):

            def refused(e: CDEvent = event, s: str = service) -> list[SignatureRefusal]:
                """the refusal of the retyped decision"""
                return refusals(ns, e.id, s)

            [report] = await ns.log.wait_for(refused, 45)
            assert report.subject.content.reason == "unsigned"
        approvals = await ns.sql(
            "gates", "SELECT count(*) AS n FROM approvals WHERE service = $1", forged_for
        )
    assert promoted(ns, forged_for) == []
    assert approvals[0]["n"] == 0


@pytest.mark.timeout(180)
async def test_a_forged_policy_update_leaves_the_model_in_force_in_gates_and_promotion(
    new_namespace: NamespaceFactory,
) -> None:
    ns = await new_namespace()
    async with ns.service(GATES), ns.service(PROMOTION):
        await ns.publish(policy_updated(MODEL, updated_by="platform"), signed_as="platform")
        await until_in_force(ns, MODEL.sha256, "gates", "promotion")
        # self-consistent files of the forger's own: their hashes are right, the signers wrong
        nobody = policy_updated(OTHER_MODEL, updated_by="mallory")
        by_gates = policy_updated(OTHER_MODEL, updated_by="mallory")
        await ns.send_raw([unsigned(ns, nobody), signed(ns, by_gates, "gates")])
        for service in ("gates", "promotion"):
            group = ns.settings.group_id(service)
            await assert_refused(ns, nobody, service=service, group=group, reason="unsigned",
                                 key_id=None)  # fmt: skip
            await assert_refused(ns, by_gates, service=service, group=group,
                                 reason="role-not-allowed",
                                 key_id=ns.signing_key("gates").key_id)  # fmt: skip
        for service in ("gates", "promotion"):
            assert await model_in_force(ns, service) == MODEL.sha256
        # the platform's next model is put in force: nothing stuck behind the forgeries
        await ns.publish(policy_updated(OTHER_MODEL, updated_by="platform"), signed_as="platform")
        await until_in_force(ns, OTHER_MODEL.sha256, "gates", "promotion")
    assert len(ns.log.events(PolicyUpdated)) == 4


KILL = {
    "state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": "on",
    "metadata": {"type": "kill-switch", "owner": "platform"},
}  # fmt: skip


@pytest.mark.timeout(180)
async def test_a_forged_flag_change_is_refused_and_the_flag_stays(
    new_namespace: NamespaceFactory,
) -> None:
    ns = await new_namespace(flags_http_port=0, periodic_s=3600.0)
    key = unique_service() + "-kill"
    async with ns.service(FLAGS) as running:
        assert running.pool is not None and running.provider is not None
        await apply_now(
            running.pool, ns.settings,
            Change("prod", key, "set", "platform", "seed", "cli", definition=KILL),
            tracer=running.provider.get_tracer("test"),
        )  # fmt: skip

        def request(by: str) -> FlagChangeRequested:
            return FlagChangeRequested.build(
                environment="prod", flag_key=key, action="disable", requested_by=by,
                reason="forged", source="lockstep/incidents",
            )  # fmt: skip

        forged, by_gates, by_admin = request("mallory"), request("mallory"), request("admin")
        await ns.send_raw([unsigned(ns, forged), signed(ns, by_gates, "gates")])
        group = ns.settings.group_id("flags")
        await assert_refused(ns, forged, service="flags", group=group, reason="unsigned",
                             key_id=None)  # fmt: skip
        await assert_refused(ns, by_gates, service="flags", group=group,
                             reason="role-not-allowed",
                             key_id=ns.signing_key("gates").key_id)  # fmt: skip

        async def changes() -> list[Any]:
            return await ns.sql(
                "flags", "SELECT version, action, request_id FROM flag_changes "
                "WHERE environment = 'prod' AND flag_key = $1 ORDER BY version", key,
            )  # fmt: skip

        assert [(r["action"], r["request_id"]) for r in await changes()] == [("set", None)]
        # an administrator's change on Kafka, signed with an admin key, is applied
        await ns.send_raw([signed(ns, by_admin, "admin")])
        for _ in range(300):
            if len(await changes()) == 2:
                break
            await asyncio.sleep(0.1)
        assert [(r["action"], r["request_id"]) for r in await changes()] == [
            ("set", None), ("disable", by_admin.id),
        ]  # fmt: skip


@pytest.mark.timeout(180)
async def test_an_approval_signed_with_another_persons_key_is_refused(
    new_namespace: NamespaceFactory,
) -> None:
    ns = await new_namespace()
    service = unique_service()
    as_bob = sample(ApprovalUpdated, service=service, environment="prod", by="bob")
    as_alice = sample(ApprovalUpdated, service=service, environment="prod", by="alice")
    async with ns.service(GATES):
        await ns.send_raw([signed(ns, as_bob, "person", "alice")])
        await ns.publish(as_alice, signed_as="person")
        await assert_refused(ns, as_bob, service="gates", group=ns.settings.group_id("gates"),
                             reason="impersonation",
                             key_id=ns.signing_key("person", "alice").key_id)  # fmt: skip

        async def outcome(event: CDEvent) -> list[str]:
            rows = await ns.sql("gates", "SELECT outcome FROM inbox WHERE id = $1", event.id)
            return [r["outcome"] for r in rows]

        for _ in range(300):
            if await outcome(as_alice) == ["handled"]:
                break
            await asyncio.sleep(0.1)
        assert await outcome(as_alice) == ["handled"]  # alice's own approval is taken in
        assert await outcome(as_bob) == []  # bob's never reached the handler
    [letter] = letters(ns, as_bob.id, ns.settings.group_id("gates"))
    assert "claims to be by 'bob'" in (letter.header("lockstep.dlq.error") or "")


# --- keys: rotation and revocation -------------------------------------------------------------


@pytest.mark.timeout(180)
async def test_a_rotated_key_verifies_what_it_signed_before_and_a_revoked_key_nothing(
    new_namespace: NamespaceFactory,
) -> None:
    """Without restarting promotion: it reads the trust store again when the file changes."""
    ns = await new_namespace()
    before, after, revoked_one, fresh = (unique_service() for _ in range(4))
    old = ns.signing_key("gates")
    async with ns.service(PROMOTION):
        await ns.publish(policy_updated(MODEL, updated_by="platform"), signed_as="platform")
        await until_in_force(ns, MODEL.sha256, "promotion")
        signed_before = sample(GatePassed, service=before, version="1.0.0", environment="dev")
        ns.keys.create("gates")  # rotation: the new key, then the old one retired
        ns.keys.retire(old.key_id, now=datetime.now(UTC))
        new = ns.signing_key("gates")
        assert new.key_id != old.key_id
        await asyncio.sleep(0.01)
        signed_after = sample(GatePassed, service=after, version="1.0.0", environment="dev")
        leaked = ns.keys.create("gates", now=datetime.now(UTC) + timedelta(seconds=1))
        by_leaked = sample(GatePassed, service=revoked_one, version="1.0.0", environment="dev")
        leaked_record = signed(ns, by_leaked, "gates")  # the newest key signs it
        ns.keys.revoke(leaked.key_id)
        await asyncio.sleep(1.2)  # the service looks at the file at most once a second
        with_old = [
            with_signature(encode(e, topic=ns.topic(topics.GATES)), sign(e, old))
            for e in (signed_before, signed_after)
        ]
        await ns.send_raw([*with_old, leaked_record])
        await ns.publish(
            sample(GatePassed, service=fresh, version="1.0.0", environment="dev"),
            signed_as="gates",
        )
        await ns.log.wait_for(lambda: promoted(ns, before) and promoted(ns, fresh), 45)
        group = ns.settings.group_id("promotion")
        await assert_refused(ns, signed_after, service="promotion", group=group,
                             reason="retired", key_id=old.key_id)  # fmt: skip
        await assert_refused(ns, by_leaked, service="promotion", group=group,
                             reason="revoked", key_id=leaked.key_id)  # fmt: skip
        assert promoted(ns, after) == [] and promoted(ns, revoked_one) == []


# --- the command line signs what people and the platform decide --------------------------------


def lockstep(ns: Namespace, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        capture_output=True, text=True, cwd=REPO, timeout=60, check=False,
        env={**os.environ, "LOCKSTEP_NAMESPACE": ns.settings.namespace,
             "LOCKSTEP_KEY_DIR": str(ns.settings.key_dir), "LOCKSTEP_TRACE_DIR": "",
             "LOCKSTEP_KAFKA_BOOTSTRAP": ns.settings.kafka_bootstrap, "COLUMNS": "400", **env},
    )  # fmt: skip


def on_log(ns: Namespace, event_type: str, service: str) -> list[KafkaRecord]:
    return [
        r
        for r in ns.log.records
        if r.header("ce_type") == event_type and service.encode() in (r.value or b"")
    ]


async def verified(ns: Namespace, event_type: str, service: str) -> Signer:
    """The signer of the one ``event_type`` about ``service`` on the log, as verified."""
    [record] = await ns.log.wait_for(lambda: on_log(ns, event_type, service), 30)
    return verify(decode(record).event, signature_of(record), ns.keys.trust())


@pytest.mark.timeout(120)
async def test_the_command_line_signs_approvals_as_the_person_and_models_as_the_platform(
    new_namespace: NamespaceFactory, tmp_path: Path
) -> None:
    ns = await new_namespace()
    service = unique_service()
    approve = ("approve", f"{service}@1.0.0", "--env", "prod")
    done = await asyncio.to_thread(lockstep, ns, *approve)  # alice's is the only person key
    assert done.returncode == 0, done.stderr
    signer = await verified(ns, ApprovalUpdated.TYPE, service)
    assert (signer.role, signer.name) == ("person", "alice")
    # alice cannot approve as bob: refused before anything is sent, in one line
    as_bob = await asyncio.to_thread(lockstep, ns, *approve, "--by", "bob")
    assert as_bob.returncode == 2 and len(as_bob.stderr.strip().splitlines()) == 1
    assert "--by bob, but the person key here is alice's" in as_bob.stderr
    # with several people's keys, LOCKSTEP_PERSON says whose
    ns.signing_key("person", "carol")
    several = await asyncio.to_thread(lockstep, ns, "reject", f"{service}@1.0.1", "--env", "prod")
    assert several.returncode == 2 and "LOCKSTEP_PERSON" in several.stderr
    hold = ("hold", "release", "--service", service, "--env", "prod", "--reason", "fixed")
    released = await asyncio.to_thread(lockstep, ns, *hold, LOCKSTEP_PERSON="carol")
    assert released.returncode == 0, released.stderr
    assert (await verified(ns, HoldReleased.TYPE, service)).name == "carol"
    # a release model goes out signed by the platform key
    path = tmp_path / "model.yaml"
    path.write_text(f"version: 1\nenvironments:\n  - name: {service}\n", encoding="utf-8")
    published = await asyncio.to_thread(lockstep, ns, "model", "publish", str(path), "--by", "me")
    assert published.returncode == 0, published.stderr
    assert (await verified(ns, PolicyUpdated.TYPE, service)).role == "platform"
    # no key: one line saying what to do, nothing sent
    empty = tmp_path / "no-keys"
    nothing = await asyncio.to_thread(
        lockstep, ns, "model", "publish", str(path), "--by", "me", LOCKSTEP_KEY_DIR=str(empty)
    )
    assert nothing.returncode == 2 and len(nothing.stderr.strip().splitlines()) == 1
    assert "lockstep keys init" in nothing.stderr


@pytest.mark.timeout(180)
async def test_a_running_service_signs_with_its_roles_new_key_once_the_old_is_retired(
    new_namespace: NamespaceFactory,
) -> None:
    """Rotation of an emitter's own key, without a restart: after `keys create` and `keys
    retire` of the old one, promotion's next decision is signed with the new key (were it
    still the old one, every deployer would refuse it as retired)."""
    ns = await new_namespace()
    first, second = unique_service(), unique_service()
    old = ns.signing_key("promotion")
    async with ns.service(PROMOTION):
        await ns.publish(policy_updated(MODEL, updated_by="platform"), signed_as="platform")
        await until_in_force(ns, MODEL.sha256, "promotion")
        await ns.publish(sample(GatePassed, service=first, environment="dev"), signed_as="gates")
        [before] = await ns.log.wait_for(lambda: promoted(ns, first), 45)
        ns.keys.create("promotion")
        ns.keys.retire(old.key_id, now=datetime.now(UTC))
        new = ns.signing_key("promotion")
        assert new.key_id != old.key_id
        await asyncio.sleep(1.5)  # the service looks at the trust store at most once a second
        await ns.publish(sample(GatePassed, service=second, environment="dev"), signed_as="gates")
        [after] = await ns.log.wait_for(lambda: promoted(ns, second), 45)

    def header_of(event: CDEvent) -> str | None:
        [record] = [r for r in ns.log.records if r.header("ce_id") == event.id]
        return signature_of(record)

    assert json.loads(header_of(before) or "{}")["keyid"] == old.key_id
    assert json.loads(header_of(after) or "{}")["keyid"] == new.key_id
    trust = ns.keys.trust()
    assert verify(after, header_of(after), trust) == Signer(new.key_id, "promotion", None)
