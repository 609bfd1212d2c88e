"""The live worker: a consumer-group member on the input topics, driving the `Pipeline`.

Loop: poll → decode → align on event time (`EventTimeAligner`: records are released to the pipeline
in event-time order across partitions) → pipeline → sinks.write → sinks.flush (durable) → commit the
offsets of the first unreleased record of each partition. Manual commits only, so a crash between
flush and commit re-processes records, which rewrites the same alert ids (idempotent) instead of
losing anything. Partitions whose buffer is full are paused: a slow sink slows the worker down, it
never drops records.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer, OffsetAndMetadata

from gatewatch.alignment import EventTimeAligner
from gatewatch.pipeline import Pipeline
from gatewatch.sinks import ResultSink
from ingest.deadletter import DeadLetter
from ingest.events import Event, Source
from scoring.alerts import rfc3339

_UNKNOWN_HIGHWATER_GRACE_SECONDS = 5.0  # a partition whose end is still unknown stops holding others back


@dataclass
class WorkerOptions:
    idle_exit_seconds: float | None = None  # stop after this long without records (demo, tests)
    max_events: int | None = None  # stop after this many input records
    progress: bool = False
    max_buffered_per_partition: int = 5_000  # alignment buffer; a full partition is paused
    report_every_seconds: float = 2.0  # how often `report` gets the worker's figures


def make_consumer(kafka: Any) -> KafkaConsumer:
    """A consumer of the group; the `Worker` subscribes it (with its rebalance listener)."""
    return KafkaConsumer(
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


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, aligner: EventTimeAligner) -> None:
        self.aligner = aligner
        self.dropped = 0

    def on_partitions_revoked(self, revoked: Any) -> None:
        # Released records were committed at the end of their step; what is still buffered was not,
        # so the partition's next owner reads it again.
        self.dropped += self.aligner.revoke(list(revoked))

    def on_partitions_assigned(self, assigned: Any) -> None:
        self.aligner.assign(list(assigned))


class Worker:
    def __init__(self, *, consumer: Any, topics: Sequence[str], pipeline: Pipeline, sinks: Sequence[ResultSink],
                 poll_timeout_ms: int = 500, options: WorkerOptions | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 report: Callable[[dict[str, Any]], None] | None = None, worker_id: str = "worker") -> None:
        self.consumer = consumer
        self.pipeline = pipeline
        self.sinks = list(sinks)
        self.poll_timeout_ms = poll_timeout_ms
        self.options = options or WorkerOptions()
        self.clock = clock  # wall clock for idling, progress and reports only; detection is on event time
        self.report = report
        self.worker_id = worker_id
        self.records = 0
        self.batches = 0
        self.aligner = EventTimeAligner(max_buffered_per_partition=self.options.max_buffered_per_partition)
        self._rebalance = _Rebalance(self.aligner)
        self._paused: set[Any] = set()
        self._unknown_since: dict[Any, float] = {}
        self._last_report = float("-inf")
        self._stop = False
        consumer.subscribe(topics=list(topics), listener=self._rebalance)

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
            self.process(polled)
            if not polled:
                if not self.consumer.assignment():
                    last_data = self.clock()  # still joining the group: waiting is not idleness
                elif opts.idle_exit_seconds is not None and self.clock() - last_data >= opts.idle_exit_seconds:
                    break
                continue
            last_data = self.clock()
            if opts.progress and self.clock() - last_progress > 1.0:
                last_progress = self.clock()
                stats = self.pipeline.stats
                print(f"\r{self.records:,} records  {sum(stats.signals.values()):,} signals  "
                      f"{stats.dead_letters:,} dead-lettered", end="", file=sys.stderr, flush=True)
            if opts.max_events is not None and self.records >= opts.max_events:
                break
        self.drain()
        if opts.progress:
            print(file=sys.stderr)

    def process(self, polled: dict[Any, list[Any]], *, everything: bool = False) -> None:
        """One step: buffer what was polled, release what is aligned, write it durably, commit."""
        for tp, messages in polled.items():
            for m in messages:
                item = self.pipeline.decode_one(m.value if m.value is not None else b"",
                                                Source(m.topic, m.partition, m.offset))
                self.aligner.add(tp, m.offset, item.ts if isinstance(item, Event) else None, item)
            self.records += len(messages)
        self._update_caught_up()
        items, commits = self.aligner.release(everything=everything)
        if items:
            events = [i for i in items if isinstance(i, Event)]
            dead = [i for i in items if isinstance(i, DeadLetter)]
            result = self.pipeline.process_decoded(events, dead)
            for sink in self.sinks:
                sink.write(result)
            for sink in self.sinks:
                sink.flush()  # durable first ...
            self.batches += 1
        if commits:  # ... then the offset of each partition's first record not yet processed
            self.consumer.commit({tp: OffsetAndMetadata(off, "", -1) for tp, off in commits.items()})
        self._flow_control()
        self._maybe_report()

    def drain(self) -> None:
        """Process everything still buffered (stopping: nothing more will come in this run)."""
        if self.aligner.buffered():
            self.process({}, everything=True)
        self._maybe_report(force=True)

    def _update_caught_up(self) -> None:
        now = self.clock()
        for tp in self.consumer.assignment():
            high = self.consumer.highwater(tp)
            if high is None:  # no fetch answer yet: hold the others back, but not forever
                since = self._unknown_since.setdefault(tp, now)
                self.aligner.set_caught_up(tp, now - since >= _UNKNOWN_HIGHWATER_GRACE_SECONDS)
                continue
            self._unknown_since.pop(tp, None)
            self.aligner.set_caught_up(tp, self.consumer.position(tp) >= high)

    def _flow_control(self) -> None:
        assigned = self.consumer.assignment()
        full = {tp for tp in self.aligner.full() if tp in assigned} - self._paused
        if full:
            self.consumer.pause(*full)
            self._paused |= full
        roomy = {tp for tp in self.aligner.roomy() if tp in self._paused}
        gone = self._paused - set(assigned)
        if roomy:
            self.consumer.resume(*(roomy & set(assigned)))
        self._paused -= roomy | gone

    def lag(self) -> dict[str, int]:
        out = {}
        for tp in self.consumer.assignment():
            high = self.consumer.highwater(tp)
            if high is not None:
                out[f"{tp.topic}/{tp.partition}"] = max(0, high - self.consumer.position(tp))
        return out

    def _maybe_report(self, force: bool = False) -> None:
        if self.report is None or (not force and self.clock() - self._last_report < self.options.report_every_seconds):
            return
        self._last_report = self.clock()
        stats = self.pipeline.stats
        wm = self.pipeline.watermark
        self.report({"worker": self.worker_id, "records": self.records, "events": stats.events,
                     "dead_letters": dict(stats.dead_letter_codes), "signals": dict(stats.signals),
                     "lag": self.lag(), "buffered": self.aligner.buffered(),
                     "watermark": rfc3339(wm) if wm != float("-inf") else None})

    def close(self) -> None:
        self.consumer.close()
