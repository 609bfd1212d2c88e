"""AlertStore: idempotent upserts that keep triage, filters, keyset pagination, the risk table."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from api.store import AlertStore, BadCursor, StoreQueryError, encode_cursor
from ingest.tokens import fingerprint
from scoring.alerts import MAX_EVIDENCE_IDS, EntityRef
from scoring.risk import RiskUpdate


def test_upsert_is_idempotent(store, make_alert):
    alert = make_alert(1)
    assert store.upsert_alerts([alert]) == 1
    seq = store.max_seq()
    assert store.upsert_alerts([alert]) == 0
    assert store.upsert_alerts([alert, alert]) == 0
    assert store.count() == 1
    assert store.max_seq() == seq
    got = store.get_alert(alert.id)
    assert got is not None
    assert got.model_dump(exclude={"audit", "close_reason"}) == alert.model_dump()


def test_reupsert_keeps_triage_and_merges(store, make_alert):
    first = make_alert(5, evidence={"event_ids": ["a", "b"], "token_fps": ["f1"], "figures": {"n": 1}},
                       count=2, risk=60.0)
    store.upsert_alerts([first])
    store.triage(first.id, None, actor="bob", at="2026-11-28T11:00:00.000Z", status="acknowledged",
                 assignee="bob", note="looking")
    later = make_alert(5, first_seen="2026-11-28T10:00:01.000Z", last_seen="2026-11-28T10:59:00.000Z",
                       count=1, risk=40.0, severity="critical", reasons=["new reason"],
                       evidence={"event_ids": ["b", "c"], "token_fps": ["f2"], "figures": {"n": 3}})
    assert store.upsert_alerts([later]) == 1
    got = store.get_alert(first.id)
    assert got.status == "acknowledged" and got.assignee == "bob"
    assert [n.text for n in got.notes] == ["looking"]
    assert [a.field for a in got.audit] == ["status", "assignee", "note"]
    assert got.first_seen == "2026-11-28T10:00:01.000Z"  # min
    assert got.last_seen == "2026-11-28T10:59:00.000Z"   # max
    assert got.count == 2 and got.risk == 60.0            # max
    assert got.evidence["event_ids"] == ["a", "b", "c"]
    assert got.evidence["token_fps"] == ["f1", "f2"]
    assert got.evidence["figures"] == {"n": 3}
    assert got.severity == "critical" and got.reasons == ["new reason"]
    # The status column follows the triage, so filters see it.
    items, _ = store.list_alerts(status="acknowledged")
    assert [a.id for a in items] == [first.id]
    assert store.upsert_alerts([later]) == 0  # nothing visible changes the second time


def test_evidence_ids_capped_in_order(store, make_alert):
    store.upsert_alerts([make_alert(1, evidence={"event_ids": [f"a{i}" for i in range(40)]})])
    store.upsert_alerts([make_alert(1, evidence={"event_ids": [f"b{i}" for i in range(40)]})])
    ids = store.get_alert(make_alert(1).id).evidence["event_ids"]
    assert len(ids) == MAX_EVIDENCE_IDS
    assert ids == [f"a{i}" for i in range(40)] + [f"b{i}" for i in range(10)]


def test_upsert_is_one_transaction(store, make_alert):
    class Boom(Exception):
        pass

    def alerts():
        yield make_alert(1)
        raise Boom

    with pytest.raises(Boom):
        store.upsert_alerts(alerts())
    assert store.count() == 0


def _seed(store, make_alert):
    alerts = [
        make_alert(1, tenant="acme", severity="low", type="token.unencrypted"),
        make_alert(2, tenant="acme", severity="high", status="resolved"),
        make_alert(3, tenant="globex", severity="critical", type="token.cross_tenant",
                   entity=EntityRef(kind="ip", value="10.0.0.3")),
        make_alert(4, tenant="globex", severity="high", entity=EntityRef(kind="client", value="user-1")),
        make_alert(5, tenant="initech", severity="medium"),
    ]
    store.upsert_alerts(alerts)
    return alerts


def ids(result):
    return [a.id[-1] for a in result[0]]


def test_list_newest_first_and_filters(store, make_alert):
    _seed(store, make_alert)
    assert ids(store.list_alerts()) == ["5", "4", "3", "2", "1"]
    assert ids(store.list_alerts(tenants={"acme"})) == ["2", "1"]
    assert ids(store.list_alerts(tenants=set())) == []
    assert ids(store.list_alerts(tenants={"acme"}, tenant="globex")) == []
    assert ids(store.list_alerts(tenant="globex")) == ["4", "3"]
    assert ids(store.list_alerts(status="resolved")) == ["2"]
    assert ids(store.list_alerts(status=["open"])) == ["5", "4", "3", "1"]
    assert ids(store.list_alerts(severity=["high", "critical"])) == ["4", "3", "2"]
    assert ids(store.list_alerts(type="token.cross_tenant")) == ["3"]
    assert ids(store.list_alerts(entity="ip:10.0.0.3")) == ["3"]
    assert ids(store.list_alerts(entity="user-1")) == ["4", "1"]
    assert ids(store.list_alerts(entity="subject:user-1")) == ["1"]
    assert ids(store.list_alerts(since="2026-11-28T10:00:03.500Z")) == ["5", "4", "3"]
    assert ids(store.list_alerts(until="2026-11-28T11:00:02.500+01:00")) == ["2", "1"]
    assert ids(store.list_alerts(since="2026-11-28T10:00:02Z", until="2026-11-28T10:00:04Z")) == ["3", "2"]


@pytest.mark.parametrize("bad", [{"status": "closed"}, {"severity": "urgent"}, {"since": "yesterday"},
                                 {"until": "2026-11-28T10:00:00"}, {"entity": ""},
                                 {"since": "0001-01-01T00:00:00+01:00"}, {"status": ""}, {"limit": 0}])
def test_bad_filters_raise_value_errors(store, bad):
    with pytest.raises(StoreQueryError) as info:
        store.list_alerts(**bad)
    assert isinstance(info.value, ValueError)
    assert info.value.code == "bad_filter"


@pytest.mark.parametrize("cursor", ["!!!", "bm90IGpzb24", encode_cursor("x", "y")[:-2] + "$$",
                                    "WzFd", "x" * 2000])
def test_bad_cursor(store, make_alert, cursor):
    _seed(store, make_alert)
    with pytest.raises(BadCursor) as info:
        store.list_alerts(cursor=cursor)
    assert info.value.code == "bad_cursor" and isinstance(info.value, ValueError)


@pytest.mark.parametrize("limit", [1, 2, 3, 7, 40, 100])
def test_cursor_pagination_covers_every_row_once(store, make_alert, limit):
    # Many alerts share a last_seen so that ties are broken by id.
    alerts = [make_alert(i, last_seen=f"2026-11-28T10:00:{i % 5:02d}.000Z",
                         first_seen="2026-11-28T10:00:00.000Z") for i in range(37)]
    store.upsert_alerts(alerts)
    seen, cursor, pages = [], None, 0
    while True:
        page, cursor = store.list_alerts(cursor=cursor, limit=limit)
        pages += 1
        seen += [(a.last_seen, a.id) for a in page]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 37
    assert seen == sorted(seen, reverse=True)
    assert pages == -(-37 // limit)  # no trailing empty page


def test_get_alert_hides_other_tenants(store, make_alert):
    _seed(store, make_alert)
    aid = make_alert(3).id
    assert store.get_alert(aid, {"acme"}) is None
    assert store.get_alert(aid, {"globex"}) is not None
    assert store.get_alert("al_nope", None) is None


def test_counts(store, make_alert):
    _seed(store, make_alert)
    assert store.count() == 5
    assert store.count_by_type() == {"replay.nonce": 3, "token.cross_tenant": 1, "token.unencrypted": 1}


def test_triage_audits_only_changes(store, make_alert):
    store.upsert_alerts([make_alert(1)])
    aid = make_alert(1).id
    at = "2026-11-28T12:00:00.000Z"
    store.triage(aid, None, actor="ann", at=at, status="open")  # unchanged: no audit
    assert store.get_alert(aid).audit == []
    got = store.triage(aid, None, actor="ann", at=at, assignee="ann")
    got = store.triage(aid, None, actor="ann", at=at, assignee=None)
    assert got.assignee is None
    assert [(a.field, a.from_, a.to) for a in got.audit] == [("assignee", None, "ann"), ("assignee", "ann", None)]
    assert store.triage(aid, {"globex"}, actor="x", at=at, status="resolved") is None
    assert store.get_alert(aid).status == "open"


def _risk(kind, value, score, *, tenant="acme", ts=100.0, level=None, action=None, reasons=("r",)):
    level = level or ("high" if score >= 75 else "medium" if score >= 40 else "low")
    action = action or ("deny" if score >= 75 else "step_up" if score >= 40 else "allow")
    return RiskUpdate(kind, value, tenant, score, level, action, tuple(reasons), ts)


def test_risk_newer_wins_and_lookup(store):
    store.upsert_risk([_risk("subject", "alice", 30, ts=100)])
    assert store.get_risk(None, sub="alice")[0].score == 30
    store.upsert_risk([_risk("subject", "alice", 80, ts=200)])
    store.upsert_risk([_risk("subject", "alice", 10, ts=150)])  # older: ignored
    assert store.get_risk(None, sub="alice")[0].score == 80
    store.upsert_risk([_risk("ip", "10.0.0.1", 50), _risk("ip", "10.0.0.1", 90, tenant="globex")])
    rows = store.get_risk(None, sub="alice", ip="10.0.0.1")
    assert [(r.kind, r.tenant, r.score) for r in rows] == [("ip", "globex", 90), ("subject", "acme", 80),
                                                           ("ip", "acme", 50)]
    assert [r.score for r in store.get_risk({"acme"}, sub="alice", ip="10.0.0.1")] == [80, 50]
    assert [r.score for r in store.get_risk(None, ip="10.0.0.1", tenant="acme")] == [50]
    assert store.get_risk(None, client_id="nobody") == []


def test_risk_token_by_fingerprint_or_token(store):
    token = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"
    store.upsert_risk([_risk("token", fingerprint(token), 66)])
    assert store.get_risk(None, token=token)[0].score == 66
    assert store.get_risk(None, token=fingerprint(token))[0].score == 66


def test_risk_ipv6_canonical(store):
    store.upsert_risk([_risk("ip", "2001:db8::1", 45)])
    assert store.get_risk(None, ip="2001:0db8:0000::1")[0].score == 45


def test_file_store_is_wal_and_sees_other_writers(tmp_path: Path, make_alert):
    path = tmp_path / "gw.db"
    reader, writer = AlertStore(path, risk_staleness_seconds=0), AlertStore(path)
    try:
        assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        writer.upsert_risk([_risk("subject", "alice", 20, ts=1)])
        assert reader.get_risk(None, sub="alice")[0].score == 20  # fills the reader's cache
        writer.upsert_risk([_risk("subject", "alice", 70, ts=2)])
        assert reader.get_risk(None, sub="alice")[0].score == 70  # cache dropped: another writer committed
        writer.upsert_alerts([make_alert(1)])
        assert reader.count() == 1
    finally:
        reader.close()
        writer.close()


def test_from_config(tmp_path: Path):
    class Cfg:
        url = f"sqlite:///{tmp_path / 'x.db'}"

    s = AlertStore.from_config(Cfg())
    assert s.ping() == (True, "ok")
    s.close()


def test_threads_share_one_store(store, make_alert):
    errors = []

    def work(k):
        try:
            for i in range(30):
                store.upsert_alerts([make_alert(k * 100 + i)])
                store.list_alerts(limit=5)
                store.upsert_risk([_risk("ip", f"10.0.{k}.{i}", i, ts=i)])
                store.get_risk(None, ip=f"10.0.{k}.{i}")
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert store.count() == 180


def test_cached_risk_look_ups_do_not_touch_the_database(tmp_path: Path, monkeypatch):
    path = tmp_path / "gw.db"
    reader, writer = AlertStore(path, risk_staleness_seconds=3600), AlertStore(path)
    try:
        writer.upsert_risk([_risk("subject", "alice", 20, ts=1)])
        assert reader.get_risk(None, sub="alice")[0].score == 20
        calls = []
        monkeypatch.setattr(reader, "_db", _Spy(reader._db, calls))
        for _ in range(100):
            assert reader.get_risk(None, sub="alice")[0].score == 20
        assert calls == []  # a warm look-up is a dict read: no query, not even PRAGMA data_version
        writer.upsert_risk([_risk("subject", "alice", 70, ts=2)])
        assert reader.get_risk(None, sub="alice")[0].score == 20  # stale for at most the staleness bound
        reader.risk_staleness_seconds = 0
        assert reader.get_risk(None, sub="alice")[0].score == 70
    finally:
        reader.close()
        writer.close()


class _Spy:
    def __init__(self, db, calls):
        self._db, self._calls = db, calls

    def execute(self, *args):
        self._calls.append(args[0])
        return self._db.execute(*args)

    def __getattr__(self, name):
        return getattr(self._db, name)
