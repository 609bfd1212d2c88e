"""What a gateway must refuse outright, and which token is whose: the inputs of the decision endpoint.

A *hold* says "deny this entity until then, for this reason". It is not a risk score that decays: a
revoked token stays refused until it would have expired anyway, a compromised refresh family until its
tokens have, an LLM budget until its window ends. Holds come from

* token events: a `revoked` event holds the token with that `jti` (the ledger maps (tenant, jti) to the
  fingerprints it has seen on `issued` events and requests);
* signals of the types in `HOLD_TYPES`: a token replayed from a second context, every token of a reused
  refresh family (detectors/replay_refresh_reuse.py names them), an entity over its LLM budget
  (`figures["deny_until"]` says until when).

A *token row* (`TokenSeen`) maps a token's fingerprint to its tenant, subject and client the first time
a validly signed token is seen, so the decision endpoint can apply subject and client rules to a request
without decrypting its token on the gateway's hot path.

`TokenLedger` is pure: events and signals in, `Hold`s and `TokenSeen`s out, on event time. The pipeline
feeds it (gatewatch/pipeline.py) and the store keeps what it returns (api/holds_table.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from detectors.base import Signal
from ingest.events import Event, TokenRecord

# Signal type -> the entity kinds of its signals that are held. A signal can say until when
# (`figures["deny_until"]`, event time); otherwise a token is held until its `exp` (+ leeway) when the
# ledger has seen it, and anything else for `hold_seconds`.
HOLD_TYPES: dict[str, tuple[str, ...]] = {
    "replay.token_context": ("token",),
    "replay.refresh_reuse": ("token",),
    "traffic.llm_budget": ("subject", "client", "tenant"),
}
REVOKED = "token.revoked"  # the hold type of a revocation (no alert: a logout is not an attack)
_MAX_PENDING = 100_000  # revocations of tokens not seen yet, kept until one turns up (bounded memory)


@dataclass(frozen=True, slots=True)
class Hold:
    tenant: str
    kind: str  # token (value: tfp) | subject | client | ip | tenant
    value: str
    type: str  # the alert type that caused it, or token.revoked
    reason: str
    since: float  # event time
    until: float  # event time: denied while the decision's clock is before this


@dataclass(frozen=True, slots=True)
class TokenSeen:
    tfp: str
    tenant: str
    sub: str | None
    client_id: str | None
    iss: str | None
    jti: str | None
    exp: float | None
    ts: float  # event time of the first sighting


class TokenLedger:
    def __init__(self, *, hold_seconds: float = 86_400.0, leeway_seconds: float = 30.0) -> None:
        self.hold_seconds = hold_seconds
        self.leeway_seconds = leeway_seconds
        self._tokens: dict[str, float] = {}  # tfp -> until when it is remembered (its exp + leeway)
        self._by_jti: dict[tuple[str, str], list[str]] = {}  # (tenant, jti) -> fingerprints seen
        self._pending: dict[tuple[str, str], tuple[float, float]] = {}  # revoked, not seen: (ts, until)

    def observe(self, event: Event, holds: list[Hold], seen: list[TokenSeen]) -> None:
        """One event: a new validly signed token gives a `TokenSeen`, a revocation `Hold`s."""
        rec = event.record
        info = event.token
        if info is not None and info.claims is not None and info.tfp not in self._tokens:
            tenant = info.tid or rec.tenant
            until = (info.exp + self.leeway_seconds) if info.exp is not None else event.ts + self.hold_seconds
            self._tokens[info.tfp] = until
            seen.append(TokenSeen(info.tfp, tenant, info.sub, info.client_id, info.iss, info.jti, info.exp,
                                  event.ts))
            if info.jti:
                key = (tenant, info.jti)
                self._by_jti.setdefault(key, []).append(info.tfp)
                pending = self._pending.pop(key, None)
                if pending is not None:  # revoked before we saw it: held from now on
                    holds.append(self._revoked(tenant, info.tfp, info.jti, pending[0], until))
        if type(rec) is TokenRecord and rec.type == "revoked" and rec.jti:
            key = (rec.tenant, rec.jti)
            fps = self._by_jti.get(key)
            if fps:
                for tfp in fps:
                    holds.append(self._revoked(rec.tenant, tfp, rec.jti, event.ts,
                                               self._tokens.get(tfp, event.ts + self.hold_seconds)))
            elif len(self._pending) < _MAX_PENDING:
                self._pending[key] = (event.ts, event.ts + self.hold_seconds)

    def _revoked(self, tenant: str, tfp: str, jti: str, ts: float, until: float) -> Hold:
        return Hold(tenant, "token", tfp, REVOKED, f"token {_short(jti)} was revoked at the authorization server",
                    ts, max(until, ts))

    def on_signal(self, signal: Signal) -> list[Hold]:
        """The holds a signal asks for (none for types outside HOLD_TYPES)."""
        kinds = HOLD_TYPES.get(signal.type)
        if kinds is None:
            return []
        deny_until = signal.figures.get("deny_until")
        reason = f"{signal.type}: {signal.reasons[0]}" if signal.reasons else signal.type
        out = []
        for ent in signal.entities:
            if ent.kind not in kinds:
                continue
            if isinstance(deny_until, int | float):
                until = float(deny_until)
            elif ent.kind == "token" and ent.value in self._tokens:
                until = self._tokens[ent.value]
            else:
                until = signal.ts + self.hold_seconds
            out.append(Hold(signal.tenant, ent.kind, ent.value, signal.type, reason, signal.ts, max(until, signal.ts)))
        return out

    def expire(self, watermark: float) -> None:
        """Forget tokens past their expiry and revocations nobody presented in time."""
        gone = {tfp for tfp, until in self._tokens.items() if until < watermark}
        if gone:
            for tfp in gone:
                del self._tokens[tfp]
            for key, fps in list(self._by_jti.items()):
                live = [f for f in fps if f not in gone]
                if live:
                    self._by_jti[key] = live
                else:
                    del self._by_jti[key]
        for key in [k for k, (_, until) in self._pending.items() if until < watermark]:
            del self._pending[key]


def _short(jti: str) -> str:
    return jti if len(jti) <= 12 else f"{jti[:8]}…"
