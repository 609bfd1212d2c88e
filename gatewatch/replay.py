"""Offline replay: historical events (JSONL files, `.gz`, stdin, or a Kafka topic range) through the
same `Pipeline` as the live worker, on event time. Alerts are collected by id, so the output holds
each alert once, in its final state.

Memory does not grow with bad input: each record is decoded as it is read (a batch holds decoded events,
never raw lines beside them), and a dead letter goes to the `--dlq` file at once; the result keeps only
counts per code.
"""

from __future__ import annotations

import gzip
import io
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from gatewatch.pipeline import Pipeline
from gatewatch.settings import IngestSettings
from ingest.deadletter import DeadLetter
from ingest.events import Event, Source
from scoring.alerts import Alert

BATCH = 5_000
# A batch also ends once its records add up to this many bytes. Its decoded events are all in memory at
# once, and a decoded string takes up to 4 bytes a character (one emoji makes a whole str UCS-4): 5,000
# records of 60 KB held ~1 GB. Ordinary logs (≈ 1 KB a line, 5 MB a batch) never reach it.
BATCH_BYTES = 32 * 1024 * 1024


@dataclass
class ReplayResult:
    events: int = 0
    records: int = 0
    alerts: dict[str, Alert] = field(default_factory=dict)
    dead_letter_codes: Counter[str] = field(default_factory=Counter)  # by code, in order of first occurrence
    anomaly_model: str = "silent"  # the behaviour scorer's status: "active" or "silent"
    seconds: float = 0.0  # wall time of the replay (reading, decoding, detection, scoring), for the summary

    @property
    def events_per_second(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0

    @property
    def dead_letters(self) -> int:
        return sum(self.dead_letter_codes.values())


class DeadLetterLog:
    """Dead letters as they occur: counted by code and, with `out`, written there at once as JSON lines
    (`DeadLetter.to_json`); nothing of the record is kept."""

    def __init__(self, out: IO[str] | None = None) -> None:
        self.out = out
        self.codes: Counter[str] = Counter()

    def __call__(self, dead: DeadLetter) -> None:
        self.codes[dead.code] += 1
        if self.out is not None:
            self.out.write(dead.to_json().decode("ascii"))
            self.out.write("\n")

    @property
    def total(self) -> int:
        return sum(self.codes.values())


def use_format(pipeline: Pipeline, ingest: IngestSettings, name: str) -> None:
    """Every record `pipeline` decodes is in log format `name` (`replay --format`; "gatewatch" is the contract's
    own), whatever its source: `[ingest] formats`, which names input topics, then does not apply."""
    pipeline.decoder.set_formats({}, ingest.adapter(name))


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


def decoded_batches(pipeline: Pipeline, records: Iterable[tuple[bytes, Any]], size: int,
                    dead_letter: Callable[[DeadLetter], None],
                    max_bytes: int = BATCH_BYTES) -> Iterator[tuple[int, list[Event]]]:
    """(records, events) per batch of `size` records, or fewer once the records decoded add up to
    `max_bytes`; each record decoded as it is read, and one that does not decode goes to `dead_letter` at
    once (and into `pipeline.stats`). `replay` and every job of `replay_jobs` cut the same batches."""
    events: list[Event] = []
    n = held = 0
    for raw, source in records:
        decoded = pipeline.decode_one(raw, source)
        if isinstance(decoded, DeadLetter):
            pipeline.count_dead((decoded,))
            dead_letter(decoded)
        else:
            events.append(decoded)
            held += len(raw)  # what the batch holds decoded (a dead letter is gone already)
        del raw, decoded
        n += 1
        if n >= size or held >= max_bytes:
            yield n, events
            events, n, held = [], 0, 0
    if n:
        yield n, events


def replay(pipeline: Pipeline, records: Iterable[tuple[bytes, Any]], *, batch_size: int = BATCH,
           progress: IO[str] | None = None, finish: bool = True, dlq: IO[str] | None = None) -> ReplayResult:
    """Every record through `pipeline`; with `finish` (the end of the stream) the last open behaviour
    windows are scored too — leave it off when more of the same stream follows through the same pipeline.
    Dead letters are written to `dlq` (when given) as they occur, and counted by code."""
    out = ReplayResult()
    dead = DeadLetterLog(dlq)
    out.dead_letter_codes = dead.codes
    started = time.perf_counter()  # throughput for people; nothing detected depends on it
    if pipeline.behaviour is not None:
        out.anomaly_model = pipeline.behaviour.status
    for n, events in decoded_batches(pipeline, records, batch_size, dead):
        result = pipeline.process_decoded(events, ())
        del events
        out.records += n
        out.events += result.events
        for d in result.dead_letters:  # detect and scoring errors of the batch, after its decode errors
            dead(d)
        for alert in result.alerts:
            out.alerts[alert.id] = alert
        if progress is not None:
            rate = out.records / max(time.perf_counter() - started, 1e-9)
            print(f"\r{out.records:,} records  {rate:,.0f} events/s  {len(out.alerts):,} alerts  "
                  f"{dead.total:,} dead-lettered", end="", file=progress, flush=True)
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
