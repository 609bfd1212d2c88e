"""Access-token validation: a nested JWT (JWS inside a JWE encrypted to us) or a plain JWS.

`TokenValidator.check(token, at)` never raises on what a client sent: it returns a `TokenInfo`
with a verdict of CONTRACT.md §2. Cheap checks (size, shape, base64url, header JSON, algorithm
allow-list, key id) run before any cryptography. Results are cached by the token's SHA-256 in a
bounded LRU, because a token is presented on many requests; time-dependent verdicts (`expired`,
`not_yet_valid`) are recomputed from the event time on every call, never cached.

Raw tokens are never stored or logged: everything downstream sees the fingerprint `tfp`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from joserfc import jwe, jws
from joserfc.jwk import KeySet

from ingest.errors import KeyMaterialError

VERDICTS = (
    "ok", "malformed", "too_large", "disallowed_alg", "unknown_kid", "decrypt_failed", "not_signed",
    "bad_signature", "expired", "not_yet_valid", "wrong_issuer", "wrong_audience", "invalid_claims",
)
# Never allowed, whatever the configured lists say (CONTRACT.md §2).
FORBIDDEN_ALGS = frozenset({"none", "RSA1_5", "PBES2-HS256+A128KW", "PBES2-HS384+A192KW",
                            "PBES2-HS512+A256KW"})
_B64URL = re.compile(rb"^[A-Za-z0-9_-]*$")
_MAX_HEADER_BYTES = 2048
_MAX_NUMERIC_DATE = 2**36  # year ~4147; rejects exp=1e308 and friends
_KNOWN_CRIT: frozenset[str] = frozenset()


def fingerprint(token: str | bytes) -> str:
    """`tfp`: first 16 hex chars of SHA-256 of the compact token."""
    data = token.encode() if isinstance(token, str) else token
    return hashlib.sha256(data).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """What the validator knows of one token. Claims are set only when the signature verified."""

    tfp: str
    verdict: str
    encrypted: bool = False
    header: dict[str, Any] | None = None
    iss: str | None = None
    sub: str | None = None
    client_id: str | None = None
    jti: str | None = None
    tid: str | None = None
    exp: float | None = None
    nbf: float | None = None
    iat: float | None = None
    cnf_jkt: str | None = None
    use: str | None = None
    scope: str | None = None
    claims: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.verdict == "ok"


class _Refused(Exception):
    def __init__(self, verdict: str) -> None:
        self.verdict = verdict


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError("duplicate member")
        out[k] = v
    return out


def _b64decode(segment: bytes) -> bytes:
    if not _B64URL.match(segment) or len(segment) % 4 == 1:
        raise _Refused("malformed")
    try:
        return base64.urlsafe_b64decode(segment + b"=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        raise _Refused("malformed") from None


def _json_object(raw: bytes) -> dict[str, Any]:
    """Strict JSON object: UTF-8 only, no duplicate members, bounded nesting."""
    try:
        text = raw.decode("utf-8")
        obj = json.loads(text, object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise _Refused("malformed") from None
    if not isinstance(obj, dict):
        raise _Refused("malformed")
    return obj


def _header(segment: bytes) -> dict[str, Any]:
    if len(segment) > _MAX_HEADER_BYTES * 4 // 3 + 4:
        raise _Refused("malformed")
    header = _json_object(_b64decode(segment))
    if not isinstance(header.get("alg"), str):
        raise _Refused("malformed")
    crit = header.get("crit")
    if crit is not None and (not isinstance(crit, list) or set(crit) - _KNOWN_CRIT):
        raise _Refused("malformed")
    return header


def _key_allows(key: Any, alg: str, use: str, ops: set[str]) -> bool:
    """A key is only used for what its JWK says: alg, use, key_ops."""
    params = key.as_dict(private=False)
    if params.get("alg") not in (None, alg):
        return False
    if params.get("use") not in (None, use):
        return False
    key_ops = params.get("key_ops")
    return key_ops is None or bool(ops & set(key_ops))


def load_jwks(path: Path) -> KeySet:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return KeySet.import_key_set(data)
    except FileNotFoundError:
        raise KeyMaterialError(f"key set {path} not found (run `gatewatch keys generate`)") from None
    except Exception as exc:  # joserfc raises several types for bad key material
        raise KeyMaterialError(f"key set {path} unusable: {type(exc).__name__}") from None


def _numeric(claims: dict[str, Any], name: str, required: bool) -> float | None:
    value = claims.get(name)
    if value is None:
        if required:
            raise _Refused("invalid_claims")
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 0 <= value < _MAX_NUMERIC_DATE:
        raise _Refused("invalid_claims")
    return float(value)


class TokenValidator:
    """Validates access tokens against configured keys and rules; never raises on token input."""

    def __init__(self, *, decryption_keys: KeySet, issuer_keys: KeySet, issuers: Iterable[str],
                 audiences: Iterable[str], leeway_seconds: int = 30, max_lifetime_seconds: int = 86_400,
                 typ: Iterable[str] = ("at+jwt", "JWT"), jwe_algorithms: Iterable[str] = (),
                 jwe_encryptions: Iterable[str] = (), jws_algorithms: Iterable[str] = (),
                 max_token_bytes: int = 16_384, cache_size: int = 100_000) -> None:
        self.decryption_keys = decryption_keys
        self.issuer_keys = issuer_keys
        self.issuers = frozenset(issuers)
        self.audiences = frozenset(audiences)
        self.leeway_seconds = leeway_seconds
        self.max_lifetime_seconds = max_lifetime_seconds
        self.typ = frozenset(t.lower() for t in typ)
        self.jwe_algorithms = frozenset(jwe_algorithms) - FORBIDDEN_ALGS
        self.jwe_encryptions = frozenset(jwe_encryptions)
        self.jws_algorithms = frozenset(jws_algorithms) - FORBIDDEN_ALGS
        self.max_token_bytes = max_token_bytes
        self.cache_size = cache_size
        self._cache: OrderedDict[bytes, TokenInfo] = OrderedDict()

    @classmethod
    def from_config(cls, tokens: Any, keys: Any, limits: Any) -> TokenValidator:
        """Build from the [tokens], [keys] and [limits] sections of the settings."""
        return cls(decryption_keys=load_jwks(keys.decryption_jwks), issuer_keys=load_jwks(keys.issuer_jwks),
                   issuers=tokens.issuers, audiences=tokens.audiences,
                   leeway_seconds=tokens.leeway_seconds, max_lifetime_seconds=tokens.max_lifetime_seconds,
                   typ=tokens.typ, jwe_algorithms=tokens.jwe_algorithms,
                   jwe_encryptions=tokens.jwe_encryptions, jws_algorithms=tokens.jws_algorithms,
                   max_token_bytes=limits.max_token_bytes, cache_size=tokens.cache_size)

    # -- public -------------------------------------------------------------------------------
    def check(self, token: str, at: float) -> TokenInfo:
        """Verdict for `token` used at event time `at` (epoch seconds)."""
        raw = token.encode("utf-8", "surrogatepass") if isinstance(token, str) else token
        if len(raw) > self.max_token_bytes:
            return TokenInfo(tfp=fingerprint(raw), verdict="too_large")
        digest = hashlib.sha256(raw).digest()
        info = self._cache.get(digest)
        if info is None:
            info = self._validate(raw, digest.hex()[:16])
            if self.cache_size:
                self._cache[digest] = info
                if len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(digest)
        return self._at_time(info, at)

    # -- internals ----------------------------------------------------------------------------
    def _at_time(self, info: TokenInfo, at: float) -> TokenInfo:
        if info.verdict != "ok":
            return info
        if info.exp is not None and at > info.exp + self.leeway_seconds:
            return replace(info, verdict="expired")
        if info.nbf is not None and at < info.nbf - self.leeway_seconds:
            return replace(info, verdict="not_yet_valid")
        return info

    def _validate(self, raw: bytes, tfp: str) -> TokenInfo:
        try:
            parts = raw.split(b".")
            if len(parts) == 5:
                header = _header(parts[0])
                jws_compact = self._decrypt(raw, header)
                return self._verify(jws_compact, tfp, encrypted=True)
            if len(parts) == 3:
                return self._verify(raw, tfp, encrypted=False)
            return TokenInfo(tfp=tfp, verdict="malformed")
        except _Refused as refused:
            return TokenInfo(tfp=tfp, verdict=refused.verdict)

    def _decrypt(self, raw: bytes, header: dict[str, Any]) -> bytes:
        alg, enc = header["alg"], header.get("enc")
        if alg not in self.jwe_algorithms or enc not in self.jwe_encryptions or "zip" in header:
            raise _Refused("disallowed_alg")
        key = self._pick_key(self.decryption_keys, header, alg, "enc", {"decrypt", "unwrapKey", "deriveKey"})
        try:
            result = jwe.decrypt_compact(raw, key, algorithms=[alg, enc])
        except Exception:  # joserfc and cryptography raise many types on hostile input
            raise _Refused("decrypt_failed") from None
        plaintext = result.plaintext or b""
        segments = plaintext.split(b".")
        if len(segments) != 3 or not segments[0] or not all(_B64URL.match(s) for s in segments):
            raise _Refused("not_signed")  # a JWE proves nothing: anyone can encrypt to our public key
        return plaintext

    def _verify(self, raw: bytes, tfp: str, *, encrypted: bool) -> TokenInfo:
        parts = raw.split(b".")
        if len(parts) != 3:
            raise _Refused("malformed")
        header = _header(parts[0])
        alg = header["alg"]
        if alg not in self.jws_algorithms:
            raise _Refused("disallowed_alg")
        typ = header.get("typ")
        if typ is not None and (not isinstance(typ, str) or typ.lower() not in self.typ):
            raise _Refused("malformed")
        key = self._pick_key(self.issuer_keys, header, alg, "sig", {"verify"})
        if alg.startswith("HS") and key.key_type != "oct":
            raise _Refused("disallowed_alg")  # RS/HS confusion: an HMAC over a public key
        try:
            sig = jws.deserialize_compact(raw, key, algorithms=[alg])
        except Exception:
            raise _Refused("bad_signature") from None
        claims = _json_object(sig.payload)
        return self._claims(claims, header, tfp, encrypted)

    def _pick_key(self, keys: KeySet, header: dict[str, Any], alg: str, use: str, ops: set[str]) -> Any:
        kid = header.get("kid")
        if kid is not None:
            if not isinstance(kid, str):
                raise _Refused("malformed")
            candidates = [k for k in keys.keys if k.kid == kid]
        else:
            candidates = list(keys.keys)
        candidates = [k for k in candidates if _key_allows(k, alg, use, ops)]
        if len(candidates) != 1:
            raise _Refused("unknown_kid")
        return candidates[0]

    def _claims(self, claims: dict[str, Any], header: dict[str, Any], tfp: str, encrypted: bool) -> TokenInfo:
        iss = claims.get("iss")
        if not isinstance(iss, str):
            raise _Refused("invalid_claims")
        if iss not in self.issuers:
            raise _Refused("wrong_issuer")
        aud = claims.get("aud")
        auds = [aud] if isinstance(aud, str) else aud
        if not isinstance(auds, list) or not auds or not all(isinstance(a, str) for a in auds):
            raise _Refused("invalid_claims")
        if not self.audiences.intersection(auds):
            raise _Refused("wrong_audience")
        exp = _numeric(claims, "exp", required=True)
        nbf = _numeric(claims, "nbf", required=False)
        iat = _numeric(claims, "iat", required=False)
        start = iat if iat is not None else nbf
        if start is not None and exp is not None and exp - start > self.max_lifetime_seconds:
            raise _Refused("invalid_claims")
        strings = {}
        for name in ("sub", "client_id", "jti", "tid", "use", "scope"):
            value = claims.get(name)
            if value is not None and not isinstance(value, str):
                raise _Refused("invalid_claims")
            strings[name] = value
        cnf = claims.get("cnf")
        jkt = cnf.get("jkt") if isinstance(cnf, dict) else None
        if jkt is not None and not isinstance(jkt, str):
            raise _Refused("invalid_claims")
        return TokenInfo(tfp=tfp, verdict="ok", encrypted=encrypted, header=header, iss=iss, exp=exp,
                         nbf=nbf, iat=iat, cnf_jkt=jkt, claims=claims, **strings)
