"""TokenLedger: revocations and signals become holds; a signed token seen first becomes a token row."""

from __future__ import annotations

import pytest

from detectors.base import Entity, Signal
from ingest.decode import EventDecoder
from ingest.events import Source
from ingest.tokens import fingerprint
from scoring.holds import REVOKED, TokenLedger
from tests.conftest import T0
from tests.events import access, raw, token_event


@pytest.fixture()
def decode(validator):
    dec = EventDecoder(validator=validator, max_event_bytes=65536)
    return lambda recs: [dec.decode(raw(r), Source("t", 0, i)) for i, r in enumerate(recs)]


def _token(minter, jti: str, *, exp: float = T0 + 3600, tid: str | None = None) -> str:
    claims = {"iss": "https://idp.example", "aud": "api://gateway", "sub": "alice", "client_id": "web",
              "jti": jti, "iat": int(T0) - 60, "exp": int(exp)}
    if tid:
        claims["tid"] = tid
    return minter.mint(claims)


def _run(ledger, events):
    holds, seen = [], []
    for ev in events:
        ledger.observe(ev, holds, seen)
    return holds, seen


def test_a_revocation_holds_the_token_until_it_expires(decode, minter) -> None:
    tok = _token(minter, "j-1")
    holds, seen = _run(TokenLedger(leeway_seconds=30), decode([
        access("a1", T0, token=tok), access("a2", T0 + 5, token=tok),
        token_event("v1", T0 + 10, "revoked", jti="j-1", sub="alice")]))
    assert [(t.tfp, t.sub, t.client_id, t.tenant, t.jti) for t in seen] == [
        (fingerprint(tok), "alice", "web", "acme", "j-1")]  # once, though used twice
    assert len(holds) == 1
    h = holds[0]
    assert (h.kind, h.value, h.type, h.since, h.until) == ("token", fingerprint(tok), REVOKED, T0 + 10, T0 + 3630)


def test_a_revocation_read_before_the_token_holds_it_when_it_turns_up(decode, minter) -> None:
    tok = _token(minter, "j-2")
    holds, _ = _run(TokenLedger(), decode([
        token_event("v1", T0, "revoked", jti="j-2"), access("a1", T0 + 1, token=tok)]))
    assert [(h.value, h.since) for h in holds] == [(fingerprint(tok), T0)]


def test_an_unsigned_or_unknown_token_is_not_a_token_row(decode) -> None:
    holds, seen = _run(TokenLedger(), decode([access("a1", T0, token="not.a.token"),
                                              token_event("v1", T0 + 1, "revoked", jti="nobody")]))
    assert seen == [] and holds == []


def test_the_revocation_is_per_tenant(decode, minter) -> None:
    tok = _token(minter, "j-3", tid="globex")
    holds, seen = _run(TokenLedger(), decode([access("a1", T0, token=tok),
                                              token_event("v1", T0 + 1, "revoked", jti="j-3")]))  # acme's
    assert seen[0].tenant == "globex" and holds == []


def _signal(type_, *entities, **figures) -> Signal:
    return Signal(type=type_, tenant="acme", ts=T0, entities=tuple(entities), strength=0.9,
                  reasons=("why",), event_ids=("e",), figures=figures)


def test_signals_hold_the_kinds_their_type_names(decode, minter) -> None:
    tok = _token(minter, "j-4")
    ledger = TokenLedger(hold_seconds=600)
    _run(ledger, decode([access("a1", T0, token=tok)]))
    tfp = fingerprint(tok)
    ctx = ledger.on_signal(_signal("replay.token_context", Entity("subject", "alice"), Entity("token", tfp)))
    assert [(h.kind, h.value, h.until) for h in ctx] == [("token", tfp, T0 + 3600 + 30)]  # its exp + leeway
    unknown = ledger.on_signal(_signal("replay.token_context", Entity("token", "0" * 16)))
    assert [h.until for h in unknown] == [T0 + 600]  # never seen: hold_seconds
    budget = ledger.on_signal(_signal("traffic.llm_budget", Entity("subject", "alice"), deny_until=T0 + 60))
    assert [(h.kind, h.until, h.reason) for h in budget] == [("subject", T0 + 60, "traffic.llm_budget: why")]
    assert ledger.on_signal(_signal("traffic.rate_limit", Entity("ip", "203.0.113.7"))) == []


def test_expiry_forgets_tokens_and_pending_revocations(decode, minter) -> None:
    tok = _token(minter, "j-5", exp=T0 + 100)
    ledger = TokenLedger(hold_seconds=50, leeway_seconds=0)
    _run(ledger, decode([access("a1", T0, token=tok), token_event("v1", T0, "revoked", jti="later")]))
    ledger.expire(T0 + 101)
    assert ledger._tokens == {} and ledger._by_jti == {} and ledger._pending == {}
