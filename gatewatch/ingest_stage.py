"""The ingest stage of `gatewatch run`: raw gateway records → normalised, re-keyed events.

Stateless: decode, validate the token (decrypt once per token: the validator caches by fingerprint),
then publish the normalised events to `gatewatch.events` by principal and, for the side keys its
detectors need, to `gatewatch.events.by_key`, packed into one frame per re-keyed partition and batch
(ingest/routing.py). Records keep the broker's default
timestamp (when they were written), not the event time: time-based retention would otherwise delete
a replayed month of history on arrival. Undecodable records go to the dead-letter topic. Input
offsets are committed only after every send is acknowledged (sends that fail in a broker outage are
sent again: ingest.delivery): a crash re-publishes, and downstream the original source marks that
a redelivery.

The input partitions are aligned on event time (`EventTimeAligner`) before publishing: otherwise one
input partition read ahead of another would interleave hours of event time on every output partition.
Other ingest workers own the other input partitions, so after each published batch — and every
`heartbeat_seconds` when there is nothing new, for a detect worker that just gained a partition —
the stage writes its **source watermarks** to every re-keyed partition, in the frames: for each
input partition it owns, the event time up to which everything is published, or idle.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from gatewatch.alignment import EventTimeAligner
from ingest.delivery import AckedSender, until_done
from gatewatch.pipeline import Pipeline
from ingest.deadletter import DeadLetter
from ingest.events import Source
from ingest.kafka_io import (BackPressure, RebalanceHooks, caught_up, commit_offsets, position_gained,
                             start_offsets, still_assigned)
from ingest.routing import EVENTS, PRINCIPAL, FramePacker, Marks, source_name


def side_kinds_of(pipelines: dict[str | None, Pipeline]) -> frozenset[str]:
    """The side-key kinds some detect pipeline consumes (the others need not be published)."""
    return frozenset(k for k in pipelines if k is not None and k != PRINCIPAL)


class IngestStage:
    def __init__(self, *, consumer: Any, producer: Any, topics: Sequence[str], decoder: Pipeline,
                 events_topic: str, keyed_topic: str, dlq_topic: str, side_kinds: frozenset[str],
                 stopping: Callable[[], bool] = lambda: False, heartbeat_seconds: float = 2.0,
                 clock: Callable[[], float] = time.monotonic, max_buffered_per_partition: int = 10_000) -> None:
        self.consumer = consumer
        self.producer = producer
        self.sender = AckedSender(producer)
        self.decoder = decoder  # only its `decode_one` is used: the stage keeps no detector state
        self.events_topic = events_topic
        self.keyed_topic = keyed_topic
        self.dlq_topic = dlq_topic
        self.side_kinds = side_kinds
        self.stopping = stopping  # the worker's stop flag: ends retries through a broker outage
        self.records = 0  # input records published (counted once, when released: see `step`)
        self.frames = 0  # re-keyed records written
        self.heartbeat_seconds = heartbeat_seconds
        self.clock = clock  # wall clock for the heartbeat only
        self._packer: FramePacker | None = None  # once the re-keyed topics' partition counts are known
        self._last_marks: tuple[Marks, float] | None = None  # what was sent, when
        self._unknown_since: dict[Any, float] = {}
        self.aligner = EventTimeAligner(max_buffered_per_partition=max_buffered_per_partition)
        self.back_pressure = BackPressure(consumer)  # a partition far ahead in event time waits, paused
        self.peak_buffered = 0
        self._gained: list[Any] = []  # partitions assigned in the last poll, to position before use
        # Unpublished records of a partition taken away were not committed: its next owner reads them.
        self.hooks = RebalanceHooks(revoked=self.aligner.revoke, assigned=self._assigned)
        consumer.subscribe(topics=list(topics), listener=self.hooks)

    def _assigned(self, assigned: list[Any]) -> None:
        self.aligner.assign(assigned)
        self._gained.extend(assigned)  # positioned after the poll returns (`step`)

    def _partitions_of(self, topic: str) -> int:
        parts = self.producer.partitions_for(topic)
        return len(parts) if parts else 1

    @property
    def packer(self) -> FramePacker:
        if self._packer is None:
            self._packer = FramePacker(events_partitions=self._partitions_of(self.events_topic),
                                       keyed_partitions=self._partitions_of(self.keyed_topic) if self.side_kinds else 1,
                                       side_kinds=self.side_kinds)
        return self._packer

    def step(self, polled: dict[Any, list[Any]], *, everything: bool = False) -> int:
        """Buffer one polled batch, publish what is aligned, commit it; returns how many records it held."""
        owned = self.hooks.owned
        polled = still_assigned(owned, polled)
        if self._gained:  # buffered records of a rebalance were dropped: read from the committed offset
            gained, self._gained = self._gained, []
            # only those still ours (a later rebalance may have taken some back)
            committed, starts = start_offsets(self.consumer, [tp for tp in gained if tp in owned],
                                              should_stop=self.stopping)
            polled = position_gained(self.consumer, {**committed, **starts}, polled)
        for tp, messages in polled.items():
            for m in messages:
                raw = m.value if m.value is not None else b""
                item = self.decoder.decode_one(raw, Source(m.topic, m.partition, m.offset))
                self.aligner.add(tp, m.offset, None if isinstance(item, DeadLetter) else item.ts, item)
        for tp, done in caught_up(self.consumer, owned, self._unknown_since, self.clock()).items():
            self.aligner.set_caught_up(tp, done)
        items, commits = self.aligner.release(everything=everything)
        # Events and watermarks in the same frames: one round trip, every send acknowledged before the
        # commit; unacknowledged ones are sent again through an outage.
        if self._publish(items, self._marks_due(bool(items), everything=everything)):
            until_done(self.sender.flush, what="publishing re-keyed events", should_stop=self.stopping)
        # Counted when released, not when polled: a rebalance drops buffered records, read again later.
        self.records += len(items)
        if commits:
            commit_offsets(self.consumer, commits, should_stop=self.stopping)
        self.peak_buffered = max(self.peak_buffered, self.aligner.buffered())
        self.back_pressure.apply(self.aligner.full(), self.aligner.roomy())
        return sum(len(v) for v in polled.values())

    def _publish(self, items: list[Any], marks: Marks | None) -> bool:
        """Dead letters to their topic, events and marks in frames; True if anything was sent."""
        send = self.sender.send
        events = []
        for item in items:
            if isinstance(item, DeadLetter):
                send(self.dlq_topic, value=item.to_json(), key=item.code.encode())
                self.decoder.count_dead([item])
            else:
                events.append(item)
        if not events and marks is None:
            return bool(items)
        for stream, partition, frame in self.packer.pack(events, marks):
            send(self.events_topic if stream == EVENTS else self.keyed_topic, value=frame, partition=partition)
            self.frames += 1
        return True

    def source_watermarks(self, *, everything: bool = False) -> Marks:
        """Per owned input partition: (event time published up to, idle). Everything at or before the
        aligner's release point has been published; a caught-up partition holding nothing is idle."""
        progress = self.aligner.progress(list(self.hooks.owned), everything=everything)
        return {source_name(tp.topic, tp.partition): mark for tp, mark in progress.items()}

    def _marks_due(self, published: bool, *, everything: bool) -> Marks | None:
        """The source watermarks to send with this batch: always with events, else if they moved or the
        heartbeat is due."""
        marks = self.source_watermarks(everything=everything)
        now = self.clock()
        if not marks or (not published and self._last_marks is not None and self._last_marks[0] == marks
                         and now - self._last_marks[1] < self.heartbeat_seconds):
            return None
        self._last_marks = (marks, now)
        return marks

