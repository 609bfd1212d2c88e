"""Riding out a broker outage: the worker's durable steps are retried, never skipped or half-done.

A batch's results must be acknowledged by Kafka before its input offsets are committed (docs/DESIGN.md "Delivery").
When the broker goes away mid-step (restart, network blip, leader move), two things can fail:

* **publishing** results (alerts, risk, dead letters, re-keyed events): the detectors have already
  seen the batch, so processing it again would call it a redelivery and raise nothing — the very
  records that failed must be sent again. `AckedSender` keeps every record until the broker has
  acknowledged it and re-sends only the ones that failed;
* **committing** offsets: a commit that cannot reach the coordinator is retried with the same offsets.
  A commit refused because a rebalance moved the partitions (`CommitFailedError` and the group errors)
  is dropped: the partitions' new owner reads those records again, and alert ids are deterministic.

`until_done` is the one retry loop both use (and the store's flush): transient errors back off and retry (announced once
per outage on stderr) until the step succeeds or the worker is asked to stop; anything else is raised.
"""

from __future__ import annotations

import sqlite3
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

from kafka.errors import (
    CommitFailedError,
    IllegalGenerationError,
    KafkaConnectionError,
    KafkaError,
    RebalanceInProgressError,
    UnknownMemberIdError,
)

from ingest.errors import GatewatchError

T = TypeVar("T")

# A commit refused for these means the partitions are no longer ours: not an outage, nothing to retry.
GROUP_MOVED = (CommitFailedError, IllegalGenerationError, RebalanceInProgressError, UnknownMemberIdError)


class StoppedDuringOutage(GatewatchError):
    """The worker was asked to stop while a durable step still failed: it exits without committing
    (the records are read again by the next run; exit code 1)."""

    def __init__(self, what: str) -> None:
        super().__init__(f"stopped while Kafka was unavailable ({what}); uncommitted records are read again")


def is_transient(exc: BaseException) -> bool:
    """An error that goes away by itself: a Kafka outage, or the store's file locked by another writer
    for longer than its busy timeout (a slow store slows the worker down; it never crashes it)."""
    if isinstance(exc, sqlite3.OperationalError):
        return any(word in str(exc) for word in ("locked", "busy"))
    if isinstance(exc, GROUP_MOVED) or not isinstance(exc, KafkaError):
        return False
    return isinstance(exc, KafkaConnectionError) or bool(getattr(exc, "retriable", False))


def until_done(action: Callable[[], T], *, what: str, should_stop: Callable[[], bool],
               sleep: Callable[[float], None] = time.sleep, first_backoff: float = 0.2,
               max_backoff: float = 5.0, log: Callable[[str], None] | None = None) -> T:
    """`action()` retried through transient Kafka errors with exponential backoff; other errors raise.
    Raises `StoppedDuringOutage` if `should_stop()` turns true before it succeeds."""
    say = log or (lambda line: print(line, file=sys.stderr, flush=True))
    backoff = first_backoff
    failures = 0
    while True:
        try:
            result = action()
        except Exception as exc:
            if not is_transient(exc):
                raise
            failures += 1
            if failures == 1:
                say(f"gatewatch: Kafka unavailable while {what} ({type(exc).__name__}); retrying")
            if should_stop():
                raise StoppedDuringOutage(what) from None
            sleep(backoff)
            backoff = min(max_backoff, backoff * 2)
            continue
        if failures:
            say(f"gatewatch: {what} succeeded after {failures} failed attempt(s)")
        return result


class AckedSender:
    """Sends records through a producer and keeps each one until the broker has acknowledged it."""

    def __init__(self, producer: Any) -> None:
        self.producer = producer
        self._records: list[list[Any]] = []  # [send arguments, future | None (not handed to the producer)]
        self.resent = 0

    def send(self, topic: str, **kwargs: Any) -> None:
        entry: list[Any] = [{"topic": topic, **kwargs}, None]
        self._records.append(entry)
        try:
            entry[1] = self.producer.send(**entry[0])
        except Exception as exc:
            if not is_transient(exc):
                raise
            # no metadata for the topic while the broker is away: `flush` sends it again

    def pending(self) -> int:
        return len(self._records)

    def flush(self) -> None:
        """Block until every record sent is acknowledged. Records that failed are kept and sent again by
        the next `flush`; the first failure is raised (transient ones are retried by `until_done`)."""
        failures: list[BaseException] = []
        for entry in self._records:
            if entry[1] is None:
                try:
                    entry[1] = self.producer.send(**entry[0])
                    self.resent += 1
                except Exception as exc:
                    if not is_transient(exc):
                        raise
                    failures.append(exc)
        self.producer.flush()
        for entry in self._records:
            future = entry[1]
            if future is None:
                continue
            try:
                future.get(timeout=30)  # done after flush; a bounded wait if the producer closed early
            except Exception as exc:
                failures.append(exc)
                entry[1] = None
        if failures:
            raise failures[0]
        self._records = []
