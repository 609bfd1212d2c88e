"""Where settings come from (gatewatch/settings.py): defaults < TOML file < `GATEWATCH_<SECTION>__<KEY>`, env values
parsed as TOML else taken as strings and merged into the file's sections, relative paths resolved against the config
file's directory whichever source they came from."""

from __future__ import annotations

import os
import threading
import tomllib
from pathlib import Path

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from gatewatch.settings import KafkaSettings, Settings, load_settings
from ingest.errors import ConfigError


def config(tmp_path: Path, text: str) -> Path:
    cfg = tmp_path / "conf" / "gatewatch.toml"
    cfg.parent.mkdir(exist_ok=True)
    cfg.write_text(text, encoding="utf-8")
    return cfg


def toml_string(s: str) -> str:
    """`s` as a TOML basic string."""
    out = []
    for c in s:
        if c in '"\\':
            out.append("\\" + c)
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def test_an_env_key_merges_into_the_files_section(tmp_path: Path) -> None:
    cfg = config(tmp_path, '[kafka]\ngroup_id = "from-file"\nbootstrap_servers = "broker:9092"\n')
    s = load_settings(cfg, environ={"GATEWATCH_KAFKA__GROUP_ID": "from-env"})
    assert s.kafka.group_id == "from-env"
    assert s.kafka.bootstrap_servers == "broker:9092"  # the file's other key of that section stays
    assert s.kafka.access_topic == "gateway.access"  # and the defaults under both


def test_an_env_inline_table_sets_a_detector_section(tmp_path: Path) -> None:
    s = load_settings(environ={"GATEWATCH_DETECTORS__TOKEN_INVALID": "{threshold = 5, enabled = false}",
                               "GATEWATCH_DETECTORS__TRAFFIC_RATE_LIMIT": '{route_limits = {"llm-gateway" = {subject = 120}}}'})
    assert s.detectors.token_invalid.threshold == 5 and not s.detectors.token_invalid.enabled
    assert s.detectors.token_invalid.window_seconds == 60  # a key the table does not name keeps its default
    assert s.detectors.traffic_rate_limit.route_limits["llm-gateway"].subject == 120
    assert s.detectors.replay_nonce.enabled  # other detector sections untouched

    cfg = config(tmp_path, "[detectors.token_invalid]\nthreshold = 7\nwindow_seconds = 9\n")
    merged = load_settings(cfg, environ={"GATEWATCH_DETECTORS__TOKEN_INVALID": "{threshold = 5}"}).detectors.token_invalid
    assert (merged.threshold, merged.window_seconds) == (5, 9)  # merged into the file's table, key by key


def test_a_bad_key_in_an_env_inline_table_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^unknown config key 'detectors\.token_invalid\.treshold'$"):
        load_settings(environ={"GATEWATCH_DETECTORS__TOKEN_INVALID": "{treshold = 5}"})
    with pytest.raises(ConfigError, match=r"^bad value for config key 'detectors\.token_invalid\.threshold': "):
        load_settings(environ={"GATEWATCH_DETECTORS__TOKEN_INVALID": "{threshold = 1}"})


def test_a_relative_env_path_is_relative_to_the_config_file(tmp_path: Path) -> None:
    cfg = config(tmp_path, '[keys]\nissuer_jwks = "file/issuer.json"\n')
    s = load_settings(cfg, environ={"GATEWATCH_KEYS__DECRYPTION_JWKS": "env/dec.json",
                                    "GATEWATCH_MODEL__PATH": "/abs/model",
                                    "GATEWATCH_STORE__URL": "sqlite:///db/g.db"})
    assert s.keys.decryption_jwks == cfg.parent / "env/dec.json"
    assert s.keys.issuer_jwks == cfg.parent / "file/issuer.json"
    assert s.model.path == Path("/abs/model")  # absolute stays
    assert s.store.url == f"sqlite:///{cfg.parent}/db/g.db" and s.store_path == cfg.parent / "db/g.db"
    assert s.base_dir == cfg.parent


def test_defaults_are_relative_to_the_config_file(tmp_path: Path) -> None:
    cfg = config(tmp_path, "")
    s = load_settings(cfg, environ={})
    d = Settings()
    assert s.base_dir == cfg.parent
    for section, key in [("keys", "decryption_jwks"), ("keys", "issuer_jwks"), ("model", "path"),
                         ("api", "jwks"), ("api", "api_keys")]:
        assert getattr(getattr(s, section), key) == cfg.parent / getattr(getattr(d, section), key)
    assert s.store_path == cfg.parent / "gatewatch.db"


def test_without_a_file_paths_are_relative_to_the_working_directory(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    s = load_settings(environ={"GATEWATCH_API__JWKS": "j.json", "GATEWATCH_STORE__URL": "sqlite:///:memory:"})
    assert s.base_dir == tmp_path
    assert s.api.jwks == tmp_path / "j.json" and s.model.path == tmp_path / "model"
    assert s.store.url == "sqlite:///:memory:"  # not a file


@pytest.mark.parametrize(("raw", "value"), [
    ('"quoted"', "quoted"),  # a TOML string: quotes removed
    ("'literal'", "literal"),
    ("bare words", "bare words"),  # not TOML: the string as given
    ("127.0.0.1:9092", "127.0.0.1:9092"),
    ('"5"', "5"),
    ("", ""),
])
def test_env_string_values_are_toml_else_bare(raw: str, value: str) -> None:
    assert load_settings(environ={"GATEWATCH_KAFKA__GROUP_ID": raw}).kafka.group_id == value


@pytest.mark.parametrize(("name", "raw", "attr", "value"), [
    ("GATEWATCH_TOKENS__LEEWAY_SECONDS", "1_000", "leeway_seconds", 1000),
    ("GATEWATCH_TOKENS__ALLOW_ZIP", "true", "allow_zip", True),
    ("GATEWATCH_TOKENS__ISSUERS", "['https://a', \"https://b\"]", "issuers", ["https://a", "https://b"]),
    ("GATEWATCH_Tokens__Leeway_Seconds", "7", "leeway_seconds", 7),  # section and key names are lowercased
])
def test_env_values_parse_as_toml(name: str, raw: str, attr: str, value: object) -> None:
    assert getattr(load_settings(environ={name: raw}).tokens, attr) == value


def test_a_toml_number_is_not_a_string() -> None:
    with pytest.raises(ConfigError, match=r"^bad value for config key 'kafka\.group_id': "):
        load_settings(environ={"GATEWATCH_KAFKA__GROUP_ID": "5"})  # as in the file: quote it


@pytest.mark.parametrize(("environ", "text", "message"), [
    ({"GATEWATCH_NOSUCH__A": "1"}, "", "unknown config key 'nosuch'"),
    ({"GATEWATCH_KAFKA__BOGUS": "1"}, "", "unknown config key 'kafka.bogus'"),
    ({"GATEWATCH_BASE_DIR__X": "/x"}, "", "unknown config key 'base_dir'"),
    ({}, 'base_dir = "/x"\n', "unknown config key 'base_dir'"),
    ({}, '[KAFKA]\ngroup_id = "x"\n', "unknown config key 'KAFKA'"),  # the file's names are exact
])
def test_unknown_keys_from_either_source(tmp_path: Path, environ: dict[str, str], text: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(config(tmp_path, text), environ=environ)
    assert str(err.value) == message


def test_variables_that_are_no_settings_are_ignored(tmp_path: Path) -> None:
    s = load_settings(config(tmp_path, ""), environ={
        "GATEWATCH_KAFKA": '{group_id = "x"}',  # a whole section needs its key: no "__"
        "GATEWATCH_BASE_DIR": "/elsewhere", "gatewatch_kafka__group_id": "lower-case prefix", "OTHER__X": "1"})
    assert s.kafka.group_id == "gatewatch" and s.base_dir == tmp_path / "conf"


def test_gatewatch_config_names_the_file_and_is_no_setting(tmp_path: Path) -> None:
    cfg = config(tmp_path, '[kafka]\ngroup_id = "named"\n')
    assert load_settings(environ={"GATEWATCH_CONFIG": str(cfg)}).kafka.group_id == "named"
    with pytest.raises(ConfigError, match="not found"):
        load_settings(environ={"GATEWATCH_CONFIG": str(tmp_path / "nope.toml")})


def test_a_config_read_from_a_pipe(tmp_path: Path) -> None:
    """`--config <(envsubst < gatewatch.toml.in)`: not a regular file, read all the same."""
    fifo = tmp_path / "cfg.toml"
    os.mkfifo(fifo)

    def write() -> None:
        with open(fifo, "w", encoding="utf-8") as f:
            f.write('[kafka]\ngroup_id = "piped"\n')

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    try:
        s = load_settings(fifo, environ={})
    finally:
        os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))  # a writer still waiting for a reader gets one
        writer.join(5)
    assert s.kafka.group_id == "piped" and s.base_dir == tmp_path


def test_settings_alone_reads_neither_file_nor_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "gatewatch.toml").write_text('[kafka]\ngroup_id = "file"\n', encoding="utf-8")
    monkeypatch.setenv("GATEWATCH_KAFKA__GROUP_ID", "env")
    assert Settings().kafka.group_id == "gatewatch"
    assert Settings(kafka=KafkaSettings(group_id="kw")).kafka.group_id == "kw"
    assert Settings().keys.decryption_jwks == Path("keys/decryption.jwks.json")  # resolved by load_settings only
    assert load_settings().kafka.group_id == "env"  # os.environ and ./gatewatch.toml when not injected


@given(st.text())
def test_any_string_round_trips_quoted(s: str) -> None:
    assert load_settings(environ={"GATEWATCH_KAFKA__GROUP_ID": toml_string(s)}).kafka.group_id == s


@given(st.lists(st.text(), max_size=4))
def test_any_list_of_strings_round_trips(items: list[str]) -> None:
    raw = "[" + ", ".join(toml_string(i) for i in items) + "]"
    assert load_settings(environ={"GATEWATCH_TOKENS__ISSUERS": raw}).tokens.issuers == items


@given(st.text())
def test_a_string_that_is_no_toml_value_is_taken_as_is(s: str) -> None:
    try:
        tomllib.loads(f"v = {s}")
        assume(False)
    except tomllib.TOMLDecodeError:
        pass
    assert load_settings(environ={"GATEWATCH_KAFKA__GROUP_ID": s}).kafka.group_id == s
