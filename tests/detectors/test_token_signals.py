"""token.unencrypted and token.invalid: caught in a realistic simulated stream, silent on clean traffic."""

from __future__ import annotations

import json

import pytest

from detectors.state import MemoryStore
from detectors.packed_store import PackedStore
from detectors.token_invalid import InvalidTokenBurstDetector
from detectors.token_jti_collision import JtiCollisionDetector
from detectors.token_misuse import CrossTenantDetector, ExpiredUseDetector
from detectors.token_unencrypted import UnencryptedTokenDetector
from gatewatch.pipeline import Pipeline
from gatewatch.simulate import SimulationSpec, generate
from ingest.decode import EventDecoder
from ingest.events import Source
from tests.conftest import T0
from tests.events import access, raw


def run(detector, validator, records):
    dec = EventDecoder(validator=validator, max_event_bytes=65536)
    store = PackedStore() if getattr(detector, "state_kind", "memory") == "packed" else MemoryStore()
    out = []
    for i, rec in enumerate(records):
        out += detector.observe(dec.decode(raw(rec), Source("t", 0, i)), store)
    return out


def test_unencrypted_once_per_issuer_and_client(validator, minter) -> None:
    a = minter.mint({"sub": "s1", "client_id": "legacy", "exp": T0 + 900, "iat": T0}, encrypt=False)
    b = minter.mint({"sub": "s2", "client_id": "legacy", "exp": T0 + 900, "iat": T0}, encrypt=False)
    c = minter.mint({"sub": "s3", "client_id": "other", "exp": T0 + 900, "iat": T0}, encrypt=False)
    enc = minter.mint({"sub": "s4", "client_id": "modern", "exp": T0 + 900, "iat": T0})
    recs = [access("e1", T0, token=a), access("e2", T0 + 1, token=b), access("e3", T0 + 2, token=c),
            access("e4", T0 + 3, token=enc), access("e5", T0 + 4, token="forged.x.y"),
            access("e6", T0 + 86_400 + 10, token=a)]
    sigs = run(UnencryptedTokenDetector(realert_seconds=86_400), validator, recs)
    assert [(s.entity.value, s.event_ids) for s in sigs] == [("legacy", ("e1",)), ("other", ("e3",))]
    assert "plain signed tokens (ES256)" in sigs[0].reasons[0]
    store = MemoryStore()  # after a day of event time the condition is reported again
    dec = EventDecoder(validator=validator, max_event_bytes=65536)
    det = UnencryptedTokenDetector(realert_seconds=86_400)
    first = det.observe(dec.decode(raw(recs[0])), store)
    store.expire(T0 + 86_400 + 5)
    assert first and det.observe(dec.decode(raw(recs[5])), store)


def test_expired_use_only_when_let_through_and_once_per_while(validator, minter) -> None:
    tok = minter.mint({"sub": "bob", "exp": T0, "iat": T0 - 600})
    recs = [access("e1", T0 + 10, token=tok),  # inside the 30 s leeway
            access("e2", T0 + 300, token=tok, status=401),  # the gateway refused it: fine
            access("e3", T0 + 400, token=tok), access("e4", T0 + 500, token=tok),  # let through
            access("e5", T0 + 1100, token=tok)]
    sigs = run(ExpiredUseDetector(leeway_seconds=30, realert_seconds=600), validator, recs)
    assert [s.event_ids for s in sigs] == [("e3",), ("e5",)]
    assert sigs[0].entity.value == "bob" and "6.7 min" in sigs[0].reasons[0]


def test_cross_tenant_token(validator, minter) -> None:
    tok = minter.mint({"sub": "carol", "tid": "acme", "exp": T0 + 900, "iat": T0})
    recs = [access("e1", T0, token=tok), access("e2", T0 + 1, token=tok, tenant="globex", status=403),
            access("e3", T0 + 2, token=tok, tenant="globex")]
    sigs = run(CrossTenantDetector(), validator, recs)
    assert [s.event_ids for s in sigs] == [("e2",)]
    assert "tenant acme" in sigs[0].reasons[0] and "refused (403)" in sigs[0].reasons[0]


def test_jti_collision(validator, minter) -> None:
    a = minter.mint({"sub": "alice", "jti": "j-9", "exp": T0 + 900, "iat": T0})
    b = minter.mint({"sub": "admin", "jti": "j-9", "exp": T0 + 900, "iat": T0 + 60})
    c = minter.mint({"sub": "dave", "jti": "j-10", "exp": T0 + 900, "iat": T0})
    recs = [access("e1", T0, token=a), access("e2", T0 + 1, token=a), access("e3", T0 + 2, token=c),
            access("e4", T0 + 70, token=b), access("e5", T0 + 80, token=b)]
    sigs = run(JtiCollisionDetector(), validator, recs)
    assert [s.event_ids for s in sigs] == [("e4",)]
    assert sigs[0].entity.value == "admin" and sigs[0].figures["different_subject"]


def test_invalid_burst_from_one_ip(validator, minter) -> None:
    good = minter.mint({"sub": "ok", "exp": T0 + 900, "iat": T0})
    burst = [access(f"b{i}", T0 + i, token=f"junk{i}.a.b", client_ip="192.0.2.66", status=401) for i in range(25)]
    spread = [access(f"s{i}", T0 + i * 10, token="junk.a.b", client_ip="192.0.2.77", status=401) for i in range(25)]
    expired = [access(f"x{i}", T0 + 2000 + i, token=good, client_ip="192.0.2.88") for i in range(30)]
    sigs = run(InvalidTokenBurstDetector(threshold=20, window_seconds=60), validator, burst + spread + expired)
    assert [s.entity.value for s in sigs] == ["192.0.2.66"]
    assert sigs[0].figures["refused"] == 20 and sigs[0].figures["verdicts"] == {"malformed": 20}
    assert len(sigs[0].event_ids) == 20


TYPES = ["token.unencrypted", "token.invalid", "token.expired_use", "token.cross_tenant", "token.jti_collision"]


def simulate(minter, attacks, events, seed):
    spec = SimulationSpec(seed=seed, events=events, attacks=attacks, attack_every=1500)
    lines, labels = [], []
    for ev in generate(spec, minter):
        lines.append(json.dumps(ev.event).encode())
        labels += [(ev.event["event_id"], lab) for lab in ev.labels]
    return lines, labels


@pytest.fixture(scope="module")
def attacked_run(minter, keys_dir, tmp_path_factory):
    from gatewatch.settings import load_settings
    from tests.conftest import validator_for, write_config

    settings = load_settings(write_config(tmp_path_factory.mktemp("cfg"), keys_dir), environ={})
    lines, labels = simulate(minter, tuple(TYPES), 50_000, 5)
    result = Pipeline.from_settings(settings, validator_for(keys_dir)).process([(line, None) for line in lines])
    return result.alerts, labels


@pytest.fixture(scope="module")
def clean_run(minter, keys_dir, tmp_path_factory):
    from gatewatch.settings import load_settings
    from tests.conftest import validator_for, write_config

    settings = load_settings(write_config(tmp_path_factory.mktemp("cfg"), keys_dir), environ={})
    lines, labels = simulate(minter, (), 80_000, 9)
    assert not labels
    return Pipeline.from_settings(settings, validator_for(keys_dir)).process([(line, None) for line in lines]).alerts


@pytest.mark.parametrize("attack", TYPES)
def test_caught_in_simulated_traffic(attack, attacked_run) -> None:
    alerts, labels = attacked_run
    attacked = {eid for eid, lab in labels if lab["type"] == attack}
    assert attacked
    found = [a for a in alerts if a.type == attack]
    assert found and all(set(a.evidence["event_ids"]) & attacked for a in found)


@pytest.mark.parametrize("attack", TYPES)
def test_silent_on_clean_simulated_traffic(attack, clean_run) -> None:
    assert not [a for a in clean_run if a.type == attack]
