"""`replay.token_context`: one access token used from a second, incompatible client context.

A client context is (network, agent family): detectors/client_context.py says how each is told;
detectors/token_context_state.py how a token's contexts are kept. Here are the two rules.

When is a second context *incompatible* with the first?

* A change of network alone is normal: phones hop between Wi-Fi and mobile data, laptops go from
  home to office, dual-stack clients alternate IPv4 and IPv6 — all with the same app. Silent.
* A change of agent family alone (same network) is what one household or office does: the user's
  own browser and a script of theirs behind one NAT. Silent.
* A different network **and** a different agent family at once is a copy of the token in another
  program somewhere else: the classic theft. Signalled, once per new context, against the token's
  earliest context (its owner, as far as we can tell).
* Two contexts *interleaving* — A, B, A, B, … with `flap_switches` switches between the same two
  contexts inside `flap_window_seconds` (default 5 in 120 s) — is two clients using one token at
  the same time, which a single moving device does not do (it leaves Wi-Fi, maybe comes back, but
  does not alternate every few seconds). Signalled once per token and pair of contexts, with a
  lower strength. The default is deliberately strict: with 3 switches in 300 s, simulated phones
  hopping Wi-Fi <-> mobile data gave 13 false alerts in 36 simulated hours; with 5 in 120 s, none
  in 108 simulated hours. Machine clients (server, probe) are not followed (they spread calls over
  several egress addresses), and IPv4 and IPv6 are followed apart (dual-stack clients alternate).
* Proof-of-possession: an access event carries the DPoP proof's `jti` (`nonce`) but not the proof's
  key, and a token's `cnf.jkt` is the same on every use of that token, so a `cnf.jkt` *mismatch*
  cannot be derived from these events; it is not checked here. A DPoP-bound token is only named in
  the reasons (its theft is worth less if the gateway enforces the proof).

Only signed tokens with verdict `ok` count: a forged token is `token.invalid`'s business and one
used after `exp` + leeway is `token.expired_use`'s. Redelivery never signals: the incompatibility
rule depends on the *set* of contexts seen (a context already seen adds nothing) and the flapping
rule only advances on events newer than every event seen for the token (a redelivered or late event
is never newer), so late events from before a phone's network switch do not look like flapping.
Out of order, an earlier use read late becomes the reference and the old reference is judged
against it. One case stays order-dependent: if the token's first use is read after both a thief's
use and a third context of the owner, the pair (thief, owner's third context) is reported too —
same token, same subject, so the same alert.

State: per live token until its `exp` + leeway, by the token's identity (detectors/token_context_state.py).
Partition-locality: keyed by the token's identity; every event carrying a token is keyed by that
token's subject (DESIGN.md), so all uses of one token meet on one partition.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any, ClassVar

from detectors.base import Entity, Signal
from detectors.client_context import NO_FLAP, Context, classify_agent, network_of
from detectors.state import StateStore
from detectors.token_context_state import PackedTokenContexts, TokenState, Use
from ingest.events import AccessRecord, Event

_MAX_REPORTED = 16  # contexts reported per token; beyond this the token is one long-reported theft


def _utc(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _where(use: Use) -> str:
    """A use for people: its IP; a first use whose event id was not kept also by its time."""
    where = use.ip or use.context.network
    return where if use.event_id is not None else f"{where} at {_utc(use.ts)}"


def human_gap(seconds: float) -> str:
    seconds = abs(seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} minutes"
    return f"{seconds / 3600:.1f} hours"


class TokenContextReplayDetector:
    name: ClassVar[str] = "replay.token_context"
    settings_key: ClassVar[str] = "replay_token_context"
    partition_by: ClassVar[tuple[str, ...]] = ("principal",)
    reads: ClassVar[tuple[str, ...]] = ("access.valid",)
    state_kind: ClassVar[str] = "packed"

    def __init__(self, *, leeway_seconds: float = 30.0, ipv4_prefix: int = 16, ipv6_prefix: int = 48,
                 flap_switches: int = 5, flap_window_seconds: float = 120.0,
                 first_event_seconds: float = 120.0) -> None:
        self.leeway_seconds = leeway_seconds
        self.ipv4_prefix = ipv4_prefix
        self.ipv6_prefix = ipv6_prefix
        self.flap_switches = flap_switches
        self.flap_window_seconds = flap_window_seconds
        self.first_event_seconds = first_event_seconds
        self._packed = PackedTokenContexts(ipv4_prefix=ipv4_prefix, ipv6_prefix=ipv6_prefix,
                                           first_event_seconds=first_event_seconds)

    @classmethod
    def from_config(cls, section: Any, tokens: Any) -> TokenContextReplayDetector:
        return cls(leeway_seconds=float(tokens.leeway_seconds), ipv4_prefix=int(section.ipv4_prefix),
                   ipv6_prefix=int(section.ipv6_prefix), flap_switches=int(section.flap_switches),
                   flap_window_seconds=float(section.flap_window_seconds))

    def context(self, rec: AccessRecord) -> Context:
        family, label = classify_agent(rec.user_agent)
        return Context(network_of(rec.client_ip, self.ipv4_prefix, self.ipv6_prefix), family, label)

    def observe(self, event: Event, state: StateStore) -> list[Signal]:
        info, rec = event.token, event.record
        if info is None or not info.signed or info.verdict != "ok" or not isinstance(rec, AccessRecord):
            return []
        ident = info.identity or info.tfp
        key = ("tctx", ident)
        expires_at = max(info.exp if info.exp is not None else event.ts, event.ts) + self.leeway_seconds
        family, label = classify_agent(rec.user_agent)
        st: TokenState | int | None = state.get(key)
        if st is None:
            if self._packed.first(state, ident, rec, event.ts, family, label, expires_at):
                return []
        elif isinstance(st, int):
            grows = info.exp is None or event.ts > info.exp
            if self._packed.same_context(state, ident, st, rec, event.ts, family, label, expires_at, grows):
                return []
        use = Use(self.context(rec), rec.client_ip, rec.event_id, event.ts)
        if st is None:  # a first use that does not pack
            state.set(key, self._flapping(event, TokenState(first=use), use, []), expires_at=expires_at)
            return []
        was = st if isinstance(st, TokenState) else None
        if not isinstance(st, TokenState):
            st = self._packed.unpack(state, ident, st)  # a second context, or a use that does not pack
        signals: list[Signal] = []
        new = self._incompatible(event, st, use, signals)
        new = self._flapping(event, new, use, signals)
        if new != was:
            state.set(key, new, expires_at=expires_at)
        return signals

    def _incompatible(self, event: Event, st: TokenState, use: Use, out: list[Signal]) -> TokenState:
        ckey, first = use.context.key, st.first
        if use.ts < first.ts or (use.ts == first.ts and first.event_id is not None
                                 and use.event_id is not None and use.event_id < first.event_id):
            # an earlier use arrived late: it becomes the reference; the old reference is judged against it
            if ckey == first.context.key:
                return replace(st, first=use)
            reported = st.reported
            if first.context.key not in reported and len(reported) < _MAX_REPORTED:
                if ckey in reported:  # this pair was reported the other way round already
                    reported = (*reported, first.context.key)
                elif not use.context.compatible(first.context):
                    out.append(self._signal(event, use, first, "context"))
                    reported = (*reported, first.context.key)
            return replace(st, first=use, reported=reported)
        if ckey == first.context.key or ckey in st.reported or len(st.reported) >= _MAX_REPORTED:
            return st
        if use.context.compatible(first.context):
            return st
        out.append(self._signal(event, first, use, "context"))
        return replace(st, reported=(*st.reported, ckey))

    def _flapping(self, event: Event, st: TokenState, use: Use, out: list[Signal]) -> TokenState:
        """A, B, A, B: only events newer than all seen advance it (late and redelivered ones never do).

        Contexts are followed per IP version, because a dual-stack client alternates between its IPv4
        and IPv6 networks on every new connection; a machine client (server, probe) spreads its calls
        over several egress addresses and is not followed at all.
        """
        if use.ts <= st.max_ts:
            return st
        ckey = use.context.key
        v6 = ":" in use.context.network
        last = st.last6 if v6 else st.last4
        if use.context.family in NO_FLAP or ckey == last or not last:
            return replace(st, max_ts=use.ts, last6=ckey) if v6 else replace(st, max_ts=use.ts, last4=ckey)
        switches = (*st.switches, (use.ts, last, ckey, use.event_id))[-self.flap_switches:]
        st = (replace(st, max_ts=use.ts, switches=switches, last6=ckey) if v6
              else replace(st, max_ts=use.ts, switches=switches, last4=ckey))
        if len(switches) < self.flap_switches or switches[-1][0] - switches[0][0] > self.flap_window_seconds:
            return st
        pair = {switches[0][1], switches[0][2]}
        if any({f, t} != pair for _, f, t, _ in switches):
            return st  # more than two contexts: a moving device, not two clients at once
        a, b = sorted(pair)
        tag = f"{a}~{b}"
        fk = st.first.context.key
        if tag in st.reported or len(st.reported) >= _MAX_REPORTED or \
                (fk in pair and (a if b == fk else b) in st.reported):
            return st  # already reported (as flapping, or as an incompatible context of the token)
        out.append(self._flap_signal(event, switches))
        return replace(st, reported=(*st.reported, tag))

    # -- signals --------------------------------------------------------------------------------
    def _entities(self, event: Event, ip: str | None) -> tuple[Entity, ...]:
        info = event.token
        assert info is not None
        ents = [Entity("subject", info.sub)] if info.sub else []
        return (*ents, Entity("token", info.tfp), *([Entity("ip", ip)] if ip is not None else []))

    def _signal(self, event: Event, a: Use, b: Use, rule: str) -> Signal:
        """`a` the earlier (reference) use, `b` the later one in the incompatible context."""
        info = event.token
        assert info is not None
        gap = b.ts - a.ts
        ca, cb = a.context, b.context
        reasons = [
            f"token tfp {info.tfp[:8]}… used from {cb.network} with {cb.label} {human_gap(gap)} after use "
            f"from {ca.network} with {ca.label}",
            f"another network and another kind of client at once ({ca.family} → {cb.family}): a phone "
            "changing networks keeps its app, so this looks like a copy of the token used elsewhere",
            f"first use from {_where(a)}, this use from {_where(b)}"
            + (f"; subject {info.sub}" if info.sub else "")
            + (f", client {info.client_id}" if info.client_id else ""),
        ]
        if info.cnf_jkt:
            reasons.append("the token is DPoP-bound (cnf.jkt): a copy is only usable if the gateway "
                           "does not enforce the proof")
        strength = 0.95 if cb.family in ("script", "none") or cb.family.startswith("other:") else 0.85
        return Signal(
            type=self.name, tenant=event.tenant, ts=b.ts, entities=self._entities(event, b.ip),
            strength=strength, reasons=tuple(reasons),
            event_ids=tuple(u.event_id for u in (a, b) if u.event_id is not None),
            token_fps=(info.tfp,),
            figures={"rule": rule,  # a first use known to the second only: the gap to the second
                     "gap_seconds": round(gap, 3) if a.event_id and b.event_id else float(round(gap)),
                     "first_network": ca.network,
                     "network": cb.network, "first_family": ca.family, "family": cb.family,
                     "first_agent": ca.label, "agent": cb.label, "first_ip": a.ip, "ip": b.ip,
                     "dpop_bound": info.cnf_jkt is not None})

    def _flap_signal(self, event: Event, switches: tuple[tuple[float, str, str, str | None], ...]) -> Signal:
        info = event.token
        rec = event.record
        assert info is not None and isinstance(rec, AccessRecord)
        span = switches[-1][0] - switches[0][0]
        a, b = switches[0][1], switches[0][2]
        na, fa = a.split("|", 1)
        nb, fb = b.split("|", 1)
        return Signal(
            type=self.name, tenant=event.tenant, ts=switches[-1][0], entities=self._entities(event, rec.client_ip),
            strength=0.7,
            reasons=(f"token tfp {info.tfp[:8]}… alternated {len(switches)} times in {human_gap(span)} between "
                     f"{na} ({fa}) and {nb} ({fb})",
                     "two clients using one token at the same time: a single device that changes networks "
                     "moves on, it does not switch back and forth",
                     f"latest use from {rec.client_ip}" + (f"; subject {info.sub}" if info.sub else "")),
            event_ids=tuple(eid for *_, eid in switches if eid is not None), token_fps=(info.tfp,),
            figures={"rule": "flapping", "switches": len(switches), "span_seconds": round(span, 3),
                     "contexts": [a, b], "window_seconds": self.flap_window_seconds})
