"""`replay.refresh_reuse`: a rotated refresh token presented again.

With refresh-token rotation (OAuth 2.0 Security BCP, RFC 9700 §4.14.2) every `refreshed` event on
`gateway.tokens` retires the presented refresh token (`presented_jti`) in exchange for a new one
(`issued_jti`). A retired token presented again means two parties hold copies of it: the
authorization server should revoke the whole family, and we raise `replay.refresh_reuse`.

Two normal cases are kept apart:

* the two-tab race: two tabs of one browser refresh with the same token within a second or two
  (the simulator's races are 0.15–1.9 s apart). A second presentation within `grace_seconds` of the
  rotation is silent — unless the token the first exchange issued has *itself* been rotated already
  by then: a presentation of a token two links back in the chain is no race.
* redelivery: the same record (same event id) again is never a reuse.

A presentation after `grace_seconds` is a reuse, however far down the chain the token was (a
stolen token from three rotations ago counts just the same). Each later presentation gives one
signal with (the rotation, this presentation) as evidence. Out of order, the earliest presentation
read so far is the rotation; when an earlier one is read late, the later presentations not yet
reported are judged again against it, so the set of presentations reported does not depend on the
order of arrival (the chain rule aside). Which of two racing rotations a pair names can: both are
the rotation.

State, key `("rt", tenant, presented_jti)`: the rotation (event id, time, the jti it was exchanged
for, `sub`, `client_id`) and the same for each later presentation (at most 64), for
`remember_seconds` (default
24 h) of event time after the rotation. Refresh tokens often live 30 days; remembering every
rotated jti that long costs memory proportional to a month of refreshes, so reuse of a token rotated
more than `remember_seconds` ago is not detected (raise it if memory allows). Token events carry
no `iss`, so the key is (tenant, jti) rather than (iss, jti).
Token families (RFC 9700 §4.14.2: on reuse, revoke every token of the grant). A `refreshed` event
links the presented refresh token to the one issued in exchange; an `issued` event with `refresh_jti`
puts its access token in that refresh token's family. State `("rfam", tenant, jti)` names the family
(the jti of its first refresh token) and `("fam", tenant, family)` holds its refresh jtis and access
token fingerprints (at most 64 each), for `remember_seconds` after the family last changed. A reuse
names every access token of the family as an entity (each gains risk, the alert lists them, and the
gateway decision denies them: scoring/holds.py); an access token issued from the family after that gets
a non-alerting signal that holds it too.

Partition-locality: the state is keyed by the refresh token's jti; a refresh family keeps its
`sub`, so routing `refreshed` events by `sub` (DESIGN.md) brings a reuse to the partition that
holds the rotation. A `refreshed` event without `sub` would need routing by `presented_jti`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any, ClassVar

from detectors.base import Entity, Signal
from detectors.state import StateStore
from ingest.events import Event, TokenRecord

_MAX_LATER = 64  # later presentations remembered (and signalled) per rotated token
_MAX_FAMILY = 64  # refresh jtis, and access tokens, remembered per family


@dataclass(frozen=True, slots=True)
class _Presentation:
    event_id: str
    ts: float
    successor: str | None  # the issued_jti it was exchanged for
    sub: str | None
    client_id: str | None
    reported: bool = False


@dataclass(frozen=True, slots=True)
class _Family:
    root: str
    refresh: tuple[str, ...] = ()  # refresh jtis of the chain
    tokens: tuple[str, ...] = ()  # fingerprints of the access tokens issued with them
    compromised: float | None = None  # event time of the first reuse found


@dataclass(frozen=True, slots=True)
class _Rotation:
    first: _Presentation  # the earliest presentation: the rotation
    later: tuple[_Presentation, ...] = ()  # later presentations (reported reuses and silent races)


def _hhmmss(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%H:%M:%S")


def _short(jti: str) -> str:
    return jti if len(jti) <= 12 else f"{jti[:8]}…"


class RefreshReuseDetector:
    name: ClassVar[str] = "replay.refresh_reuse"
    settings_key: ClassVar[str] = "replay_refresh_reuse"
    partition_by: ClassVar[tuple[str, ...]] = ("principal",)
    reads: ClassVar[tuple[str, ...]] = ("token",)

    def __init__(self, *, grace_seconds: float = 10.0, remember_seconds: float = 86_400.0) -> None:
        self.grace_seconds = grace_seconds
        self.remember_seconds = remember_seconds

    @classmethod
    def from_config(cls, section: Any, tokens: Any) -> RefreshReuseDetector:
        return cls(grace_seconds=float(section.grace_seconds), remember_seconds=float(section.remember_seconds))

    def _live(self, rot: _Rotation | None, ts: float) -> _Rotation | None:
        """A remembered rotation, unless it is older than `remember_seconds` (expiry runs once a minute)."""
        return rot if rot is not None and abs(ts - rot.first.ts) <= self.remember_seconds else None

    def observe(self, event: Event, state: StateStore) -> list[Signal]:
        rec = event.record
        if not isinstance(rec, TokenRecord):
            return []
        if rec.type == "issued":
            return self._issued(event, rec, state)
        if rec.type != "refreshed" or not rec.presented_jti:
            return []
        family = self._link(state, rec.tenant, rec.presented_jti, rec.issued_jti, None, event.ts)
        signals = self._reuse(event, rec, state)
        if signals:
            fam = family if family.compromised is not None else replace(family, compromised=signals[0].ts)
            self._keep(state, rec.tenant, fam, event.ts)
            signals = [self._with_family(s, fam) for s in signals]
        return signals

    # -- token families ---------------------------------------------------------------------------------
    def _family(self, state: StateStore, tenant: str, jti: str) -> _Family:
        root = state.get(("rfam", tenant, jti)) or jti
        fam = state.get(("fam", tenant, root))
        return fam if fam is not None else _Family(root)

    def _keep(self, state: StateStore, tenant: str, fam: _Family, ts: float) -> None:
        state.set(("fam", tenant, fam.root), fam, expires_at=ts + self.remember_seconds)

    def _link(self, state: StateStore, tenant: str, refresh_jti: str, issued_jti: str | None,
              tfp: str | None, ts: float) -> _Family:
        """Put `issued_jti` (a refresh token issued in exchange) or `tfp` (an access token issued with it)
        in the family of `refresh_jti`; returns the family as now stored."""
        fam = self._family(state, tenant, refresh_jti)
        refresh, tokens = fam.refresh, fam.tokens
        for jti in (refresh_jti, issued_jti):
            if jti is not None:
                state.set(("rfam", tenant, jti), fam.root, expires_at=ts + self.remember_seconds)
                if jti not in refresh and len(refresh) < _MAX_FAMILY:
                    refresh = (*refresh, jti)
        if tfp is not None and tfp not in tokens and len(tokens) < _MAX_FAMILY:
            tokens = (*tokens, tfp)
        fam = replace(fam, refresh=refresh, tokens=tokens)
        self._keep(state, tenant, fam, ts)
        return fam

    def _issued(self, event: Event, rec: TokenRecord, state: StateStore) -> list[Signal]:
        info = event.token
        if not rec.refresh_jti or info is None or info.claims is None:
            return []
        fam = self._link(state, rec.tenant, rec.refresh_jti, None, info.tfp, event.ts)
        if fam.compromised is None or event.ts < fam.compromised:
            return []
        ents = [Entity("token", info.tfp)]
        if rec.sub:
            ents.insert(0, Entity("subject", rec.sub))
        return [Signal(
            type=self.name, tenant=rec.tenant, ts=event.ts, entities=tuple(ents), strength=0.95,
            reasons=(f"access token issued from refresh token {_short(rec.refresh_jti)}, whose family was found "
                     f"reused at {_hhmmss(fam.compromised)}: denied with the rest of the family",),
            event_ids=(rec.event_id,), token_fps=(info.tfp,),
            figures={"family": _short(fam.root), "refresh_jti": rec.refresh_jti}, alerting=False)]

    def _with_family(self, signal: Signal, fam: _Family) -> Signal:
        if not fam.tokens:
            return signal
        tokens = tuple(Entity("token", tfp) for tfp in fam.tokens)
        return replace(
            signal, entities=(*signal.entities, *tokens), token_fps=fam.tokens,
            reasons=(*signal.reasons, f"its family ({len(fam.refresh)} refresh tokens, {len(fam.tokens)} access "
                     "tokens) is compromised: the gateway decision denies every one of them"),
            figures={**signal.figures, "family": _short(fam.root), "family_refresh_tokens": len(fam.refresh),
                     "family_access_tokens": len(fam.tokens),
                     # for the authorization server to revoke (jtis name refresh tokens; they are not the tokens)
                     "family_refresh_jtis": list(fam.refresh)})

    # -- reuse ------------------------------------------------------------------------------------------
    def _reuse(self, event: Event, rec: TokenRecord, state: StateStore) -> list[Signal]:
        assert rec.presented_jti is not None
        key = ("rt", rec.tenant, rec.presented_jti)
        mine = _Presentation(rec.event_id, event.ts, rec.issued_jti, rec.sub, rec.client_id)
        rot = self._live(state.get(key), event.ts)
        if rot is None:
            state.set(key, _Rotation(mine), expires_at=event.ts + self.remember_seconds)
            return []
        if rec.event_id == rot.first.event_id or any(p.event_id == rec.event_id for p in rot.later):
            return []  # the same record again: a redelivery
        if len(rot.later) >= _MAX_LATER:
            return []
        rejudge = (event.ts, rec.event_id) < (rot.first.ts, rot.first.event_id)
        kept: tuple[_Presentation, ...]
        if rejudge:  # out of order: this is the rotation; every later presentation is judged against it
            first, pending, kept = mine, (rot.first, *rot.later), ()
        else:
            first, pending, kept = rot.first, (mine,), rot.later
        signals, judged = [], []
        for p in pending:
            if not p.reported:
                gap = p.ts - first.ts
                chain = self._successor_rotated(state, rec.tenant, first, p.ts)
                if gap > self.grace_seconds or chain is not None:
                    signals.append(self._signal(rec, first, p, gap, chain))
                    p = replace(p, reported=True)
            judged.append(p)
        later = sorted((*kept, *judged), key=lambda p: (p.ts, p.event_id))
        state.set(key, _Rotation(first, tuple(later)),
                  expires_at=first.ts + self.remember_seconds)
        return signals

    def _successor_rotated(self, state: StateStore, tenant: str, rot: _Presentation, by: float) -> float | None:
        """When the token `rot` issued was itself rotated, if that happened by `by`; else None."""
        if rot.successor is None:
            return None
        nxt = self._live(state.get(("rt", tenant, rot.successor)), rot.ts)
        return nxt.first.ts if nxt is not None and nxt.first.ts <= by else None

    def _signal(self, rec: TokenRecord, earlier: _Presentation, later: _Presentation, gap: float,
                chain: float | None) -> Signal:
        jti = rec.presented_jti or ""
        sub = later.sub or earlier.sub
        client = later.client_id or earlier.client_id
        ents: list[Entity] = []
        if sub:
            ents.append(Entity("subject", sub))
        if client:
            ents.append(Entity("client", client))
        if not ents:
            ents.append(Entity("tenant", rec.tenant))
        if gap > self.grace_seconds:
            head = (f"refresh token {_short(jti)} was rotated at {_hhmmss(earlier.ts)} and presented again "
                    f"{gap:.1f}s later (grace {self.grace_seconds:.0f}s for simultaneous refreshes)")
        else:
            head = (f"refresh token {_short(jti)} was presented again {gap:.1f}s after its rotation, and "
                    f"the token it was exchanged for had already been rotated too")
        reasons = [head]
        if chain is not None and gap > self.grace_seconds:
            reasons.append(f"the token it was exchanged for ({_short(earlier.successor or '')}) had itself been "
                           f"rotated {later.ts - chain:.0f}s before: an old link of the chain came back")
        reasons.append("two parties hold copies of one refresh token: revoke the whole token family")
        if earlier.client_id and later.client_id and earlier.client_id != later.client_id:
            reasons.append(f"rotated by client {earlier.client_id}, presented again by client {later.client_id}")
        if earlier.sub and later.sub and earlier.sub != later.sub:
            reasons.append(f"rotated for subject {earlier.sub}, presented again for subject {later.sub}")
        return Signal(
            type=self.name, tenant=rec.tenant, ts=later.ts, entities=tuple(ents),
            strength=0.95 if gap > self.grace_seconds else 0.85, reasons=tuple(reasons),
            event_ids=(earlier.event_id, later.event_id),
            figures={"gap_seconds": round(gap, 3), "grace_seconds": self.grace_seconds,
                     "presented_jti": jti, "successor_rotated": chain is not None,
                     "client_id": client})
