"""Key sets on disk, chosen by `kid`, reloaded when the file changes (key rotation without restart).

A key is only ever used for what its JWK says: `alg`, `use` and `key_ops` are enforced here, because
JOSE libraries do not enforce a JWK's `alg` on decryption. A file that fails to reload keeps the last
good key set (and `last_error` says why): a half-written JWKS must not switch decryption off.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from joserfc.jwk import KeySet

from ingest.errors import KeyMaterialError
from ingest.jose_parse import Refused

_OPS = {"enc": {"decrypt", "unwrapKey", "deriveKey", "deriveBits"}, "sig": {"verify"}}


def _kty_for(alg: str) -> tuple[str, ...]:
    """Key types an algorithm can use: an RSA key never serves ECDH, an EC key never HMAC."""
    if alg.startswith(("RSA", "RS", "PS")):
        return ("RSA",)
    if alg.startswith("ECDH-ES"):
        return ("EC", "OKP")
    if alg.startswith("ES"):
        return ("EC",)
    if alg == "EdDSA" or alg.startswith("Ed"):
        return ("OKP",)
    return ("oct",)  # dir, AES key wrap, AES-GCM key wrap, HMAC, PBES2


def load_jwks(path: Path) -> KeySet:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return KeySet.import_key_set(data)
    except FileNotFoundError:
        raise KeyMaterialError(f"key set {path} not found (run `gatewatch keys generate`)") from None
    except Exception as exc:  # joserfc raises several types for bad key material
        raise KeyMaterialError(f"key set {path} unusable: {type(exc).__name__}") from None


def key_allows(params: dict[str, Any], alg: str, use: str, enc: str | None = None) -> bool:
    """May a key with these JWK parameters serve `alg` (and, for `dir`, content encryption `enc`)?"""
    if params.get("kty") not in _kty_for(alg):
        return False
    key_alg = params.get("alg")
    if key_alg is not None and key_alg != alg and not (alg == "dir" and key_alg == enc):
        return False
    if params.get("use") not in (None, use):
        return False
    ops = params.get("key_ops")
    return ops is None or (isinstance(ops, list) and bool(_OPS[use] & set(ops)))


class KeyRing:
    """A JWK Set and the rule for choosing one of its keys for a token header."""

    def __init__(self, keys: KeySet, *, path: Path | None = None, reload_seconds: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self.reload_seconds = reload_seconds
        self.clock = clock  # wall clock for file polling only; never used for token time checks
        self.last_error: str | None = None
        self.generation = 0
        self._set(keys)
        self._stamp = self._file_stamp()
        self._checked = clock()

    @classmethod
    def from_file(cls, path: Path, **kwargs: Any) -> KeyRing:
        return cls(load_jwks(path), path=Path(path), **kwargs)

    def _set(self, keys: KeySet) -> None:
        self._entries = [(k, k.as_dict(private=False)) for k in keys.keys]
        self.generation += 1

    def _file_stamp(self) -> tuple[int, int] | None:
        if self.path is None:
            return None
        try:
            st = os.stat(self.path)
            return st.st_mtime_ns, st.st_size
        except OSError:
            return None

    def refresh(self, force: bool = False) -> bool:
        """Reload the file if it changed (checked at most every `reload_seconds`). True if reloaded."""
        if self.path is None:
            return False
        now = self.clock()
        if not force and now - self._checked < self.reload_seconds:
            return False
        self._checked = now
        stamp = self._file_stamp()
        if stamp == self._stamp or stamp is None:
            return False
        try:
            keys = load_jwks(self.path)
        except KeyMaterialError as exc:
            self.last_error = str(exc)
            return False
        self._stamp = stamp
        self._set(keys)
        self.last_error = None
        return True

    def pick(self, header: dict[str, Any], use: str) -> Any:
        """The one key this header may use.

        Refused with `unknown_kid` when no key has the header's `kid` (or, without a `kid`, when not
        exactly one key fits), and with `disallowed_alg` when the `kid` names a key that its JWK does
        not allow for this algorithm (an RSA public key offered as an HMAC secret, say).
        """
        self.refresh()
        alg, kid, enc = header["alg"], header.get("kid"), header.get("enc")
        named = [(k, p) for k, p in self._entries if kid is None or p.get("kid") == kid]
        found = [k for k, params in named if key_allows(params, alg, use, enc)]
        if len(found) == 1:
            return found[0]
        if kid is not None and named and not found:
            raise Refused("disallowed_alg")
        raise Refused("unknown_kid")

    def __len__(self) -> int:
        return len(self._entries)
