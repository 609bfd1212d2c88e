"""The command line: exit codes and one-line errors (CONTRACT.md §4)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gatewatch.cli import main
from tests.conftest import T0, write_config
from tests.events import access


def test_bad_usage_is_one_line_and_exit_2(capsys) -> None:
    assert main(["nosuch"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("gatewatch: ") and "\n" not in err


def test_bad_config_key_exits_2_naming_it(tmp_path: Path, capsys) -> None:
    cfg = tmp_path / "g.toml"
    cfg.write_text("[kafka]\nbootstrap = 1\n")
    assert main(["--config", str(cfg), "replay", "x.jsonl"]) == 2
    assert "kafka.bootstrap" in capsys.readouterr().err


def test_train_on_a_missing_file_is_bad_usage(tmp_path: Path, capsys) -> None:
    assert main(["train", str(tmp_path / "x.jsonl")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_token_inspect_exit_codes_and_no_raw_token(tmp_path: Path, keys_dir, minter, capsys, monkeypatch) -> None:
    cfg = write_config(tmp_path, keys_dir)
    good = minter.mint({"sub": "alice", "exp": T0 + 600, "iat": T0})
    assert main(["token", "inspect", good, "--config", str(cfg), "--at", "2026-11-18T11:07:00Z"]) == 0
    out = capsys.readouterr().out
    doc = json.loads(out)
    assert doc["verdict"] == "ok" and doc["claims"]["sub"] == "alice" and len(doc["tfp"]) == 16
    assert good not in out
    assert main(["token", "inspect", good, "--config", str(cfg), "--at", "2030-01-01T00:00:00Z"]) == 1
    assert json.loads(capsys.readouterr().out)["verdict"] == "expired"
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO("garbage\n"))
    assert main(["token", "inspect", "-", "--config", str(cfg)]) == 1
    assert json.loads(capsys.readouterr().out)["verdict"] == "malformed"
    assert main(["token", "inspect", good, "--config", str(cfg), "--at", "tomorrow"]) == 2


def test_keys_generate_refuses_to_overwrite(tmp_path: Path, capsys) -> None:
    assert main(["keys", "generate", str(tmp_path / "k")]) == 0
    assert (tmp_path / "k" / "credentials.json").exists()
    assert main(["keys", "generate", str(tmp_path / "k")]) == 2


def test_replay_writes_alerts_jsonl_and_dead_letters(tmp_path: Path, keys_dir, minter) -> None:
    import gzip

    cfg = write_config(tmp_path, keys_dir)
    tok = minter.mint({"sub": "alice", "exp": T0 + 3600, "iat": T0})
    lines = [json.dumps(access(f"e{i}", T0 + i, token=tok, nonce=f"n{i}")) for i in range(20)]
    lines += ["not json", json.dumps(access("again", T0 + 30, token=tok, nonce="n3"))]
    src = tmp_path / "events.jsonl.gz"
    with gzip.open(src, "wt") as f:
        f.write("\n".join(lines) + "\n")
    out, dlq = tmp_path / "alerts.jsonl", tmp_path / "dlq.jsonl"
    done = subprocess.run([sys.executable, "-m", "gatewatch.cli", "--config", str(cfg), "replay", str(src),
                           "--out", str(out), "--dlq", str(dlq)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["events"] == 21 and summary["dead_letters"] == 1
    assert summary["alerts_by_type"] == {"replay.nonce": 1}
    assert summary["seconds"] > 0  # throughput: all 22 records over the replay's wall time
    assert abs(summary["events_per_second"] * summary["seconds"] - 22) < 0.5
    alerts = [json.loads(line) for line in out.read_text().splitlines()]
    assert alerts[0]["type"] == "replay.nonce" and alerts[0]["status"] == "open"
    assert set(alerts[0]) >= {"id", "severity", "tenant", "entity", "first_seen", "last_seen", "count", "risk",
                              "reasons", "evidence", "assignee", "notes"}
    dead = json.loads(dlq.read_text())
    assert dead["code"] == "not_json" and dead["source"] == {"topic": "events.jsonl.gz", "partition": 0,
                                                                "offset": 21}
    assert done.stderr == ""  # quiet when piped


@pytest.mark.parametrize("args", [["replay"], ["replay", "/nonexistent.jsonl"],
                                  ["replay", "--from-topic", "x"], ["simulate", "--events", "5"]])
def test_replay_and_simulate_usage_errors(args, capsys) -> None:
    assert main(args) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_replay_progress_line_shows_events_per_second(settings, minter) -> None:
    import io

    from gatewatch.pipeline import Pipeline
    from gatewatch.replay import replay

    tok = minter.mint({"sub": "alice", "exp": T0 + 3600, "iat": T0})
    records = [(json.dumps(access(f"e{i}", T0 + i, token=tok)).encode(), None) for i in range(30)]
    progress = io.StringIO()
    result = replay(Pipeline.from_settings(settings, None), records, batch_size=10, progress=progress)
    lines = [part for part in progress.getvalue().split("\r") if part.strip()]
    assert len(lines) == 3 and lines[-1].startswith("30 records  ") and " events/s  " in lines[-1]
    assert result.records == 30 and result.seconds > 0 and result.events_per_second > 0


def test_an_error_line_quoting_input_escapes_control_characters(capsys) -> None:
    from tests.gatewatch.test_terminal import raw_controls

    assert main(["replay", "/nonexistent\x1b[2J\r\nFAKE LINE.jsonl"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and raw_controls(err) == [], repr(err)
    assert "no such file: /nonexistent\\x1b[2J\\r\\nFAKE LINE.jsonl" in err
    assert main(["nosuch\x9b2J"]) == 2  # argparse quotes a bad command
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and raw_controls(err) == [], repr(err)
