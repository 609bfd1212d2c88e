"""The live worker: a consumer-group member on the input topics, driving the `Pipeline`.

Loop: poll → decode → align on event time (`EventTimeAligner`: records are released to the pipeline
in event-time order across partitions) → pipeline → sinks.write → sinks.flush (durable) → commit the
offsets of the first unreleased record of each partition. Manual commits only, so a crash between
flush and commit re-processes records, which rewrites the same alert ids (idempotent) instead of
losing anything. A broker outage during flush or commit is ridden out: the step is retried until
it succeeds (ingest.delivery), never skipped. Sinks are flushed synchronously per batch, so a
slow store slows the worker down; it never drops records. A partition whose alignment buffer is full
is paused until it drains (`WorkerOptions.max_buffered_per_partition`): bounded memory under skew.
"""

from __future__ import annotations

import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from gatewatch.alignment import EventTimeAligner
from gatewatch.pipeline import BatchResult, Pipeline
from gatewatch.sinks import ResultSink
from ingest.deadletter import DeadLetter
from ingest.delivery import until_done
from ingest.errors import RecordError
from ingest.events import Event, Source
from ingest.kafka_io import (BackPressure, RebalanceHooks, caught_up, commit_offsets, known_position, lag,
                             position_gained, start_offsets, still_assigned)
from ingest.routing import PRINCIPAL, Marks, decode_frame
from scoring.alerts import rfc3339

# How a polled message becomes items for the pipelines — (which pipeline, what item) — and, for the
# re-keyed streams, the source watermarks that travel with them.
ReadItems = list[tuple[str | None, "Event | DeadLetter"]]
RecordReader = Callable[[Any], tuple[ReadItems, "Marks | None"]]


def raw_reader(pipeline: Pipeline) -> RecordReader:
    """Records of the input topics, decoded and validated by the one pipeline (key None)."""
    def read(m: Any) -> tuple[ReadItems, None]:
        return [(None, pipeline.decode_one(m.value if m.value is not None else b"",
                                           Source(m.topic, m.partition, m.offset)))], None
    return read


def keyed_reader(events_topic: str) -> RecordReader:
    """Frames of the re-keyed streams: each event once per key kind it came for, then the frame's source
    watermarks. A foreign record is dead-lettered, never fatal."""
    def read(m: Any) -> tuple[ReadItems, Marks | None]:
        try:
            frame = decode_frame(m.value or b"")
        except (ValueError, TypeError) as exc:
            err = RecordError(f"not a frame of normalised events: {type(exc).__name__}", "bad_internal_record")
            kind = PRINCIPAL if m.topic == events_topic else None
            return [(kind, DeadLetter.from_error(err, m.value or b"", Source(m.topic, m.partition, m.offset),
                                                 stage="detect"))], None
        return [(kind, event) for kinds, event in frame.entries for kind in kinds], frame.marks
    return read

class StopFlag:
    """Set once by a signal or the owner; read by every step that retries through an outage (the worker
    and its ingest stage share one). Not a `threading.Event`: its `set` takes a non-reentrant lock, so a
    second signal arriving inside the first handler's `set` would deadlock; a plain bool cannot."""

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        self._set = True

    def is_set(self) -> bool:
        return self._set


@dataclass
class WorkerOptions:
    idle_exit_seconds: float | None = None  # stop after this long without records (demo, tests)
    max_events: int | None = None  # stop after this many input records
    progress: bool = False
    # Alignment buffer cap ([kafka] max_buffered_per_partition): a partition holding this many unreleased
    # items is paused until half of them are released (ingest.kafka_io.BackPressure) — unless it holds
    # the release point back (EventTimeAligner.full). None: never paused.
    max_buffered_per_partition: int | None = None
    report_every_seconds: float = 2.0  # how often `report` gets the worker's figures


class Worker:
    def __init__(self, *, consumer: Any, topics: Sequence[str], pipeline: Pipeline | dict[str | None, Pipeline],
                 sinks: Sequence[ResultSink], poll_timeout_ms: int = 500, options: WorkerOptions | None = None,
                 clock: Callable[[], float] = time.monotonic, reader: RecordReader | None = None,
                 report: Callable[[dict[str, Any]], None] | None = None, worker_id: str = "worker",
                 warmup_seconds: float = 0.0, watermark_sources: frozenset[str] | None = None,
                 before_poll: Callable[[bool], int] | None = None, joining: Callable[[], bool] | None = None,
                 stop: StopFlag | None = None, wall_clock: Callable[[], float] = time.time) -> None:
        self.consumer = consumer
        # One pipeline for the raw input topics (key None), or one per re-keyed stream kind.
        self.pipelines = pipeline if isinstance(pipeline, dict) else {None: pipeline}
        self.pipeline = next(iter(self.pipelines.values()))
        self.reader = reader if reader is not None else raw_reader(self.pipeline)
        self.warmup_seconds = warmup_seconds
        self.sinks = list(sinks)
        self.poll_timeout_ms = poll_timeout_ms
        self.options = options or WorkerOptions()
        self.clock = clock  # wall clock for idling, progress and reports only; detection is on event time
        self.report = report
        self.worker_id = worker_id
        self.records = 0
        self.batches = 0
        # Re-keyed streams (`watermark_sources`: the input partitions) align on their source watermarks.
        self.aligner = EventTimeAligner(max_buffered_per_partition=self.options.max_buffered_per_partition
                                        or 2**62, sources=watermark_sources)
        self._warm_until: dict[Any, int] = {}  # partition -> first offset processed for real
        self._held: dict[Any, int] = {}  # partitions this worker has state for -> next offset it committed
        self.wall_clock = wall_clock  # where warm-up starts reading (the time index)
        self.warmed_partitions = 0
        self.to_warm_up: list[Any] = []  # partitions gained in the last poll, to warm up before processing
        self.parked: dict[Any, Any] = {}  # buffers of partitions revoked by the last rebalance
        self.last_polled = 0  # items the last poll returned (a frame holds several; watermarks not counted)
        self.last_released = 0  # records the last step released to the pipelines
        self.lag_at_exit: int | None = None
        # Called before each poll with "did the last poll return records?" (the ingest stage of a keyed
        # worker, which then need not wait); the records it handled count as activity.
        self.before_poll = before_poll
        self.joining = joining  # another consumer of this process still joining its group
        self.back_pressure = BackPressure(consumer)
        self.peak_buffered = 0  # the most records the alignment buffer held after a step
        self._unknown_since: dict[Any, float] = {}
        self._last_report = float("-inf")
        self.stop_flag = stop if stop is not None else StopFlag()
        self.hooks = RebalanceHooks(revoked=self._revoked, assigned=self._assigned)
        consumer.subscribe(topics=list(topics), listener=self.hooks)

    def _revoked(self, revoked: list[Any]) -> None:
        # Released records were committed at the end of their step; what is still buffered was not:
        # the partition's next owner reads it again — unless that is this worker (see `warm_up`).
        self.parked.update(self.aligner.park(revoked))

    def _assigned(self, assigned: list[Any]) -> None:
        self.aligner.assign(assigned)
        self.to_warm_up.extend(assigned)  # positioned after the poll returns (`warm_up`)

    def stop(self, *_: Any) -> None:
        self.stop_flag.set()

    def stopping(self) -> bool:
        return self.stop_flag.is_set()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)

    def run(self) -> None:
        last_data = self.clock()
        last_progress = 0.0
        opts = self.options
        while not self.stopping():
            fed = self.before_poll(self.last_polled > 0) if self.before_poll is not None else 0
            self.back_pressure.before_poll()
            polled = self._ask(partial(self.consumer.poll, timeout_ms=0 if fed else self.poll_timeout_ms), "polling")
            self.process(polled)
            if not self.last_polled and not self.last_released and not fed:
                if self.hooks.rebalancing or (self.joining is not None and self.joining()):
                    last_data = self.clock()  # still joining the group: waiting is not idleness
                elif opts.idle_exit_seconds is not None and self.clock() - last_data >= opts.idle_exit_seconds:
                    lag = sum(self.lag().values())
                    if not lag or self.clock() - last_data >= 3 * opts.idle_exit_seconds:
                        if lag:  # records left unread: said, never silent (see lag_at_exit)
                            print(f"gatewatch run: idle exit with {lag} records unread", file=sys.stderr,
                                  flush=True)
                        break
                continue
            last_data = self.clock()
            if opts.progress and self.clock() - last_progress > 1.0:
                last_progress = self.clock()
                stats = self.stats()
                print(f"\r{self.records:,} records  {sum(stats['signals'].values()):,} signals  "
                      f"{sum(stats['dead_letters'].values()):,} dead-lettered", end="", file=sys.stderr, flush=True)
            if opts.max_events is not None and self.records >= opts.max_events:
                break
        # What was left unread when it stopped (an idle exit with lag means a partition was not fetched).
        self.lag_at_exit = sum(self.lag().values())
        self.drain()
        if opts.progress:
            print(file=sys.stderr)

    def process(self, polled: dict[Any, list[Any]], *, everything: bool = False) -> None:
        """One step: buffer what was polled, release what is aligned, write it durably, commit."""
        owned = self.hooks.owned
        polled = still_assigned(owned, polled)
        if self.to_warm_up:
            gained, self.to_warm_up = self.to_warm_up, []
            # only those still ours (a later rebalance may have taken some back)
            polled = self.warm_up([tp for tp in gained if tp in owned], polled)
        self.last_polled = 0
        for tp, messages in polled.items():
            warm_until = self._warm_until.get(tp, -1)
            for m in messages:
                read, marks = self.reader(m)
                warming = m.offset < warm_until
                for kind, item in read:
                    self.last_polled += 1
                    ts = item.ts if isinstance(item, Event) else None
                    self.aligner.add(tp, m.offset, ts, (kind, warming, item))
                if marks is not None:  # after the frame's events: they are what the marks cover
                    self.aligner.advance(tp, m.offset, marks)
        # Asking every partition's position also completes kafka-python's pending offset validation,
        # without which a partition with lag can stop being fetched (kafka-python issues #3106, #3131: a
        # keyed worker's detect consumer, which had stopped asking in watermark mode, once fetched
        # nothing at all). In watermark mode the caught-up flags themselves are not used.
        self._update_caught_up()
        items, commits = self.aligner.release(everything=everything)
        self.last_released = len(items)
        if items:
            result = self._run(items)
            if result is not None:
                for sink in self.sinks:
                    sink.write(result)
                for sink in self.sinks:  # durable first ...
                    until_done(sink.flush, what=f"flushing results ({type(sink).__name__})",
                               should_stop=self.stopping)
                self.batches += 1
        # Warm-up records were processed and committed before this worker gained their partition: a
        # partition whose first unreleased record is still one of them keeps its committed offset (moving
        # it back would hand already-alerted records to the next owner, after a crash, as new ones).
        commits = {tp: off for tp, off in commits.items() if off >= self._warm_until.get(tp, -1)}
        if commits:  # ... then the offset of each partition's first record not yet processed
            if commit_offsets(self.consumer, commits, should_stop=self.stopping):
                self._held.update(commits)
        self._flow_control()
        self._maybe_report()

    def _run(self, items: list[tuple[str | None, bool, Event | DeadLetter]]) -> BatchResult | None:
        """Released items through their pipelines: warm-up ones first (they are older), then the rest."""
        warm: dict[str | None, list[Event]] = {}
        live: dict[str | None, list[Event]] = {}
        dead: list[DeadLetter] = []
        # Counted when released, not when polled: a rebalance drops unreleased records, which are read again.
        self.records += sum(1 for _, warming, _ in items if not warming)
        for kind, warming, item in items:
            if isinstance(item, DeadLetter):
                if not warming:
                    dead.append(item)
                continue
            (warm if warming else live).setdefault(kind, []).append(item)
        for kind, events in warm.items():
            if kind in self.pipelines:
                self.pipelines[kind].process_events(events, warmup=True)
        if not live and not dead:
            return None
        result = BatchResult()
        first = True
        for kind, pipeline in self.pipelines.items():
            events = live.get(kind, [])
            if not events and not (first and dead):
                continue
            result.merge(pipeline.process_decoded(events, dead if first else []))
            first = False
        if first and dead:  # no pipeline took the dead letters (no live events at all)
            result.merge(self.pipeline.process_decoded([], dead))
        return result

    def warm_up(self, assigned: list[Any], polled: dict[Any, list[Any]]) -> dict[Any, list[Any]]:
        """Position each partition gained at its committed offset (records buffered before a rebalance
        were dropped, so they must be read again whatever the client kept), or — when it was gained,
        not merely kept, and warm-up is on — at the first record written in the last `warmup_seconds`
        (Kafka's time index: DESIGN.md "now − horizon"), the records before the committed offset marked
        as warm-up. Returns `polled` without the records that will be read again."""
        targets: dict[Any, int] = {}
        wanted: list[Any] = []
        for tp in assigned:
            self._warm_until.pop(tp, None)
        committed_at, starts = start_offsets(self.consumer, assigned, should_stop=self.stopping)
        for tp, committed in committed_at.items():
            kept = self._held.get(tp) == committed
            parked = self.parked.pop(tp, None)
            if kept and parked is not None and self._resumable(tp, parked, committed, polled):
                self.aligner.unpark(tp, parked)  # back to us, fetch position unchanged: carry on as before
                continue
            targets[tp] = committed
            if self.warmup_seconds > 0 and not kept:  # gained, not merely kept
                wanted.append(tp)
        # Wall clock on purpose: this finds where to start reading, it decides nothing about events.
        since_ms = int((self.wall_clock() - self.warmup_seconds) * 1000)
        found = self._ask(lambda: self.consumer.offsets_for_times({tp: since_ms for tp in wanted}),
                          "reading the time index") if wanted else {}
        for tp, committed in list(targets.items()):
            start = found.get(tp)
            if start is not None and start.offset is not None and start.offset < committed:
                targets[tp] = start.offset
                self._warm_until[tp] = committed
                self.warmed_partitions += 1
        targets.update(starts)
        self.parked.clear()  # partitions that went to other workers: their records are theirs now
        return position_gained(self.consumer, targets, polled)

    def _ask(self, question: Callable[[], Any], what: str) -> Any:
        """A read from the broker that must be answered before going on, asked again through an outage."""
        return until_done(question, what=what, should_stop=self.stopping)

    def _resumable(self, tp: Any, parked: Any, committed: int, polled: dict[Any, list[Any]]) -> bool:
        """A kept partition whose buffer starts at the committed offset and whose next record (polled, or
        the fetch position) follows the buffer: nothing to re-read and — importantly — no seek, which
        with kafka-python 3.0.12 after a broker restart left the partition never fetched again."""
        first = parked.first_unreleased()
        if first is None or first != committed:
            return False
        msgs = polled.get(tp)
        following = msgs[0].offset if msgs else known_position(self.consumer, tp)
        return following == parked.next_offset
    def drain(self) -> None:
        """Process everything still buffered (stopping: nothing more will come in this run)."""
        if self.aligner.buffered():
            self.process({}, everything=True)
        self._maybe_report(force=True)

    def _update_caught_up(self) -> None:
        for tp, done in caught_up(self.consumer, self.hooks.owned, self._unknown_since, self.clock()).items():
            self.aligner.set_caught_up(tp, done)

    def _flow_control(self) -> None:
        self.peak_buffered = max(self.peak_buffered, self.aligner.buffered())
        if self.options.max_buffered_per_partition is not None:
            self.back_pressure.apply(self.aligner.full(), self.aligner.roomy())

    def lag(self) -> dict[str, int]:
        return {f"{tp.topic}/{tp.partition}": n for tp, n in lag(self.consumer).items() if n is not None}

    def _maybe_report(self, force: bool = False) -> None:
        if self.report is None or (not force and self.clock() - self._last_report < self.options.report_every_seconds):
            return
        self._last_report = self.clock()
        self.report({"worker": self.worker_id, "records": self.records, **self.stats(), "lag": self.lag(),
                     "buffered": self.aligner.buffered(), "waiting_for": self.aligner.waiting_for()})

    def stats(self) -> dict[str, Any]:
        """The figures of all this worker's pipelines together."""
        dead: Counter[str] = Counter()
        signals: Counter[str] = Counter()
        events = warm = 0
        for p in self.pipelines.values():
            dead.update(p.stats.dead_letter_codes)
            signals.update(p.stats.signals)
            warm += p.stats.warmup_events
            # a re-keyed event reaches several streams: count it once, on the principal stream
            if len(self.pipelines) == 1 or p is self.pipelines.get(PRINCIPAL):
                events += p.stats.events
        marks = [p.watermark for p in self.pipelines.values() if p.watermark != float("-inf")]
        return {"events": events, "warmup_events": warm, "dead_letters": dict(dead), "signals": dict(signals),
                "watermark": rfc3339(min(marks)) if marks else None}

    def close(self) -> None:
        self.consumer.close()
