"""Token validation speed: every allowed algorithm pair cold, the cache at realistic reuse, and the
cost of refusing hostile tokens — each beside its baseline in the same run.

  * cold: nested JWT (ES256 JWS inside the JWE) validated with the cache off, per JWE alg × enc
  * reuse: one token per 50 requests, cache on (gatewatch) vs decrypting every time (naive)
  * hostile: time to refuse each class of hostile token vs one cold valid validation

Usage: .venv/bin/python bench/tokens.py [--per-pair N]. Rewrites the "Tokens" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from joserfc import jwe, jws  # noqa: E402
from joserfc.jwk import ECKey, KeySet, OctKey, OKPKey, RSAKey  # noqa: E402

from bench.report import machine_header, write_section  # noqa: E402
from gatewatch.settings import DEFAULT_JWE_ALGS, DEFAULT_JWE_ENCS  # noqa: E402
from ingest.keyring import KeyRing  # noqa: E402
from ingest.token_crypto import SignatureVerifier, TokenDecryptor  # noqa: E402
from ingest.tokens import TokenValidator  # noqa: E402

T0 = 1_795_000_000
ENC_BYTES = {"A128GCM": 16, "A256GCM": 32, "A128CBC-HS256": 32, "A256CBC-HS512": 64}
KW_BYTES = {"A128KW": 16, "A256KW": 32, "A128GCMKW": 16, "A256GCMKW": 32}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def oct_key(size: int, kid: str) -> OctKey:
    return OctKey.import_key({"kty": "oct", "k": b64(random.randbytes(size)), "kid": kid})


def decryption_keys() -> dict[tuple[str, str], object]:
    """One private key per (alg, enc) pair, kid = 'alg/enc' (dir keys depend on enc)."""
    rsa = RSAKey.generate_key(2048)
    ec = ECKey.generate_key("P-256")
    keys = {}
    for alg in DEFAULT_JWE_ALGS:
        for enc in DEFAULT_JWE_ENCS:
            kid = f"{alg}/{enc}"
            if alg == "dir":
                key = oct_key(ENC_BYTES[enc], kid)
            elif alg in KW_BYTES:
                key = oct_key(KW_BYTES[alg], kid)
            elif alg.startswith("RSA"):
                key = RSAKey.import_key(rsa.as_dict(private=True), {"kid": kid})
            else:
                key = ECKey.import_key(ec.as_dict(private=True), {"kid": kid})
            keys[(alg, enc)] = key
    return keys


def signing_keys() -> dict[str, object]:
    return {"ES256": ECKey.generate_key("P-256", {"kid": "ES256"}), "RS256": RSAKey.generate_key(2048, {"kid": "RS256"}),
            "PS256": RSAKey.generate_key(2048, {"kid": "PS256"}), "EdDSA": OKPKey.generate_key("Ed25519", {"kid": "EdDSA"}),
            "HS256": oct_key(32, "HS256")}


def claims(i: int) -> str:
    return json.dumps({"iss": "https://idp.example", "aud": "api://gateway", "sub": f"u{i}", "jti": f"j{i}",
                       "iat": T0, "exp": T0 + 900, "client_id": "bench"})


def sign(key, alg: str, i: int) -> str:
    return jws.serialize_compact({"alg": alg, "kid": alg, "typ": "at+jwt"}, claims(i), key, algorithms=[alg])


def encrypt(key, alg: str, enc: str, inner: str) -> str:
    return jwe.encrypt_compact({"alg": alg, "enc": enc, "kid": key.kid, "cty": "JWT"}, inner, key,
                               algorithms=[alg, enc])


def validator(dec_keys, sig_keys, cache_size: int, direct: bool = True) -> TokenValidator:
    dec = KeyRing(KeySet(list(dec_keys.values())))
    sig = KeyRing(KeySet([KeySet.import_key_set({"keys": [k.as_dict(private=False)]}).keys[0] if k.key_type != "oct"
                          else k for k in sig_keys.values()]))
    return TokenValidator(decryptor=TokenDecryptor(dec, algorithms=DEFAULT_JWE_ALGS, encryptions=DEFAULT_JWE_ENCS,
                                                   direct=direct),
                          verifier=SignatureVerifier(sig, algorithms=list(sig_keys), typ=["at+jwt"], direct=direct),
                          issuers=["https://idp.example"], audiences=["api://gateway"], cache_size=cache_size)


def per_second(fn, items) -> float:
    t = time.perf_counter()
    for item in items:
        fn(item)
    return len(items) / (time.perf_counter() - t)


def median_us(fn, arg, reps: int = 200) -> float:
    samples = []
    for _ in range(reps):
        t = time.perf_counter_ns()
        fn(arg)
        samples.append(time.perf_counter_ns() - t)
    return statistics.median(samples) / 1000


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-pair", type=int, default=150)
    args = ap.parse_args()
    random.seed(1)
    dec_keys, sig_keys = decryption_keys(), signing_keys()
    cold = validator(dec_keys, sig_keys, cache_size=0)
    es = sig_keys["ES256"]

    rows = ["| JWE alg | " + " | ".join(DEFAULT_JWE_ENCS) + " |", "|---|" + "---:|" * len(DEFAULT_JWE_ENCS)]
    for alg in DEFAULT_JWE_ALGS:
        cells = []
        for enc in DEFAULT_JWE_ENCS:
            toks = [encrypt(dec_keys[(alg, enc)], alg, enc, sign(es, "ES256", i)) for i in range(args.per_pair)]
            assert cold.check(toks[0], T0).verdict == "ok"
            cells.append(f"{per_second(lambda t: cold.check(t, T0), toks):,.0f}")
        rows.append(f"| {alg} | " + " | ".join(cells) + " |")
    jws_rows = ["| JWS alg (plain, unencrypted) | tokens/s |", "|---|---:|"]
    for alg, key in sig_keys.items():
        toks = [sign(key, alg, i) for i in range(args.per_pair)]
        assert cold.check(toks[0], T0).verdict == "ok", alg
        jws_rows.append(f"| {alg} | {per_second(lambda t: cold.check(t, T0), toks):,.0f} |")

    # the direct path (ingest/jose_direct.py) beside joserfc alone, interleaved rounds, median per token
    joserfc_only = validator(dec_keys, sig_keys, cache_size=0, direct=False)
    direct_rows = ["| token (cold) | direct path µs/token | joserfc only µs/token | joserfc / direct |", "|---|---:|---:|---:|"]
    cases = [(f"{alg} / {enc} around ES256", [encrypt(dec_keys[(alg, enc)], alg, enc, sign(es, "ES256", i))
                                              for i in range(args.per_pair)])
             for alg, enc in (("ECDH-ES+A256KW", "A256GCM"), ("RSA-OAEP-256", "A256GCM"), ("A256KW", "A256GCM"),
                              ("dir", "A256GCM"))]
    cases += [(f"plain JWS {alg}", [sign(sig_keys[alg], alg, i) for i in range(args.per_pair)])
              for alg in ("ES256", "RS256", "EdDSA")]
    for name, toks in cases:
        runs: dict[bool, list[float]] = {True: [], False: []}
        for _ in range(5):
            for direct, v in ((True, cold), (False, joserfc_only)):
                runs[direct].append(1e6 / per_second(lambda t, v=v: v.check(t, T0), toks))
        d, j = statistics.median(runs[True]), statistics.median(runs[False])
        direct_rows.append(f"| {name} | {d:,.0f} | {j:,.0f} | {j / d:.2f}× |")

    reuse_rows = ["| JWE alg/enc, 1 token per 50 requests | cache on (gatewatch) events/s | cache off (naive) events/s | ratio |",
                  "|---|---:|---:|---:|"]
    for alg, enc in (("RSA-OAEP-256", "A256GCM"), ("ECDH-ES+A256KW", "A256GCM"), ("dir", "A256GCM")):
        toks = [encrypt(dec_keys[(alg, enc)], alg, enc, sign(es, "ES256", i)) for i in range(100)]
        stream = [t for t in toks for _ in range(50)]
        random.shuffle(stream)
        warm = validator(dec_keys, sig_keys, 100_000)
        cached = per_second(lambda t, warm=warm: warm.check(t, T0), stream)
        naive = per_second(lambda t: cold.check(t, T0), stream[:1000])
        reuse_rows.append(f"| {alg} / {enc} | {cached:,.0f} | {naive:,.0f} | {cached / naive:,.0f}× |")

    valid = encrypt(dec_keys[("RSA-OAEP-256", "A256GCM")], "RSA-OAEP-256", "A256GCM", sign(es, "ES256", 1))
    head, ek, iv, ct, tag = valid.split(".")
    plain = sign(es, "ES256", 2)
    ph, pp, ps = plain.split(".")

    def hdr(h: dict) -> str:
        return b64(json.dumps(h).encode())

    hostile = {
        "valid RSA-OAEP-256 token, cold (baseline)": valid,
        "encrypted but unsigned": encrypt(dec_keys[("ECDH-ES+A256KW", "A256GCM")], "ECDH-ES+A256KW", "A256GCM", claims(3)),
        "rogue signer under a real kid": sign(ECKey.generate_key("P-256", {"kid": "ES256"}), "ES256", 4),
        "alg none": hdr({"alg": "none"}) + f".{pp}.",
        "RS/HS confusion": jws.serialize_compact({"alg": "HS256", "kid": "RS256"}, claims(5),
                                                 OctKey.import_key(json.dumps(sig_keys["RS256"].as_dict(private=False)).encode()),
                                                 algorithms=["HS256"]),
        "zip (DEF) header": hdr({"alg": "RSA-OAEP-256", "enc": "A256GCM", "zip": "DEF"}) + f".{ek}.{iv}.{ct}.{tag}",
        "PBES2, p2c = 10^9": hdr({"alg": "PBES2-HS512+A256KW", "enc": "A256GCM", "p2c": 10**9, "p2s": "AAAAAAAAAAA"})
        + f".{ek}.{iv}.{ct}.{tag}",
        "RSA1_5": hdr({"alg": "RSA1_5", "enc": "A256GCM", "kid": "RSA-OAEP-256/A256GCM"}) + f".{ek}.{iv}.{ct}.{tag}",
        "truncated GCM tag": f"{head}.{ek}.{iv}.{ct}.{tag[:8]}",
        "UTF-16 header": b64('{"alg":"ES256"}'.encode("utf-16")) + f".{pp}.{ps}",
        "duplicate header members": b64(b'{"alg":"ES256","alg":"none"}') + f".{pp}.{ps}",
        "5,000-deep JSON header": b64(b"[" * 5000 + b"]" * 5000) + f".{pp}.{ps}",
        "200 kB token": "A" * 200_000,
        "bad base64": f"{ph}.{pp}!.{ps}",
    }
    hostile_rows = ["| token | verdict | median µs to refuse |", "|---|---|---:|"]
    for name, tok in hostile.items():
        verdict = cold.check(tok, T0).verdict
        hostile_rows.append(f"| {name} | {verdict} | {median_us(lambda t: cold.check(t, T0), tok):,.0f} |")

    text = "\n".join(
        ["Cold validation (cache off) of a nested JWT — ES256 JWS inside the JWE — in tokens/s, per allowed pair:", "",
         *rows, "", *jws_rows, "",
         "The direct path beside joserfc alone (`direct=False`), the same tokens, 5 interleaved rounds, medians:", "",
         *direct_rows, "", "At realistic reuse (100 tokens, each presented 50 times, shuffled):", "",
         *reuse_rows, "", "Refusing hostile tokens (cache off, so every call does the full work):", "", *hostile_rows,
         "", f"Command: `.venv/bin/python bench/tokens.py --per-pair {args.per_pair}`. One process, one core."])
    print(machine_header())
    print(text)
    write_section(ROOT / "BENCHMARKS.md", "Tokens", machine_header() + "\n\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
