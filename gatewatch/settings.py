"""One typed settings object (CONTRACT.md §3), built by `load_settings` and passed down.

`Settings` is a pydantic-settings `BaseSettings` whose sources `load_settings` gives it, later wins:
defaults < TOML file (`TomlFileSource`) < environment (`EnvTomlSource`: `GATEWATCH_<SECTION>__<KEY>`, a value
parsed as TOML, else taken as the string, merged into the file's section). `Settings()` alone is the defaults:
nothing reads the file or the environment at import time or on its own.
Relative paths, from the file, the environment or the defaults alike, are resolved against the config file's
directory (`base_dir`) in one place, `_resolve_paths`. An unknown key or a bad value raises `ConfigError`
naming the key; the CLI turns that into exit code 2.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, InitSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.sources import DefaultSettingsSource

from gatewatch.detector_settings import DetectorsSettings
from gatewatch.detector_settings import Section as _Section
from gatewatch.ingest_settings import IngestSettings
from ingest.decode import parse_ts
from ingest.errors import ConfigError, DecodeError
from scoring.risk import WEIGHTS
from scoring.suppression import SuppressionRule, Suppressions


class KafkaSettings(_Section):
    bootstrap_servers: str = "127.0.0.1:9092"
    group_id: str = "gatewatch"
    access_topic: str = "gateway.access"
    tokens_topic: str = "gateway.tokens"
    alerts_topic: str = "gatewatch.alerts"
    risk_topic: str = "gatewatch.risk"
    dlq_topic: str = "gatewatch.dlq"
    # Analysts' triage changes, applied by every API replica that follows the cluster ([api] follow_kafka).
    triage_topic: str = "gatewatch.triage"
    # Normalised events re-keyed for the detectors (ingest/routing.py): by principal, and by side key.
    # `gatewatch run` as a keyed worker (ingest stage + detect stage on the re-keyed streams), which
    # several processes can share; false: one process routes in memory (true is what `run --keyed` does).
    repartition: bool = False
    events_topic: str = "gatewatch.events"
    keyed_topic: str = "gatewatch.events.by_key"
    event_partitions: int = Field(6, ge=1, le=10_000)  # of both: at most this many workers detect in parallel
    # After gaining a partition, a worker re-reads this much event time before its committed offset to
    # rebuild the partition's detector state (replay memory, rates, behaviour windows) without re-alerting.
    warmup_seconds: int = Field(3600, ge=0, le=30 * 86_400)
    max_poll_records: int = Field(500, ge=1, le=100_000)
    # Event-time alignment holds records of a partition that is ahead of the others; at this many it is
    # paused until half are released (bounded memory when partitions are skewed). For the detect loop of
    # keyed workers, event entries of the re-keyed frames.
    max_buffered_per_partition: int = Field(10_000, ge=1, le=10_000_000)
    poll_timeout_ms: int = Field(500, ge=10, le=60_000)


class KeysSettings(_Section):
    decryption_jwks: Path = Path("keys/decryption.jwks.json")
    issuer_jwks: Path = Path("keys/issuer.jwks.json")
    # How often (wall-clock seconds) the JWKS files are checked for changes: rotation without restart.
    reload_seconds: float = Field(5.0, ge=0)


DEFAULT_JWE_ALGS = (
    "dir", "A128KW", "A256KW", "A128GCMKW", "A256GCMKW", "RSA-OAEP", "RSA-OAEP-256",
    "ECDH-ES", "ECDH-ES+A128KW", "ECDH-ES+A256KW",
)
DEFAULT_JWE_ENCS = ("A128GCM", "A256GCM", "A128CBC-HS256", "A256CBC-HS512")
DEFAULT_JWS_ALGS = ("RS256", "PS256", "ES256", "EdDSA", "HS256")


class TokensSettings(_Section):
    issuers: list[str] = ["https://idp.example"]
    audiences: list[str] = ["api://gateway"]
    leeway_seconds: int = Field(30, ge=0, le=3600)
    nonce_window_seconds: int = Field(300, ge=1, le=86_400)
    max_lifetime_seconds: int = Field(86_400, ge=60)
    typ: list[str] = ["at+jwt", "JWT", "application/at+jwt"]
    jwe_algorithms: list[str] = list(DEFAULT_JWE_ALGS)
    jwe_encryptions: list[str] = list(DEFAULT_JWE_ENCS)
    jws_algorithms: list[str] = list(DEFAULT_JWS_ALGS)
    # RSA1_5 and PBES2-* stay refused even when listed above unless also named here.
    insecure_algorithms: list[str] = []
    allow_zip: bool = False
    cache_size: int = Field(100_000, ge=0)


class StoreSettings(_Section):
    url: str = "sqlite:///gatewatch.db"

    @field_validator("url")
    @classmethod
    def _sqlite_only(cls, v: str) -> str:
        if not v.startswith("sqlite:///"):
            raise ValueError("only sqlite:///PATH is supported")
        return v


class ModelSettings(_Section):
    path: Path = Path("model")
    # How `gatewatch train` builds the behaviour model; stored in its manifest, and `run`/`replay` compute
    # features the way the loaded model was trained (these keys then do not apply to them).
    window_seconds: int = Field(60, ge=10, le=3600)  # tumbling window per entity; must divide an hour
    rolling_windows: int = Field(15, ge=1, le=1440)  # the rolling request count spans this many windows
    min_requests: int = Field(20, ge=1)  # windows with fewer requests in the rolling span: not trained, never alert
    n_estimators: int = Field(200, ge=10, le=5000)
    max_samples: int = Field(2048, ge=64)  # windows per tree (capped at the windows of a kind)
    seed: int = Field(0, ge=0)

    @field_validator("window_seconds")
    @classmethod
    def _divides_an_hour(cls, v: int) -> int:
        if 3600 % v:
            raise ValueError("must divide 3600 (windows never straddle an hour)")
        return v


class LimitsSettings(_Section):
    max_event_bytes: int = Field(65_536, ge=256, le=16 * 1024 * 1024)
    max_token_bytes: int = Field(16_384, ge=256, le=1024 * 1024)


class SuppressionSettings(_Section):
    """One `[[scoring.suppressions]]` rule (scoring/suppression.py): matching alerts are stored, not open."""

    id: str = Field(min_length=1, max_length=200)
    type: str = Field(min_length=1, max_length=200)  # alert type or glob, e.g. "traffic.*"
    entity: str = Field(min_length=1, max_length=1000)  # "kind:glob" (e.g. "ip:10.20.*") or a glob on the value
    tenant: str = Field("*", min_length=1, max_length=200)
    owner: str = Field(min_length=1, max_length=200)  # who answers for the mute
    expires: str  # RFC 3339 with a zone; compared with event time. Every mute ends.
    reason: str = Field("", max_length=1000)

    @field_validator("expires")
    @classmethod
    def _rfc3339(cls, v: str) -> str:
        try:
            parse_ts(v)
        except DecodeError:
            raise ValueError("expected an RFC 3339 time with a zone, e.g. 2026-12-31T00:00:00Z") from None
        return v

    @model_validator(mode="after")
    def _meaningful(self) -> SuppressionSettings:
        self.rule()  # ValueError("entity: ...") names the field
        return self

    def rule(self) -> SuppressionRule:
        return SuppressionRule.checked(id=self.id, type=self.type, entity=self.entity, tenant=self.tenant,
                                       owner=self.owner, expires=parse_ts(self.expires), reason=self.reason)


class ScoringSettings(_Section):
    lateness_seconds: int = Field(30, ge=0, le=86_400)
    half_life_seconds: int = Field(1800, ge=1)
    step_up_at: float = Field(40.0, ge=0, le=100)
    deny_at: float = Field(75.0, ge=0, le=100)
    alert_group_seconds: int = Field(3600, ge=1)
    top_reasons: int = Field(5, ge=1, le=50)
    # anomaly.behaviour: a window alerts when the model finds it rarer than `anomaly_threshold` of its
    # training windows AND one feature lies `anomaly_min_excess` robust units beyond the training range.
    anomaly_threshold: float = Field(0.99, ge=0.5, le=1.0)
    anomaly_min_excess: float = Field(1.25, ge=0.0, le=100.0)
    anomaly_entity_ttl_seconds: int = Field(7 * 86_400, ge=3600)  # an idle entity's history is forgotten
    # Every this-many seconds of event time, entities whose risk has decayed get a fresh row in the risk table
    risk_refresh_seconds: int = Field(60, ge=1, le=86_400)
    suppressions: list[SuppressionSettings] = []
    # alert type -> weight in [0, 1] of its signals in the risk noisy-OR; unnamed types keep the defaults
    # (scoring.risk.WEIGHTS), e.g. weights = {"token.unencrypted" = 0.0} keeps it out of risk altogether
    weights: dict[str, float] = {}

    @field_validator("weights")
    @classmethod
    def _known_weights(cls, v: dict[str, float]) -> dict[str, float]:
        for alert_type, weight in v.items():
            if alert_type not in WEIGHTS:
                raise ValueError(f"unknown alert type {alert_type!r} (one of {', '.join(sorted(WEIGHTS))})")
            if not 0.0 <= weight <= 1.0:
                raise ValueError(f"weight of {alert_type} must be within [0, 1]")
        return v

    def risk_weights(self) -> dict[str, float]:
        return {**WEIGHTS, **self.weights}

    @field_validator("suppressions")
    @classmethod
    def _unique_ids(cls, v: list[SuppressionSettings]) -> list[SuppressionSettings]:
        ids = [s.id for s in v]
        if len(set(ids)) != len(ids):
            raise ValueError("two suppression rules share an id")
        return v

    def suppression_rules(self) -> Suppressions:
        return Suppressions(s.rule() for s in self.suppressions)


class ApiSettings(_Section):
    bind: str = "127.0.0.1:8000"
    issuers: list[str] = ["https://idp.example"]
    audience: str = "gatewatch"
    jwks: Path = Path("keys/api-issuer.jwks.json")
    api_keys: Path = Path("keys/api-keys.json")
    max_body_bytes: int = Field(65_536, ge=1024)
    # Several replicas serving one cluster: each materialises the alerts and risk topics into its own
    # store and triages through the triage topic (api/follow.py). False: the store the workers write.
    follow_kafka: bool = False
    triage_timeout_seconds: float = Field(10.0, gt=0, le=300)  # a PATCH waits this long to see its change applied
    # A connection that has not sent a complete request head this long after connecting (or after its
    # previous response, kept alive) is closed: slow or silent half-open clients cannot pile up (gatewatch/server.py).
    header_timeout_seconds: float = Field(10.0, gt=0, le=3600)
    # Open connections served at once; one more is answered 503 at once and closed.
    max_connections: int = Field(1000, ge=1, le=1_000_000)

    @field_validator("bind")
    @classmethod
    def _host_port(cls, v: str) -> str:
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("expected HOST:PORT")
        return v


class DecisionSettings(_Section):
    """`gatewatch decide`: the decision endpoint a gateway asks on every request (api/decision.py)."""

    bind: str = "127.0.0.1:8081"
    # What the endpoint answers when it cannot read the store: "open" allows (204), "closed" denies (403).
    # The gateway's own setting decides what happens when the endpoint does not answer at all
    # (deploy/nginx: `gatewatch nginx-config --fail-mode`).
    fail_mode: Literal["open", "closed"] = "open"
    # Peers whose X-Forwarded-For is believed (CIDRs): the client is the right-most address not in this list.
    # From any other peer, the client is the peer itself.
    trusted_proxies: list[str] = ["127.0.0.1/32", "::1/128"]
    # How stale the decision's view of the store may get (seconds): the cost of a fresh read per look-up.
    refresh_seconds: float = Field(0.2, ge=0.0, le=60.0)
    header_timeout_seconds: float = Field(5.0, gt=0, le=3600)
    max_connections: int = Field(1000, ge=1, le=1_000_000)
    # Send the decision's reason in X-Gatewatch-Reason (the gateway may pass it to the client).
    reason_header: bool = True

    @field_validator("bind")
    @classmethod
    def _host_port(cls, v: str) -> str:
        return ApiSettings._host_port(v)

    @field_validator("trusted_proxies")
    @classmethod
    def _cidrs(cls, v: list[str]) -> list[str]:
        for cidr in v:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ValueError(f"{cidr!r} is not an address or CIDR") from None
        return v


class Settings(BaseSettings):
    # Frozen and unknown keys refused, like every section. The file's table names are matched exactly
    # (case_sensitive); the environment's names are lowercased by EnvTomlSource, which reads prefix and delimiter here.
    model_config = SettingsConfigDict(extra="forbid", frozen=True, case_sensitive=True,
                                      env_prefix="GATEWATCH_", env_nested_delimiter="__")

    kafka: KafkaSettings = KafkaSettings()
    keys: KeysSettings = KeysSettings()
    tokens: TokensSettings = TokensSettings()
    store: StoreSettings = StoreSettings()
    model: ModelSettings = ModelSettings()
    limits: LimitsSettings = LimitsSettings()
    detectors: DetectorsSettings = DetectorsSettings()
    scoring: ScoringSettings = ScoringSettings()
    api: ApiSettings = ApiSettings()
    decision: DecisionSettings = DecisionSettings()
    ingest: IngestSettings = IngestSettings()
    base_dir: Path = Path(".")  # set by load_settings: the config file's directory (else the cwd), never by a person

    @property
    def store_path(self) -> Path:
        return Path(self.store.url.removeprefix("sqlite:///"))

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        """`Settings(...)` itself is the defaults and its keyword arguments, like a plain model; the file and the
        environment are read by `load_settings` only, which passes its own sources."""
        return (init_settings,)


class TomlFileSource(InitSettingsSource):
    """The config file's tables (`path` None: no file). What pydantic-settings' TomlConfigSettingsSource does, but
    any existing path is read (it skips what is not a regular file, so `--config <(...)`, a pipe, would be silently
    ignored), and a file that is not TOML is a ConfigError naming it."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path | None) -> None:
        data: dict[str, Any] = {}
        if path is not None:
            try:
                data = tomllib.loads(path.read_text(encoding="utf-8"))
            except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
                raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
        super().__init__(settings_cls, data)


class EnvTomlSource(PydanticBaseSettingsSource):
    """`GATEWATCH_<SECTION>__<KEY>` variables (prefix and delimiter: `Settings.model_config`) as {section: {key:
    value}}, names lowercased. A value is parsed as a TOML value (number, bool, list, quoted string, inline table
    for a nested section), else taken as the bare string. Every section named is returned, known or not: an unknown
    one is an unknown key, as in the file. A variable without the delimiter after the prefix is no setting.

    pydantic-settings' EnvSettingsSource does not fit: it JSON-decodes complex fields only (a scalar stays the raw
    string, quotes and all), silently skips a variable naming no field, also reads a whole section from
    `GATEWATCH_<SECTION>`, matches the prefix case-insensitively, and reads `os.environ` only."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        super().__init__(settings_cls)
        prefix, delimiter = self.config["env_prefix"], self.config["env_nested_delimiter"]
        assert delimiter, "Settings.model_config must name env_nested_delimiter"
        self.values: dict[str, dict[str, Any]] = {}
        for name, raw in environ.items():
            rest = name.removeprefix(prefix)
            if rest == name or delimiter not in rest:
                continue
            section, key = rest.lower().split(delimiter, 1)
            self.values.setdefault(section, {})[key] = _toml_value(raw)

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self.values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return self.values


def _toml_value(raw: str) -> Any:
    try:  # a TOML value (number, bool, list, quoted string, inline table); else the bare string
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _describe(err: ValidationError) -> str:
    first = err.errors()[0]
    key = ".".join(str(p) for p in first["loc"])
    if first["type"] == "extra_forbidden":
        return f"unknown config key '{key}'"
    return f"bad value for config key '{key}': {first['msg']}"


def load_settings(path: str | os.PathLike[str] | None = None,
                  environ: Mapping[str, str] | None = None) -> Settings:
    """Build the settings: `path`, else $GATEWATCH_CONFIG, else ./gatewatch.toml (optional), then the environment
    (`environ`, else os.environ)."""
    environ = dict(os.environ if environ is None else environ)
    explicit = path is not None or "GATEWATCH_CONFIG" in environ
    cfg = Path(path if path is not None else environ.get("GATEWATCH_CONFIG", "gatewatch.toml"))
    exists = cfg.exists()
    if not exists and explicit:
        raise ConfigError(f"config file {cfg} not found")
    file = TomlFileSource(Settings, cfg if exists else None)
    env = EnvTomlSource(Settings, environ)  # GATEWATCH_CONFIG has no "__": it names the file, it is no setting
    if "base_dir" in file() or "base_dir" in env():
        raise ConfigError("unknown config key 'base_dir'")
    base = cfg.resolve().parent if exists else Path.cwd()
    # First wins: the loader's base_dir, the environment, the file, the defaults (nested dicts merged key by key).
    sources = (InitSettingsSource(Settings, {"base_dir": base}), env, file, DefaultSettingsSource(Settings))
    try:
        settings = Settings(_build_sources=(sources, {}))
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None
    return _resolve_paths(settings)


def _resolve_paths(s: Settings) -> Settings:
    """The one place paths are resolved: every relative `Path` key of a section, and the SQLite file of `store.url`
    (unless `:memory:`), is made relative to `s.base_dir`, whether it came from the file, the environment or a
    default."""
    update: dict[str, BaseModel] = {}
    for name in type(s).model_fields:
        section = getattr(s, name)
        if isinstance(section, BaseModel):
            paths = {k: s.base_dir / v for k, v in section if isinstance(v, Path) and not v.is_absolute()}
            if paths:
                update[name] = section.model_copy(update=paths)
    db = Path(s.store.url.removeprefix("sqlite:///"))
    if not db.is_absolute() and s.store.url != "sqlite:///:memory:":
        store = update.get("store", s.store)
        update["store"] = store.model_copy(update={"url": "sqlite:///" + str(s.base_dir / db)})
    return s.model_copy(update=update)
