"""`traffic.llm_budget`: LLM tokens over a budget per subject, client or tenant, per minute and per day.

An access event that carries `llm` usage (CONTRACT.md §1) spends `prompt_tokens + completion_tokens`
(a negative count is taken as 0; an event without `llm`, or with no tokens, spends nothing and is not
looked at further). The tokens count against the token's `sub` and `client_id` (only when its signature
verified: an unverified claim names no one) and the tenant, in event-time windows aligned on the clock:
the minute (:00 to :60) and the UTC day. A budget is "N tokens per window for one subject, client or
tenant", over all models together (`per_minute`, `per_day`; `tenants.<tenant>` replaces them for one
tenant's subjects, clients and itself); a model named in `models` has budgets of its own, counted on its
tokens alone and checked besides the overall ones (an expensive model capped lower, say). 0 means no
budget for that scope. The window of a budget resets at its end, so the budget does too.

Firing: the first event that takes a window's count over its budget (a count equal to it is allowed)
gives one signal about the entity over budget, and no other in that window: at most one per budget,
entity and window. The signal says until when (`figures["deny_until"]`: the window's end, epoch seconds
of event time) for the gateway decision (scoring/holds.py), and is strong enough that the entity's risk
reaches `deny` on its own (risk weight 0.8 × strength ≥ 0.95 = 76 ≥ `deny_at` 75).

What keeps it quiet on ordinary traffic: the defaults (DEFAULT_BUDGETS) are ceilings several times the
busiest simulated subject, client and tenant; requests that carry no `llm` usage are never counted.

Redelivery (the same event id from the same gateway: at-least-once input, a re-keying producer's retry)
is never counted twice: a 64-bit hash of (gateway, event id) of every counted event is kept per minute of
event time for as long as a window that counted it is kept, i.e. until the end of its UTC day (+ 2 min)
when any per-day budget is set, else of its minute. A minute's hashes are a set while it is current and
a sorted array of 8 bytes each from two minutes on: ~8 bytes per LLM request of the current day (~0.7 MB
per LLM request/s). A hash collision (odds ~1e-12 per event at 50,000 LLM requests/s) would skip one.

State, all on event time: one counter per (window, scope, entity, model budget), kept until its window
ends plus `_KEEP_SECONDS` (late events within that still count); the id hashes above. Partition-local:
subjects are counted on the principal-keyed stream (keyed by `sub`), clients on the `client` stream,
tenants on the `tenant` stream — one instance per stream counting only its scope (`for_partition`),
as the rate limiter does; in one process one instance counts all three.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, ClassVar

from detectors.base import Entity, Signal
from detectors.seen_ids import SeenIds
from detectors.state import StateStore
from ingest.events import AccessRecord, Event

SCOPES: tuple[str, ...] = ("subject", "client", "tenant")
WINDOWS: dict[str, int] = {"minute": 60, "day": 86_400}  # aligned on epoch seconds: minutes, UTC days
# Tokens (prompt + completion) per window. Chosen on simulated traffic (a whole day at the simulator's
# default rate of 50 events/s, four seeds): the busiest subject used 291,000 tokens in a minute and
# 158 M in a day (a tenant's AI summarizer service: its client is the subject), the busiest tenant
# 392,000 in a minute and 250 M in a day; the behavioural LLM cost abuse (anomaly.llm_abuse, ~40x a
# client's own usage) peaks near 220,000 a minute and must not trip it. The subject budgets are about
# 3x the busiest subject; client and tenant budgets are sums over many people, so ceilings against a
# runaway app or tenant: a deployment sets its tenants' real budgets under `tenants`.
DEFAULT_BUDGETS: dict[str, dict[str, int]] = {
    "minute": {"subject": 1_000_000, "client": 2_000_000, "tenant": 5_000_000},
    "day": {"subject": 500_000_000, "client": 1_000_000_000, "tenant": 5_000_000_000},
}
ALL_MODELS = "*"
_KEEP_SECONDS = 120.0  # a window's counters outlive its end by this much event time (late events count)
_M64 = (1 << 64) - 1
_MAX_PLANS = 10_000  # (tenant, model) pairs whose budgets are remembered (names come from the input)


@dataclass(slots=True)
class _Usage:
    """One window's spending of one entity against one budget."""

    used: int = 0
    prompt: int = 0
    completion: int = 0
    requests: int = 0
    fired: bool = False
    recent: deque[str] | None = None  # the latest event ids, kept once at half of the budget


@dataclass(frozen=True, slots=True)
class _Budget:
    scope: str
    window: str  # "minute" | "day"
    seconds: int
    budget: int
    model: str  # ALL_MODELS, or the one model it counts
    source: str  # "default" | "tenant" | "model": where the budget was configured


def _table(value: Any) -> dict[str, Any]:
    """A settings section, a namespace or a mapping → a plain dict (unset fields dropped)."""
    if value is None:
        return {}
    if hasattr(value, "model_dump"):
        return {k: v for k, v in value.model_dump().items() if v is not None}
    if isinstance(value, Mapping):
        return {k: v for k, v in value.items() if v is not None}
    if hasattr(value, "__dict__"):
        return {k: v for k, v in vars(value).items() if v is not None}
    raise ValueError(f"expected a table, got {value!r}")


def _budgets(value: Any, where: str) -> dict[str, int]:
    out = {}
    for scope, budget in _table(value).items():
        if scope not in SCOPES:
            raise ValueError(f"{where}.{scope}: unknown scope (expected one of {', '.join(SCOPES)})")
        if isinstance(budget, bool) or not isinstance(budget, int) or budget < 0:
            raise ValueError(f"{where}.{scope}: budget must be a whole number of tokens >= 0, got {budget!r}")
        out[scope] = budget
    return out


def _windows(value: Any, where: str) -> dict[str, dict[str, int]]:
    """{"per_minute": {...}, "per_day": {...}} → {"minute": {...}, "day": {...}}."""
    out: dict[str, dict[str, int]] = {}
    for key, table in _table(value).items():
        if key not in ("per_minute", "per_day"):
            raise ValueError(f"{where}.{key}: unknown key (expected per_minute, per_day)")
        out[key.removeprefix("per_")] = _budgets(table, f"{where}.{key}")
    return out


def _utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class LlmBudgetDetector:
    name: ClassVar[str] = "traffic.llm_budget"
    settings_key: ClassVar[str] = "traffic_llm_budget"
    partition_by: ClassVar[tuple[str, ...]] = ("principal", "client", "tenant")  # a scope each
    reads: ClassVar[tuple[str, ...]] = ("access", "access.valid", "access.invalid")

    def __init__(self, *, per_minute: Mapping[str, int] | None = None, per_day: Mapping[str, int] | None = None,
                 models: Mapping[str, Mapping[str, Mapping[str, int]]] | None = None,
                 tenants: Mapping[str, Mapping[str, Mapping[str, int]]] | None = None,
                 max_evidence: int = 20, scopes: Sequence[str] = SCOPES) -> None:
        """`per_minute`/`per_day`: scope → budget (unset: DEFAULT_BUDGETS); `models` and `tenants`:
        name → {"minute": {scope: budget}, "day": {...}} (a model's unset scope: no budget of its own;
        a tenant's: the default); `scopes`: which of SCOPES this instance counts (one per stream)."""
        self.per_minute = per_minute
        self.per_day = per_day
        self.models = models
        self.tenants = tenants
        self.max_evidence = max_evidence
        self.scopes = scopes
        # derived lookup tables
        self._scopes = tuple(s for s in SCOPES if s in scopes)  # counted in this order
        self._default = {"minute": {**DEFAULT_BUDGETS["minute"], **(per_minute or {})},
                         "day": {**DEFAULT_BUDGETS["day"], **(per_day or {})}}
        self._models = {m: {w: dict(t.get(w, {})) for w in WINDOWS} for m, t in (models or {}).items()}
        self._tenants = {t: {w: {**self._default[w], **over.get(w, {})} for w in WINDOWS}
                         for t, over in (tenants or {}).items()}
        tables = [self._default, *self._tenants.values(), *self._models.values()]
        # the counted events' ids are kept as long as the longest window that can count them
        self._days = any(table["day"].get(s, 0) > 0 for table in tables for s in self._scopes)
        self._plans: dict[tuple[str, str | None], tuple[_Budget, ...]] = {}

    @classmethod
    def from_config(cls, section: Any, tokens: Any, *, scopes: Sequence[str] = SCOPES) -> LlmBudgetDetector:
        """Build from [detectors.traffic_llm_budget]; a bad value raises ValueError naming its key.

        `scopes` is for the wiring, not the config: with N workers each scope must see every event of
        its entity, so an instance per re-keyed stream counts only that stream's scope."""
        unknown = [s for s in scopes if s not in SCOPES]
        if unknown:
            raise ValueError(f"unknown LLM budget scope {unknown[0]!r}")
        models = {m: _windows(t, f"models.{m}") for m, t in _table(getattr(section, "models", None)).items()}
        tenants = {t: _windows(o, f"tenants.{t}") for t, o in _table(getattr(section, "tenants", None)).items()}
        return cls(per_minute=_budgets(getattr(section, "per_minute", None), "per_minute"),
                   per_day=_budgets(getattr(section, "per_day", None), "per_day"), models=models,
                   tenants=tenants, max_evidence=int(getattr(section, "max_evidence", 20)), scopes=tuple(scopes))

    @classmethod
    def for_partition(cls, section: Any, tokens: Any, kind: str) -> LlmBudgetDetector:
        """The scope keyed like the stream: subjects on the principal stream, else the same name."""
        return cls.from_config(section, tokens, scopes=("subject" if kind == "principal" else kind,))

    def budgets_for(self, tenant: str, model: str | None) -> tuple[_Budget, ...]:
        """The budgets an LLM request of `model` on `tenant` counts against, scope by scope."""
        plan = self._plans.get((tenant, model))
        if plan is not None:
            return plan
        overall = self._tenants.get(tenant, self._default)
        source = "tenant" if tenant in self._tenants else "default"
        own = self._models.get(model) if model is not None else None
        out = []
        for scope in self._scopes:
            for window, seconds in WINDOWS.items():
                if overall[window][scope] > 0:
                    out.append(_Budget(scope, window, seconds, overall[window][scope], ALL_MODELS, source))
            if own is not None and model is not None:
                for window, seconds in WINDOWS.items():
                    if own[window].get(scope, 0) > 0:
                        out.append(_Budget(scope, window, seconds, own[window][scope], model, "model"))
        plan = tuple(out)
        if len(self._plans) < _MAX_PLANS:
            self._plans[(tenant, model)] = plan
        return plan

    def observe(self, event: Event, state: StateStore) -> list[Signal]:
        rec = event.record
        if type(rec) is not AccessRecord:
            return []
        llm = rec.llm
        if llm is None:
            return []
        prompt, completion = max(llm.prompt_tokens, 0), max(llm.completion_tokens, 0)
        used = prompt + completion
        if used <= 0:
            return []
        plan = self.budgets_for(rec.tenant, llm.model)
        if not plan:
            return []
        ts = event.ts
        if self._seen(state, rec, ts):
            return []  # a redelivery: already counted
        info = event.token
        signals = []
        for b in plan:
            if b.scope == "tenant":
                value: str | None = rec.tenant
            elif info is None:
                continue
            else:
                value = info.sub if b.scope == "subject" else info.client_id
            if value is None:
                continue
            index = int(ts // b.seconds)
            key = ("llm", b.window, index, b.scope, rec.tenant, value, b.model)
            usage: _Usage | None = state.get(key)
            if usage is None:
                usage = _Usage()
                state.set(key, usage, expires_at=(index + 1) * b.seconds + _KEEP_SECONDS)
            usage.used += used
            usage.prompt += prompt
            usage.completion += completion
            usage.requests += 1
            if 2 * usage.used < b.budget:
                continue
            if usage.recent is None:
                usage.recent = deque(maxlen=self.max_evidence)
            usage.recent.append(rec.event_id)
            if usage.used > b.budget and not usage.fired:
                usage.fired = True
                signals.append(self._signal(event, rec, b, value, index, usage))
        return signals

    # -- internals ----------------------------------------------------------------------------
    def _seen(self, state: StateStore, rec: AccessRecord, ts: float) -> bool:
        """Whether this event was counted already; if not, remember it."""
        minute = int(ts // 60)
        ids_key = ("llm-ids", minute)
        ids: SeenIds | None = state.get(ids_key)
        h = hash((rec.gateway, rec.event_id)) & _M64
        if ids is None:
            ids = SeenIds()
            until = (minute // 1440 + 1) * 86_400 if self._days else (minute + 1) * 60
            state.set(ids_key, ids, expires_at=until + _KEEP_SECONDS)
            older: SeenIds | None = state.get(("llm-ids", minute - 2))
            if older is not None:
                older.pack()  # its minute is over: 8 bytes per id from now on
        elif h in ids:
            return True
        ids.add(h)
        return False

    def _signal(self, event: Event, rec: AccessRecord, b: _Budget, value: str, index: int,
                usage: _Usage) -> Signal:
        info = event.token
        start, end = index * b.seconds, (index + 1) * b.seconds
        ratio = usage.used / b.budget
        when = "this minute" if b.window == "minute" else "today (UTC)"
        what = "LLM tokens (all models)" if b.model == ALL_MODELS else f"LLM tokens of {b.model}"
        requested = rec.llm.model if rec.llm is not None else None
        whose = {"default": "default", "tenant": f"tenant {rec.tenant}'s",
                 "model": f"model {b.model}'s"}[b.source]
        reasons = (
            f"{b.scope} {value} used {usage.used:,} {what} {when}, budget {b.budget:,}",
            f"{usage.requests:,} LLM requests in the {b.window} from {_utc(start)}: {usage.prompt:,} prompt + "
            f"{usage.completion:,} completion tokens; the budget resets at {_utc(end)}",
            f"{whose} per-{b.window} budget of a {b.scope}: {b.budget:,} tokens"
            + (" over all models" if b.model == ALL_MODELS else ""),
        )
        return Signal(
            type=self.name, tenant=rec.tenant, ts=event.ts, entities=(Entity(b.scope, value),),
            strength=round(0.95 + 0.03 * min(1.0, math.log2(max(ratio, 1.0))), 3),
            reasons=reasons, event_ids=tuple(usage.recent) if usage.recent else (rec.event_id,),
            token_fps=(info.tfp,) if info is not None and b.scope != "tenant" else (),
            figures={"scope": b.scope, "window": b.window, "window_seconds": b.seconds, "window_start": start,
                     "deny_until": end, "used": usage.used, "budget": b.budget, "model": b.model,
                     "requests": usage.requests, "prompt_tokens": usage.prompt,
                     "completion_tokens": usage.completion, "overshoot": round(ratio, 3),
                     "budget_source": b.source, "request_model": requested})
