"""Poison: 10,000 hostile records mixed into clean gateway traffic, through the real broker and `gatewatch run`.

CONTRACT.md §1: a record that is not valid UTF-8 JSON, lacks a required field, has a field of the wrong
type, or is larger than `limits.max_event_bytes` goes to the dead-letter topic with a reason; it never
stops the pipeline. §2: a token that fails is classified, never crashes anything, and raw tokens are
never stored. So, of the hostile records here:

* the *undecodable* ones (`Hostile.dlq` set) must each land in the DLQ topic exactly once, with the right
  code, their original bytes, and the input position they were read from. Undecodable also means: invalid
  UTF-8 anywhere in the record (unknown members included), JSON nested past what a parser can read, and a
  `ts` whose instant has no RFC 3339 UTC form (outside years 1..9999 once its offset is applied);
* the *decodable* ones (valid events carrying hostile tokens, records of exactly the size limit) are not
  dead letters: they are processed like any event, their tokens classified (`token.invalid` alerts).

And the worker must survive all of it (exit 0) and not grow its memory against a clean stream of the same
size. Throughput beside the clean stream (records/s from the first input commit to the last commit) is
printed, not asserted: speed is a benchmark's business here (tests never assert a time), and the issue's
"within 20 %" is reported in the issue note with the measured figure. Everything is deterministic from
`SEED` (except the random bytes of the few real encryptions).
"""

from __future__ import annotations

import base64
import json
import os
import random
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
from joserfc import jwe

from api.store import AlertStore
from gatewatch.settings import KafkaSettings, load_settings
from gatewatch.simulate import ACCESS_TOPIC, SimEvent, SimulationSpec, generate
from gatewatch.topics import ensure_topics
from ingest.decode import parse_ts
from ingest.tokens import TokenValidator
from tests.conftest import write_config
from tests.integration.kafka_helpers import GroupProbe, cpu_seconds, produce_tracked, read_all, rss_kib

SEED = 0x9015
N_CLEAN = 30_000  # clean events in the mixed stream
N_HOSTILE = 10_000
N_TOTAL = N_CLEAN + N_HOSTILE  # the clean-only stream has this many clean events: same size
MAX_EVENT_BYTES = 65_536  # limits.max_event_bytes default
MAX_TOKEN_BYTES = 16_384  # limits.max_token_bytes default
ATTACKERS = [f"203.0.113.{i}" for i in range(10, 18)]  # the sources of the hostile tokens
IDLE_EXIT = 10
RUNS = 1  # of each stream (raise it to compare throughput on a quiet machine: the best run is printed)

# How many of each kind (sums to N_HOSTILE). Kinds ending in "_token"/"at_limit" are valid events.
KINDS: dict[str, int] = {
    "not_json": 1_200,
    "bad_utf8": 1_000,
    "non_object": 800,
    "missing_field": 800,
    "wrong_type": 1_000,
    "invalid_field": 400,
    "bad_timestamp": 700,
    "unrepresentable_ts": 30,
    "oversize": 50,
    "deep_nesting": 400,
    "access_token": 3_418,  # valid access events with a hostile token
    "tokens_token": 200,  # valid token-lifecycle events ("issued") with a hostile token
    "at_limit": 2,  # valid events of exactly limits.max_event_bytes: not oversize
}
assert sum(KINDS.values()) == N_HOSTILE


@dataclass(frozen=True)
class Hostile:
    kind: str
    variant: str
    topic: str  # "access" | "tokens"
    key: bytes
    value: bytes | None  # None: a tombstone (the worker reads it as empty bytes)
    dlq: frozenset[str] | None  # the acceptable dead-letter codes; None: a valid event, not a dead letter
    token: str | None = None  # the hostile token of a valid event
    verdicts: frozenset[str] = frozenset()  # its acceptable verdicts (CONTRACT.md §2)


# -- building blocks -----------------------------------------------------------------------------
B64_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _seg(obj: Any) -> str:
    return _b64(json.dumps(obj, separators=(",", ":")).encode())


def _enc(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def _with_raw(obj: dict[str, Any], name: str, raw_value: bytes) -> bytes:
    """`obj` as JSON with member `name` set to `raw_value` verbatim (bytes that json.dumps cannot make)."""
    body = {k: v for k, v in obj.items() if k != name}
    return _enc(body)[:-1] + b',"' + name.encode() + b'":' + raw_value + b"}"


class Toolkit:
    """Hostile tokens of CONTRACT.md §2, each with the verdicts it may get."""

    def __init__(self, rng: random.Random, minter: Any, sample_token: str) -> None:
        self.rng = rng
        self.minter = minter
        self.jwe_header = sample_token.split(".")[0]  # our real JWE header (kid, alg, epk)
        self.jwe_hdr = json.loads(base64.urlsafe_b64decode(self.jwe_header + "=="))
        jws = minter.sign({"sub": "x", "exp": 2_000_000_000, "iat": 1_795_000_000})
        self.jws_header = jws.split(".")[0]  # the issuer's real JWS header
        self.jws_kid = json.loads(base64.urlsafe_b64decode(self.jws_header + "=="))["kid"]

    def rb(self, n: int) -> str:
        return _b64(self.rng.randbytes(n))

    def claims(self) -> dict[str, Any]:
        return {"iss": "https://idp.example", "aud": "api://gateway", "sub": f"u{self.rng.randrange(10**6)}",
                "exp": 1_795_003_600, "iat": 1_795_000_000, "jti": self.rb(12)}

    def token(self) -> tuple[str, str, frozenset[str]]:
        """(variant, token, acceptable verdicts)."""
        r = self.rng
        v = r.choice(["alg_none", "alg_none", "huge_header", "huge_header", "garbage_b64", "garbage_b64",
                      "noncanonical_b64", "jwe_unknown_kid", "jwe_unknown_kid", "jws_unknown_kid", "pbes2_p2c",
                      "pbes2_p2c", "zip", "zip", "too_large", "too_large", "rsa1_5", "unknown_crit",
                      "duplicate_member", "nested_header", "non_ascii", "dots", "decrypt_failed",
                      "bad_signature", "not_signed"])
        if v == "alg_none":
            alg = r.choice(["none", "None", "NONE", "nOnE"])
            return v, f"{_seg({'alg': alg, 'typ': 'JWT'})}.{_seg(self.claims())}.", frozenset({"disallowed_alg"})
        if v == "huge_header":
            pad = "A" * r.randrange(2_100, 9_000)
            if r.random() < 0.5:
                tok = f"{_seg({'alg': 'ES256', 'kid': self.jws_kid, 'pad': pad})}.{_seg(self.claims())}.{self.rb(64)}"
            else:
                hdr = {**self.jwe_hdr, "pad": pad}
                tok = ".".join([_seg(hdr), self.rb(40), self.rb(12), self.rb(200), self.rb(16)])
            return v, tok, frozenset({"malformed"})
        if v == "garbage_b64":
            alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=!*~ %$"
            n = r.choice([1, 2, 3, 4, 5, 6])
            tok = ".".join("".join(r.choice(alphabet) for _ in range(r.randrange(0, 120))) for _ in range(n))
            if n in (3, 5):
                tok = tok[:5] + "+/=" + tok[5:]  # never canonical base64url
            return v, tok, frozenset({"malformed"})
        if v == "noncanonical_b64":  # "VGVzdB" for "VGVzdA": a second encoding of the same bytes
            body = _seg(self.claims())
            while len(body) % 4 == 0:
                body = _seg(self.claims())
            body = body[:-1] + B64_ALPHABET[B64_ALPHABET.index(body[-1]) + 1]  # set an unused trailing bit
            return v, f"{self.jws_header}.{body}.{self.rb(64)}", frozenset({"malformed"})
        if v == "jwe_unknown_kid":
            hdr = {**self.jwe_hdr, "kid": f"rogue-{self.rb(6)}"}
            return v, ".".join([_seg(hdr), self.rb(40), self.rb(12), self.rb(180), self.rb(16)]), \
                frozenset({"unknown_kid"})
        if v == "jws_unknown_kid":
            return v, f"{_seg({'alg': 'ES256', 'typ': 'at+jwt', 'kid': 'rogue-' + self.rb(6)})}." \
                      f"{_seg(self.claims())}.{self.rb(64)}", frozenset({"unknown_kid"})
        if v == "pbes2_p2c":
            hdr = {"alg": r.choice(["PBES2-HS256+A128KW", "PBES2-HS512+A256KW"]), "enc": "A256GCM",
                   "p2c": r.choice([2**31 - 1, 10**9, 10**12, 50_000_000]), "p2s": self.rb(16),
                   "kid": self.jwe_hdr.get("kid", "k")}
            return v, ".".join([_seg(hdr), self.rb(40), self.rb(12), self.rb(120), self.rb(16)]), \
                frozenset({"disallowed_alg"})
        if v == "zip":
            hdr = {**self.jwe_hdr, "zip": "DEF"}
            return v, ".".join([_seg(hdr), self.rb(40), self.rb(12), self.rb(120), self.rb(16)]), \
                frozenset({"disallowed_alg"})
        if v == "too_large":
            n = r.randrange(MAX_TOKEN_BYTES + 1, 40_000)
            body = self.rb(n * 3 // 4)
            tok = ".".join([self.jwe_header, self.rb(40), self.rb(12), body, self.rb(16)])
            return v, tok, frozenset({"too_large"})
        if v == "rsa1_5":
            hdr = {"alg": "RSA1_5", "enc": "A128CBC-HS256", "kid": self.jwe_hdr.get("kid", "k")}
            return v, ".".join([_seg(hdr), self.rb(256), self.rb(16), self.rb(64), self.rb(16)]), \
                frozenset({"disallowed_alg"})
        if v == "unknown_crit":
            hdr = {"alg": "ES256", "kid": self.jws_kid, "crit": ["exp"], "exp": 1}
            return v, f"{_seg(hdr)}.{_seg(self.claims())}.{self.rb(64)}", frozenset({"malformed"})
        if v == "duplicate_member":
            hdr = _b64(b'{"alg":"ES256","kid":"' + self.jws_kid.encode() + b'","alg":"none"}')
            return v, f"{hdr}.{_seg(self.claims())}.{self.rb(64)}", frozenset({"malformed"})
        if v == "nested_header":
            depth = r.randrange(600, 1_000)
            hdr = _b64(b'{"alg":"ES256","x":' + b"[" * depth + b"]" * depth + b"}")
            # refused as malformed (too deep) or, if the parser copes, by the signature check
            return v, f"{hdr}.{_seg(self.claims())}.{self.rb(64)}", \
                frozenset({"malformed", "bad_signature", "unknown_kid"})
        if v == "non_ascii":
            base = f"{self.jws_header}.{_seg(self.claims())}.{self.rb(64)}"
            i = r.randrange(len(base))
            return v, base[:i] + r.choice(["é", "\u0000", "\u202e", "😈", "\ufeff"]) + base[i:], \
                frozenset({"malformed"})
        if v == "dots":
            return v, r.choice([".", "..", "....", "....." * 3, "." * 4 + "A"]), frozenset({"malformed"})
        if v == "decrypt_failed":  # our real header and key, garbage encrypted key and ciphertext
            return v, ".".join([self.jwe_header, self.rb(40), self.rb(12), self.rb(150), self.rb(16)]), \
                frozenset({"decrypt_failed"})
        if v == "bad_signature":
            return v, f"{self.jws_header}.{_seg(self.claims())}.{self.rb(64)}", frozenset({"bad_signature"})
        # not_signed: a JWE really encrypted to our key whose payload is no JWS: proves nothing
        key = self.minter.encryption_key
        alg = key.as_dict(private=False)["alg"]
        tok = jwe.encrypt_compact({"alg": alg, "enc": "A256GCM", "kid": key.kid}, _enc(self.claims()), key,
                                  algorithms=[alg, "A256GCM"])
        return v, tok, frozenset({"not_signed"})


def _bad_utf8(r: random.Random) -> bytes:
    return r.choice([b"\xff", b"\xfe\xff", b"\x80", b"\xc3\x28", b"\xa0\xa1", b"\xe2\x28\xa1", b"\xf0\x28\x8c\x28",
                     b"\xc0\xaf", b"\xe0\x80\xaf", b"\xed\xa0\x80", b"\xed\xbf\xbf", b"\xf8\x88\x80\x80\x80",
                     b"\xf4\x90\x80\x80"])


# -- the hostile records -------------------------------------------------------------------------
def make_hostile(kind: str, i: int, r: random.Random, tpl: dict[str, Any], ts: str, kit: Toolkit) -> Hostile:
    """One hostile record of `kind`: `tpl` is a clean access event (without its token), `ts` the event time
    of its neighbours in the stream."""
    key = f"poison-{i % 13}".encode()
    access = {**tpl, "event_id": f"poison-{i}", "ts": ts}
    tok_ev = {"kind": "token", "event_id": f"poison-{i}", "ts": ts, "tenant": tpl["tenant"], "type": "revoked",
              "jti": kit.rb(12)}
    topic = "tokens" if r.random() < 0.15 else "access"
    raw_clean = _enc(access)

    def dead(variant: str, value: bytes | None, *codes: str, on: str | None = None) -> Hostile:
        return Hostile(kind, variant, on or topic, key, value, frozenset(codes))

    if kind == "not_json":
        v = r.choice(["brace", "truncated", "trailing", "nan", "python_repr", "empty", "tombstone", "whitespace",
                      "bom", "utf16", "garbage", "comment", "control_char", "lone_surrogate_escape", "two_lines",
                      "concatenated", "single_quotes", "unterminated_string"])
        value: bytes | None
        if v == "brace":
            value = b"{not json"
        elif v == "truncated":
            value = raw_clean[: r.randrange(1, len(raw_clean) - 1)]
        elif v == "trailing":
            value = raw_clean + r.choice([b"}", b" x", b",", b"]", b"\x00"])
        elif v == "nan":
            value = _with_raw(access, "latency_ms", r.choice([b"NaN", b"Infinity", b"-Infinity"]))
        elif v == "python_repr":
            value = repr(access).encode()
        elif v == "empty":
            value = b""
        elif v == "tombstone":
            value = None
        elif v == "whitespace":
            value = r.choice([b" ", b"\n", b"\t\r\n "])
        elif v == "bom":
            value = b"\xef\xbb\xbf" + raw_clean
        elif v == "utf16":
            value = json.dumps(access).encode(r.choice(["utf-16", "utf-16-le", "utf-32"]))
        elif v == "garbage":
            value = b"#" + bytes(r.randrange(32, 127) for _ in range(r.randrange(1, 400)))
        elif v == "comment":
            value = raw_clean[:-1] + b"/* gateway */}"
        elif v == "control_char":
            value = _with_raw(access, "path", b'"/a' + bytes([r.randrange(0, 32)]) + b'b"')
        elif v == "lone_surrogate_escape":
            value = _with_raw(access, r.choice(["path", "gateway", "user_agent"]), b'"x\\ud800y"')
        elif v in ("two_lines", "concatenated"):
            value = raw_clean + (b"\n" if v == "two_lines" else b"") + raw_clean
        elif v == "single_quotes":
            value = raw_clean.replace(b'"', b"'")
        else:
            value = raw_clean[:-2]  # ..."} → ..." unterminated object / string
        return dead(v, value, "not_json")

    if kind == "bad_utf8":  # CONTRACT.md §1: not valid UTF-8 JSON, wherever the bad bytes are
        v = r.choice(["known_field", "known_field", "unknown_field", "member_name", "latin1", "truncated_seq",
                      "binary"])
        if v == "known_field":
            field = r.choice(["gateway", "path", "user_agent", "tenant", "method", "event_id"])
            value = _with_raw(access, field, b'"ok' + _bad_utf8(r) + b'ok"')
        elif v == "unknown_field":
            value = _with_raw(access, "x_note", b'"' + _bad_utf8(r) + b'"')
        elif v == "member_name":
            value = b'{"x' + _bad_utf8(r) + b'":1,' + raw_clean[1:]
        elif v == "latin1":
            value = _enc({**access, "user_agent": "Mozilla/5.0 (Windows; Español; Ünïcödé)"}).decode() \
                .encode("latin-1")
        elif v == "truncated_seq":
            value = _with_raw(access, "path", b'"/caf\xe2\x82"')
        else:
            value = bytes([r.choice([0xFF, 0xFE, 0x80, 0xC0])]) + r.randbytes(r.randrange(0, 300))
        return dead(v, value, "not_json")

    if kind == "non_object":
        v = r.choice(["array", "array_of_event", "string", "double_encoded", "number", "big_number", "float",
                      "null", "true", "false", "empty_object"])
        value = {"array": b"[]", "array_of_event": b"[" + raw_clean + b"]", "string": b'"access"',
                 "double_encoded": json.dumps(raw_clean.decode()).encode(), "number": b"12345",
                 "big_number": b"123456789012345678901234567890", "float": b"-1.5e300", "null": b"null",
                 "true": b"true", "false": b"false", "empty_object": b"{}"}[v]
        return dead(v, value, "schema")

    if kind == "missing_field":
        if r.random() < 0.7:
            field = r.choice(["kind", "event_id", "ts", "gateway", "tenant", "client_ip", "method", "path", "status"])
            return dead(f"access_without_{field}", _enc({k: x for k, x in access.items() if k != field}), "schema",
                        on="access")
        v = r.choice(["revoked_without_jti", "issued_without_token", "refreshed_without_presented",
                      "refreshed_without_issued", "token_without_tenant", "token_without_type"])
        ev = dict(tok_ev)
        if v == "revoked_without_jti":
            del ev["jti"]
        elif v == "issued_without_token":
            ev = {**ev, "type": "issued"}
            del ev["jti"]
        elif v == "refreshed_without_presented":
            ev = {**ev, "type": "refreshed", "issued_jti": kit.rb(12)}
        elif v == "refreshed_without_issued":
            ev = {**ev, "type": "refreshed", "presented_jti": kit.rb(12)}
        else:
            del ev["tenant" if v == "token_without_tenant" else "type"]
        return dead(v, _enc(ev), "schema" if v.startswith("token_without") else "missing_field", on="tokens")

    if kind == "wrong_type":
        field, bad = r.choice([("status", "200"), ("status", 200.5), ("status", True), ("status", None),
                               ("ts", 12345), ("ts", None), ("ts", 1_795_000_000.5), ("event_id", 42),
                               ("tenant", ["acme"]), ("method", {}), ("client_ip", 167772161),
                               ("latency_ms", "fast"), ("bytes_in", 1.5), ("bytes_out", "1k"), ("llm", "gpt"),
                               ("llm", {"prompt_tokens": "many"}), ("token", 12345), ("nonce", []),
                               ("kind", 5), ("path", False), ("user_agent", {"ua": 1})])
        if field == "kind" and r.random() < 0.3:
            return dead("token_event_type", _enc({**tok_ev, "type": 7}), "schema", on="tokens")
        return dead(f"{field}_{type(bad).__name__}", _enc({**access, field: bad}), "schema")

    if kind == "invalid_field":
        field, bad = r.choice([("client_ip", "999.1.1.1"), ("client_ip", "not-an-ip"), ("client_ip", ""),
                               ("client_ip", "10.0.0.1/24"), ("client_ip", "::ffff:999.0.0.1"), ("status", 42),
                               ("status", 600), ("status", -1), ("status", 0), ("status", 10**20),
                               ("event_id", ""), ("event_id", "x" * 257)])
        return dead(f"{field}_{str(bad)[:12]}", _enc({**access, field: bad}), "invalid_field", on="access")

    if kind == "bad_timestamp":
        bad = r.choice(["yesterday", "", "2026-11-18", "2026-11-18 10:00:00Z", "2026-11-18T10:00:00",
                        "2026-13-45T10:00:00Z", "2026-11-18T25:00:00Z", "2026-02-30T00:00:00Z", "NaN", "T" * 50,
                        ts + "x" * 30, "2026-11-18T10:00:00+25:00", "Tuesday", "1795000000",
                        "2026-11-18T10:00:00ZZ", "2026-11-18T10:61:00Z"])
        if r.random() < 0.2:
            return dead("token_event", _enc({**tok_ev, "ts": bad}), "bad_timestamp", on="tokens")
        return dead(bad[:24] or "empty", _enc({**access, "ts": bad}), "bad_timestamp", on="access")

    if kind == "unrepresentable_ts":
        # well-formed RFC 3339 whose instant lies outside years 1..9999 UTC: it cannot be an event time
        # (no RFC 3339 UTC rendering exists for alerts and the watermark), so it is refused
        bad = r.choice(["9999-12-31T23:59:59.999-14:00", "9999-12-31T23:00:00-01:00", "0001-01-01T00:00:00+14:00",
                        "0001-01-01T00:59:59.000+01:00"])
        _, tok, _ = kit.token()
        return dead(bad, _enc({**access, "ts": bad, "client_ip": r.choice(ATTACKERS), "token": tok}),
                    "bad_timestamp", on="access")

    if kind == "oversize":
        v = r.choice(["pad"] * 20 + ["token"] * 10 + ["garbage"] * 10 + ["nested"] * 5 + ["limit_plus_one"] * 2
                     + ["near_1mb"] * 3)
        size = {"limit_plus_one": MAX_EVENT_BYTES + 1, "near_1mb": r.randrange(990_000, 1_000_000)}.get(
            v, r.randrange(MAX_EVENT_BYTES + 1, 300_000))
        if v in ("pad", "limit_plus_one", "near_1mb"):
            base = _enc({**access, "pad": ""})
            value = _enc({**access, "pad": "x" * (size - len(base))})
        elif v == "token":
            base = _enc({**access, "token": ""})
            value = _enc({**access, "token": kit.jwe_header + "." + "A" * (size - len(base) - len(kit.jwe_header) - 1)})
        elif v == "garbage":
            value = r.randbytes(size)
        else:
            value = b"[" * (size // 2) + b"]" * (size - size // 2)
        return dead(v, value, "oversize", on="access")

    if kind == "deep_nesting":
        # nested past any parser's recursion limit, inside the 64 KiB limit. The unknown-field case is a valid
        # event to the schema but cannot be parsed: a dead letter (CONTRACT.md §1: not UTF-8 JSON it can read)
        v = r.choice(["top_array", "top_object", "in_known_field", "in_unknown_field", "in_unknown_field",
                      "in_llm"])
        room = MAX_EVENT_BYTES - 2_000

        def depth(per_level: int) -> int:
            return r.randrange(1_000, room // per_level)

        if v == "top_array":
            n = depth(2)
            value = b"[" * n + b"]" * n
        elif v == "top_object":
            n = depth(6)
            value = b'{"a":' * n + b"1" + b"}" * n
        elif v == "in_known_field":
            n = depth(2)
            value = _with_raw(access, r.choice(["gateway", "path", "status"]), b"[" * n + b"]" * n)
        elif v == "in_llm":
            n = depth(14)
            value = _with_raw(access, "llm", b'{"provider":' * n + b'"x"' + b"}" * n)
        elif r.random() < 0.5:
            n = depth(2)
            value = _with_raw(access, "x_meta", b"[" * n + b"]" * n)
        else:
            n = depth(6)
            value = _with_raw(access, "x_meta", b'{"a":' * n + b"1" + b"}" * n)
        assert len(value) <= MAX_EVENT_BYTES
        return dead(v, value, "schema", "not_json", on="access")

    if kind == "at_limit":  # exactly limits.max_event_bytes: allowed
        base = _enc({**access, "pad": ""})
        value = _enc({**access, "pad": "x" * (MAX_EVENT_BYTES - len(base))})
        assert len(value) == MAX_EVENT_BYTES
        return Hostile(kind, "exact_limit", "access", key, value, None)

    variant, tok, verdicts = kit.token()
    ip = r.choice(ATTACKERS)
    if kind == "access_token":
        return Hostile(kind, variant, "access", ip.encode(), _enc({**access, "client_ip": ip, "token": tok}), None,
                       tok, verdicts)
    assert kind == "tokens_token"
    ev = {"kind": "token", "event_id": f"poison-{i}", "ts": ts, "tenant": tpl["tenant"], "type": "issued",
          "token": tok, "sub": "mallory", "client_id": "rogue"}
    return Hostile(kind, variant, "tokens", ip.encode(), _enc(ev), None, tok, verdicts)


def mixed_stream(clean: list[SimEvent], minter: Any) -> Iterator[SimEvent | Hostile]:
    """The clean events in order with the hostile records interleaved at random (seeded) positions."""
    r = random.Random(SEED)
    access = [e.event for e in clean if e.topic == ACCESS_TOPIC]
    sample_token = next(e["token"] for e in access if e.get("token", "").count(".") == 4)
    kit = Toolkit(random.Random(SEED + 1), minter, sample_token)
    kinds = [k for k, n in KINDS.items() for _ in range(n)]
    r.shuffle(kinds)
    slots = sorted(r.randrange(len(clean) + 1) for _ in kinds)
    h = 0
    for pos in range(len(clean) + 1):
        while h < len(slots) and slots[h] == pos:
            tpl = {k: v for k, v in r.choice(access).items() if k not in ("token", "nonce")}
            ts = clean[min(pos, len(clean) - 1)].event["ts"]
            yield make_hostile(kinds[h], h, r, tpl, ts, kit)
            h += 1
        if pos < len(clean):
            yield clean[pos]


# -- running the worker --------------------------------------------------------------------------
@dataclass
class Run:
    name: str
    summary: dict[str, Any]
    rate: float  # records/s from the first input commit to the last commit (startup and idling excluded)
    cpu_rate: float  # records per CPU-second of the worker over the same span
    peak_rss_mib: float
    wall_seconds: float
    directory: Path
    env: dict[str, str]


def _env(kafka_env: dict[str, str], stream: str, run: str) -> dict[str, str]:
    """The run's own topics and group (inputs shared by the runs of one stream)."""
    prefix = kafka_env["GATEWATCH_KAFKA__ACCESS_TOPIC"].removesuffix(".access")
    env = {**kafka_env, "GATEWATCH_KAFKA__ACCESS_TOPIC": f"{prefix}.{stream}.access",
           "GATEWATCH_KAFKA__TOKENS_TOPIC": f"{prefix}.{stream}.tokens",
           "GATEWATCH_KAFKA__GROUP_ID": f"{kafka_env['GATEWATCH_KAFKA__GROUP_ID']}-{run}"}
    outputs = {name.removesuffix("_topic"): name for name in KafkaSettings.model_fields
               if name.endswith("_topic") and name not in ("access_topic", "tokens_topic")}
    for short, name in outputs.items():  # alerts, risk, dlq, and any internal topics a worker uses
        env[f"GATEWATCH_KAFKA__{name.upper()}"] = f"{prefix}.{run}.{short}"
    return env


def run_worker(name: str, env: dict[str, str], tmp_path: Path, keys_dir: Path, total: int, idle: float) -> Run:
    """`gatewatch run` as a subprocess over `env`'s topics, sampling its RSS, its CPU time and how far its
    consumer group(s) have committed on the input topics."""
    directory = tmp_path / name
    directory.mkdir()
    cfg = write_config(directory, keys_dir)
    k = load_settings(cfg, environ=env).kafka
    probe = GroupProbe(k.bootstrap_servers, k.group_id, {k.access_topic, k.tokens_topic})
    out, err = directory / "stdout", directory / "stderr"
    started = time.monotonic()
    with out.open("wb") as fo, err.open("wb") as fe:
        proc = subprocess.Popen([sys.executable, "-m", "gatewatch.cli", "--config", str(cfg), "run",
                                 "--idle-exit", str(idle)],
                                env={**os.environ, **env}, stdout=fo, stderr=fe)
    peak = 0
    cpu: list[tuple[float, float]] = []  # (time, CPU seconds so far)
    first: tuple[float, int] | None = None  # the first input commit: (time, input records committed)
    last_change, seen_total = 0.0, -1  # when the worker last committed anything (its last processing step)
    try:
        while proc.poll() is None:
            if time.monotonic() - started > 150:
                proc.kill()
                raise AssertionError(f"{name}: gatewatch run did not finish in 150 s")
            peak = max(peak, rss_kib(proc.pid) or 0)
            used = cpu_seconds(proc.pid)
            t0 = time.monotonic()
            done, everything = probe.committed()
            at = (t0 + time.monotonic()) / 2
            if used is not None:
                cpu.append((t0, used))
            if done and first is None:
                first = (at, done)
            if everything != seen_total:
                last_change, seen_total = at, everything
            time.sleep(0.03)
        ended = time.monotonic()
        done, everything = probe.committed()
        if everything != seen_total:  # committed between the last sample and the exit
            last_change = ended
        behind = probe.behind()
        internal = probe.behind({t for v, t in env.items() if v.endswith("_TOPIC")})  # the worker's own topics too
    finally:
        probe.close()
    stderr = err.read_text(errors="replace")
    assert proc.returncode == 0, f"{name}: gatewatch run exited {proc.returncode}:\n{stderr[-6000:]}"
    assert "Traceback" not in stderr, f"{name}: {stderr[-6000:]}"
    lines = out.read_text().strip().splitlines()
    assert lines, f"{name}: no summary on stdout; stderr:\n{stderr[-3000:]}"
    summary = json.loads(lines[-1])
    assert summary["records"] == total and not behind, \
        f"{name}: read {summary['records']} of {total} records; (committed, end) of partitions left behind: " \
        f"{behind}; summary {summary}"
    assert first is not None and done >= total, f"{name}: input commits never reached {total} ({summary})"
    assert summary["events"] + summary["dead_letters"] == total, \
        f"{name}: {summary['events']} events + {summary['dead_letters']} dead letters of {total} records " \
        f"(partitions left behind, (committed, end): {internal})"
    # The processing span: from the first input commit to the worker's last commit of anything.
    rate = (total - first[1]) / max(last_change - first[0], 1e-3)
    span = [c for t, c in cpu if first[0] <= t <= last_change]
    cpu_rate = (total - first[1]) / max(span[-1] - span[0], 1e-3) if len(span) > 1 else float("nan")
    return Run(name, summary, rate, cpu_rate, peak / 1024, ended - started, directory, env)


# -- the test ------------------------------------------------------------------------------------
def _secret_segments(token: str) -> list[str]:
    """The long segments of a compact token after its header (headers are not secret and are shared)."""
    return [s for s in token.split(".")[1:] if len(s) >= 24]


_B64_RUN = re.compile(rb"[A-Za-z0-9_-]{24,}")


def _leaks(haystack: bytes, tokens: dict[str, str]) -> list[str]:
    """Fingerprints (first 16 chars) of the tokens one of whose long segments occurs in `haystack`."""
    runs = set(_B64_RUN.findall(haystack))
    return sorted({tok[:16] for seg, tok in tokens.items() if seg.encode() in runs})


def test_poison_records_are_dead_lettered_without_stopping_or_slowing_the_stream(tmp_path: Path, keys_dir: Path,
                                                                                   minter: Any,
                                                                                   kafka_env: dict[str, str]) -> None:
    t_start = time.monotonic()
    clean_all = list(generate(SimulationSpec(seed=SEED, events=N_TOTAL, attacks=()), minter))
    mixed = list(mixed_stream(clean_all[:N_CLEAN], minter))
    hostile = [x for x in mixed if isinstance(x, Hostile)]
    assert len(mixed) == N_TOTAL and len(hostile) == N_HOSTILE
    assert Counter(h.kind for h in hostile) == Counter(KINDS)
    must_dlq = [h for h in hostile if h.dlq is not None]
    processed = [h for h in hostile if h.dlq is None]
    print(f"\nhostile kinds: {dict(Counter(h.kind for h in hostile))}")
    print(f"dead letters expected: {len(must_dlq)}  hostile but valid events: {len(processed)}  "
          f"oversize bytes: {sum(len(h.value or b'') for h in hostile if h.kind == 'oversize'):,}")

    # What each hostile token is: the validator reaches the verdict it should, and never raises.
    settings = load_settings(write_config(tmp_path, keys_dir), environ={})
    validator = TokenValidator.from_config(settings.tokens, settings.keys, settings.limits)
    wrong = []
    for h in processed:
        if h.token is not None:
            ev = json.loads(h.value or b"")
            verdict = validator.check(h.token, parse_ts(ev["ts"])).verdict
            if verdict not in h.verdicts:
                wrong.append((h.variant, verdict, sorted(h.verdicts)))
    assert not wrong, f"hostile tokens with unexpected verdicts: {Counter(map(str, wrong)).most_common(10)}"
    print(f"hostile token variants: {dict(Counter(h.variant for h in processed if h.token))}")

    # Both streams onto their own 4-partition input topics.
    envs = {stream: _env(kafka_env, stream, f"{stream}-1") for stream in ("mixed", "clean")}
    for env in envs.values():
        ensure_topics(load_settings(write_config(tmp_path, keys_dir), environ=env).kafka, input_partitions=4)
    bootstrap = kafka_env["GATEWATCH_KAFKA__BOOTSTRAP_SERVERS"]

    def topic_of(env: dict[str, str], which: str) -> str:
        return env["GATEWATCH_KAFKA__ACCESS_TOPIC" if which == "access" else "GATEWATCH_KAFKA__TOKENS_TOPIC"]

    def record(env: dict[str, str], x: SimEvent | Hostile) -> tuple[str, bytes | None, bytes | None]:
        if isinstance(x, Hostile):
            return topic_of(env, x.topic), x.key, x.value
        return (topic_of(env, "access" if x.topic == ACCESS_TOPIC else "tokens"), x.key.encode(),
                msgspec.json.encode(x.event))

    t0 = time.monotonic()
    positions = produce_tracked(bootstrap, [record(envs["mixed"], x) for x in mixed])
    produce_tracked(bootstrap, [record(envs["clean"], x) for x in clean_all])
    print(f"produced {len(mixed):,} mixed and {len(clean_all):,} clean records in {time.monotonic() - t0:.1f} s")
    where = {pos: x for pos, x in zip(positions, mixed, strict=True)}

    # The runs, interleaved on the warm broker: clean, mixed, three times each (throughput is the best of three:
    # the run least disturbed by whatever else the machine does). Only the first mixed run idles IDLE_EXIT.
    runs: dict[str, list[Run]] = {"clean": [], "mixed": []}
    for i in range(1, RUNS + 1):
        for stream in ("clean", "mixed"):
            run = run_worker(f"{stream}-{i}", _env(kafka_env, stream, f"{stream}-{i}"), tmp_path, keys_dir, N_TOTAL,
                             idle=IDLE_EXIT if (stream, i) == ("mixed", 1) else 3)
            print(f"{run.name}: {run.rate:,.0f} records/s ({run.cpu_rate:,.0f} per CPU-second); peak RSS "
                  f"{run.peak_rss_mib:.0f} MiB; wall {run.wall_seconds:.1f} s; summary {run.summary}")
            runs[stream].append(run)

    # -- the mixed run: every record accounted for, exactly once ----------------------------------
    mixed_run = runs["mixed"][0]
    for run in runs["clean"]:
        c = run.summary
        assert (c["records"], c["events"], c["dead_letters"]) == (N_TOTAL, N_TOTAL, 0), c
    s = mixed_run.summary
    assert s["records"] == N_TOTAL, s
    assert s["dead_letters"] == len(must_dlq), (s, len(must_dlq))
    assert s["events"] == N_CLEAN + len(processed) == s["records"] - s["dead_letters"], (s, N_CLEAN + len(processed))

    menv = mixed_run.env
    dlq = read_all(bootstrap, menv["GATEWATCH_KAFKA__DLQ_TOPIC"], timeout=90)  # complete: the worker has exited
    seen: Counter[tuple[str, int, int]] = Counter()
    problems: list[str] = []
    codes: Counter[tuple[str, str]] = Counter()
    for m in dlq:
        entry = json.loads(m.value)
        assert set(entry) >= {"code", "reason", "stage", "source", "original_b64"}, entry.keys()
        src = entry["source"]
        pos = (src["topic"], src["partition"], src["offset"])
        seen[pos] += 1
        x = where.get(pos)
        if not isinstance(x, Hostile) or x.dlq is None:
            what = "a clean event" if isinstance(x, SimEvent) else "a valid hostile event" if x else "nothing"
            problems.append(f"dead letter {entry['code']} at {pos} is {what}: {entry['reason'][:200]}")
            continue
        codes[(x.kind, entry["code"])] += 1
        if base64.b64decode(entry["original_b64"]) != (x.value or b""):
            problems.append(f"{x.kind}/{x.variant} at {pos}: original bytes differ")
        if entry["code"] not in x.dlq:
            problems.append(f"{x.kind}/{x.variant} at {pos}: code {entry['code']!r}, expected {sorted(x.dlq)}: "
                            f"{entry['reason'][:200]}")
        if entry["stage"] != "decode" or not entry["reason"]:
            problems.append(f"{x.kind}/{x.variant} at {pos}: stage {entry['stage']!r} reason {entry['reason']!r}")
    twice = [pos for pos, n in seen.items() if n > 1]
    missing = [h for pos, h in where.items() if isinstance(h, Hostile) and h.dlq is not None and pos not in seen]
    print(f"dead letters by (kind, code): {dict(sorted(codes.items()))}")
    assert not twice, f"{len(twice)} records dead-lettered more than once, e.g. {twice[:5]}"
    assert not missing, (f"{len(missing)} undecodable records missing from the DLQ: "
                         f"{Counter((h.kind, h.variant) for h in missing).most_common(20)}")
    assert not problems, f"{len(problems)} bad dead letters, e.g. {problems[:10]}"
    assert len(dlq) == len(must_dlq)
    if "dead_letter_codes" in s:
        assert s["dead_letter_codes"] == dict(Counter(code for _, code in codes.elements())), s

    # The hostile tokens were judged: a burst of them from one attacker is a token.invalid alert.
    store = AlertStore(str(mixed_run.directory / "gatewatch.db"))
    invalid, _ = store.list_alerts(type="token.invalid", limit=500)
    assert s["signals"].get("token.invalid", 0) >= 1, s
    assert {a.entity.value for a in invalid} & set(ATTACKERS), [a.entity for a in invalid]

    # No raw token anywhere: the DLQ topic (entries and originals), every other topic the worker wrote, the store.
    tokens = {seg: tok for tok in [h.token for h in processed if h.token]
              + [e.event["token"] for e in clean_all[:N_CLEAN] if e.event.get("token")]
              for seg in _secret_segments(tok)}
    assert len(tokens) > 1_000
    outputs = {"dlq": b"\n".join(m.value for m in dlq)}
    for var, topic in menv.items():  # every topic the worker writes: alerts, risk, and its internal ones
        if var.endswith("_TOPIC") and var not in ("GATEWATCH_KAFKA__ACCESS_TOPIC", "GATEWATCH_KAFKA__TOKENS_TOPIC",
                                                  "GATEWATCH_KAFKA__DLQ_TOPIC"):
            outputs[topic] = b"\n".join((m.value or b"") + b" " + (m.key or b"") + b" " + b" ".join(
                v for _, v in (m.headers or [])) for m in read_all(bootstrap, topic, timeout=60))
    outputs["store"] = b"".join(p.read_bytes() for p in mixed_run.directory.glob("gatewatch.db*"))
    outputs["dlq originals"] = b"\n".join(base64.b64decode(json.loads(m.value)["original_b64"]) for m in dlq)
    leaks = {name: _leaks(data, tokens) for name, data in outputs.items()}
    assert not any(leaks.values()), f"raw tokens stored: {leaks}"

    # -- throughput and memory against a clean stream of the same size -----------------------------
    clean_rate = max(r.rate for r in runs["clean"])
    mixed_rate = max(r.rate for r in runs["mixed"])
    clean_peak = max(r.peak_rss_mib for r in runs["clean"])
    mixed_peak = max(r.peak_rss_mib for r in runs["mixed"])
    print(f"throughput: clean {clean_rate:,.0f} records/s, mixed {mixed_rate:,.0f} records/s "
          f"({mixed_rate / clean_rate:.0%}); peak RSS: clean {clean_peak:.0f} MiB, mixed {mixed_peak:.0f} MiB; "
          f"test {time.monotonic() - t_start:.0f} s")
    cpu = f"per CPU-second: clean {max(r.cpu_rate for r in runs['clean']):,.0f}, " \
          f"mixed {max(r.cpu_rate for r in runs['mixed']):,.0f}"
    print(cpu)
    assert mixed_peak <= 1.25 * clean_peak + 30, f"peak RSS {mixed_peak:.0f} MiB with poison, {clean_peak:.0f} clean"

