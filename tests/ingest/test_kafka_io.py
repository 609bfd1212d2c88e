"""The shared Kafka plumbing, against a fake consumer (the broker-backed paths: tests/integration)."""

from __future__ import annotations

from typing import Any

import pytest
from kafka.errors import KafkaConnectionError
from kafka.structs import TopicPartition

from ingest.errors import GatewatchError
from ingest.kafka_io import BackPressure, assign_at, caught_up, lag, wait_for_topics


class Consumer:
    def __init__(self, partitions: dict[str, set[int]], high: dict[TopicPartition, int | None] | None = None,
                 position: dict[TopicPartition, int] | None = None) -> None:
        self.partitions = partitions
        self.high = high or {}
        self.positions = dict(position or {})
        self.assigned: list[TopicPartition] = []
        self.calls: list[tuple[Any, ...]] = []
        self.broker_away = False

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return self.partitions.get(topic) or None

    def assign(self, tps: list[TopicPartition]) -> None:
        self.assigned = list(tps)

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.calls.append(("seek", tp.topic, tp.partition, offset))

    def seek_to_beginning(self, *tps: TopicPartition) -> None:
        self.calls.append(("beginning", *sorted((tp.topic, tp.partition) for tp in tps)))

    def highwater(self, tp: TopicPartition) -> int | None:
        return self.high.get(tp)

    def position(self, tp: TopicPartition) -> int:
        if self.broker_away:
            raise KafkaConnectionError("away")
        return self.positions.get(tp, 0)


def test_assign_at_puts_each_partition_at_its_stored_position_else_the_log_start() -> None:
    c = Consumer({"alerts": {0, 1}, "risk": {0}})
    tps = assign_at(c, ["alerts", "risk"], {("alerts", 1): 42, ("risk", 0): 7})
    assert [(tp.topic, tp.partition) for tp in tps] == [("alerts", 0), ("alerts", 1), ("risk", 0)]
    assert c.calls == [("seek", "alerts", 1, 42), ("seek", "risk", 0, 7), ("beginning", ("alerts", 0))]


def test_a_topic_that_never_shows_up_is_one_clear_error() -> None:
    slept: list[float] = []
    with pytest.raises(GatewatchError, match="does not show topic risk"):
        wait_for_topics(Consumer({"alerts": {0}}), ["alerts", "risk"], timeout=0.0, sleep=slept.append)


def test_lag_and_caught_up_say_unknown_while_the_end_or_position_is_not_known() -> None:
    a, b = TopicPartition("t", 0), TopicPartition("t", 1)
    c = Consumer({"t": {0, 1}}, high={a: 10, b: None}, position={a: 4})
    c.assign([a, b])
    assert lag(c) == {a: 6, b: None}
    since: dict[Any, float] = {}
    assert caught_up(c, [a, b], since, now=100.0) == {a: False, b: False}
    assert caught_up(c, [a, b], since, now=106.0)[b] is True  # an end unknown for longer than the grace: not holding back
    c.positions[a] = 10
    assert caught_up(c, [a, b], since, now=107.0)[a] is True
    c.broker_away = True  # position() needs the broker: not known, so neither lag nor caught up
    assert lag(c)[a] is None and caught_up(c, [a, b], since, now=108.0)[a] is False


class PausingConsumer(Consumer):
    def __init__(self, tps: list[TopicPartition]) -> None:
        super().__init__({})
        self.assigned = list(tps)
        self.paused_set: set[TopicPartition] = set()  # kafka-python keeps a kept partition's pause
        self._fetcher = type("Fetcher", (), {})()
        self._fetcher._paused_partition_records = {}
        self._fetcher._next_partition_records = None

    def pause(self, *tps: TopicPartition) -> None:
        self.paused_set |= set(tps)

    def resume(self, *tps: TopicPartition) -> None:
        self.paused_set -= set(tps)

    def paused(self) -> set[TopicPartition]:
        return self.paused_set & set(self.assigned)


class Batch:
    """Stands for kafka-python's PartitionRecords: false once every record was returned."""

    def __init__(self, left: int) -> None:
        self.left = left

    def __bool__(self) -> bool:
        return self.left > 0


def test_back_pressure_pauses_full_partitions_and_resumes_drained_ones() -> None:
    p0, p1, p2 = (TopicPartition("a", i) for i in range(3))
    consumer = PausingConsumer([p0, p1])
    bp = BackPressure(consumer)
    bp.apply(full=[p0, p2], roomy=[p1])  # p2 is not ours: never paused
    assert consumer.paused() == {p0} and bp.pauses == 1
    bp.apply(full=[p0], roomy=[p1])  # still full: not paused twice
    assert bp.pauses == 1
    bp.apply(full=[], roomy=[p0, p1])
    assert consumer.paused() == set()
    bp.apply(full=[p1], roomy=[])
    consumer.assigned = [p0]  # a rebalance took p1 (and its pause) away
    bp.apply(full=[], roomy=[])
    assert consumer.paused() == set()


def test_a_partition_kept_paused_across_a_rebalance_is_resumed_when_it_drains() -> None:
    """kafka-python keeps the pause of a partition kept across a rebalance; a step that ran while the
    assignment was empty must not make back-pressure forget it (it would never be fetched again)."""
    p0 = TopicPartition("a", 0)
    consumer = PausingConsumer([p0])
    bp = BackPressure(consumer)
    bp.apply(full=[p0], roomy=[])
    consumer.assigned = []  # mid-rebalance
    bp.apply(full=[], roomy=[])
    consumer.assigned = [p0]  # kept, still paused in the client
    bp.apply(full=[], roomy=[p0])
    assert consumer.paused() == set()


def test_before_poll_unparks_a_resumed_partition_behind_an_emptied_batch() -> None:
    """kafka-python 3.0.12 restores parked records only when its in-line batch slot is None."""
    p0, p1 = TopicPartition("a", 0), TopicPartition("a", 1)
    consumer = PausingConsumer([p0, p1])
    fetcher = consumer._fetcher
    bp = BackPressure(consumer)
    bp.apply(full=[p0], roomy=[])
    fetcher._paused_partition_records = {p0: Batch(3)}
    fetcher._next_partition_records = Batch(0)  # p1's batch, all returned
    bp.before_poll()
    assert fetcher._next_partition_records is not None  # p0 still paused: left parked
    bp.apply(full=[], roomy=[p0])
    fetcher._next_partition_records = live = Batch(2)  # records still to return: never dropped
    bp.before_poll()
    assert fetcher._next_partition_records is live
    live.left = 0
    bp.before_poll()
    assert fetcher._next_partition_records is None  # now the fetcher restores p0's parked records
