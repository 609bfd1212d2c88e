"""Strict, cheap parsing of compact JOSE serialisations, before any cryptography.

Every check here costs microseconds and raises `Refused(verdict)`; nothing else escapes. What is
refused: segments that are not canonical base64url, headers that are not a UTF-8 JSON object, that
repeat a member, nest absurdly, exceed a size, lack a string `alg` or carry an unknown `crit`.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

B64URL = re.compile(rb"^[A-Za-z0-9_-]*$")
MAX_HEADER_BYTES = 2048
KNOWN_CRIT: frozenset[str] = frozenset()


class Refused(Exception):
    """A token is refused with `verdict` (one of ingest.tokens.VERDICTS)."""

    def __init__(self, verdict: str) -> None:
        super().__init__(verdict)
        self.verdict = verdict


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError("duplicate member")
        out[k] = v
    return out


def b64decode(segment: bytes) -> bytes:
    """Canonical unpadded base64url only: no stray characters, no non-zero unused trailing bits."""
    if not B64URL.match(segment) or len(segment) % 4 == 1:
        raise Refused("malformed")
    try:
        data = base64.urlsafe_b64decode(segment + b"=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        raise Refused("malformed") from None
    if base64.urlsafe_b64encode(data).rstrip(b"=") != segment:
        raise Refused("malformed")  # e.g. "VGVzdB" for "VGVzdA": two encodings of one value
    return data


def split_compact(raw: bytes, parts: int) -> list[bytes]:
    """The segments of a compact serialisation, each checked to be canonical base64url."""
    segments = raw.split(b".")
    if len(segments) != parts:
        raise Refused("malformed")
    for segment in segments:
        b64decode(segment)
    return segments


def json_object(raw: bytes, verdict: str = "malformed") -> dict[str, Any]:
    """Strict JSON object: UTF-8 only, no duplicate members, bounded nesting."""
    try:
        obj = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise Refused(verdict) from None
    if not isinstance(obj, dict):
        raise Refused(verdict)
    return obj


def header(segment: bytes) -> dict[str, Any]:
    if len(segment) > MAX_HEADER_BYTES * 4 // 3 + 4:
        raise Refused("malformed")
    hdr = json_object(b64decode(segment))
    if not isinstance(hdr.get("alg"), str):
        raise Refused("malformed")
    crit = hdr.get("crit")
    if crit is not None and (not isinstance(crit, list) or not crit or set(crit) - KNOWN_CRIT):
        raise Refused("malformed")
    kid = hdr.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise Refused("malformed")
    return hdr


def looks_like_jws(raw: bytes) -> bool:
    try:
        return bool(split_compact(raw, 3)[0])
    except Refused:
        return False
