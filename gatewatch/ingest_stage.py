"""The ingest stage of `gatewatch run`: raw gateway records → normalised, re-keyed events.

Stateless: decode, validate the token (decrypt once per token: the validator caches by fingerprint),
then publish the normalised event to `gatewatch.events` keyed by principal and, once per side key its
detectors need, to `gatewatch.events.by_key` (ingest/routing.py). Records keep the broker's default
timestamp (when they were written), not the event time: time-based retention would otherwise delete
a replayed month of history on arrival. Undecodable records go to the dead-letter topic. Input offsets are committed only after every send
is acknowledged: a crash re-publishes, and downstream the original source marks that a redelivery.

The input partitions are aligned on event time (`EventTimeAligner`) before publishing: otherwise one
input partition read ahead of another would interleave hours of event time on every output partition.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kafka import ConsumerRebalanceListener, OffsetAndMetadata

from gatewatch.alignment import EventTimeAligner
from gatewatch.pipeline import Pipeline
from gatewatch.worker import position_gained
from ingest.deadletter import DeadLetter
from ingest.events import Source
from ingest.routing import PRINCIPAL, encode_event, principal_key, side_keys


def side_kinds_of(pipelines: dict[str | None, Pipeline]) -> frozenset[str]:
    """The side-key kinds some detect pipeline consumes (the others need not be published)."""
    return frozenset(k for k in pipelines if k is not None and k != PRINCIPAL)


class IngestStage:
    def __init__(self, *, consumer: Any, producer: Any, topics: Sequence[str], decoder: Pipeline,
                 events_topic: str, keyed_topic: str, dlq_topic: str, side_kinds: frozenset[str]) -> None:
        self.consumer = consumer
        self.producer = producer
        self.decoder = decoder  # only its `decode_one` is used: the stage keeps no detector state
        self.events_topic = events_topic
        self.keyed_topic = keyed_topic
        self.dlq_topic = dlq_topic
        self.side_kinds = side_kinds
        self.records = 0
        self.published = 0
        self.dead_letters = 0
        self._event_partitions: list[int] | None = None
        self.aligner = EventTimeAligner()
        self._gained: list[Any] = []  # partitions assigned in the last poll, to position before use
        consumer.subscribe(topics=list(topics), listener=_Rebalance(self))

    def _broadcast_partitions(self) -> list[int]:
        if self._event_partitions is None:
            parts = self.producer.partitions_for(self.events_topic)
            self._event_partitions = sorted(parts) if parts else [0]
        return self._event_partitions

    def step(self, polled: dict[Any, list[Any]], *, everything: bool = False) -> int:
        """Buffer one polled batch, publish what is aligned, commit it; returns how many records it held."""
        if self._gained:  # buffered records of a rebalance were dropped: read from the committed offset
            gained, self._gained = self._gained, []
            assigned = set(self.consumer.assignment())  # a later rebalance may have taken some back
            gained = [tp for tp in gained if tp in assigned]
            targets, fresh = {}, []
            for tp in gained:
                committed = self.consumer.committed(tp)
                if committed is None or committed < 0:
                    fresh.append(tp)
                else:
                    targets[tp] = committed
            if fresh:
                targets.update(self.consumer.beginning_offsets(fresh))
            polled = position_gained(self.consumer, targets, polled)
        for tp, messages in polled.items():
            for m in messages:
                raw = m.value if m.value is not None else b""
                item = self.decoder.decode_one(raw, Source(m.topic, m.partition, m.offset))
                self.aligner.add(tp, m.offset, None if isinstance(item, DeadLetter) else item.ts, item)
            self.records += len(messages)
        for tp in self.consumer.assignment():
            high = self.consumer.highwater(tp)
            self.aligner.set_caught_up(tp, high is None or self.consumer.position(tp) >= high)
        items, commits = self.aligner.release(everything=everything)
        if items:
            self._publish(items)
        if commits:
            self.consumer.commit({tp: OffsetAndMetadata(off, "", -1) for tp, off in commits.items()})
        return sum(len(v) for v in polled.values())

    def _publish(self, items: list[Any]) -> None:
        send = self.producer.send
        pending = []
        for item in items:
            if isinstance(item, DeadLetter):
                pending.append(send(self.dlq_topic, value=item.to_json(), key=item.code.encode()))
                self.decoder.count_dead([item])
                continue
            value = encode_event(item)
            key = principal_key(item)
            if key is None:  # a token event that names no one: every partition must see it
                for p in self._broadcast_partitions():
                    pending.append(send(self.events_topic, value=value, partition=p))
            else:
                pending.append(send(self.events_topic, value=value, key=key.encode()))
            for kind, side in side_keys(item, self.side_kinds):
                pending.append(send(self.keyed_topic, value=value, key=f"{kind}\x1f{side}".encode(),
                                    headers=[("kind", kind.encode())]))
            self.published += 1
        self.producer.flush()
        for future in pending:
            future.get(timeout=30)  # raises if a send was not acknowledged: then no commit


class _Rebalance(ConsumerRebalanceListener):
    """Unpublished records of a partition taken away were not committed: its next owner reads them.
    (Inside the client's event loop: no blocking calls here, the stage positions gained partitions.)"""

    def __init__(self, stage: IngestStage) -> None:
        self.stage = stage

    def on_partitions_revoked(self, revoked: Any) -> None:
        self.stage.aligner.revoke(list(revoked))

    def on_partitions_assigned(self, assigned: Any) -> None:
        self.stage.aligner.assign(list(assigned))
        self.stage._gained.extend(assigned)
