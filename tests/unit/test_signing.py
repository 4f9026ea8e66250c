"""Signed decisions (events.signing): a signature over the event's CloudEvents attributes and
data verifies after the trip through Kafka's encoding, and every way of getting it wrong is
refused with its reason: unsigned, malformed, unknown key, altered, role not allowed, retired.
Rotation: two keys of a role valid at once; a retired key still verifies what it signed before."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from events import (
    CDEvent,
    GatePassed,
    PolicyUpdated,
    PromotionApproved,
    ServiceDeployed,
    decode,
    encode,
)
from events._registry import model_for
from events.signing import (
    PAYLOAD_TYPE,
    REFUSALS,
    SIGNATURE_HEADER,
    SIGNERS,
    KeyStore,
    KeyStoreError,
    NoSigningKey,
    SignatureRefused,
    TrustStore,
    claimed_person,
    key_id,
    pae,
    sign,
    signature_of,
    signed_bytes,
    verify,
    with_signature,
)
from events.testing import sample, variants

NOW = datetime.now(UTC)


@pytest.fixture
def keys(tmp_path: Path) -> KeyStore:
    return KeyStore(tmp_path / "keys")


def refused(event: CDEvent, header: str | bytes | None, trust: TrustStore, **kw: Any) -> str:
    with pytest.raises(SignatureRefused) as caught:
        verify(event, header, trust, **kw)
    assert caught.value.reason in REFUSALS
    assert str(caught.value) == caught.value.detail and caught.value.detail
    return caught.value.reason


def through_kafka(event: CDEvent, header: str) -> tuple[CDEvent, str | None]:
    record = with_signature(encode(event, topic="t.promotions"), header)
    return decode(record).event, signature_of(record)


def altered(event: CDEvent, path: tuple[str, ...], value: Any) -> CDEvent:
    """``event`` with one field of its JSON changed, read back as Lockstep reads it."""
    document = json.loads(event.to_json())
    node = document
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return type(event).model_validate(document)


# --- the envelope ------------------------------------------------------------------------------


def test_a_promotion_signed_verifies_after_encoding_and_decoding(keys: KeyStore) -> None:
    created = keys.create("promotion")
    event = sample(PromotionApproved, environment="prod-eu")
    header = sign(event, keys.signing_key("promotion"))
    read, carried = through_kafka(event, header)
    assert carried == header
    assert verify(read, carried, keys.trust()).key_id == created.key_id
    assert verify(read, carried, keys.trust()).role == "promotion"


def test_the_header_is_compact_json_with_a_key_id_and_a_base64_signature(keys: KeyStore) -> None:
    keys.create("gates")
    header = sign(sample(GatePassed), keys.signing_key("gates"))
    assert " " not in header
    parsed = json.loads(header)
    assert set(parsed) == {"keyid", "sig"}
    assert len(base64.b64decode(parsed["sig"], validate=True)) == 64
    assert parsed["keyid"].startswith("ed25519:") and len(parsed["keyid"]) == 8 + 16


def test_the_signed_bytes_are_dsse_pae_over_the_canonical_json() -> None:
    assert pae("t", b"hello") == b"DSSEv1 1 t 5 hello"
    assert pae("", b"") == b"DSSEv1 0  0 "
    event = sample(PromotionApproved)
    body = event.to_json()
    assert signed_bytes(event) == b"DSSEv1 %d %s %d %s" % (
        len(PAYLOAD_TYPE), PAYLOAD_TYPE.encode(), len(body), body,
    )  # fmt: skip
    # for a record Lockstep wrote, the body is the record's value: another language verifies it
    assert encode(event, topic="t").value == body


def test_a_key_id_is_the_sha256_of_the_raw_public_key(keys: KeyStore) -> None:
    created = keys.create("platform")
    assert created.key_id == "ed25519:" + hashlib.sha256(created.public_key).hexdigest()[:16]
    private = keys.signing_key("platform").private_key
    assert key_id(private.public_key()) == created.key_id


@pytest.mark.parametrize("event_type", sorted(SIGNERS))
def test_every_decision_of_every_shape_verifies_after_the_trip(
    keys: KeyStore, event_type: str
) -> None:
    model = model_for(event_type)
    assert model is not None
    (role,) = sorted(SIGNERS[event_type])[:1]
    for event in variants(model):
        person = claimed_person(event)  # a person's key is of the person the event names
        if keys.trust().of_role(role, at=NOW) == [] or role == "person":
            keys.create(role, name=person)
        key = keys.signing_key(role, name=person)
        read, carried = through_kafka(event, sign(event, key))
        signer = verify(read, carried, keys.trust())
        assert (signer.role, signer.name) == (role, person)


# --- the refusals ------------------------------------------------------------------------------


def test_an_unsigned_event_is_refused(keys: KeyStore) -> None:
    keys.create("promotion")
    event = sample(PromotionApproved)
    for header in (None, "", "  ", b""):
        assert refused(event, header, keys.trust()) == "unsigned"
    read, carried = decode(encode(event, topic="t")).event, signature_of(encode(event, topic="t"))
    assert carried is None
    assert refused(read, carried, keys.trust()) == "unsigned"


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("subject", "content", "environment"), "prod-us"),  # replayed for another environment
        (("subject", "content", "digest"), "sha256:" + "6" * 64),
        (("subject", "content", "version"), "9.9.9"),
        (("subject", "content", "rollback"), True),
        (("context", "source"), "evil/producer"),
        (("context", "id"), "another-id"),
        (("context", "timestamp"), "2026-01-01T00:00:00Z"),
    ],
)
def test_altered_data_or_attributes_are_refused(
    keys: KeyStore, path: tuple[str, ...], value: Any
) -> None:
    keys.create("promotion")
    event = sample(PromotionApproved, environment="staging")
    header = sign(event, keys.signing_key("promotion"))
    changed = altered(event, path, value)
    assert changed != event
    assert refused(changed, header, keys.trust()) == "altered"


def test_a_signature_moved_to_another_type_is_refused(keys: KeyStore) -> None:
    # the same content under another type (gate.passed signed, read as gate.failed)
    keys.create("gates")
    passed = sample(GatePassed)
    header = sign(passed, keys.signing_key("gates"))
    document = json.loads(passed.to_json())
    document["context"]["type"] = "dev.cdeventsx.lockstep-gate.failed.0.1.0"
    as_other = model_for(document["context"]["type"])
    assert as_other is not None
    assert refused(as_other.model_validate(document), header, keys.trust()) == "altered"


def test_a_signature_of_another_event_is_refused(keys: KeyStore) -> None:
    keys.create("promotion")
    key = keys.signing_key("promotion")
    header = sign(sample(PromotionApproved), key)
    assert refused(sample(PromotionApproved), header, keys.trust()) == "altered"


def test_a_key_the_store_does_not_know_is_refused(tmp_path: Path, keys: KeyStore) -> None:
    keys.create("promotion")
    stranger = KeyStore(tmp_path / "elsewhere")
    stranger.create("promotion")
    event = sample(PromotionApproved)
    header = sign(event, stranger.signing_key("promotion"))
    assert refused(event, header, keys.trust()) == "unknown-key"
    assert refused(event, header, TrustStore()) == "unknown-key"


def test_a_key_whose_role_may_not_sign_the_type_is_refused(keys: KeyStore) -> None:
    keys.create("gates")
    keys.create("promotion")
    gates = keys.signing_key("gates")
    promotion = sample(PromotionApproved)
    header = sign(promotion, gates)  # a gates key forging a promotion
    with pytest.raises(SignatureRefused, match=r"role 'gates'.*promotion") as caught:
        verify(promotion, header, keys.trust())
    assert caught.value.reason == "role-not-allowed"
    gate = sample(GatePassed)
    assert verify(gate, sign(gate, gates), keys.trust()).role == "gates"
    # the caller may narrow (or widen) the roles
    assert refused(gate, sign(gate, gates), keys.trust(), allowed_roles={"platform"}) == (
        "role-not-allowed"
    )
    # a type that is no decision has no signers by default
    deployed = sample(ServiceDeployed)
    assert refused(deployed, sign(deployed, gates), keys.trust()) == "role-not-allowed"
    assert verify(deployed, sign(deployed, gates), keys.trust(), allowed_roles={"gates"})


def test_a_retired_key_is_refused_for_a_new_event_and_still_verifies_an_old_one(
    keys: KeyStore,
) -> None:
    created = keys.create("platform", now=NOW - timedelta(days=30))
    key = keys.signing_key("platform")
    old = sample(PolicyUpdated)
    old = altered(old, ("context", "timestamp"), (NOW - timedelta(hours=2)).isoformat())
    old_header = sign(old, key)
    keys.retire(created.key_id, now=NOW - timedelta(hours=1))
    new = sample(PolicyUpdated)
    new_header = sign(new, key)  # someone still holding the retired key
    assert verify(old, old_header, keys.trust()).key_id == created.key_id
    with pytest.raises(SignatureRefused, match="retired at") as caught:
        verify(new, new_header, keys.trust())
    assert caught.value.reason == "retired"
    with pytest.raises(NoSigningKey, match="lockstep keys create --role platform"):
        keys.signing_key("platform")


@pytest.mark.parametrize(
    "header",
    [
        "not json",
        "[1, 2]",
        '{"sig": "AAAA"}',
        '{"keyid": "rsa:0123456789abcdef", "sig": "AAAA"}',
        '{"keyid": "ed25519:0123456789ABCDEF", "sig": "AAAA"}',
        '{"keyid": "ed25519:0123456789abcdef"}',
        '{"keyid": "ed25519:0123456789abcdef", "sig": 7}',
        '{"keyid": "ed25519:0123456789abcdef", "sig": "not base64!"}',
        '{"keyid": "ed25519:0123456789abcdef", "sig": "AAAA"}',  # 3 bytes, not 64
        '{"keyid": "ed25519:0123456789abcdef", "sig": "' + "A" * 600 + '"}',
        b"\xff\xfe",
    ],
)
def test_a_malformed_header_is_refused(keys: KeyStore, header: str | bytes) -> None:
    keys.create("promotion")
    assert refused(sample(PromotionApproved), header, keys.trust()) == "malformed"


def test_a_signature_header_given_twice_differently_is_malformed(keys: KeyStore) -> None:
    keys.create("promotion")
    event = sample(PromotionApproved)
    key = keys.signing_key("promotion")
    record = with_signature(encode(event, topic="t"), sign(event, key))
    twice = with_signature(record, sign(event, key))  # replaces: still one
    assert [k for k, _ in twice.headers].count(SIGNATURE_HEADER) == 1
    doubled = type(record)(
        topic="t", key=record.key, value=record.value,
        headers=(*record.headers, (SIGNATURE_HEADER, b'{"keyid":"x","sig":"y"}')),
    )  # fmt: skip
    with pytest.raises(SignatureRefused) as caught:
        signature_of(doubled)
    assert caught.value.reason == "malformed"


# --- rotation and the stores -------------------------------------------------------------------


def test_two_keys_of_a_role_verify_and_the_newest_signs(keys: KeyStore) -> None:
    first = keys.create("promotion", now=NOW - timedelta(days=2))
    event = sample(PromotionApproved)
    by_first = sign(event, keys.signing_key("promotion"))
    second = keys.create("promotion", now=NOW - timedelta(days=1))
    assert keys.signing_key("promotion").key_id == second.key_id
    by_second = sign(event, keys.signing_key("promotion"))
    trust = keys.trust()
    assert verify(event, by_first, trust).key_id == first.key_id
    assert verify(event, by_second, trust).key_id == second.key_id
    keys.retire(second.key_id)  # the newest retired: the older one signs again
    assert keys.signing_key("promotion").key_id == first.key_id


def test_a_ring_signs_only_with_keys_it_holds(tmp_path: Path, keys: KeyStore) -> None:
    keys.create("gates")
    public_only = KeyStore(tmp_path / "deployer")
    public_only.trust_path.parent.mkdir(parents=True)
    public_only.trust_path.write_text(keys.trust().to_json(), encoding="utf-8")
    with pytest.raises(NoSigningKey):
        public_only.signing_key("gates")
    event = sample(GatePassed)
    assert verify(event, sign(event, keys.signing_key("gates")), public_only.trust())


def test_private_keys_are_pem_files_readable_by_their_owner_only(keys: KeyStore) -> None:
    created = keys.create("incidents")
    path = keys.private_path(created.key_id)
    assert path.parent == keys.private_dir
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert os.stat(keys.private_dir).st_mode & 0o777 == 0o700
    loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    assert key_id(loaded.public_key()) == created.key_id  # type: ignore[arg-type]
    path.chmod(0o644)
    with pytest.raises(KeyStoreError, match="chmod 600"):
        keys.signing_key("incidents")


def test_the_trust_store_round_trips_and_refuses_a_wrong_file(
    tmp_path: Path, keys: KeyStore
) -> None:
    a = keys.create("gates")
    keys.create("person", name="alice")
    keys.retire(a.key_id)
    again = TrustStore.from_json(keys.trust().to_json())
    assert list(again) == list(keys.trust())
    assert TrustStore.load(tmp_path / "absent.json").get(a.key_id) is None
    document = json.loads(keys.trust_path.read_text(encoding="utf-8"))
    entry = document["keys"][0]
    for field, value, said in [
        ("keyid", "ed25519:0000000000000000", "not the id of its publicKey"),
        ("role", "root", "is not one of"),
        ("publicKey", "AAAA", "raw 32-byte"),
        ("createdAt", "yesterday", "RFC 3339"),
    ]:
        broken = {"keys": [{**entry, field: value}]}
        path = tmp_path / f"{field}.json"
        path.write_text(json.dumps(broken), encoding="utf-8")
        with pytest.raises(KeyStoreError, match=said) as caught:
            TrustStore.load(path)
        assert str(path) in str(caught.value)
    with pytest.raises(KeyStoreError, match="listed twice"):
        TrustStore.from_json(json.dumps({"keys": [entry, entry]}))
    with pytest.raises(KeyStoreError, match="not JSON"):
        TrustStore.from_json("{")


def test_an_unknown_role_is_refused(keys: KeyStore) -> None:
    with pytest.raises(KeyStoreError, match="unknown role 'root'"):
        keys.create("root")
    assert not keys.trust_path.exists()


def test_the_signers_table_names_decisions_and_known_roles() -> None:
    from events.signing import ROLES

    short = {model_for(t).__name__: roles for t, roles in SIGNERS.items()}  # type: ignore[union-attr]
    assert short["PromotionApproved"] == {"promotion"}
    assert short["GatePassed"] == short["GateFailed"] == {"gates"}
    assert short["PolicyUpdated"] == {"platform"}
    assert short["RollbackRequested"] == {"incidents"}
    assert short["FlagChangeRequested"] == {"incidents", "admin"}
    assert short["ApprovalUpdated"] == {"person"}
    assert all(roles <= set(ROLES) for roles in SIGNERS.values())
