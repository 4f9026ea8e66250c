"""The deployer SDK: one method to write (``Deployer.deploy``); the agent does the rest —
reads ``promotion.approved`` for its environments, checks the digest, deploys, and reports
CDEvents ``service.deployed`` (``service.rolledback`` for a rollback) or ``deployment.failed``.

It depends on the event contract (``events``), aiokafka and OpenTelemetry only, so a team can
run it beside its own tooling, without Lockstep's runtime.

Effectively once, across crashes
--------------------------------
A deployer that is killed and started again neither repeats a deployment it reported nor skips
one it had not. Three things make it so:

1. **A journal on the agent's own disk** (``journal.py``, SQLite in the state directory). When
   ``deploy`` returns, the promotion and its report are written there *before* the report is
   sent, and marked once Kafka acknowledges it. At start, and whenever a promotion is handed
   over again, the journal decides: acknowledged → skip; kept but not acknowledged → send the
   kept report, do not deploy again; absent → deploy.
2. **A report id derived from the promotion** (``report_id``: uuid5 of the promotion id and
   the outcome). A report sent twice (or by another instance of the agent that took the
   partition over) is the same CloudEvent, and every consumer's inbox skips it.
3. **Offsets committed per record acted on**, right after its report is acknowledged: at most
   the record in flight is handed over again after a crash.

Why a local journal rather than rebuilding what was done from the agent's own reports on the
deployments topic at start: the topic holds every agent's reports for the whole retention, so
reading it grows the start-up with the history, and it cannot know the one case that matters
most: a deployment done whose report never reached Kafka (it would deploy again). The journal
costs one small file write per deployment and knows that case (the report is in it). What it
does not give is memory across hosts: an agent started on a new disk deploys again only what
it had not committed (one record at most, see 3), and ``deploy`` is idempotent and the report
the same event (2), so nothing downstream sees it twice. Only the window between ``deploy``
returning and the journal's write can make ``deploy`` run twice: ``deploy`` must be
idempotent (deploying the same digest again changes nothing).

A record on the promotions topic that the contract cannot read is dead-lettered to
``<namespace>.dlq`` with the reason (stage ``decode``) and the agent goes on; so is one that
the Kafka client itself cannot decode (a header name that is not UTF-8), found by the
contract's ``events.kafka.SafeFetcher``: its position, the error and whatever bytes the error
holds. Either way the dead letter is acknowledged by Kafka before the offset is committed.

Only signed promotions are deployed
-----------------------------------
A ``promotion.approved`` for one of the agent's environments is verified first
(``events.signing``) against the trust store of ``AgentConfig.trust_store``, read again when
the file changes. One that is unsigned, signed by a key that may not promote (not of role
``promotion``), altered after signing (another digest, version or environment: the signature
covers the whole event, so a promotion replayed for another environment is altered too),
signed by a revoked key or a retired one past its time, is not deployed: it is dead-lettered
(stage ``signature``, ``signature <reason>: <detail>``), reported by a ``signature.refused``
event on the ``security`` topic, and committed past; the agent goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaConnectionError, KafkaError
from opentelemetry import propagate, trace
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
    encode,
    known_types,
    topics,
)
from events.deployments import (
    DeployedContent,
    DeployedSubject,
    DeploymentFacts,
    FailedContent,
    FailedSubject,
)
from events.kafka import PartitionBatch, SafeFetcher, Unreadable, dead_letter
from events.security import SignatureRefusal
from events.signing import SignatureRefused, TrustStoreFile, signature_of, trust_store_problem
from services.deployer.config import AgentConfig, ConfigError, LockstepSettings
from services.deployer.journal import Journal
from services.deployer.kafka import ReportProducer

log = logging.getLogger(__name__)

Report = ServiceDeployed | ServiceRolledBack | DeploymentFailed

# uuid5 namespace of report ids: the same promotion and outcome always give the same id
REPORT_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:lockstep:deployer:report")
MAX_REASON = 4000  # a report is small; a deployer's exception text may not be
JOURNAL_KEEPS = timedelta(days=30)  # reported entries, far beyond any redelivery


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


def outcome_of(report: Report) -> str:
    if isinstance(report, DeploymentFailed):
        return "failed"
    return "rolledback" if isinstance(report, ServiceRolledBack) else "deployed"


def report_id(promotion_id: str, outcome: str) -> str:
    """The CloudEvents id of the report of ``promotion_id``: the same each time it is made."""
    return str(uuid.uuid5(REPORT_NAMESPACE, f"{promotion_id}/{outcome}"))


async def act_on(promotion: PromotionApproved, deployer: Deployer, *, agent: str) -> Report:
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
    outcome = "rolledback" if c.rollback else "deployed"
    return report(
        context=report.new_context(
            f"lockstep/deployer/{agent}", id=report_id(c.promotion_id, outcome)
        ),
        subject=DeployedSubject(
            id=c.service,
            content=DeployedContent(
                environment=Reference(id=c.environment), artifact_id=c.artifact_id
            ),
        ),
        custom_data=DeploymentFacts(promotion_id=c.promotion_id, agent=agent),
    )


def _failed(d: Deployment, agent: str, reason: str) -> DeploymentFailed:
    text = reason.replace("\x00", "\ufffd") or "no reason given"
    if len(text) > MAX_REASON:
        text = text[:MAX_REASON] + " …(cut)"
    return DeploymentFailed(
        context=DeploymentFailed.new_context(
            f"lockstep/deployer/{agent}", id=report_id(d.promotion_id, "failed")
        ),
        subject=FailedSubject(
            id=d.service,
            content=FailedContent(
                environment=d.environment, artifact_id=d.artifact_id,
                promotion_id=d.promotion_id, agent=agent, reason=text,
            ),
        ),
    )  # fmt: skip


def _config(
    config: AgentConfig | LockstepSettings, agent: str | None, state_dir: Path | None
) -> AgentConfig:
    if isinstance(config, AgentConfig):
        if agent is not None and agent != config.agent:
            raise ValueError(f"agent={agent!r} disagrees with the config's {config.agent!r}")
        if state_dir is not None and state_dir != config.state_dir:
            raise ValueError(f"state_dir={state_dir} disagrees with the config's")
        return config
    if agent is None:
        raise ValueError("name the agent: DeployerAgent(..., agent='my-agent')")
    return AgentConfig.from_settings(config, agent=agent, state_dir=state_dir)


class DeployerAgent:
    """Runs a ``Deployer`` against Lockstep: one consumer group per agent name, one journal
    per agent in its state directory.

    ``config`` is an ``AgentConfig`` (``AgentConfig.from_env(agent=...)``), or Lockstep's own
    settings with ``agent=`` (and ``state_dir=``) given here.
    """

    def __init__(
        self,
        deployer: Deployer,
        config: AgentConfig | LockstepSettings,
        *,
        environments: list[str],
        agent: str | None = None,
        state_dir: Path | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        self.config = _config(config, agent, state_dir)
        self._tracer = tracer or trace.get_tracer("lockstep-deployer")
        self._deployer = deployer
        self._agent = self.config.agent
        self._environments = set(environments)
        self._known = set(known_types())
        self.handled = 0  # promotions carried out (deployed or failed) by this run
        self.dead_lettered = 0
        self.refused = 0  # promotions not deployed: their signature did not hold
        self._trust = TrustStoreFile(self.config.trust_store)

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop`` is set; what was acknowledged is committed, nothing is left half.
        A trust store that is missing, trusts no key or may be written by others is a
        ``ConfigError`` before anything is read: every promotion would be refused and lost."""
        problem = trust_store_problem(self.config.trust_store)
        if problem is not None:
            raise ConfigError(
                f"deployer {self._agent}: it deploys signed promotions, and {problem}"
            )
        journal = Journal(self.config.journal_path)
        journal.forget_reported_before(JOURNAL_KEEPS)
        producer = ReportProducer(
            self.config.bootstrap_servers,
            client_id=f"deployer-{self._agent}",
            security=self.config.kafka_security(),
        )
        consumer: AIOKafkaConsumer | None = None
        try:
            for entry in journal.pending():  # reports kept but never acknowledged
                if not await producer.send_until_acked(entry.report, stop):
                    return
                journal.reported(entry.promotion_id)
            consumer = await self._consumer_when_reachable(stop)
            if consumer is None:
                return  # stopped while Kafka was away
            fetcher = SafeFetcher(consumer, name=f"deployer {self._agent}")
            while not stop.is_set():
                batches = await fetcher.getmany(timeout_ms=200, max_records=50)
                for tp, batch in batches.items():
                    if not await self._partition(consumer, producer, journal, tp, batch, stop):
                        return
        finally:
            if consumer is not None:
                await consumer.stop()
            await producer.stop()
            journal.close()

    async def _consumer_when_reachable(self, stop: asyncio.Event) -> AIOKafkaConsumer | None:
        """The promotions consumer, started once Kafka answers (an agent started before the
        broker, or during its restart, waits for it: 0.5 s doubling to 5 s, a line per try);
        None if ``stop`` came first."""
        backoff = 0.5
        while not stop.is_set():
            consumer = AIOKafkaConsumer(
                self.config.topic(topics.PROMOTIONS),
                bootstrap_servers=self.config.bootstrap_servers,
                **self.config.kafka_security(),
                group_id=self.config.group_id,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                fetch_max_wait_ms=100,
            )
            try:
                await consumer.start()
                return consumer
            except KafkaError as exc:
                await consumer.stop()  # one that failed to start still holds sockets
                if not (exc.retriable or isinstance(exc, KafkaConnectionError)):
                    raise
                log.warning(
                    "deployer %s: Kafka at %s not reachable (%s); trying again in %.1fs",
                    self._agent, self.config.bootstrap_servers, exc, backoff,
                )  # fmt: skip
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), backoff)
            backoff = min(backoff * 2, 5.0)
        return None

    async def _partition(
        self, consumer: AIOKafkaConsumer, producer: ReportProducer, journal: Journal,
        tp: TopicPartition, batch: PartitionBatch, stop: asyncio.Event,
    ) -> bool:  # fmt: skip
        """Handle one partition's records (and unreadable positions) in order; False if
        stopped with one unfinished."""
        done: int | None = None  # the last offset handled and not yet committed
        for item in batch.items():
            if stop.is_set():
                break
            if isinstance(item, Unreadable):
                sent: bool | None = await self._dead_letter_unreadable(item, producer, stop)
            else:
                sent = await self._handle(item, producer, journal, stop)
            if sent is None:
                return False  # stopped before Kafka had the report: not committed
            done = item.offset  # the consumer's own, whatever the record held
            if sent:  # acted on: commit now, so that a crash hands over nothing done
                await self._commit(consumer, tp, done)
                done = None
        if done is not None:
            await self._commit(consumer, tp, done)
        return True

    async def _commit(self, consumer: AIOKafkaConsumer, tp: TopicPartition, offset: int) -> None:
        try:
            await consumer.commit({tp: offset + 1})
        except KafkaError as exc:  # redelivered then; the journal knows it was done
            log.warning("deployer %s: commit failed (%s)", self._agent, exc)

    async def _handle(
        self, record: KafkaRecord, producer: ReportProducer, journal: Journal, stop: asyncio.Event
    ) -> bool | None:
        """True: something was sent and acknowledged (a report, a dead letter); False: nothing
        to do; None: stopped before Kafka acknowledged what was to be sent."""
        ce_type = _header(record, "ce_type")
        if ce_type in self._known and ce_type != PromotionApproved.TYPE:
            return False  # another kind of event on the topic (promotion.blocked, …)
        try:
            decoded = decode(record, max_bytes=self.config.max_event_bytes)
            if not isinstance(decoded.event, PromotionApproved):
                raise InvalidEvent(f"{ce_type} is not a promotion.approved", field="ce_type")
        except Exception as exc:  # nothing a record holds may stop the agent
            reason = exc.reason if isinstance(exc, InvalidEvent) else f"{type(exc).__name__}: {exc}"
            log.warning("deployer %s: unreadable promotion dead-lettered: %s", self._agent, reason)
            return await self._dead_letter(record, reason, producer, stop)
        promotion = decoded.event
        c = promotion.subject.content
        if c.environment not in self._environments:
            return False
        refused = self._refusal(record, promotion)
        if refused is not None:
            return await self._refuse(record, promotion, refused, producer, stop)
        entry = journal.find(c.promotion_id)
        if entry is not None and entry.reported:
            return False  # handed over again after a crash: done and reported
        if entry is None:
            report, trace_headers = await self._carry_out(promotion, decoded.trace_headers)
            kept = encode(
                report, topic=self.config.topic(report.TOPIC), trace_headers=trace_headers
            )
            entry = journal.acted(c.promotion_id, outcome_of(report), kept)
            self.handled += 1
            log.info("deployer %s: %s", self._agent, report.describe())
        else:
            log.info(
                "deployer %s: %s of %s was not acknowledged; sending it again",
                self._agent, entry.outcome, c.promotion_id,
            )  # fmt: skip
        if not await producer.send_until_acked(entry.report, stop):
            return None
        journal.reported(c.promotion_id)
        return True

    def _refusal(
        self, record: KafkaRecord, promotion: PromotionApproved
    ) -> SignatureRefused | None:
        """Why ``promotion`` must not be deployed (its signature does not hold); None: deploy."""
        try:
            self._trust.verify(
                promotion, signature_of(record), now=datetime.now(UTC),
                retired_grace=self.config.retired_grace,
            )  # fmt: skip
        except SignatureRefused as refused:
            return refused
        return None

    async def _refuse(
        self, record: KafkaRecord, promotion: PromotionApproved, refused: SignatureRefused,
        producer: ReportProducer, stop: asyncio.Event,
    ) -> bool | None:  # fmt: skip
        """Not deployed: a dead letter with the reason, and a ``signature.refused`` event;
        True once Kafka has both (the offset is then committed), None if stopped before."""
        reason = f"signature {refused.reason}: {refused.detail}"
        log.warning("deployer %s: promotion not deployed: %s", self._agent, reason)
        letter = dead_letter(
            record, dlq_topic=self.config.topic(topics.DLQ), error=reason, stage="signature",
            group=self.config.group_id,
        )  # fmt: skip
        report = SignatureRefusal.of(
            service=f"deployer/{self._agent}", source=self.config.source, record=record,
            event=promotion, refused=refused,
        )  # fmt: skip
        for sent in (letter, encode(report, topic=self.config.topic(report.TOPIC))):
            if not await producer.send_until_acked(sent, stop):
                return None
        self.refused += 1
        self.dead_lettered += 1
        return True

    async def _dead_letter_unreadable(
        self, unreadable: Unreadable, producer: ReportProducer, stop: asyncio.Event
    ) -> bool | None:
        """A position whose record the Kafka client could not decode: dead-lettered with what
        there is of it (its position, the error, the bytes the error holds)."""
        log.warning("deployer %s: %s", self._agent, unreadable.error)
        return await self._dead_letter(unreadable.record, unreadable.error, producer, stop)

    async def _dead_letter(
        self, record: KafkaRecord, reason: str, producer: ReportProducer, stop: asyncio.Event
    ) -> bool | None:
        """True once Kafka acknowledged the dead letter; None if stopped before."""
        letter = dead_letter(
            record, dlq_topic=self.config.topic(topics.DLQ), error=reason, stage="decode",
            group=self.config.group_id,
        )  # fmt: skip
        if not await producer.send_until_acked(letter, stop):
            return None
        self.dead_lettered += 1
        return True

    async def _carry_out(
        self, promotion: PromotionApproved, headers: dict[str, str]
    ) -> tuple[Report, dict[str, str]]:
        """Deploy in a span that continues the promotion's trace; the report, and the trace
        headers it goes with (the span's)."""
        c = promotion.subject.content
        with self._tracer.start_as_current_span(
            f"{'roll back' if c.rollback else 'deploy'} to {c.environment}",
            context=propagate.extract(headers),
            kind=SpanKind.CONSUMER,
            attributes={
                "lockstep.artifact": f"{c.service}@{c.version}",
                "lockstep.agent": self._agent,
                "lockstep.promotion": c.promotion_id,
            },
        ) as span:
            report = await act_on(promotion, self._deployer, agent=self._agent)
            outcome = {"failed": "failed", "rolledback": "rolled back"}.get(
                outcome_of(report), "deployed"
            )
            span.set_attribute("lockstep.outcome", outcome)
            carrier: dict[str, str] = {}
            propagate.inject(carrier)
        return report, {k: v for k, v in carrier.items() if k in ("traceparent", "tracestate")}


def _header(record: KafkaRecord, name: str) -> str | None:
    for k, v in record.headers:
        if k == name:
            return v.decode("utf-8", errors="replace") if isinstance(v, bytes) else None
    return None
