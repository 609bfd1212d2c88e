"""`Worker` without a broker: a fake consumer at the edge (docs/DESIGN.md "Outside the process"), the real pipeline inside.

What the live loop promises: results durable before offsets are committed (and the committed offset is
the next record to read), a step that fails in an outage retried rather than skipped, a redelivered
batch giving no second alert, a gained partition positioned at its committed offset, idle exit and stop.
Broker-backed behaviour (real rebalances, crashes, restarts) is tests/integration's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kafka.errors import KafkaConnectionError
from kafka.structs import TopicPartition

from gatewatch.pipeline import BatchResult, Pipeline
from gatewatch.worker import StopFlag, Worker, WorkerOptions
from tests.conftest import T0
from tests.events import access, raw

TOPIC = "gateway.access"


@dataclass
class Msg:
    topic: str
    partition: int
    offset: int
    value: bytes
    headers: list[tuple[str, bytes]] = field(default_factory=list)


class FakeConsumer:
    """Just what the worker calls on a KafkaConsumer; every call that matters is logged in `log`."""

    def __init__(self, log: list[tuple], partitions: int = 2) -> None:
        self.log = log
        self.tps = [TopicPartition(TOPIC, p) for p in range(partitions)]
        self.records: dict[TopicPartition, list[Msg]] = {tp: [] for tp in self.tps}
        self.positions = {tp: 0 for tp in self.tps}
        self.committed_offsets: dict[TopicPartition, int] = {}
        self.assigned: list[TopicPartition] = []
        self.listener: Any = None
        self.pending_assignment: list[TopicPartition] | None = list(self.tps)
        self.fail_commits = 0

    def add(self, partition: int, value: bytes) -> None:
        tp = self.tps[partition]
        self.records[tp].append(Msg(TOPIC, partition, len(self.records[tp]), value))

    # -- the consumer API the worker uses ----------------------------------------------------------
    def subscribe(self, topics: list[str], listener: Any) -> None:
        self.listener = listener

    def poll(self, timeout_ms: int = 0) -> dict[TopicPartition, list[Msg]]:
        if self.pending_assignment is not None:  # a (re)join: revoke everything, assign the new set
            if self.assigned:
                self.listener.on_partitions_revoked(list(self.assigned))
            self.assigned, self.pending_assignment = self.pending_assignment, None
            self.listener.on_partitions_assigned(list(self.assigned))
        out = {}
        for tp in self.assigned:
            msgs = self.records[tp][self.positions[tp]:self.positions[tp] + 3]
            if msgs:
                out[tp] = msgs
                self.positions[tp] += len(msgs)
        self.log.append(("poll", sum(len(m) for m in out.values())))
        return out

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    def highwater(self, tp: TopicPartition) -> int:
        return len(self.records[tp])

    def position(self, tp: TopicPartition) -> int:
        return self.positions[tp]

    def committed(self, tp: TopicPartition) -> int | None:
        return self.committed_offsets.get(tp)

    def beginning_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: 0 for tp in tps}

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.log.append(("seek", tp.partition, offset))
        self.positions[tp] = offset

    def commit(self, offsets: dict[TopicPartition, Any]) -> None:
        if self.fail_commits:
            self.fail_commits -= 1
            self.log.append(("commit failed",))
            raise KafkaConnectionError("broker away")
        for tp, meta in offsets.items():
            self.committed_offsets[tp] = meta.offset
        self.log.append(("commit", {tp.partition: m.offset for tp, m in offsets.items()}))

    def offsets_for_times(self, query: dict) -> dict:
        return {tp: None for tp in query}

    def pause(self, *tps: TopicPartition) -> None: ...

    def resume(self, *tps: TopicPartition) -> None: ...

    def paused(self) -> set[TopicPartition]:
        return set()

    def close(self) -> None: ...


class ListSink:
    """A result sink that logs writes and flushes; `fail_flushes` transient failures first."""

    def __init__(self, log: list[tuple]) -> None:
        self.log = log
        self.results: list[BatchResult] = []
        self.fail_flushes = 0

    def write(self, result: BatchResult) -> None:
        self.results.append(result)
        self.log.append(("write", result.events))

    def flush(self) -> None:
        if self.fail_flushes:
            self.fail_flushes -= 1
            self.log.append(("flush failed",))
            raise KafkaConnectionError("broker away")
        self.log.append(("flush",))


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 0.5  # every look at the clock is half a second later: idle exits come quickly
        return self.now


def nonce_records(minter: Any) -> list[bytes]:
    tok = minter.mint({"sub": "alice", "client_id": "spa", "exp": T0 + 3600, "iat": T0})
    recs = [access(f"e{i}", T0 + i, token=tok, nonce=f"n{i}") for i in range(8)]
    recs.append(access("replayed", T0 + 20, token=tok, nonce="n3", client_ip="198.51.100.66"))
    return [raw(r) for r in recs]


def make_worker(settings: Any, validator: Any, consumer: FakeConsumer, sink: ListSink, **kwargs: Any) -> Worker:
    options = kwargs.pop("options", WorkerOptions(idle_exit_seconds=2.0))
    return Worker(consumer=consumer, topics=[TOPIC], pipeline=Pipeline.from_settings(settings, validator),
                  sinks=[sink], options=options, clock=Clock(), **kwargs)


def test_results_are_flushed_before_the_offsets_after_them_are_committed(settings, validator, minter) -> None:
    log: list[tuple] = []
    consumer, sink = FakeConsumer(log), ListSink(log)
    for i, value in enumerate(nonce_records(minter)):
        consumer.add(i % 2, value)
    worker = make_worker(settings, validator, consumer, sink)
    worker.run()
    assert worker.records == 9 and sum(r.events for r in sink.results) == 9
    assert [a.type for r in sink.results for a in r.alerts] == ["replay.nonce"]
    # every commit follows a flush of the results it covers, and none comes before the first flush
    steps = [entry[0] for entry in log if entry[0] in ("write", "flush", "commit")]
    assert steps.index("flush") < steps.index("commit")
    for i, step in enumerate(steps):
        if step == "commit" and "write" in steps[:i]:
            last_write = max(j for j in range(i) if steps[j] == "write")
            assert "flush" in steps[last_write:i]
    # the committed offset is the next record to read, on each partition
    assert {tp.partition: off for tp, off in consumer.committed_offsets.items()} == {0: 5, 1: 4}


def test_a_flush_or_commit_failing_in_an_outage_is_retried_not_skipped(settings, validator, minter) -> None:
    log: list[tuple] = []
    consumer, sink = FakeConsumer(log), ListSink(log)
    for i, value in enumerate(nonce_records(minter)):
        consumer.add(i % 2, value)
    sink.fail_flushes, consumer.fail_commits = 2, 2
    worker = make_worker(settings, validator, consumer, sink)
    worker.run()
    assert ("flush failed",) in log and ("commit failed",) in log
    assert {tp.partition: off for tp, off in consumer.committed_offsets.items()} == {0: 5, 1: 4}
    first_fail = log.index(("flush failed",))
    assert not any(entry[0] == "commit" for entry in log[first_fail:log.index(("flush",), first_fail)])


def test_a_redelivered_batch_after_a_rejoin_raises_no_second_alert(settings, validator, minter) -> None:
    """The worker is handed its partitions again at the committed offsets; the same records a second time
    (the broker redelivers what was not committed) give the same alert id and nothing new."""
    log: list[tuple] = []
    consumer, sink = FakeConsumer(log), ListSink(log)
    for value in nonce_records(minter):
        consumer.add(0, value)
    worker = make_worker(settings, validator, consumer, sink)
    worker.run()
    alerts = [a.id for r in sink.results for a in r.alerts]
    assert len(alerts) == 1
    # a rejoin that moved the committed offsets back: everything from 2 on comes again
    consumer.committed_offsets = {consumer.tps[0]: 2}
    consumer.pending_assignment = list(consumer.tps)
    sink.results.clear()
    worker.stop_flag = StopFlag()
    worker.run()
    assert ("seek", 0, 2) in log  # positioned at the committed offset, not left where it was
    assert sum(r.events for r in sink.results) == 7
    assert [a.id for r in sink.results for a in r.alerts] == []


def test_stop_ends_the_loop_and_max_events_stops_it_too(settings, validator, minter) -> None:
    log: list[tuple] = []
    consumer, sink = FakeConsumer(log), ListSink(log)
    for value in nonce_records(minter):
        consumer.add(0, value)
    worker = make_worker(settings, validator, consumer, sink, options=WorkerOptions(max_events=3))
    worker.run()
    assert worker.records == 3  # one poll of three records, then it stopped
    stop = StopFlag()
    stop.set()
    stopped = make_worker(settings, validator, FakeConsumer([]), ListSink([]), stop=stop)
    stopped.run()
    assert stopped.records == 0 and stopped.stopping()


def test_before_poll_is_told_whether_the_last_poll_had_records(settings, validator, minter) -> None:
    log: list[tuple] = []
    consumer, sink = FakeConsumer(log), ListSink(log)
    for value in nonce_records(minter)[:4]:
        consumer.add(0, value)
    seen: list[bool] = []
    worker = make_worker(settings, validator, consumer, sink, before_poll=lambda busy: seen.append(busy) or 0)
    worker.run()
    assert seen[:3] == [False, True, True]  # first poll: nothing yet; then 3 records, then 1
    assert seen[3] is False and worker.records == 4


class LateRevokingConsumer(FakeConsumer):
    """Its second poll finishes a rebalance that takes partition 1 away, yet still returns records of
    partition 1 fetched before it (kafka-python 3 rebalances on its own thread)."""

    def __init__(self, log: list[tuple]) -> None:
        super().__init__(log)
        self.polls = 0

    def poll(self, timeout_ms: int = 0) -> dict[TopicPartition, list[Msg]]:
        self.polls += 1
        if self.polls != 2:
            return super().poll(timeout_ms)
        gone = self.tps[1]
        stale = self.records[gone][self.positions[gone]:self.positions[gone] + 3]
        self.pending_assignment = [self.tps[0]]
        out = super().poll(timeout_ms)
        out[gone] = stale
        return out


def test_records_of_a_partition_revoked_meanwhile_are_left_to_its_new_owner(settings, validator, minter) -> None:
    log: list[tuple] = []
    consumer, sink = LateRevokingConsumer(log), ListSink(log)
    values = nonce_records(minter)[:8]
    for i, value in enumerate(values):
        consumer.add(i % 2, value)  # p0: records 0, 2, 4, 6; p1: 1, 3, 5, 7
    worker = make_worker(settings, validator, consumer, sink)
    worker.run()
    # p0's four, and at most the three of p1 read while it was ours (those still buffered at the revocation
    # went back to Kafka); never the stale ones returned after it
    assert 4 <= sum(r.events for r in sink.results) <= 4 + 3
    assert all(tp.partition == 0 for tp in worker.aligner._parts)  # no ghost of p1 holding time back


class SlowRejoinConsumer(FakeConsumer):
    """A rebalance over two polls, as kafka-python 3 does it: the first revokes everything and returns
    nothing, while `assignment()` still lists the old partitions (pending revocation); the second ends it,
    assigning partition 0 only."""

    def __init__(self, log: list[tuple]) -> None:
        super().__init__(log)
        self.polls = 0

    def poll(self, timeout_ms: int = 0) -> dict[TopicPartition, list[Msg]]:
        self.polls += 1
        if self.polls == 2:
            self.listener.on_partitions_revoked(list(self.assigned))
            return {}
        if self.polls == 3:
            self.assigned = [self.tps[0]]
            self.listener.on_partitions_assigned([self.tps[0]])
        return super().poll(timeout_ms)


def test_a_partition_pending_revocation_leaves_no_ghost_that_holds_time_back(settings, validator, minter) -> None:
    log: list[tuple] = []
    consumer, sink = SlowRejoinConsumer(log), ListSink(log)
    values = nonce_records(minter)[:8]
    for i, value in enumerate(values):
        consumer.add(i % 2, value)  # p0: records 0, 2, 4, 6; p1: 1, 3, 5, 7 (p1 never fully read: behind)
    worker = make_worker(settings, validator, consumer, sink)
    assert worker.hooks.rebalancing  # not joined yet
    for _ in range(5):  # no drain at the end: what is released here, the aligner let through on its own
        worker.process(consumer.poll())
    assert not worker.hooks.rebalancing
    assert all(tp.partition == 0 for tp in worker.aligner._parts)  # p1, pending revocation, was not brought back
    # p0's four records all released (the first step's p1 records went back to Kafka with the revocation)
    assert worker.aligner.buffered() == 0 and worker.records >= 4


class PausingConsumer(FakeConsumer):
    """Honours pause/resume: a paused partition is not fetched."""

    def __init__(self, log: list[tuple]) -> None:
        super().__init__(log)
        self.paused_tps: set[TopicPartition] = set()

    def add_frame(self, partition: int, frame: bytes) -> None:
        self.add(partition, frame)

    def poll(self, timeout_ms: int = 0) -> dict[TopicPartition, list[Msg]]:
        out = super().poll(timeout_ms)
        for tp in self.paused_tps & set(out):  # not fetched: give the records back
            self.positions[tp] -= len(out.pop(tp))
        return out

    def pause(self, *tps: TopicPartition) -> None:
        self.paused_tps.update(tps)
        self.log.append(("pause", sorted(tp.partition for tp in tps)))

    def resume(self, *tps: TopicPartition) -> None:
        self.paused_tps.difference_update(tps)
        self.log.append(("resume", sorted(tp.partition for tp in tps)))

    def paused(self) -> set[TopicPartition]:
        return set(self.paused_tps)


def test_a_detect_loop_pauses_a_partition_that_waits_for_another_ones_watermark(settings, validator, minter) -> None:
    """Watermark mode (a keyed worker's detect loop). Re-keyed partition 0 holds events of source s0 up to
    T0 + 9, but on it source s1 has only reached T0; partition 1 is further behind (s0 at T0 − 100), so
    partition 0 does not hold the release point and its full buffer is paused. Once partition 1's s0 mark
    moves on, partition 0 holds the point: resumed, read on (its later frame carries s1's mark), drained."""
    from ingest.routing import EVENTS, PRINCIPAL, FramePacker, decode_frame
    from gatewatch.worker import keyed_reader

    log: list[tuple] = []
    consumer, sink = PausingConsumer(log), ListSink(log)
    pipeline = Pipeline.from_settings(settings, validator, partition=PRINCIPAL)
    packer = FramePacker(events_partitions=2, keyed_partitions=1, side_kinds=frozenset())

    def frame(events: list, marks: dict) -> bytes:
        frames = [f for stream, _, f in packer.pack(events, marks) if stream == EVENTS]
        return next(f for f in frames if decode_frame(f).entries) if events else frames[0]

    tok = minter.mint({"sub": "alice", "client_id": "spa", "exp": T0 + 3600, "iat": T0})
    events = [pipeline.decode_one(raw(access(f"e{i}", T0 + i, token=tok, nonce=f"n{i}")), None) for i in range(10)]
    consumer.add_frame(1, frame([], {"s0": (T0 - 100, False), "s1": (T0 + 1000, False)}))
    consumer.add_frame(0, frame([], {"s1": (T0, False)}))
    for i, event in enumerate(events):
        consumer.add_frame(0, frame([event], {"s0": (T0 + i, False)}))
    consumer.add_frame(0, frame([], {"s1": (T0 + 1000, False)}))
    worker = Worker(consumer=consumer, topics=[TOPIC], pipeline={PRINCIPAL: pipeline}, reader=keyed_reader(TOPIC),
                    watermark_sources=frozenset({"s0", "s1"}), sinks=[sink], clock=Clock(),
                    options=WorkerOptions(idle_exit_seconds=2.0, max_buffered_per_partition=4))
    for _ in range(4):
        worker.process(consumer.poll())
    assert ("pause", [0]) in log and worker.records == 0  # full, not holding the point back: paused
    assert worker.aligner.buffered() <= 4 + 3  # the cap plus one poll (3 records here)
    consumer.add_frame(1, frame([], {"s0": (T0 + 1000, False)}))
    for _ in range(6):
        worker.process(consumer.poll())
    assert ("resume", [0]) in log
    assert worker.records == 10 and worker.aligner.buffered() == 0  # every event, none left behind
    assert worker.back_pressure.pauses == 1
