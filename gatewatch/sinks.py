"""Where a batch's results go: Kafka topics (alerts, compacted risk, dead letters) and the store.

Order matters (docs/DESIGN.md "Delivery"): `write` everything, `flush` until durable, and only then may
the caller commit the input offsets. Kafka keys make the writes idempotent: an alert is keyed by its
deterministic id, a risk row by (tenant, kind, value) on a compacted topic.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any, Protocol

from api.store import AlertStore
from ingest.delivery import AckedSender
from gatewatch.pipeline import BatchResult
from scoring.holds import Hold, TokenSeen
from scoring.risk import RiskUpdate


class ResultSink(Protocol):
    def write(self, result: BatchResult) -> None: ...

    def flush(self) -> None: ...


def risk_json(update: RiskUpdate) -> bytes:
    return json.dumps(asdict(update), separators=(",", ":")).encode()


def risk_key(update: RiskUpdate) -> bytes:
    return f"{update.tenant}|{update.kind}|{update.value}".encode()


class KafkaResultSink:
    """Alerts, risk updates and dead letters to their topics. `flush` raises while any record is not
    acknowledged and keeps it to send again (the worker retries it through an outage: ingest.delivery)."""

    def __init__(self, producer: Any, *, alerts_topic: str, risk_topic: str, dlq_topic: str) -> None:
        self.sender = AckedSender(producer)
        self.alerts_topic = alerts_topic
        self.risk_topic = risk_topic
        self.dlq_topic = dlq_topic

    def write(self, result: BatchResult) -> None:
        send = self.sender.send
        for dead in result.dead_letters:
            send(self.dlq_topic, value=dead.to_json(), key=dead.code.encode())
        for alert in result.alerts:
            send(self.alerts_topic, value=alert.model_dump_json().encode(), key=alert.id.encode())
        for update in result.risk:
            send(self.risk_topic, value=risk_json(update), key=risk_key(update))

    def flush(self) -> None:
        self.sender.flush()


class StoreSink:
    def __init__(self, store: AlertStore) -> None:
        self.store = store
        self._alerts: list[Any] = []
        self._risk: list[RiskUpdate] = []
        self._holds: list[Hold] = []
        self._tokens: list[TokenSeen] = []

    def write(self, result: BatchResult) -> None:
        self._alerts += result.alerts
        self._risk += result.risk
        self._holds += result.holds
        self._tokens += result.tokens

    def flush(self) -> None:
        if self._alerts:
            self.store.upsert_alerts(self._alerts)
        if self._risk:
            self.store.upsert_risk(self._risk)
        if self._holds or self._tokens:
            self.store.holds.upsert(self._holds, self._tokens)
        self._alerts, self._risk, self._holds, self._tokens = [], [], [], []
