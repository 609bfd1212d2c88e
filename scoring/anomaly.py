"""The behaviour model: isolation forests over window features, persisted as untrusted input.

`AnomalyModel` follows the estimator API (scikit-learn's): `fit(X, kinds) -> self`, fitted attributes end
in `_`, `score(X, kinds)` is higher for riskier windows (IsolationForest's `score_samples` is the
opposite: flipped in `score`, nowhere else). There is one forest per entity kind — a tenant's minute
and a visitor's minute are different populations — each with a calibration: quantiles of its
training scores, so that `rarity` says "rarer than this share of the training windows".

Persistence (docs/DESIGN.md "Anomaly model"): `save` writes `model.joblib` (only the fitted forests) and `manifest.json`
(the joblib file's SHA-256, the feature list, training window, row counts, library versions,
calibration, population medians and MADs, parameters). `load` checks the manifest and the file's
digest *before* unpickling anything, and refuses a mismatch with `ModelError`.

`BehaviourScorer` (scoring/behaviour.py) is the streaming side: `observe(events)` buffers, `flush(watermark)` closes due
windows, scores them in one batch and returns `anomaly.behaviour` signals. A window alerts when

  * the forest finds it rarer than `threshold` of the training windows of its kind, and
  * at least one feature that may (`features.excess_eligible`) lies beyond the largest value of the
    training windows of its kind by `min_excess` robust units (`excess`; a unit is 1.4826 × the MAD,
    on the model's log scale, of the training windows where the feature is non-zero (`active_mad`),
    and at least a factor 1.5 for amounts, 10 percentage points for shares), and
  * the entity made at least `min_requests` requests in the rolling window.

Why the second condition: a forest cannot score a point beyond the training range any higher than the
most extreme training points (its splits only ever fall inside that range), so on its own it cannot
tell a flood at 9 requests a second from the busiest backend service of the training week; and the
training windows it finds rarest are ordinary combinations of individually normal values (a long LLM
call with a large answer). Together the two keep what is both rare *and* off the known scale, and the
feature that is off the scale is the first reason given. Without a model the scorer is silent and
says why (`status`, `reason`).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ingest.errors import ModelError
from scoring.alerts import rfc3339
from scoring.explain import robust_scale
from scoring.features import FEATURES, KINDS, excess_eligible, transform
from scoring.forest import CompiledForest

FORMAT = "gatewatch.anomaly/1"
MODEL_FILE = "model.joblib"
MANIFEST_FILE = "manifest.json"
# Calibration grid: every percent, then every 0.01 % above the 99th percentile.
CALIBRATION_PROBS = np.round(np.concatenate([np.linspace(0.0, 0.99, 100), np.linspace(0.99, 1.0, 101)[1:]]), 6)
MIN_ROWS_PER_KIND = 64  # fewer training windows of a kind: that kind is not modelled (and never alerts)
_ROLLING = FEATURES.index("requests_rolling")


def library_versions() -> dict[str, str]:
    import joblib
    import sklearn

    return {"python": platform.python_version(), "numpy": np.__version__, "scikit-learn": sklearn.__version__,
            "joblib": joblib.__version__}


_SKLEARN_FROM_ROWS = 1_000
# Unpickled forests by the model file's SHA-256: a keyed worker builds a pipeline per re-keyed stream
# from one model file (four loads took 4 s at start-up). Read-only once fitted, so shared safely; keyed
# by content, so a retrained file is loaded afresh.
_UNPICKLED: dict[str, Any] = {}


class AnomalyModel:
    """Isolation forests per entity kind over `FEATURES` (log scale for amounts), with calibration."""

    def __init__(self, *, n_estimators: int = 200, max_samples: int | str = 2048, random_state: int = 0,
                 window_seconds: int = 60, rolling_windows: int = 15, min_requests: int = 20) -> None:
        # max_samples: the forests need deep trees to rank the tail of a week of windows; 256 (sklearn's
        # "auto") leaves a training window at the 99.9th percentile beyond most trees' subsample.
        self.n_estimators = n_estimators
        self.max_samples = max_samples
        self.random_state = random_state
        self.window_seconds = window_seconds
        self.rolling_windows = rolling_windows
        self.min_requests = min_requests

    def get_params(self) -> dict[str, Any]:
        return {"n_estimators": self.n_estimators, "max_samples": self.max_samples,
                "random_state": self.random_state, "window_seconds": self.window_seconds,
                "rolling_windows": self.rolling_windows, "min_requests": self.min_requests}

    def fit(self, X: np.ndarray, kinds: np.ndarray) -> AnomalyModel:
        """Fit on raw window features `X` (n, len(FEATURES)) of entity kinds `kinds` (indices into KINDS)."""
        from sklearn.ensemble import IsolationForest

        X = np.asarray(X, dtype=np.float64)
        kinds = np.asarray(kinds)
        if X.ndim != 2 or X.shape[1] != len(FEATURES):
            raise ValueError(f"X must have {len(FEATURES)} columns, got shape {X.shape}")
        T = transform(X)
        self.forests_: dict[str, Any] = {}
        self.manifest_: dict[str, Any] = {}
        self.calibration_: dict[str, np.ndarray] = {}
        self.median_: dict[str, np.ndarray] = {}
        self.mad_: dict[str, np.ndarray] = {}
        self.max_: dict[str, np.ndarray] = {}
        self.n_rows_: dict[str, int] = {}
        for k, kind in enumerate(KINDS):
            rows = T[kinds == k]
            self.n_rows_[kind] = len(rows)
            if len(rows) < MIN_ROWS_PER_KIND:
                continue
            samples = self.max_samples if isinstance(self.max_samples, str) else min(self.max_samples, len(rows))
            forest = IsolationForest(n_estimators=self.n_estimators, max_samples=samples,
                                     random_state=self.random_state).fit(rows)
            self.forests_[kind] = forest
            self.calibration_[kind] = np.quantile(-forest.score_samples(rows), CALIBRATION_PROBS)
            self.median_[kind] = np.median(rows, axis=0)
            self.mad_[kind] = active_mad(rows)
            self.max_[kind] = rows.max(axis=0)
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "forests_"):
            raise ModelError("the anomaly model is not fitted")

    def score(self, X: np.ndarray, kinds: np.ndarray) -> np.ndarray:
        """Anomaly score per row, higher = riskier (the negated `score_samples`); NaN for unmodelled kinds."""
        self._check_fitted()
        T = transform(np.asarray(X, dtype=np.float64))
        kinds = np.asarray(kinds)
        out = np.full(len(T), np.nan)
        for k, kind in enumerate(KINDS):
            rows = np.flatnonzero(kinds == k)
            if len(rows) and kind in self.forests_:
                # Both give the same floats (tests/scoring/test_forest.py): the flattened forest has no
                # fixed cost per call (sklearn: ~10 ms, a joblib dispatch per tree), sklearn's per-tree C
                # traversal wins from ~1,000 rows a call (bench/anomaly.py).
                scorer = self.forests_[kind] if len(rows) >= _SKLEARN_FROM_ROWS else self._compiled(kind)
                out[rows] = -scorer.score_samples(T[rows])  # the one place the sign flips
        return out

    def _compiled(self, kind: str) -> CompiledForest:
        """The kind's forest flattened for scoring (`scoring.forest`), built on first use and rebuilt if
        `forests_` changed; a cache only: never pickled (`__getstate__`), the artifact holds the forests."""
        forest = self.forests_[kind]
        cache = self.__dict__.setdefault("_compiled_cache", {})
        if kind not in cache or cache[kind][0] is not forest:
            cache[kind] = (forest, CompiledForest(forest))
        compiled: CompiledForest = cache[kind][1]
        return compiled

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_compiled_cache"}

    def rarity(self, scores: np.ndarray, kinds: np.ndarray) -> np.ndarray:
        """Calibrated score: the share of training windows of the kind that scored lower (0..1; NaN unmodelled)."""
        self._check_fitted()
        out = np.full(len(scores), np.nan)
        for k, kind in enumerate(KINDS):
            rows = np.flatnonzero(np.asarray(kinds) == k)
            if len(rows) and kind in self.calibration_:
                q = self.calibration_[kind]
                out[rows] = np.interp(scores[rows], q, CALIBRATION_PROBS, left=0.0, right=1.0)
        return out

    def scale(self, kind: str) -> np.ndarray:
        """The robust unit per feature on the model's scale: 1.4826 × training MAD, floored."""
        return robust_scale(self.mad_[kind])

    def excess(self, X: np.ndarray, kinds: np.ndarray) -> np.ndarray:
        """Per row: how far its most out-of-range feature lies above the training maximum of its kind, in
        robust units (≤ 0: every feature within the training range; NaN for unmodelled kinds)."""
        self._check_fitted()
        X = np.asarray(X, dtype=np.float64)
        T = transform(X)
        out = np.full(len(T), np.nan)
        for k, kind in enumerate(KINDS):
            rows = np.flatnonzero(np.asarray(kinds) == k)
            if len(rows) and kind in self.forests_:
                beyond = (T[rows] - self.max_[kind]) / self.scale(kind)
                beyond[~excess_eligible(X[rows], self.rolling_windows)] = -np.inf
                out[rows] = beyond.max(axis=1)
        return out

    @property
    def kinds(self) -> tuple[str, ...]:
        self._check_fitted()
        return tuple(self.forests_)

    # -- persistence ------------------------------------------------------------------------------
    def save(self, directory: str | os.PathLike[str], *, training_window: tuple[float, float],
             extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Write `model.joblib` and then `manifest.json` (the commit point) into `directory`."""
        import joblib

        self._check_fitted()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".model-", dir=directory)
        os.close(fd)
        try:
            joblib.dump(self.forests_, tmp)
            digest = _sha256(Path(tmp))
            os.replace(tmp, directory / MODEL_FILE)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        manifest = {
            "format": FORMAT, "file": MODEL_FILE, "sha256": digest, "features": list(FEATURES),
            "kinds": list(self.forests_),
            "training_window": {"start": rfc3339(training_window[0]), "end": rfc3339(training_window[1]),
                                "start_epoch": training_window[0], "end_epoch": training_window[1]},
            "rows": {**self.n_rows_, "total": int(sum(self.n_rows_.values()))},
            "versions": library_versions(), "params": self.get_params(),
            "calibration": {"probs": CALIBRATION_PROBS.tolist(),
                            **{k: v.tolist() for k, v in self.calibration_.items()}},
            "population": {k: {"median": self.median_[k].tolist(), "mad": self.mad_[k].tolist(),
                               "max": self.max_[k].tolist()} for k in self.forests_},
            **(extra or {}),
        }
        tmp_manifest = directory / (MANIFEST_FILE + ".tmp")
        tmp_manifest.write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        os.replace(tmp_manifest, directory / MANIFEST_FILE)
        return manifest

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> AnomalyModel:
        """Verify the manifest and the model file's SHA-256, then (only then) unpickle the forests."""
        directory = Path(directory)
        manifest = read_manifest(directory)
        path = directory / MODEL_FILE
        if not path.is_file():
            raise ModelError(f"model file {path} is missing (manifest present): retrain with `gatewatch train`")
        actual = _sha256(path)
        if actual != manifest["sha256"]:
            raise ModelError(f"model file {path} does not match its manifest (sha256 {actual[:16]}… ≠ "
                             f"{manifest['sha256'][:16]}…): refusing to load it")
        model = cls._from_manifest(manifest, directory)  # every figure checked before anything is unpickled
        import sklearn

        versions = manifest["versions"] if isinstance(manifest["versions"], dict) else {}
        trained_with = versions.get("scikit-learn")
        if trained_with != sklearn.__version__:
            raise ModelError(f"model in {directory} was trained with scikit-learn {trained_with}, this is "
                             f"{sklearn.__version__}: retrain with `gatewatch train`")
        import joblib
        from sklearn.ensemble import IsolationForest

        forests = _UNPICKLED.get(actual)
        if forests is None:
            forests = _UNPICKLED[actual] = joblib.load(path)
        if not isinstance(forests, dict) or set(forests) != set(manifest["kinds"]) or not all(
                isinstance(f, IsolationForest) and f.n_features_in_ == len(FEATURES) for f in forests.values()):
            raise ModelError(f"model file {path} does not hold the forests its manifest describes")
        model.forests_ = {k: forests[k] for k in manifest["kinds"]}
        model.manifest_ = manifest
        return model


    @classmethod
    def _from_manifest(cls, manifest: dict[str, Any], directory: Path) -> AnomalyModel:
        """An unfitted model with the manifest's parameters, calibration and population figures."""
        try:
            params = manifest["params"]
            model = cls(**{k: params[k] for k in ("n_estimators", "max_samples", "random_state", "window_seconds",
                                                  "rolling_windows", "min_requests")})
            kinds = [str(k) for k in manifest["kinds"]]
            if not kinds or not set(kinds) <= set(KINDS):
                raise ValueError(f"kinds {kinds}")
            if not (isinstance(model.window_seconds, int) and 0 < model.window_seconds <= 3600
                    and 3600 % model.window_seconds == 0 and isinstance(model.rolling_windows, int)
                    and model.rolling_windows >= 1 and isinstance(model.min_requests, int)):
                raise ValueError("window_seconds, rolling_windows or min_requests")

            def vector(value: Any, n: int) -> np.ndarray:
                arr = np.asarray(value, dtype=np.float64)
                if arr.shape != (n,) or not np.all(np.isfinite(arr)):
                    raise ValueError(f"expected {n} finite numbers")
                return arr

            model.calibration_ = {k: vector(manifest["calibration"][k], len(CALIBRATION_PROBS)) for k in kinds}
            pop = manifest["population"]
            model.median_ = {k: vector(pop[k]["median"], len(FEATURES)) for k in kinds}
            model.mad_ = {k: vector(pop[k]["mad"], len(FEATURES)) for k in kinds}
            model.max_ = {k: vector(pop[k]["max"], len(FEATURES)) for k in kinds}
            model.n_rows_ = {str(k): int(v) for k, v in manifest["rows"].items() if k != "total"}
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"model manifest in {directory} is malformed ({type(exc).__name__}: {exc})") from None
        if not all(np.all(np.diff(q) >= 0) for q in model.calibration_.values()):
            raise ModelError(f"model manifest in {directory} is malformed (calibration not ascending)")
        return model


def active_mad(T: np.ndarray, min_active: int = 10) -> np.ndarray:
    """Per feature: the median absolute deviation among the rows where the feature is non-zero.

    Most windows make no LLM call and meet no 401: over all rows such a feature's MAD is 0, and any
    value would look infinitely far out. Its spread among the windows that use it is the honest unit.
    """
    out = np.zeros(T.shape[1])
    for j in range(T.shape[1]):
        col = T[:, j]
        active = col[col > 0] if np.count_nonzero(col) >= min_active else col
        out[j] = np.median(np.abs(active - np.median(active)))
    return out


def read_manifest(directory: Path) -> dict[str, Any]:
    """The manifest, checked for shape, format and feature list (raises `ModelError`)."""
    path = directory / MANIFEST_FILE
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"no model manifest at {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"model manifest {path} is unreadable: {exc}") from None
    required = ("format", "sha256", "features", "kinds", "params", "calibration", "population", "versions", "rows")
    if not isinstance(manifest, dict) or any(k not in manifest for k in required):
        raise ModelError(f"model manifest {path} lacks required fields ({', '.join(required)})")
    if manifest["format"] != FORMAT:
        raise ModelError(f"model manifest {path} has format {manifest['format']!r}, expected {FORMAT!r}")
    if manifest["features"] != list(FEATURES):
        raise ModelError(f"model in {directory} was trained on other features than this version computes: "
                         "retrain with `gatewatch train`")
    if not isinstance(manifest["sha256"], str) or len(manifest["sha256"]) != 64:
        raise ModelError(f"model manifest {path} has no valid sha256")
    return manifest


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def model_present(directory: Path) -> bool:
    return (directory / MANIFEST_FILE).exists() or (directory / MODEL_FILE).exists()


__all__ = ["AnomalyModel", "library_versions", "model_present", "read_manifest"]
