"""Cheap JOSE parsing: the canonical base64url check, against the round-trip definition it replaces."""

import base64
import binascii

import pytest
from hypothesis import given, settings as hsettings, strategies as st

from ingest.jose_parse import Refused, b64decode, decode_compact

_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def reference(segment: bytes) -> bytes | None:
    """Canonical unpadded base64url by definition: decodes, and encoding the result gives it back."""
    if any(c not in _ALPHABET.encode() for c in segment) or len(segment) % 4 == 1:
        return None
    try:
        data = base64.urlsafe_b64decode(segment + b"=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        return None
    return data if base64.urlsafe_b64encode(data).rstrip(b"=") == segment else None


def ours(segment: bytes) -> bytes | None:
    try:
        return b64decode(segment)
    except Refused:
        return None


@given(st.binary(max_size=40).map(lambda b: base64.urlsafe_b64encode(b).rstrip(b"=")))
@hsettings(max_examples=500)
def test_every_canonical_encoding_decodes_to_its_bytes(segment: bytes) -> None:
    assert ours(segment) == reference(segment) == base64.urlsafe_b64decode(segment + b"=" * (-len(segment) % 4))


@given(st.text(alphabet=_ALPHABET + "=+/. \n\x00é", max_size=24).map(str.encode))
@hsettings(max_examples=2000)
def test_any_string_is_refused_or_decoded_exactly_as_the_definition_says(segment: bytes) -> None:
    assert ours(segment) == reference(segment)


@pytest.mark.parametrize("segment", [b"VGVzdB", b"VGVzdA\n", b"QQ", b"QR", b"QUE", b"QUF", b"A"])
def test_non_canonical_and_stray_characters(segment: bytes) -> None:
    assert ours(segment) == reference(segment)
    assert (ours(b"VGVzdA"), ours(b"VGVzdB"), ours(b"VGVzdA\n")) == (b"Test", None, None)


def test_a_compact_serialisation_is_decoded_once_per_segment() -> None:
    segments, decoded = decode_compact(b"eyJhIjoxfQ.AQ.", 3)
    assert segments == [b"eyJhIjoxfQ", b"AQ", b""]
    assert decoded == [b'{"a":1}', b"\x01", b""]
    with pytest.raises(Refused):
        decode_compact(b"a.b", 3)
