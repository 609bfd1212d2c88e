"""The behaviour model: estimator API, seeding, calibration, the manifest that guards loading, the scorer."""

from __future__ import annotations

import json
import math
import pickle

import joblib
import numpy as np
import pytest

from gatewatch.cli import main
from gatewatch.pipeline import Pipeline
from gatewatch.settings import load_settings
from ingest.errors import ModelError
from scoring.anomaly import MANIFEST_FILE, MODEL_FILE, AnomalyModel
from scoring.behaviour import BehaviourScorer
from scoring.explain import explain
from scoring.features import FEATURES, KINDS, transform
from tests.conftest import write_config
from tests.scoring.test_features import T0, ev

F = {name: i for i, name in enumerate(FEATURES)}


def normal_windows(seed: int, per_kind: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """Plausible windows: the amounts grow together with a per-window volume, as real ones do."""
    rng = np.random.default_rng(seed)
    n = per_kind * len(KINDS)
    v = rng.lognormal(2.0, 0.5, n)

    def u(lo: float, hi: float) -> np.ndarray:
        return rng.uniform(lo, hi, n)

    cols = {
        "requests": v, "requests_rolling": v * u(8, 15), "distinct_paths": v * u(0.3, 0.9),
        "distinct_routes": rng.integers(1, 5, n), "bytes_in": v * u(200, 400), "bytes_out": v * u(1000, 3000),
        "latency_mean_ms": rng.lognormal(4, 0.3, n), "distinct_ips": rng.integers(1, 3, n),
        "distinct_agents": rng.integers(1, 3, n), "distinct_subjects": rng.integers(0, 4, n),
        "hour_share": u(0.02, 0.2), "prompt_tokens": v * u(0, 500), "token_age_s": rng.lognormal(6, 0.5, n),
    }
    cols["latency_p95_ms"] = cols["latency_mean_ms"] * u(1.5, 3)
    cols["completion_tokens"] = cols["prompt_tokens"] * u(0.2, 0.5)
    cols["completion_per_call"] = cols["completion_tokens"] / np.maximum(1, np.round(v / 3))
    cols["completion_rolling"] = cols["completion_tokens"] * u(8, 15)
    X = np.zeros((n, len(FEATURES)))
    for j, name in enumerate(FEATURES):
        X[:, j] = rng.beta(0.3, 20, n) if name.startswith("share_") else np.round(cols[name], 1)
    return X, np.repeat(np.arange(len(KINDS)), per_kind)


def fitted(seed: int = 0, **kw) -> AnomalyModel:
    X, kinds = normal_windows(1)
    return AnomalyModel(n_estimators=60, max_samples=256, random_state=seed, **kw).fit(X, kinds)


@pytest.fixture(scope="module")
def model() -> AnomalyModel:
    return fitted()


def flood_row() -> np.ndarray:
    """An IP window of a flood: requests, the rolling count and bytes all far above normal."""
    x = normal_windows(2, per_kind=1)[0][2].copy()
    x[F["requests"]], x[F["requests_rolling"]] = 600, 6000
    x[F["bytes_in"]], x[F["bytes_out"]] = 600 * 400, 600 * 3000
    return x


def test_estimator_api_fitted_attributes_and_higher_is_riskier(model: AnomalyModel) -> None:
    assert model.get_params()["random_state"] == 0
    assert set(model.forests_) == set(KINDS) and model.n_rows_ == dict.fromkeys(KINDS, 400)
    X, kinds = normal_windows(3, per_kind=50)
    odd = np.vstack([X, flood_row()])
    kinds = np.append(kinds, KINDS.index("ip"))
    scores = model.score(odd, kinds)
    assert scores[-1] > np.quantile(scores[:-1][kinds[:-1] == KINDS.index("ip")], 0.9)
    forest = model.forests_["ip"]
    rows = kinds == KINDS.index("ip")
    assert np.array_equal(scores[rows], -forest.score_samples(transform(odd[rows])))  # the one sign flip
    with pytest.raises(ModelError, match="not fitted"):
        AnomalyModel().score(X, kinds[:-1])


def test_same_seed_same_scores_other_seed_other_scores(model: AnomalyModel) -> None:
    X, kinds = normal_windows(4, per_kind=30)
    assert np.array_equal(fitted(0).score(X, kinds), model.score(X, kinds))
    assert not np.array_equal(fitted(1).score(X, kinds), model.score(X, kinds))


def test_calibration_maps_scores_to_the_share_of_training_windows_below(model: AnomalyModel) -> None:
    X, kinds = normal_windows(1)
    rarity = model.rarity(model.score(X, kinds), kinds)
    assert 0.0 <= rarity.min() and rarity.max() <= 1.0
    assert abs(np.mean(rarity) - 0.5) < 0.02  # uniform on the training windows
    assert np.mean(rarity >= 0.99) == pytest.approx(0.01, abs=0.006)
    top = model.rarity(model.score(flood_row()[None], np.array([2])), np.array([2]))
    assert top[0] >= 0.9


def test_the_forest_saturates_beyond_the_training_range_and_the_excess_does_not(model: AnomalyModel) -> None:
    """Why the scorer also asks for an excess: every split of a tree lies inside the training range, so
    twice the largest training value and a hundred times it take the same path through every tree."""
    X, kinds = normal_windows(1)
    ip = KINDS.index("ip")
    row = X[kinds == ip][0].copy()
    top = X[kinds == ip][:, F["requests"]].max()
    twice, hundred = row.copy(), row.copy()
    twice[F["requests"]], hundred[F["requests"]] = 2 * top, 100 * top
    both, k = np.vstack([twice, hundred]), np.array([ip, ip])
    scores = model.score(both, k)
    assert scores[0] == scores[1]
    excess = model.excess(both, k)
    assert excess[1] > excess[0] > 0


def test_excess_measures_how_far_a_feature_is_beyond_the_training_range(model: AnomalyModel) -> None:
    X, kinds = normal_windows(1)
    assert model.excess(X, kinds).max() <= 0.0  # nothing of the training set is beyond its own range
    x = X[kinds == KINDS.index("ip")][0].copy()
    x[F["requests"]] = 600  # only this one off the scale
    e = model.excess(x[None], np.array([KINDS.index("ip")]))[0]
    ip_max = math.expm1(model.max_["ip"][F["requests"]])
    scale = model.scale("ip")[F["requests"]]
    assert e == pytest.approx((math.log1p(600) - math.log1p(ip_max)) / scale)


def test_save_writes_a_manifest_and_load_round_trips(model: AnomalyModel, tmp_path) -> None:
    manifest = model.save(tmp_path, training_window=(T0, T0 + 86_400))
    on_disk = json.loads((tmp_path / MANIFEST_FILE).read_text())
    assert on_disk == json.loads(json.dumps(manifest))
    assert on_disk["features"] == list(FEATURES) and len(on_disk["sha256"]) == 64
    assert on_disk["training_window"]["start"].startswith("2026-11-1") and on_disk["rows"]["total"] == 1600
    assert set(on_disk["versions"]) == {"python", "numpy", "scikit-learn", "joblib"}
    assert on_disk["params"]["n_estimators"] == 60 and len(on_disk["calibration"]["probs"]) == 200
    loaded = AnomalyModel.load(tmp_path)
    X, kinds = normal_windows(5, per_kind=20)
    assert np.array_equal(loaded.score(X, kinds), model.score(X, kinds))
    assert np.array_equal(loaded.rarity(loaded.score(X, kinds), kinds), model.rarity(model.score(X, kinds), kinds))
    fitted(0).save(tmp_path / "again", training_window=(T0, T0 + 86_400))
    assert json.loads((tmp_path / "again" / MANIFEST_FILE).read_text())["sha256"] == on_disk["sha256"]


class _Boom:
    """Unpickling this raises: proof that a file was (or was not) unpickled."""

    def __reduce__(self):
        return (_explode, ())


def _explode():
    raise RuntimeError("UNPICKLED-A-TAMPERED-FILE")


@pytest.mark.parametrize("payload", ["pickle", "garbage"])
def test_a_tampered_model_file_is_refused_before_unpickling(model: AnomalyModel, tmp_path, monkeypatch,
                                                            payload: str) -> None:
    model.save(tmp_path, training_window=(T0, T0 + 60))
    path = tmp_path / MODEL_FILE
    if payload == "pickle":
        path.write_bytes(pickle.dumps(_Boom()))
        with pytest.raises(RuntimeError, match="UNPICKLED"):  # the file really is hostile
            joblib.load(path)
    else:
        path.write_bytes(path.read_bytes()[:-10] + b"\x00garbage!!")
    calls = []
    monkeypatch.setattr(joblib, "load", lambda *a, **k: calls.append(a) or pytest.fail("joblib.load was called"))
    with pytest.raises(ModelError, match="does not match its manifest"):
        AnomalyModel.load(tmp_path)
    assert calls == []


def test_a_manifest_for_other_features_or_missing_pieces_is_refused(model: AnomalyModel, tmp_path) -> None:
    model.save(tmp_path, training_window=(T0, T0 + 60))
    manifest = json.loads((tmp_path / MANIFEST_FILE).read_text())
    (tmp_path / MANIFEST_FILE).write_text(json.dumps({**manifest, "features": manifest["features"][:-1]}))
    with pytest.raises(ModelError, match="other features"):
        AnomalyModel.load(tmp_path)
    bad = {**manifest, "calibration": {**manifest["calibration"], "ip": ["x"] * 200}}
    (tmp_path / MANIFEST_FILE).write_text(json.dumps(bad))
    with pytest.raises(ModelError, match="malformed"):
        AnomalyModel.load(tmp_path)
    (tmp_path / MANIFEST_FILE).write_text("{not json")
    with pytest.raises(ModelError, match="unreadable"):
        AnomalyModel.load(tmp_path)
    (tmp_path / MANIFEST_FILE).write_text(json.dumps(manifest))
    (tmp_path / MODEL_FILE).unlink()
    with pytest.raises(ModelError, match="missing"):
        AnomalyModel.load(tmp_path)
    (tmp_path / MANIFEST_FILE).unlink()
    joblib.dump({}, tmp_path / MODEL_FILE)  # a model file without a manifest cannot be verified
    with pytest.raises(ModelError, match="no model manifest"):
        BehaviourScorer.from_config(_Scoring(), _Model(tmp_path))


class _Scoring:
    anomaly_threshold, anomaly_min_excess, lateness_seconds, anomaly_entity_ttl_seconds = 0.99, 1.25, 30, 86_400


class _Model:
    def __init__(self, path) -> None:
        self.path = path


def test_no_model_means_a_silent_scorer_that_says_why(tmp_path) -> None:
    scorer = BehaviourScorer.from_config(_Scoring(), _Model(tmp_path / "model"))
    assert scorer.status == "silent" and "no anomaly model" in scorer.reason and "gatewatch train" in scorer.reason
    scorer.observe([ev(T0 + i) for i in range(100)])
    assert scorer.flush(math.inf) == []


def test_the_pipeline_starts_silent_without_a_model_and_refuses_a_tampered_one(
        model: AnomalyModel, tmp_path, keys_dir, capsys) -> None:
    cfg = write_config(tmp_path, keys_dir, f'[model]\npath = "{tmp_path}/model"\n')
    settings = load_settings(cfg, environ={})
    assert Pipeline.from_settings(settings, None).behaviour.status == "silent"
    model.save(tmp_path / "model", training_window=(T0, T0 + 60))
    assert Pipeline.from_settings(settings, None).behaviour.status == "active"
    (tmp_path / "model" / MODEL_FILE).write_bytes(pickle.dumps(_Boom()))
    with pytest.raises(ModelError):
        Pipeline.from_settings(settings, None)
    events = tmp_path / "e.jsonl"
    events.write_text("")
    assert main(["--config", str(cfg), "replay", str(events)]) == 2
    err = capsys.readouterr().err
    assert "does not match its manifest" in err and "\n" not in err.strip()


def test_a_window_off_the_scale_becomes_a_signal_with_its_reasons(model: AnomalyModel) -> None:
    scorer = BehaviourScorer(model=model, threshold=0.99, min_excess=1.25)
    ip = "198.51.100.66"
    flood = [ev(T0 + 60 * w + i * 0.1, sub=None, client=None, ip=ip, path=f"/p{i % 7}", bytes_in=None,
                bytes_out=None, event_id=f"f{w}-{i}") for w in range(3) for i in range(590)]
    scorer.observe(flood)
    assert scorer.flush(T0 + 30) == []  # nothing has closed yet
    signals = scorer.flush(math.inf)
    mine = [s for s in signals if s.entity.kind == "ip" and s.entity.value == ip]
    assert len(mine) == 3 and scorer.windows_scored >= 3
    s = mine[0]
    assert s.type == "anomaly.behaviour" and s.tenant == "acme" and 0.5 <= s.strength <= 1.0
    assert "training max" in s.reasons[0]
    assert any(r.startswith("590 requests in 1 min (population median") for r in s.reasons)
    assert "rarer than" in s.reasons[-1]
    assert len(s.event_ids) == 10 and set(s.event_ids) <= {e.event_id for e in flood}
    assert s.figures["rarity"] >= 0.99 and s.figures["excess"] >= 1.25 and s.figures["features"]["requests"] == 590


def test_explanations_compare_with_the_entity_and_the_population() -> None:
    median = transform(np.full((1, len(FEATURES)), 3.0))[0]
    median[F["share_401"]] = 0.0
    mad = np.full(len(FEATURES), 0.3)
    top = transform(np.full((1, len(FEATURES)), 35.0))[0]
    x = np.array([0.0 if f.startswith("share_") else 3.0 for f in FEATURES])
    x[F["distinct_paths"]] = 412
    x[F["completion_tokens"]] = 8200
    x[F["hour_share"]] = 0.002
    typical = transform(x[None])[0]
    typical[F["completion_tokens"]] = math.log1p(200)
    top[F["completion_tokens"]] = math.log1p(20_000)
    reasons = explain(x, typical, 50, kind="subject", median=median, mad=mad, top=top, window_seconds=60,
                      rolling_windows=15, window_start=T0 - T0 % 86_400 + 3 * 3600, limit=3)
    assert reasons[0] == "412 distinct paths in 1 min (population median 3, training max 35)"
    assert "8,200 completion tokens in 1 min: 41× this subject's typical (200)" in reasons
    assert "03:00 UTC is outside this subject's usual hours (0.2% of its traffic)" in reasons
    new = explain(x, np.full(len(FEATURES), np.nan), 0, kind="subject", median=median, mad=mad, top=top,
                  window_seconds=60, rolling_windows=15, window_start=T0 + 3 * 3600)
    assert not any("usual hours" in r or "typical" in r for r in new)  # a new entity has no own normal
