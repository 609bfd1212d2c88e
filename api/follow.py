"""An API replica that follows the cluster: its store materialised from Kafka, triage through Kafka.

With `[api] follow_kafka = true` every `gatewatch serve` keeps its own store and fills it from the
workers' topics, so several replicas can serve one cluster (DESIGN.md "Delivery"):

    gatewatch.alerts  (keyed by alert id)            → upsert_alerts (a merge that keeps triage)
    gatewatch.risk    (compacted, tenant|kind|value) → upsert_risk (the newer event time wins)
    gatewatch.triage  (keyed by alert id)            → triage(change_id=...) (each change applied once)

A PATCH on any replica is not written to its store: it is published to `gatewatch.triage` with a fresh
change id and answered once this replica's own follower has applied it (`TriageLog`), so every replica
applies the same changes in the same order per alert (one key, one partition) and the analyst sees
the result of the change, not a guess at it. A change whose alert has not reached this store yet
waits for it instead of being dropped.

The follower is a consumer without a group: it is assigned every partition of the three topics and
keeps its own positions in the store's meta table (`follow.offsets`), written after the records they
cover: a restart re-reads a little, and every apply is idempotent (alert merge, newer risk, change
ids). The partitions of the topics are read once, at start (a topic given more partitions later needs
a restart of the replicas).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import ValidationError

from api.store import STATUSES, UNSET, AlertStore, StoredAlert, StoreQueryError, Unset
from ingest.kafka_io import assign_at, lag
from ingest.errors import Unavailable
from scoring.alerts import Alert
from scoring.risk import RiskUpdate

log = logging.getLogger(__name__)
OFFSETS_KEY = "follow.offsets"


@dataclass(frozen=True, slots=True)
class FollowedRecord:
    """What the follower needs of a Kafka record (kept small so it can be built in tests)."""

    topic: str
    partition: int
    offset: int
    value: bytes | None


@dataclass(frozen=True, slots=True)
class TriageChange:
    change_id: str
    alert_id: str
    actor: str
    at: str
    status: str | None = None
    assignee: str | None | Unset = UNSET
    note: str | None = None
    reason: str | None = None

    def to_json(self) -> bytes:
        body: dict[str, Any] = {"change_id": self.change_id, "alert_id": self.alert_id, "actor": self.actor,
                                "at": self.at, "status": self.status, "note": self.note, "reason": self.reason}
        if not isinstance(self.assignee, Unset):
            body["assignee"] = self.assignee
        return json.dumps(body, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> TriageChange:
        """Raises ValueError on anything but a change this module wrote."""
        body = json.loads(data)
        if not isinstance(body, dict):
            raise ValueError("not an object")
        texts = ("change_id", "alert_id", "actor", "at")
        if not all(isinstance(body.get(k), str) for k in texts):
            raise ValueError("change_id, alert_id, actor and at must be strings")
        optional = ("status", "note", "reason", "assignee")
        if not all(body.get(k) is None or isinstance(body[k], str) for k in optional):
            raise ValueError("status, note, reason and assignee must be strings or null")
        return cls(*(body[k] for k in texts), status=body.get("status"),
                   assignee=body["assignee"] if "assignee" in body else UNSET,
                   note=body.get("note"), reason=body.get("reason"))


def _tp_name(topic: str, partition: int) -> str:
    return f"{topic}/{partition}"


class ClusterFollower:
    """Applies the alerts, risk and triage topics to one store; `step` is one poll's worth."""

    def __init__(self, *, store: AlertStore, alerts_topic: str, risk_topic: str, triage_topic: str,
                 consumer: Any = None) -> None:
        self.store = store
        self.alerts_topic = alerts_topic
        self.risk_topic = risk_topic
        self.triage_topic = triage_topic
        self.consumer = consumer  # a kafka-python consumer without a group (None: `apply` only, in tests)
        self.applied_records = 0
        self.refused: dict[str, int] = {}  # records that are not what their topic holds, by topic
        self._pending: list[tuple[FollowedRecord, TriageChange]] = []  # changes whose alert is not here yet
        self._offsets: dict[str, int] = {}
        self._awaited: set[str] = set()  # change ids a PATCH of this replica waits for
        self._applied: dict[str, StoredAlert | None] = {}  # awaited change id -> the alert after it
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_error: str | None = None
        self.caught_up_once = False

    # -- pure-ish: records in, store changed -------------------------------------------------------
    def apply(self, records: list[FollowedRecord]) -> None:
        """Apply one batch in topic order of dependence: alerts, then risk, then triage (which needs
        the alert), then any change still waiting for its alert. Positions move past what is applied."""
        alerts: list[Alert] = []
        risk: list[RiskUpdate] = []
        triage: list[tuple[FollowedRecord, TriageChange]] = []
        for rec in records:
            try:
                if rec.topic == self.alerts_topic:
                    alerts.append(Alert.model_validate_json(rec.value or b""))
                elif rec.topic == self.risk_topic:
                    risk.append(_risk_update(rec.value or b""))
                elif rec.topic == self.triage_topic:
                    triage.append((rec, TriageChange.from_json(rec.value or b"")))
            except (ValueError, TypeError, ValidationError) as exc:
                # Not ours to crash on, not ours to invent: counted (see /readyz) and skipped.
                self.refused[rec.topic] = self.refused.get(rec.topic, 0) + 1
                log.warning("follower: %s/%d@%d is not a %s record (%s)", rec.topic, rec.partition, rec.offset,
                            rec.topic, type(exc).__name__)
        if alerts:
            self.store.upsert_alerts(alerts)
        if risk:
            self.store.upsert_risk(risk)
        waiting, self._pending = [*self._pending, *triage], []
        for rec, change in waiting:
            if not self._apply_change(change):
                self._pending.append((rec, change))
        for rec in records:
            name = _tp_name(rec.topic, rec.partition)
            self._offsets[name] = max(self._offsets.get(name, 0), rec.offset + 1)
        self.applied_records += len(records)
        held = dict(self._offsets)
        for rec, _ in self._pending:  # re-read from the first change still waiting, after a restart
            name = _tp_name(rec.topic, rec.partition)
            held[name] = min(held[name], rec.offset)
        if records:
            self.store.set_meta(OFFSETS_KEY, held)

    def _apply_change(self, change: TriageChange) -> bool:
        try:
            alert = self.store.triage(change.alert_id, None, actor=change.actor, at=change.at,
                                      status=change.status, assignee=change.assignee, note=change.note,
                                      reason=change.reason, change_id=change.change_id)
        except StoreQueryError as exc:  # e.g. a status this version does not know: refused, not retried
            log.warning("follower: triage change %s refused: %s", change.change_id, exc)
            alert = None
            found = True
        else:
            found = alert is not None
        if found:
            with self._changed:
                if change.change_id in self._awaited:
                    self._applied[change.change_id] = alert
                    self._changed.notify_all()
        return found

    @property
    def pending(self) -> int:
        return len(self._pending)

    def expect(self, change_id: str) -> None:
        """Announce a change about to be published, so that its outcome is kept for `wait_applied`."""
        with self._changed:
            self._awaited.add(change_id)

    def wait_applied(self, change_id: str, timeout: float) -> tuple[bool, StoredAlert | None]:
        """Until this replica has applied the `expect`ed `change_id`: (applied, the alert after it)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            try:
                while change_id not in self._applied:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False, None
                    self._changed.wait(left)
                return True, self._applied.pop(change_id)
            finally:
                self._awaited.discard(change_id)

    # -- Kafka --------------------------------------------------------------------------------------
    def attach(self, consumer: Any, *, timeout: float = 30.0) -> None:
        """Assign every partition of the three topics to `consumer`, each at its stored position."""
        stored = self.store.get_meta(OFFSETS_KEY)
        self._offsets = {k: int(v) for k, v in (stored[0] if stored else {}).items()}
        positions = {}
        for name, at in self._offsets.items():
            topic, _, part = name.rpartition("/")
            positions[(topic, int(part))] = at
        assign_at(consumer, (self.alerts_topic, self.risk_topic, self.triage_topic), positions, timeout=timeout)
        self.consumer = consumer

    def step(self, timeout_ms: int = 500) -> int:
        polled = self.consumer.poll(timeout_ms=timeout_ms)
        records = [FollowedRecord(m.topic, m.partition, m.offset, m.value)
                   for msgs in polled.values() for m in msgs]
        self.apply(records)
        if not records and not self.caught_up_once and self.lag() == 0:
            self.caught_up_once = True
        return len(records)

    def lag(self) -> int | None:
        """Records on the followed topics not applied yet (None: not known yet)."""
        per_partition = lag(self.consumer).values()
        return None if any(n is None for n in per_partition) else sum(n for n in per_partition if n is not None)

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
                self.last_error = None
            except Exception as exc:  # a broker outage or a store error: said in /readyz, retried
                self.last_error = type(exc).__name__
                log.warning("follower: %s; retrying", type(exc).__name__)
                self._stop.wait(1.0)

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="gatewatch-follower", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        if self.consumer is not None:
            self.consumer.close()

    def ready(self) -> tuple[bool, str]:
        """Readiness: following, no error since the last poll, caught up at least once."""
        if self.last_error is not None:
            return False, f"following Kafka failed: {self.last_error}"
        if not self.caught_up_once:
            return False, "catching up with the alerts, risk and triage topics"
        lag = self.lag()
        refused = sum(self.refused.values())
        return True, (f"following Kafka: lag {lag if lag is not None else '?'} records, "
                      f"{self.pending} triage changes waiting for their alert, {refused} records refused")


def _risk_update(data: bytes) -> RiskUpdate:
    body = json.loads(data)
    if not isinstance(body, dict):
        raise ValueError("not an object")
    body["reasons"] = tuple(body.get("reasons") or ())
    return RiskUpdate(**body)


class Triage(Protocol):
    """Where a PATCH goes: the local store, or the triage topic (`TriageLog`)."""

    def apply(self, alert_id: str, tenants: Collection[str] | None, *, actor: str, at: str,
              status: str | None, assignee: str | None | Unset, note: str | None,
              reason: str | None) -> StoredAlert | None: ...


class LocalTriage:
    """Triage written straight to this process's store (the default: one store for API and worker)."""

    def __init__(self, store: Callable[[], AlertStore]) -> None:
        self.store = store  # the app's current store, looked up per change

    def apply(self, alert_id: str, tenants: Collection[str] | None, *, actor: str, at: str,
              status: str | None, assignee: str | None | Unset, note: str | None,
              reason: str | None) -> StoredAlert | None:
        return self.store().triage(alert_id, tenants, actor=actor, at=at, status=status, assignee=assignee,
                                 note=note, reason=reason)


class TriageUnavailable(Unavailable):
    """The change could not be published, or was not applied here in time."""


class TriageLog:
    """Triage published to `gatewatch.triage` and answered once this replica applied it."""

    def __init__(self, *, store: AlertStore, follower: ClusterFollower, publish: Callable[[str, bytes], None],
                 timeout_seconds: float = 10.0) -> None:
        self.store = store
        self.follower = follower
        self.publish = publish  # (key, value): acknowledged by the broker when it returns, raises if not
        self.timeout_seconds = timeout_seconds

    def apply(self, alert_id: str, tenants: Collection[str] | None, *, actor: str, at: str,
              status: str | None, assignee: str | None | Unset, note: str | None,
              reason: str | None) -> StoredAlert | None:
        if status is not None and status not in STATUSES:
            raise StoreQueryError(f"status must be one of {', '.join(STATUSES)}")
        if self.store.get_alert(alert_id, tenants) is None:
            return None  # unknown here or not the caller's: 404, nothing published
        change = TriageChange(uuid.uuid4().hex, alert_id, actor, at, status=status, assignee=assignee,
                              note=note, reason=reason)
        self.follower.expect(change.change_id)
        try:
            self.publish(alert_id, change.to_json())
        except Exception as exc:
            self.follower.wait_applied(change.change_id, 0)  # forget it
            raise TriageUnavailable(f"the triage topic is unavailable ({type(exc).__name__}); "
                                    "nothing was changed") from None
        applied, alert = self.follower.wait_applied(change.change_id, self.timeout_seconds)
        if not applied:
            raise TriageUnavailable("the change was recorded but this replica has not applied it yet; "
                                    "it will appear shortly")
        return alert
