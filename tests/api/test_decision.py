"""The gateway decision: holds, token identity and risk rows → 204 / 401 / 403 (api/decision.py)."""

from __future__ import annotations

import ipaddress
import sqlite3

import pytest
from hypothesis import given
from hypothesis import strategies as st

from api.decision import DecisionEngine, DecisionRequest, bearer_token, client_address, tfp_of
from api.store import AlertStore
from gatewatch.pipeline import Pipeline
from gatewatch.sinks import StoreSink
from ingest.tokens import fingerprint
from scoring.holds import Hold, TokenSeen
from scoring.risk import RiskUpdate
from tests.conftest import T0
from tests.events import access, raw, token_event

NOW = T0 + 100


@pytest.fixture()
def store() -> AlertStore:
    return AlertStore(":memory:")


def _ask(engine, token=None, ip="198.51.100.9", tenant="acme", now=NOW):
    return engine.decide(DecisionRequest(authorization=f"Bearer {token}" if token else None, client_ip=ip,
                                         tenant=tenant), now)


def _risk(kind, value, score, action, tenant="acme") -> RiskUpdate:
    level = {"allow": "low", "step_up": "medium", "deny": "high"}[action]
    return RiskUpdate(kind, value, tenant, score, level, action, (f"{kind} reason",), T0)


def test_nothing_known_is_allowed(store) -> None:
    d = _ask(DecisionEngine(store), token="a.b.c")
    assert (d.status, d.action, d.risk, d.reason) == (204, "allow", 0.0, "")


def test_a_held_token_is_denied_until_the_hold_ends(store) -> None:
    tfp = tfp_of("tok.en.x")
    store.holds.upsert([Hold("acme", "token", tfp, "token.revoked", "token j-1 was revoked", T0, NOW + 10)], [])
    engine = DecisionEngine(store)
    d = _ask(engine, token="tok.en.x")
    assert (d.status, d.action, d.risk, d.reason, d.entity) == (403, "deny", 100.0, "token j-1 was revoked",
                                                                 f"token:tfp {tfp}")
    assert _ask(engine, token="tok.en.x", now=NOW + 10).status == 204  # the hold has ended
    assert _ask(engine, token="other.tok.en").status == 204


def test_subject_rules_apply_through_the_token_row_without_decrypting(store) -> None:
    tfp = tfp_of("tok.en.y")
    store.holds.upsert([Hold("acme", "subject", "alice", "traffic.llm_budget", "over budget", T0, NOW + 60)],
                       [TokenSeen(tfp, "acme", "alice", "web", "https://idp.example", "j", T0 + 3600, T0)])
    d = _ask(DecisionEngine(store), token="tok.en.y")
    assert (d.status, d.reason, d.entity) == (403, "over budget", "subject:alice")
    # the same subject's hold in another tenant does not touch a token of this one
    store.holds.upsert([], [TokenSeen(tfp_of("g.lo.bex"), "globex", "alice", "web", None, None, None, T0)])
    assert _ask(DecisionEngine(store), token="g.lo.bex").status == 204


def test_risk_rows_decide_by_the_riskiest(store) -> None:
    tfp = tfp_of("tok.en.z")
    store.holds.upsert([], [TokenSeen(tfp, "acme", "bob", "cli", None, None, None, T0)])
    store.upsert_risk([_risk("client", "cli", 50.0, "step_up")])
    engine = DecisionEngine(store)
    d = _ask(engine, token="tok.en.z")
    assert (d.status, d.action, d.risk, d.reason, d.entity) == (401, "step_up", 50.0, "client reason", "client:cli")
    store.upsert_risk([_risk("ip", "198.51.100.9", 90.0, "deny")])
    engine.store.risk.staleness_seconds = 0
    assert _ask(engine, token="tok.en.z").status == 403
    assert _ask(engine, token=None, ip="198.51.100.10").status == 204
    # an IP's risk in another tenant than the route's does not count
    assert _ask(engine, token=None, tenant="globex").status == 204


def test_an_unknown_token_falls_back_to_its_own_row_and_the_address(store) -> None:
    store.upsert_risk([_risk("token", tfp_of("un.kno.wn"), 80.0, "deny", tenant="globex")])
    assert _ask(DecisionEngine(store), token="un.kno.wn").status == 403


def test_an_unreadable_store_gives_the_fail_mode(store) -> None:
    store.db.conn.execute("DROP TABLE holds")
    assert _ask(DecisionEngine(store, fail_mode="open"), token="a.b.c").status == 204
    d = _ask(DecisionEngine(store, fail_mode="closed"), token="a.b.c")
    assert (d.status, d.action) == (403, "deny") and "fail closed" in d.reason
    with pytest.raises(sqlite3.Error):  # (the failure is real)
        store.holds.holds_of([("token", "x")])


@pytest.mark.parametrize("header,expected", [
    ("Bearer abc.def.ghi", "abc.def.ghi"), ("bearer  abc ", "abc"), ("Basic abc", None), ("Bearer", None),
    ("Bearer a b", None), ("", None), (None, None), ("Bearer " + "x" * 20, None)])
def test_bearer_token(header, expected) -> None:
    assert bearer_token(header, max_bytes=16) == expected


TRUSTED = [ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("10.0.0.0/8")]


@pytest.mark.parametrize("peer,xff,client", [
    ("127.0.0.1", "203.0.113.5", "203.0.113.5"),
    ("127.0.0.1", "1.2.3.4, 203.0.113.5, 10.1.1.1", "203.0.113.5"),   # right-most untrusted
    ("198.51.100.1", "203.0.113.5", "198.51.100.1"),                  # an untrusted peer's header is ignored
    ("127.0.0.1", None, "127.0.0.1"),
    ("127.0.0.1", "10.2.2.2, 10.1.1.1", "10.2.2.2"),                   # all trusted: the farthest
    ("127.0.0.1", "junk, 203.0.113.5", "203.0.113.5"),
    ("127.0.0.1", "203.0.113.5, junk", "127.0.0.1"),                   # junk ends the walk at the last proxy
    ("127.0.0.1", "[2001:db8::1]:443", "2001:db8::1"),
    ("127.0.0.1", "203.0.113.5:8080", "203.0.113.5"),
    ("::ffff:127.0.0.1", "203.0.113.5", "203.0.113.5"),
])
def test_client_address(peer, xff, client) -> None:
    assert client_address(peer, xff, TRUSTED) == client


@given(st.text(max_size=200))
def test_client_address_never_raises_and_is_an_address_or_the_peer(xff) -> None:
    got = client_address("127.0.0.1", xff, TRUSTED)
    ipaddress.ip_address(got)


def test_the_pipeline_fills_what_the_decision_reads(settings, validator, minter) -> None:
    """Live path end to end without Kafka: events → Pipeline(holds) → StoreSink → DecisionEngine."""
    def tok(jti, sub="alice"):
        return minter.mint({"iss": "https://idp.example", "aud": "api://gateway", "sub": sub,
                            "client_id": "web", "jti": jti, "iat": int(T0), "exp": int(T0) + 3600})
    good, revoked, a1, a2 = tok("j-good", "carol"), tok("j-rev"), tok("j-a1"), tok("j-a2")
    records = [
        access("e1", T0, token=good), access("e2", T0 + 1, token=revoked),
        token_event("t1", T0 + 2, "revoked", jti="j-rev", sub="alice"),
        token_event("i1", T0 + 3, "issued", token=a1, refresh_jti="rt-1", sub="alice"),
        token_event("r1", T0 + 600, "refreshed", presented_jti="rt-1", issued_jti="rt-2", sub="alice"),
        token_event("i2", T0 + 600.01, "issued", token=a2, refresh_jti="rt-2", sub="alice"),
        token_event("r2", T0 + 1200, "refreshed", presented_jti="rt-1", issued_jti="rt-x", sub="alice"),
    ]
    store = AlertStore(":memory:")
    pipeline = Pipeline.from_settings(settings, validator, holds=True)
    sink = StoreSink(store)
    result = pipeline.process([(raw(r), None) for r in records])
    sink.write(result)
    sink.flush()
    engine = DecisionEngine(store)
    now = T0 + 1300
    assert _ask(engine, token=good, now=now).status == 204
    d = _ask(engine, token=tok("j-new"), now=now)  # alice's next token: her subject's risk asks for a step up
    assert (d.status, d.entity) == (204, "")  # (unknown to the pipeline: no subject to apply)
    d = _ask(engine, token=revoked, now=now)
    assert (d.status, d.reason) == (403, "token j-rev was revoked at the authorization server")
    for family_token in (a1, a2):
        d = _ask(engine, token=family_token, now=now)
        assert d.status == 403 and d.reason.startswith("replay.refresh_reuse: refresh token rt-1")
    assert store.holds.count_by_type() == {"token.revoked": 1, "replay.refresh_reuse": 2}
    assert store.holds.count_by_type(live_at=T0 + 3600 + 31) == {}  # every held token has expired by then
    alert = next(a for a in result.alerts if a.type == "replay.refresh_reuse")
    assert set(alert.evidence["token_fps"]) == {fingerprint(a1), fingerprint(a2)}  # visible in the alert
    assert {"kind": "token", "value": fingerprint(a1)} in alert.evidence["entities"]
