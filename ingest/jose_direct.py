"""A direct path for the common JOSE algorithms: joserfc's operations on `cryptography` primitives.

Why it exists: much of a cold token validation was joserfc's per-call Python overhead rather than
cryptography: registries built per call, the header parsed and validated again, and the JWE's
ephemeral key `epk` imported as a full JWK object (JWK parameter registries, base64 to int, public
numbers) before the ECDH exchange. Here the same steps run straight on `cryptography` primitives,
for the algorithms and header shapes that real tokens use.

joserfc remains the reference and the fallback. `decrypt` and `verify` run after token_crypto's
checks (allow-lists, header parsing, `KeyRing.pick`) and return None for anything they do not
cover (other algorithms, key types or curves, `zip`, header members beyond the usual ones, an `epk`
that is not the canonical RFC 7518 §6.2.1 form); the caller then calls joserfc unchanged. When they
decide, they raise `DirectRefusal` exactly where joserfc raises (its size limits, iv and tag
lengths, an encrypted key with ECDH-ES, key lengths, `key_ops` via joserfc's own `get_op_key`) and
return the same bytes. tests/ingest/test_jose_direct.py compares the two paths differentially.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap
from joserfc.jwe import JWERegistry
from joserfc.jwk import ECKey, OctKey, OKPKey, RSAKey
from joserfc.jws import JWSRegistry

from ingest.jose_parse import Refused, b64decode

__all__ = ["DirectRefusal", "decrypt", "verify"]


class DirectRefusal(Exception):
    """The token is refused, as joserfc would refuse it."""


# curve name in `cryptography` -> (JWK crv, coordinate bytes, field prime p)
_CURVES = {
    "secp256r1": ("P-256", 32, 2**256 - 2**224 + 2**192 + 2**96 - 1),
    "secp384r1": ("P-384", 48, 2**384 - 2**128 - 2**96 + 2**32 - 1),
    "secp521r1": ("P-521", 66, 2**521 - 1),
}
_GCM = {"A128GCM": 16, "A192GCM": 24, "A256GCM": 32}  # enc -> CEK bytes
_KW = {"A128KW": 16, "A192KW": 24, "A256KW": 32}  # AES key wrap -> KEK bytes
_OAEP = {
    "RSA-OAEP": padding.OAEP(padding.MGF1(hashes.SHA1()), hashes.SHA1(), None),
    "RSA-OAEP-256": padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), None),
}
# Header members handled here; anything else (or a non-string value) goes to joserfc, whose strict
# header registry validates or refuses it.
_JWE_MEMBERS = frozenset({"alg", "enc", "kid", "typ", "cty"})
_ECDH_MEMBERS = _JWE_MEMBERS | {"epk", "apu", "apv"}
_JWS_MEMBERS = frozenset({"alg", "kid", "typ", "cty"})
_EPK_MEMBERS = frozenset({"kty", "crv", "x", "y"})
_ES = {"ES256": ("secp256r1", hashes.SHA256), "ES384": ("secp384r1", hashes.SHA384),
       "ES512": ("secp521r1", hashes.SHA512)}
_RS = {"RS256": padding.PKCS1v15(),
       "PS256": padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)}  # joserfc: salt = digest size

# joserfc's size limits (bytes of the base64url segments), refused before any cryptography.
_JWE_LIMITS = (JWERegistry.max_protected_header_length, JWERegistry.max_encrypted_key_length,
               JWERegistry.max_initialization_vector_length, JWERegistry.max_ciphertext_length,
               JWERegistry.max_auth_tag_length)
_JWS_LIMITS = (JWSRegistry.max_header_length, JWSRegistry.max_payload_length, JWSRegistry.max_signature_length)


def _plain_header(hdr: dict[str, Any], members: frozenset[str]) -> bool:
    return hdr.keys() <= members and all(type(v) is str for k, v in hdr.items() if k != "epk")


def _within(raw: bytes, segments: list[bytes], limits: tuple[int, ...]) -> None:
    if len(raw) > sum(limits) or any(len(s) > limit for s, limit in zip(segments, limits, strict=False)):
        raise DirectRefusal("size")


def _b64(segment: bytes) -> bytes:
    try:
        return b64decode(segment)
    except Refused:
        raise DirectRefusal("base64") from None


def _concat_kdf(z: bytes, algorithm_id: str, apu: bytes, apv: bytes, size: int) -> bytes:
    """RFC 7518 §4.6.2: single-step Concat KDF (NIST SP 800-56A) with SHA-256, `size` bytes."""
    alg_id = algorithm_id.encode()
    other = b"".join((struct.pack(">I", len(alg_id)), alg_id, struct.pack(">I", len(apu)), apu,
                      struct.pack(">I", len(apv)), apv, struct.pack(">I", size * 8)))
    out = b"".join(hashlib.sha256(struct.pack(">I", i) + z + other).digest() for i in range(1, (size + 31) // 32 + 1))
    return out[:size]


def _ephemeral_point(epk: Any, crv: str, size: int, prime: int,
                     curve: ec.EllipticCurve) -> ec.EllipticCurvePublicKey | None:
    """`epk` as a public key when it is the canonical JWK of a point of our curve; None to defer to joserfc.

    joserfc also accepts other forms (extra members, any `kty`, coordinates without their leading
    zero bytes or not reduced mod p): those are left to it. A canonical point not on the curve is
    refused by both (EC_KEY_check_key there, EC_POINT_oct2point here).
    """
    if type(epk) is not dict or epk.keys() != _EPK_MEMBERS or epk["kty"] != "EC" or epk["crv"] != crv \
            or type(epk["x"]) is not str or type(epk["y"]) is not str:
        return None
    try:
        x, y = b64decode(epk["x"].encode()), b64decode(epk["y"].encode())
    except (Refused, UnicodeEncodeError):
        return None
    if len(x) != size or len(y) != size or int.from_bytes(x, "big") >= prime or int.from_bytes(y, "big") >= prime:
        return None
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(curve, b"\x04" + x + y)
    except ValueError:
        raise DirectRefusal("epk") from None


def _ecdh_key(hdr: dict[str, Any], key: Any, alg: str, enc: str, ek: bytes) -> bytes | None:
    """The CEK of ECDH-ES / ECDH-ES+AxxxKW (RFC 7518 §4.6), or None to defer to joserfc."""
    kw = alg[len("ECDH-ES+"):] if alg != "ECDH-ES" else None
    if (kw is not None and kw not in _KW) or not isinstance(key, ECKey) or key.private_key is None:
        return None
    private = key.private_key
    curve = _CURVES.get(private.curve.name)
    if curve is None:
        return None
    peer = _ephemeral_point(hdr["epk"], *curve, private.curve)
    if peer is None:
        return None
    if kw is None and ek:
        raise DirectRefusal("encrypted key with ECDH-ES")  # joserfc: InvalidEncryptedKeyError
    apu, apv = (_b64(hdr[name].encode()) if hdr.get(name) else b"" for name in ("apu", "apv"))  # joserfc: "" = absent
    z = private.exchange(ec.ECDH(), peer)
    if kw is None:
        return _concat_kdf(z, enc, apu, apv, _GCM[enc])
    return aes_key_unwrap(_concat_kdf(z, alg, apu, apv, _KW[kw]), ek)


def decrypt(raw: bytes, segments: list[bytes], decoded: list[bytes], hdr: dict[str, Any],
            key: Any) -> bytes | None:
    """Plaintext of a compact JWE with a GCM `enc`; None when not covered (use joserfc). `decoded`: the
    segments decoded (jose_parse.decode_compact).

    Raises (DirectRefusal, InvalidTag, InvalidUnwrap, ValueError, ...) where joserfc would raise.
    """
    alg, enc = hdr["alg"], hdr["enc"]
    ecdh = alg.startswith("ECDH-ES")
    if ecdh:
        covered = "epk" in hdr  # the key and the epk are looked at in _ecdh_key
    elif alg == "dir" or alg in _KW:
        covered = isinstance(key, OctKey)
    else:
        covered = alg in _OAEP and isinstance(key, RSAKey)
    if not covered or enc not in _GCM or not _plain_header(hdr, _ECDH_MEMBERS if ecdh else _JWE_MEMBERS):
        return None
    _within(raw, segments, _JWE_LIMITS)
    ek = decoded[1]
    if ecdh:
        cek = _ecdh_key(hdr, key, alg, enc, ek)
        if cek is None:
            return None
    elif alg == "dir":
        cek = key.raw_value  # joserfc checks no key_ops for dir
    elif alg in _KW:
        kek = key.get_op_key("unwrapKey")
        if len(kek) != _KW[alg]:
            raise DirectRefusal("key wrap key length")
        cek = aes_key_unwrap(kek, ek)
    else:
        cek = key.get_op_key("decrypt").decrypt(ek, _OAEP[alg])
    iv, tag = decoded[2], decoded[4]
    if len(cek) != _GCM[enc] or len(iv) != 12 or len(tag) != 16:
        raise DirectRefusal("cek, iv or tag length")  # joserfc: random CEK, check_iv, GCM(iv, tag)
    return AESGCM(cek).decrypt(iv, decoded[3] + tag, segments[0])


def verify(raw: bytes, segments: list[bytes], decoded: list[bytes], hdr: dict[str, Any],
           key: Any) -> bytes | None:
    """Payload of a compact JWS whose signature verifies; None when not covered (use joserfc).

    Raises (DirectRefusal, InvalidSignature, ...) where joserfc would refuse the signature.
    """
    alg = hdr["alg"]
    if not _plain_header(hdr, _JWS_MEMBERS):
        return None
    if alg in _ES:
        curve_name, digest = _ES[alg]
        if not isinstance(key, ECKey) or key.raw_value.curve.name != curve_name:
            return None
    elif alg in _RS:
        if not isinstance(key, RSAKey):
            return None
    elif alg != "EdDSA" or not isinstance(key, OKPKey) or not isinstance(key.public_key, Ed25519PublicKey):
        return None
    _within(raw, segments, _JWS_LIMITS)
    signing_input = segments[0] + b"." + segments[1]
    sig = decoded[2]
    public = key.get_op_key("verify")
    if alg in _ES:
        size = _CURVES[curve_name][1]
        if len(sig) != 2 * size:
            raise DirectRefusal("signature length")
        der = encode_dss_signature(int.from_bytes(sig[:size], "big"), int.from_bytes(sig[size:], "big"))
        public.verify(der, signing_input, ec.ECDSA(digest()))
    elif alg in _RS:
        public.verify(sig, signing_input, _RS[alg], hashes.SHA256())
    else:
        public.verify(sig, signing_input)
    return decoded[1]
