"""Shared fixtures: demo keys (generated once per session), a token minter and validator, settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from gatewatch.keys import TokenMinter, generate_keys
from gatewatch.settings import Settings, load_settings
from ingest.tokens import TokenValidator

T0 = 1_795_000_000.0  # 2026-11-18T..Z, an arbitrary fixed event time


@pytest.fixture(scope="session")
def keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("keys")
    generate_keys(d)
    return d


def write_config(directory: Path, keys_dir: Path, extra: str = "") -> Path:
    cfg = directory / "gatewatch.toml"
    cfg.write_text(
        f'[keys]\ndecryption_jwks = "{keys_dir}/decryption.jwks.json"\n'
        f'issuer_jwks = "{keys_dir}/issuer.jwks.json"\n'
        f'[api]\njwks = "{keys_dir}/api-issuer.jwks.json"\napi_keys = "{keys_dir}/api-keys.json"\n'
        f'[store]\nurl = "sqlite:///{directory}/gatewatch.db"\n' + extra,
        encoding="utf-8")
    return cfg


@pytest.fixture()
def settings(tmp_path: Path, keys_dir: Path) -> Settings:
    return load_settings(write_config(tmp_path, keys_dir), environ={})


@pytest.fixture(scope="session")
def minter(keys_dir: Path) -> TokenMinter:
    return TokenMinter.from_dir(keys_dir, issuer="https://idp.example", audience="api://gateway")


def validator_for(keys_dir: Path, **tokens: object) -> TokenValidator:
    """A validator with the default rules over the keys in `keys_dir`; `tokens` overrides [tokens] keys."""
    s = load_settings(write_config(keys_dir, keys_dir), environ={})
    return TokenValidator.from_config(s.tokens.model_copy(update=tokens), s.keys, s.limits)


@pytest.fixture(scope="session")
def validator(keys_dir: Path) -> TokenValidator:
    return validator_for(keys_dir)
