"""The deployer SDK: one method to write (``Deployer.deploy``); the agent does the rest —
reads ``promotion.approved`` for its environments, checks the digest, deploys, and reports
CDEvents ``service.deployed`` (``service.rolledback`` for a rollback) or ``deployment.failed``.

Delivery is at least once: after a crash a promotion may be handed over again, so
``deploy`` must be idempotent (deploying the same digest twice changes nothing).
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Tracer

from events import (
    ArtifactRef,
    ArtifactRefError,
    DeploymentFailed,
    InvalidEvent,
    KafkaRecord,
    PromotionApproved,
    Reference,
    ServiceDeployed,
    ServiceRolledBack,
    decode,
    topics,
)
from events.deployments import (
    DeployedContent,
    DeployedSubject,
    DeploymentFacts,
    FailedContent,
    FailedSubject,
)
from shared.bus import Publisher
from shared.bus.consumer import record_from_kafka
from shared.settings import Settings
from shared.telemetry import context_from_headers, current_trace_headers

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Deployment:
    """What to deploy, as the promotion says it."""

    promotion_id: str
    service: str
    version: str
    digest: str
    artifact_id: str
    environment: str
    previous_version: str | None
    rollback: bool


class DeployFailed(Exception):
    """Raise it from ``deploy`` with a reason a person can act on."""


class Deployer(ABC):
    @abstractmethod
    async def deploy(self, deployment: Deployment) -> None:
        """Make ``deployment.digest`` of the service run in the environment, or raise."""


async def act_on(
    promotion: PromotionApproved, deployer: Deployer, *, agent: str
) -> ServiceDeployed | ServiceRolledBack | DeploymentFailed:
    """Carry out one promotion and say how it went (the agent's whole job, without Kafka):
    ``service.rolledback`` for a rollback promotion, else ``service.deployed``."""
    c = promotion.subject.content
    deployment = Deployment(
        promotion_id=c.promotion_id, service=c.service, version=c.version, digest=c.digest,
        artifact_id=c.artifact_id, environment=c.environment,
        previous_version=c.previous_version, rollback=c.rollback,
    )  # fmt: skip
    try:
        named = ArtifactRef.from_purl(c.artifact_id, require_digest=True)
        if named.digest != c.digest or (named.service, named.version) != (c.service, c.version):
            raise DeployFailed(
                f"the promotion's artifact {c.artifact_id} does not match "
                f"{c.service}@{c.version} {c.digest}; refusing to deploy it"
            )
        await deployer.deploy(deployment)
    except (DeployFailed, ArtifactRefError) as exc:
        return _failed(deployment, agent, str(exc))
    except Exception as exc:  # a deployer's bug is still a failed deployment, reported
        log.exception("deployer %s failed on %s", agent, c.promotion_id)
        return _failed(deployment, agent, f"{type(exc).__name__}: {exc}")
    report = ServiceRolledBack if c.rollback else ServiceDeployed
    return report(
        context=report.new_context(f"lockstep/deployer/{agent}"),
        subject=DeployedSubject(
            id=c.service,
            content=DeployedContent(
                environment=Reference(id=c.environment), artifact_id=c.artifact_id
            ),
        ),
        custom_data=DeploymentFacts(promotion_id=c.promotion_id, agent=agent),
    )


def _failed(d: Deployment, agent: str, reason: str) -> DeploymentFailed:
    return DeploymentFailed(
        context=DeploymentFailed.new_context(f"lockstep/deployer/{agent}"),
        subject=FailedSubject(
            id=d.service,
            content=FailedContent(
                environment=d.environment, artifact_id=d.artifact_id,
                promotion_id=d.promotion_id, agent=agent, reason=reason,
            ),
        ),
    )  # fmt: skip


class DeployerAgent:
    """Runs a ``Deployer`` against Lockstep: one consumer group per agent name."""

    def __init__(
        self,
        deployer: Deployer,
        settings: Settings,
        *,
        agent: str,
        environments: list[str],
        tracer: Tracer | None = None,
    ) -> None:
        self._tracer = tracer or trace.get_tracer("lockstep-deployer")
        self._deployer = deployer
        self._settings = settings
        self._agent = agent
        self._environments = set(environments)
        self.handled = 0
        self._acted_on: dict[str, None] = {}  # recent promotion ids, oldest first

    async def run(self, stop: asyncio.Event) -> None:
        consumer = AIOKafkaConsumer(
            self._settings.topic(topics.PROMOTIONS),
            bootstrap_servers=self._settings.kafka_bootstrap,
            group_id=self._settings.group_id(f"deployer.{self._agent}"),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=100,
        )
        await consumer.start()
        try:
            async with Publisher(self._settings, client_id=f"deployer-{self._agent}") as publisher:
                while not stop.is_set():
                    batches = await consumer.getmany(timeout_ms=200, max_records=50)
                    for records in batches.values():
                        for r in records:
                            await self._handle(record_from_kafka(r), publisher)
                    if batches:
                        try:
                            await consumer.commit()
                        except KafkaError as exc:  # redelivered; deploy is idempotent
                            log.warning("deployer %s: commit failed (%s)", self._agent, exc)
        finally:
            await consumer.stop()

    async def _handle(self, record: KafkaRecord, publisher: Publisher) -> None:
        if record.header("ce_type") != PromotionApproved.TYPE:
            return
        try:
            decoded = decode(record, max_bytes=self._settings.max_event_bytes)
        except InvalidEvent as exc:
            log.warning("deployer %s: unreadable promotion skipped: %s", self._agent, exc.reason)
            return
        promotion = decoded.event
        assert isinstance(promotion, PromotionApproved)
        if promotion.subject.content.environment not in self._environments:
            return
        if promotion.id in self._acted_on:
            return  # the same promotion sent again (a relay that re-sent it): acted on already
        self._acted_on[promotion.id] = None
        if len(self._acted_on) > 10_000:
            self._acted_on.pop(next(iter(self._acted_on)))
        c = promotion.subject.content
        with self._tracer.start_as_current_span(
            f"{'roll back' if c.rollback else 'deploy'} to {c.environment}",
            context=context_from_headers(decoded.trace_headers),
            kind=SpanKind.CONSUMER,
            attributes={
                "lockstep.artifact": f"{c.service}@{c.version}",
                "lockstep.agent": self._agent,
            },
        ) as span:
            report = await act_on(promotion, self._deployer, agent=self._agent)
            failed = isinstance(report, DeploymentFailed)
            outcome = "failed" if failed else "rolled back" if c.rollback else "deployed"
            span.set_attribute("lockstep.outcome", outcome)
            await publisher.publish(report, traceparent=current_trace_headers().get("traceparent"))
        self.handled += 1
        log.info("deployer %s: %s", self._agent, report.describe())
