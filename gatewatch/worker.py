"""The live worker: a consumer-group member on the input topics, driving the `Pipeline`.

Loop: poll a batch → pipeline.process → sinks.write → sinks.flush (durable) → commit the next
offsets. Manual commits only, so a crash between flush and commit re-processes the batch, which
rewrites the same alert ids (idempotent) instead of losing anything.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, OffsetAndMetadata

from gatewatch.pipeline import Pipeline
from gatewatch.sinks import ResultSink
from ingest.events import Source


@dataclass
class WorkerOptions:
    idle_exit_seconds: float | None = None  # stop after this long without records (demo, tests)
    max_events: int | None = None  # stop after this many input records
    progress: bool = False


def make_consumer(kafka: Any, topics: Sequence[str]) -> KafkaConsumer:
    return KafkaConsumer(
        *topics,
        bootstrap_servers=kafka.bootstrap_servers,
        group_id=kafka.group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=kafka.max_poll_records,
        client_id="gatewatch-worker",
    )


def make_producer(kafka: Any) -> KafkaProducer:
    return KafkaProducer(bootstrap_servers=kafka.bootstrap_servers, acks="all", linger_ms=5,
                         retries=10, client_id="gatewatch-worker")


class Worker:
    def __init__(self, *, consumer: Any, pipeline: Pipeline, sinks: Sequence[ResultSink],
                 poll_timeout_ms: int = 500, options: WorkerOptions | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.consumer = consumer
        self.pipeline = pipeline
        self.sinks = list(sinks)
        self.poll_timeout_ms = poll_timeout_ms
        self.options = options or WorkerOptions()
        self.clock = clock  # wall clock for idling and progress only; detection is on event time
        self.records = 0
        self.batches = 0
        self._stop = False

    def stop(self, *_: Any) -> None:
        self._stop = True

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)

    def run(self) -> None:
        last_data = self.clock()
        last_progress = 0.0
        opts = self.options
        while not self._stop:
            polled = self.consumer.poll(timeout_ms=self.poll_timeout_ms)
            if not polled:
                if not self.consumer.assignment():
                    last_data = self.clock()  # still joining the group: waiting is not idleness
                elif opts.idle_exit_seconds is not None and self.clock() - last_data >= opts.idle_exit_seconds:
                    break
                continue
            last_data = self.clock()
            self.process(polled)
            if opts.progress and self.clock() - last_progress > 1.0:
                last_progress = self.clock()
                stats = self.pipeline.stats
                print(f"\r{self.records:,} records  {sum(stats.signals.values()):,} signals  "
                      f"{stats.dead_letters:,} dead-lettered", end="", file=sys.stderr, flush=True)
            if opts.max_events is not None and self.records >= opts.max_events:
                break
        if opts.progress:
            print(file=sys.stderr)

    def process(self, polled: dict[Any, list[Any]]) -> None:
        raws: list[tuple[bytes, Source | None]] = []
        offsets: dict[Any, OffsetAndMetadata] = {}
        for tp, messages in polled.items():
            for m in messages:
                raws.append((m.value if m.value is not None else b"", Source(m.topic, m.partition, m.offset)))
            if messages:
                offsets[tp] = OffsetAndMetadata(messages[-1].offset + 1, "", -1)
        result = self.pipeline.process(raws)
        for sink in self.sinks:
            sink.write(result)
        for sink in self.sinks:
            sink.flush()  # durable first ...
        self.consumer.commit(offsets)  # ... then the offsets of the next records
        self.records += len(raws)
        self.batches += 1

    def close(self) -> None:
        self.consumer.close()
