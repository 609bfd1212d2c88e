"""A compact state store for per-live-token state: 64-bit hashed keys → packed ints.

A Python `dict[str, tuple]` costs a few hundred bytes per entry; here a key is `hash()`ed to one
machine-size int and the value is one int carrying the detector's packed payload and its expiry
(seconds, low 34 bits), so an entry costs about 100 bytes (measured in bench/detectors.py). Keys are
hashed with Python's per-process hash: the store lives in one process and is rebuilt on restart
(DESIGN.md "State, partitions"), never persisted. A 64-bit collision between two live keys has a
probability around n²/2⁶⁵ (3·10⁻⁸ at a million keys); detectors that use this store say what a
collision would cost them.

Same protocol as `MemoryStore`, but values must be non-negative ints.
"""

from __future__ import annotations

from typing import Any

_EXP_BITS = 34
_EXP_MASK = (1 << _EXP_BITS) - 1


class PackedStore:
    def __init__(self) -> None:
        self._data: dict[int, int] = {}

    def get(self, key: Any) -> int | None:
        packed = self._data.get(hash(key))
        return None if packed is None else packed >> _EXP_BITS

    def set(self, key: Any, value: int, *, expires_at: float) -> None:
        if value < 0:
            raise ValueError("PackedStore values are non-negative ints")
        self._data[hash(key)] = (value << _EXP_BITS) | (min(max(int(expires_at) + 1, 0), _EXP_MASK))

    def delete(self, key: Any) -> None:
        self._data.pop(hash(key), None)

    def expire(self, watermark: float) -> int:
        """Sweep: O(entries). The pipeline calls it once a minute of event time, not per event."""
        cut = int(watermark)
        dead = [k for k, v in self._data.items() if (v & _EXP_MASK) <= cut]
        for k in dead:
            del self._data[k]
        return len(dead)

    def __len__(self) -> int:
        return len(self._data)


def pack_str(value: str | None, bits: int = 32) -> int:
    """A short stable-in-process digest of a string, for packing into state values."""
    return hash(value) & ((1 << bits) - 1) if value is not None else 0
