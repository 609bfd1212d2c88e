"""Demo key material (`gatewatch keys generate DIR`) and a token minter for simulated traffic.

Written files (all JWK Sets are RFC 7517 JSON):
  decryption.jwks.json          private keys access tokens are encrypted to ([keys] decryption_jwks)
  encryption-public.jwks.json   their public halves: what an authorization server encrypts with
  issuer.jwks.json              the token issuer's public signing keys ([keys] issuer_jwks)
  issuer-private.jwks.json      the issuer's private signing keys (demo/simulation only)
  api-issuer.jwks.json          public keys of the API's bearer-JWT issuer ([api] jwks)
  api-issuer-private.jwks.json  its private keys (demo only: mints analyst tokens)
  api-keys.json                 hashed API keys with scopes and tenants ([api] api_keys)
  credentials.json              the plain API keys, one per role (demo only; never in production)
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from pathlib import Path
from typing import Any

from joserfc import jwe, jws
from joserfc.jwk import ECKey, KeySet, RSAKey

DEMO_ROLES: dict[str, dict[str, Any]] = {
    "analyst": {"scopes": ["alerts:read", "alerts:write", "risk:read", "metrics:read"], "tenants": ["*"]},
    "gateway": {"scopes": ["risk:read"], "tenants": ["*"]},
    "viewer-acme": {"scopes": ["alerts:read"], "tenants": ["acme"]},
}


def hash_api_key(key: str) -> str:
    # API keys are 256-bit random strings, so a plain SHA-256 is not brute-forceable.
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def _write(path: Path, data: Any, private: bool) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    if private:
        os.chmod(path, 0o600)


def _set(keys: list[Any], private: bool) -> dict[str, Any]:
    return {"keys": [k.as_dict(private=private) for k in keys]}


def generate_keys(directory: Path, *, rsa_bits: int = 2048) -> dict[str, Path]:
    """Write a fresh demo key set into `directory`; returns the written paths by name."""
    directory.mkdir(parents=True, exist_ok=True)
    enc_keys = [
        ECKey.generate_key("P-256", parameters={"kid": "enc-ec-1", "alg": "ECDH-ES+A256KW", "use": "enc"}),
        RSAKey.generate_key(rsa_bits, parameters={"kid": "enc-rsa-1", "alg": "RSA-OAEP-256", "use": "enc"}),
    ]
    sig_keys = [ECKey.generate_key("P-256", parameters={"kid": "idp-es256-1", "alg": "ES256", "use": "sig"})]
    api_keys = [ECKey.generate_key("P-256", parameters={"kid": "api-es256-1", "alg": "ES256", "use": "sig"})]
    paths = {
        "decryption": directory / "decryption.jwks.json",
        "encryption_public": directory / "encryption-public.jwks.json",
        "issuer": directory / "issuer.jwks.json",
        "issuer_private": directory / "issuer-private.jwks.json",
        "api_issuer": directory / "api-issuer.jwks.json",
        "api_issuer_private": directory / "api-issuer-private.jwks.json",
        "api_keys": directory / "api-keys.json",
        "credentials": directory / "credentials.json",
    }
    _write(paths["decryption"], _set(enc_keys, True), True)
    _write(paths["encryption_public"], _set(enc_keys, False), False)
    _write(paths["issuer"], _set(sig_keys, False), False)
    _write(paths["issuer_private"], _set(sig_keys, True), True)
    _write(paths["api_issuer"], _set(api_keys, False), False)
    _write(paths["api_issuer_private"], _set(api_keys, True), True)
    creds, hashed = {}, []
    for role, grant in DEMO_ROLES.items():
        key = "gw_" + secrets.token_urlsafe(32)
        creds[role] = key
        hashed.append({"id": role, "hash": hash_api_key(key), **grant})
    _write(paths["api_keys"], {"keys": hashed}, False)
    _write(paths["credentials"], creds, True)
    return paths


def load_key_set(path: Path) -> KeySet:
    return KeySet.import_key_set(json.loads(Path(path).read_text(encoding="utf-8")))


class TokenMinter:
    """Makes real access tokens: a JWS signed by the issuer, then (by default) encrypted to us."""

    def __init__(self, *, signing_keys: KeySet, encryption_keys: KeySet, issuer: str, audience: str,
                 sign_alg: str = "ES256", enc_kid: str = "enc-ec-1") -> None:
        self.signing_key = signing_keys.keys[0]
        self.encryption_key = next(k for k in encryption_keys.keys if k.kid == enc_kid)
        self.issuer = issuer
        self.audience = audience
        self.sign_alg = sign_alg

    @classmethod
    def from_dir(cls, directory: Path, *, issuer: str, audience: str) -> TokenMinter:
        return cls(signing_keys=load_key_set(directory / "issuer-private.jwks.json"),
                   encryption_keys=load_key_set(directory / "encryption-public.jwks.json"),
                   issuer=issuer, audience=audience)

    def sign(self, claims: dict[str, Any]) -> str:
        body = {"iss": self.issuer, "aud": self.audience, **claims}
        header = {"alg": self.sign_alg, "typ": "at+jwt", "kid": self.signing_key.kid}
        return jws.serialize_compact(header, json.dumps(body, separators=(",", ":")), self.signing_key,
                                     algorithms=[self.sign_alg])

    def mint(self, claims: dict[str, Any], *, encrypt: bool = True) -> str:
        inner = self.sign(claims)
        if not encrypt:
            return inner
        alg = self.encryption_key.as_dict(private=False)["alg"]
        header = {"alg": alg, "enc": "A256GCM", "cty": "JWT", "kid": self.encryption_key.kid}
        return jwe.encrypt_compact(header, inner, self.encryption_key, algorithms=[alg, "A256GCM"])


def new_jti() -> str:
    return secrets.token_hex(12)
