from detectors.base import Entity, Signal
from scoring.alerts import AlertBuilder, alert_id, rfc3339
from tests.conftest import T0


def sig(ts, ids, strength=0.9, value="alice", type_="replay.nonce"):
    return Signal(type=type_, tenant="acme", ts=ts, entities=(Entity("subject", value), Entity("ip", "1.2.3.4")),
                  strength=strength, reasons=(f"reason {strength}",), event_ids=ids, token_fps=("fp1",))


def test_signals_in_one_bucket_group_into_one_alert() -> None:
    b = AlertBuilder(group_seconds=3600)
    start = (T0 // 3600) * 3600
    a1 = b.add(sig(start + 10, ("e1", "e2")), risk=50)
    a2 = b.add(sig(start + 20, ("e1", "e3"), strength=0.97), risk=60)
    assert a1 == a2
    alert = b.get(a1)
    assert alert.count == 2 and alert.evidence["event_ids"] == ["e1", "e2", "e3"]
    assert alert.first_seen == rfc3339(start + 10) and alert.last_seen == rfc3339(start + 20)
    assert alert.reasons == ["reason 0.97"] and alert.risk == 60
    assert alert.entity.kind == "subject" and alert.entity.value == "alice"


def test_duplicate_signal_changes_nothing_and_ids_are_deterministic() -> None:
    b1, b2 = AlertBuilder(), AlertBuilder()
    s = sig(T0, ("e1", "e2"))
    aid = b1.add(s, 10)
    assert b1.add(s, 10) is None and b1.get(aid).count == 1
    assert b2.add(s, 10) == aid == alert_id("replay.nonce", "acme", "subject", "alice", int(T0 // 3600))


def test_other_entity_or_bucket_is_another_alert() -> None:
    b = AlertBuilder(group_seconds=60)
    ids = {b.add(sig(T0, ("a", "b")), 0), b.add(sig(T0, ("c", "d"), value="bob"), 0),
           b.add(sig(T0 + 120, ("e", "f")), 0)}
    assert len(ids) == 3


def test_severity_rises_with_risk_and_buckets_expire() -> None:
    b = AlertBuilder(group_seconds=60)
    low = b.get(b.add(sig(T0, ("a", "b"), type_="token.unencrypted"), 10))
    high = b.get(b.add(sig(T0, ("a", "c"), value="x", type_="token.unencrypted"), 95))
    assert (low.severity, high.severity) == ("low", "medium")
    b.expire(T0 + 3600)
    assert len(b) == 0


def test_rfc3339_has_milliseconds() -> None:
    assert rfc3339(0.5) == "1970-01-01T00:00:00.500Z"
