import pytest

from detectors.base import Entity, Signal
from scoring.risk import RiskEngine
from tests.conftest import T0


def sig(ts, type_="replay.nonce", strength=1.0):
    return Signal(type=type_, tenant="acme", ts=ts, entities=(Entity("subject", "alice"), Entity("ip", "1.2.3.4")),
                  strength=strength, reasons=("why",), event_ids=(str(ts),))


def test_noisy_or_accumulates_and_updates_every_entity() -> None:
    r = RiskEngine(weights={"replay.nonce": 0.5}, half_life_seconds=600)
    first = r.add(sig(T0))
    assert [u.kind for u in first] == ["subject", "ip"] and first[0].score == pytest.approx(50.0)
    second = r.add(sig(T0))
    assert second[0].score == pytest.approx(75.0)  # 1 - 0.5*0.5
    assert second[0].reasons[0].startswith("replay.nonce: why")


def test_risk_decays_with_half_life_on_event_time() -> None:
    r = RiskEngine(weights={"replay.nonce": 0.8}, half_life_seconds=600)
    r.add(sig(T0))
    now, _ = r.score("acme", Entity("subject", "alice"), T0)
    later, _ = r.score("acme", Entity("subject", "alice"), T0 + 600)
    assert now == pytest.approx(80.0) and later == pytest.approx(40.0)
    r.expire(T0 + 600 * 20)
    assert len(r) == 0


def test_levels_and_actions() -> None:
    r = RiskEngine(step_up_at=40, deny_at=75)
    assert r.level(10) == ("low", "allow")
    assert r.level(40) == ("medium", "step_up")
    assert r.level(75) == ("high", "deny")


def test_refresh_reports_decay_until_a_last_zero_row() -> None:
    r = RiskEngine(weights={"replay.nonce": 0.8}, half_life_seconds=600)
    first = r.add(sig(T0))
    assert first[0].score == pytest.approx(80.0)
    assert r.refresh(T0) == []  # nothing older than the signal's own row
    later = {u.kind: u for u in r.refresh(T0 + 300)}
    assert later["subject"].score == pytest.approx(56.6) and later["subject"].ts == T0 + 300
    assert later["subject"].action == "step_up" and later["subject"].reasons[0].startswith("replay.nonce")
    assert r.refresh(T0 + 310) == []  # moved by less than a point, same level: no new row
    gone = {u.kind: u for u in r.refresh(T0 + 600 * 20)}
    assert gone["subject"].score == 0 and gone["subject"].action == "allow" and gone["subject"].reasons == ()
    assert r.refresh(T0 + 600 * 30) == []  # reported 0 once, then forgotten


def test_refresh_leaves_entities_with_a_newer_signal_alone() -> None:
    r = RiskEngine(weights={"replay.nonce": 0.5}, half_life_seconds=600)
    r.add(sig(T0))
    r.add(sig(T0 + 1200))
    assert r.refresh(T0 + 1200) == []
