"""`SeenIds`: which events a counting window has counted already, so a redelivered record counts once.

Hashes of event ids (8 bytes each): a set while the window is current, then `pack()`ed into a sorted array
plus a small set for the stragglers (late events and redeliveries) that arrive after that. Used by the
counting detectors (traffic_rate_limit, traffic_llm_budget).
"""

from __future__ import annotations

from array import array
from bisect import bisect_left


class SeenIds:
    __slots__ = ("fresh", "packed")

    def __init__(self) -> None:
        self.fresh: set[int] = set()
        self.packed: array[int] | None = None

    def __contains__(self, h: int) -> bool:
        if h in self.fresh:
            return True
        packed = self.packed
        if packed is None:
            return False
        i = bisect_left(packed, h)
        return i < len(packed) and packed[i] == h

    def add(self, h: int) -> None:
        self.fresh.add(h)

    def pack(self) -> None:
        if self.packed is None and self.fresh:
            self.packed = array("Q", sorted(self.fresh))
            self.fresh = set()
