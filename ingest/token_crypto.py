"""The two cryptographic layers of an access token, each refusing with a verdict, never raising.

`TokenDecryptor` opens a compact JWE (RFC 7516) with our private keys; `SignatureVerifier` checks a
compact JWS (RFC 7515) against the issuers' public keys. Both check the allow-lists and pick the key
themselves before any cryptography, with exactly one algorithm allowed per call, so a library default
never widens what we accept. The cryptography itself takes the direct path (ingest.jose_direct: the
common algorithms on `cryptography` primitives, without joserfc's per-call overhead) and falls back to
joserfc, the reference, for everything that path does not cover; `direct=False` forces joserfc.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from joserfc import jwe, jws

from ingest import jose_direct
from ingest.jose_parse import Refused, decode_compact, header as parse_header
from ingest.keyring import KeyRing

# Refused even when listed, unless enabled by name in `insecure_algorithms` (CONTRACT.md §2).
INSECURE_ALGS = frozenset({"RSA1_5", "PBES2-HS256+A128KW", "PBES2-HS384+A192KW", "PBES2-HS512+A256KW"})
# Never accepted: an unsigned JWS proves nothing, whatever the configuration says.
NEVER_ALGS = frozenset({"none"})
MAX_PBES2_COUNT = 100_000  # a huge p2c is a denial of service: refuse before deriving anything


def _allowed(configured: Iterable[str], insecure: Iterable[str]) -> frozenset[str]:
    enabled = frozenset(insecure)
    return frozenset(a for a in configured if a not in NEVER_ALGS and (a not in INSECURE_ALGS or a in enabled))


class TokenDecryptor:
    def __init__(self, keys: KeyRing, *, algorithms: Iterable[str], encryptions: Iterable[str],
                 insecure_algorithms: Iterable[str] = (), allow_zip: bool = False, direct: bool = True) -> None:
        self.keys = keys
        self.direct = direct
        self.algorithms = _allowed(algorithms, insecure_algorithms)
        self.encryptions = frozenset(encryptions)
        self.allow_zip = allow_zip

    def decrypt(self, raw: bytes) -> tuple[dict[str, Any], bytes]:
        """(protected header, plaintext) of a 5-segment compact JWE, else `Refused`."""
        segments, decoded = decode_compact(raw, 5)
        hdr = parse_header(segments[0], decoded[0])
        alg, enc = hdr["alg"], hdr.get("enc")
        if alg not in self.algorithms or enc not in self.encryptions:
            raise Refused("disallowed_alg")
        if "zip" in hdr and not (self.allow_zip and hdr["zip"] == "DEF"):
            raise Refused("disallowed_alg")
        if alg.startswith("PBES2"):
            p2c = hdr.get("p2c")
            if not isinstance(p2c, int) or isinstance(p2c, bool) or not 1000 <= p2c <= MAX_PBES2_COUNT:
                raise Refused("disallowed_alg")
        if alg == "dir" and segments[1]:
            raise Refused("malformed")  # dir carries no encrypted key
        key = self.keys.pick(hdr, "enc")
        try:
            plaintext = jose_direct.decrypt(raw, segments, decoded, hdr, key) if self.direct else None
            if plaintext is None:
                plaintext = jwe.decrypt_compact(raw, key, algorithms=[alg, enc]).plaintext or b""
        except Exception:  # joserfc and cryptography raise many types on hostile input
            raise Refused("decrypt_failed") from None
        return hdr, plaintext


class SignatureVerifier:
    def __init__(self, keys: KeyRing, *, algorithms: Iterable[str], insecure_algorithms: Iterable[str] = (),
                 typ: Iterable[str] | None = None, direct: bool = True) -> None:
        self.keys = keys
        self.direct = direct
        self.algorithms = _allowed(algorithms, insecure_algorithms)
        self.typ = None if typ is None else frozenset(t.lower() for t in typ)

    def verify(self, raw: bytes, parts: tuple[list[bytes], list[bytes]] | None = None) -> tuple[dict[str, Any], bytes]:
        """(protected header, payload) of a compact JWS whose signature verifies, else `Refused`.
        `parts`: its `decode_compact(raw, 3)`, when the caller has it already."""
        segments, decoded = parts if parts is not None else decode_compact(raw, 3)
        hdr = parse_header(segments[0], decoded[0])
        alg = hdr["alg"]
        if alg not in self.algorithms:
            raise Refused("disallowed_alg")
        typ = hdr.get("typ")
        if typ is not None and self.typ is not None and (not isinstance(typ, str) or typ.lower() not in self.typ):
            raise Refused("malformed")
        if hdr.get("b64") is False:
            raise Refused("malformed")  # RFC 7797 unencoded payloads are not tokens
        key = self.keys.pick(hdr, "sig")  # kty must fit alg: no HMAC keyed by an RSA public key
        try:
            payload = jose_direct.verify(raw, segments, decoded, hdr, key) if self.direct else None
            if payload is None:
                payload = jws.deserialize_compact(raw, key, algorithms=[alg]).payload
        except Exception:
            raise Refused("bad_signature") from None
        return hdr, payload
