"""EventTimeAligner: release in event-time order across partitions, commit only what was released."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gatewatch.alignment import EventTimeAligner


def test_a_partition_that_ran_ahead_waits_for_the_lagging_one() -> None:
    a = EventTimeAligner()
    for off, ts in enumerate([10, 20, 30, 40]):
        a.add("p0", off, ts, f"p0-{ts}")
    a.add("p1", 0, 5, "p1-5")
    items, commits = a.release()
    assert items == ["p1-5"] and commits == {"p1": 1}  # p1 has only reached 5: nothing of p0 yet
    a.add("p1", 1, 25, "p1-25")
    items, commits = a.release()
    assert items == ["p0-10", "p0-20", "p1-25"] and commits == {"p0": 2, "p1": 2}
    a.set_caught_up("p1", True)  # p1 has nothing more to give: it no longer holds p0 back
    items, commits = a.release()
    assert items == ["p0-30", "p0-40"] and commits == {"p0": 4}


def test_dead_letters_keep_their_place_and_never_let_a_commit_skip_a_record() -> None:
    a = EventTimeAligner()
    a.add("p0", 0, 10, "e10")
    a.add("p0", 1, None, "dead")  # no event time: travels at its partition's current time
    a.add("p0", 2, 50, "e50")
    a.add("p1", 0, 20, "f20")
    items, commits = a.release()
    assert items == ["e10", "dead", "f20"] and commits == {"p0": 2, "p1": 1}


def test_full_partitions_are_paused_and_resumed_and_revocation_drops_unreleased() -> None:
    a = EventTimeAligner(max_buffered_per_partition=4)
    for off in range(4):
        a.add("p0", off, 100 + off, off)
    a.add("p1", 0, 1, "x")
    assert a.full() == ["p0"] and "p1" in a.roomy() and "p0" not in a.roomy()
    a.release()
    assert a.buffered() == 4
    assert a.revoke(["p0"]) == 4 and a.buffered() == 0


def test_everything_releases_all_for_a_clean_stop() -> None:
    a = EventTimeAligner()
    a.add("p0", 7, 10, "a")
    a.add("p1", 3, 99, "b")
    assert a.release(everything=True) == (["a", "b"], {"p0": 8, "p1": 4})


@given(st.lists(st.lists(st.integers(0, 1000), max_size=30), min_size=1, max_size=5), st.randoms())
def test_released_prefixes_are_ordered_and_commits_cover_exactly_the_released(parts, rnd) -> None:
    """Whatever the interleaving of polls, everything released comes out in global event-time order (each
    partition being in order), each partition's records in offset order, and the committed offset is
    one past the last released record."""
    a = EventTimeAligner()
    feeds = [sorted(p) for p in parts]  # each partition in (mostly) event-time order, like a producer's
    cursor = [0] * len(feeds)
    released: list[tuple[int, int, int]] = []
    committed: dict[int, int] = {}
    while any(c < len(f) for c, f in zip(cursor, feeds)):
        i = rnd.choice([j for j, f in enumerate(feeds) if cursor[j] < len(f)])
        n = rnd.randint(1, 5)
        for off in range(cursor[i], min(cursor[i] + n, len(feeds[i]))):
            a.add(i, off, feeds[i][off], (i, off, feeds[i][off]))
        cursor[i] = min(cursor[i] + n, len(feeds[i]))
        for j, f in enumerate(feeds):
            a.set_caught_up(j, cursor[j] == len(f))
        items, commits = a.release()
        released += items
        assert [t for _, _, t in released] == sorted(t for _, _, t in released)
        committed.update(commits)
    items, commits = a.release(everything=True)
    released += items
    committed.update(commits)
    for i, f in enumerate(feeds):
        mine = [off for p, off, _ in released if p == i]
        assert mine == list(range(len(f)))
        if f:
            assert committed[i] == len(f)


def test_a_parked_partition_comes_back_with_its_buffer() -> None:
    a = EventTimeAligner()
    a.add("p0", 5, 10, "x")
    a.add("p1", 0, 99, "y")
    parked = a.park(["p0", "p9"])  # p9 was never here
    assert list(parked) == ["p0"] and a.buffered() == 1
    a.unpark("p0", parked["p0"])
    assert a.release(everything=True) == (["x", "y"], {"p0": 6, "p1": 1})
