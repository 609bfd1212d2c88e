"""`token.revoked_use`: an access token used after its revocation.

A `revoked` event on `gateway.tokens` (RFC 7009 revocation, usually a logout) names the token's
`jti`. Any later access event whose validly signed token (verdict `ok` or `expired`) carries that
jti is a use after revocation — a stale tab, or a copy the logout did not reach — provided it comes
more than `grace_seconds` after the revocation: requests already in flight when the user clicked
"log out" are normal.

How long a revocation is remembered: until the token would have expired anyway (`exp` + leeway),
when the token was seen before its revocation (on its `issued` event or an earlier request); else
`remember_seconds` (default 24 h, the validator's default maximum token lifetime). A token used
after its expiry is `token.expired_use`'s business besides.

Events from the two topics are not ordered against each other, so a revocation may be read after
requests that came after it in event time. Each token's most recent uses (those within
`reorder_seconds` of its newest use, at most 8) are kept with its `exp`, and a revocation arriving
late is checked against them. One signal per use after revocation (at most 64 per token), with
(the revocation, the use) as evidence; a redelivered revocation or use never signals again.

State, keyed by (tenant, jti) — token events carry no `iss`, so not (iss, jti); the tenant of a
token is its `tid` claim when present, else the tenant of the request or token event — in a
`PackedStore`:
* `("rve", tenant, jti)` the token's `exp`, one packed int (a float if `exp` is not a whole second),
  until `exp` + leeway: a few bytes of the store's table per live token, for a revocation's deadline;
* `("rvu", tenant, jti)` one flat list: the token's `exp`, fingerprint and subject and its recent
  uses, only until `reorder_seconds` after its newest use (the store's watermark adds the pipeline's
  lateness): as long as a revocation read out of order can still need them;
* `("rvk", tenant, jti)` the revocation (event id, time, `sub`, `client_id`, deadline, ids of the uses
  reported), until its deadline.
Memory follows live tokens (one small int each), the tokens used in the last minute or so, and
revocations. Signals are those of keeping the recent uses until `exp`, but for a revocation read
later than the pipeline's lateness after the uses it follows were swept (it then signals only the
uses read after it). A key collision in the store (~5·10⁻⁸ at a million live tokens) could lend one
token's `exp` to another's revocation, remembered for a shorter or longer time.
Partition-locality: keyed by jti; access events are routed by the token's subject, so a `revoked`
event must carry `sub` (it is optional in CONTRACT.md §1) to reach the same partition; one without
`sub` would need routing by `jti`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, ClassVar, NamedTuple

from detectors.base import Entity, Signal
from detectors.state import StateStore
from ingest.events import Event, TokenRecord

_MAX_REPORTED = 64  # uses after revocation signalled per token
_MAX_RECENT = 8  # recent uses kept per token for late revocations


@dataclass(frozen=True, slots=True)
class _Revocation:
    event_id: str
    ts: float
    deadline: float
    sub: str | None
    client_id: str | None
    reported: tuple[str, ...] = ()


class _RecentUse(NamedTuple):
    ts: float
    event_id: str
    ip: str
    status: int


# A token (by tenant and jti) used lately, as one flat list (no object per use), changed in place: its
# `exp`, fingerprint and subject, then each recent use's four fields (`_RecentUse`), by time.
_Seen = list[Any]
_EXP, _TFP, _SUB, _HEAD = 0, 1, 2, 3


def _recent(seen: _Seen) -> list[_RecentUse]:
    return [_RecentUse(*seen[i:i + 4]) for i in range(_HEAD, len(seen), 4)]


def _exp_value(exp: float) -> int | float:
    """A token's `exp` as stored: a whole second packs into an int, anything else stays a float."""
    return int(exp) if float(exp).is_integer() and 0 <= exp < 1 << 32 else float(exp)


class RevokedUseDetector:
    name: ClassVar[str] = "token.revoked_use"
    settings_key: ClassVar[str] = "token_revoked_use"
    partition_by: ClassVar[tuple[str, ...]] = ("principal",)
    reads: ClassVar[tuple[str, ...]] = ("token", "access.valid", "access.invalid")
    state_kind: ClassVar[str] = "packed"

    def __init__(self, *, leeway_seconds: float = 30.0, grace_seconds: float = 5.0,
                 remember_seconds: float = 86_400.0, reorder_seconds: float = 30.0) -> None:
        self.leeway_seconds = leeway_seconds
        self.grace_seconds = grace_seconds
        self.remember_seconds = remember_seconds
        self.reorder_seconds = reorder_seconds

    @classmethod
    def from_config(cls, section: Any, tokens: Any) -> RevokedUseDetector:
        return cls(leeway_seconds=float(tokens.leeway_seconds), grace_seconds=float(section.grace_seconds),
                   remember_seconds=float(section.remember_seconds),
                   reorder_seconds=float(section.reorder_seconds))

    def observe(self, event: Event, state: StateStore) -> list[Signal]:
        rec = event.record
        if isinstance(rec, TokenRecord):
            if rec.type == "revoked" and rec.jti:
                return self._revoked(event, rec, state)
            if rec.type == "issued":
                self._note_token(event, state, use=None)
            return []
        info = event.token
        if info is None or not info.signed or info.verdict not in ("ok", "expired") or not info.jti:
            return []
        use = _RecentUse(event.ts, rec.event_id, rec.client_ip, rec.status)
        self._note_token(event, state, use=use)
        tenant = info.tid or rec.tenant
        key = ("rvk", tenant, info.jti)
        rev: _Revocation | None = state.get(key)
        if rev is None or not self._after(rev, use) or rec.event_id in rev.reported \
                or len(rev.reported) >= _MAX_REPORTED:
            return []
        state.set(key, replace(rev, reported=(*rev.reported, rec.event_id)), expires_at=rev.deadline)
        return [self._signal(tenant, rev, use, info.jti, info.tfp, info.sub)]

    def _after(self, rev: _Revocation, use: _RecentUse) -> bool:
        return rev.ts + self.grace_seconds < use.ts <= rev.deadline

    # -- token sightings ------------------------------------------------------------------------
    def _note_token(self, event: Event, state: StateStore, use: _RecentUse | None) -> None:
        info = event.token
        if info is None or not info.signed or not info.jti:
            return
        tenant = info.tid or event.tenant
        seen: _Seen | None = state.get(("rvu", tenant, info.jti)) if use is not None else None
        # While a token's recent uses are kept, its `exp` was noted with the first of them and, for a use
        # inside the token's lifetime (verdict ok), cannot have been swept yet.
        if info.exp is not None and (seen is None or info.verdict != "ok"):
            exp_key = ("rve", tenant, info.jti)
            if state.get(exp_key) is None:
                state.set(exp_key, _exp_value(info.exp),
                          expires_at=max(info.exp, event.ts) + self.leeway_seconds)
        if use is None:
            return
        key = ("rvu", tenant, info.jti)
        if seen is None:
            state.set(key, [info.exp, info.tfp, info.sub, *use], expires_at=use.ts + self.reorder_seconds)
            return
        newest = seen[-4]
        if use.ts > newest:  # the usual case: the newest use (so not a redelivery: that has its time)
            seen += use
            newest = use.ts
        elif use.event_id in seen[_HEAD + 1::4]:
            return  # a redelivered use: nothing new
        else:
            recent = sorted((*_recent(seen), use), key=lambda u: (u.ts, u.event_id))
            seen[_HEAD:] = [x for u in recent for x in u]
            newest = seen[-4]
        # keep the uses within `reorder_seconds` of the newest, at most _MAX_RECENT
        cut, first = newest - self.reorder_seconds, _HEAD
        end = len(seen) - 4 * _MAX_RECENT
        while first < len(seen) and (first < end or seen[first] < cut):
            first += 4
        if first > _HEAD:
            del seen[_HEAD:first]
        state.set(key, seen, expires_at=newest + self.reorder_seconds)

    # -- revocations ----------------------------------------------------------------------------
    def _revoked(self, event: Event, rec: TokenRecord, state: StateStore) -> list[Signal]:
        jti = rec.jti or ""
        key = ("rvk", rec.tenant, jti)
        rev: _Revocation | None = state.get(key)
        if rev is not None and (rev.event_id == rec.event_id or rev.ts <= event.ts):
            return []  # a redelivery, or the same token revoked again later: nothing new
        seen: _Seen | None = state.get(("rvu", rec.tenant, jti))
        exp = seen[_EXP] if seen is not None else None
        if exp is None:
            exp = state.get(("rve", rec.tenant, jti))
        if rev is not None:  # an earlier revocation of the same token, read late
            rev = replace(rev, event_id=rec.event_id, ts=event.ts)
        else:
            deadline = event.ts + self.remember_seconds
            if exp is not None:
                deadline = min(exp + self.leeway_seconds, deadline)
            if deadline <= event.ts + self.grace_seconds:
                return []  # the token expired before it could be used after revocation
            rev = _Revocation(rec.event_id, event.ts, deadline, rec.sub, rec.client_id)
        signals = []
        for use in _recent(seen) if seen is not None else ():
            assert seen is not None
            if self._after(rev, use) and use.event_id not in rev.reported and len(rev.reported) < _MAX_REPORTED:
                rev = replace(rev, reported=(*rev.reported, use.event_id))
                signals.append(self._signal(rec.tenant, rev, use, jti, seen[_TFP], seen[_SUB]))
        state.set(key, rev, expires_at=rev.deadline)
        return signals

    def _signal(self, tenant: str, rev: _Revocation, use: _RecentUse, jti: str, tfp: str,
                sub: str | None) -> Signal:
        """`tenant` is the token's (the state key's), so both orders of arrival give the same alert."""
        gap = use.ts - rev.ts
        let_through = use.status < 400
        sub = sub or rev.sub
        ents = [Entity("subject", sub)] if sub else []
        ents += [Entity("token", tfp), Entity("ip", use.ip)]
        outcome = (f"the gateway answered {use.status}: it does not check revocation" if let_through
                   else f"refused with {use.status}")
        return Signal(
            type=self.name, tenant=tenant, ts=max(use.ts, rev.ts), entities=tuple(ents),
            strength=0.9 if let_through else 0.6,
            reasons=(f"token tfp {tfp[:8]}… (jti {jti[:12]}) used {gap:.0f}s after it was revoked "
                     f"(grace {self.grace_seconds:.0f}s for requests in flight)",
                     f"used from {use.ip}; {outcome}",
                     "a stale session or a copy of the token the logout did not reach"
                     + (f"; subject {sub}" if sub else "")),
            event_ids=(rev.event_id, use.event_id), token_fps=(tfp,),
            figures={"seconds_after_revocation": round(gap, 3), "grace_seconds": self.grace_seconds,
                     "jti": jti, "status": use.status, "let_through": let_through})
