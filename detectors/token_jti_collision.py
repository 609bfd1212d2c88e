"""`token.jti_collision`: one `(iss, jti)` carried by tokens with different subjects or issue times.

A `jti` is unique per issuer (RFC 7519 §4.1.7). Two validly signed tokens sharing one are either an
issuer bug or a forgery by someone holding the signing key. State per live token, in a
`PackedStore`: key `(iss, jti)` → (32-bit digest of `sub`, `iat`), kept until the first token's
`exp` + leeway. Memory follows live tokens (~100 bytes each). A 32-bit subject digest collision
would hide one collision in four billion; a 64-bit key collision would raise a false alert with
probability ~3·10⁻⁸ at a million live tokens.

Partition-locality: keyed by `(iss, jti)`; the forged token names another subject, so a scale-out
must route token-bearing events for this detector by `jti` (the scale-out issue's re-keyed stream).
"""

from __future__ import annotations

from typing import Any, ClassVar

from detectors.base import Signal, principal_entities
from detectors.packed_store import pack_str
from detectors.state import StateStore
from ingest.events import Event

_IAT_BITS = 34


class JtiCollisionDetector:
    name: ClassVar[str] = "token.jti_collision"
    settings_key: ClassVar[str] = "token_jti_collision"
    partition_by: ClassVar[tuple[str, ...]] = ("jti",)
    reads: ClassVar[tuple[str, ...]] = ("token", "access.valid", "access.invalid")
    state_kind: ClassVar[str] = "packed"

    def __init__(self, *, leeway_seconds: float = 30.0, max_remember_seconds: float = 86_400.0) -> None:
        self.leeway_seconds = leeway_seconds
        self.max_remember_seconds = max_remember_seconds

    @classmethod
    def from_config(cls, section: Any, tokens: Any) -> JtiCollisionDetector:
        return cls(leeway_seconds=float(tokens.leeway_seconds),
                   max_remember_seconds=float(section.max_remember_seconds))

    def observe(self, event: Event, state: StateStore) -> list[Signal]:
        info = event.token
        if info is None or not info.signed or info.jti is None:
            return []
        key = ("jti", info.iss, info.jti)
        iat = int(info.iat if info.iat is not None else (info.nbf or 0)) & ((1 << _IAT_BITS) - 1)
        mine = (pack_str(info.sub) << _IAT_BITS) | iat
        first = state.get(key)
        if first is None:
            until = min(info.exp or event.ts, event.ts + self.max_remember_seconds) + self.leeway_seconds
            state.set(key, mine, expires_at=max(until, event.ts))
            return []
        if first == mine:
            return []  # the same token again (or a token identical in sub and iat)
        reported = ("jtic", info.iss, info.jti, info.tfp)
        if state.get(reported) is not None:
            return []  # this colliding token was reported already (also: a redelivery)
        state.set(reported, 1, expires_at=max(info.exp or event.ts, event.ts) + self.leeway_seconds)
        first_iat = first & ((1 << _IAT_BITS) - 1)
        same_sub = (first >> _IAT_BITS) == pack_str(info.sub)
        what = "issue times" if same_sub else "subjects"
        reasons = (f"jti {info.jti} of issuer {info.iss} is carried by two tokens with different {what}: "
                   "jtis are unique per issuer, so one of them is likely forged",
                   f"this token: sub {info.sub}, iat {iat}; the earlier one: iat {first_iat}"
                   + ("" if same_sub else ", another subject"),
                   f"used on {event.tenant} from {getattr(event.record, 'client_ip', '?')}")
        return [Signal(type=self.name, tenant=event.tenant, ts=event.ts, entities=principal_entities(event),
                       strength=0.95 if not same_sub else 0.8, reasons=reasons, event_ids=(event.event_id,),
                       token_fps=(info.tfp,),
                       figures={"jti": info.jti, "iss": info.iss, "iat": iat, "first_iat": first_iat,
                                "different_subject": not same_sub})]
