"""Kafka plumbing shared by the live worker, the ingest stage and the API follower.

One place for what every consumer of ours does the same way: building clients, waiting until new
topics show up in the metadata, telling rebalances to the owner, where a gained partition resumes
(committed offset, else the log start) and positioning it there, committing offsets through an
outage, and how far behind the end of its partitions a consumer is. Retrying through a broker outage
itself is ingest/delivery.py. Nothing here decodes or detects.

kafka-python 3.0.12 quirks this module works around: a seek right after a fetch sometimes left the
partition never fetched again (`position_gained` seeks only where it must); `position()` may need a
metadata round trip, which fails in an outage (`known_position` answers None then); a join that finished
between two polls was thrown away, so a consumer polled with a short timeout never completed a rebalance
(`make_consumer` installs the fix: ingest/kafka_patches.py).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from typing import Any

from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer, OffsetAndMetadata, TopicPartition
from kafka.errors import KafkaError

from ingest.delivery import GROUP_MOVED, is_transient, until_done
from ingest.errors import GatewatchError
from ingest.kafka_patches import keep_finished_joins

# A partition whose end is still unknown (no fetch answer yet) stops holding the others back after this.
UNKNOWN_HIGHWATER_GRACE_SECONDS = 5.0


def make_consumer(kafka: Any, *, group_id: str | None = None, client_id: str = "gatewatch-worker") -> KafkaConsumer:
    """A consumer of `group_id` (default: the workers' group) with manual commits; the owner subscribes
    it with its rebalance listener (`RebalanceHooks`)."""
    keep_finished_joins()
    return KafkaConsumer(
        bootstrap_servers=kafka.bootstrap_servers,
        group_id=kafka.group_id if group_id is None else group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=kafka.max_poll_records,
        client_id=client_id,
    )


def make_producer(kafka: Any) -> KafkaProducer:
    # batch_size 1 MiB (default 16 KiB): a keyed worker's ingest step sends a poll's re-keyed records (about
    # 2,400 of ~1 KB for 500 inputs) and then flushes; with 16 KiB batches that is ~150 produce requests,
    # with 1 MiB a few. Measured on 20,000 records, one keyed worker: 22.7–23.0 s → 18.0–19.4 s wall.
    return KafkaProducer(bootstrap_servers=kafka.bootstrap_servers, acks="all", linger_ms=5, batch_size=1024 * 1024,
                         retries=10, client_id="gatewatch-worker",
                         max_request_size=5 * 1024 * 1024)  # dead letters of oversize records (topics.py)


def wait_for_topics(consumer: Any, topics: Iterable[str], timeout: float = 30.0,
                    sleep: Callable[[float], None] = time.sleep) -> dict[str, set[int]]:
    """Until the consumer's metadata knows `topics` (a subscription to a topic created a moment ago
    would otherwise wait for the next metadata refresh, minutes); their partitions."""
    deadline = time.monotonic() + timeout
    parts: dict[str, set[int]] = {}
    while True:
        parts = {t: set(consumer.partitions_for_topic(t) or ()) for t in topics}
        missing = [t for t, p in parts.items() if not p]
        if not missing:
            return parts
        if time.monotonic() > deadline:
            raise GatewatchError(f"Kafka does not show topic {missing[0]} after {timeout:.0f}s")
        sleep(0.2)


class RebalanceHooks(ConsumerRebalanceListener):  # type: ignore[misc]  # kafka-python is untyped
    """A rebalance told to its owner. Both run inside the client's event loop, where blocking calls
    (committed offsets, the time index) are not allowed: the owner positions gained partitions after
    the poll returns (`start_offsets`, `position_gained`).

    `rebalancing`: without partitions, or between a revocation and the assignment that ends the rebalance
    (what an owner waiting to judge idleness asks). Meanwhile the client
    still lists the old partitions as assigned (pending revocation: not fetched, their lag unknown), so an
    owner that judged idleness by `assignment()` could stop in the middle of a rebalance with records
    nobody reads. `owned`: the partitions of the last assignment not revoked since — what the owner may
    buffer, commit and wait for; `assignment()` would bring a partition pending revocation back into an
    aligner as an empty ghost that holds the release point at minus infinity."""

    def __init__(self, *, revoked: Callable[[list[Any]], None], assigned: Callable[[list[Any]], None]) -> None:
        self._revoked = revoked
        self._assigned = assigned
        self._between = True  # revoked, not assigned again (and before the first assignment)
        self.owned: set[Any] = set()

    @property
    def rebalancing(self) -> bool:
        return self._between or not self.owned

    def on_partitions_revoked(self, revoked: Any) -> None:
        self._between = True
        self.owned.difference_update(revoked)
        self._revoked(list(revoked))

    def on_partitions_lost(self, lost: Any) -> None:  # evicted from the group: the same, for us
        self.on_partitions_revoked(lost)

    def on_partitions_assigned(self, assigned: Any) -> None:
        self.owned.update(assigned)
        self._assigned(list(assigned))
        self._between = False


def known_position(consumer: Any, tp: Any) -> int | None:
    """The fetch position of `tp`; None while the broker cannot be asked: callers then hold back."""
    try:
        return consumer.position(tp)  # type: ignore[no-any-return]
    except KafkaError as exc:
        if is_transient(exc):
            return None
        raise


def caught_up(consumer: Any, tps: Iterable[Any], unknown_since: dict[Any, float], now: float) -> dict[Any, bool]:
    """Per partition of `tps`: read up to its high watermark? A partition whose end is not known yet
    counts as behind, for at most UNKNOWN_HIGHWATER_GRACE_SECONDS (`unknown_since` remembers since when)."""
    out: dict[Any, bool] = {}
    for tp in tps:
        high = consumer.highwater(tp)
        if high is None:
            since = unknown_since.setdefault(tp, now)
            out[tp] = now - since >= UNKNOWN_HIGHWATER_GRACE_SECONDS
            continue
        unknown_since.pop(tp, None)
        position = known_position(consumer, tp)
        out[tp] = position is not None and position >= high
    return out


def lag(consumer: Any) -> dict[Any, int | None]:
    """Per assigned partition: records between the position and the high watermark (None: not known yet)."""
    out: dict[Any, int | None] = {}
    for tp in consumer.assignment():
        high = consumer.highwater(tp)
        position = known_position(consumer, tp) if high is not None else None
        out[tp] = None if high is None or position is None else max(0, high - position)
    return out


def start_offsets(consumer: Any, tps: list[Any], *,
                  should_stop: Callable[[], bool]) -> tuple[dict[Any, int], dict[Any, int]]:
    """Where gained partitions resume: (committed offset of those with one, log start of the others),
    read through a broker outage."""
    committed: dict[Any, int] = {}
    fresh = []
    for tp in tps:
        off = until_done(partial(consumer.committed, tp), what="reading committed offsets", should_stop=should_stop)
        if off is None or off < 0:
            fresh.append(tp)  # never committed: from the first record still in the log
        else:
            committed[tp] = off
    starts = until_done(lambda: consumer.beginning_offsets(fresh), what="reading log starts",
                        should_stop=should_stop) if fresh else {}
    return committed, starts


def position_gained(consumer: Any, targets: dict[Any, int], polled: dict[Any, list[Any]]) -> dict[Any, list[Any]]:
    """Make each gained partition read from its target offset; returns `polled` without the records that
    will come again. Seeks only where needed: a partition whose polled records (or position) already start
    at the target is left alone (the common case — first assignment — must not seek at all)."""
    kept = dict(polled)
    assigned = set(consumer.assignment())
    for tp, target in targets.items():
        if tp not in assigned:  # taken away again by a rebalance since: its next owner positions it
            kept.pop(tp, None)
            continue
        msgs = kept.get(tp)
        here = msgs[0].offset if msgs else known_position(consumer, tp)
        if here != target:
            consumer.seek(tp, target)
            kept.pop(tp, None)
    return kept


def still_assigned(owned: set[Any], polled: dict[Any, list[Any]]) -> dict[Any, list[Any]]:
    """`polled` without the records of partitions no longer `owned` (RebalanceHooks.owned).

    A rebalance that finishes after records were fetched (kafka-python 3 rebalances on its own thread)
    hands their partition to a new owner, which reads them. Buffered here, they would bring the partition
    back into the aligner, where it would hold the release point at its last event time forever."""
    if all(tp in owned for tp in polled):
        return polled
    return {tp: msgs for tp, msgs in polled.items() if tp in owned}


def commit_offsets(consumer: Any, commits: dict[Any, int], *, should_stop: Callable[[], bool]) -> bool:
    """Commit `commits` (partition -> next offset), retried through a broker outage. False when a
    rebalance moved the partitions meanwhile: not committed, their next owner reads those records again."""
    offsets = {tp: OffsetAndMetadata(off, "", -1) for tp, off in commits.items()}
    try:
        until_done(lambda: consumer.commit(offsets), what="committing offsets", should_stop=should_stop)
    except GROUP_MOVED as exc:
        print(f"gatewatch: commit refused after a rebalance ({type(exc).__name__}); "
              "those records are read again by their owner", file=sys.stderr, flush=True)
        return False
    return True


def assign_at(consumer: Any, topics: Iterable[str], positions: Mapping[tuple[str, int], int], *,
              timeout: float = 30.0) -> list[Any]:
    """Outside any group: assign every partition of `topics` to `consumer`, each at its position in
    `positions` ((topic, partition) → next offset), else at the log start; the partitions assigned."""
    parts = wait_for_topics(consumer, topics, timeout)
    tps = [TopicPartition(t, p) for t in topics for p in sorted(parts[t])]
    consumer.assign(tps)
    fresh = []
    for tp in tps:
        at = positions.get((tp.topic, tp.partition))
        if at is None:
            fresh.append(tp)
        else:
            consumer.seek(tp, at)
    if fresh:
        consumer.seek_to_beginning(*fresh)
    return tps


class BackPressure:
    """Pause the partitions whose alignment buffer is full, resume them once it has drained to half.

    Bounded memory under skew: with event-time alignment, a partition ahead of the others holds its
    records until the lagging ones catch up, and over a backlog that can be all of them. Paused, it is
    not fetched; the others are, the release point moves, the buffer drains, and it is resumed. A
    partition's pause is read from the consumer, not remembered: kafka-python keeps the pause of a partition
    kept across a rebalance, and a copy of the set here lost it, leaving that partition unfetched."""

    def __init__(self, consumer: Any) -> None:
        self.consumer = consumer
        self.pauses = 0  # partitions paused so far (a figure for the worker's summary)

    def before_poll(self) -> None:
        """Work around a kafka-python 3.0.12 bug that left resumed partitions unfetched for good.

        Pausing a partition whose fetched records are partly returned parks them (`Fetcher.
        _paused_partition_records`), and a parked partition is never fetched again until they are
        restored. `fetched_records` restores them only when its in-line slot `_next_partition_records`
        `is None`, but a fully returned in-line batch stays there as an empty object, not None — so after
        the first fetch the slot is almost never None, and a resumed partition kept its lag forever
        (reproduced by tests/integration/test_skew.py without this). An empty in-line batch means the
        same to the fetcher as None everywhere else, so it is cleared while a resumed partition is
        parked."""
        fetcher = getattr(self.consumer, "_fetcher", None)
        parked = getattr(fetcher, "_paused_partition_records", None)
        if parked and any(tp not in self.consumer.paused() for tp in parked):
            current = fetcher._next_partition_records  # type: ignore[union-attr]
            if current is not None and not current:
                fetcher._next_partition_records = None  # type: ignore[union-attr]

    def apply(self, full: Iterable[Any], roomy: Iterable[Any]) -> None:
        assigned = set(self.consumer.assignment())
        paused = set(self.consumer.paused())
        newly = {tp for tp in full if tp in assigned} - paused
        if newly:
            self.consumer.pause(*newly)
            self.pauses += len(newly)
        drained = {tp for tp in roomy if tp in paused}
        if drained:
            self.consumer.resume(*drained)
