"""Conformance: RFC 7520 (JOSE cookbook) and Wycheproof JWE/JWS vectors through our two JOSE layers.

Policy refusals of `valid` vectors are listed here with their reason, so a change in what we accept
is a visible change to this file, never a silent one.
"""

from __future__ import annotations

import glob
import json
from pathlib import Path

import pytest

from ingest.jose_parse import Refused
from ingest.keyring import KeyRing
from ingest.token_crypto import SignatureVerifier
from ingest.tokens import TokenValidator
from tests.ingest.jose_vectors import FIXTURES, decryptor, load, ring, verifier, wycheproof

ALLOWED_COOKBOOK = {"5_2", "5_4", "5_5", "5_6", "5_7", "5_8"}
FORBIDDEN_COOKBOOK = {"5_1": "disallowed_alg", "5_3": "disallowed_alg", "5_9": "disallowed_alg"}  # RSA1_5, PBES2, zip


def cookbook_cases() -> list[tuple[str, dict]]:
    out = []
    for path in sorted(glob.glob(str(FIXTURES / "rfc7520" / "5_*.json"))):
        section = Path(path).name.split(".")[0]
        out.append((section, json.loads(Path(path).read_text())))
    return out


@pytest.mark.parametrize("section, case", cookbook_cases(), ids=[c[0] for c in cookbook_cases()])
def test_rfc7520_compact_jwe(section: str, case: dict) -> None:
    key = case["input"].get("key") or {"kty": "oct", "k": "AAAA"}  # 5.3 is password-based: no JWK
    compact = case["output"]["compact"].encode()
    if section in ALLOWED_COOKBOOK:
        _, plaintext = decryptor(key).decrypt(compact)
        assert plaintext.decode() == case["input"]["plaintext"]
    else:
        with pytest.raises(Refused) as refused:
            decryptor(key).decrypt(compact)
        assert refused.value.verdict == FORBIDDEN_COOKBOOK[section]


def test_rfc7520_section6_nested_token_verifies_before_exp() -> None:
    case = load("rfc7520/6.nesting_signatures_and_encryption.json")
    compact = case["encrypt"]["output"]["compact"]
    sign_key = {k: v for k, v in case["sign"]["input"]["key"].items() if k not in ("d", "p", "q", "dp", "dq", "qi")}
    validator = TokenValidator(
        decryptor=decryptor(case["encrypt"]["input"]["key"]),
        verifier=SignatureVerifier(ring(sign_key), algorithms=["PS256"], typ=["JWT"]),
        issuers=["hobbiton.example"], audiences=["api://gateway"], max_lifetime_seconds=86_400)
    exp = 1300819380
    # Both layers open: RSA-OAEP decrypts, the PS256 signature of the issuer verifies.
    _, inner = validator.decryptor.decrypt(compact.encode())
    header, payload = validator.verifier.verify(inner)
    assert header == {"alg": "PS256", "typ": "JWT"}
    assert json.loads(payload) == {"iss": "hobbiton.example", "exp": exp, "http://example.com/is_root": True}
    # The cookbook's claims have no `aud`, which CONTRACT.md §2 requires, so the full validator
    # refuses the token for its claims, not its cryptography; a changed tag breaks decryption.
    assert validator.check(compact, exp - 60).verdict == "invalid_claims"
    tampered = compact[:-4] + ("AAAA" if compact[-4:] != "AAAA" else "BBBB")
    assert validator.check(tampered, exp - 60).verdict == "decrypt_failed"


# -- Wycheproof --------------------------------------------------------------------------------
# `valid` vectors we refuse on purpose, and why.
POLICY_REFUSALS = {
    "A192": "disallowed_alg",  # 192-bit AES variants are not in CONTRACT.md's allow-lists
    "RSA1_5": "disallowed_alg",  # refused by CONTRACT.md §2 (Bleichenbacher) unless explicitly enabled
    "RS384": "disallowed_alg", "RS512": "disallowed_alg", "PS384": "disallowed_alg", "PS512": "disallowed_alg",
    "ES512": "disallowed_alg",  # JWS allow-list: RS256 PS256 ES256 EdDSA HS256
    "zip": "disallowed_alg",  # compressed JWE (RFC 7520 5.9, Figure 170): decompression bombs
}
# `valid` vectors whose text holds a '?' inside a base64url segment: we never skip characters.
STRICT_BASE64 = {"base64-372-InvalidCharacterInsertedInHeader", "base64-373-InvalidCharacterInsertedInPayload"}
# `invalid` vectors byte-identical to a `valid` vector of the same group (the file's own inconsistency).
SAME_AS_VALID = {"base64-367-invalidBase64Padding", "base64-370-invalidBase64PaddingInPayload"}


def _alg_of(compact: str) -> str:
    import base64

    head = compact.split(".")[0]
    try:
        h = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
        return f"{h.get('alg')} {h.get('enc', '')} {'zip' if 'zip' in h else ''}"
    except ValueError:
        return "?"


_LAYERS: dict[tuple[object, str], object] = {}


def _run(layer, key: dict, compact: str) -> str:
    cache_key = (layer, json.dumps(key, sort_keys=True))
    if cache_key not in _LAYERS:  # importing an RSA private key is slow: once per group key
        try:
            _LAYERS[cache_key] = layer(key)
        except Exception:  # joserfc cannot import the key (e.g. an "ES521" JWK): nothing is accepted
            _LAYERS[cache_key] = None
    obj = _LAYERS[cache_key]
    if obj is None:
        return "key_refused"
    try:
        (obj.decrypt if hasattr(obj, "decrypt") else obj.verify)(compact.encode())
        return "accepted"
    except Refused as refused:
        return refused.verdict


JWE = wycheproof("json_web_encryption_test.json", "jwe")
JWS = wycheproof("json_web_signature_test.json", "jws")


@pytest.mark.parametrize("layer, vectors", [(decryptor, JWE), (verifier, JWS)], ids=["jwe", "jws"])
def test_wycheproof_invalid_vectors_are_all_refused(layer, vectors) -> None:
    field = "jwe" if layer is decryptor else "jws"
    accepted = [tid for tid, key, t in vectors if t["result"] == "invalid" and _run(layer, key, t[field]) == "accepted"]
    assert set(accepted) <= SAME_AS_VALID
    assert len([v for v in vectors if v[2]["result"] == "invalid"]) > 60


def test_the_two_inconsistent_vectors_really_equal_a_valid_one() -> None:
    by_id = {tid: t["jws"] for tid, _, t in JWS}
    valid_texts = {t["jws"] for _, _, t in JWS if t["result"] == "valid"}
    assert all(by_id[tid] in valid_texts for tid in SAME_AS_VALID)


@pytest.mark.parametrize("layer, vectors, field, expect_accepted",
                         [(decryptor, JWE, "jwe", 42), (verifier, JWS, "jws", 23)], ids=["jwe", "jws"])
def test_wycheproof_valid_vectors_refused_only_by_policy(layer, vectors, field, expect_accepted) -> None:
    accepted = 0
    for tid, key, t in vectors:
        if t["result"] != "valid":
            continue
        verdict = _run(layer, key, t[field])
        if verdict == "accepted":
            accepted += 1
            continue
        alg = _alg_of(t[field])
        if tid in STRICT_BASE64:
            assert verdict == "malformed", tid
        elif verdict == "key_refused":
            # joserfc will not import a JWK naming a non-existent algorithm ("ES521") or an
            # unregistered `key_ops` value: such a key set is refused when loaded, never half-used.
            bad_ops = set(key.get("key_ops", [])) - {"sign", "verify", "encrypt", "decrypt", "wrapKey",
                                                     "unwrapKey", "deriveKey", "deriveBits"}
            assert key.get("alg") == "ES521" or bad_ops, tid
        else:
            reasons = [r for name, r in POLICY_REFUSALS.items() if name in alg]
            assert reasons and verdict == reasons[0], (tid, alg, verdict)
    assert accepted == expect_accepted  # every other valid vector is refused above, each for its reason


def test_key_ring_refuses_a_key_for_the_wrong_algorithm() -> None:
    """Wycheproof's WrongPrimitive idea, stated directly: a JWK's `alg` binds the key."""
    key = {"kty": "oct", "kid": "k", "alg": "A128KW", "k": "AAAAAAAAAAAAAAAAAAAAAA"}
    with pytest.raises(Refused) as refused:
        KeyRing.pick(ring(key), {"alg": "A128GCMKW", "kid": "k", "enc": "A128GCM"}, "enc")
    assert refused.value.verdict == "disallowed_alg"
