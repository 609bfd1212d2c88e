"""Other gateways' logs through gatewatch: the `[ingest]` settings, the live pipeline's decoder by input topic, and
`gatewatch replay --format` on files (one process and `--jobs`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gatewatch.cli import main
from gatewatch.pipeline import Pipeline
from gatewatch.replay import read_jsonl, replay, use_format
from gatewatch.settings import IngestSettings, Settings, load_settings
from ingest.adapters import DEFAULT_ORIGINS
from ingest.deadletter import DeadLetter
from ingest.errors import ConfigError
from ingest.events import Source
from ingest.tokens import TokenValidator
from scoring.alerts import rfc3339
from tests.conftest import T0, write_config
from tests.events import access, raw


def envoy_line(i: int, token: str, **fields: Any) -> dict[str, Any]:
    return {"start_time": rfc3339(T0 + i), "method": "GET", "path": "/v1/orders/1?x=1", "response_code": 200,
            "downstream_remote_address": "203.0.113.7:5000", "request_id": f"e{i}", "authorization": f"Bearer {token}",
            "nonce": f"n{i}", "user_agent": "Mozilla/5.0", "tenant": "acme", "route_name": "orders-api", **fields}


# -- settings ------------------------------------------------------------------------------------------
def test_by_default_every_topic_is_gatewatchs_own() -> None:
    s = Settings()
    assert s.ingest.formats == {} and s.ingest.topic_adapters() == {}
    for name in ("envoy", "kong", "aws_apigw"):  # the sections' defaults are the adapters' own
        section, origin = getattr(s.ingest, name), DEFAULT_ORIGINS[name]
        assert (section.tenant, section.tenant_field, section.gateway, section.gateway_field) == (
            origin.tenant, origin.tenant_field, origin.gateway, origin.gateway_field)
        assert section.origin(name) == origin


def test_formats_name_topics_and_known_formats(tmp_path: Path, keys_dir: Path) -> None:
    cfg = write_config(tmp_path, keys_dir, '[ingest]\nformats = {"gateway.access" = "kong"}\n'
                                           '[ingest.kong]\ntenant = "acme"\ntenant_field = ""\n')
    s = load_settings(cfg, environ={})
    assert set(s.ingest.topic_adapters()) == {"gateway.access"}
    assert s.ingest.kong.origin("kong").tenant == "acme" and s.ingest.kong.gateway == "kong"
    env = load_settings(cfg, environ={"GATEWATCH_INGEST__FORMATS": '{"edge.logs" = "envoy"}'})
    assert env.ingest.formats == {"gateway.access": "kong", "edge.logs": "envoy"}  # merged into the file's


@pytest.mark.parametrize("toml, named", [
    ('[ingest]\nformats = {"gateway.access" = "nginx"}\n', "ingest.formats.gateway.access"),
    ('[ingest]\nformats = {"no spaces" = "envoy"}\n', "ingest.formats"),
    ('[ingest]\nformat = {"gateway.access" = "envoy"}\n', "ingest.format"),
    ('[ingest.kong]\ntenent = "acme"\n', "ingest.kong.tenent"),
    ('[ingest.haproxy]\ntenant = "acme"\n', "ingest.haproxy"),
])
def test_a_bad_ingest_key_is_a_config_error_naming_it(tmp_path: Path, keys_dir: Path, toml: str, named: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(write_config(tmp_path, keys_dir, toml), environ={})
    assert f"'{named}'" in str(err.value)


def test_the_cli_exits_2_on_an_unknown_format(tmp_path: Path, keys_dir: Path, capsys: Any) -> None:
    cfg = write_config(tmp_path, keys_dir, '[ingest]\nformats = {"gateway.access" = "nginx"}\n')
    assert main(["--config", str(cfg), "replay", "x.jsonl"]) == 2
    assert "ingest.formats.gateway.access" in capsys.readouterr().err
    assert main(["replay", "x.jsonl", "--format", "nginx"]) == 2
    assert "--format" in capsys.readouterr().err


# -- the live pipeline: the format of the input topic ------------------------------------------------
def test_the_pipeline_decodes_each_input_topic_in_its_format(tmp_path: Path, keys_dir: Path, minter: Any) -> None:
    cfg = write_config(tmp_path, keys_dir, '[ingest]\nformats = {"gateway.access" = "envoy"}\n')
    settings = load_settings(cfg, environ={})
    pipeline = Pipeline.from_settings(settings, None)
    tok = minter.mint({"sub": "alice", "exp": T0 + 3600, "iat": T0})
    ev = pipeline.decode_one(json.dumps(envoy_line(1, tok)).encode(), Source("gateway.access", 2, 10))
    assert not isinstance(ev, DeadLetter)
    assert ev.record.token == tok and ev.record.path == "/v1/orders/1" and ev.source == Source("gateway.access", 2, 10)
    own = pipeline.decode_one(raw(access("own", T0)), Source("gateway.tokens", 0, 1))  # another topic: gatewatch's
    assert not isinstance(own, DeadLetter) and own.record.event_id == "own"
    bad = pipeline.decode_one(raw(access("own", T0)), Source("gateway.access", 0, 2))
    assert isinstance(bad, DeadLetter) and bad.code == "missing_field" and "start_time" in bad.reason
    use_format(pipeline, settings.ingest, "gatewatch")  # replay of files: the topics' formats no longer apply
    assert not isinstance(pipeline.decode_one(raw(access("own", T0)), Source("gateway.access", 0, 2)), DeadLetter)


# -- replay --format -----------------------------------------------------------------------------
def envoy_file(path: Path, tok: str) -> Path:
    lines = [json.dumps(envoy_line(i, tok)) for i in range(20)]
    lines += ["not json", json.dumps(envoy_line(30, tok, request_id="again", nonce="n3")),
              json.dumps(envoy_line(31, tok, response_code="two hundred"))]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_replay_format_envoy_on_a_file(tmp_path: Path, keys_dir: Path, minter: Any) -> None:
    cfg = write_config(tmp_path, keys_dir)
    tok = minter.mint({"sub": "alice", "exp": T0 + 3600, "iat": T0})
    src = envoy_file(tmp_path / "envoy.jsonl", tok)
    out, dlq = tmp_path / "alerts.jsonl", tmp_path / "dlq.jsonl"
    done = subprocess.run([sys.executable, "-m", "gatewatch.cli", "--config", str(cfg), "replay", str(src),
                           "--format", "envoy", "--out", str(out), "--dlq", str(dlq)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["records"] == 23 and summary["events"] == 21
    assert summary["dead_letter_codes"] == {"not_json": 1, "invalid_field": 1}
    assert summary["alerts_by_type"] == {"replay.nonce": 1}  # nonce n3 presented again, with the same token
    alert = json.loads(out.read_text().splitlines()[0])
    assert alert["type"] == "replay.nonce" and alert["tenant"] == "acme"
    dead = [json.loads(line) for line in dlq.read_text().splitlines()]
    assert [d["code"] for d in dead] == ["not_json", "invalid_field"]
    assert "response_code" in dead[1]["reason"] and tok not in dead[1]["reason"]
    assert dead[1]["source"] == {"topic": "envoy.jsonl", "partition": 0, "offset": 23}


def test_replay_of_files_ignores_the_topics_formats(tmp_path: Path, keys_dir: Path, minter: Any, capsys: Any) -> None:
    """[ingest] formats names topics: a file named like one is still read as --format says (default gatewatch)."""
    cfg = write_config(tmp_path, keys_dir, '[ingest]\nformats = {"envoy.jsonl" = "envoy"}\n')
    src = envoy_file(tmp_path / "envoy.jsonl", minter.mint({"sub": "alice", "exp": T0 + 3600, "iat": T0}))
    assert main(["--config", str(cfg), "replay", str(src)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["events"] == 0 and summary["dead_letter_codes"] == {"schema": 22, "not_json": 1}


def test_replay_jobs_read_the_format_too(tmp_path: Path, keys_dir: Path, minter: Any) -> None:
    from gatewatch.replay_jobs import replay_jobs

    settings = load_settings(write_config(tmp_path, keys_dir), environ={})
    src = envoy_file(tmp_path / "envoy.jsonl", minter.mint({"sub": "alice", "exp": T0 + 3600, "iat": T0}))
    two = replay_jobs(settings, [str(src)], 2, log_format="envoy")
    pipeline = Pipeline.from_settings(settings, TokenValidator.from_config(settings.tokens, settings.keys,
                                                                           settings.limits))
    use_format(pipeline, settings.ingest, "envoy")
    one = replay(pipeline, read_jsonl([str(src)]))
    assert two.events == one.events == 21 and dict(two.dead_letter_codes) == dict(one.dead_letter_codes)
    assert sorted(two.alerts) == sorted(one.alerts) and len(one.alerts) == 1


def test_ingest_settings_adapter_names() -> None:
    ingest = IngestSettings()
    assert ingest.adapter("gatewatch") is None and ingest.adapter("envoy") is not None
