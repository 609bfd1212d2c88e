"""Loading the JOSE conformance vectors (tests/fixtures/jose; sources in tests/fixtures/jose/SOURCE.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from joserfc.jwk import KeySet

from gatewatch.settings import DEFAULT_JWE_ALGS, DEFAULT_JWE_ENCS, DEFAULT_JWS_ALGS
from ingest.keyring import KeyRing
from ingest.token_crypto import SignatureVerifier, TokenDecryptor

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "jose"


def load(path: str) -> dict[str, Any]:
    return json.loads((FIXTURES / path).read_text(encoding="utf-8"))


def ring(*jwks: dict[str, Any]) -> KeyRing:
    return KeyRing(KeySet.import_key_set({"keys": list(jwks)}))


def decryptor(*jwks: dict[str, Any]) -> TokenDecryptor:
    return TokenDecryptor(ring(*jwks), algorithms=DEFAULT_JWE_ALGS, encryptions=DEFAULT_JWE_ENCS)


def verifier(*jwks: dict[str, Any]) -> SignatureVerifier:
    return SignatureVerifier(ring(*jwks), algorithms=DEFAULT_JWS_ALGS, typ=None)


def wycheproof(name: str, field: str) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(id, group key, test) for every compact vector of a Wycheproof file."""
    out = []
    for group in load(f"wycheproof/{name}")["testGroups"]:
        key = group.get("private") or group.get("public")
        for test in group["tests"]:
            if isinstance(test.get(field), str):
                out.append((f"{group['comment']}-{test['tcId']}-{test['comment']}", key, test))
    return out
