"""The worker's output path alone: CPU per record of `KafkaPublisher.publish_many`.

Run: `python benchmarks/publish_batches.py [--records 200000] [--batch 400] [--repeat 3]`
(needs Kafka: `make services`, or TETHER_KAFKA_BOOTSTRAP). It publishes batches of decision-sized
records to a fresh topic, one batch after another as the worker does (the next one queued while
the last is in flight), and prints the process's CPU time per record: the event loop queueing
the records plus the polling thread serving their delivery reports. librdkafka's own threads
(compression, the network) are counted too: they are part of what a record costs the worker.
The topic is deleted afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

from confluent_kafka.admin import AdminClient, NewTopic

from tether.adapters.kafka_config import admin_config
from tether.adapters.kafka_publisher import Entry, KafkaPublisher
from tether.settings import Settings

VALUE = b'{"kind":"decision","workflow_id":"wf-000000","decision":"allow",' + b"x" * 260 + b"}"


async def publish(publisher: KafkaPublisher, topic: str, records: int, batch: int) -> int:
    """Publish `records` records in batches of `batch`, two batches in flight; return failures."""
    failed = 0
    inflight: list[asyncio.Future[list[tuple[Entry, object]]]] = []
    for start in range(0, records, batch):
        entries: list[Entry] = [
            (topic, f"wf-{i % 5000:06d}".encode(), VALUE, None)
            for i in range(start, min(start + batch, records))
        ]
        inflight.append(publisher.publish_many(entries))
        if len(inflight) > 1:
            failed += len(await inflight.pop(0))
    for future in inflight:
        failed += len(await future)
    return failed


def main() -> None:
    """Parse the arguments, run the repeats, print CPU µs per record for each."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000, help="records per repeat")
    parser.add_argument("--batch", type=int, default=400, help="records per publish_many call")
    parser.add_argument("--repeat", type=int, default=3, help="timed repeats (after a warm-up)")
    args = parser.parse_args()
    settings = Settings()
    topic = f"bench-publish-{uuid.uuid4().hex[:10]}"
    admin = AdminClient(admin_config(settings, client_id="bench-publish-admin"))
    replicas = settings.kafka.replication_factor
    for future in admin.create_topics([NewTopic(topic, 6, replicas)]).values():
        future.result(30)
    try:
        with KafkaPublisher(settings, client_id="bench-publish") as publisher:
            asyncio.run(publish(publisher, topic, min(args.records, 20_000), args.batch))
            for i in range(args.repeat):
                cpu, wall = time.process_time(), time.perf_counter()
                failed = asyncio.run(publish(publisher, topic, args.records, args.batch))
                cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
                print(
                    f"repeat {i + 1}: {args.records:,} records in batches of {args.batch}: "
                    f"{cpu / args.records * 1e6:.2f} µs CPU per record "
                    f"({args.records / wall:,.0f} records/s, {failed} failed)"
                )
    finally:
        for future in admin.delete_topics([topic]).values():
            future.result(30)


if __name__ == "__main__":
    main()
