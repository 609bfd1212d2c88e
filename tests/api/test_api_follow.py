"""A replica following the cluster (api/follow.py): what it does with the records it reads.

The Kafka side is tested against the real broker in tests/integration/test_api_replicas.py; here the
records are handed in, to pin down the apply rules: alerts merge keeping triage, the newer risk wins,
each triage change applies once, a change that arrives before its alert waits for it, positions never
skip a waiting change, and foreign bytes are counted, never fatal.
"""

from __future__ import annotations

import json
import threading
from dataclasses import asdict

import pytest

from api.follow import OFFSETS_KEY, ClusterFollower, FollowedRecord, TriageChange, TriageLog, TriageUnavailable
from api.store import UNSET, AlertStore, StoreQueryError
from scoring.risk import RiskUpdate
from tests.api.conftest import make_alert

AT = "2026-11-28T12:00:00.000Z"


class Topics:
    """Offsets per (topic, partition), as a broker would hand them out."""

    def __init__(self) -> None:
        self.next: dict[tuple[str, int], int] = {}

    def record(self, topic: str, value: bytes, partition: int = 0) -> FollowedRecord:
        offset = self.next.get((topic, partition), 0)
        self.next[(topic, partition)] = offset + 1
        return FollowedRecord(topic, partition, offset, value)


@pytest.fixture
def follower(store: AlertStore) -> ClusterFollower:
    return ClusterFollower(store=store, alerts_topic="a", risk_topic="r", triage_topic="t")


def _alert(n: int, **over) -> bytes:
    return make_alert(n, **over).model_dump_json().encode()


def _risk(score: float, ts: float) -> bytes:
    update = RiskUpdate(kind="subject", value="user-1", tenant="acme", score=score, level="high",
                        action="step_up", reasons=("r",), ts=ts)
    return json.dumps(asdict(update)).encode()


def _change(cid: str, alert_id: str, **kw) -> bytes:
    return TriageChange(cid, alert_id, "ann", AT, **kw).to_json()


def test_alerts_merge_and_keep_triage(store, follower) -> None:
    t = Topics()
    aid = make_alert(1).id
    follower.apply([t.record("a", _alert(1))])
    follower.apply([t.record("t", _change("c1", aid, status="acknowledged"))])
    follower.apply([t.record("a", _alert(1, count=5, last_seen="2026-11-28T11:00:00.000Z"))])
    got = store.get_alert(aid)
    assert got is not None and got.count == 5 and got.status == "acknowledged"
    assert store.get_meta(OFFSETS_KEY)[0] == {"a/0": 2, "t/0": 1}


def test_the_newer_risk_wins_whatever_the_order(store, follower) -> None:
    t = Topics()
    follower.apply([t.record("r", _risk(80.0, ts=200.0)), t.record("r", _risk(10.0, ts=100.0))])
    (row,) = store.get_risk(sub="user-1")
    assert row.score == 80.0 and row.ts == 200.0


def test_a_triage_change_applies_once(store, follower) -> None:
    t = Topics()
    aid = make_alert(1).id
    follower.apply([t.record("a", _alert(1))])
    note = _change("c1", aid, note="looked at it")
    follower.apply([t.record("t", note)])
    follower.apply([t.record("t", note)])  # the same change read again (a restart re-reads)
    got = store.get_alert(aid)
    assert [n.text for n in got.notes] == ["looked at it"]
    assert [a.field for a in got.audit] == ["note"]


def test_a_change_before_its_alert_waits_and_holds_the_position(store, follower) -> None:
    t = Topics()
    aid = make_alert(7).id
    follower.apply([t.record("t", _change("c1", aid, assignee="ann"))])
    assert follower.pending == 1 and store.get_alert(aid) is None
    assert store.get_meta(OFFSETS_KEY)[0] == {"t/0": 0}  # a restart must read that change again
    follower.apply([t.record("a", _alert(7))])
    got = store.get_alert(aid)
    assert got.assignee == "ann" and follower.pending == 0
    assert store.get_meta(OFFSETS_KEY)[0] == {"a/0": 1, "t/0": 1}


def test_unset_assignee_is_not_a_cleared_one() -> None:
    keep = TriageChange.from_json(_change("c1", "x", status="open"))
    clear = TriageChange.from_json(_change("c2", "x", assignee=None))
    assert keep.assignee is UNSET and clear.assignee is None


@pytest.mark.parametrize("topic,value", [("a", b"{not json"), ("r", b'{"kind": 1}'), ("t", b"[]"),
                                         ("t", b'{"change_id": 5}'), ("a", b"")])
def test_foreign_records_are_counted_and_skipped(store, follower, topic, value) -> None:
    t = Topics()
    follower.apply([t.record(topic, value), t.record("a", _alert(1))])
    assert follower.refused == {topic: 1}
    assert store.get_alert(make_alert(1).id) is not None


# -- TriageLog: the PATCH of a replica that follows ------------------------------------------------------
def _looped(store, follower, t: Topics, **kw) -> TriageLog:
    """A TriageLog whose topic is the follower itself (in-memory stand-in for the round trip)."""
    published = []

    def publish(key: str, value: bytes) -> None:
        published.append(key)
        follower.apply([t.record("t", value)])

    log = TriageLog(store=store, follower=follower, publish=publish, **kw)
    log.published = published  # type: ignore[attr-defined]
    return log


def test_triage_log_answers_with_the_applied_change(store, follower) -> None:
    t = Topics()
    follower.apply([t.record("a", _alert(1))])
    log = _looped(store, follower, t)
    got = log.apply(make_alert(1).id, {"acme"}, actor="ann", at=AT, status="acknowledged", assignee=UNSET,
                    note="mine", reason=None)
    assert got is not None and got.status == "acknowledged" and got.notes[0].text == "mine"
    assert log.published == [make_alert(1).id]


def test_triage_log_refuses_without_publishing(store, follower) -> None:
    t = Topics()
    follower.apply([t.record("a", _alert(1))])
    log = _looped(store, follower, t)
    kw = dict(actor="ann", at=AT, assignee=UNSET, note=None, reason=None)
    assert log.apply(make_alert(1).id, {"globex"}, status="acknowledged", **kw) is None  # not the caller's
    assert log.apply("al_nope", None, status="acknowledged", **kw) is None
    with pytest.raises(StoreQueryError):
        log.apply(make_alert(1).id, None, status="closed", **kw)
    assert log.published == []


def test_triage_log_says_unavailable_when_it_cannot_publish_or_apply(store, follower) -> None:
    t = Topics()
    follower.apply([t.record("a", _alert(1))])
    kw = dict(actor="ann", at=AT, status="acknowledged", assignee=UNSET, note=None, reason=None)

    def broken(key: str, value: bytes) -> None:
        raise OSError("broker down")

    with pytest.raises(TriageUnavailable, match="nothing was changed"):
        TriageLog(store=store, follower=follower, publish=broken).apply(make_alert(1).id, None, **kw)
    lost = TriageLog(store=store, follower=follower, publish=lambda k, v: None, timeout_seconds=0.05)
    with pytest.raises(TriageUnavailable, match="not applied it yet"):
        lost.apply(make_alert(1).id, None, **kw)
    assert store.get_alert(make_alert(1).id).status == "open"


def test_a_waiting_patch_is_woken_by_the_follower_thread(store, follower) -> None:
    t = Topics()
    follower.apply([t.record("a", _alert(1))])
    sent: list[bytes] = []
    log = TriageLog(store=store, follower=follower, publish=lambda k, v: sent.append(v), timeout_seconds=10)
    applier = threading.Timer(0.1, lambda: follower.apply([t.record("t", sent[0])]))
    applier.start()
    got = log.apply(make_alert(1).id, None, actor="ann", at=AT, status="acknowledged", assignee=UNSET,
                    note=None, reason=None)
    applier.join()
    assert got.status == "acknowledged"


def test_changes_of_other_replicas_are_applied_but_not_kept_for_waiters(store, follower) -> None:
    t = Topics()
    follower.apply([t.record("a", _alert(1))])
    follower.apply([t.record("t", _change("from-elsewhere", make_alert(1).id, status="acknowledged"))])
    assert store.get_alert(make_alert(1).id).status == "acknowledged"
    assert follower.wait_applied("from-elsewhere", 0) == (False, None)
