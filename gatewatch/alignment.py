"""Event-time alignment of Kafka partitions: hand the pipeline records in (nearly) event-time order.

A consumer reads partitions at different speeds: with a backlog, one poll can return an hour of
partition 0 before the first record of partition 1. Fed as-is, the pipeline's watermark would leap
ahead and partition 1's events would all be late (behaviour windows closed, revocations seen after
the uses they should catch). So the worker buffers records per partition and releases only those at
or before the **release point**: the smallest event time reached by any partition that may still
deliver older records (one that has not caught up with its high watermark). A partition that is
caught up does not hold the others back; a partition whose buffer is full is paused, so the lagging
ones get fetched (bounded memory, back-pressure instead of dropping).

Offsets: records are released as a prefix of each partition's buffer, so the offset to commit for a
partition is that of its first unreleased record — a crash re-reads exactly what was not yet
processed. Dead letters travel in the same queues (at their partition's current event time), so they
never let a commit skip an unreleased record.

Pure bookkeeping, no Kafka: the worker tells it what was polled and which partitions are caught up.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

NEG_INF = float("-inf")


@dataclass
class _Partition:
    items: deque[tuple[float, int, Any]] = field(default_factory=deque)  # (event time, offset, item)
    frontier: float = NEG_INF  # the largest event time polled from this partition
    next_offset: int | None = None  # the offset after the last record polled
    caught_up: bool = False  # no more records to fetch right now


class EventTimeAligner:
    def __init__(self, *, max_buffered_per_partition: int = 5_000) -> None:
        self.max_buffered_per_partition = max_buffered_per_partition
        self._parts: dict[Hashable, _Partition] = {}

    # -- what the worker tells it ---------------------------------------------------------------
    def add(self, tp: Hashable, offset: int, ts: float | None, item: Any) -> None:
        """One polled record of `tp` (in offset order); `ts` None for a record without an event time."""
        p = self._parts.setdefault(tp, _Partition())
        if ts is not None:
            p.frontier = max(p.frontier, ts)
        p.items.append((p.frontier if ts is None else ts, offset, item))
        p.next_offset = offset + 1

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
                dropped += len(p.items)
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
        blocking = [p.frontier for p in self._parts.values() if not p.caught_up]
        return min(blocking) if blocking else float("inf")

    def release(self, *, everything: bool = False) -> tuple[list[Any], dict[Hashable, int]]:
        """Items ready for the pipeline (across partitions, in event-time order) and, per partition
        whose position moved, the offset to commit next."""
        point = float("inf") if everything else self.release_point()
        out: list[tuple[float, Any]] = []
        commits: dict[Hashable, int] = {}
        for tp, p in self._parts.items():
            moved = False
            while p.items and p.items[0][0] <= point:
                ts, _, item = p.items.popleft()
                out.append((ts, item))
                moved = True
            if moved:
                commits[tp] = p.items[0][1] if p.items else p.next_offset  # type: ignore[assignment]
        out.sort(key=lambda pair: pair[0])  # stable: a partition's own order is kept on ties
        return [item for _, item in out], commits

    def full(self) -> list[Hashable]:
        """Partitions to pause: their buffers are at the cap."""
        return [tp for tp, p in self._parts.items() if len(p.items) >= self.max_buffered_per_partition]

    def roomy(self) -> list[Hashable]:
        """Partitions that may be fetched again (buffer at most half full)."""
        return [tp for tp, p in self._parts.items() if len(p.items) <= self.max_buffered_per_partition // 2]

    def buffered(self) -> int:
        return sum(len(p.items) for p in self._parts.values())
