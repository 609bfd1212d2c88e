"""docker-compose.yml is a real deployment that matches the code (no Docker engine needed here).

The compose file is parsed with PyYAML and its `${VAR}` interpolation is applied the way Compose does it;
every `gatewatch` command is parsed by the real CLI parser, every GATEWATCH_<SECTION>__<KEY> variable must
name a real setting, and the committed config loads with the environment the containers get.
"""

from __future__ import annotations

import argparse
import re
import shlex
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from gatewatch.cli import build_parser
from gatewatch.settings import KafkaSettings, Settings, load_settings
from gatewatch.topics import topic_specs
from ingest.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
COMPOSE_DIR = ROOT / "deploy" / "compose"

# Compose's interpolation grammar: $$ escapes; $VAR; ${VAR}; ${VAR:-d} ${VAR-d}; ${VAR:?m} ${VAR?m}; ${VAR:+r}.
_VAR = re.compile(r"\$(?:(?P<escaped>\$)|(?P<named>[_A-Za-z][_A-Za-z0-9]*)"
                  r"|\{(?P<braced>[_A-Za-z][_A-Za-z0-9]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}|(?P<invalid>))")
_SECRET_NAME = re.compile(r"SECRET|PASSW|TOKEN|CREDENTIAL|PRIVATE|API_?KEY|(^|_)KEYS?($|_)|JWK", re.I)


def _uses(text: str) -> list[tuple[str, str | None, str | None]]:
    """Every variable reference in `text`: (name, operator, argument)."""
    out = []
    for m in _VAR.finditer(text):
        assert m.group("invalid") is None, f"invalid interpolation in {text[:80]!r}... (a lone '$': write '$$')"
        if m.group("escaped"):
            continue
        out.append((m.group("named") or m.group("braced"), m.group("op"), m.group("arg")))
    return out


def _interpolate(value: Any, env: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {k: _interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match[str]) -> str:
        if m.group("escaped"):
            return "$"
        name = m.group("named") or m.group("braced")
        op, arg = m.group("op"), m.group("arg") or ""
        val = env.get(name)
        if op in (":-", "-"):
            return arg if (val is None or (op == ":-" and val == "")) else val
        if op in (":?", "?"):
            if val is None or (op == ":?" and val == ""):
                raise LookupError(f"required variable {name}: {arg}")
            return val
        if op in (":+", "+"):
            return arg if val else ""
        return val or ""

    return _VAR.sub(sub, value)


def _raw() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def _strings(value: Any) -> list[str]:
    """Every string value of the parsed file (what Compose interpolates; comments are gone)."""
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return [value] if isinstance(value, str) else []


def _required_vars(raw: dict[str, Any]) -> set[str]:
    return {name for text in _strings(raw) for name, op, _ in _uses(text) if op in (":?", "?")}


def _doc(env: dict[str, str] | None = None) -> dict[str, Any]:
    """The compose file as Compose sees it with `env` (required variables get a placeholder)."""
    raw = _raw()
    base = {name: "placeholder" for name in _required_vars(raw)}
    return _interpolate(raw, {**base, **(env or {})})


def _env(svc: dict[str, Any]) -> dict[str, str]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def _gatewatch_services(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Services whose command runs gatewatch (exec form; a shell-form string is split like Compose does)."""
    out = {}
    for name, svc in doc["services"].items():
        cmd = svc.get("command")
        argv = shlex.split(cmd) if isinstance(cmd, str) else list(cmd or [])
        if argv and Path(argv[0]).name == "gatewatch":  # `gatewatch` or `/usr/local/bin/gatewatch`
            out[name] = {**svc, "command": argv}
    return out


def _subcommands(parser: argparse.ArgumentParser) -> set[str]:
    return {name for a in parser._actions if isinstance(a, argparse._SubParsersAction) for name in a.choices}


def _mounts(svc: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Container path -> (source, mode) of a service's short-syntax volumes."""
    out = {}
    for v in svc.get("volumes", []):
        parts = v.split(":")
        out[parts[1]] = (parts[0], parts[2] if len(parts) > 2 else "rw")
    return out


# -- the services ---------------------------------------------------------------------------------
def test_services_exist_and_interpolation_is_valid() -> None:
    raw = _raw()
    assert {"kafka", "worker", "api"} <= set(raw["services"])
    _doc()  # every ${...} is well-formed and resolvable with the defaults


def test_kafka_is_a_single_kraft_node_with_a_real_healthcheck() -> None:
    kafka = _doc()["services"]["kafka"]
    assert re.fullmatch(r"apache/kafka:4\.\d+\.\d+", kafka["image"])
    env = _env(kafka)
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_NODE_ID"] == "1"
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].startswith("1@")
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] in env["KAFKA_LISTENERS"]
    assert "KAFKA_ZOOKEEPER_CONNECT" not in env
    assert env["CLUSTER_ID"]  # stable across restarts: the data volume is formatted with it
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"  # one broker
    # Other services reach it by service name.
    assert "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    # Its data is on the named volume.
    mounts = _mounts(kafka)
    assert mounts[env["KAFKA_LOG_DIRS"]][0] == "kafka-data"
    # The healthcheck asks the broker itself (an API request), not just whether a port is open.
    hc = kafka["healthcheck"]
    test = " ".join(hc["test"]) if isinstance(hc["test"], list) else hc["test"]
    assert re.search(r"kafka-(broker-api-versions|topics)\.sh .*--bootstrap-server localhost:9092", test)
    # Anything it publishes is on loopback only (plaintext, no authentication).
    for port in kafka.get("ports", []):
        assert port.startswith("127.0.0.1:"), port


def test_topics_are_created_as_the_worker_expects() -> None:
    doc = _doc()
    topics = doc["services"]["topics"]
    assert topics["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert topics["image"] == doc["services"]["kafka"]["image"]
    script = "\n".join(topics["command"]) if isinstance(topics["command"], list) else topics["command"]
    created = {m.group(1): (m.group(2), m.group(3).strip())
               for m in re.finditer(r"^\s*create (\S+) (\S+)(.*)$", script, re.M)}
    env = _env(topics)
    partitions = int(env["PARTITIONS"])
    event_partitions = int(env["EVENT_PARTITIONS"])
    workers = int(env["WORKERS"])
    raw = _raw()["services"]
    assert str(raw["topics"]["environment"]["WORKERS"]) == str(raw["worker"]["deploy"]["replicas"])
    assert event_partitions >= workers, "by default every keyed worker gets event partitions"
    specs = topic_specs(KafkaSettings(event_partitions=event_partitions), input_partitions=partitions)
    assert set(created) == {t.name for t in specs}
    for spec in specs:
        parts, extra = created[spec.name]
        count = parts.replace('"$PARTITIONS"', str(partitions)).replace('"$EVENT_PARTITIONS"', str(event_partitions))
        assert int(count) == spec.num_partitions, spec.name
        configs = dict(re.findall(r"--config (\S+?)=(\S+)", extra))
        assert configs == (spec.topic_configs or {}), spec.name
    # Both input topics get the same count: range assignment gives partition i of both to one worker.
    assert created["gateway.access"][0] == created["gateway.tokens"][0] == '"$PARTITIONS"'
    assert "--if-not-exists" in script


def test_workers_scale_out_in_one_consumer_group() -> None:
    raw_worker = _raw()["services"]["worker"]
    replicas = str(raw_worker["deploy"]["replicas"])
    uses = _uses(replicas)
    assert len(uses) == 1 and uses[0][1] == ":-", "replicas come from an env var with a default"
    assert int(uses[0][2]) >= 2
    assert int(_doc({uses[0][0]: "5"})["services"]["worker"]["deploy"]["replicas"]) == 5
    worker = _doc()["services"]["worker"]
    assert worker["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert worker["depends_on"]["topics"]["condition"] == "service_completed_successfully"
    assert "container_name" not in worker  # replicas need distinct names
    assert not worker.get("ports")  # nor can they share a host port


def test_api_is_on_loopback_by_default_and_checks_healthz() -> None:
    api = _doc()["services"]["api"]
    assert api["depends_on"]["kafka"]["condition"] == "service_healthy"
    bind = api["command"][api["command"].index("--bind") + 1]
    host, _, port = bind.rpartition(":")
    assert host == "0.0.0.0"  # inside the container; the published port decides who reaches it
    published = api["ports"]
    assert published, "the API port is published"
    for p in published:
        host_ip, _, rest = p.partition(":")
        assert host_ip == "127.0.0.1", p
        assert rest.rsplit(":", 1)[1] == port
    hc = " ".join(api["healthcheck"]["test"])
    assert f"http://127.0.0.1:{port}/healthz" in hc


# -- commands match the CLI -----------------------------------------------------------------------
def test_every_gatewatch_command_is_accepted_by_the_cli() -> None:
    doc = _doc()
    services = _gatewatch_services(doc)
    assert {"worker", "api"} <= set(services)
    parser = build_parser()
    names = _subcommands(parser)
    for name, svc in services.items():
        argv = svc["command"][1:]
        try:
            args = parser.parse_args(argv)
        except (SystemExit, ConfigError) as exc:  # pragma: no cover - the failure message is the point
            pytest.fail(f"{name}: `gatewatch {' '.join(argv)}` refused by the CLI: {exc}")
        assert args.command in names
    assert services["worker"]["command"][1] == "run"  # (command[0] may be a path to the script)
    assert services["api"]["command"][1] == "serve"


def test_gatewatch_services_share_config_store_and_image() -> None:
    doc = _doc()
    services = _gatewatch_services(doc)
    for name, svc in services.items():
        assert (ROOT / svc["build"]["context"] / svc["build"]["dockerfile"]).is_file(), name
        env = _env(svc)
        assert env["GATEWATCH_KAFKA__BOOTSTRAP_SERVERS"] == "kafka:9092", name
        mounts = _mounts(svc)
        # Config and keys: read-only from the operator's directory (by default deploy/compose/).
        cfg = Path(env["GATEWATCH_CONFIG"])
        src, mode = mounts[str(cfg.parent)]
        assert mode == "ro", name
        assert (ROOT / src).resolve() == COMPOSE_DIR.resolve(), name
        assert (COMPOSE_DIR / cfg.name).is_file()
        # The store: on a named volume; the workers share one, the API (following Kafka) has its own.
        store = Path(env["GATEWATCH_STORE__URL"].removeprefix("sqlite:///"))
        assert store.is_absolute()
        follows = env.get("GATEWATCH_API__FOLLOW_KAFKA") == "true"
        assert follows == (name == "api"), name
        assert mounts[str(store.parent)] == ("api-store" if follows else "store", "rw"), name
        # Not root, whatever the defaults.
        uid = str(svc.get("user", "")).split(":")[0]
        assert uid and uid not in ("0", "root"), name
    assert len({svc["image"] for svc in services.values()}) == 1


# -- settings variables name real settings --------------------------------------------------------
def test_settings_variables_name_real_settings() -> None:
    raw = _raw()
    seen = 0
    for name, svc in raw["services"].items():
        for var in _env(svc):
            if not var.startswith("GATEWATCH_"):
                continue
            if "__" not in var:
                assert var == "GATEWATCH_CONFIG", f"{name}: {var} is not read by gatewatch"
                continue
            section, key = var[len("GATEWATCH_"):].lower().split("__", 1)
            assert section in Settings.model_fields and section != "base_dir", f"{name}: {var}: no [{section}]"
            section_model = Settings.model_fields[section].annotation
            assert key in section_model.model_fields, f"{name}: {var}: no {section}.{key}"
            seen += 1
    assert seen >= 4


def test_committed_config_loads_with_the_container_environment(tmp_path: Path, keys_dir: Path) -> None:
    """deploy/compose/gatewatch.toml + `gatewatch keys generate` output = working worker and API wiring."""
    from api.auth import Authenticator
    from ingest.tokens import TokenValidator

    conf = tmp_path / "etc"
    conf.mkdir()
    shutil.copy(COMPOSE_DIR / "gatewatch.toml", conf / "gatewatch.toml")
    shutil.copytree(keys_dir, conf / "keys")
    for name, svc in _gatewatch_services(_doc()).items():
        env = {k: v for k, v in _env(svc).items() if k != "GATEWATCH_CONFIG"}
        settings = load_settings(conf / "gatewatch.toml", environ=env)
        assert settings.kafka.bootstrap_servers == "kafka:9092"
        assert settings.store.url == env["GATEWATCH_STORE__URL"]
        for path in (settings.keys.decryption_jwks, settings.keys.issuer_jwks, settings.api.jwks,
                     settings.api.api_keys, settings.model.path):
            assert path.is_relative_to(conf), f"{name}: {path} is outside the mounted config directory"
        TokenValidator.from_config(settings.tokens, settings.keys, settings.limits)
        assert Authenticator.from_config(settings.api).api_keys


# -- no default secrets ---------------------------------------------------------------------------
_KEY_MATERIAL = [
    re.compile(r"-----BEGIN [A-Z ]*(PRIVATE KEY|CERTIFICATE)-----"),
    re.compile(r'"(d|p|q|dp|dq|qi|k)"\s*:\s*"[A-Za-z0-9_-]{16,}'),  # private JWK members
    re.compile(r"\bgw_[A-Za-z0-9_-]{20,}"),  # an API key as `gatewatch keys generate` makes them
    re.compile(r"sha256:[0-9a-f]{64}"),  # an API key hash
    re.compile(r"(?i)(password|passwd|secret|api_?key|token)\s*[:=]\s*['\"]?[A-Za-z0-9+/_-]{8,}"),
]


@pytest.mark.parametrize("path", [COMPOSE, DOCKERFILE, COMPOSE_DIR / "gatewatch.toml"],
                         ids=lambda p: p.name)
def test_no_literal_key_material(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    for pattern in _KEY_MATERIAL:
        assert not pattern.search(text), f"{path.name}: {pattern.pattern}"


def test_secret_variables_are_required_not_defaulted() -> None:
    raw = _raw()
    for name, op, _ in (use for text in _strings(raw) for use in _uses(text)):
        if _SECRET_NAME.search(name):
            assert op in (":?", "?"), f"${{{name}}} must be ${{{name}:?message}}: no default secrets"
    # Variables the containers get whose names look secret hold a required variable or a mounted path.
    for svc_name, svc in raw["services"].items():
        for var, value in _env(svc).items():
            if var.startswith("KAFKA_") or not _SECRET_NAME.search(var):
                continue
            uses = _uses(value)
            ok = (uses and all(op in (":?", "?") for _, op, _ in uses)) or value.startswith("/")
            assert ok, f"{svc_name}: {var} has a literal value"
    assert "secrets" not in raw or all("file" in s or "environment" in s for s in raw["secrets"].values())


# -- volumes ---------------------------------------------------------------------------------------
def test_named_volumes_are_declared() -> None:
    doc = _doc()
    declared = set(doc.get("volumes") or {})
    assert {"kafka-data", "store", "api-store"} <= declared
    for name, svc in doc["services"].items():
        for source, _ in _mounts(svc).values():
            if not source.startswith((".", "/", "~")):
                assert source in declared, f"{name}: volume {source} is not declared"


# -- the image -------------------------------------------------------------------------------------
def test_dockerfile_installs_the_package_and_does_not_run_as_root() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    lines = [ln.strip() for ln in re.sub(r"\\\n", " ", text).splitlines()
             if ln.strip() and not ln.strip().startswith("#")]
    froms = [ln.split()[1] for ln in lines if ln.upper().startswith("FROM ")]
    assert froms and all(f.startswith("python:3.11-slim") for f in froms)
    assert any(re.search(r"pip (install|wheel)\b.*\s\.(\s|$)", ln) for ln in lines)
    final = lines[max(i for i, ln in enumerate(lines) if ln.upper().startswith("FROM ")):]
    users = [ln.split()[1] for ln in final if ln.upper().startswith("USER ")]
    assert users, "the image must set a USER"
    assert users[-1].split(":")[0] not in ("0", "root")
    # Nothing secret at build time: no build args or env named like secrets, no key files copied in.
    for ln in lines:
        word = ln.split()[0].upper()
        if word in ("ARG", "ENV"):
            names = re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=", ln) or [ln.split()[1]]
            assert not any(_SECRET_NAME.search(n) for n in names), ln
        if word in ("COPY", "ADD"):
            assert not re.search(r"keys|\.json|deploy/compose|demo|\s\.\s", ln), ln


def test_compose_dir_commits_no_key_material() -> None:
    """Only README.md and gatewatch.toml in deploy/compose/ are tracked; keys are the operator's."""
    gitignore = (ROOT / ".gitignore").read_text(encoding="utf-8").splitlines()
    assert "/deploy/compose/*" in gitignore
    allowed = {ln.removeprefix("!/deploy/compose/") for ln in gitignore if ln.startswith("!/deploy/compose/")}
    assert allowed <= {"README.md", "gatewatch.toml"}
