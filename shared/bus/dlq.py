"""Dead letters: a record that could not be read, or whose handler kept failing, is kept on the
DLQ topic as it was (same key, value and headers) plus headers that say why and where from."""

from __future__ import annotations

from datetime import UTC, datetime

from events import KafkaRecord, topics

HEADER_PREFIX = topics.DLQ_HEADER_PREFIX
MAX_ERROR_CHARS = 4000  # a reason is a few lines; a handler's exception text can be anything


def dead_letter(
    record: KafkaRecord, *, dlq_topic: str, error: str, stage: str, group: str, attempts: int
) -> KafkaRecord:
    """``stage``: ``decode`` (not a valid event, or not even a record the client could read),
    ``handle`` (its handler failed), ``store`` (Postgres refused it) or ``duplicate`` (an event
    id already handled, with other content). Never raises, whatever the record holds."""
    if len(error) > MAX_ERROR_CHARS:
        error = f"{error[:MAX_ERROR_CHARS]}… ({len(error)} characters)"
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
    kept = tuple(  # header names become Postgres text in the outbox: no NUL, no surrogate
        (_storable(name), value)
        for name, value in record.headers
        if not name.startswith(HEADER_PREFIX)
    )
    extra = tuple((HEADER_PREFIX + k, v.encode("utf-8", "replace")) for k, v in why.items())
    return KafkaRecord(topic=dlq_topic, key=record.key, value=record.value, headers=kept + extra)


def reason_of(record: KafkaRecord) -> dict[str, str]:
    """The ``lockstep.dlq.*`` headers of a dead letter, without the prefix."""
    return {
        k[len(HEADER_PREFIX) :]: (v or b"").decode("utf-8", errors="replace")
        for k, v in record.headers
        if k.startswith(HEADER_PREFIX)
    }


def _storable(name: str) -> str:
    return name.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")
