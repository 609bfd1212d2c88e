"""Strict, cheap parsing of compact JOSE serialisations, before any cryptography.

Every check here costs microseconds and raises `Refused(verdict)`; nothing else escapes. What is
refused: segments that are not canonical base64url, headers that are not a UTF-8 JSON object, that
repeat a member, nest absurdly, exceed a size, lack a string `alg` or carry an unknown `crit`.
"""

from __future__ import annotations

import binascii
import json
import re
from typing import Any

B64URL = re.compile(rb"[A-Za-z0-9_-]*")  # used with fullmatch: `$` would let a final newline through
_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_VALUE = {c: i for i, c in enumerate(_ALPHABET)}
_TO_STANDARD = bytes.maketrans(b"-_", b"+/")
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
    """Canonical unpadded base64url only: no stray characters, no non-zero unused trailing bits.

    (The unused bits are those of the last character: 4 of them when the length is 2 mod 4, 2 when
    it is 3 mod 4. Checking them there, rather than encoding the result again, keeps a 1 KB segment
    at one pass.)"""
    rem = len(segment) % 4
    if rem == 1 or not B64URL.fullmatch(segment):
        raise Refused("malformed")
    if rem and _VALUE[segment[-1]] & (0x0F if rem == 2 else 0x03):
        raise Refused("malformed")  # e.g. "VGVzdB" for "VGVzdA": two encodings of one value
    try:
        return binascii.a2b_base64(segment.translate(_TO_STANDARD) + b"=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        raise Refused("malformed") from None


def decode_compact(raw: bytes, parts: int) -> tuple[list[bytes], list[bytes]]:
    """(segments, each decoded) of a compact serialisation: every segment decoded once, here."""
    segments = raw.split(b".")
    if len(segments) != parts:
        raise Refused("malformed")
    return segments, [b64decode(segment) for segment in segments]


def json_object(raw: bytes, verdict: str = "malformed") -> dict[str, Any]:
    """Strict JSON object: UTF-8 only, no duplicate members, bounded nesting."""
    try:
        obj = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise Refused(verdict) from None
    if not isinstance(obj, dict):
        raise Refused(verdict)
    return obj


def header(segment: bytes, decoded: bytes | None = None) -> dict[str, Any]:
    """The protected header of a segment (`decoded`: the segment already decoded by `decode_compact`)."""
    if len(segment) > MAX_HEADER_BYTES * 4 // 3 + 4:
        raise Refused("malformed")
    hdr = json_object(b64decode(segment) if decoded is None else decoded)
    if not isinstance(hdr.get("alg"), str):
        raise Refused("malformed")
    crit = hdr.get("crit")
    if crit is not None and (not isinstance(crit, list) or not crit or set(crit) - KNOWN_CRIT):
        raise Refused("malformed")
    kid = hdr.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise Refused("malformed")
    return hdr
