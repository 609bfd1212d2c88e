"""`replay.token_context`: one access token used from a second, incompatible client context.

A client context is (network, agent family). *Network* is the client IP's IPv4 /16 or IPv6 /48
(`ipv4_prefix`, `ipv6_prefix`): wide enough that a home router's or a carrier's address churn stays
inside it, narrow enough that a hosting provider is another network. *Agent family* is the
User-Agent classified into a few families: browser, mobile (native app), sdk, script (curl, wget,
python-requests and other hand-driven tools), server (HTTP libraries of backend services), bot,
probe, none (no User-Agent), else `other:<product>` (two unknown products are two families). A
gateway that logs no User-Agent at all puts every use in family none: then only flapping can fire.

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

State, per live token until its `exp` + leeway, key `("tctx", tfp)`, in a `PackedStore`. Most
tokens are only ever used from one context, and such a token is one packed int of 128 bits: its
agent's id, the first use's IPv4 address or the top 48 bits of its IPv6 one (its network, with
`ipv6_prefix` ≤ 48), the first use's time to the second and the newest use's time to the
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
The first use's event id does not pack either: `("tctx-first", tfp)` keeps it (with the exact time and
IP) `first_event_seconds` (default 120) after that use — long enough for every use read out of order
within the pipeline's lateness, so the evidence does not depend on the order of arrival. A second
context that appears later names the first use by its time (to the second) and IP (IPv6: its
network) instead: same signal, evidence without the first event id. A key collision in the store
(~5·10⁻⁸ at a million live tokens) would judge one token's use against another's first context.
Partition-locality: keyed by token fingerprint; every event carrying a token is keyed by that
token's subject (DESIGN.md), so all uses of one token meet on one partition.
"""

from __future__ import annotations

import ipaddress
import math
import re
import socket
import time
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any, ClassVar

from detectors.base import Entity, Signal
from detectors.packed_store import pack_str
from detectors.state import StateStore
from ingest.events import AccessRecord, Event

_MAX_REPORTED = 16  # contexts reported per token; beyond this the token is one long-reported theft

_BOT = re.compile(r"([A-Za-z-]*(?:bot|crawler|spider|slurp))", re.IGNORECASE)
_SCRIPT = ("curl", "wget", "python-requests", "python-urllib", "python-urllib3", "urllib3", "urllib", "httpie",
           "postmanruntime", "insomnia", "powershell", "windowspowershell", "axios", "node-fetch", "undici",
           "got", "libwww-perl", "lwp-request", "http.rb", "aria2", "scrapy", "python-aiohttp")
_SERVER = ("apache-httpclient", "okhttp", "go-http-client", "python-httpx", "aiohttp", "faraday", "java",
           "jersey", "reactor-netty", "dotnet", "restsharp", "guzzlehttp", "ruby", "grpc-java", "grpc-go",
           "vert.x-webclient", "spring", "feign", "akka-http", "hackney", "finagle")
_PROBE = ("kube-probe", "elb-healthchecker", "googlehc", "consul", "prometheus", "blackbox-exporter")
_NO_FLAP = ("server", "probe")  # machine clients: several egress addresses in turn are normal
_SDK_SUFFIXES = ("-cli", "-python", "-node", "-js", "-java", "-go", "-ruby", "-dotnet", "-php", "-swift")

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
class Context:
    """Where and with what a token was used."""

    network: str  # "81.2.0.0/16"
    family: str  # browser | mobile | sdk | script | server | bot | probe | none | other:<product>
    label: str  # "Safari on iOS", "python-requests": for people

    @property
    def key(self) -> str:
        return f"{self.network}|{self.family}"

    def compatible(self, other: Context) -> bool:
        """Same network or same agent family: what one owner's devices and movements look like."""
        return self.network == other.network or self.family == other.family


@dataclass(frozen=True, slots=True)
class _Use:
    context: Context
    ip: str | None  # None: an IPv6 first use whose address was not kept (only its network)
    event_id: str | None  # None: a first use whose event id was not kept (see the module docstring)
    ts: float


@dataclass(frozen=True, slots=True)
class _TokenState:
    first: _Use  # the earliest use seen: the reference the others are compared with
    reported: tuple[str, ...] = ()  # context keys reported against `first`; "a~b" for a flapping pair
    last4: str = ""  # context of the newest event seen over IPv4 (for the flapping rule) ...
    last6: str = ""  # ... and over IPv6
    max_ts: float = float("-inf")  # newest event time seen
    switches: tuple[tuple[float, str, str, str], ...] = ()  # (ts, from key, to key, event id), newest last


@lru_cache(maxsize=4096)
def classify_agent(user_agent: str | None) -> tuple[str, str]:
    """User-Agent → (family, short label)."""
    ua = (user_agent or "").strip()
    if not ua:
        return "none", "no User-Agent"
    low = ua.lower()
    product = ua.split()[0].split("/")[0]
    plow = product.lower()
    bot = _BOT.search(ua)
    if bot:
        return "bot", bot.group(1)
    if plow == "mozilla":
        return "browser", _browser_label(low)
    if plow in _PROBE:
        return "probe", product
    if "iphone" in low or "ipad" in low or "ios " in low or "cfnetwork" in low:
        return "mobile", f"{product} on iOS"
    if "android" in low or "dalvik" in low:
        return "mobile", f"{product} on Android"
    if "sdk" in plow or plow.endswith(_SDK_SUFFIXES) and plow not in _SCRIPT:
        return "sdk", product
    if plow in _SCRIPT:
        return "script", product
    if plow in _SERVER:
        return "server", product
    return f"other:{plow[:40]}", product[:40]


def _browser_label(low: str) -> str:
    if "edg/" in low:
        name = "Edge"
    elif "opr/" in low:
        name = "Opera"
    elif "firefox/" in low or "fxios/" in low:
        name = "Firefox"
    elif "chrome/" in low or "crios/" in low:
        name = "Chrome"
    elif "safari/" in low:
        name = "Safari"
    else:
        name = "a browser"
    if "iphone" in low or "ipad" in low:
        os_ = "iOS"
    elif "android" in low:
        os_ = "Android"
    elif "windows" in low:
        os_ = "Windows"
    elif "mac os x" in low or "macintosh" in low:
        os_ = "macOS"
    elif "linux" in low or "x11" in low:
        os_ = "Linux"
    else:
        return name
    return f"{name} on {os_}"


@lru_cache(maxsize=65_536)
def network_of(ip: str, ipv4_prefix: int = 16, ipv6_prefix: int = 48) -> str:
    """The client's network: its IPv4 /16 or IPv6 /48 (IPv4-mapped IPv6 counts as IPv4)."""
    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    plen = ipv4_prefix if addr.version == 4 else ipv6_prefix
    return str(ipaddress.ip_network(f"{addr}/{plen}", strict=False))


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


def _utc(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _where(use: _Use) -> str:
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
        key = ("tctx", info.tfp)
        expires_at = max(info.exp if info.exp is not None else event.ts, event.ts) + self.leeway_seconds
        family, label = classify_agent(rec.user_agent)
        st: _TokenState | int | None = state.get(key)
        if st is None:
            if self._first_packed(state, info.tfp, rec, event.ts, family, label, expires_at):
                return []
        elif isinstance(st, int):
            grows = info.exp is None or event.ts > info.exp
            if self._same_context_packed(state, info.tfp, st, rec, event.ts, family, label, expires_at, grows):
                return []
        use = _Use(self.context(rec), rec.client_ip, rec.event_id, event.ts)
        if st is None:  # a first use that does not pack
            state.set(key, self._flapping(event, _TokenState(first=use), use, []), expires_at=expires_at)
            return []
        was = st if isinstance(st, _TokenState) else None
        if not isinstance(st, _TokenState):
            st = self._unpack(state, info.tfp, st)  # a second context, or a use that does not pack
        signals: list[Signal] = []
        new = self._incompatible(event, st, use, signals)
        new = self._flapping(event, new, use, signals)
        if new != was:
            state.set(key, new, expires_at=expires_at)
        return signals

    # -- the one-context token, packed -------------------------------------------------------------
    def _first_packed(self, state: StateStore, tfp: str, rec: AccessRecord, ts: float, family: str,
                      label: str, expires_at: float) -> bool:
        """A token's first use as one packed int (its event id kept aside a while); False if it does not pack."""
        bits = _ip_bits(rec.client_ip)
        if bits is None or (bits[0] and self.ipv6_prefix > _NET_BITS):
            return False
        agent = self._agent_id(state, family, label, expires_at)
        if agent is None:
            return False
        packed = _pack(agent, bits[0], bits[1], math.floor(ts), _ms(ts))
        if packed is None:
            return False
        state.set(("tctx", tfp), packed, expires_at=expires_at)
        self._keep_first(state, tfp, rec, ts)
        return True

    def _same_context_packed(self, state: StateStore, tfp: str, packed: int, rec: AccessRecord, ts: float,
                             family: str, label: str, expires_at: float, grows: bool) -> bool:
        """Another use of a packed token from its one context: update the int and say True; else False.

        `grows`: this use may move the token's deadline (it comes after `exp`, or there is none).
        """
        agent, v6, net, first_s, newest_ms = _unpack(packed)
        bits = _ip_bits(rec.client_ip)
        if bits is None or bits[0] != v6 or not self._same_network(v6, net, bits[1]):
            return False
        known = state.get((_AGENT, agent))
        if known is None or known[0] != family:
            return False
        kept = state.get((_FIRST, tfp)) if ts < first_s + 1 else None  # (event id, time, IP) of the first use
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
        state.set(("tctx", tfp), new, expires_at=expires_at)
        if earlier:
            self._keep_first(state, tfp, rec, ts)
        elif grows:  # the agent's entries live as long as the tokens that name them
            self._agent_id(state, known[0], known[1], expires_at)
        return True

    def _keep_first(self, state: StateStore, tfp: str, rec: AccessRecord, ts: float) -> None:
        state.set((_FIRST, tfp), (rec.event_id, ts, rec.client_ip), expires_at=ts + self.first_event_seconds)

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
            agent = found & _AGENT_MASK
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

    def _unpack(self, state: StateStore, tfp: str, packed: int) -> _TokenState:
        """The object form of a packed token: its one context, first use and newest time."""
        agent, v6, net, first_s, newest_ms = _unpack(packed)
        family, label = state.get((_AGENT, agent)) or ("none", "an unknown client")
        ip = _ip_of(v6, net)
        context = Context(network_of(ip, self.ipv4_prefix, self.ipv6_prefix), family, label)
        kept = state.get((_FIRST, tfp))
        if kept is not None:
            first = _Use(context, kept[2], kept[0], kept[1])
            state.delete((_FIRST, tfp))  # the object form holds it now
        else:
            first = _Use(context, None if v6 else ip, None, float(first_s))
        return _TokenState(first=first, last4="" if v6 else context.key, last6=context.key if v6 else "",
                           max_ts=_newest_ts(newest_ms))

    # -- the rules -------------------------------------------------------------------------------
    def _incompatible(self, event: Event, st: _TokenState, use: _Use, out: list[Signal]) -> _TokenState:
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

    def _flapping(self, event: Event, st: _TokenState, use: _Use, out: list[Signal]) -> _TokenState:
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
        if use.context.family in _NO_FLAP or ckey == last or not last:
            return replace(st, max_ts=use.ts, **{"last6" if v6 else "last4": ckey})
        switches = (*st.switches, (use.ts, last, ckey, use.event_id))[-self.flap_switches:]
        st = replace(st, max_ts=use.ts, switches=switches, **{"last6" if v6 else "last4": ckey})
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
    def _entities(self, event: Event, ip: str) -> tuple[Entity, ...]:
        info = event.token
        assert info is not None
        ents = [Entity("subject", info.sub)] if info.sub else []
        return (*ents, Entity("token", info.tfp), Entity("ip", ip))

    def _signal(self, event: Event, a: _Use, b: _Use, rule: str) -> Signal:
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

    def _flap_signal(self, event: Event, switches: tuple[tuple[float, str, str, str], ...]) -> Signal:
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
            event_ids=tuple(eid for *_, eid in switches), token_fps=(info.tfp,),
            figures={"rule": "flapping", "switches": len(switches), "span_seconds": round(span, 3),
                     "contexts": [a, b], "window_seconds": self.flap_window_seconds})
