"""A deployer tested the way a team tests its own: with the harness, no Lockstep running."""

from __future__ import annotations

from pathlib import Path

from events import ArtifactRef, DeploymentFailed, ServiceDeployed, ServiceRolledBack
from services.deployer import Deployer, Deployment
from services.deployer.reference import LocalStateDeployer
from services.deployer.testing import DeployerHarness

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
