"""Token validation basics; the conformance and hostile-input suites belong to the tokens issue."""

import base64
import json

from joserfc import jwe
from joserfc.jwk import ECKey

from gatewatch.keys import load_key_set
from ingest.tokens import fingerprint
from tests.conftest import T0, validator_for


def claims(**over):
    return {"sub": "alice", "client_id": "web", "tid": "acme", "jti": "j-1", "iat": T0, "exp": T0 + 600, **over}


def test_nested_token_ok_and_claims_read(minter, validator) -> None:
    tok = minter.mint(claims(cnf={"jkt": "thumb"}))
    info = validator.check(tok, T0 + 5)
    assert info.verdict == "ok" and info.encrypted
    assert (info.sub, info.client_id, info.tid, info.jti, info.cnf_jkt) == ("alice", "web", "acme", "j-1", "thumb")
    assert info.tfp == fingerprint(tok) and len(info.tfp) == 16


def test_expiry_is_evaluated_at_each_use_even_when_cached(minter, validator) -> None:
    tok = minter.mint(claims())
    assert validator.check(tok, T0 + 10).verdict == "ok"
    late = validator.check(tok, T0 + 600 + 31)
    assert late.verdict == "expired" and late.sub == "alice"  # claims kept for attribution
    assert validator.check(tok, T0 + 600 + 29).verdict == "ok"  # inside leeway
    assert validator.check(tok, T0 - 100).verdict == "ok"  # no nbf
    early = minter.mint(claims(nbf=T0 + 100, jti="j-2"))
    assert validator.check(early, T0).verdict == "not_yet_valid"


def test_plain_jws_is_accepted_but_marked_unencrypted(minter, validator) -> None:
    info = validator.check(minter.mint(claims(), encrypt=False), T0)
    assert info.verdict == "ok" and not info.encrypted


def test_wrong_issuer_audience_and_missing_exp(minter, validator) -> None:
    assert validator.check(minter.mint(claims(iss="https://evil")), T0).verdict == "wrong_issuer"
    assert validator.check(minter.mint(claims(aud="api://other")), T0).verdict == "wrong_audience"
    no_exp = claims()
    del no_exp["exp"]
    assert validator.check(minter.mint(no_exp), T0).verdict == "invalid_claims"
    assert validator.check(minter.mint(claims(exp=1e308)), T0).verdict == "invalid_claims"
    assert validator.check(minter.mint(claims(exp=T0 + 10 * 86_400)), T0).verdict == "invalid_claims"


def test_encrypted_but_unsigned_proves_nothing(keys_dir, validator) -> None:
    pub = next(k for k in load_key_set(keys_dir / "encryption-public.jwks.json").keys if k.kid == "enc-ec-1")
    forged = jwe.encrypt_compact({"alg": "ECDH-ES+A256KW", "enc": "A256GCM", "kid": "enc-ec-1"},
                                 json.dumps(claims()), pub, algorithms=["ECDH-ES+A256KW", "A256GCM"])
    assert validator.check(forged, T0).verdict == "not_signed"


def test_rogue_signer_with_a_real_kid(keys_dir, validator) -> None:
    from gatewatch.keys import TokenMinter
    from joserfc.jwk import KeySet

    rogue = ECKey.generate_key("P-256", parameters={"kid": "idp-es256-1", "alg": "ES256", "use": "sig"})
    m = TokenMinter(signing_keys=KeySet([rogue]), encryption_keys=load_key_set(keys_dir / "encryption-public.jwks.json"),
                    issuer="https://idp.example", audience="api://gateway")
    assert validator.check(m.mint(claims()), T0).verdict == "bad_signature"


def _b64(obj) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def test_cheap_refusals(validator, minter) -> None:
    assert validator.check("x" * 20_000, T0).verdict == "too_large"
    assert validator.check("abc", T0).verdict == "malformed"
    assert validator.check("a.b.c.d", T0).verdict == "malformed"
    assert validator.check(_b64({"alg": "none"}) + "." + _b64(claims()) + ".", T0).verdict == "disallowed_alg"
    assert validator.check(_b64({"alg": "RSA1_5", "enc": "A128GCM"}) + ".AAAA.AAAA.AAAA.AAAA", T0).verdict == "disallowed_alg"
    assert validator.check(_b64({"alg": "dir", "enc": "A128GCM", "zip": "DEF"}) + ".AAAA.AAAA.AAAA.AAAA", T0).verdict == "disallowed_alg"
    assert validator.check(_b64({"alg": "ES256", "kid": "nope"}) + "." + _b64(claims()) + ".c2ln", T0).verdict == "unknown_kid"
    assert validator.check(_b64({"alg": "ES256", "crit": ["x"]}) + "." + _b64(claims()) + ".c2ln", T0).verdict == "malformed"
    dup = base64.urlsafe_b64encode(b'{"alg":"ES256","alg":"none"}').rstrip(b"=").decode()
    assert validator.check(dup + ".e30.c2ln", T0).verdict == "malformed"
    utf16 = base64.urlsafe_b64encode('{"alg":"ES256"}'.encode("utf-16")).rstrip(b"=").decode()
    assert validator.check(utf16 + ".e30.c2ln", T0).verdict == "malformed"
    deep = base64.urlsafe_b64encode(b"[" * 5000 + b"]" * 5000).rstrip(b"=").decode()
    assert validator.check(deep + ".e30.c2ln", T0).verdict == "malformed"
    assert validator.check("!!!.e30.c2ln", T0).verdict == "malformed"
    tok = minter.mint(claims(), encrypt=False)
    head, body, sig = tok.split(".")
    tampered = ".".join([head, body, ("A" if sig[5] != "A" else "B").join([sig[:5], sig[6:]])])
    assert validator.check(tampered, T0).verdict == "bad_signature"


def test_lru_is_bounded(keys_dir, minter) -> None:
    v = validator_for(keys_dir, cache_size=3)
    toks = [minter.mint(claims(jti=f"j{i}")) for i in range(5)]
    for t in toks:
        assert v.check(t, T0).verdict == "ok"
    assert v.cache_len() == 3
