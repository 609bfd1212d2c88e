"""`token.unencrypted`: a plain JWS presented where access tokens should be encrypted to us.

Reported once per (tenant, issuer, client) and again only after `realert_seconds` of event time,
so a client that never upgraded raises one alert a day, not one per request. Only tokens whose
signature verified count: an unsigned or forged token is `token.invalid`'s business.
"""

from __future__ import annotations

from typing import Any, ClassVar

from detectors.base import Entity, Signal
from detectors.state import StateStore
from ingest.events import AccessRecord, Event


class UnencryptedTokenDetector:
    name: ClassVar[str] = "token.unencrypted"
    settings_key: ClassVar[str] = "token_unencrypted"
    partition_by: ClassVar[tuple[str, ...]] = ("client",)
    reads: ClassVar[tuple[str, ...]] = ("access.valid", "access.invalid")

    def __init__(self, *, realert_seconds: float = 86_400.0) -> None:
        self.realert_seconds = realert_seconds

    @classmethod
    def from_config(cls, section: Any, tokens: Any) -> UnencryptedTokenDetector:
        return cls(realert_seconds=float(section.realert_seconds))

    def observe(self, event: Event, state: StateStore) -> list[Signal]:
        info = event.token
        rec = event.record
        if info is None or info.encrypted or not info.signed or not isinstance(rec, AccessRecord):
            return []
        client = info.client_id or "(no client_id)"
        key = ("unenc", rec.tenant, info.iss, client)
        if state.get(key) is not None:
            return []
        state.set(key, event.ts, expires_at=event.ts + self.realert_seconds)
        entity = Entity("client", info.client_id) if info.client_id else \
            Entity("subject", info.sub) if info.sub else Entity("token", info.tfp)
        alg = (info.header or {}).get("alg", "?")
        return [Signal(
            type=self.name, tenant=rec.tenant, ts=event.ts,
            entities=(entity, Entity("token", info.tfp)),
            strength=0.5,
            reasons=(f"client {client} of issuer {info.iss} presents plain signed tokens ({alg}), "
                     "readable by anyone who sees them",
                     f"first seen on {rec.method} {rec.path} from {rec.client_ip}"),
            event_ids=(rec.event_id,), token_fps=(info.tfp,),
            figures={"issuer": info.iss, "client_id": client, "alg": alg})]
