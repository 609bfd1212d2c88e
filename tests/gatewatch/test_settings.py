from pathlib import Path

import pytest

from gatewatch.settings import load_settings
from ingest.errors import ConfigError


def test_defaults_match_the_contract(tmp_path: Path) -> None:
    s = load_settings(environ={})
    assert s.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert s.kafka.group_id == "gatewatch"
    assert s.tokens.issuers == ["https://idp.example"]
    assert s.tokens.audiences == ["api://gateway"]
    assert s.tokens.leeway_seconds == 30 and s.tokens.nonce_window_seconds == 300
    assert s.api.bind == "127.0.0.1:8000" and s.api.audience == "gatewatch"
    assert s.detectors.replay_nonce.enabled
    assert "RSA-OAEP-256" in s.tokens.jwe_algorithms and "RSA1_5" not in s.tokens.jwe_algorithms


def test_relative_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    cfg = tmp_path / "conf" / "gatewatch.toml"
    cfg.parent.mkdir()
    cfg.write_text('[keys]\ndecryption_jwks = "k/dec.json"\n[store]\nurl = "sqlite:///db/g.db"\n')
    s = load_settings(cfg, environ={})
    assert s.keys.decryption_jwks == cfg.parent / "k/dec.json"
    assert s.keys.issuer_jwks == cfg.parent / "keys/issuer.jwks.json"  # a default, made relative too
    assert s.store_path == cfg.parent / "db/g.db"


def test_environment_overrides_file(tmp_path: Path) -> None:
    cfg = tmp_path / "g.toml"
    cfg.write_text('[kafka]\ngroup_id = "from-file"\n')
    s = load_settings(cfg, environ={"GATEWATCH_KAFKA__GROUP_ID": "from-env",
                                    "GATEWATCH_TOKENS__LEEWAY_SECONDS": "5"})
    assert s.kafka.group_id == "from-env"
    assert s.tokens.leeway_seconds == 5


@pytest.mark.parametrize("text, key", [
    ('[kafka]\nbootstrap = "x"\n', "kafka.bootstrap"),
    ('[nosuch]\na = 1\n', "nosuch"),
    ('[tokens]\nleeway_seconds = "soon"\n', "tokens.leeway_seconds"),
    ('[tokens]\nleeway_seconds = -1\n', "tokens.leeway_seconds"),
    ('[api]\nbind = "localhost"\n', "api.bind"),
    ('[detectors.replay_nonce]\nwindow = 3\n', "detectors.replay_nonce.window"),
])
def test_bad_config_names_the_key(tmp_path: Path, text: str, key: str) -> None:
    cfg = tmp_path / "g.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_settings(cfg, environ={})


def test_bad_env_value_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"kafka\.max_poll_records"):
        load_settings(environ={"GATEWATCH_KAFKA__MAX_POLL_RECORDS": "lots"})


def test_missing_explicit_config_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.toml", environ={})
    bad = tmp_path / "bad.toml"
    bad.write_text("[kafka\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(bad, environ={})


SUPPRESSION = """
[[scoring.suppressions]]
id = "pentest-2026q4"
type = "traffic.*"
entity = "ip:198.51.100.*"
owner = "secops@example"
expires = "2026-12-01T00:00:00Z"
reason = "the quarterly penetration test"
"""


def test_suppression_rules_are_read_from_the_config(tmp_path: Path) -> None:
    cfg = tmp_path / "gatewatch.toml"
    cfg.write_text(SUPPRESSION)
    rules = load_settings(cfg, environ={}).scoring.suppression_rules()
    assert len(rules) == 1
    rule = rules.rules[0]
    assert rule.owner == "secops@example" and rule.tenant == "*"
    assert rule.matches("traffic.rate_limit", "acme", "ip", "198.51.100.4", 1_795_000_000.0)
    assert not rule.matches("traffic.rate_limit", "acme", "ip", "198.51.100.4", 1_796_083_200.0)  # Dec 1st


@pytest.mark.parametrize(("edit", "key"), [
    (('expires = "2026-12-01T00:00:00Z"', 'expires = "next week"'), "scoring.suppressions.0.expires"),
    (('owner = "secops@example"\n', ""), "scoring.suppressions.0.owner"),
    (('reason = "the quarterly penetration test"', 'colour = "red"'), "scoring.suppressions.0.colour"),
    (("", SUPPRESSION), "scoring.suppressions"),  # the same id twice
])
def test_bad_suppression_rules_name_the_key(tmp_path: Path, edit: tuple[str, str], key: str) -> None:
    cfg = tmp_path / "gatewatch.toml"
    text = SUPPRESSION.replace(*edit) if edit[0] else SUPPRESSION + edit[1]
    cfg.write_text(text)
    with pytest.raises(ConfigError, match=f"'{key}"):
        load_settings(cfg, environ={})


def test_risk_weights_are_configured_per_alert_type(tmp_path: Path) -> None:
    from gatewatch.pipeline import Pipeline
    from scoring.risk import WEIGHTS

    cfg = tmp_path / "g.toml"
    cfg.write_text('[scoring]\nweights = {"token.unencrypted" = 0.0, "replay.nonce" = 0.95}\n')
    s = load_settings(cfg, environ={})
    weights = Pipeline.from_settings(s, None).risk.weights
    assert weights["token.unencrypted"] == 0.0 and weights["replay.nonce"] == 0.95
    assert weights["token.cross_tenant"] == WEIGHTS["token.cross_tenant"]  # unnamed types keep the default


@pytest.mark.parametrize("text", ['weights = {"replay.nonse" = 0.5}', 'weights = {"replay.nonce" = 1.5}'])
def test_bad_risk_weights_name_the_key(tmp_path: Path, text: str) -> None:
    cfg = tmp_path / "g.toml"
    cfg.write_text(f"[scoring]\n{text}\n")
    with pytest.raises(ConfigError, match="scoring.weights"):
        load_settings(cfg, environ={})
