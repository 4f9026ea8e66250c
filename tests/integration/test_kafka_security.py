"""Only who may, can (issue 11): the broker `infra/lockstep-infra up` starts takes SCRAM
logins only, and each principal of infra/access.toml may write only its topics.

Each test has a namespace of its own (its raw records must not reach another test's
services); the namespace's ACLs are the ones ``ensure_topics`` made from the access file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid

import pytest
from aiokafka.errors import TopicAuthorizationFailedError
from pydantic import SecretStr

from events import topics
from shared.bus import Publisher
from shared.bus.kafka_client import KafkaLoginRefused, kafka_admin, kafka_consumer, kafka_producer
from shared.bus.publisher import LoginRefused
from shared.settings import Settings
from tests.integration.conftest import REPO, Namespace, NamespaceFactory

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
async def secured(new_namespace: NamespaceFactory) -> Namespace:
    ns = await new_namespace()
    if ns.settings.kafka_security_protocol == "PLAINTEXT":
        pytest.fail("these tests need the secured broker (LOCKSTEP_KAFKA_SECURITY_PROTOCOL unset)")
    return ns


async def writable(settings: Settings, ns: Namespace, logical: str) -> bool:
    """Whether ``settings``' principal may write a record to the namespace's topic."""
    producer = kafka_producer(settings, request_timeout_ms=10000, client_id="security-test")
    try:
        await producer.start()
        await producer.send_and_wait(ns.topic(logical), b"probe", key=b"security-test")
        return True
    except TopicAuthorizationFailedError:
        return False
    finally:
        await producer.stop()


async def test_a_producer_with_a_wrong_password_is_refused_in_one_line(secured: Namespace) -> None:
    wrong = secured.settings.model_copy(
        update={"kafka_user": "ci", "kafka_password": SecretStr("not-the-password")}
    )
    with pytest.raises(LoginRefused) as refused:
        async with Publisher(wrong, publish_timeout_s=10):
            pass
    said = str(refused.value)
    assert said.startswith(f"Kafka at {wrong.kafka_bootstrap} refused user 'ci'")
    assert "SASL_AUTHENTICATION_FAILED" in said and "LOCKSTEP_KAFKA_PASSWORD" in said
    assert "not-the-password" not in said and "\n" not in said


async def test_a_client_without_any_login_is_refused(secured: Namespace) -> None:
    anonymous = secured.settings.model_copy(update={"kafka_security_protocol": "PLAINTEXT"})
    producer = kafka_producer(anonymous, request_timeout_ms=5000)
    try:
        with pytest.raises(KafkaLoginRefused, match="closed a connection without a login"):
            await producer.start()
    finally:
        await producer.stop()


async def test_a_user_with_no_password_anywhere_is_told_where_to_put_one(
    secured: Namespace,
) -> None:
    unknown = secured.settings.model_copy(update={"kafka_user": "nobody-" + uuid.uuid4().hex[:6]})
    with pytest.raises(KafkaLoginRefused, match="set LOCKSTEP_KAFKA_PASSWORD"):
        kafka_producer(unknown)


async def test_ci_writes_artifacts_and_evidence_and_nothing_it_must_not(
    secured: Namespace,
) -> None:
    ci = secured.settings.as_principal("ci")
    assert await writable(ci, secured, topics.ARTIFACTS)
    assert await writable(ci, secured, topics.EVIDENCE)
    for forbidden in (topics.PROMOTIONS, topics.GATES, topics.POLICIES, topics.FLAGS):
        assert not await writable(ci, secured, forbidden), forbidden


async def test_a_deployer_reads_promotions_and_writes_deployments_but_not_promotions(
    secured: Namespace,
) -> None:
    deployer = secured.settings.as_principal("deployer")
    assert await writable(deployer, secured, topics.DEPLOYMENTS)
    assert not await writable(deployer, secured, topics.PROMOTIONS)
    assert not await writable(deployer, secured, topics.GATES)
    # it may read the promotions, in a group of its own prefix ...
    promotions = secured.topic(topics.PROMOTIONS)
    group = f"{secured.settings.namespace}.deployer.security-test"
    consumer = kafka_consumer(deployer, promotions, group_id=group, auto_offset_reset="earliest")
    await consumer.start()
    try:
        assert await consumer.getmany(timeout_ms=500) is not None
        assert consumer.assignment()
    finally:
        await consumer.stop()
    # ... and not the gates' decisions
    gates = kafka_consumer(deployer, secured.topic(topics.GATES), group_id=group)
    try:
        with pytest.raises(TopicAuthorizationFailedError):
            await gates.start()
            await gates.getmany(timeout_ms=2000)
    finally:
        await gates.stop()


async def test_only_the_promotion_service_gates_and_platform_write_their_decisions(
    secured: Namespace,
) -> None:
    s = secured.settings
    assert await writable(s.as_principal("promotion"), secured, topics.PROMOTIONS)
    assert await writable(s.as_principal("gates"), secured, topics.GATES)
    assert await writable(s.as_principal("platform"), secured, topics.POLICIES)
    assert not await writable(s.as_principal("gates"), secured, topics.PROMOTIONS)
    assert not await writable(s.as_principal("promotion"), secured, topics.GATES)
    assert not await writable(s.as_principal("artifacts"), secured, topics.POLICIES)
    assert not await writable(s.as_principal("viewer"), secured, topics.ARTIFACTS)


async def test_a_flag_change_on_kafka_comes_only_from_incidents_flags_or_admin(
    secured: Namespace,
) -> None:
    s = secured.settings
    assert await writable(s.as_principal("incidents"), secured, topics.FLAGS)
    assert await writable(s.as_principal("admin"), secured, topics.FLAGS)
    for who in ("ci", "person", "deployer", "platform", "gates", "promotion", "monitoring"):
        assert not await writable(s.as_principal(who), secured, topics.FLAGS), who


async def test_a_principal_that_is_not_admin_cannot_delete_a_topic(secured: Namespace) -> None:
    topic = secured.topic(topics.PROMOTIONS)
    for who in ("ci", "deployer", "promotion"):
        admin = kafka_admin(secured.settings.as_principal(who))
        await admin.start()
        try:
            response = await admin.delete_topics([topic])
            codes = {name: code for name, code, *_ in response.topic_error_codes}
            assert codes[topic] == TopicAuthorizationFailedError.errno, who
        finally:
            await admin.close()
    admin = kafka_admin(secured.settings)  # admin: still there
    await admin.start()
    try:
        assert topic in await admin.list_topics()
    finally:
        await admin.close()


def lockstep(ns: Namespace, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The real command line, in the namespace, with ``env`` on top of this environment."""
    return subprocess.run(
        [sys.executable, "-m", "cli", *args], cwd=REPO, capture_output=True, text=True,
        timeout=120, env={**os.environ, "LOCKSTEP_NAMESPACE": ns.settings.namespace,
                          "LOCKSTEP_KAFKA_BOOTSTRAP": ns.settings.kafka_bootstrap,
                          "LOCKSTEP_KEY_DIR": str(ns.settings.key_dir), **env},
    )  # fmt: skip


ARTIFACT = ("publish", "artifact", "--service", "sec", "--version", "1.0.0",
            "--digest", "sha256:" + "a" * 64, "--commit", "abc123")  # fmt: skip


async def test_the_command_line_refuses_a_wrong_password_in_one_line(secured: Namespace) -> None:
    done = lockstep(secured, *ARTIFACT, LOCKSTEP_KAFKA_PASSWORD="not-the-password")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and "not-the-password" not in done.stderr
    assert (
        f"error: not published: Kafka at {secured.settings.kafka_bootstrap} refused user 'ci' "
        "(SASL_AUTHENTICATION_FAILED)"
    ) in done.stderr


async def test_a_command_as_a_principal_without_the_right_is_refused_at_once(
    secured: Namespace,
) -> None:
    approve = ("approve", "sec@1.0.0", "--env", "prod", "--by", "alice")  # her key signs
    done = lockstep(secured, *approve, LOCKSTEP_KAFKA_USER="ci")  # ci may not write gates
    assert done.returncode == 2, done.stdout
    assert f"Kafka user 'ci' may not write {secured.topic(topics.GATES)}" in done.stderr
    done = lockstep(secured, *approve)  # as person, as the command is
    assert done.returncode == 0, done.stderr
    assert "approval.updated" in done.stdout


async def test_a_ci_system_is_added_in_one_command_with_ci_s_rights(secured: Namespace) -> None:
    name = "ci-test-" + uuid.uuid4().hex[:6]
    added = lockstep(secured, "infra", "principal", "add", name, "--as", "ci")
    try:
        assert added.returncode == 0, added.stderr
        creds = secured.settings.credentials_dir / "kafka.json"
        assert f"user '{name}' has the rights of 'ci'; its password is in {creds}" in added.stdout
        assert creds.stat().st_mode & 0o077 == 0  # the owner's only
        password = json.loads(creds.read_text())["users"][name]["password"]
        jenkins = secured.settings.model_copy(
            update={"kafka_user": name, "kafka_password": SecretStr(password)}
        )
        assert await writable(jenkins, secured, topics.ARTIFACTS)
        assert not await writable(jenkins, secured, topics.PROMOTIONS)
    finally:
        removed = lockstep(secured, "infra", "principal", "remove", name)
        assert removed.returncode == 0, removed.stderr
    assert name not in json.loads(creds.read_text())["users"]
    gone = secured.settings.model_copy(
        update={"kafka_user": name, "kafka_password": SecretStr(password)}
    )
    with pytest.raises(KafkaLoginRefused, match=f"refused user '{name}'"):
        await writable(gone, secured, topics.ARTIFACTS)


async def test_a_service_with_a_wrong_password_gives_up_at_once_in_one_line(
    secured: Namespace,
) -> None:
    started = time.monotonic()
    done = lockstep(secured, "run", "gates", LOCKSTEP_KAFKA_PASSWORD="not-the-password")
    assert time.monotonic() - started < 60  # not waited on as if Kafka were away
    assert done.returncode == 2, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: gates: Kafka at"), last
    assert "refused user 'gates' (SASL_AUTHENTICATION_FAILED)" in last
    assert "Traceback" not in done.stderr and "not-the-password" not in done.stderr
