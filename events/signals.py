"""Health signals: what observability tools publish (``signal.observed``), directly or through
Lockstep's webhook edge (Prometheus Alertmanager, PagerDuty Events API v2)."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Literal

from pydantic import Field

from events import topics
from events._artifact_ref import NAME_PATTERN
from events._base import CDEvent, EventTime, Model, utc_now

NAME = NAME_PATTERN
SignalStatus = Literal["firing", "acknowledged", "resolved"]
Severity = Literal["critical", "error", "warning", "info"]


class SignalContent(Model):
    service: str = Field(pattern=NAME)
    environment: str = Field(pattern=NAME)
    metric: str = Field(min_length=1, max_length=200, description="e.g. error_rate, p99_latency")
    value: float | None = Field(default=None, description="The measurement (alerts: none)")
    window_seconds: int | None = Field(
        default=None, alias="windowSeconds", ge=0, description="What the value is computed over"
    )
    source: str = Field(min_length=1, description="The tool: prometheus, alertmanager, …")
    observed_at: EventTime = Field(
        alias="observedAt",
        description="When it was true, not when sent (RFC 3339): from 2000 to a day from now",
    )
    kind: Literal["metric", "alert"] = "metric"
    status: SignalStatus = "firing"
    dedup_key: str | None = Field(default=None, alias="dedupKey", min_length=1, max_length=255)
    severity: Severity | None = None
    summary: str | None = Field(default=None, max_length=1024)
    labels: dict[str, str] = Field(default_factory=dict)


class SignalSubject(Model):
    id: str = Field(min_length=1, description="<service>/<environment>/<metric>")
    source: str | None = None
    content: SignalContent


class SignalObserved(CDEvent):
    """A measurement or an alert about a service in an environment."""

    TYPE: ClassVar[str] = "dev.cdeventsx.lockstep-signal.observed.0.1.0"
    TOPIC: ClassVar[str] = topics.SIGNALS
    SUMMARY: ClassVar[str] = "signal observed"
    HINT: ClassVar[str] = (
        "subject.content needs service, environment, metric, source and observedAt; a metric "
        "signal carries value (and windowSeconds), an alert carries status"
    )
    INBOUND: ClassVar[bool] = True

    subject: SignalSubject

    @classmethod
    def build(
        cls,
        *,
        service: str,
        environment: str,
        metric: str,
        value: float | None,
        source: str,
        observed_at: datetime | None = None,
        window_seconds: int | None = None,
        kind: Literal["metric", "alert"] = "metric",
        status: SignalStatus = "firing",
        dedup_key: str | None = None,
        severity: Severity | None = None,
        summary: str | None = None,
        labels: dict[str, str] | None = None,
    ) -> SignalObserved:
        return cls(
            context=cls.new_context(f"lockstep/signals/{source}"),
            subject=SignalSubject(
                id=f"{service}/{environment}/{metric}",
                content=SignalContent(
                    service=service,
                    environment=environment,
                    metric=metric,
                    value=value,
                    window_seconds=window_seconds,
                    source=source,
                    observed_at=observed_at or utc_now(),
                    kind=kind,
                    status=status,
                    dedup_key=dedup_key,
                    severity=severity,
                    summary=summary,
                    labels=labels or {},
                ),
            ),
        )

    def partition_key(self) -> str:
        c = self.subject.content
        return f"{c.service}/{c.environment}"

    def describe(self) -> str:
        c = self.subject.content
        what = f"{c.metric}={c.value:g}" if c.value is not None else f"{c.metric} {c.status}"
        return f"{c.service} in {c.environment}: {what} ({c.source})"
