"""The direct JOSE path (ingest.jose_direct) against joserfc, the reference: same results, same verdicts.

Every test runs a token through two copies of each layer sharing one key ring, one with the direct
path (the default) and one forced onto joserfc (`direct=False`), and compares the outcomes. Tokens
are minted by joserfc, mutated byte by byte, or forged with hostile headers but otherwise valid
cryptography (the forger derives keys with joserfc's own Concat KDF and signs with joserfc's own
algorithm models), so that what either side would accept is exercised, not only what it refuses.
"""

from __future__ import annotations

import base64
import json
import os
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import aes_key_wrap
from hypothesis import HealthCheck, event, given, settings as hsettings, strategies as st
from joserfc import jwe, jws
from joserfc._rfc7518.derive_key import derive_key_for_concat_kdf
from joserfc.jwk import ECKey, KeySet, OctKey, OKPKey, RSAKey
from joserfc.jws import JWSRegistry
from joserfc.util import base64_to_int

from ingest import jose_direct
from ingest.jose_parse import Refused, decode_compact, header as parse_header
from ingest.keyring import KeyRing
from ingest.token_crypto import SignatureVerifier, TokenDecryptor

ENCS = {"A128GCM": 16, "A192GCM": 24, "A256GCM": 32}
KWS = {"A128KW": 16, "A192KW": 24, "A256KW": 32}
ECDH_ALGS = ("ECDH-ES", "ECDH-ES+A128KW", "ECDH-ES+A192KW", "ECDH-ES+A256KW")
RSA_ALGS = ("RSA-OAEP", "RSA-OAEP-256")
JWE_ALGS = (*ECDH_ALGS, "dir", *KWS, *RSA_ALGS)
CURVES = {"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1(), "P-521": ec.SECP521R1()}
JWS_ALGS = ("ES256", "ES384", "ES512", "RS256", "PS256", "EdDSA")
ES_CURVE = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}
B64_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])


def b64(data: bytes | str) -> str:
    return base64.urlsafe_b64encode(data.encode() if isinstance(data, str) else data).rstrip(b"=").decode()


def b64json(obj: Any) -> str:
    return b64(json.dumps(obj))


def jwe_kid(alg: str, enc: str, crv: str | None) -> str:
    if alg in ECDH_ALGS:
        return f"ec-{crv}"
    return {"dir": f"dir-{enc}", **{kw: f"kw-{kw}" for kw in KWS}}.get(alg, "rsa")


class Keys:
    """Private keys for every covered JWE case, and signing keys (with a public-only ring) for JWS."""

    def __init__(self) -> None:
        self.enc: dict[str, Any] = {f"ec-{crv}": ECKey.generate_key(crv, {"kid": f"ec-{crv}"}) for crv in CURVES}
        self.enc |= {f"dir-{enc}": OctKey.generate_key(n * 8, {"kid": f"dir-{enc}"}) for enc, n in ENCS.items()}
        self.enc |= {f"kw-{kw}": OctKey.generate_key(n * 8, {"kid": f"kw-{kw}"}) for kw, n in KWS.items()}
        self.enc["rsa"] = RSAKey.generate_key(2048, {"kid": "rsa"})
        self.sig: dict[str, Any] = {a: ECKey.generate_key(crv, {"kid": a}) for a, crv in ES_CURVE.items()}
        self.sig["RS256"] = RSAKey.generate_key(2048, {"kid": "RS256"})
        self.sig["PS256"] = RSAKey.import_key(self.sig["RS256"].as_dict(private=True), {"kid": "PS256"})
        self.sig["EdDSA"] = OKPKey.generate_key("Ed25519", {"kid": "EdDSA"})
        public = [KeySet.import_key_set({"keys": [k.as_dict(private=False)]}).keys[0] for k in self.sig.values()]
        self.dec_ring = KeyRing(KeySet(list(self.enc.values())))
        self.sig_ring = KeyRing(KeySet(public))

    def decryptors(self, ring: KeyRing | None = None) -> tuple[TokenDecryptor, TokenDecryptor]:
        ring = ring or self.dec_ring
        return tuple(TokenDecryptor(ring, algorithms=JWE_ALGS, encryptions=ENCS, direct=d)  # type: ignore[return-value]
                     for d in (True, False))

    def verifiers(self, ring: KeyRing | None = None) -> tuple[SignatureVerifier, SignatureVerifier]:
        ring = ring or self.sig_ring
        return tuple(SignatureVerifier(ring, algorithms=JWS_ALGS, typ=None, direct=d)  # type: ignore[return-value]
                     for d in (True, False))


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys()


def outcome(fn, token: str | bytes) -> tuple:
    raw = token.encode() if isinstance(token, str) else token
    try:
        return ("ok", *fn(raw))
    except Refused as refused:
        return ("refused", refused.verdict)
    except Exception as exc:  # the pre-crypto checks raise alike on both paths (e.g. unhashable crit)
        return ("raised", type(exc).__name__)


def same_decrypt(keys: Keys, token: str | bytes, ring: KeyRing | None = None) -> tuple:
    direct, reference = keys.decryptors(ring)
    got, want = outcome(direct.decrypt, token), outcome(reference.decrypt, token)
    assert got == want
    return got


def same_verify(keys: Keys, token: str | bytes, ring: KeyRing | None = None) -> tuple:
    direct, reference = keys.verifiers(ring)
    got, want = outcome(direct.verify, token), outcome(reference.verify, token)
    assert got == want
    return got


def took_direct_path(raw: bytes, parts: int, ring: KeyRing, use: str) -> bool:
    """Whether jose_direct decides this token itself (no fallback to joserfc)."""
    try:
        segments, decoded = decode_compact(raw, parts)
        hdr = parse_header(segments[0], decoded[0])
        key = ring.pick(hdr, use)
    except Refused:
        return True  # refused before the direct path
    fn = jose_direct.decrypt if parts == 5 else jose_direct.verify
    try:
        return fn(raw, segments, decoded, hdr, key) is not None
    except Exception:
        return True  # refused by the direct path itself (or before it)


# -- tokens minted by joserfc ------------------------------------------------------------------
JWE_CASES = [(alg, enc, crv) for alg in ECDH_ALGS for enc in ENCS for crv in CURVES] + \
            [(alg, enc, None) for alg in ("dir", *KWS, *RSA_ALGS) for enc in ENCS]


def mint_jwe(keys: Keys, alg: str, enc: str, crv: str | None, plaintext: bytes = b"hdr.payload.sig",
             **extra: Any) -> str:
    key = keys.enc[jwe_kid(alg, enc, crv)]
    return jwe.encrypt_compact({"alg": alg, "enc": enc, "kid": key.kid, **extra}, plaintext, key,
                               algorithms=[alg, enc])


def mint_jws(keys: Keys, alg: str, payload: bytes = b'{"sub":"alice"}', **extra: Any) -> str:
    return jws.serialize_compact({"alg": alg, "kid": alg, **extra}, payload, keys.sig[alg], algorithms=[alg])


@pytest.mark.parametrize("alg, enc, crv", JWE_CASES, ids=[f"{a}-{e}-{c}" for a, e, c in JWE_CASES])
def test_jwe_minted_by_joserfc_decrypts_identically_on_the_direct_path(keys, alg, enc, crv) -> None:
    for extra in ({}, {"cty": "JWT", "typ": "JOSE"}, {"apu": b64(b"Alice"), "apv": b64(os.urandom(9))}):
        if "apu" in extra and alg not in ECDH_ALGS:
            continue
        plaintext = os.urandom(40)
        token = mint_jwe(keys, alg, enc, crv, plaintext, **extra)
        result = same_decrypt(keys, token)
        assert result[0] == "ok" and result[2] == plaintext
        assert took_direct_path(token.encode(), 5, keys.dec_ring, "enc")


@pytest.mark.parametrize("alg", JWS_ALGS)
def test_jws_minted_by_joserfc_verifies_identically_on_the_direct_path(keys, alg) -> None:
    for extra in ({}, {"typ": "at+jwt", "cty": "JWT"}):
        payload = json.dumps({"sub": b64(os.urandom(8))}).encode()
        token = mint_jws(keys, alg, payload, **extra)
        result = same_verify(keys, token)
        assert result[0] == "ok" and result[2] == payload
        assert took_direct_path(token.encode(), 3, keys.sig_ring, "sig")


def test_empty_plaintext_is_empty_bytes_on_both_paths(keys) -> None:
    for alg, crv in (("ECDH-ES", "P-256"), ("dir", None)):
        result = same_decrypt(keys, mint_jwe(keys, alg, "A128GCM", crv, b""))
        assert result[0] == "ok" and result[2] == b"" and type(result[2]) is bytes


# -- byte mutations of minted tokens -----------------------------------------------------------
def mutated(token: str, segment: int, pos: int, how: str, char: str, bit: int) -> str:
    """`token` with one segment changed: a character replaced or bit-flipped, cut at `pos`, dropped, or
    extended."""
    parts = token.split(".")
    seg = parts[segment]
    i = pos % max(len(seg), 1)
    if how == "replace" and seg:
        seg = seg[:i] + char + seg[i + 1:]
    elif how == "flip" and seg:
        seg = seg[:i] + chr(ord(seg[i]) ^ (1 << bit)) + seg[i + 1:]
    elif how == "truncate":
        seg = seg[:i]
    elif how == "drop":
        seg = ""
    else:
        seg = seg + char * (1 + bit)
    parts[segment] = seg
    return ".".join(parts)


@hsettings(max_examples=400, **SETTINGS)
@given(case=st.sampled_from(JWE_CASES), segment=st.integers(0, 4), pos=st.integers(0, 10**6),
       how=st.sampled_from(["replace", "flip", "truncate", "drop", "extend"]), char=st.sampled_from(B64_CHARS),
       bit=st.integers(0, 7))
def test_mutated_jwe_gets_the_same_verdict(keys, case, segment, pos, how, char, bit) -> None:
    token = mutated(mint_jwe(keys, *case), segment, pos, how, char, bit)
    same_decrypt(keys, token)
    event("direct" if took_direct_path(token.encode(), 5, keys.dec_ring, "enc") else "fallback")


@hsettings(max_examples=300, **SETTINGS)
@given(alg=st.sampled_from(JWS_ALGS), segment=st.integers(0, 2), pos=st.integers(0, 10**6),
       how=st.sampled_from(["replace", "flip", "truncate", "drop", "extend"]), char=st.sampled_from(B64_CHARS),
       bit=st.integers(0, 7))
def test_mutated_jws_gets_the_same_verdict(keys, alg, segment, pos, how, char, bit) -> None:
    same_verify(keys, mutated(mint_jws(keys, alg), segment, pos, how, char, bit))


# -- forged tokens: hostile headers, valid cryptography wherever it can be ----------------------
def curve_point(crv: str, x: int) -> tuple[int, int] | None:
    """The point (x, y) of the curve, if x is an x-coordinate (p = 3 mod 4 for all three curves)."""
    curve = CURVES[crv]
    g = ec.generate_private_key(curve).public_key().public_numbers()
    p = jose_direct._CURVES[curve.name][2]
    b = (g.y * g.y - g.x ** 3 + 3 * g.x) % p
    rhs = (x ** 3 - 3 * x + b) % p
    y = pow(rhs, (p + 1) // 4, p)
    return (x, y) if y * y % p == rhs else None


def small_point(crv: str) -> tuple[int, int]:
    return next(pt for x in range(1, 200) if (pt := curve_point(crv, x)))


def coord(n: int, size: int | None) -> str:
    return b64(n.to_bytes(size if size is not None else max(1, (n.bit_length() + 7) // 8), "big"))


def epk_variants(crv: str, edited: bool) -> st.SearchStrategy:
    """(the point the sender agreed with, the `epk` shown in the header): equal unless `edited`."""
    curve = CURVES[crv]
    size, p = jose_direct._CURVES[curve.name][1:]

    def fresh(_: Any) -> dict[str, Any]:
        n = ec.generate_private_key(curve).public_key().public_numbers()
        return {"kty": "EC", "crv": crv, "x": coord(n.x, size), "y": coord(n.y, size)}

    def small(kind: str) -> dict[str, Any]:
        x, y = small_point(crv)
        if kind == "stripped":  # leading zero bytes dropped: joserfc reads the integer anyway
            return {"kty": "EC", "crv": crv, "x": coord(x, None), "y": coord(y, size)}
        if kind == "x+p":  # not reduced mod p, still `size` bytes long
            return {"kty": "EC", "crv": crv, "x": coord(x + p, size), "y": coord(y, size)}
        return {"kty": "EC", "crv": crv, "x": coord(x, size), "y": coord(y, size)}

    def tweak(pair: tuple[dict[str, Any], tuple[str, Any]]) -> Any:
        epk, (what, value) = pair
        epk = dict(epk)
        if what == "set":
            epk.update(value)
        elif what == "drop":
            epk.pop(value, None)
        elif what == "coord":  # replace a coordinate with raw bytes
            name, raw = value
            epk[name] = b64(raw)
        elif what == "other":
            return value
        elif what == "negate_y":
            epk["y"] = coord(p - base64_to_int(epk["y"]), size)
        elif what == "y_plus_p":
            epk["y"] = coord(base64_to_int(epk["y"]) + p, None)
        elif what == "bad_b64":
            epk["x"] = epk["x"][:-1] + ("B" if epk["x"][-1] != "B" else "C") if len(epk["x"]) % 4 == 2 \
                else epk["x"] + "="
        return epk

    other_crv = [c for c in CURVES if c != crv]
    edits = st.one_of(
        st.tuples(st.just("set"), st.sampled_from([
            {"kty": "OKP"}, {"kty": 5}, {"crv": other_crv[0]}, {"crv": "secp256k1"}, {"crv": 1}, {"kid": "e"},
            {"use": "enc"}, {"use": "sig"}, {"key_ops": ["deriveKey"]}, {"key_ops": ["sign"]}, {"alg": "ECDH-ES"},
            {"ext": True}, {"x": 5}, {"y": None}, {"d": b64(os.urandom(size))}])),
        st.tuples(st.just("drop"), st.sampled_from(["kty", "crv", "x", "y"])),
        st.tuples(st.just("coord"), st.tuples(st.sampled_from(["x", "y"]),
                                              st.binary(min_size=size - 1, max_size=size + 1))),
        st.tuples(st.just("other"), st.sampled_from(["epk", 5, None, ["EC"], {}])),
        st.tuples(st.sampled_from(["negate_y", "y_plus_p", "bad_b64"]), st.none()),
    )
    base = st.one_of(st.builds(fresh, st.none()), st.sampled_from(["stripped", "x+p", "small"]).map(small))
    if not edited:
        return base.map(lambda epk: (epk, epk))
    return st.tuples(base, edits).map(lambda pair: (pair[0], tweak(pair)))


def agreed_key(key: ECKey, hdr: dict[str, Any], epk: dict[str, Any] | None = None) -> bytes | None:
    """What joserfc derives for this header (with `epk` instead of the header's, if given), computed
    from the recipient's side: we own the key."""
    try:
        epk = epk or hdr["epk"]
        peer = ec.EllipticCurvePublicNumbers(base64_to_int(epk["x"]), base64_to_int(epk["y"]),
                                             CURVES[epk["crv"]]).public_key()
        z = key.private_key.exchange(ec.ECDH(), peer)
        kw = hdr["alg"].partition("+")[2]
        return derive_key_for_concat_kdf(z, hdr, ENCS[hdr["enc"]] * 8, KWS[kw] * 8 if kw else None)
    except Exception:
        return None


def wrap(kek: bytes, cek: bytes) -> bytes:
    try:
        return aes_key_wrap(kek, cek)
    except ValueError:  # a KEK or CEK length AES key wrap cannot take
        return os.urandom(len(cek) + 8)


def forge_jwe(key: Any, hdr: dict[str, Any], plaintext: bytes, *, ek: bytes | None = None, iv_len: int = 12,
              tag_len: int = 16, cek_len: int | None = None, shift: int = 0,
              agree_epk: dict[str, Any] | None = None) -> str:
    """A compact JWE with this exact header, encrypted to `key` as far as the header allows; with
    `agree_epk`, the ECDH agreement uses that point whatever the header's `epk` says, so a reader that
    ignored a difference in the header's `epk` would accept the token."""
    alg, enc = hdr.get("alg"), hdr.get("enc")
    cek = os.urandom(cek_len or ENCS.get(enc, 32))
    wrapped = os.urandom(len(cek) + 8)
    if alg == "dir":
        cek, wrapped = key.raw_value, b""
    elif alg in KWS:
        wrapped = wrap(key.raw_value, cek)
    elif alg in RSA_ALGS:
        md = hashes.SHA1() if alg == "RSA-OAEP" else hashes.SHA256()
        wrapped = key.public_key.encrypt(cek, padding.OAEP(padding.MGF1(md), md, None))
    elif alg in ECDH_ALGS:
        agreed = agreed_key(key, hdr, agree_epk)
        if alg == "ECDH-ES":
            cek, wrapped = (agreed or cek), b""
        elif agreed is not None:
            wrapped = wrap(agreed, cek)
    segment = b64json(hdr)
    iv = os.urandom(iv_len)
    try:
        sealed = AESGCM(cek).encrypt(iv, plaintext, segment.encode())
        ciphertext, tag = sealed[:-16], sealed[-16:]
    except ValueError:  # a key or nonce length AES-GCM cannot take: the token cannot be valid anyway
        ciphertext, tag = os.urandom(len(plaintext)), os.urandom(16)
    tag = (tag + os.urandom(16))[:tag_len]
    if shift > 0:  # ciphertext || tag unchanged, split elsewhere: AES-GCM over the concatenation would pass
        ciphertext, tag = ciphertext[:-shift], ciphertext[-shift:] + tag
    elif shift < 0:
        ciphertext, tag = ciphertext + tag[:-shift], tag[-shift:]
    return ".".join([segment, b64(wrapped if ek is None else ek), b64(iv), b64(ciphertext), b64(tag)])


EXTRA_MEMBERS = st.sampled_from([
    {"cty": "JWT"}, {"typ": "JWT"}, {"typ": 5}, {"cty": None}, {"jku": "https://keys.example/jwks"},
    {"jku": "ftp://keys.example"}, {"x5c": ["MIIB"]}, {"x5c": "MIIB"}, {"x5t": "abc"}, {"x5u": "https://x.example"},
    {"jwk": {"kty": "oct"}}, {"jwk": "k"}, {"b64": True}, {"b64": "yes"}, {"foo": 1}, {"iv": "AAAA"},
    {"tag": "AAAA"}, {"p2c": 1000}, {"apu": b64(b"Alice")}, {"apv": b64(b"Bob")}, {"apu": ""}, {"apu": "QQ="},
    {"apu": "QR"}, {"apu": "Q"}, {"apv": 7}, {"apu": "\udcff"}, {"epk": {"kty": "EC"}},
    {"cty": "x" * 300}, {"cty": "x" * 400}, {"cty": "x" * 700}, {"cty": "x" * 900},  # joserfc's size limits
])


JWE_DEFECTS = {
    "extra": EXTRA_MEMBERS,
    "ek": st.sampled_from([b"", bytes(40), b"\x01" * 23, bytes(24), bytes(256)]),
    "iv_len": st.sampled_from([0, 8, 11, 13, 16]),
    "tag_len": st.sampled_from([0, 4, 15, 17, 32]),
    "cek_len": st.sampled_from([16, 24, 32, 20]),
    "shift": st.sampled_from([-2, -1, 1, 2]),
    "epk": st.none(),
    "no_epk": st.none(),
}


@hsettings(max_examples=600, **SETTINGS)
@given(data=st.data(), case=st.sampled_from(JWE_CASES), plaintext=st.binary(max_size=64),
       defects=st.lists(st.sampled_from(sorted(JWE_DEFECTS)), max_size=2, unique=True))
def test_forged_jwe_gets_the_same_verdict(keys, data, case, plaintext, defects) -> None:
    alg, enc, crv = case
    kid = jwe_kid(alg, enc, crv)
    hdr: dict[str, Any] = {"alg": alg, "enc": enc, "kid": kid}
    if alg in ECDH_ALGS and "no_epk" not in defects:
        agree_epk, hdr["epk"] = data.draw(epk_variants(crv, edited="epk" in defects), label="epk")
    else:
        agree_epk = None
    chosen = {name: data.draw(JWE_DEFECTS[name], label=name) for name in defects if name not in ("epk", "no_epk")}
    hdr.update(chosen.pop("extra", {}))
    token = forge_jwe(keys.enc[kid], hdr, plaintext, agree_epk=agree_epk, **chosen)
    result = same_decrypt(keys, token)
    event(f"{result[0]} {result[1] if result[0] != 'ok' else ''}")
    event("direct" if took_direct_path(token.encode(), 5, keys.dec_ring, "enc") else "fallback")


def forge_jws(key: Any, hdr: dict[str, Any], payload: bytes, sign_alg: str) -> tuple[str, str, bytes]:
    head, body = b64json(hdr), b64(payload)
    return head, body, JWSRegistry.algorithms[sign_alg].sign(f"{head}.{body}".encode(), key)


def resign(key: Any, alg: str, signing_input: bytes, sig: bytes, how: str) -> bytes:
    if how == "high_s" and alg in ES_CURVE:  # (r, n - s): also a valid ECDSA signature
        size = len(sig) // 2
        n = CURVES[ES_CURVE[alg]].group_order
        return sig[:size] + (n - int.from_bytes(sig[size:], "big")).to_bytes(size, "big")
    if how == "der" and alg in ES_CURVE:
        return key.private_key.sign(signing_input, ec.ECDSA(hashes.SHA256()))
    if how == "pss_max_salt" and alg in ("PS256", "RS256"):
        return key.private_key.sign(signing_input, padding.PSS(padding.MGF1(hashes.SHA256()),
                                                               padding.PSS.MAX_LENGTH), hashes.SHA256())
    if how == "pkcs1" and alg in ("PS256", "RS256"):
        return key.private_key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    if how == "zero_s" and alg in ES_CURVE:
        return sig[:len(sig) // 2] + bytes(len(sig) // 2)
    if how == "r_is_n" and alg in ES_CURVE:
        size = len(sig) // 2
        return CURVES[ES_CURVE[alg]].group_order.to_bytes(size, "big") + sig[size:]
    if how in ("pad_s", "strip_s") and alg in ES_CURVE:  # the same (r, s), but not 2 x 32 bytes
        size = len(sig) // 2
        while how == "strip_s" and sig[size]:  # sign until s has a leading zero byte, then drop it
            sig = JWSRegistry.algorithms[alg].sign(signing_input, key)
        return sig[:size] + b"\x00" + sig[size:] if how == "pad_s" else sig[:size] + sig[size + 1:]
    if how == "truncate":
        return sig[:-1]
    if how == "extend":
        return sig + b"\x00"
    if how == "empty":
        return b""
    if how == "flip":
        return sig[:5] + bytes([sig[5] ^ 1]) + sig[6:]
    return sig


@hsettings(max_examples=400, **SETTINGS)
@given(alg=st.sampled_from(JWS_ALGS), extra=st.just({}) | EXTRA_MEMBERS,
       how=st.sampled_from(["keep"]) | st.sampled_from(["high_s", "der", "pss_max_salt", "pkcs1", "zero_s",
                                                         "r_is_n", "pad_s", "truncate", "extend", "empty", "flip"]),
       payload=st.binary(max_size=64) | st.just(b"x" * 96_001))
def test_forged_jws_gets_the_same_verdict(keys, alg, extra, how, payload) -> None:
    hdr = {"alg": alg, "kid": alg, **extra}
    head, body, sig = forge_jws(keys.sig[alg], hdr, payload, alg)
    sig = resign(keys.sig[alg], alg, f"{head}.{body}".encode(), sig, how)
    token = f"{head}.{body}.{b64(sig)}"
    result = same_verify(keys, token)
    event(f"{result[0]} {result[1] if result[0] != 'ok' else ''}")
    event("direct" if took_direct_path(token.encode(), 3, keys.sig_ring, "sig") else "fallback")


# -- the joserfc behaviours the direct path mirrors (or leaves to joserfc), named ---------------
def ecdh_token(keys: Keys, crv: str, epk: dict[str, Any], alg: str = "ECDH-ES+A128KW", **kw: Any) -> str:
    hdr = {"alg": alg, "enc": "A256GCM", "kid": f"ec-{crv}", "epk": epk}
    return forge_jwe(keys.enc[f"ec-{crv}"], hdr, b"a.b.c", **kw)


@pytest.mark.parametrize("crv", list(CURVES))
def test_epk_forms_joserfc_accepts_are_accepted(keys, crv) -> None:
    size, p = jose_direct._CURVES[CURVES[crv].name][1:]
    x, y = small_point(crv)
    canonical = {"kty": "EC", "crv": crv, "x": coord(x, size), "y": coord(y, size)}
    for epk in (canonical,
                {**canonical, "x": coord(x, None)},  # leading zero bytes stripped
                {**canonical, "x": coord(x + p, size)},  # not reduced mod p
                {**canonical, "y": coord(y + p, None)},
                {**canonical, "kty": "OKP"},  # joserfc imports by the header's alg, not by kty
                {**canonical, "kid": "ephemeral", "use": "enc"}):
        assert same_decrypt(keys, ecdh_token(keys, crv, epk))[0] == "ok", epk
    assert took_direct_path(ecdh_token(keys, crv, canonical).encode(), 5, keys.dec_ring, "enc")


@pytest.mark.parametrize("crv", list(CURVES))
def test_epk_forms_joserfc_refuses_are_refused(keys, crv) -> None:
    size = jose_direct._CURVES[CURVES[crv].name][1]
    x, y = small_point(crv)
    canonical = {"kty": "EC", "crv": crv, "x": coord(x, size), "y": coord(y, size)}
    other = next(c for c in CURVES if c != crv)
    for epk in ({**canonical, "y": coord(y ^ 1, size)},  # not on the curve
                {**canonical, "crv": other},
                {**canonical, "key_ops": ["sign"]},
                {k: v for k, v in canonical.items() if k != "kty"}):
        token = ecdh_token(keys, crv, epk, agree_epk=canonical)  # valid for a reader that ignored the change
        assert same_decrypt(keys, token) == ("refused", "decrypt_failed"), epk
    good = {"kty": "EC", "crv": crv, **{k: coord(v, size) for k, v in zip("xy", small_point(crv), strict=True)}}
    for kw in ({"ek": b"\x01" * 40}, {"tag_len": 15}, {"tag_len": 17}, {"iv_len": 16}, {"cek_len": 16},
               {"shift": 1}, {"shift": -1}):  # a 17- or 15-byte tag, though ciphertext || tag is intact
        alg = "ECDH-ES" if "ek" in kw else "ECDH-ES+A128KW"
        assert same_decrypt(keys, ecdh_token(keys, crv, good, alg=alg, **kw)) == ("refused", "decrypt_failed"), kw


def test_jwe_headers_joserfc_refuses_are_refused(keys) -> None:
    key = keys.enc["kw-A256KW"]
    base = {"alg": "A256KW", "enc": "A256GCM", "kid": "kw-A256KW"}
    assert same_decrypt(keys, forge_jwe(key, base, b"a.b.c"))[0] == "ok"
    for extra in ({"foo": 1}, {"epk": {"kty": "EC"}}, {"typ": 5}, {"jku": "ftp://x"}, {"b64": "no"}):
        assert same_decrypt(keys, forge_jwe(key, {**base, **extra}, b"a.b.c")) == ("refused", "decrypt_failed")
    big = {**base, "cty": "x" * 800}  # header segment over joserfc's 1024 bytes
    assert same_decrypt(keys, forge_jwe(key, big, b"a.b.c")) == ("refused", "decrypt_failed")
    assert same_decrypt(keys, forge_jwe(key, {**base, "cty": "x" * 700}, b"a.b.c"))[0] == "ok"


def test_key_material_checks_match(keys) -> None:
    """key_ops, public-only keys and key lengths: joserfc's `get_op_key` decides on both paths."""
    ec_key, rsa = keys.enc["ec-P-256"], keys.enc["rsa"]

    def like(key: Any, private: bool = True, **params: Any) -> Any:
        return type(key).import_key(key.as_dict(private=private), {"kid": "k", **params})

    def oct_key(size: int, **params: Any) -> OctKey:
        return OctKey.import_key({"kty": "oct", "k": b64(bytes(size)), **params}, {"kid": "k"})

    cases = [
        (like(ec_key, key_ops=["deriveKey"]), "ECDH-ES+A256KW", "ok"),
        (like(ec_key, key_ops=["decrypt"]), "ECDH-ES", "ok"),  # joserfc checks no key_ops of ours for ECDH
        (like(ec_key, private=False), "ECDH-ES", "decrypt_failed"),
        (like(rsa, key_ops=["decrypt"]), "RSA-OAEP", "ok"),
        (like(rsa, key_ops=["unwrapKey"]), "RSA-OAEP", "decrypt_failed"),
        (like(rsa, private=False), "RSA-OAEP-256", "decrypt_failed"),
        (oct_key(32, key_ops=["unwrapKey"]), "A256KW", "ok"),
        (oct_key(32, key_ops=["decrypt"]), "A256KW", "decrypt_failed"),
        (oct_key(24), "A256KW", "decrypt_failed"),
        (oct_key(16), "dir", "decrypt_failed"),
        (oct_key(32, key_ops=["decrypt"]), "dir", "ok"),
    ]
    for key, alg, want in cases:
        ring = KeyRing(KeySet([key]))
        hdr: dict[str, Any] = {"alg": alg, "enc": "A256GCM", "kid": "k"}
        if alg.startswith("ECDH"):
            n = ec.generate_private_key(ec.SECP256R1()).public_key().public_numbers()
            hdr["epk"] = {"kty": "EC", "crv": "P-256", "x": coord(n.x, 32), "y": coord(n.y, 32)}
        forger = ec_key if alg.startswith("ECDH") else key  # the full private key where the ring has less
        result = same_decrypt(keys, forge_jwe(forger, hdr, b"a.b.c"), ring)
        assert (result[0] if want == "ok" else result[1]) == want, (key.as_dict(), alg)


def test_jws_behaviours_match(keys) -> None:
    es = keys.sig["ES256"]
    head, body, sig = forge_jws(es, {"alg": "ES256", "kid": "ES256"}, b"{}", "ES256")
    si = f"{head}.{body}".encode()
    assert same_verify(keys, f"{head}.{body}.{b64(sig)}")[0] == "ok"
    assert same_verify(keys, f"{head}.{body}.{b64(resign(es, 'ES256', si, sig, 'high_s'))}")[0] == "ok"
    for how in ("der", "zero_s", "r_is_n", "pad_s", "strip_s", "truncate", "extend", "empty"):
        assert same_verify(keys, f"{head}.{body}.{b64(resign(es, 'ES256', si, sig, how))}") == \
            ("refused", "bad_signature"), how
    ps = keys.sig["PS256"]
    head, body, sig = forge_jws(ps, {"alg": "PS256", "kid": "PS256"}, b"{}", "PS256")
    si = f"{head}.{body}".encode()
    assert same_verify(keys, f"{head}.{body}.{b64(sig)}")[0] == "ok"
    # joserfc verifies PSS with salt length = digest length (32), not "auto": a max-salt signature fails
    assert same_verify(keys, f"{head}.{body}.{b64(resign(ps, 'PS256', si, sig, 'pss_max_salt'))}") == \
        ("refused", "bad_signature")
    for extra in ({"foo": 1}, {"jku": "ftp://x"}, {"b64": "yes"}, {"kid": "PS256", "cty": "x" * 400}):
        head, body, sig = forge_jws(ps, {"alg": "PS256", "kid": "PS256", **extra}, b"{}", "PS256")
        assert same_verify(keys, f"{head}.{body}.{b64(sig)}") == ("refused", "bad_signature"), extra
    for extra in ({"b64": True}, {"jku": "https://x.example"}, {"x5t": "t"}):  # left to joserfc, which accepts
        head, body, sig = forge_jws(ps, {"alg": "PS256", "kid": "PS256", **extra}, b"{}", "PS256")
        assert same_verify(keys, f"{head}.{body}.{b64(sig)}")[0] == "ok", extra


def test_direct_path_follows_a_key_rotation(keys, tmp_path) -> None:
    """Key objects are read from the ring on every call: a reloaded key set is used at once."""
    path = tmp_path / "dec.jwks.json"
    old, new = (ECKey.generate_key("P-256", {"kid": "rot"}) for _ in range(2))
    path.write_text(json.dumps(KeySet([old]).as_dict(private=True)))
    ticks = iter(range(0, 10_000, 10))
    ring = KeyRing.from_file(path, reload_seconds=5, clock=lambda: next(ticks))
    direct = TokenDecryptor(ring, algorithms=["ECDH-ES"], encryptions=["A128GCM"])
    to = {"old": jwe.encrypt_compact({"alg": "ECDH-ES", "enc": "A128GCM", "kid": "rot"}, b"x", old,
                                     algorithms=["ECDH-ES", "A128GCM"]),
          "new": jwe.encrypt_compact({"alg": "ECDH-ES", "enc": "A128GCM", "kid": "rot"}, b"y", new,
                                     algorithms=["ECDH-ES", "A128GCM"])}
    assert direct.decrypt(to["old"].encode())[1] == b"x"
    path.write_text(json.dumps(KeySet([new]).as_dict(private=True)))
    os.utime(path, ns=(10**9, 10**9))  # a new stamp even within one timestamp tick
    assert direct.decrypt(to["new"].encode())[1] == b"y"
    with pytest.raises(Refused):
        direct.decrypt(to["old"].encode())
