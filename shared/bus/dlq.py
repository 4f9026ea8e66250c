"""Dead letters: a record that could not be read, or whose handler kept failing, is kept on the
DLQ topic as it was (same key, value and headers) plus headers that say why and where from."""

from __future__ import annotations

from datetime import UTC, datetime

from events import KafkaRecord, topics

HEADER_PREFIX = topics.DLQ_HEADER_PREFIX


def dead_letter(
    record: KafkaRecord, *, dlq_topic: str, error: str, stage: str, group: str, attempts: int
) -> KafkaRecord:
    """``stage``: ``decode`` (not a valid event) or ``handle`` (its handler failed)."""
    why = {
        "error": error,
        "stage": stage,
        "topic": record.topic,
        "partition": str(record.partition),
        "offset": str(record.offset),
        "group": group,
        "attempts": str(attempts),
        "failed_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
    }
    kept = tuple(  # header names become Postgres text in the outbox: no NUL there
        (name.replace("\x00", "\ufffd"), value)
        for name, value in record.headers
        if not name.startswith(HEADER_PREFIX)
    )
    extra = tuple((HEADER_PREFIX + k, v.encode()) for k, v in why.items())
    return KafkaRecord(topic=dlq_topic, key=record.key, value=record.value, headers=kept + extra)


def reason_of(record: KafkaRecord) -> dict[str, str]:
    """The ``lockstep.dlq.*`` headers of a dead letter, without the prefix."""
    return {
        k[len(HEADER_PREFIX) :]: v.decode("utf-8", errors="replace")
        for k, v in record.headers
        if k.startswith(HEADER_PREFIX)
    }
