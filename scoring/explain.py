"""Why a window looks anomalous, in words an analyst can check.

For every feature of a flagged window: how far it is from the entity's own typical value (its running
typical value before this window, once it has `MIN_HISTORY` windows), from the population's (the
median of the training windows of that entity kind) and from the training maximum, in robust units
(the training MAD on the model's scale). Features beyond the training range come first, then the
others furthest above normal. Status shares are compared on the model's shrunk scale
(`features.SHARE_PSEUDO`) and shown as "k of n". E.g.

    "4,400 completion tokens per LLM call: 40× this client's typical (110)"
    "412 distinct paths in 1 min (population median 3, training max 35)"
    "03:00 UTC is outside this subject's usual hours (0.2% of its traffic)"
"""

from __future__ import annotations

import math
from datetime import datetime, timezone

import numpy as np

from scoring.features import FEATURES, LOG_MASK, SHARE_FEATURES, excess_eligible, raw_share, transform

MIN_HISTORY = 5  # windows an entity needs before its own typical values are used
MIN_SURPRISE = 2.5  # robust units from normal before a feature is worth a reason
_LOG_FLOOR = math.log(1.5)  # a factor of 1.5 is one unit at least, whatever the training MAD
_SHARE_FLOOR = 0.1  # ten percentage points likewise
_HOUR = FEATURES.index("hour_share")
_REQUESTS = FEATURES.index("requests")

_PHRASES: dict[str, str] = {
    "requests": "{v} requests in {w}",
    "requests_rolling": "{v} requests in {r}",
    "distinct_paths": "{v} distinct paths in {w}",
    "distinct_routes": "{v} distinct routes in {w}",
    "share_4xx": "{v} requests answered 4xx",
    "share_401": "{v} requests answered 401",
    "share_403": "{v} requests answered 403",
    "share_404": "{v} requests answered 404",
    "share_5xx": "{v} requests answered 5xx",
    "bytes_in": "{v} sent in {w}",
    "bytes_out": "{v} received in {w}",
    "latency_mean_ms": "mean latency {v}",
    "latency_p95_ms": "p95 latency {v}",
    "distinct_ips": "{v} distinct IPs in {w}",
    "distinct_agents": "{v} distinct user agents in {w}",
    "distinct_subjects": "{v} distinct subjects in {w}",
    "prompt_tokens": "{v} prompt tokens in {w}",
    "completion_tokens": "{v} completion tokens in {w}",
    "completion_per_call": "{v} completion tokens per LLM call",
    "completion_rolling": "{v} completion tokens in {r}",
    "token_age_s": "tokens {v} old on average",
}
assert set(_PHRASES) | {"hour_share"} == set(FEATURES)


def _span(seconds: float) -> str:
    if seconds < 60 or (seconds < 120 and seconds % 60):
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172_800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86_400:.1f} d"


def _bytes(v: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if v >= size:
            return f"{v / size:.1f} {unit}"
    return f"{v:.0f} B"


def fmt(feature: str, v: float) -> str:
    """A feature value for people."""
    if feature in SHARE_FEATURES:
        return f"{v:.0%}" if v >= 0.01 or v == 0 else f"{v:.1%}"
    if feature.startswith("bytes_"):
        return _bytes(v)
    if feature.startswith("latency_"):
        return f"{v:,.0f} ms"
    if feature == "token_age_s":
        return _span(v)
    return f"{v:,.0f}" if v >= 10 or float(v).is_integer() else f"{v:.1f}"


def _untransform(feature_index: int, t: float) -> float:
    return math.expm1(t) if LOG_MASK[feature_index] else t


def robust_scale(mad: np.ndarray) -> np.ndarray:
    """One robust unit per feature on the model's scale: 1.4826 × MAD, at least a factor 1.5 for
    amounts (log scale) and 10 percentage points for shares."""
    return np.where(LOG_MASK, np.maximum(1.4826 * mad, _LOG_FLOOR), np.maximum(1.4826 * mad, _SHARE_FLOOR))


def explain(x: np.ndarray, typical: np.ndarray, history: int, *, kind: str, median: np.ndarray, mad: np.ndarray,
            top: np.ndarray, window_seconds: int, rolling_windows: int, window_start: float,
            limit: int = 3) -> list[str]:
    """Up to `limit` reasons, most extreme first: the features beyond the training range that may raise an
    alert (`excess_eligible`; by how far: what raised it), then the others by how far they are from the
    entity's typical value (preferred once the entity has a history) or the population's median."""
    t = transform(x[None, :])[0]
    scale = robust_scale(mad)
    z_pop = (t - median) / scale
    own = history >= MIN_HISTORY and bool(np.all(np.isfinite(typical)))
    z_own = (t - typical) / scale if own else np.zeros_like(t)
    beyond = (t - top) / scale
    eligible = excess_eligible(x, rolling_windows)[0]
    w, r = _span(window_seconds), _span(window_seconds * rolling_windows)
    found: list[tuple[tuple[bool, float], str]] = []
    for j, feature in enumerate(FEATURES):
        if j == _HOUR:
            share = float(x[j])
            surprise = math.log2((1 / 24) / max(share, 1e-6))
            if history >= MIN_HISTORY and surprise >= MIN_SURPRISE:
                hour = datetime.fromtimestamp(window_start, tz=timezone.utc).strftime("%H:00 UTC")
                found.append(((False, surprise), f"{hour} is outside this {kind}'s usual hours "
                                                 f"({fmt(feature, share)} of its traffic)"))
            continue
        off_scale = beyond[j] > 0
        if not off_scale and max(z_own[j], z_pop[j]) < MIN_SURPRISE:
            continue
        gate = off_scale and eligible[j]  # could have raised the alert: these lead
        if feature.startswith("share_"):  # the model's share is shrunk (features.SHARE_PSEUDO): say k of n
            n = float(x[_REQUESTS])
            shown = f"{raw_share(float(x[j]), n) * n:,.0f} of {n:,.0f}"
        else:
            shown = fmt(feature, float(x[j]))
        phrase = _PHRASES[feature].format(v=shown, w=w, r=r)
        limit_note = f"training max {fmt(feature, _untransform(j, float(top[j])))}" if off_scale else ""
        if own and z_own[j] >= MIN_SURPRISE:
            typ = _untransform(j, float(typical[j]))
            if LOG_MASK[j] and typ >= 1.0:
                text = f"{phrase}: {x[j] / typ:,.0f}× this {kind}'s typical ({fmt(feature, typ)})"
            else:
                text = f"{phrase} (this {kind}'s typical {fmt(feature, typ)})"
            text += f"; {limit_note}" if limit_note else ""
        else:
            med = fmt(feature, _untransform(j, float(median[j])))
            text = f"{phrase} (population median {med}" + (f", {limit_note})" if limit_note else ")")
        found.append(((gate, float(beyond[j] if gate else max(z_own[j], z_pop[j]))), text))
    found.sort(key=lambda item: (not item[0][0], -item[0][1]))
    return [text for _, text in found[:limit]]
