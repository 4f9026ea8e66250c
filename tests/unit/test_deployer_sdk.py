"""A deployer tested the way a team tests its own: with the harness, no Lockstep running."""

from __future__ import annotations

import ast
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from events import (
    ArtifactRef,
    DeploymentFailed,
    KafkaRecord,
    PromotionApproved,
    Reference,
    ServiceDeployed,
    ServiceRolledBack,
    encode,
    topics,
)
from events.deployments import DeployedContent, DeployedSubject, DeploymentFacts
from events.kafka import dead_letter
from services.deployer import (
    AgentConfig,
    ConfigError,
    Deployer,
    DeployFailed,
    Deployment,
    act_on,
    report_id,
)
from services.deployer.journal import Journal, JournalError
from services.deployer.kafka import record_of
from services.deployer.reference import LocalStateDeployer
from services.deployer.testing import DeployerHarness
from tests.unit.test_layout import imports_of

DIGEST = "sha256:" + "c" * 64


async def test_a_deployment_is_carried_out_and_reported(tmp_path: Path) -> None:
    target = LocalStateDeployer(tmp_path)
    report = await DeployerHarness(target).promote(
        service="checkout", version="1.4.2", digest=DIGEST, environment="staging"
    )
    assert isinstance(report, ServiceDeployed)
    assert report.subject.content.environment.id == "staging"
    assert report.ref() == ArtifactRef("checkout", "1.4.2", DIGEST)
    assert report.custom_data.agent == "test-agent"
    running = target.running("staging", "checkout")
    assert running is not None and (running["version"], running["digest"]) == ("1.4.2", DIGEST)


async def test_a_failing_deployment_is_reported_with_its_reason(tmp_path: Path) -> None:
    report = await DeployerHarness(LocalStateDeployer(tmp_path, fail_for={"checkout"})).promote(
        service="checkout", version="1.4.2", digest=DIGEST, environment="staging"
    )
    assert isinstance(report, DeploymentFailed)
    assert report.subject.content.reason == "told to fail for checkout (--fail)"


async def test_a_promotion_whose_artifact_does_not_match_its_digest_is_refused(
    tmp_path: Path,
) -> None:
    target = LocalStateDeployer(tmp_path)
    other = ArtifactRef("checkout", "1.4.2", "sha256:" + "d" * 64).purl()
    report = await DeployerHarness(target).promote(
        service="checkout", version="1.4.2", digest=DIGEST, environment="prod-eu", artifact_id=other
    )
    assert isinstance(report, DeploymentFailed)
    assert "does not match" in report.subject.content.reason
    assert target.running("prod-eu", "checkout") is None  # nothing was deployed


async def test_a_deployer_that_crashes_is_a_failed_deployment_not_a_dead_agent() -> None:
    class Broken(Deployer):
        async def deploy(self, deployment: Deployment) -> None:
            raise ConnectionResetError("cluster API went away")

    report = await DeployerHarness(Broken()).promote(
        service="cart", version="3.0.0", digest=DIGEST, environment="dev"
    )
    assert isinstance(report, DeploymentFailed)
    assert report.subject.content.reason == "ConnectionResetError: cluster API went away"


async def test_a_rollback_promotion_is_reported_as_rolled_back(tmp_path: Path) -> None:
    target = LocalStateDeployer(tmp_path)
    report = await DeployerHarness(target).promote(
        service="checkout", version="1.4.1", digest=DIGEST, environment="prod-eu",
        previous_version="1.4.2", rollback=True,
    )  # fmt: skip
    assert isinstance(report, ServiceRolledBack)
    assert report.ref().version == "1.4.1"
    assert target.running("prod-eu", "checkout") is not None


# --- reports are the same event each time they are made --------------------------------


async def test_a_promotion_reported_twice_is_the_same_event(tmp_path: Path) -> None:
    harness = DeployerHarness(LocalStateDeployer(tmp_path))
    promotion = harness.promotion(
        service="checkout", version="1.4.2", digest=DIGEST, environment="staging"
    )
    first = await act_on(promotion, harness.deployer, agent="a")
    again = await act_on(promotion, harness.deployer, agent="a")
    assert first.id == again.id == report_id(promotion.subject.content.promotion_id, "deployed")
    other = harness.promotion(service="checkout", version="1.4.3", digest=DIGEST, environment="dev")
    assert (await act_on(other, harness.deployer, agent="a")).id != first.id


async def test_a_failure_and_a_success_of_one_promotion_are_different_reports(
    tmp_path: Path,
) -> None:
    promotion = DeployerHarness.promotion(
        service="checkout", version="1.4.2", digest=DIGEST, environment="staging"
    )
    failed = await act_on(promotion, LocalStateDeployer(tmp_path, fail_for={"checkout"}), agent="a")
    done = await act_on(promotion, LocalStateDeployer(tmp_path), agent="a")
    assert isinstance(failed, DeploymentFailed) and isinstance(done, ServiceDeployed)
    assert failed.id != done.id


async def test_a_huge_failure_reason_is_cut_to_a_report_kafka_takes() -> None:
    class Verbose(Deployer):
        async def deploy(self, deployment: Deployment) -> None:
            raise DeployFailed("x\x00" * 100_000)

    report = await DeployerHarness(Verbose()).promote(
        service="cart", version="3.0.0", digest=DIGEST, environment="dev"
    )
    assert isinstance(report, DeploymentFailed)
    assert len(report.subject.content.reason) < 5000 and "\x00" not in report.subject.content.reason


# --- the journal: what a restarted agent knows ---------------------------------------------


def a_report(promotion_id: str = "prm-1") -> KafkaRecord:
    promotion = DeployerHarness.promotion(
        service="checkout", version="1.4.2", digest=DIGEST, environment="staging"
    )
    event = ServiceDeployed(
        context=ServiceDeployed.new_context(
            "lockstep/deployer/a", id=report_id(promotion_id, "deployed")
        ),
        subject=DeployedSubject(
            id="checkout",
            content=DeployedContent(
                environment=Reference(id="staging"),
                artifact_id=promotion.subject.content.artifact_id,
            ),
        ),
        custom_data=DeploymentFacts(promotion_id=promotion_id, agent="a"),
    )
    trace = {"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}
    return encode(event, topic="ns.deployments", trace_headers=trace)


def test_a_report_kept_but_not_acknowledged_survives_a_restart_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    report = a_report()
    with Journal(path) as journal:
        journal.acted("prm-1", "deployed", report)
    with Journal(path) as journal:  # the agent started again
        found = journal.find("prm-1")
        assert found is not None and not found.reported
        assert found.report == report  # the same bytes, id and trace headers
        assert [e.promotion_id for e in journal.pending()] == ["prm-1"]
        journal.reported("prm-1")
    with Journal(path) as journal:
        found = journal.find("prm-1")
        assert found is not None and found.reported
        assert journal.pending() == []
        assert journal.find("prm-2") is None


def test_the_first_entry_of_a_promotion_stands(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.sqlite3") as journal:
        first = journal.acted("prm-1", "deployed", a_report())
        again = journal.acted("prm-1", "failed", a_report("prm-x"))
        assert again == first


def test_only_long_reported_entries_are_forgotten(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.sqlite3") as journal:
        journal.acted("prm-1", "deployed", a_report("prm-1"))
        journal.acted("prm-2", "deployed", a_report("prm-2"))
        journal.reported("prm-1")
        assert journal.forget_reported_before(timedelta(days=1)) == 0
        assert journal.forget_reported_before(timedelta(seconds=-1)) == 1  # reported "long ago"
        assert journal.find("prm-1") is None
        assert journal.find("prm-2") is not None  # never acknowledged: kept, whatever its age


def test_a_journal_that_cannot_be_written_says_where_and_what_to_do(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(JournalError, match="state directory it can write"):
        Journal(blocker / "j.sqlite3")


# --- dead letters, configuration ------------------------------------------------------------


def test_a_dead_letter_keeps_the_record_and_says_why() -> None:
    record = KafkaRecord(
        topic="ns.promotions", key=b"checkout", value=b"{not json",
        headers=(("ce_type", PromotionApproved.TYPE.encode()), ("lockstep.dlq.error", b"old")),
        partition=2, offset=41,
    )  # fmt: skip
    letter = dead_letter(
        record, dlq_topic="ns.dlq", error="value is not valid JSON", stage="decode", group="g"
    )
    assert (letter.topic, letter.key, letter.value) == ("ns.dlq", b"checkout", b"{not json")
    why = {
        k.removeprefix(topics.DLQ_HEADER_PREFIX): v
        for k, v in letter.headers
        if k.startswith(topics.DLQ_HEADER_PREFIX)
    }
    assert why["error"] == b"value is not valid JSON"
    assert (why["stage"], why["topic"], why["partition"], why["offset"], why["group"]) == (
        b"decode", b"ns.promotions", b"2", b"41", b"g",
    )  # fmt: skip
    assert ("ce_type", PromotionApproved.TYPE.encode()) in letter.headers


def test_a_consumer_record_that_breaks_expectations_still_converts() -> None:
    class Odd:
        topic = "ns.promotions"
        partition = 0
        offset = 7
        key = "not bytes"
        value = b"{}"
        headers = (("ce_type", None),)

    record = record_of(Odd())
    assert record.offset == 7 and record.value == b"{}"


def test_the_configuration_reads_lockstep_names_and_refuses_bad_ones_plainly() -> None:
    config = AgentConfig.from_env(
        agent="eu-1",
        env={"LOCKSTEP_NAMESPACE": "acme", "LOCKSTEP_KAFKA_BOOTSTRAP": "k:9093",
             "LOCKSTEP_DEPLOYER_STATE_DIR": "/srv/agent", "LOCKSTEP_KAFKA_PASSWORD": "pw"},
    )  # fmt: skip
    assert (config.namespace, config.bootstrap_servers) == ("acme", "k:9093")
    assert config.kafka_security() == {
        "security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "deployer", "sasl_plain_password": "pw",
    }  # fmt: skip
    assert "pw" not in repr(config)  # never in a log line
    with pytest.raises(ConfigError, match="no Kafka password for user 'deployer'"):
        AgentConfig.from_env(agent="eu-1", env={})
    plain = AgentConfig.from_env(
        agent="eu-1", env={"LOCKSTEP_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT"}
    )
    assert plain.kafka_security() == {"security_protocol": "PLAINTEXT"}
    assert config.group_id == "acme.deployer.eu-1"
    assert config.topic(topics.PROMOTIONS) == "acme.promotions"
    assert config.journal_path.parent.parent == Path("/srv/agent")
    with pytest.raises(ConfigError, match="LOCKSTEP_NAMESPACE"):
        AgentConfig.from_env(agent="eu-1", env={"LOCKSTEP_NAMESPACE": "Not Valid"})
    with pytest.raises(ConfigError, match="agent name"):
        AgentConfig(agent="has space")
    with pytest.raises(ConfigError, match="whole number"):
        AgentConfig.from_env(agent="eu-1", env={"LOCKSTEP_MAX_EVENT_BYTES": "lots"})


# --- the SDK stands on the contract alone ------------------------------------------------

ALLOWED = {"events", "aiokafka", "opentelemetry"}  # and the standard library


def test_the_sdk_imports_the_contract_aiokafka_and_opentelemetry_only() -> None:
    root = Path(__file__).resolve().parents[2]
    found = []
    for path in sorted((root / "services" / "deployer").rglob("*.py")):
        for line, module in imports_of(path):
            parts = module.split(".")
            stdlib = parts[0] in sys.stdlib_module_names or parts[0] == "__future__"
            own = parts[:2] == ["services", "deployer"]
            if not stdlib and not own and parts[0] not in ALLOWED:
                found.append(f"{path.relative_to(root)}:{line}: imports {module}")
    assert found == []


def test_loading_the_sdk_loads_nothing_of_lockstep_s_runtime() -> None:
    code = (
        "import sys, services.deployer, services.deployer.api, services.deployer.testing; "
        "print(sorted({m.split('.')[0] + ('.' + m.split('.')[1] if m.startswith('services.') "
        "and '.' in m else '') for m in sys.modules}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True,
        cwd=Path(__file__).resolve().parents[2],
    ).stdout  # fmt: skip
    loaded = set(ast.literal_eval(out))
    assert "shared" not in loaded and "policy" not in loaded and "cli" not in loaded
    assert {m for m in loaded if m.startswith("services.")} == {"services.deployer"}
