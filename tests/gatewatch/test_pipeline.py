import json

from gatewatch.pipeline import Pipeline
from ingest.events import Source
from tests.conftest import T0
from tests.events import access, raw


def batch(records, topic="gateway.access"):
    out = []
    for i, r in enumerate(records):
        out.append((r if isinstance(r, bytes) else raw(r), Source(topic, 0, i)))
    return out


def nonce_stream(minter, n=50):
    tok = minter.mint({"sub": "alice", "client_id": "spa", "exp": T0 + 3600, "iat": T0, "cnf": {"jkt": "k"}})
    recs = [access(f"e{i}", T0 + i, token=tok, nonce=f"n{i}") for i in range(n)]
    recs.append(access("attack", T0 + n + 5, token=tok, nonce=f"n{min(7, n - 1)}", client_ip="198.51.100.66"))
    return recs


def test_poison_records_are_dead_lettered_and_the_rest_processed(settings, validator, minter) -> None:
    p = Pipeline.from_settings(settings, validator)
    recs = nonce_stream(minter)
    poison = [b"not json", raw({**access("x", T0), "status": "oops"}), b"{" + b" " * 70_000 + b"}"]
    result = p.process(batch(poison[:2] + recs[:10] + poison[2:] + recs[10:]))
    assert [d.code for d in result.dead_letters] == ["not_json", "schema", "oversize"]
    assert [d.source.offset for d in result.dead_letters] == [0, 1, 12]
    assert result.dead_letters[0].original == b"not json"
    entry = json.loads(result.dead_letters[1].to_json())
    assert entry["code"] == "schema" and "status" in entry["reason"]
    assert result.events == len(recs)
    assert [a.type for a in result.alerts] == ["replay.nonce"]
    assert p.stats.dead_letters == 3


def test_redelivery_gives_the_same_alert_ids_and_no_second_alert(settings, validator, minter) -> None:
    p = Pipeline.from_settings(settings, validator)
    recs = batch(nonce_stream(minter))
    first = p.process(recs)
    again = p.process(recs)  # the same records, same offsets: a redelivery after a crash
    assert len(first.alerts) == 1
    assert again.alerts == []  # nothing changed
    fresh = Pipeline.from_settings(settings, validator).process(recs)
    assert [a.id for a in fresh.alerts] == [a.id for a in first.alerts]
    assert fresh.alerts[0].model_dump() == first.alerts[0].model_dump()


def test_batching_does_not_change_alerts(settings, validator, minter) -> None:
    recs = batch(nonce_stream(minter) + [access("late-replay", T0 + 3, nonce="n3", token=None)])
    whole = Pipeline.from_settings(settings, validator).process(recs).alerts
    p = Pipeline.from_settings(settings, validator)
    pieces = {}
    for i in range(0, len(recs), 7):
        for a in p.process(recs[i:i + 7]).alerts:
            pieces[a.id] = a
    assert {a.id: a.model_dump() for a in whole} == {k: v.model_dump() for k, v in pieces.items()}


def test_risk_updates_follow_alerts(settings, validator, minter) -> None:
    result = Pipeline.from_settings(settings, validator).process(batch(nonce_stream(minter)))
    kinds = {(u.kind, u.value) for u in result.risk}
    assert ("subject", "alice") in kinds and ("ip", "198.51.100.66") in kinds
    assert all(0 < u.score <= 100 for u in result.risk)


def test_a_detector_that_raises_dead_letters_the_event(settings, validator, minter) -> None:
    class Broken:
        name = "broken.test"
        settings_key = "broken"

        def observe(self, event, state):
            raise RuntimeError("boom")

    p = Pipeline.from_settings(settings, validator)
    p.detectors.append(Broken())
    p.stores["broken.test"] = type(next(iter(p.stores.values())))()
    recs = nonce_stream(minter, n=3)
    result = p.process(batch(recs))
    assert len(result.dead_letters) == len(recs)
    assert {d.stage for d in result.dead_letters} == {"detect"}
    assert b"<redacted tfp=" in result.dead_letters[0].original  # never the raw token
    assert len(result.alerts) == 1  # the other detectors still ran


def test_a_signal_that_breaks_scoring_dead_letters_its_event(settings, validator, minter, monkeypatch) -> None:
    p = Pipeline.from_settings(settings, validator)
    real_add = p.risk.add

    def add(signal):
        if signal.type == "replay.nonce":
            raise ValueError("bad strength")
        return real_add(signal)

    monkeypatch.setattr(p.risk, "add", add)
    result = p.process(batch(nonce_stream(minter)))
    dead = [d for d in result.dead_letters if d.code == "scoring_error"]
    assert len(dead) == 1 and "replay.nonce" in dead[0].reason and "ValueError" in dead[0].reason
    assert p.stats.dead_letter_codes["scoring_error"] == 1
    assert all(a.type != "replay.nonce" for a in result.alerts)  # the stream went on without it
