"""State of `replay.token_context`: how a token's contexts are kept, packed while there is one.

State, per live token until its `exp` + leeway, key `("tctx", identity)` — the token as issued (the
hash of its JWS signing input, ingest/tokens.py), so a copy re-encrypted or re-signed is the same
token — in a `PackedStore`. Most tokens are only ever used from one context, and such a token is one
packed int of 128 bits: its agent's id, the first use's IPv4 address or the top 48 bits of its IPv6
one (its network, with `ipv6_prefix` ≤ 48), the first use's time to the second and the newest use's time to the
millisecond (exact for the millisecond timestamps gateways write; a finer one is rounded up, so a
use within the same millisecond counts as not newer) — four 32-bit words of the store's table
(bench/detectors.py: 78 bytes per live token for this detector at a million, the entries below
included). A second context turns it into the object form: the first context (network, family, a
short agent label, IP, event id, time), the contexts already reported, the latest context and event
time, and the last few switches for the flapping rule — a few short strings. A token whose first
use does not pack (an IPv4-mapped IPv6 address, an `ipv6_prefix` over 48, no free agent id) takes
the object form at once, one used from one context for more than 24 days takes it then. Signals
are the same either way.

The agent (family, label) is not packed but named by a 16-bit id: `("tctx-agent", family, label)` →
id and `("tctx-agent", id)` → (family, label), both kept as long as the last token that names them.
The first use's event id does not pack either: `("tctx-first", identity)` keeps it (with the exact time and
IP) `first_event_seconds` (default 120) after that use — long enough for every use read out of order
within the pipeline's lateness, so the evidence does not depend on the order of arrival. A second
context that appears later names the first use by its time (to the second) and IP (IPv6: its
network) instead: same signal, evidence without the first event id. A key collision in the store
(~5·10⁻⁸ at a million live tokens) would judge one token's use against another's first context.
"""

from __future__ import annotations

import math
import socket
from dataclasses import dataclass

from detectors.client_context import Context, network_of
from detectors.packed_store import pack_str
from detectors.state import StateStore
from ingest.events import AccessRecord

# The one-context token as one packed int, low bits first: agent id (16) | IPv6? (1) | first use's IPv4
# address, or the top 48 bits of its IPv6 address (48) | first use, whole seconds (32) | newest use, in
# ms after the first use's whole second (31: 24 days)
_AGENT_BITS, _NET_BITS, _FIRST_BITS, _NEWEST_BITS = 16, 48, 32, 31
_AGENT_MASK, _NET_MASK = (1 << _AGENT_BITS) - 1, (1 << _NET_BITS) - 1
_FIRST_MASK, _NEWEST_MASK = (1 << _FIRST_BITS) - 1, (1 << _NEWEST_BITS) - 1
_V6_SHIFT = _AGENT_BITS
_NET_SHIFT = _V6_SHIFT + 1
_FIRST_SHIFT = _NET_SHIFT + _NET_BITS
_NEWEST_SHIFT = _FIRST_SHIFT + _FIRST_BITS
_AGENT_PROBES = 8  # free agent ids tried before a token falls back to the object form
_AGENT = "tctx-agent"
_FIRST = "tctx-first"
_V4_MAPPED = bytes(10) + b"\xff\xff"


@dataclass(frozen=True, slots=True)
class Use:
    context: Context
    ip: str | None  # None: an IPv6 first use whose address was not kept (only its network)
    event_id: str | None  # None: a first use whose event id was not kept (see the module docstring)
    ts: float


@dataclass(frozen=True, slots=True)
class TokenState:
    first: Use  # the earliest use seen: the reference the others are compared with
    reported: tuple[str, ...] = ()  # context keys reported against `first`; "a~b" for a flapping pair
    last4: str = ""  # context of the newest event seen over IPv4 (for the flapping rule) ...
    last6: str = ""  # ... and over IPv6
    max_ts: float = float("-inf")  # newest event time seen
    switches: tuple[tuple[float, str, str, str | None], ...] = ()  # (ts, from key, to key, event id), newest last


def _ip_bits(ip: str) -> tuple[int, int] | None:
    """(1 if IPv6, the IPv4 address or the top 48 bits of the IPv6 one); None if it does not pack:
    an IPv4 address not written canonically, an IPv4-mapped IPv6 one (given back as written)."""
    try:
        raw = socket.inet_pton(socket.AF_INET, ip)
    except OSError:
        try:
            raw = socket.inet_pton(socket.AF_INET6, ip)
        except OSError:
            return None
        return None if raw[:12] == _V4_MAPPED else (1, int.from_bytes(raw[:_NET_BITS // 8], "big"))
    return (0, int.from_bytes(raw, "big")) if socket.inet_ntop(socket.AF_INET, raw) == ip else None


_IP_BITS: dict[str, tuple[int, int] | None] = {}


def ip_bits(ip: str) -> tuple[int, int] | None:
    """`_ip_bits`, cached per address (bounded: cleared when full)."""
    try:
        return _IP_BITS[ip]
    except KeyError:
        if len(_IP_BITS) >= 100_000:
            _IP_BITS.clear()
        bits = _IP_BITS[ip] = _ip_bits(ip)
        return bits


def _ip_of(v6: int, net: int) -> str:
    if v6:
        return socket.inet_ntop(socket.AF_INET6, (net << (128 - _NET_BITS)).to_bytes(16, "big"))
    return socket.inet_ntop(socket.AF_INET, net.to_bytes(4, "big"))


def _ms(ts: float) -> int:
    """Event time in whole ms, rounded up (exact for the millisecond timestamps gateways write)."""
    return math.ceil(ts * 1000 - 0.001)


def _pack(agent: int, v6: int, net: int, first_s: int, newest_ms: int) -> int | None:
    newest = newest_ms - first_s * 1000
    if not (0 <= first_s <= _FIRST_MASK and 0 <= newest <= _NEWEST_MASK):
        return None  # before 1970, after 2106, or used over more than 24 days
    return agent | v6 << _V6_SHIFT | net << _NET_SHIFT | first_s << _FIRST_SHIFT | newest << _NEWEST_SHIFT


def _unpack(packed: int) -> tuple[int, int, int, int, int]:
    """(agent id, IPv6?, address bits, first use in whole seconds, newest use in ms)."""
    first_s = packed >> _FIRST_SHIFT & _FIRST_MASK
    return (packed & _AGENT_MASK, packed >> _V6_SHIFT & 1, packed >> _NET_SHIFT & _NET_MASK, first_s,
            first_s * 1000 + (packed >> _NEWEST_SHIFT))


def _newest_ts(newest_ms: int) -> float:
    """The newest time seen, as a bound: an event is newer iff it is after this (ms timestamps: exact)."""
    return newest_ms / 1000 + 0.0005


class PackedTokenContexts:
    """The packed form's reads and writes over a detector's store (the object form is `TokenState`)."""

    def __init__(self, *, ipv4_prefix: int, ipv6_prefix: int, first_event_seconds: float) -> None:
        self.ipv4_prefix = ipv4_prefix
        self.ipv6_prefix = ipv6_prefix
        self.first_event_seconds = first_event_seconds

    def first(self, state: StateStore, ident: str, rec: AccessRecord, ts: float, family: str, label: str,
              expires_at: float) -> bool:
        """A token's first use as one packed int (its event id kept aside a while); False if it does not pack."""
        bits = ip_bits(rec.client_ip)
        if bits is None or (bits[0] and self.ipv6_prefix > _NET_BITS):
            return False
        agent = self._agent_id(state, family, label, expires_at)
        if agent is None:
            return False
        packed = _pack(agent, bits[0], bits[1], math.floor(ts), _ms(ts))
        if packed is None:
            return False
        state.set(("tctx", ident), packed, expires_at=expires_at)
        self._keep_first(state, ident, rec, ts)
        return True

    def same_context(self, state: StateStore, ident: str, packed: int, rec: AccessRecord, ts: float,
                     family: str, label: str, expires_at: float, grows: bool) -> bool:
        """Another use of a packed token from its one context: update the int and say True; else False.

        `grows`: this use may move the token's deadline (it comes after `exp`, or there is none).
        """
        agent, v6, net, first_s, newest_ms = _unpack(packed)
        bits = ip_bits(rec.client_ip)
        if bits is None or bits[0] != v6 or not self._same_network(v6, net, bits[1]):
            return False
        known = state.get((_AGENT, agent))
        if known is None or known[0] != family:
            return False
        kept = state.get((_FIRST, ident)) if ts < first_s + 1 else None  # (event id, time, IP) of the first use
        if kept is not None:  # an earlier use read late becomes the reference (ties: by event id)
            earlier = ts < kept[1] or (ts == kept[1] and rec.event_id < kept[0])
        else:  # later than the first use's second, or that use was read a while ago (known to the second)
            earlier = ts < first_s
        newer = ts > _newest_ts(newest_ms)  # only events newer than all seen move the newest time
        if not earlier and not newer:
            return True
        if earlier:
            new_agent = self._agent_id(state, family, label, expires_at)
            if new_agent is None:
                return False
            agent, net, first_s = new_agent, bits[1], math.floor(ts)
        if newer:
            newest_ms = _ms(ts)
        new = _pack(agent, v6, net, first_s, newest_ms)
        if new is None:
            return False
        state.set(("tctx", ident), new, expires_at=expires_at)
        if earlier:
            self._keep_first(state, ident, rec, ts)
        elif grows:  # the agent's entries live as long as the tokens that name them
            self._agent_id(state, known[0], known[1], expires_at)
        return True

    def _keep_first(self, state: StateStore, ident: str, rec: AccessRecord, ts: float) -> None:
        state.set((_FIRST, ident), (rec.event_id, ts, rec.client_ip), expires_at=ts + self.first_event_seconds)

    def _same_network(self, v6: int, net: int, other: int) -> bool:
        drop = _NET_BITS - self.ipv6_prefix if v6 else 32 - self.ipv4_prefix
        return net >> drop == other >> drop

    def _agent_id(self, state: StateStore, family: str, label: str, expires_at: float) -> int | None:
        """A 16-bit id for (agent family, label), kept in the store as long as a token names it.

        `(_AGENT, family, label)` → id | deadline << 16 and `(_AGENT, id)` → (family, label), both until
        the deadline of the last token that named them. None if no id is free (the token then keeps
        the object form).
        """
        until = math.ceil(expires_at)
        found = state.get((_AGENT, family, label))
        if found is not None:
            agent: int = found & _AGENT_MASK
            if found >> _AGENT_BITS < until:
                state.set((_AGENT, family, label), agent | until << _AGENT_BITS, expires_at=until)
                state.set((_AGENT, agent), (family, label), expires_at=until)
            return agent
        base = pack_str(f"{family}\n{label}", _AGENT_BITS)
        for i in range(_AGENT_PROBES):
            agent = (base + i) & _AGENT_MASK
            if state.get((_AGENT, agent)) is None:
                state.set((_AGENT, family, label), agent | until << _AGENT_BITS, expires_at=until)
                state.set((_AGENT, agent), (family, label), expires_at=until)
                return agent
        return None

    def unpack(self, state: StateStore, ident: str, packed: int) -> TokenState:
        """The object form of a packed token: its one context, first use and newest time."""
        agent, v6, net, first_s, newest_ms = _unpack(packed)
        family, label = state.get((_AGENT, agent)) or ("none", "an unknown client")
        ip = _ip_of(v6, net)
        context = Context(network_of(ip, self.ipv4_prefix, self.ipv6_prefix), family, label)
        kept = state.get((_FIRST, ident))
        if kept is not None:
            first = Use(context, kept[2], kept[0], kept[1])
            state.delete((_FIRST, ident))  # the object form holds it now
        else:
            first = Use(context, None if v6 else ip, None, float(first_s))
        return TokenState(first=first, last4="" if v6 else context.key, last6=context.key if v6 else "",
                           max_ts=_newest_ts(newest_ms))

    # -- the rules -------------------------------------------------------------------------------
