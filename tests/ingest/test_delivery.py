"""Riding out a broker outage: failed sends are sent again, failed commits retried, moved groups dropped.

The producer and consumer here are doubles at the edge (docs/DESIGN.md "Outside the process") that fail the way kafka-python
3.0.12 did in CI when the broker was stopped mid-commit (KafkaConnectionError from the coordinator
look-up); the real outage is tests/integration/test_broker_restart.py.
"""

from __future__ import annotations

import sqlite3

import pytest
from kafka.errors import (
    CommitFailedError,
    KafkaConnectionError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
)
from kafka.future import Future

from ingest.delivery import AckedSender, StoppedDuringOutage, is_transient, until_done
from ingest.kafka_io import commit_offsets


class SendFuture(Future):
    """What `KafkaProducer.send` returns (FutureRecordMetadata): a future with a blocking `get`."""

    def get(self, timeout=None):
        assert self.is_done, "the producer was flushed first"
        if self.failed():
            raise self.exception
        return self.value


class FlakyProducer:
    """Acknowledges sends, except that the first `fail_sends` futures fail and `refuse_sends` calls raise."""

    def __init__(self, fail_sends: int = 0, refuse_sends: int = 0, error: Exception | None = None) -> None:
        self.fail_sends = fail_sends
        self.refuse_sends = refuse_sends
        self.error = error or KafkaTimeoutError("no ack")
        self.sent: list[dict] = []
        self.acked: list[bytes] = []
        self._futures: list[tuple[Future, dict]] = []

    def send(self, **args) -> Future:
        if self.refuse_sends:
            self.refuse_sends -= 1
            raise KafkaTimeoutError("metadata not available")
        self.sent.append(args)
        f = SendFuture()
        self._futures.append((f, args))
        return f

    def flush(self) -> None:
        for f, args in self._futures:
            if self.fail_sends:
                self.fail_sends -= 1
                f.failure(self.error)
            else:
                f.success(None)
                self.acked.append(args["value"])
        self._futures = []


def _retry(action, **kw):
    naps: list[float] = []
    return until_done(action, what="test", should_stop=lambda: False, sleep=naps.append, log=lambda _: None,
                      **kw), naps


def test_failed_sends_are_sent_again_until_every_record_is_acknowledged() -> None:
    producer = FlakyProducer(fail_sends=2)
    sender = AckedSender(producer)
    for i in range(5):
        sender.send("out", value=b"%d" % i, key=b"k")
    _, naps = _retry(sender.flush)
    assert sorted(producer.acked) == [b"0", b"1", b"2", b"3", b"4"]  # each acknowledged exactly once
    assert len(producer.sent) == 7 and sender.resent == 2 and len(naps) == 1
    assert sender.pending() == 0


def test_a_send_refused_while_the_broker_is_away_is_sent_by_the_next_flush() -> None:
    producer = FlakyProducer(refuse_sends=2)
    sender = AckedSender(producer)
    sender.send("out", value=b"a")
    sender.send("out", value=b"b")
    assert producer.sent == [] and sender.pending() == 2
    _retry(sender.flush)
    assert sorted(producer.acked) == [b"a", b"b"]


def test_a_permanent_failure_is_raised_not_retried() -> None:
    producer = FlakyProducer(fail_sends=1, error=MessageSizeTooLargeError("too big"))
    sender = AckedSender(producer)
    sender.send("out", value=b"x")
    with pytest.raises(MessageSizeTooLargeError):
        _retry(sender.flush)


def test_backoff_grows_to_its_cap_and_a_stop_request_ends_the_retries() -> None:
    calls = {"n": 0}

    def down() -> None:
        calls["n"] += 1
        raise KafkaConnectionError("111 ECONNREFUSED")

    naps: list[float] = []
    stop_after = 6
    with pytest.raises(StoppedDuringOutage):
        until_done(down, what="committing offsets", should_stop=lambda: calls["n"] >= stop_after,
                   sleep=naps.append, log=lambda _: None, first_backoff=0.5, max_backoff=2.0)
    assert naps == [0.5, 1.0, 2.0, 2.0, 2.0] and calls["n"] == stop_after


class OutageConsumer:
    def __init__(self, errors: list[Exception]) -> None:
        self.errors = list(errors)
        self.committed: list[dict] = []

    def commit(self, offsets) -> None:
        if self.errors:
            raise self.errors.pop(0)
        self.committed.append({tp: o.offset for tp, o in offsets.items()})


def test_a_commit_that_cannot_reach_the_broker_is_retried_with_the_same_offsets(monkeypatch) -> None:
    monkeypatch.setattr("ingest.delivery.time.sleep", lambda _: None)
    consumer = OutageConsumer([KafkaConnectionError("111 ECONNREFUSED"), KafkaTimeoutError("coordinator")])
    assert commit_offsets(consumer, {"p0": 10, "p1": 4}, should_stop=lambda: False) is True
    assert consumer.committed == [{"p0": 10, "p1": 4}]


def test_a_commit_refused_after_a_rebalance_is_dropped_not_retried() -> None:
    consumer = OutageConsumer([CommitFailedError("group rebalanced")])
    assert commit_offsets(consumer, {"p0": 10}, should_stop=lambda: False) is False
    assert consumer.committed == []


@pytest.mark.parametrize(("exc", "transient"), [
    (KafkaConnectionError("refused"), True), (KafkaTimeoutError("t"), True),
    (CommitFailedError("moved"), False), (MessageSizeTooLargeError("big"), False), (ValueError("x"), False),
    (sqlite3.OperationalError("database is locked"), True), (sqlite3.OperationalError("no such table: x"), False),
    (sqlite3.IntegrityError("UNIQUE constraint failed"), False),
])
def test_which_errors_count_as_an_outage(exc: Exception, transient: bool) -> None:
    assert is_transient(exc) is transient
