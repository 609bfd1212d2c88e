"""A compact state store for per-live-token state: an open-addressing table of hashed keys → packed ints.

A Python dict entry costs about 155 bytes with its key and value objects; state that follows every
live token (a million and more) needs less. Here there are no per-entry Python objects: a key is
hashed to 63 bits and kept in one machine word, its deadline in a 32-bit word (whole seconds), an int
value in up to four 32-bit words, all in flat arrays (linear probing, grown ×2 at 3/4 full, shrunk by
the sweep when under 1/4 full). A store whose values fit 32 bits costs 16 bytes a slot, one with
100-bit values 24, with 128-bit values 28 (a store widens when it first meets a wider value); at 3/8
to 3/4 full, as a growing table is, that is 21 to 75 bytes a live entry (bench/detectors.py measures
it), up to 112 in a table the sweep has just emptied to a quarter.

Any other value — an object, or an int wider than 128 bits — is kept as it is in a side list, its slot
naming it: the rare token that needs more (several contexts seen, recent uses kept for a late
revocation) pays for its object and 8 bytes, the ordinary one for a few words. A key holds one value
at a time: setting an int replaces an object for the same key and vice versa. `expire` sweeps both
in one vectorised pass (numpy over the arrays) and rebuilds the table without the dead entries: O(slots),
once a minute of event time (the pipeline's cadence), never per event.

Keys are hashed with Python's per-process hash: the store lives in one process and is rebuilt on
restart (DESIGN.md "State, partitions"), never persisted. A 63-bit collision between two live keys
has a probability around n²/2⁶⁴ (5·10⁻⁸ at a million keys): the two keys would share one value;
detectors that use this store say what that would cost them.

Same protocol as `MemoryStore`, with two differences: int values must be non-negative, and expiry
is kept to the second — an entry set with `expires_at=t` is dropped by the first `expire(w)` with
`w >= int(t) + 1` (`MemoryStore`: `w > t`), so never early and at most a second late. Deadlines
after 2106 (32 bits) are kept as 2106.
"""

from __future__ import annotations

from array import array
from typing import Any

import numpy as np

_M64 = (1 << 64) - 1
_KEY_MASK = (1 << 63) - 1
_OBJ = 1 << 63  # the key word's top bit: this slot's value is an object, its index in word 0
_MIX = 0x9E3779B97F4A7C15  # Fibonacci hashing: the top bits of hash·φ pick the slot
_WORD = 32
_WORD_MASK = (1 << _WORD) - 1
_MAX_WORDS = 4  # ints up to 128 bits are packed; wider ones are kept as objects
_MIN_BITS = 3  # 8 slots
_DEADLINE_MAX = (1 << 32) - 1


def _hkey(key: Any) -> int:
    return (((hash(key) * _MIX) & _M64) >> 1) or 1  # 0 marks an empty slot


def _deadline(expires_at: float) -> int:
    """The first whole second at which the entry may go."""
    return min(max(int(expires_at) + 1, 1), _DEADLINE_MAX)


def _zeros(code: str, n: int) -> array[int]:
    return array(code, bytes(n * (8 if code == "Q" else 4)))


class PackedStore:
    def __init__(self) -> None:
        self._bits = _MIN_BITS
        self._keys = _zeros("Q", 1 << _MIN_BITS)  # hashed key | _OBJ; 0 = empty
        self._deadlines = _zeros("I", 1 << _MIN_BITS)
        self._words: list[array[int]] = []  # the int value's 32-bit words, low first
        self._n = 0
        self._objs: list[Any] = []  # object values; a freed one is None until the next sweep compacts
        self._freed = 0

    # -- the protocol ------------------------------------------------------------------------------
    def get(self, key: Any) -> Any | None:
        h = (((hash(key) * _MIX) & _M64) >> 1) or 1  # _hkey, inlined: the hot path
        keys = self._keys
        mask = (1 << self._bits) - 1
        i = h >> (63 - self._bits)
        while True:
            k = keys[i]
            if k & _KEY_MASK == h:
                break
            if not k:
                return None
            i = (i + 1) & mask
        words = self._words
        if k & _OBJ:
            return self._objs[words[0][i]]
        n = len(words)
        if n == 1:
            return words[0][i]
        if n == 2:
            return words[0][i] | words[1][i] << 32
        value = 0
        for w in reversed(words):
            value = value << _WORD | w[i]
        return value

    def set(self, key: Any, value: Any, *, expires_at: float) -> None:
        obj = type(value) is not int
        if not obj:
            if value < 0:
                raise ValueError("PackedStore int values are non-negative")
            need = (value.bit_length() + _WORD - 1) // _WORD
            obj = need > _MAX_WORDS
        if obj:
            need = 1
        while len(self._words) < need:
            self._words.append(_zeros("I", len(self._keys)))
        h = (((hash(key) * _MIX) & _M64) >> 1) or 1  # _hkey, inlined
        i, old = self._find(h)
        if not old:
            if (self._n + 1) * 4 > len(self._keys) * 3:
                self._rebuild(self._bits + 1)
                i, old = self._find(h)
            self._n += 1
        self._deadlines[i] = _deadline(expires_at)
        words = self._words
        if obj:
            if old & _OBJ:
                self._objs[words[0][i]] = value
            else:
                words[0][i] = len(self._objs)
                self._objs.append(value)
                for w in words[1:]:
                    w[i] = 0
            self._keys[i] = h | _OBJ
            return
        if old & _OBJ:
            self._free(words[0][i])
        self._keys[i] = h
        for w in words:
            w[i] = value & _WORD_MASK
            value >>= _WORD

    def delete(self, key: Any) -> None:
        i, old = self._find(_hkey(key))
        if not old:
            return
        if old & _OBJ:
            self._free(self._words[0][i])
        self._n -= 1
        self._remove(i)

    def expire(self, watermark: float) -> int:
        """Drop what expired before the watermark: one vectorised pass, O(slots), then the few dead
        entries removed one by one, or else the table rebuilt without them (and halved while under a
        quarter full)."""
        if not self._n or not watermark >= 1:  # deadlines are ≥ 1 (and -inf, nan expire nothing)
            return 0
        cut = int(min(watermark, _DEADLINE_MAX))
        keys = np.frombuffer(self._keys, dtype=np.uint64)
        dead = np.flatnonzero((keys != 0) & (np.frombuffer(self._deadlines, dtype=np.uint32) <= cut))
        dropped = len(dead)
        compact = self._freed and self._freed * 2 >= len(self._objs)
        if not dropped and not compact:
            return 0
        words0 = np.frombuffer(self._words[0], dtype=np.uint32) if self._words else None
        hashes = keys[dead]
        for j in words0[dead[hashes >= _OBJ]].tolist() if words0 is not None else ():
            self._free(j)
        del keys, words0
        if dropped * 8 < self._n and not compact:
            for h in (hashes & np.uint64(_KEY_MASK)).tolist():
                self._remove(self._find(h)[0])
            self._n -= dropped
            return dropped
        survivors = self._n - dropped
        bits = self._bits
        while bits > _MIN_BITS and survivors * 4 < (1 << bits):
            bits -= 1  # under a quarter full: halve
        self._rebuild(bits, drop_before=cut)
        return dropped

    def __len__(self) -> int:
        return self._n

    # -- the table ---------------------------------------------------------------------------------
    def _find(self, h: int) -> tuple[int, int]:
        """(slot, its key word) of h, or (the empty slot where h would go, 0)."""
        keys = self._keys
        mask = (1 << self._bits) - 1
        i = h >> (63 - self._bits)
        while True:
            k = keys[i]
            if not k or k & _KEY_MASK == h:
                return i, k
            i = (i + 1) & mask

    def _free(self, index: int) -> None:
        self._objs[index] = None
        self._freed += 1

    def _remove(self, i: int) -> None:
        """Empty slot i, moving later entries of its probe run back (no tombstones)."""
        keys, deadlines, words = self._keys, self._deadlines, self._words
        bits = self._bits
        mask = (1 << bits) - 1
        j = i
        while True:
            j = (j + 1) & mask
            k = keys[j]
            if not k:
                break
            home = (k & _KEY_MASK) >> (63 - bits)
            # the entry at j may move to i unless its home lies cyclically in (i, j]
            if (i < j and i < home <= j) or (i > j and (home > i or home <= j)):
                continue
            keys[i], deadlines[i] = k, deadlines[j]
            for w in words:
                w[i] = w[j]
            i = j
        keys[i] = 0
        deadlines[i] = 0
        for w in words:
            w[i] = 0

    def _rebuild(self, bits: int, drop_before: int = -1) -> None:
        """Re-place every entry (but those with a deadline ≤ drop_before) in a table of 2**bits slots."""
        keys = np.frombuffer(self._keys, dtype=np.uint64)
        deadlines = np.frombuffer(self._deadlines, dtype=np.uint32)
        keep = np.flatnonzero((keys != 0) & (deadlines.astype(np.int64) > drop_before))
        k, d = keys[keep], deadlines[keep]
        words = [np.frombuffer(w, dtype=np.uint32)[keep] for w in self._words]
        del keys, deadlines
        if self._freed and self._freed * 2 >= len(self._objs):  # compact the object list
            is_obj = k >= _OBJ
            old = words[0][is_obj]
            self._objs = [self._objs[j] for j in old.tolist()]
            words[0][is_obj] = np.arange(len(old), dtype=np.uint32)
            self._freed = 0
        size = 1 << bits
        n = len(k)
        home = ((k & np.uint64(_KEY_MASK)) >> np.uint64(63 - bits)).astype(np.int64)
        order = np.argsort(home, kind="stable")
        k, d, home = k[order], d[order], home[order]
        words = [w[order] for w in words]
        rank = np.arange(n, dtype=np.int64)
        pos = np.maximum.accumulate(home - rank) + rank if n else rank  # linear probing, in home order
        over = pos >= size
        if over.any():  # the run passed the end: those wrap to the first free slots from 0
            taken = np.zeros(size, dtype=bool)
            taken[pos[~over]] = True
            pos[over] = np.flatnonzero(~taken)[: int(over.sum())]
        new_keys = np.zeros(size, dtype=np.uint64)
        new_keys[pos] = k
        new_deadlines = np.zeros(size, dtype=np.uint32)
        new_deadlines[pos] = d
        self._keys = array("Q", new_keys.tobytes())
        self._deadlines = array("I", new_deadlines.tobytes())
        new_words = []
        for w in words:
            column = np.zeros(size, dtype=np.uint32)
            column[pos] = w
            new_words.append(array("I", column.tobytes()))
        self._words = new_words
        self._bits = bits
        self._n = n


def pack_str(value: str | None, bits: int = 32) -> int:
    """A short stable-in-process digest of a string, for packing into state values."""
    return hash(value) & ((1 << bits) - 1) if value is not None else 0
