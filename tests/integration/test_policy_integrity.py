"""Forged policy updates on the real Kafka and Postgres (the trust issue): a ``policy.updated``
sent as raw bytes with a made-up sha256, with a sha256 that names another file, or with the
real file and its hash but a model without the staging gate, is dead-lettered by gates and
promotion with the reason, and the model in force stays the real one: a build with no tests
gets no staging ``gate.passed``. The forgeries here are signed with a platform key, so what
is tested is the check behind the signature; an unsigned one, or one signed by another role
(a self-consistent file of the forger's own included), is refused for its signature
(tests/integration/test_signatures.py)."""

from __future__ import annotations

import asyncio
import base64
import json
import textwrap
from typing import Any

import pytest

from events import ArtifactPackaged, GatePassed, InvalidEvent, KafkaRecord, decode, encode, topics
from events.signing import PAYLOAD_TYPE, pae, sign, with_signature
from policy import load_text, policy_updated
from services.gates.app import SPEC as GATES
from services.promotion.app import SPEC as PROMOTION
from shared.bus.dlq import reason_of
from tests.integration.conftest import Namespace, NamespaceFactory, digest, unique_service

pytestmark = pytest.mark.integration

MODEL = textwrap.dedent("""\
    version: 1
    environments:
      - name: dev
      - name: staging
        after: [dev]
    gates:
      staging:
        criteria:
          - evidence: tests
            key: true
    """)
REAL = load_text(MODEL.encode())
WITHOUT_STAGING_GATE = MODEL.split("gates:")[0]  # the forger's file: no gate at all


def forged(ns: Namespace, change: Any) -> KafkaRecord:
    """A policy.updated as the real one is encoded (a fresh id), its content changed by
    ``change`` in the bytes, and signed with a platform key: what a holder of that key could
    send by mistake or on purpose. (Unsigned, it would be refused for that before any of
    this is looked at: tests/integration/test_signatures.py.) The signature is over the event
    as Lockstep reads it, or over the bytes where they do not read as an event."""
    good = encode(policy_updated(REAL, updated_by="mallory"), topic=ns.topic(topics.POLICIES))
    doc = json.loads(good.value or b"")
    change(doc["subject"])
    value = json.dumps(doc).encode()
    record = KafkaRecord(topic=good.topic, key=good.key, value=value, headers=good.headers)
    key = ns.signing_key("platform")
    try:
        header = sign(decode(record).event, key)
    except InvalidEvent:
        signature = key.private_key.sign(pae(PAYLOAD_TYPE, value))
        header = json.dumps({"keyid": key.key_id, "sig": base64.b64encode(signature).decode()})
    return with_signature(record, header)


def made_up_hash(subject: dict[str, Any]) -> None:
    subject["id"] = subject["content"]["sha256"] = "ab" * 32
    subject["content"]["model"]["gates"] = {}


def another_files_text(subject: dict[str, Any]) -> None:  # the real hash, the forger's file
    subject["content"]["text"] = WITHOUT_STAGING_GATE
    subject["content"]["model"]["gates"] = {}


def another_model(subject: dict[str, Any]) -> None:  # the real file and hash, another model
    subject["content"]["model"]["gates"] = {}


def no_text(subject: dict[str, Any]) -> None:  # as a producer before 1.0.0 sent it
    del subject["content"]["text"]
    subject["content"]["model"]["gates"] = {}


async def in_force(ns: Namespace, service: str) -> tuple[str, dict[str, Any]] | None:
    rows = await ns.sql(service, "SELECT sha256, model FROM policy")
    return (rows[0]["sha256"], json.loads(rows[0]["model"])) if rows else None


async def test_forged_policy_updates_are_dead_lettered_and_change_nothing(
    new_namespace: NamespaceFactory,
) -> None:
    ns = await new_namespace()
    service = unique_service()
    forgeries = [made_up_hash, another_files_text, another_model, no_text]
    kept = (REAL.sha256, REAL.model.model_dump(mode="json"))
    async with ns.service(), ns.service(GATES), ns.service(PROMOTION):
        await ns.publish(policy_updated(REAL, updated_by="platform"), signed_as="platform")

        for _ in range(300):  # the real model in force in both, within 30 s
            if [await in_force(ns, s) for s in ("gates", "promotion")] == [kept, kept]:
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail("the real model was not put in force by gates and promotion")
        sent = [forged(ns, change) for change in forgeries]
        await ns.send_raw(sent)

        def dead() -> list[KafkaRecord]:
            """a dead letter from gates and from promotion for each forgery"""
            found = [d for d in ns.log.dead_letters() if d.value in {r.value for r in sent}]
            return found if len(found) == 2 * len(sent) else []

        letters = await ns.log.wait_for(dead)
        # The model in force is the real one, after every forgery (all on the model's one
        # partition, handled in order before the build below is looked at).
        for s in ("gates", "promotion"):
            assert await in_force(ns, s) == kept

        await ns.publish(
            ArtifactPackaged.build(
                service=service, version="1.0.0", digest=digest(service), commit="c"
            )
        )

        def dev_passed() -> list[GatePassed]:
            """the build's gate.passed for dev (dev has no gate)"""
            return [
                e
                for e in ns.log.events(GatePassed)
                if isinstance(e, GatePassed) and e.subject.content.service == service
            ]

        [dev] = await ns.log.wait_for(dev_passed)
        await asyncio.sleep(1.0)  # a staging decision would have come with dev's
        passed = dev_passed()

    assert dev.subject.content.environment == "dev"
    assert dev.subject.content.policy_sha256 == REAL.sha256
    assert [p.subject.content.environment for p in passed] == ["dev"]  # no tests: no staging

    why: dict[tuple[str, bytes | None], dict[str, str]] = {}
    for letter in letters:
        meta = reason_of(letter)
        why[(meta["group"], letter.value)] = meta
    for group in (ns.settings.group_id("gates"), ns.settings.group_id("promotion")):
        hashed, swapped, other, textless = (why[(group, r.value)] for r in sent)
        # a sha256 that is not the text's hash: refused as the event is read, not retried
        for meta in (hashed, swapped):
            assert meta["stage"] == "decode" and meta["attempts"] == "1"
            assert "is not the hash of the text carried" in meta["error"]
        assert f"its bytes hash to {REAL.sha256}" in hashed["error"]
        # the real file and hash with another model: refused by keep (retried, as any failure)
        assert other["stage"] == "handle"
        assert "PolicyRefused" in other["error"]
        assert "not the one its text (the file sha256 names) reads as" in other["error"]
        assert "differ at gates.staging" in other["error"]
        assert textless["stage"] == "decode"
        assert "subject.content.text: is required but missing" in textless["error"]
