"""Offline replay: historical events (JSONL files, `.gz`, stdin, or a Kafka topic range) through the
same `Pipeline` as the live worker, on event time. Alerts are collected by id, so the output holds
each alert once, in its final state.
"""

from __future__ import annotations

import gzip
import io
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from gatewatch.pipeline import Pipeline
from ingest.deadletter import DeadLetter
from ingest.events import Source
from scoring.alerts import Alert

BATCH = 5_000


@dataclass
class ReplayResult:
    events: int = 0
    records: int = 0
    alerts: dict[str, Alert] = field(default_factory=dict)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    anomaly_model: str = "silent"  # the behaviour scorer's status: "active" or "silent"
    seconds: float = 0.0  # wall time of the replay (reading, decoding, detection, scoring), for the summary

    @property
    def events_per_second(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0


def _open(path: str) -> IO[bytes]:
    if path == "-":
        return sys.stdin.buffer
    p = Path(path)
    if p.suffix == ".gz":
        return gzip.open(p, "rb")  # type: ignore[return-value]
    return open(p, "rb")


def read_jsonl(paths: Iterable[str]) -> Iterator[tuple[bytes, Source]]:
    """(line, source) for every non-blank line; the source is (file name, 0, line number)."""
    for path in paths:
        name = "stdin" if path == "-" else Path(path).name
        stream = _open(path)
        try:
            for lineno, line in enumerate(stream, start=1):
                line = line.rstrip(b"\r\n")
                if line.strip():
                    yield line, Source(name, 0, lineno)
        finally:
            if stream is not sys.stdin.buffer:
                stream.close()


def _batches(records: Iterable[tuple[bytes, Source]], size: int) -> Iterator[list[tuple[bytes, Source]]]:
    batch: list[tuple[bytes, Source]] = []
    for rec in records:
        batch.append(rec)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def replay(pipeline: Pipeline, records: Iterable[tuple[bytes, Any]], *, batch_size: int = BATCH,
           progress: IO[str] | None = None, finish: bool = True) -> ReplayResult:
    """Every record through `pipeline`; with `finish` (the end of the stream) the last open behaviour
    windows are scored too — leave it off when more of the same stream follows through the same pipeline."""
    out = ReplayResult()
    started = time.perf_counter()  # throughput for people; nothing detected depends on it
    if pipeline.behaviour is not None:
        out.anomaly_model = pipeline.behaviour.status
    for batch in _batches(records, batch_size):
        result = pipeline.process(batch)
        out.records += len(batch)
        out.events += result.events
        out.dead_letters += result.dead_letters
        for alert in result.alerts:
            out.alerts[alert.id] = alert
        if progress is not None:
            rate = out.records / max(time.perf_counter() - started, 1e-9)
            print(f"\r{out.records:,} records  {rate:,.0f} events/s  {len(out.alerts):,} alerts  "
                  f"{len(out.dead_letters):,} dead-lettered", end="", file=progress, flush=True)
    if finish:
        for alert in pipeline.finish().alerts:
            out.alerts[alert.id] = alert
    out.seconds = time.perf_counter() - started
    if progress is not None:
        print(file=progress)
    return out


def read_topic_range(kafka: Any, topic: str, since: float, until: float | None) -> Iterator[tuple[bytes, Source]]:
    """Records of `topic` whose broker timestamp is in [since, until), via Kafka's time index."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=kafka.bootstrap_servers, enable_auto_commit=False,
                             group_id=None, client_id="gatewatch-replay")
    try:
        parts = consumer.partitions_for_topic(topic)
        if not parts:
            raise LookupError(f"topic {topic!r} not found on {kafka.bootstrap_servers}")
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        starts = consumer.offsets_for_times({tp: int(since * 1000) for tp in tps})
        ends = consumer.end_offsets(tps)
        if until is not None:
            stops = consumer.offsets_for_times({tp: int(until * 1000) for tp in tps})
            ends = {tp: (stops[tp].offset if stops.get(tp) else ends[tp]) for tp in tps}
        live = set()
        for tp in tps:
            start = starts.get(tp)
            if start is None or start.offset >= ends[tp]:
                continue
            consumer.seek(tp, start.offset)
            live.add(tp)
        while live:
            polled = consumer.poll(timeout_ms=1000)
            for tp, messages in polled.items():
                for m in messages:
                    if tp in live and m.offset < ends[tp]:
                        yield (m.value or b""), Source(m.topic, m.partition, m.offset)
                if tp in live and consumer.position(tp) >= ends[tp]:
                    live.discard(tp)
                    consumer.pause(tp)
    finally:
        consumer.close()


def write_alerts(alerts: Iterable[Alert], out: IO[str]) -> int:
    n = 0
    for alert in sorted(alerts, key=lambda a: (a.first_seen, a.id)):
        out.write(alert.model_dump_json() + "\n")
        n += 1
    return n


def text_out(path: str) -> IO[str]:
    return sys.stdout if path == "-" else io.open(path, "w", encoding="utf-8")
