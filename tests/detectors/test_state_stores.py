"""The state stores: one suite over both (get/set/delete, expiry on event time), then PackedStore's own."""

from __future__ import annotations

import random

import pytest

from detectors.packed_store import PackedStore
from detectors.state import MemoryStore

T = 1_795_000_000.0


@pytest.fixture(params=[MemoryStore, PackedStore])
def store(request):
    return request.param()


def test_get_set_delete(store) -> None:
    assert store.get("a") is None and len(store) == 0
    store.set("a", 7, expires_at=T + 60)
    store.set(("tok", "x"), 9, expires_at=T + 60)
    assert store.get("a") == 7 and store.get(("tok", "x")) == 9 and store.get("b") is None
    store.set("a", 8, expires_at=T + 60)
    assert store.get("a") == 8 and len(store) == 2
    store.delete("a")
    store.delete("never-set")
    assert store.get("a") is None and len(store) == 1


def test_expiry_is_on_event_time(store) -> None:
    store.set("early", 1, expires_at=T + 10)
    store.set("late", 2, expires_at=T + 100)
    assert store.expire(float("-inf")) == 0 and store.expire(T + 9) == 0 and len(store) == 2
    assert store.expire(T + 12) == 1  # no wall clock involved: only the watermark given
    assert store.get("early") is None and store.get("late") == 2
    assert store.expire(T + 1000) == 1 and len(store) == 0


def test_re_set_extends_the_deadline(store) -> None:
    store.set("k", 1, expires_at=T + 10)
    store.set("k", 2, expires_at=T + 100)
    store.expire(T + 50)
    assert store.get("k") == 2
    store.expire(T + 102)
    assert store.get("k") is None


def test_never_dropped_before_its_deadline(store) -> None:
    rng = random.Random(5)
    deadlines = {f"k{i}": T + rng.uniform(0, 600) for i in range(300)}
    for k, d in deadlines.items():
        store.set(k, 1, expires_at=d)
    for wm in range(0, 700, 37):
        store.expire(T + wm)
        for k, d in deadlines.items():
            alive = store.get(k) is not None
            assert alive or d < T + wm  # never early ...
            assert not alive or d >= T + wm - 1  # ... and at most a second late (PackedStore: whole seconds)


def test_object_values(store) -> None:
    store.set("o", ("a", 1.5), expires_at=T + 10)
    assert store.get("o") == ("a", 1.5)
    store.expire(T + 12)
    assert store.get("o") is None and len(store) == 0


# -- PackedStore ------------------------------------------------------------------------------------
def test_packed_holds_ints_packed_and_other_values_aside() -> None:
    s = PackedStore()
    s.set("int", 5, expires_at=T + 10)
    s.set("big", 1 << 90, expires_at=T + 10)
    s.set("obj", {"seen": 2}, expires_at=T + 100)
    s.set("float", 1.5, expires_at=T + 100)
    assert (s.get("int"), s.get("big"), s.get("obj"), s.get("float")) == (5, 1 << 90, {"seen": 2}, 1.5)
    assert len(s) == 4
    assert s.expire(T + 20) == 2  # the sweep covers both kinds
    assert s.get("int") is None and s.get("obj") == {"seen": 2} and len(s) == 2


def test_packed_a_key_holds_one_value_of_either_kind() -> None:
    s = PackedStore()
    s.set("k", 3, expires_at=T + 10)
    s.set("k", ("rich",), expires_at=T + 10)
    assert s.get("k") == ("rich",) and len(s) == 1
    s.set("k", 4, expires_at=T + 10)
    assert s.get("k") == 4 and len(s) == 1
    s.set("k", ("rich",), expires_at=T + 10)
    s.delete("k")
    assert s.get("k") is None and len(s) == 0


def test_packed_refuses_negative_ints() -> None:
    s = PackedStore()
    with pytest.raises(ValueError):
        s.set("k", -1, expires_at=T + 10)
    assert len(s) == 0


def test_packed_keeps_expiry_to_the_second() -> None:
    s = PackedStore()
    s.set("k", 1, expires_at=T + 10.2)
    s.set("o", "x", expires_at=T + 10.2)
    s.expire(T + 10.9)  # MemoryStore would drop both here: a whole second later at most
    assert len(s) == 2
    s.expire(T + 11)
    assert len(s) == 0


@pytest.mark.parametrize("seed", range(6))
def test_packed_matches_a_dict_through_growth_deletes_and_sweeps(seed) -> None:
    """Random operations against a plain dict model: the table grows, shrinks, wraps and compacts."""
    rng = random.Random(seed)
    s, model = PackedStore(), {}
    t = T
    nkeys = (20, 400, 3000)[seed % 3]
    for step in range(6000):
        op = rng.random()
        key = rng.choice([rng.randrange(nkeys), ("k", rng.randrange(nkeys)), f"s{rng.randrange(nkeys)}"])
        if op < 0.5:
            kind = rng.random()
            value = (rng.getrandbits(rng.choice([1, 31, 33, 66, 128, 129])) if kind < 0.7
                     else ("obj", step) if kind < 0.9 else 1.5)
            deadline = t + rng.uniform(0, 300)
            s.set(key, value, expires_at=deadline)
            model[key] = (int(deadline) + 1, value)
        elif op < 0.65:
            s.delete(key)
            model.pop(key, None)
        elif op < 0.7:
            t += rng.uniform(0, 120)
            dead = [k for k, (d, _) in model.items() if d <= int(t)]
            for k in dead:
                del model[k]
            assert s.expire(t) == len(dead)
        else:
            assert s.get(key) == model.get(key, (0, None))[1]
        assert len(s) == len(model)
    assert all(s.get(k) == v for k, (_, v) in model.items())
