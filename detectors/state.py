"""Detector state behind one small protocol, with time-to-live on *event* time.

`set(key, value, expires_at=)` takes an event-time deadline; `expire(watermark)` drops whatever
expired before the watermark. Nothing here reads the wall clock, so replay equals live.
"""

from __future__ import annotations

import heapq
from typing import Any, Protocol


class StateStore(Protocol):
    def get(self, key: Any) -> Any | None: ...

    def set(self, key: Any, value: Any, *, expires_at: float) -> None: ...

    def delete(self, key: Any) -> None: ...

    def expire(self, watermark: float) -> int: ...

    def __len__(self) -> int: ...


class MemoryStore:
    """Dict plus a min-heap of deadlines. A re-set key gets a new deadline; stale heap rows are skipped."""

    def __init__(self) -> None:
        self._data: dict[Any, tuple[float, Any]] = {}
        self._deadlines: list[tuple[float, int, Any]] = []
        self._seq = 0

    def get(self, key: Any) -> Any | None:
        row = self._data.get(key)
        return None if row is None else row[1]

    def set(self, key: Any, value: Any, *, expires_at: float) -> None:
        self._data[key] = (expires_at, value)
        self._seq += 1
        heapq.heappush(self._deadlines, (expires_at, self._seq, key))

    def delete(self, key: Any) -> None:
        self._data.pop(key, None)

    def expire(self, watermark: float) -> int:
        dropped = 0
        heap = self._deadlines
        while heap and heap[0][0] < watermark:
            deadline, _, key = heapq.heappop(heap)
            row = self._data.get(key)
            if row is not None and row[0] == deadline:
                del self._data[key]
                dropped += 1
        return dropped

    def __len__(self) -> int:
        return len(self._data)
