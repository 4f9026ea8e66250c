"""The contract's safe fetch (``events.kafka.SafeFetcher``) against a fake consumer that fails
as aiokafka's does: a record it cannot decode (a header name that is not UTF-8) makes
``getmany`` raise on every fetch of its partition, and the records already taken from other
partitions in that fetch are lost to the caller (their positions have moved on)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import IllegalOperation, KafkaConnectionError

from events import KafkaRecord
from events.kafka import (
    PartitionBatch,
    SafeFetcher,
    Unreadable,
    dead_letter,
    fetch_safely,
    reason_of,
    unreadable_fetch,
)

T = "ns.artifacts"
P0, P1, P2 = (TopicPartition(T, p) for p in range(3))
BAD_NAME = b"\xff\xfeX"


def bad_name_error() -> UnicodeDecodeError:
    try:
        BAD_NAME.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc
    raise AssertionError("unreachable")


class FakeConsumer:
    """Partitions of records (``None``: one the client cannot decode), fetched in partition
    order as aiokafka's fetcher drains its buffer."""

    def __init__(
        self, logs: dict[TopicPartition, list[bool]], committed: dict[Any, int] | None = None
    ):
        self.logs = logs  # per partition, per offset: True = readable
        self.positions = dict.fromkeys(logs, 0)
        self._committed = committed
        self.fetches = 0

    def assignment(self) -> set[TopicPartition]:
        return set(self.logs)

    async def position(self, tp: TopicPartition) -> int:
        return self.positions[tp]

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.positions[tp] = offset

    async def committed(self, tp: TopicPartition) -> int | None:
        if self._committed is None:
            raise IllegalOperation("Requires group_id")
        return self._committed.get(tp)

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: len(self.logs[tp]) for tp in tps}

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[Any]]:
        self.fetches += 1
        drained: dict[TopicPartition, list[Any]] = {}
        left = max_records
        for tp in sorted(partitions or self.logs):
            start = self.positions[tp]
            end = len(self.logs[tp]) if left is None else min(len(self.logs[tp]), start + left)
            taken = []
            for offset in range(start, end):
                if not self.logs[tp][offset]:
                    raise bad_name_error()  # what was drained so far is lost with the fetch
                taken.append(self._record(tp, offset))
            if taken:
                self.positions[tp] = end
                drained[tp] = taken
                if left is not None:
                    left -= len(taken)
                    if left == 0:
                        break
        return drained

    @staticmethod
    def _record(tp: TopicPartition, offset: int) -> Any:
        return SimpleNamespace(
            topic=tp.topic, partition=tp.partition, offset=offset, key=b"k",
            value=f"{tp.partition}/{offset}".encode(), headers=(("ce_type", b"t"),),
            timestamp=1_700_000_000_000 + offset,
        )  # fmt: skip


async def read_all(
    fetcher: SafeFetcher, rounds: int = 30, max_records: int | None = None
) -> tuple[
    dict[TopicPartition, list[int]], list[Unreadable], list[dict[TopicPartition, PartitionBatch]]
]:
    good: dict[TopicPartition, list[int]] = {}
    bad: list[Unreadable] = []
    fetches = []
    for _ in range(rounds):
        got = await fetcher.getmany(timeout_ms=10, max_records=max_records)
        fetches.append(got)
        for tp, batch in got.items():
            if batch.records:
                good.setdefault(tp, []).extend(r.offset for r in batch.records)
            bad.extend(batch.unreadable)
            offsets = [item.offset for item in batch.items()]
            assert offsets == sorted(offsets)
            assert batch.next_offset == offsets[-1] + 1
    return good, bad, fetches


def fast(consumer: FakeConsumer) -> SafeFetcher:
    return SafeFetcher(consumer, step_timeout_ms=1, empty_polls=2)


async def test_a_bad_record_in_one_partition_loses_nothing_of_another() -> None:
    # P0 is drained first in the fetch that then fails on P1's offset 2
    consumer = FakeConsumer({P0: [True] * 5, P1: [True, True, False, True, True]})
    good, bad, _ = await read_all(fast(consumer))
    assert good == {P0: [0, 1, 2, 3, 4], P1: [0, 1, 3, 4]}  # none lost, none twice
    assert [(u.topic, u.partition, u.offset) for u in bad] == [(T, 1, 2)]
    [u] = bad
    assert u.raw == BAD_NAME and "header name is not UTF-8" in u.error
    assert "UnicodeDecodeError" in u.exception


async def test_records_given_before_the_failed_fetch_are_not_given_again() -> None:
    consumer = FakeConsumer({P0: [True] * 6, P1: [True] * 3 + [False] + [True] * 2})
    fetcher = fast(consumer)
    first = await fetcher.getmany(timeout_ms=10, max_records=2)  # P0 0-1
    assert [r.offset for r in first[P0].records] == [0, 1]
    good, bad, _ = await read_all(fetcher)
    good[P0] = [0, 1, *good.get(P0, [])]
    assert good == {P0: [0, 1, 2, 3, 4, 5], P1: [0, 1, 2, 4, 5]}
    assert [u.offset for u in bad] == [3]


async def test_two_bad_records_in_a_row_are_each_reported_and_passed() -> None:
    consumer = FakeConsumer({P0: [True, False, False, True], P1: [True, True]})
    good, bad, _ = await read_all(fast(consumer))
    assert good == {P0: [0, 3], P1: [0, 1]}
    assert [(u.partition, u.offset) for u in bad] == [(0, 1), (0, 2)]


async def test_a_bad_record_at_the_end_is_reported_and_the_partition_goes_on() -> None:
    consumer = FakeConsumer({P0: [True, True, False], P1: [True], P2: [False]})
    fetcher = fast(consumer)
    good, bad, _ = await read_all(fetcher)
    assert good == {P0: [0, 1], P1: [0]}
    assert sorted((u.partition, u.offset) for u in bad) == [(0, 2), (2, 0)]
    consumer.logs[P0].append(True)  # a later record after it is read as usual
    later = await fetcher.getmany(timeout_ms=10)
    assert [r.offset for r in later[P0].records] == [3] and later[P0].unreadable == ()


async def test_a_recovery_respects_max_records_and_what_the_group_committed() -> None:
    consumer = FakeConsumer({P0: [True] * 4, P1: [False] + [True] * 5}, committed={P0: 1, P1: None})
    consumer.seek(P0, 1)  # where the group left it
    fetcher = fast(consumer)
    good, bad, fetches = await read_all(fetcher, max_records=3)
    assert good == {P0: [1, 2, 3], P1: [1, 2, 3, 4, 5]}
    assert [u.offset for u in bad] == [0]
    assert all(sum(len(b) for b in f.values()) <= 3 for f in fetches)


async def test_records_are_kafka_records_with_their_timestamps() -> None:
    consumer = FakeConsumer({P0: [True, True]})
    got = await fast(consumer).getmany(timeout_ms=10)
    [first, second] = got[P0].records
    assert isinstance(first, KafkaRecord) and first.value == b"0/0"
    assert first.header("ce_type") == "t"
    assert got[P0].timestamp(second) == 1_700_000_000_001


async def test_an_error_that_is_not_about_the_records_is_raised() -> None:
    class Away(FakeConsumer):
        async def getmany(self, *a: Any, **kw: Any) -> dict[TopicPartition, list[Any]]:
            raise KafkaConnectionError("broker away")

    with pytest.raises(KafkaConnectionError):
        await fast(Away({P0: [True]})).getmany(timeout_ms=10)
    assert not unreadable_fetch(KafkaConnectionError("x")) and unreadable_fetch(bad_name_error())


async def test_fetch_safely_keeps_one_fetcher_per_consumer() -> None:
    consumer = FakeConsumer({P0: [True, False, True], P1: [True]})
    seen: list[int] = []
    bad: list[int] = []
    for _ in range(30):
        for batch in (await fetch_safely(consumer, timeout_ms=1)).values():
            seen.extend(r.offset for r in batch.records if r.partition == 0)
            bad.extend(u.offset for u in batch.unreadable)
    assert (seen, bad) == ([0, 2], [1])


def test_the_dead_letter_of_an_unreadable_position_names_it_and_keeps_its_bytes() -> None:
    u = Unreadable.of(P1, 7, bad_name_error())
    letter = dead_letter(u.record, dlq_topic="ns.dlq", error=u.error, stage="decode", group="g")
    assert (letter.topic, letter.key, letter.value) == ("ns.dlq", None, BAD_NAME)
    why = reason_of(letter)
    assert (why["topic"], why["partition"], why["offset"], why["stage"]) == (T, "1", "7", "decode")
    assert "ns.artifacts[1]@7" in why["error"] and why["attempts"] == "1"


def test_importing_the_contract_does_not_load_the_kafka_client() -> None:
    code = (
        "import sys, events; print('aiokafka' in sys.modules); "
        "events.SafeFetcher; print('aiokafka' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True,
        cwd=Path(__file__).resolve().parents[2],
    ).stdout.split()  # fmt: skip
    assert out == ["False", "True"]
