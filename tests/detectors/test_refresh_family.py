"""replay.refresh_reuse names the whole token family (RFC 9700 §4.14.2), and holds tokens issued from it later."""

from __future__ import annotations

import pytest

from detectors.replay_refresh_reuse import RefreshReuseDetector
from ingest.decode import EventDecoder
from ingest.events import Source
from ingest.tokens import fingerprint
from tests.conftest import T0
from tests.detectors.helpers import observe
from tests.events import raw, token_event


@pytest.fixture()
def decode(validator):
    dec = EventDecoder(validator=validator, max_event_bytes=65536)
    return lambda recs: [dec.decode(raw(r), Source("t", 0, i)) for i, r in enumerate(recs)]


def _token(minter, jti: str, ts: float) -> str:
    return minter.mint({"iss": "https://idp.example", "aud": "api://gateway", "sub": "alice", "client_id": "acme-web",
                        "jti": jti, "iat": int(ts), "exp": int(ts) + 3600})


def issued(eid, ts, token, refresh_jti):
    return token_event(eid, ts, "issued", token=token, refresh_jti=refresh_jti, sub="alice", client_id="acme-web")


def refreshed(eid, ts, presented, issued_jti):
    return token_event(eid, ts, "refreshed", presented_jti=presented, issued_jti=issued_jti, sub="alice",
                       client_id="acme-web")


def test_a_reuse_names_every_access_token_of_the_family(decode, minter) -> None:
    a1, a2, a3 = (_token(minter, f"at-{i}", T0 + i * 600) for i in (1, 2, 3))
    events = decode([
        issued("i1", T0, a1, "rt-1"),                     # log-in: access token a1 with refresh token rt-1
        refreshed("r1", T0 + 600, "rt-1", "rt-2"), issued("i2", T0 + 600.002, a2, "rt-2"),
        refreshed("x1", T0 + 1200, "rt-1", "rt-x"),       # rt-1 again, 10 minutes after its rotation
        issued("ix", T0 + 1200.002, a3, "rt-x"),          # what the thief got: issued from the family
    ])
    sigs = observe(RefreshReuseDetector(), events)
    reuse = [s for s in sigs if s.alerting]
    assert len(reuse) == 1
    s = reuse[0]
    tokens = [e.value for e in s.entities if e.kind == "token"]
    assert tokens == [fingerprint(a1), fingerprint(a2)]
    assert s.token_fps == (fingerprint(a1), fingerprint(a2))
    assert s.figures["family_refresh_tokens"] == 3 and s.figures["family_access_tokens"] == 2
    assert s.figures["family_refresh_jtis"] == ["rt-1", "rt-2", "rt-x"]
    assert "gateway decision denies every one of them" in s.reasons[-1]
    later = [x for x in sigs if not x.alerting]
    assert len(later) == 1 and later[0].event_ids == ("ix",)
    assert [(e.kind, e.value) for e in later[0].entities] == [("subject", "alice"), ("token", fingerprint(a3))]


def test_without_refresh_jti_no_token_is_named(decode, minter) -> None:
    a1 = _token(minter, "at-1", T0)
    events = decode([
        token_event("i1", T0, "issued", token=a1, sub="alice"),
        refreshed("r1", T0 + 600, "rt-1", "rt-2"), refreshed("x1", T0 + 1200, "rt-1", "rt-x"),
    ])
    sigs = observe(RefreshReuseDetector(), events)
    assert len(sigs) == 1 and all(e.kind != "token" for e in sigs[0].entities)
    assert "family_access_tokens" not in sigs[0].figures


def test_an_unrelated_family_is_untouched(decode, minter) -> None:
    mine, other = _token(minter, "at-1", T0), _token(minter, "at-9", T0)
    events = decode([
        issued("i1", T0, mine, "rt-1"), issued("i9", T0, other, "rt-9"),
        refreshed("r1", T0 + 600, "rt-1", "rt-2"), refreshed("x1", T0 + 1200, "rt-1", "rt-x"),
        refreshed("r9", T0 + 1300, "rt-9", "rt-10"),
    ])
    sigs = observe(RefreshReuseDetector(), events)
    assert len(sigs) == 1
    assert [e.value for e in sigs[0].entities if e.kind == "token"] == [fingerprint(mine)]
