"""Access-token validation: a nested JWT (JWS inside a JWE encrypted to us) or a plain JWS.

`TokenValidator.check(token, at)` never raises on what a client sent: it returns a `TokenInfo`
with a verdict of CONTRACT.md §2. Cheap checks (size, shape, base64url, header JSON, algorithm
allow-list, key id) run before any cryptography (ingest.jose_parse, ingest.token_crypto). Results
are cached by the token's SHA-256 in a bounded LRU, because a token is presented on many requests;
time-dependent verdicts (`expired`, `not_yet_valid`) are recomputed from the event time on every
call, never cached. The cache is dropped when a key set is reloaded (rotation).

Raw tokens are never stored or logged: everything downstream sees the fingerprint `tfp`.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from ingest.jose_parse import Refused, decode_compact, json_object
from ingest.keyring import KeyRing, load_jwks
from ingest.token_crypto import SignatureVerifier, TokenDecryptor

__all__ = ["VERDICTS", "TokenInfo", "TokenValidator", "fingerprint", "load_jwks"]

VERDICTS = (
    "ok", "malformed", "too_large", "disallowed_alg", "unknown_kid", "decrypt_failed", "not_signed",
    "bad_signature", "expired", "not_yet_valid", "wrong_issuer", "wrong_audience", "invalid_claims",
)
_MAX_NUMERIC_DATE = 2**36  # year ~4147; rejects exp=1e308 and friends
_STRING_CLAIMS = ("sub", "client_id", "jti", "tid", "use", "scope")


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
    # The token as issued, for detector state: the first 16 hex chars of SHA-256 of its JWS signing
    # input (header.payload). Unlike `tfp` it is the same for a copy re-encrypted to us or re-signed
    # (an ECDSA signature (r, s) is also valid as (r, n − s)); set only when the signature verified.
    identity: str | None = None
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

    @property
    def signed(self) -> bool:
        """The signature verified (the claims can be attributed), whatever the time verdict."""
        return self.claims is not None


def _numeric(claims: dict[str, Any], name: str, required: bool) -> float | None:
    value = claims.get(name)
    if value is None:
        if required:
            raise Refused("invalid_claims")
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 0 <= value < _MAX_NUMERIC_DATE:
        raise Refused("invalid_claims")
    return float(value)


class TokenValidator:
    """Validates access tokens against configured keys and rules; never raises on token input."""

    def __init__(self, *, decryptor: TokenDecryptor, verifier: SignatureVerifier, issuers: Iterable[str],
                 audiences: Iterable[str], leeway_seconds: int = 30, max_lifetime_seconds: int = 86_400,
                 max_token_bytes: int = 16_384, cache_size: int = 100_000) -> None:
        self.decryptor = decryptor
        self.verifier = verifier
        self.issuers = frozenset(issuers)
        self.audiences = frozenset(audiences)
        self.leeway_seconds = leeway_seconds
        self.max_lifetime_seconds = max_lifetime_seconds
        self.max_token_bytes = max_token_bytes
        self.cache_size = cache_size
        self._cache: OrderedDict[bytes, TokenInfo] = OrderedDict()
        self._generations = self._key_generations()

    @classmethod
    def from_config(cls, tokens: Any, keys: Any, limits: Any) -> TokenValidator:
        """Build from the [tokens], [keys] and [limits] sections of the settings."""
        insecure = tokens.insecure_algorithms
        return cls(
            decryptor=TokenDecryptor(KeyRing.from_file(keys.decryption_jwks, reload_seconds=keys.reload_seconds),
                                     algorithms=tokens.jwe_algorithms, encryptions=tokens.jwe_encryptions,
                                     insecure_algorithms=insecure, allow_zip=tokens.allow_zip),
            verifier=SignatureVerifier(KeyRing.from_file(keys.issuer_jwks, reload_seconds=keys.reload_seconds),
                                       algorithms=tokens.jws_algorithms, insecure_algorithms=insecure,
                                       typ=tokens.typ),
            issuers=tokens.issuers, audiences=tokens.audiences, leeway_seconds=tokens.leeway_seconds,
            max_lifetime_seconds=tokens.max_lifetime_seconds, max_token_bytes=limits.max_token_bytes,
            cache_size=tokens.cache_size)

    # -- public -------------------------------------------------------------------------------
    def check(self, token: str | bytes, at: float) -> TokenInfo:
        """Verdict for `token` used at event time `at` (epoch seconds)."""
        raw = token.encode("utf-8", "surrogatepass") if isinstance(token, str) else token
        if len(raw) > self.max_token_bytes:
            return TokenInfo(tfp=fingerprint(raw), verdict="too_large")
        self._drop_cache_on_rotation()
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

    def cache_len(self) -> int:
        return len(self._cache)

    # -- internals ----------------------------------------------------------------------------
    def _key_generations(self) -> tuple[int, int]:
        return self.decryptor.keys.generation, self.verifier.keys.generation

    def _drop_cache_on_rotation(self) -> None:
        self.decryptor.keys.refresh()
        self.verifier.keys.refresh()
        generations = self._key_generations()
        if generations != self._generations:  # a key may have been withdrawn: judge every token anew
            self._generations = generations
            self._cache.clear()

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
            dots = raw.count(b".")
            if dots == 4:
                _, inner = self.decryptor.decrypt(raw)
                try:
                    parts = decode_compact(inner, 3)
                except Refused:
                    parts = None
                if parts is None or not parts[0][0]:
                    raise Refused("not_signed")  # a JWE proves nothing: anyone can encrypt to our key
                return self._signed(inner, tfp, encrypted=True, parts=parts)
            if dots == 2:
                return self._signed(raw, tfp, encrypted=False)
            return TokenInfo(tfp=tfp, verdict="malformed")
        except Refused as refused:
            return TokenInfo(tfp=tfp, verdict=refused.verdict)
        except Exception:  # belt and braces: a validator bug must not stop the stream
            return TokenInfo(tfp=tfp, verdict="malformed")

    def _signed(self, raw: bytes, tfp: str, *, encrypted: bool,
                parts: tuple[list[bytes], list[bytes]] | None = None) -> TokenInfo:
        header, payload = self.verifier.verify(raw, parts)
        claims = json_object(payload, verdict="invalid_claims")
        iss = claims.get("iss")
        if not isinstance(iss, str):
            raise Refused("invalid_claims")
        if iss not in self.issuers:
            raise Refused("wrong_issuer")
        aud = claims.get("aud")
        auds = [aud] if isinstance(aud, str) else aud
        if not isinstance(auds, list) or not auds or not all(isinstance(a, str) for a in auds):
            raise Refused("invalid_claims")
        if not self.audiences.intersection(auds):
            raise Refused("wrong_audience")
        exp = _numeric(claims, "exp", required=True)
        nbf = _numeric(claims, "nbf", required=False)
        iat = _numeric(claims, "iat", required=False)
        start = iat if iat is not None else nbf
        if start is not None and exp is not None and exp - start > self.max_lifetime_seconds:
            raise Refused("invalid_claims")
        strings: dict[str, Any] = {}
        for name in _STRING_CLAIMS:
            value = claims.get(name)
            if value is not None and not isinstance(value, str):
                raise Refused("invalid_claims")
            strings[name] = value
        cnf = claims.get("cnf")
        jkt = cnf.get("jkt") if isinstance(cnf, dict) else None
        if jkt is not None and not isinstance(jkt, str):
            raise Refused("invalid_claims")
        identity = hashlib.sha256(raw[:raw.rindex(b".")]).hexdigest()[:16]
        return TokenInfo(tfp=tfp, verdict="ok", encrypted=encrypted, identity=identity, header=header, iss=iss, exp=exp,
                         nbf=nbf, iat=iat, cnf_jkt=jkt, claims=claims, **strings)
