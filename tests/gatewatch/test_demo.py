"""The demo's summary (gatewatch/demo.py) prints alert data escaped: a log line cannot clear the screen or
print a line of its own. The demo's processes and HTTP calls are replaced by fakes; its printing is real."""

from __future__ import annotations

import json
from pathlib import Path

from gatewatch import demo
from tests.gatewatch.test_terminal import HOSTILE, raw_controls

ALERT = {"id": "a1", "type": "replay.nonce" + HOSTILE, "severity": "high" + HOSTILE, "tenant": "acme" + HOSTILE,
         "entity": {"kind": "subject", "value": "alice\x1b[2J\r\nFAKE LINE"},
         "reasons": ["nonce n1 replayed by Mozilla/5.0 \x1b[2J\r\nFAKE LINE from route orders" + HOSTILE]}


class FakeProcess:
    def __init__(self, argv: list[str], **_: object) -> None:
        self.argv, self.returncode = argv, 0

    def poll(self) -> int | None:
        return None if "serve" in self.argv else 0

    def communicate(self, timeout: float | None = None) -> tuple[str, None]:
        return json.dumps({"events": 3, "dead_letters": 0}) + "\n", None

    def send_signal(self, _: int) -> None:
        self.returncode = 0

    def wait(self, timeout: float | None = None) -> int:
        return 0


def fake_get(url: str, key: str | None = None) -> dict:
    if "/readyz" in url:
        return {"checks": {"model": {"detail": "anomaly model loaded" + HOSTILE}}}
    return {"score": 80, "action": "deny" + HOSTILE}


def test_the_summary_escapes_control_characters_from_alerts(tmp_path: Path, monkeypatch, capsys) -> None:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "credentials.json").write_text(json.dumps({"analyst": "k1", "gateway": "k2"}))
    (tmp_path / "labels.jsonl").write_text(json.dumps({"type": "replay.nonce" + HOSTILE}) + "\n")
    (tmp_path / "gatewatch.toml").write_text("")
    monkeypatch.setattr(demo, "_train_once", lambda *a: None)
    monkeypatch.setattr(demo, "_wait_http", lambda *a: None)
    monkeypatch.setattr(demo, "_all_alerts", lambda *a: [ALERT])
    monkeypatch.setattr(demo, "_get", fake_get)
    monkeypatch.setattr(demo.subprocess, "Popen", FakeProcess)
    monkeypatch.setattr(demo.subprocess, "run", lambda *a, **k: None)
    monkeypatch.setattr("sys.argv", ["demo", "--config", str(tmp_path / "gatewatch.toml"), "--no-hold"])
    assert demo.main() == 0
    out = capsys.readouterr().out
    assert "=== gatewatch demo summary ===" in out
    assert "gateway decisions: 0 holds made, 0 still denying at the newest event time" in out  # an empty store
    assert raw_controls(out) == []
    assert not [line for line in out.splitlines() if line.startswith("FAKE LINE")]
    assert "subject=alice\\x1b[2J\\r\\nFAKE LINE" in out  # shown, not obeyed
    assert "action deny\\x1b[2J" in out and "model    : anomaly model loaded\\x1b[2J" in out
