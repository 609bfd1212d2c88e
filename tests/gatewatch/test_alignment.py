"""EventTimeAligner: release in event-time order across partitions, commit only what was released."""

from __future__ import annotations

import random

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
    while any(c < len(f) for c, f in zip(cursor, feeds, strict=True)):
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


# -- watermark mode: the detect stage of keyed workers -----------------------------------------------

def test_a_source_not_heard_of_holds_everything_back_until_it_reports() -> None:
    a = EventTimeAligner(sources=frozenset({"in/0", "in/1"}))
    a.add("ev0", 0, 10, "a10")
    a.advance("ev0", 1, {"in/0": (50.0, False)})
    a.add("ev0", 2, 20, "a20")
    assert a.release() == ([], {}) and a.waiting_for() == ["in/1"]  # in/1 may still hold older events
    a.advance("ev0", 3, {"in/1": (15.0, False)})
    assert a.release() == (["a10"], {"ev0": 2})
    a.advance("ev0", 4, {"in/1": (5.0, False)})  # a new owner of in/1 reports less: time never goes back
    assert a.release() == ([], {})
    a.advance("ev0", 5, {"in/1": (15.0, True)})  # idle: caught up with nothing held
    assert a.release() == (["a20"], {"ev0": 6})  # the offset moves past the watermark records too
    assert a.waiting_for() == ["in/0"]


def test_every_partition_waits_for_the_sources_on_it() -> None:
    a = EventTimeAligner(sources=frozenset({"in/0"}))
    a.add("ev0", 0, 10, "x")
    a.advance("ev0", 1, {"in/0": (99.0, False)})
    a.assign(["ev1"])  # nothing read on ev1 yet: its records might be older
    assert a.release() == ([], {})
    a.advance("ev1", 0, {"in/0": (12.0, False)})
    assert a.release() == (["x"], {"ev0": 2, "ev1": 1})


@given(st.lists(st.lists(st.integers(0, 40), max_size=25), min_size=1, max_size=5),
       st.integers(1, 3), st.integers(1, 4), st.integers(0, 2**32))
def test_ingest_workers_and_source_watermarks_hand_detectors_global_event_time_order(
        inputs, n_workers, n_parts, seed) -> None:
    """Input partitions (each in event-time order) split over ingest workers that align only their own,
    publish to re-keyed partitions in whatever order they run, then their source watermarks: the detect
    side releases everything exactly once, in global event-time order, without being told to flush."""
    rnd = random.Random(seed)  # the interleaving (a seed, not hypothesis draws: thousands of choices per run)
    feeds = {f"in/{i}": sorted(f) for i, f in enumerate(inputs)}
    owners = {src: i % n_workers for i, src in enumerate(feeds)}
    ingest = [EventTimeAligner() for _ in range(n_workers)]
    cursor = dict.fromkeys(feeds, 0)
    logs: list[list[tuple]] = [[] for _ in range(n_parts)]
    detect = EventTimeAligner(sources=frozenset(feeds))
    detect.assign(list(range(n_parts)))
    read = [0] * n_parts
    released: list[tuple[str, int, int]] = []
    sent: list[dict] = [{} for _ in range(n_workers)]

    def ingest_step(w: int) -> None:
        mine = [s for s in feeds if owners[s] == w]
        pending = [s for s in mine if cursor[s] < len(feeds[s])]
        if pending:
            s = rnd.choice(pending)
            for off in range(cursor[s], min(cursor[s] + rnd.randint(1, 4), len(feeds[s]))):
                ingest[w].add(s, off, feeds[s][off], (s, off, feeds[s][off]))
                cursor[s] = off + 1
        for s in mine:
            ingest[w].set_caught_up(s, cursor[s] == len(feeds[s]))
        items, _ = ingest[w].release()
        for item in items:
            logs[(int(item[0][3:]) + item[1]) % n_parts].append(("ev", item))
        marks = ingest[w].progress(mine)
        if marks != sent[w]:  # like the stage: watermarks when they moved (the heartbeat aside)
            sent[w] = marks
            for log in logs:
                log.append(("wm", marks))

    def detect_step(k: int) -> None:
        for off in range(read[k], min(read[k] + rnd.randint(1, 6), len(logs[k]))):
            what, body = logs[k][off]
            if what == "wm":
                detect.advance(k, off, body)
            else:
                detect.add(k, off, body[2], body)
            read[k] = off + 1
        items, _ = detect.release()
        released.extend(items)
        assert [t for _, _, t in released] == sorted(t for _, _, t in released)

    while any(cursor[s] < len(f) for s, f in feeds.items()) or any(r < len(log) for r, log in zip(read, logs, strict=True)):
        if rnd.random() < 0.5:
            ingest_step(rnd.randrange(n_workers))
        else:
            detect_step(rnd.randrange(n_parts))
    for w in range(n_workers):  # every input read: the last watermarks say idle
        ingest_step(w)
    for k in range(n_parts):
        while read[k] < len(logs[k]):
            detect_step(k)
    expected = sorted((s, off, t) for s, f in feeds.items() for off, t in enumerate(f))
    assert sorted(released) == expected and detect.buffered() == 0


def test_a_frame_of_several_items_is_committed_only_once_all_of_them_are_released() -> None:
    """A re-keyed record is a frame of many events sharing one offset: the commit may not pass it while
    one of its events is still held back."""
    a = EventTimeAligner()
    for ts in (10, 30):  # one frame at offset 0, its events at 10 and 30
        a.add("p0", 0, ts, f"p0-{ts}")
    a.add("p0", 1, 40, "p0-40")
    a.add("p1", 0, 20, "p1-20")
    items, commits = a.release()
    assert items == ["p0-10", "p1-20"] and commits == {"p0": 0, "p1": 1}  # frame 0 half released: not passed
    a.add("p1", 1, 35, "p1-35")
    items, commits = a.release()
    assert items == ["p0-30", "p1-35"] and commits == {"p0": 1, "p1": 2}


def test_the_partition_holding_the_release_point_is_never_full() -> None:
    """In watermark mode a buffered frame may wait for a source watermark that comes only in the same
    partition's later frames: pausing that partition would stop the worker for good."""
    a = EventTimeAligner(max_buffered_per_partition=2, sources=frozenset({"in/0", "in/1"}))
    for off, ts in enumerate((10, 11, 12)):
        a.add("x", off, ts, f"x{ts}")
        a.add("y", off, ts, f"y{ts}")
    a.advance("x", 3, {"in/0": (20.0, False), "in/1": (5.0, False)})  # x still waits for in/1 past 5
    a.advance("y", 3, {"in/0": (20.0, False), "in/1": (20.0, False)})
    assert a.release()[0] == [] and a.release_point() == 5.0
    assert a.full() == ["y"]  # both over the cap; x holds the release point: it must be read on
    a.advance("x", 4, {"in/1": (20.0, False)})
    items, _ = a.release()
    assert len(items) == 6 and a.full() == []


def test_raw_mode_never_pauses_the_lagging_partition() -> None:
    a = EventTimeAligner(max_buffered_per_partition=2)
    for off, ts in enumerate((50, 60, 70)):
        a.add("ahead", off, ts, ts)
    a.add("behind", 0, 5, 5)
    a.release()
    assert a.full() == ["ahead"]  # "behind" holds the point, and holds nothing back itself


def test_a_paused_partition_that_comes_to_hold_the_release_point_is_resumed() -> None:
    """Paused while full and ahead, then the one the others wait for: its unread frames carry the source
    watermark its own buffer needs, so it must be fetched again whatever its buffer holds."""
    a = EventTimeAligner(max_buffered_per_partition=2, sources=frozenset({"in/0", "in/1"}))
    for off, ts in enumerate((10, 11, 12)):  # from ingest worker 0: in/0 is far ahead
        a.add("x", off, ts, f"x{ts}")
    a.advance("x", 3, {"in/0": (30.0, False), "in/1": (8.0, False)})
    a.advance("y", 0, {"in/0": (30.0, False), "in/1": (5.0, False)})
    a.release()
    assert a.full() == ["x"] and "x" not in a.roomy()  # y holds the point (5): x may wait, paused
    a.advance("y", 1, {"in/1": (20.0, False)})  # y moves on; now x's own in/1 mark (8) holds everything
    items, _ = a.release()
    assert a.release_point() == 8.0 and len(a._parts["x"]) == 3  # nothing of x released (10 > 8)
    assert "x" in a.roomy() and a.full() == []  # x must be fetched again: its next frames carry in/1
