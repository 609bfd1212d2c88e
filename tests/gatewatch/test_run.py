"""`gatewatch run` (gatewatch/run.py): what it prints about the behaviour model is escaped."""

from __future__ import annotations

from types import SimpleNamespace

from gatewatch.run import _model_status
from tests.gatewatch.test_terminal import raw_controls


def test_a_silent_model_reason_is_printed_escaped(capsys) -> None:
    reason = "no anomaly model in /srv/model\x1b[2J\r\nFAKE LINE"
    meta: dict = {}
    store = SimpleNamespace(set_meta=meta.__setitem__)
    pipeline = SimpleNamespace(behaviour=SimpleNamespace(status="silent", reason=reason))
    assert _model_status(store, pipeline) == "silent"
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and raw_controls(err) == [], repr(err)
    assert "/srv/model\\x1b[2J\\r\\nFAKE LINE" in err
    assert next(iter(meta.values()))["reason"] == reason  # the store keeps the data as it is (JSON)
