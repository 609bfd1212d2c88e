from detectors.base import Entity, Signal
from gatewatch.backtest import score
from scoring.alerts import AlertBuilder, rfc3339
from tests.conftest import T0


def alert(type_, ids, value="alice", ts=T0):
    b = AlertBuilder()
    aid = b.add(Signal(type=type_, tenant="acme", ts=ts, entities=(Entity("subject", value),), strength=0.9,
                       reasons=("r",), event_ids=ids), 0)
    return b.get(aid)


LABELS = [
    {"event_id": "a1", "attack_id": "atk-1", "type": "replay.nonce", "entity": ("subject", "alice")},
    {"event_id": "a2", "attack_id": "atk-1", "type": "replay.nonce", "entity": ("subject", "alice")},
    {"event_id": "b1", "attack_id": "atk-2", "type": "replay.nonce", "entity": ("subject", "bob")},
    {"event_id": "c1", "attack_id": "atk-3", "type": "token.unencrypted", "entity": ("subject", "carol")},
    {"event_id": "c9", "attack_id": "atk-4", "type": "token.unencrypted", "entity": ("subject", "carol")},
]


def test_recall_precision_and_false_alerts() -> None:
    alerts = [alert("replay.nonce", ("a1", "a2")), alert("replay.nonce", ("z1", "z2"), value="zed"),
              alert("token.unencrypted", ("c1",), value="carol")]
    times = {"c9": rfc3339(T0 + 3600)}
    report = score(alerts, LABELS, events=200_000, event_times=times)
    nonce = report["by_type"]["replay.nonce"]
    assert (nonce["attacks"], nonce["caught"], nonce["alerts"], nonce["false_alerts"]) == (2, 1, 2, 1)
    assert nonce["missed"] == ["atk-2"] and nonce["recall"] == 0.5 and nonce["precision"] == 0.5
    unenc = report["by_type"]["token.unencrypted"]
    assert unenc["caught"] == 2  # the repeat is covered by the standing alert about carol
    assert report["false_alerts_per_100k_events"] == 0.5


def test_without_event_times_only_evidence_counts() -> None:
    report = score([alert("token.unencrypted", ("c1",), value="carol")], LABELS, events=10)
    assert report["by_type"]["token.unencrypted"]["caught"] == 1
