"""`anomaly.behaviour`: window features → model scores → signals, on the pipeline's watermark.

The streaming half of the behaviour model (scoring/anomaly.py holds the model, its training and its
artifact): windows per entity close on the watermark (scoring/features.py), are scored together, and the
ones that pass all three gates (the cheap excess and activity gates, then the forest's rarity) become
signals with their reasons (scoring/explain.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from detectors.base import Entity, Signal
from ingest.events import Event
from scoring.alerts import rfc3339
from scoring.anomaly import _ROLLING, AnomalyModel, model_present
from scoring.explain import explain
from scoring.features import FEATURES, KINDS, WindowFeatures, WindowTable


class BehaviourScorer:
    """Window features → model scores → `anomaly.behaviour` signals, on the pipeline's watermark.

    The window length, rolling length and activity floor are the model's (from its manifest): a model
    only ever sees features computed the way it was trained. `threshold` and `min_excess` are the
    alerting policy, see the module docstring.
    """

    type: ClassVar[str] = "anomaly.behaviour"

    def __init__(self, *, model: AnomalyModel | None, threshold: float = 0.99, min_excess: float = 1.25,
                 lateness_seconds: float = 30.0, max_reasons: int = 3, entity_ttl_seconds: int = 7 * 86_400,
                 missing: str | None = None, kinds: tuple[str, ...] = KINDS) -> None:
        self.model = model
        self.threshold = threshold
        self.min_excess = min_excess
        self.lateness_seconds = lateness_seconds
        self.max_reasons = max_reasons
        self.entity_ttl_seconds = entity_ttl_seconds
        self.missing = missing
        self.windows_scored = 0
        self.signals = 0
        self.features = None if model is None else WindowFeatures(
            window_seconds=model.window_seconds, rolling_windows=model.rolling_windows,
            lateness_seconds=lateness_seconds, entity_ttl_seconds=entity_ttl_seconds, kinds=kinds)

    @classmethod
    def from_config(cls, scoring: Any, model: Any, kinds: tuple[str, ...] = KINDS) -> BehaviourScorer:
        """From `[scoring]` and `[model]`: no artifact at `model.path` → silent; a bad one → `ModelError`.
        `kinds`: the entity kinds to window (a worker of one re-keyed stream does only its own)."""
        path = Path(model.path)
        common = {"threshold": scoring.anomaly_threshold, "min_excess": scoring.anomaly_min_excess,
                  "lateness_seconds": scoring.lateness_seconds,
                  "entity_ttl_seconds": scoring.anomaly_entity_ttl_seconds, "kinds": kinds}
        if not model_present(path):
            return cls(model=None, missing=f"no anomaly model at {path} (train one with `gatewatch train`)",
                       **common)
        return cls(model=AnomalyModel.load(path), **common)

    @property
    def status(self) -> str:
        return "active" if self.model is not None else "silent"

    @property
    def reason(self) -> str:
        if self.model is None:
            return self.missing or "no anomaly model loaded"
        return (f"anomaly model loaded (kinds: {', '.join(self.model.kinds)}); alerting at rarity ≥ "
                f"{self.threshold} and a feature {self.min_excess} robust units beyond the training range")

    def observe(self, events: Sequence[Event]) -> None:
        if self.features is not None:
            self.features.observe(events)

    def flush(self, watermark: float) -> list[Signal]:
        """Close the windows that ended by `watermark`, score them together, return the signals."""
        if self.features is None:
            return []
        table = self.features.close(watermark)
        return self.signals_for(table) if len(table) else []

    def signals_for(self, table: WindowTable) -> list[Signal]:
        """Score closed windows in one batch; signals for those that pass all three gates, in a fixed order."""
        model = self.model
        assert model is not None
        self.windows_scored += len(table)
        # The two cheap gates first: the forest scores only the windows that pass them (a few in a
        # thousand on ordinary traffic), which gives the same signals as scoring every window.
        excess = model.excess(table.X, table.kind)
        candidates = np.flatnonzero((excess >= self.min_excess) & (table.X[:, _ROLLING] >= model.min_requests))
        scores = np.full(len(table), np.nan)
        scores[candidates] = model.score(table.X[candidates], table.kind[candidates])
        rarity = model.rarity(scores, table.kind)
        hit = candidates[rarity[candidates] >= self.threshold]
        order = sorted(hit.tolist(), key=lambda i: (int(table.window[i]), int(table.kind[i]), table.tenant[i],
                                                    table.value[i]))
        out = []
        for i in order:
            kind = KINDS[int(table.kind[i])]
            x = table.X[i]
            start = float(table.window[i] * model.window_seconds)
            reasons = explain(x, table.typical[i], int(table.history[i]), kind=kind, median=model.median_[kind],
                              mad=model.mad_[kind], top=model.max_[kind], window_seconds=model.window_seconds,
                              rolling_windows=model.rolling_windows, window_start=start, limit=self.max_reasons)
            reasons.append(f"rarer than {_pct(rarity[i])} of the model's training windows of {kind}s "
                           f"(score {scores[i]:.3f})")
            out.append(Signal(
                type=self.type, tenant=table.tenant[i], ts=float(table.last_ts[i]),
                entities=(Entity(kind, table.value[i]),), strength=self._strength(float(excess[i])),
                reasons=tuple(reasons), event_ids=table.event_ids[i],
                figures={"score": round(float(scores[i]), 4), "rarity": round(float(rarity[i]), 6),
                         "excess": round(float(excess[i]), 2), "window_start": rfc3339(start),
                         "window_seconds": model.window_seconds,
                         "features": {f: _round(v) for f, v in zip(FEATURES, x.tolist(), strict=True)}}))
        self.signals += len(out)
        return out

    def _strength(self, excess: float) -> float:
        """0.5 at the excess gate, 1.0 at three times it (at least 1 robust unit each way)."""
        unit = max(self.min_excess, 1.0)
        return round(min(1.0, max(0.5, 0.5 + 0.25 * (excess - self.min_excess) / unit)), 3)


def _pct(q: float) -> str:
    return "all" if q >= 1.0 else f"{q * 100:.2f}%".replace(".00%", "%")


def _round(v: float) -> float | int:
    return int(v) if float(v).is_integer() else round(v, 4)


__all__ = ["BehaviourScorer"]
