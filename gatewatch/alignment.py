"""Event-time alignment of Kafka partitions: hand the pipeline records in (nearly) event-time order.

A consumer reads partitions at different speeds: with a backlog, one poll can return an hour of
partition 0 before the first record of partition 1. Fed as-is, the pipeline's watermark would leap
ahead and partition 1's events would all be late (behaviour windows closed, revocations seen after
the uses they should catch). So the worker buffers records per partition and releases only those at
or before the **release point**: the smallest event time reached by any partition that may still
deliver older records (one that has not caught up with its high watermark). A partition that is
caught up does not hold the others back; a partition whose buffer is full is paused, so the lagging
ones get fetched (bounded memory, back-pressure instead of dropping) — never the partition that holds the
release point, whose next records are the ones that move it.

Offsets: a partition's records are released by event time (a late one need not wait behind a newer
one), and the offset to commit for a partition is that of its first unreleased record — a crash
re-reads everything not yet processed (and perhaps some records after it that were: redeliveries,
recognised as such downstream; alert ids are deterministic). Dead letters travel in the same buffers
(at their partition's current event time), so they never let a commit skip an unreleased record.

**Watermark mode** (the detect stage of keyed workers, `sources` given): a re-keyed partition is
written by several ingest workers at once, so how far it has been read says nothing about event time.
Instead each partition carries source watermarks (ingest/routing.py): a partition holds the others
back until every input partition's watermark seen on it has passed, an idle source not counting and
a source never heard of counting as not started. Catching up with the high watermark plays no part.

Pure bookkeeping, no Kafka: the worker tells it what was polled and which partitions are caught up
(or, in watermark mode, which source watermarks it read).
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass, field
from itertools import count
from typing import Any

NEG_INF = float("-inf")
_seq = count()  # ties in a heap never compare the items themselves


@dataclass
class _Partition:
    """One partition's unreleased records: by event time (what to release) and by offset (what to commit)."""
    heap: list[tuple[float, int, int, Any]] = field(default_factory=list)  # (event time, offset, seq, item)
    # Offsets added, in order, released ones popped lazily; a frame of several items adds its offset
    # once per item, so `released` counts: the offset is done when every item of it is.
    offsets: deque[int] = field(default_factory=deque)
    released: dict[int, int] = field(default_factory=dict)  # offset -> its items released, not yet popped
    frontier: float = NEG_INF  # the largest event time polled from this partition
    next_offset: int | None = None  # the offset after the last record polled
    caught_up: bool = False  # no more records to fetch right now
    marks: dict[str, tuple[float, bool]] = field(default_factory=dict)  # watermark mode: source -> (ts, idle)
    reported: int | None = None  # the offset to commit last handed out

    def __len__(self) -> int:
        return len(self.heap)

    def first_unreleased(self) -> int | None:
        """The offset to commit: that of the first record not released yet, else the next to poll."""
        offsets, released = self.offsets, self.released
        while offsets and offsets[0] in released:
            off = offsets.popleft()
            if released[off] == 1:
                del released[off]
            else:
                released[off] -= 1
        return self.offsets[0] if self.offsets else self.next_offset


class EventTimeAligner:
    def __init__(self, *, max_buffered_per_partition: int = 5_000, sources: frozenset[str] | None = None) -> None:
        self.max_buffered_per_partition = max_buffered_per_partition
        self.sources = sources  # watermark mode: the input partitions every re-keyed partition waits for
        self._parts: dict[Hashable, _Partition] = {}

    # -- what the worker tells it ---------------------------------------------------------------
    def add(self, tp: Hashable, offset: int, ts: float | None, item: Any) -> None:
        """One polled item of `tp` (in offset order; the items of one record share its offset); `ts` None
        for an item without an event time."""
        p = self._parts.setdefault(tp, _Partition())
        if ts is not None:
            p.frontier = max(p.frontier, ts)
        heapq.heappush(p.heap, (p.frontier if ts is None else ts, offset, next(_seq), item))
        p.offsets.append(offset)
        p.next_offset = offset + 1

    def advance(self, tp: Hashable, offset: int, marks: dict[str, tuple[float, bool]]) -> None:
        """Watermark mode: the source watermarks read at `offset` of `tp`. Event time only moves forward
        (a source taken over by another ingest worker may first report less); idleness is the latest
        word. The record itself is done with: nothing holds its offset back."""
        p = self._parts.setdefault(tp, _Partition())
        p.next_offset = offset + 1
        known = p.marks
        for source, (ts, idle) in marks.items():
            before = known.get(source)
            known[source] = (ts if before is None else max(before[0], ts), idle)

    def set_caught_up(self, tp: Hashable, caught_up: bool) -> None:
        self._parts.setdefault(tp, _Partition()).caught_up = caught_up

    def assign(self, tps: list[Hashable]) -> None:
        for tp in tps:
            self._parts.setdefault(tp, _Partition())

    def revoke(self, tps: list[Hashable]) -> int:
        """Forget partitions taken away by a rebalance; returns how many unreleased records are dropped
        (they were not committed, so their new owner reads them)."""
        dropped = 0
        for tp in tps:
            p = self._parts.pop(tp, None)
            if p is not None:
                dropped += len(p)
        return dropped

    def park(self, tps: list[Hashable]) -> dict[Hashable, Any]:
        """Take partitions out at a rebalance, keeping their buffers: one that comes straight back to
        this worker with its fetch position where the buffer ends resumes without re-reading."""
        return {tp: self._parts.pop(tp) for tp in tps if tp in self._parts}

    def unpark(self, tp: Hashable, parked: Any) -> None:
        self._parts[tp] = parked

    # -- what it answers ------------------------------------------------------------------------
    def release_point(self) -> float:
        """Event time up to which every partition has delivered what it can (inf: nothing holds back)."""
        if self.sources is not None:
            return min((self._held_back_to(p) for p in self._parts.values()), default=float("inf"))
        blocking = [p.frontier for p in self._parts.values() if not p.caught_up]
        return min(blocking) if blocking else float("inf")

    def _held_back_to(self, p: _Partition) -> float:
        assert self.sources is not None
        point = float("inf")
        for source in self.sources:
            mark = p.marks.get(source)
            if mark is None:
                return NEG_INF
            if not mark[1]:
                point = min(point, mark[0])
        return point

    def waiting_for(self) -> list[str]:
        """Watermark mode: the sources holding the release point back (for the worker's report)."""
        point = self.release_point()
        if self.sources is None or point == float("inf"):
            return []
        return sorted({s for p in self._parts.values() for s in self.sources
                       if (m := p.marks.get(s)) is None or (not m[1] and m[0] <= point)})

    def release(self, *, everything: bool = False) -> tuple[list[Any], dict[Hashable, int]]:
        """Items ready for the pipeline (across partitions, in event-time order) and, per partition
        whose position moved, the offset to commit next."""
        point = float("inf") if everything else self.release_point()
        commits: dict[Hashable, int] = {}
        out: list[tuple[float, int, int, Any]] = []
        for tp, p in self._parts.items():
            moved = False
            while p.heap and p.heap[0][0] <= point:
                entry = heapq.heappop(p.heap)
                p.released[entry[1]] = p.released.get(entry[1], 0) + 1
                out.append(entry)
                moved = True
            target = p.first_unreleased()
            # Also a position moved by watermark records alone (nothing buffered): not read again.
            if target is not None and (moved or (not p.heap and target != p.reported)):
                commits[tp] = p.reported = target
        out.sort(key=lambda e: (e[0], e[2]))  # event time; on ties, the order they were polled
        return [e[3] for e in out], commits

    def progress(self, tps: list[Hashable], *, everything: bool = False) -> dict[Hashable, tuple[float, bool]]:
        """Per partition, after `release`: (event time released up to, idle). Everything at or before
        the release point has been released; a caught-up partition holding nothing is idle (its time:
        the last it reached)."""
        point = float("inf") if everything else self.release_point()
        out = {}
        for tp in tps:
            p = self._parts.get(tp)
            if p is None:  # never assigned nor polled: nothing known to be published
                out[tp] = (NEG_INF, False)
            elif p.caught_up and not p.heap:
                out[tp] = (p.frontier, True)
            else:
                out[tp] = (point, False)
        return out

    def full(self) -> list[Hashable]:
        """Partitions to pause: their buffers are at the cap, and they do not hold the release point back.

        One that does must be read on: only its own next records can move the release point (in
        watermark mode, the source watermarks it waits for come in its own later frames), so pausing it
        would stop the worker for good. Reading it on is also what drains the buffers."""
        cap = self.max_buffered_per_partition
        crowded = [(tp, p) for tp, p in self._parts.items() if len(p) >= cap]
        if not crowded:
            return []
        point = self.release_point()
        return [tp for tp, p in crowded if self._point_of(p) > point]

    def _point_of(self, p: _Partition) -> float:
        """How far this partition alone lets the release point go."""
        if self.sources is not None:
            return self._held_back_to(p)
        return float("inf") if p.caught_up else p.frontier

    def roomy(self) -> list[Hashable]:
        """Partitions that may be fetched again: buffer at most half full, or holding the release point
        back (paused while full, it may have become the one whose next records are needed: in watermark
        mode its buffered entries can wait for a source watermark that only its unread frames carry)."""
        half = self.max_buffered_per_partition // 2
        point: float | None = None
        out = []
        for tp, p in self._parts.items():
            if len(p) <= half:
                out.append(tp)
                continue
            if point is None:
                point = self.release_point()
            if self._point_of(p) <= point:
                out.append(tp)
        return out

    def buffered(self) -> int:
        return sum(len(p) for p in self._parts.values())
