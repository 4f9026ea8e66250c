"""Test your deployer without Lockstep running: hand it a promotion, read its report."""

from __future__ import annotations

from typing import Any

from events import (
    ArtifactRef,
    DeploymentFailed,
    PromotionApproved,
    ServiceDeployed,
    ServiceRolledBack,
)
from events.promotions import ApprovedContent, ApprovedSubject, promotion_id
from services.deployer.sdk import Deployer, act_on

Report = ServiceDeployed | ServiceRolledBack | DeploymentFailed


class DeployerHarness:
    def __init__(self, deployer: Deployer, *, agent: str = "test-agent") -> None:
        self.deployer = deployer
        self.agent = agent

    @staticmethod
    def promotion(
        *, service: str, version: str, digest: str, environment: str,
        previous_version: str | None = None, artifact_id: str | None = None,
        rollback: bool = False,
    ) -> PromotionApproved:  # fmt: skip
        """A promotion as Lockstep would send it."""
        pid = promotion_id(service, version, digest, environment, "0" * 64)
        return PromotionApproved(
            context=PromotionApproved.new_context("lockstep/promotion"),
            subject=ApprovedSubject(
                id=pid,
                content=ApprovedContent(
                    promotion_id=pid, service=service, version=version, digest=digest,
                    artifact_id=artifact_id or ArtifactRef(service, version, digest).purl(),
                    environment=environment, policy_sha256="0" * 64,
                    previous_version=previous_version, rollback=rollback,
                ),
            ),
        )  # fmt: skip

    async def promote(self, **kwargs: Any) -> Report:
        """Hand the deployer one promotion (see ``promotion``); returns what it reports."""
        return await act_on(self.promotion(**kwargs), self.deployer, agent=self.agent)
