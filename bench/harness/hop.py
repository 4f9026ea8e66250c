"""One hop of the bare-Kafka floor, run as its own process by ``harness.floor``:

    python bench/harness/hop.py --src T1 --dst T2 --group G --bootstrap HOST:PORT [--linger-ms 2]

It consumes ``--src``, produces each record to ``--dst`` (idempotent, acks=all) and commits
offsets: a Lockstep service's Kafka work, minus Postgres. Stops on SIGTERM. Only aiokafka, and
Lockstep's client settings to log in (``shared.bus.kafka_client``, as admin, from the
``LOCKSTEP_*`` environment): it does not import the rest of the harness (it runs as a
script, not as part of the package)."""

from __future__ import annotations

import argparse
import asyncio
import signal

from shared.bus.kafka_client import kafka_consumer, kafka_producer
from shared.settings import Settings


async def hop(bootstrap: str, src: str, dst: str, group: str, linger_ms: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # The bench's own hop logs in as the bench does (admin: it writes the bench's topics).
    settings = Settings(kafka_bootstrap=bootstrap, kafka_principal="admin")
    consumer = kafka_consumer(
        settings,
        src,
        group_id=group,
        client_id=f"{group}-consumer",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=100,
    )
    producer = kafka_producer(
        settings,
        client_id=f"{group}-producer",
        enable_idempotence=True,
        acks="all",
        linger_ms=linger_ms,
    )
    await consumer.start()
    await producer.start()
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=200, max_records=500)
            if not batches:
                continue
            futures = [
                await producer.send(dst, value=r.value, key=r.key, headers=list(r.headers))
                for records in batches.values()
                for r in records
            ]
            await asyncio.gather(*futures)
            await consumer.commit({tp: rs[-1].offset + 1 for tp, rs in batches.items()})
    finally:
        await producer.stop()
        await consumer.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--src", required=True)
    p.add_argument("--dst", required=True)
    p.add_argument("--group", required=True)
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--linger-ms", type=int, default=2)
    args = p.parse_args()
    asyncio.run(hop(args.bootstrap, args.src, args.dst, args.group, args.linger_ms))


if __name__ == "__main__":
    main()
