"""Hostile tokens of every class CONTRACT.md §2 and the tokens issue name: refused with the right
verdict, never an exception; plus property tests over random bytes, truncations and bit flips."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st
from joserfc import jwe, jws
from joserfc.jwk import OctKey, RSAKey

from gatewatch.cli import main
from gatewatch.keys import load_key_set
from ingest.keyring import KeyRing
from ingest.token_crypto import SignatureVerifier, TokenDecryptor
from ingest.tokens import VERDICTS, TokenValidator
from tests.conftest import T0, validator_for, write_config


def b64(data: bytes | str | dict) -> str:
    if isinstance(data, dict):
        data = json.dumps(data)
    if isinstance(data, str):
        data = data.encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims(**over):
    return {"iss": "https://idp.example", "aud": "api://gateway", "sub": "mallory", "exp": T0 + 600, "iat": T0, **over}


def enc_public(keys_dir, kid="enc-ec-1"):
    return next(k for k in load_key_set(keys_dir / "encryption-public.jwks.json").keys if k.kid == kid)


@pytest.fixture(scope="module")
def hostile(keys_dir, minter) -> dict[str, tuple[str, str]]:
    """name → (token, expected verdict)."""
    good = minter.mint(claims())
    head, enc_key, iv, ct, tag = good.split(".")
    plain = minter.mint(claims(), encrypt=False)
    ph, pp, ps = plain.split(".")
    pub = enc_public(keys_dir)
    unsigned = jwe.encrypt_compact({"alg": "ECDH-ES+A256KW", "enc": "A256GCM", "kid": "enc-ec-1"},
                                   json.dumps(claims()), pub, algorithms=["ECDH-ES+A256KW", "A256GCM"])
    issuer_pub = load_key_set(keys_dir / "issuer.jwks.json").keys[0]
    # RS/HS confusion: an HMAC keyed with the issuer's *public* key material, under its kid
    secret = OctKey.import_key(json.dumps(issuer_pub.as_dict(private=False)).encode())
    confused = jws.serialize_compact({"alg": "HS256", "kid": "idp-es256-1"}, json.dumps(claims()), secret,
                                     algorithms=["HS256"])
    return {
        "encrypted_but_unsigned": (unsigned, "not_signed"),
        "none_alg": (b64({"alg": "none", "typ": "JWT"}) + "." + b64(claims()) + ".", "disallowed_alg"),
        "rs_hs_confusion": (confused, "disallowed_alg"),
        "zip_bomb_header": (b64({"alg": "ECDH-ES+A256KW", "enc": "A256GCM", "zip": "DEF", "kid": "enc-ec-1"})
                            + f".{enc_key}.{iv}.{ct}.{tag}", "disallowed_alg"),
        "pbes2_huge_p2c": (b64({"alg": "PBES2-HS512+A256KW", "enc": "A256GCM", "p2c": 10**9, "p2s": "AAAAAAAAAAA"})
                           + f".{enc_key}.{iv}.{ct}.{tag}", "disallowed_alg"),
        "rsa1_5": (b64({"alg": "RSA1_5", "enc": "A256GCM", "kid": "enc-rsa-1"}) + f".{enc_key}.{iv}.{ct}.{tag}",
                   "disallowed_alg"),
        "truncated_gcm_tag": (f"{head}.{enc_key}.{iv}.{ct}.{tag[:8]}", "decrypt_failed"),  # 6 of 16 bytes
        "swapped_ciphertext": (f"{head}.{enc_key}.{iv}.{ct[:-4]}AAAA.{tag}", "decrypt_failed"),
        "utf16_header": (base64.urlsafe_b64encode('{"alg":"ES256"}'.encode("utf-16")).rstrip(b"=").decode()
                         + f".{pp}.{ps}", "malformed"),
        "duplicate_members": (b64('{"alg":"ES256","alg":"none"}') + f".{pp}.{ps}", "malformed"),
        "deep_json": (b64("[" * 5000 + "]" * 5000) + f".{pp}.{ps}", "malformed"),
        "deep_claims": (ph + "." + b64("[" * 5000 + "]" * 5000) + f".{ps}", "bad_signature"),
        "huge_200kb": ("A" * 200_000, "too_large"),
        "bad_base64": (f"{ph}.{pp}!.{ps}", "malformed"),
        "unknown_crit": (b64({"alg": "ES256", "crit": ["exp"], "exp": 1}) + f".{pp}.{ps}", "malformed"),
        "embedded_jwk_ignored": (b64({"alg": "ES256", "kid": "attacker", "jwk": {"kty": "oct", "k": "AAAA"}})
                                 + f".{pp}.{ps}", "unknown_kid"),
        "jku_ignored": (b64({"alg": "ES256", "jku": "https://evil.example/jwks"}) + f".{pp}.{ps}", "bad_signature"),
        "exp_1e308": (minter.mint(claims(exp=1e308)), "invalid_claims"),
        "wrong_typ": (jws.serialize_compact({"alg": "ES256", "typ": "dpop+jwt", "kid": "idp-es256-1"},
                                            json.dumps(claims()), load_key_set(keys_dir / "issuer-private.jwks.json").keys[0],
                                            algorithms=["ES256"]), "malformed"),
        "empty": ("", "malformed"),
        "not_a_token": ("hello world", "malformed"),
    }


CASES = ["encrypted_but_unsigned", "none_alg", "rs_hs_confusion", "zip_bomb_header", "pbes2_huge_p2c", "rsa1_5",
         "truncated_gcm_tag", "swapped_ciphertext", "utf16_header", "duplicate_members", "deep_json", "deep_claims",
         "huge_200kb", "bad_base64", "unknown_crit", "embedded_jwk_ignored", "jku_ignored", "exp_1e308", "wrong_typ",
         "empty", "not_a_token"]


@pytest.mark.parametrize("name", CASES)
def test_hostile_token_gets_its_verdict(name, hostile, validator) -> None:
    token, verdict = hostile[name]
    assert validator.check(token, T0 + 1).verdict == verdict


@pytest.mark.parametrize("name", CASES)
def test_token_inspect_refuses_hostile_tokens_without_a_traceback(name, hostile, tmp_path, keys_dir, capsys,
                                                                  monkeypatch) -> None:
    token, verdict = hostile[name]
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO(token))
    code = main(["token", "inspect", "-", "--config", str(write_config(tmp_path, keys_dir)),
                 "--at", "2026-11-18T11:07:00Z"])
    out, err = capsys.readouterr()
    if not token:
        assert code == 2 and "no token" in err  # nothing to inspect is a usage error
        return
    assert code == 1 and json.loads(out)["verdict"] == verdict
    assert "Traceback" not in out + err and (len(token) < 40 or token not in out)


def test_pbes2_stays_bounded_even_when_enabled(hostile, keys_dir) -> None:
    v = validator_for(keys_dir, insecure_algorithms=["PBES2-HS512+A256KW"],
                      jwe_algorithms=["PBES2-HS512+A256KW", "ECDH-ES+A256KW"])
    assert v.check(hostile["pbes2_huge_p2c"][0], T0).verdict == "disallowed_alg"


def test_rsa_oaep_256_tokens_are_accepted(keys_dir) -> None:
    from gatewatch.keys import TokenMinter

    m = TokenMinter(signing_keys=load_key_set(keys_dir / "issuer-private.jwks.json"),
                    encryption_keys=load_key_set(keys_dir / "encryption-public.jwks.json"),
                    issuer="https://idp.example", audience="api://gateway", enc_kid="enc-rsa-1")
    token = m.mint(claims())
    assert json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))["alg"] == "RSA-OAEP-256"
    assert validator_for(keys_dir).check(token, T0).verdict == "ok"


def test_a_key_is_used_only_for_its_jwk_alg(keys_dir) -> None:
    """The RSA key is published for RSA-OAEP-256: a token claiming RSA-OAEP under its kid is refused."""
    rsa_pub = enc_public(keys_dir, "enc-rsa-1")
    jwk = {**rsa_pub.as_dict(private=False), "alg": "RSA-OAEP"}
    token = jwe.encrypt_compact({"alg": "RSA-OAEP", "enc": "A256GCM", "kid": "enc-rsa-1"}, "a.b.c",
                                RSAKey.import_key(jwk), algorithms=["RSA-OAEP", "A256GCM"])
    assert validator_for(keys_dir).check(token, T0).verdict == "disallowed_alg"


def test_key_rotation_without_restart(tmp_path, minter) -> None:
    from gatewatch.keys import TokenMinter, generate_keys

    keys = tmp_path / "k"
    generate_keys(keys)
    ticks = iter(range(0, 10_000, 10))
    ring = KeyRing.from_file(keys / "decryption.jwks.json", reload_seconds=5, clock=lambda: next(ticks))
    issuer = KeyRing.from_file(keys / "issuer.jwks.json", reload_seconds=5, clock=lambda: next(ticks))
    v = TokenValidator(decryptor=TokenDecryptor(ring, algorithms=["ECDH-ES+A256KW"], encryptions=["A256GCM"]),
                       verifier=SignatureVerifier(issuer, algorithms=["ES256"]), issuers=["https://idp.example"],
                       audiences=["api://gateway"])
    old = TokenMinter.from_dir(keys, issuer="https://idp.example", audience="api://gateway").mint(claims())
    assert v.check(old, T0).verdict == "ok"
    fresh = tmp_path / "fresh"
    generate_keys(fresh)  # a new decryption key (same kid), rolled out by replacing the file
    new = TokenMinter(signing_keys=load_key_set(keys / "issuer-private.jwks.json"),
                      encryption_keys=load_key_set(fresh / "encryption-public.jwks.json"),
                      issuer="https://idp.example", audience="api://gateway").mint(claims())
    assert v.check(new, T0).verdict == "decrypt_failed"
    (keys / "decryption.jwks.json").write_text((fresh / "decryption.jwks.json").read_text())
    assert v.check(new, T0).verdict == "ok"  # picked up on the next check, cache dropped
    assert v.check(old, T0).verdict == "decrypt_failed"  # the withdrawn key no longer opens old tokens
    (keys / "decryption.jwks.json").write_text("{ half written")
    assert v.check(new, T0).verdict == "ok" and ring.last_error  # a broken file keeps the last good keys


# -- properties --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real_tokens(minter) -> list[str]:
    return [minter.mint(claims(jti="p1")), minter.mint(claims(jti="p2"), encrypt=False)]


@hsettings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=3000))
def test_random_bytes_always_get_a_verdict(validator, data: bytes) -> None:
    assert validator.check(data, T0).verdict in VERDICTS


@hsettings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.integers(0, 1), cut=st.integers(0, 5000))
def test_truncations_are_refused(validator, real_tokens, which: int, cut: int) -> None:
    token = real_tokens[which]
    cut = cut % len(token)
    info = validator.check(token[:cut], T0)
    assert info.verdict in VERDICTS and info.verdict != "ok"


@hsettings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.integers(0, 1), pos=st.integers(0, 5000), bit=st.integers(0, 7))
def test_bit_flips_are_refused(validator, real_tokens, which: int, pos: int, bit: int) -> None:
    raw = bytearray(real_tokens[which].encode())
    raw[pos % len(raw)] ^= 1 << bit
    info = validator.check(bytes(raw), T0)
    assert info.verdict in VERDICTS and info.verdict != "ok"


@hsettings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.text(alphabet="ABCxyz019-_.", max_size=60), min_size=1, max_size=6))
def test_dotted_junk_always_gets_a_verdict(validator, parts: list[str]) -> None:
    assert validator.check(".".join(parts), T0).verdict in VERDICTS
