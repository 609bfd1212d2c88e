"""The live pipeline's holds (Pipeline.from_settings(holds=True)): what a gateway decision will deny, and until when."""

from __future__ import annotations

from gatewatch.pipeline import Pipeline
from ingest.tokens import fingerprint
from tests.conftest import T0
from tests.events import access, raw, token_event


def _token(minter, jti: str) -> str:
    return minter.mint({"iss": "https://idp.example", "aud": "api://gateway", "sub": "alice", "client_id": "web",
                        "jti": jti, "iat": int(T0) - 60, "exp": int(T0) + 3600})


def test_a_token_replayed_in_the_batch_it_was_first_seen_in_is_held_until_its_exp(settings, validator, minter) -> None:
    tok = _token(minter, "j-1")
    records = [access("e1", T0, token=tok, client_ip="203.0.113.7", user_agent="Mozilla/5.0 (X11) Firefox/120.0"),
               access("e2", T0 + 60, token=tok, client_ip="198.51.100.200", user_agent="python-requests/2.31.0")]
    result = Pipeline.from_settings(settings, validator, holds=True).process([(raw(r), None) for r in records])
    held = [(h.kind, h.value, h.type, h.until) for h in result.holds]
    assert held == [("token", fingerprint(tok), "replay.token_context", T0 + 3600 + settings.tokens.leeway_seconds)]
    assert [t.tfp for t in result.tokens] == [fingerprint(tok)]


def test_a_replay_pipeline_keeps_no_holds(settings, validator, minter) -> None:
    tok = _token(minter, "j-2")
    records = [access("e1", T0, token=tok), token_event("t1", T0 + 1, "revoked", jti="j-2")]
    result = Pipeline.from_settings(settings, validator).process([(raw(r), None) for r in records])
    assert result.holds == [] and result.tokens == []
    live = Pipeline.from_settings(settings, validator, holds=True).process([(raw(r), None) for r in records])
    assert [(h.type, h.since) for h in live.holds] == [("token.revoked", T0 + 1)]


def test_warm_up_rebuilds_the_ledger_without_reporting(settings, validator, minter) -> None:
    tok = _token(minter, "j-3")
    pipeline = Pipeline.from_settings(settings, validator, holds=True)
    first, _ = pipeline.decode([(raw(access("e1", T0, token=tok)), None)])
    assert pipeline.process_events(first, warmup=True).tokens == []
    later = pipeline.process([(raw(token_event("t1", T0 + 5, "revoked", jti="j-3")), None)])
    assert [h.value for h in later.holds] == [fingerprint(tok)]  # it knew the token from the warm-up
