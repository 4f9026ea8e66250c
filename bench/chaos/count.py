"""What the topics themselves say, read from the beginning after the run, and the consumer
groups' lag while it drains."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition

from events import InvalidEvent, decode
from events._envelope import KafkaRecord
from shared.bus.admin import partitions_of
from shared.bus.consumer import record_from_kafka
from shared.bus.kafka_client import kafka_admin, kafka_consumer
from shared.settings import Settings


async def read_all(
    settings: Settings, logical: str, start: dict[int, int] | None = None
) -> list[Any]:
    """Every record of ``<ns>.<logical>`` from offset 0 (or, per partition, ``start``) to the
    end as it is now."""
    topic = settings.topic(logical)
    consumer = kafka_consumer(
        settings, enable_auto_commit=False,
        client_id="chaos-count", max_partition_fetch_bytes=4 * 1024 * 1024,
        fetch_max_bytes=16 * 1024 * 1024,
    )  # fmt: skip
    parts = await partitions_of(settings, [topic], timeout_s=30.0)
    await consumer.start()
    try:
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        for tp in parts:
            if start and start.get(tp.partition):
                consumer.seek(tp, start[tp.partition])
        ends = await consumer.end_offsets(parts)
        out: list[Any] = []

        async def behind() -> bool:
            return any([await consumer.position(tp) < ends[tp] for tp in parts])

        while await behind():
            batch = await consumer.getmany(timeout_ms=1000, max_records=5000)
            for records in batch.values():
                out.extend(records)
        return out
    finally:
        await consumer.stop()


def decoded(records: list[Any]) -> list[tuple[Any, Any]]:
    """(raw record, event) of every record that reads as an event."""
    out = []
    for r in records:
        try:
            out.append((r, decode(record_from_kafka(r)).event))
        except InvalidEvent:
            continue
    return out


@dataclass
class Tally:
    """One thing that must happen once per expected key."""

    name: str
    expected: set[str]
    seen: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))  # key -> ids
    redelivered: int = 0  # the same event (ce_id) again: at-least-once, skipped by inboxes

    def note(self, key: str, identity: str, ce_id: str, ce_ids: set[str]) -> None:
        if ce_id in ce_ids:
            self.redelivered += 1
            return
        ce_ids.add(ce_id)
        self.seen[key].add(identity)

    def figures(self) -> dict[str, Any]:
        lost = sorted(self.expected - set(self.seen))
        dup = {k: sorted(v) for k, v in self.seen.items() if len(v) > 1}
        unexpected = sorted(set(self.seen) - self.expected)
        return {
            "expected": len(self.expected),
            "exactly_once": sum(1 for k in self.expected if len(self.seen.get(k, ())) == 1),
            "lost": len(lost),
            "duplicated": len(dup),
            "unexpected": len(unexpected),
            "redelivered_same_event": self.redelivered,
            "lost_examples": lost[:10],
            "duplicated_examples": dict(list(dup.items())[:10]),
            "unexpected_examples": unexpected[:10],
        }


def header(record: KafkaRecord | Any, name: str) -> str | None:
    for k, v in record.headers or ():
        if k == name and v is not None:
            return bytes(v).decode("utf-8", errors="replace")
    return None


class Lag:
    """The namespace's consumer groups: committed offsets against the end offsets. A partition
    with lag whose committed offset has not moved for ``stuck_s`` is stuck."""

    def __init__(self, settings: Settings, stuck_s: float) -> None:
        self._settings = settings
        self._stuck_s = stuck_s
        self._moved: dict[tuple[str, TopicPartition], tuple[int, float]] = {}

    async def sample(self) -> dict[tuple[str, TopicPartition], int]:
        s = self._settings
        admin = kafka_admin(s, client_id="chaos-lag")
        consumer = kafka_consumer(s, client_id="chaos-lag")
        await admin.start()
        await consumer.start()
        try:
            groups = [
                g[0]
                for g in await admin.list_consumer_groups()
                if g[0].startswith(s.namespace + ".")
            ]
            committed: dict[tuple[str, TopicPartition], int] = {}
            for g in groups:
                for tp, meta in (await admin.list_consumer_group_offsets(g)).items():
                    committed[(g, tp)] = meta.offset
            ends = await consumer.end_offsets(list({tp for _, tp in committed}))
        finally:
            await consumer.stop()
            await admin.close()
        now = time.monotonic()
        lags = {}
        for key, offset in committed.items():
            lags[key] = max(0, ends[key[1]] - max(offset, 0))
            last = self._moved.get(key)
            if last is None or last[0] != offset:
                self._moved[key] = (offset, now)
        return lags

    def stuck(self, lags: dict[tuple[str, TopicPartition], int]) -> list[str]:
        now = time.monotonic()
        return [
            f"{g} {tp.topic}[{tp.partition}] lag {lag}, offset unmoved "
            f"{now - self._moved[(g, tp)][1]:.0f}s"
            for (g, tp), lag in lags.items()
            if lag > 0 and now - self._moved[(g, tp)][1] > self._stuck_s
        ]


async def wait_drained(
    lag: Lag, done: Any, timeout_s: float, say: Any
) -> tuple[bool, list[str], dict[str, int]]:
    """Until ``done()`` (awaitable -> bool) or a stuck partition or the timeout; returns
    (drained, stuck partitions, total lag per group)."""
    deadline = time.monotonic() + timeout_s
    last_say = 0.0
    while True:
        try:
            lags = await lag.sample()
        except Exception as exc:  # a broker moving: sample again
            say(f"lag sample failed ({type(exc).__name__}: {exc}); again")
            await asyncio.sleep(2)
            continue
        per_group: dict[str, int] = defaultdict(int)
        for (g, _), n in lags.items():
            per_group[g] += n
        if await done():
            return True, [], dict(per_group)
        stuck = lag.stuck(lags)
        if stuck:
            return False, stuck, dict(per_group)
        if time.monotonic() > deadline:
            return False, [], dict(per_group)
        if time.monotonic() - last_say > 10:
            say(f"draining: lag {dict(per_group)}")
            last_say = time.monotonic()
        await asyncio.sleep(2)
