"""Who is calling: API keys and bearer JWTs, scopes and tenants (CONTRACT.md §6).

Every request but health checks carries `Authorization: Bearer <credential>`. A credential shaped
like a compact JWS (three dot-separated parts) is a bearer JWT, validated by `ingest.tokens.TokenValidator`
against the `[api]` issuers, audience and JWKS, at the current wall-clock time (this is the API edge,
not detection: there is no event time here); one issued (`iat`) further in the future than the
validator's exp/nbf leeway is refused too. Anything else is an API key, looked up by its SHA-256 hash in
the `[api] api_keys` file with a constant-time comparison. That file is looked at (stat) at most once a
second, on a request, and re-read when it changed: a key removed from it stops working without a restart.

A JWT names its scopes in `scope` (space-separated) and its tenants in `tenants` (a list; `["*"]` =
every tenant). Credentials are never logged; refusals are logged with their verdict only.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from joserfc.jwk import KeySet

from api.errors import Forbidden, Unauthorized
from ingest.errors import KeyMaterialError
from ingest.keyring import KeyRing
from ingest.token_crypto import SignatureVerifier, TokenDecryptor
from ingest.tokens import TokenValidator

log = logging.getLogger(__name__)

ALL_TENANTS = "*"
SCOPES: tuple[str, ...] = ("alerts:read", "alerts:write", "risk:read", "metrics:read")
JWT_ALGORITHMS: tuple[str, ...] = ("ES256", "RS256", "PS256", "EdDSA")
_MAX_CREDENTIAL_CHARS = 8192


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller. `tenants` containing "*" means every tenant."""

    id: str
    scopes: frozenset[str] = field(default_factory=frozenset)
    tenants: frozenset[str] = field(default_factory=frozenset)

    @property
    def all_tenants(self) -> bool:
        return ALL_TENANTS in self.tenants

    def tenant_filter(self) -> frozenset[str] | None:
        """The tenants this caller may see, for store queries; None = all of them."""
        return None if self.all_tenants else self.tenants

    def sees(self, tenant: str) -> bool:
        return self.all_tenants or tenant in self.tenants


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    digest: bytes  # raw SHA-256 of the key
    scopes: frozenset[str]
    tenants: frozenset[str]


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


def load_api_keys(path: Path) -> list[ApiKey]:
    """`{"keys": [{"id", "hash": "sha256:<hex>", "scopes": [...], "tenants": [...]}]}`; missing file = none."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise KeyMaterialError(f"api keys file {path} unreadable: {type(exc).__name__}") from None
    entries = data.get("keys") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise KeyMaterialError(f"api keys file {path}: expected {{\"keys\": [...]}}")
    keys = []
    for i, entry in enumerate(entries):
        where = f"api keys file {path}: keys[{i}]"
        if not isinstance(entry, dict):
            raise KeyMaterialError(f"{where} is not an object")
        kid, hashed = entry.get("id"), entry.get("hash")
        scopes, tenants = entry.get("scopes", []), entry.get("tenants", [])
        if not isinstance(kid, str) or not kid:
            raise KeyMaterialError(f"{where}.id missing")
        if not isinstance(hashed, str) or not hashed.startswith("sha256:"):
            raise KeyMaterialError(f"{where}.hash must be sha256:<hex>")
        try:
            digest = bytes.fromhex(hashed.removeprefix("sha256:"))
        except ValueError:
            raise KeyMaterialError(f"{where}.hash must be sha256:<hex>") from None
        if len(digest) != 32:
            raise KeyMaterialError(f"{where}.hash must be sha256:<hex>")
        if not _str_list(scopes) or not _str_list(tenants):
            raise KeyMaterialError(f"{where}: scopes and tenants must be lists of strings")
        keys.append(ApiKey(kid, digest, frozenset(scopes), frozenset(tenants)))
    return keys


def _str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


class ApiKeyFile:
    """The `[api] api_keys` file, re-read when it changes so that a revoked key stops working.

    `keys()` stats the file at most every `check_seconds` of `clock` and re-reads it when its mtime, size
    or inode moved; it then holds what a restart would load (a missing file = no keys). A file a restart
    would refuse (unreadable, invalid) keeps the last good keys and is logged once per change.
    """

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time, check_seconds: float = 1.0) -> None:
        self.path = Path(path)
        self.clock = clock
        self.check_seconds = check_seconds
        self._stamp = self._stat()  # before the read: a change in between is seen at the next check
        self._keys = tuple(load_api_keys(self.path))  # invalid at startup: an error, as before
        self._checked = clock()
        self._lock = threading.Lock()

    def keys(self) -> tuple[ApiKey, ...]:
        now = self.clock()
        # A clock that went back (wall time is set) also means "look now", never "wait until it catches up".
        if self._checked <= now < self._checked + self.check_seconds:
            return self._keys
        with self._lock:
            if not self._checked <= now < self._checked + self.check_seconds:
                self._checked = now
                self._reload_if_changed()
        return self._keys

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        except OSError:
            return (-1, -1, -1)  # unreadable: `load_api_keys` says why
        return st.st_mtime_ns, st.st_size, st.st_ino

    def _reload_if_changed(self) -> None:
        stamp = self._stat()
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            keys = tuple(load_api_keys(self.path))
        except KeyMaterialError as exc:
            log.warning("%s; keeping the %d API keys loaded before", exc, len(self._keys))
            return
        log.info("api keys file %s reloaded: %d keys (was %d)", self.path, len(keys), len(self._keys))
        self._keys = keys


class Authenticator:
    """Turns a presented credential into a `Principal`, or None when it is not valid."""

    def __init__(self, *, api_keys: Iterable[ApiKey] | ApiKeyFile = (), jwt_validator: TokenValidator | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self._api_keys = api_keys if isinstance(api_keys, ApiKeyFile) else tuple(api_keys)
        self.jwt_validator = jwt_validator
        self.clock = clock
        self._lock = threading.Lock()  # the validator's LRU is not thread-safe

    @classmethod
    def from_config(cls, api: Any, *, clock: Callable[[], float] = time.time) -> Authenticator:
        """From the [api] section: `api_keys` (followed as it changes), `jwks`, `issuers`, `audience`
        (missing files = none)."""
        keys = ApiKeyFile(Path(api.api_keys), clock=clock)
        validator = None
        if Path(api.jwks).exists():
            # Bearer JWTs for the API are signed, not encrypted: no decryption keys, no JWE algorithms.
            validator = TokenValidator(
                decryptor=TokenDecryptor(KeyRing(KeySet([])), algorithms=(), encryptions=()),
                verifier=SignatureVerifier(KeyRing.from_file(Path(api.jwks)), algorithms=JWT_ALGORITHMS,
                                           typ=("JWT", "at+jwt", "application/at+jwt")),
                issuers=api.issuers, audiences=[api.audience], cache_size=10_000)
        return cls(api_keys=keys, jwt_validator=validator, clock=clock)

    @property
    def api_keys(self) -> tuple[ApiKey, ...]:
        return self._api_keys.keys() if isinstance(self._api_keys, ApiKeyFile) else self._api_keys

    def authenticate(self, credential: str) -> Principal | None:
        if not credential or len(credential) > _MAX_CREDENTIAL_CHARS:
            return None
        if credential.count(".") == 2:
            return self._from_jwt(credential)
        return self._from_api_key(credential)

    def _from_api_key(self, credential: str) -> Principal | None:
        digest = _digest(credential)
        found = None
        for key in self.api_keys:  # no early exit: time does not depend on which key matched
            if hmac.compare_digest(digest, key.digest) and found is None:
                found = key
        if found is None:
            log.info("api key refused: unknown key")
            return None
        return Principal(id=found.id, scopes=found.scopes, tenants=found.tenants)

    def _from_jwt(self, credential: str) -> Principal | None:
        if self.jwt_validator is None:
            log.info("bearer JWT refused: no JWT issuer configured")
            return None
        now = self.clock()
        with self._lock:
            info = self.jwt_validator.check(credential, now)
        if not info.ok or info.claims is None:
            log.info("bearer JWT refused: %s (tfp %s)", info.verdict, info.tfp)
            return None
        # The validator judges iat only as the start of the lifetime; a token "issued" later than now is
        # forged or from a broken clock, and would outlive the lifetime cap counted from now.
        if info.iat is not None and info.iat > now + self.jwt_validator.leeway_seconds:
            log.info("bearer JWT refused: issued in the future (tfp %s)", info.tfp)
            return None
        claims = info.claims
        scope = claims.get("scope", "")
        tenants = claims.get("tenants", [])
        if not isinstance(scope, str) or not _str_list(tenants):
            log.info("bearer JWT refused: bad scope/tenants claims (tfp %s)", info.tfp)
            return None
        ident = info.sub or info.client_id or f"jwt:{info.tfp}"
        return Principal(id=ident, scopes=frozenset(scope.split()), tenants=frozenset(tenants))


_bearer = HTTPBearer(auto_error=False, description="A bearer JWT from an [api] issuer, or an API key.")


async def authenticated(request: Request,
                        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> Principal:
    """FastAPI dependency: the caller, or 401. `async` although it does no I/O: a sync dependency costs a
    thread-pool hop per request, most of a risk look-up's time (BENCHMARKS.md "Risk look-up")."""
    return principal_of(request.app.state.authenticator, credentials.credentials if credentials else None)


def principal_of(authenticator: Authenticator, credential: str | None) -> Principal:
    """The caller holding `credential` (the bearer value), or 401."""
    if credential is None:
        raise Unauthorized("missing bearer credential")
    principal = authenticator.authenticate(credential)
    if principal is None:
        raise Unauthorized("invalid or expired credential")
    return principal


def bearer_of(authorization: str | None) -> str | None:
    """The credential of an `Authorization: Bearer <credential>` header, as FastAPI's HTTPBearer reads it."""
    if not authorization:
        return None
    scheme, _, credential = authorization.partition(" ")
    credential = credential.strip()
    if scheme.lower() != "bearer" or not credential:
        return None
    return credential


def with_scope(principal: Principal, scope: str) -> Principal:
    """`principal`, who must hold `scope` (else 403)."""
    if scope not in principal.scopes:
        raise Forbidden(f"credential lacks scope {scope}")
    return principal


@functools.cache
def require(scope: str) -> Callable[..., Principal]:
    """FastAPI dependency factory: the caller, who must hold `scope` (else 403).

    Cached, so `app.dependency_overrides[require("alerts:read")]` replaces the same object routes use.
    """

    async def dependency(principal: Annotated[Principal, Depends(authenticated)]) -> Principal:
        return with_scope(principal, scope)

    dependency.__name__ = f"require_{scope.replace(':', '_')}"
    return dependency
