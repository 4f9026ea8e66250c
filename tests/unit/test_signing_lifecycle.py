"""What events.signing adds for keys' lives and people: a retired key's signatures verify only
for events before its retirement and only within the grace after it (the signer picks the
event's time, so backdating must not outlive the grace); a revoked key verifies nothing; a
person's key verifies only events that claim that person; ``keys init`` makes what is missing
once; the trust store is read again when its file changes; and the runtime signs a decision
only with a key of a role that may sign it."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from events import (
    ApprovalUpdated,
    CDEvent,
    GatePassed,
    HoldReleased,
    PromotionApproved,
    ServiceDeployed,
)
from events.signing import (
    INIT_ROLES,
    REFUSALS,
    KeyStore,
    KeyStoreError,
    NoSigningKey,
    SignatureRefused,
    TrustStore,
    TrustStoreFile,
    claimed_person,
    sign,
    signature_of,
    trust_store_problem,
    verify,
)
from events.testing import sample
from shared.bus.signing import UnsignableDecision, signed_record

NOW = datetime.now(UTC)


@pytest.fixture
def keys(tmp_path: Path) -> KeyStore:
    return KeyStore(tmp_path / "keys")


def at(event: CDEvent, moment: datetime) -> CDEvent:
    """``event`` claiming to have happened at ``moment`` (the signer chooses it)."""
    return event.model_copy(
        update={"context": event.context.model_copy(update={"timestamp": moment})}
    )


def reason(event: CDEvent, header: str, trust: TrustStore, **kw: object) -> str:
    with pytest.raises(SignatureRefused) as caught:
        verify(event, header, trust, **kw)  # type: ignore[arg-type]
    assert caught.value.reason in REFUSALS
    return caught.value.reason


def test_a_retired_key_verifies_what_it_signed_before_only_within_the_grace(
    keys: KeyStore,
) -> None:
    old = keys.create("gates", now=NOW - timedelta(days=3))
    key = keys.signing_key("gates")
    retired_at = NOW - timedelta(hours=2)
    keys.retire(old.key_id, now=retired_at)
    trust = keys.trust()
    before = at(sample(GatePassed), retired_at - timedelta(minutes=1))
    after = at(sample(GatePassed), retired_at + timedelta(minutes=1))
    grace = timedelta(hours=3)
    assert (
        verify(before, sign(before, key), trust, now=NOW, retired_grace=grace).key_id == old.key_id
    )
    assert reason(after, sign(after, key), trust, now=NOW, retired_grace=grace) == "retired"
    # the grace over: nothing it signed verifies, however early the event says it was
    backdated = at(sample(GatePassed), retired_at - timedelta(days=1))
    later = retired_at + grace
    assert reason(backdated, sign(backdated, key), trust, now=later, retired_grace=grace) == (
        "retired"
    )
    with pytest.raises(SignatureRefused, match="grace after retirement"):
        verify(before, sign(before, key), trust, now=later, retired_grace=grace)


def test_the_default_grace_is_a_day(keys: KeyStore) -> None:
    old = keys.create("gates", now=NOW - timedelta(days=3))
    key = keys.signing_key("gates")
    keys.retire(old.key_id, now=NOW - timedelta(hours=23))
    event = at(sample(GatePassed), NOW - timedelta(days=1))
    assert verify(event, sign(event, key), keys.trust())
    keys_later = keys.trust()
    assert reason(event, sign(event, key), keys_later, now=NOW + timedelta(hours=2)) == "retired"


def test_a_revoked_key_verifies_nothing_and_signs_nothing(keys: KeyStore) -> None:
    leaked = keys.create("promotion", now=NOW - timedelta(days=1))
    key = keys.signing_key("promotion")
    event = at(sample(PromotionApproved), NOW - timedelta(days=2))  # before it was even made
    header = sign(event, key)
    assert verify(event, header, keys.trust())
    keys.revoke(leaked.key_id)
    assert reason(event, header, keys.trust()) == "revoked"
    assert not keys.has_private(leaked.key_id)  # its private half is gone from the ring
    with pytest.raises(NoSigningKey):
        keys.signing_key("promotion")
    with pytest.raises(KeyStoreError, match="was revoked"):
        keys.revoke(leaked.key_id)
    with pytest.raises(KeyStoreError, match="was revoked"):
        keys.retire(leaked.key_id)
    again = TrustStore.from_json(keys.trust().to_json())
    assert again.get(leaked.key_id) == keys.trust().get(leaked.key_id)


def test_a_persons_key_verifies_only_what_claims_that_person(keys: KeyStore) -> None:
    keys.create("person", name="alice")
    keys.create("person", name="bob")
    alice = keys.signing_key("person", name="alice")
    own = sample(ApprovalUpdated, by="alice")
    assert claimed_person(own) == "alice"
    signer = verify(own, sign(own, alice), keys.trust())
    assert (signer.role, signer.name) == ("person", "alice")
    as_bob = sample(ApprovalUpdated, by="bob")
    assert reason(as_bob, sign(as_bob, alice), keys.trust()) == "impersonation"
    hold = sample(HoldReleased, by="bob")
    assert claimed_person(hold) == "bob"
    assert reason(hold, sign(hold, alice), keys.trust()) == "impersonation"
    assert verify(hold, sign(hold, keys.signing_key("person", name="bob")), keys.trust())
    assert claimed_person(sample(GatePassed)) is None


def test_a_person_key_needs_a_name_and_only_a_person_key_has_one(keys: KeyStore) -> None:
    with pytest.raises(KeyStoreError, match="--name NAME"):
        keys.create("person")
    with pytest.raises(KeyStoreError, match="only a person key has a name"):
        keys.create("gates", name="alice")
    with pytest.raises(KeyStoreError, match="name 'a b'"):
        keys.create("person", name="a b")
    assert not keys.trust_path.exists()


def test_the_person_key_is_the_only_one_or_the_one_named(keys: KeyStore) -> None:
    with pytest.raises(NoSigningKey, match="lockstep keys init"):
        keys.person_key()
    keys.create("person", name="alice")
    assert keys.person_key().name == "alice"
    keys.create("person", name="bob")
    with pytest.raises(NoSigningKey, match="LOCKSTEP_PERSON"):
        keys.person_key()
    assert keys.person_key("bob").name == "bob"
    with pytest.raises(NoSigningKey, match="--name carol"):
        keys.person_key("carol")


def test_init_makes_what_is_missing_once(keys: KeyStore) -> None:
    made = keys.init("alice")
    assert sorted(k.role for k in made) == sorted([*INIT_ROLES, "person"])
    assert [k.name for k in made if k.role == "person"] == ["alice"]
    assert keys.init("alice") == []  # idempotent
    gates = keys.signing_key("gates")
    keys.retire(gates.key_id)
    [again] = keys.init("alice")  # a role whose keys are all retired gets a new one
    assert again.role == "gates" and again.key_id != gates.key_id
    [bob] = keys.init("bob")
    assert (bob.role, bob.name) == ("person", "bob")


def test_the_trust_store_file_is_read_again_when_it_changes(keys: KeyStore) -> None:
    key = keys.create("gates")
    watched = TrustStoreFile(keys.trust_path, check_every_s=0.0)
    assert watched.current().get(key.key_id) is not None
    keys.revoke(key.key_id)
    assert watched.current().get(key.key_id).revoked_at is not None  # type: ignore[union-attr]
    slow = TrustStoreFile(keys.trust_path, check_every_s=3600.0)
    first = slow.current()
    other = keys.create("gates")
    assert slow.current() is first and first.get(other.key_id) is None  # not looked at yet
    assert watched.current().get(other.key_id) is not None
    keys.trust_path.write_text("{broken", encoding="utf-8")
    os.utime(keys.trust_path, ns=(time.time_ns(), time.time_ns() + 10**9))
    kept = watched.current()
    assert kept.get(other.key_id) is not None  # the store read before is kept
    assert watched.problem is not None and "not JSON" in watched.problem
    absent = TrustStoreFile(keys.directory / "nothing.json", check_every_s=0.0)
    assert len(absent.current()) == 0


def test_the_runtime_signs_a_decision_only_with_a_key_that_may(keys: KeyStore) -> None:
    keys.create("gates")
    keys.create("promotion")
    decision = sample(GatePassed)
    record = signed_record(decision, topic="t.gates", key=keys.signing_key("gates"))
    assert verify(decision, signature_of(record), keys.trust()).role == "gates"
    with pytest.raises(UnsignableDecision, match="no signing key was given"):
        signed_record(decision, topic="t.gates", key=None)
    with pytest.raises(UnsignableDecision, match="not by the promotion key"):
        signed_record(decision, topic="t.gates", key=keys.signing_key("promotion"))
    # what is no decision goes unsigned, with or without a key
    report = sample(ServiceDeployed)
    assert signature_of(signed_record(report, topic="t.deployments", key=None)) is None


def test_a_key_made_a_moment_ago_verifies_at_once(keys: KeyStore) -> None:
    """The file is looked at at most once per ``check_every_s``, except for a key not known
    yet: a person who makes a key and approves at once is not refused for it."""
    keys.create("gates")
    watched = TrustStoreFile(keys.trust_path, check_every_s=3600.0)
    watched.current()
    keys.create("person", name="alice")
    approval = sample(ApprovalUpdated, by="alice")
    header = sign(approval, keys.signing_key("person", name="alice"))
    assert watched.verify(approval, header).name == "alice"
    stranger = KeyStore(keys.directory / "elsewhere")
    stranger.create("person", name="alice")
    with pytest.raises(SignatureRefused) as caught:
        watched.verify(approval, sign(approval, stranger.signing_key("person", name="alice")))
    assert caught.value.reason == "unknown-key"


@pytest.mark.parametrize("name", ["gates", "promotion", "incidents"])
async def test_a_service_that_signs_does_not_start_without_its_key(
    tmp_path: Path, name: str
) -> None:
    from services.catalog import spec
    from shared.db import NotComingUp
    from shared.service import RunningService
    from shared.settings import Settings

    service = RunningService(spec(name), Settings(namespace="nokeys", key_dir=tmp_path / "none"))
    with pytest.raises(NotComingUp, match=f"it signs as {name}.*`lockstep keys init`"):
        await service.setup()  # before it touches Postgres or Kafka
    assert service.pool is None and not service.ready


async def test_a_service_that_acts_on_decisions_does_not_start_on_a_trust_store_it_cannot_use(
    tmp_path: Path,
) -> None:
    """flags verifies flag changes; with no trust store, one that trusts no key, or one that
    others may write, it would refuse (and lose) every kill switch, or trust an attacker's."""
    from services.catalog import spec
    from shared.db import NotComingUp
    from shared.service import RunningService
    from shared.settings import Settings

    async def refused(key_dir: Path) -> str:
        service = RunningService(spec("flags"), Settings(namespace="notrust", key_dir=key_dir))
        with pytest.raises(NotComingUp) as caught:
            await service.setup()
        assert service.pool is None
        return str(caught.value)

    assert "flags: it acts on signed decisions, and there is no trust store at" in await refused(
        tmp_path / "none"
    )
    empty = tmp_path / "empty"
    empty.mkdir(mode=0o700)
    TrustStore().save(empty / "trust.json")
    assert "trusts no key: run `lockstep keys init`" in await refused(empty)
    shared_dir = tmp_path / "shared"
    KeyStore(shared_dir).init(None)
    shared_dir.chmod(0o777)
    assert "may be written by others (mode 777): `chmod go-w" in await refused(shared_dir)
    shared_dir.chmod(0o700)
    assert trust_store_problem(shared_dir / "trust.json") is None


def test_a_running_service_takes_up_its_roles_new_key_and_never_signs_with_a_revoked_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared.bus.signing import RotatingKey, UnsignableDecision, service_key, signed_record
    from shared.settings import Settings

    settings = Settings(key_dir=tmp_path / "keys")
    store = KeyStore(settings.key_dir)
    old = store.create("gates")
    clock = [1000.0]
    monkeypatch.setattr("shared.bus.signing.time.monotonic", lambda: clock[0])
    key = RotatingKey(settings, "gates", "gates", service_key(settings, "gates", "gates"))
    decision = sample(GatePassed)
    assert key.current().key_id == old.key_id
    new = store.create("gates")
    store.retire(old.key_id)
    assert key.current().key_id == old.key_id  # looked at at most once a second
    clock[0] += 1.5
    assert key.current().key_id == new.key_id
    record = signed_record(decision, topic="t", key=key)
    assert json.loads(signature_of(record) or "{}")["keyid"] == new.key_id
    store.revoke(new.key_id)  # and no successor: nothing may be signed any more
    clock[0] += 1.5
    with pytest.raises(UnsignableDecision, match="no usable gates key"):
        signed_record(decision, topic="t", key=key)


def test_only_the_benchmarks_entry_point_turns_signing_off(tmp_path: Path) -> None:
    """No setting turns verification off; bench/harness/unsigned.py does, for its own
    process only (the benchmark's with-against-without comparison)."""
    import subprocess
    import sys

    probe = (
        "from shared.bus.signing import Verifier, signed_record, unsigned_for_a_benchmark\n"
        "from shared.settings import Settings\n"
        "from events import GatePassed, encode\n"
        "from events.testing import sample\n"
        f"s = Settings(key_dir={str(tmp_path / 'keys')!r})\n"
        "e = sample(GatePassed)\n"
        "r = encode(e, topic='t')\n"
        "before = Verifier(s).refusal(r, e)\n"
        "unsigned_for_a_benchmark()\n"
        "same = signed_record(e, topic='t', key=None).headers == r.headers\n"
        "print(before.reason, Verifier(s).refusal(r, e), same)\n"
    )  # fmt: skip
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=False, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["unsigned", "None", "True"]
    assert "OFF in this process" in done.stderr
    with pytest.raises(UnsignableDecision):
        signed_record(sample(GatePassed), topic="t", key=None)


def test_a_person_key_from_before_names_loads_and_verifies_no_one(keys: KeyStore) -> None:
    """A trust store written before person keys carried names still loads (the services keep
    working); such a key's approvals are refused: it names no one."""
    keys.create("person", name="alice")
    document = json.loads(keys.trust_path.read_text(encoding="utf-8"))
    del document["keys"][0]["name"]
    keys.trust_path.write_text(json.dumps(document), encoding="utf-8")
    trust = keys.trust()
    [old] = list(trust)
    assert old.name is None
    approval = sample(ApprovalUpdated, by="alice")
    header = sign(approval, keys.load_private(old))
    with pytest.raises(SignatureRefused, match="of no one named") as caught:
        verify(approval, header, trust)
    assert caught.value.reason == "impersonation"
