"""`CompiledForest`: bit for bit sklearn's `IsolationForest.score_samples`, and the model scores through it."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.ensemble import IsolationForest

from scoring.anomaly import MODEL_FILE, AnomalyModel
from scoring.features import KINDS, transform
from scoring.forest import CompiledForest
from tests.scoring.test_anomaly import flood_row, normal_windows


def training(seed: int, n: int, width: int) -> np.ndarray:
    """Mixed columns: continuous, heavy-tailed, few distinct values, constant; many duplicate rows."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, width))
    X[:, 0] = rng.integers(0, 3, n)  # ties
    if width > 2:
        X[:, 1] = rng.lognormal(5, 3, n)  # wide range: float32 rounding matters near thresholds
        X[:, 2] = 7.0  # constant
    X[::5] = X[1]  # duplicated rows
    return X


def fresh(seed: int, n: int, width: int, train: np.ndarray) -> np.ndarray:
    """New rows, rows at and next to training values (split thresholds lie between them), extremes."""
    rng = np.random.default_rng(seed + 1000)
    near = train[rng.integers(0, len(train), n)]
    extremes = np.array([np.full(width, v) for v in (0.0, -0.0, 1e300, -1e300, 3.5e38, 5e-324, np.inf, -np.inf)])
    return np.vstack([rng.normal(scale=100.0, size=(n, width)), near, np.nextafter(near, np.inf),
                      np.nextafter(near, -np.inf), near.astype(np.float32).astype(np.float64) * (1 + 1e-9),
                      extremes])


def at_thresholds(forest: IsolationForest, X: np.ndarray, n: int = 300) -> np.ndarray:
    """Rows with one feature a float64 step either side of a split threshold: where float64 and float32
    comparisons disagree (the trees compare the float32-cast value)."""
    rng = np.random.default_rng(0)
    split = [t for t, e in enumerate(forest.estimators_) if e.tree_.node_count > 1]
    rows = [X[0]]
    for _ in range(n if split else 0):
        t = rng.choice(split)
        tree, cols = forest.estimators_[t].tree_, forest.estimators_features_[t]
        node = rng.choice(np.flatnonzero(tree.children_left != -1))
        local = tree.feature[node]
        col = cols[local] if forest._max_features != X.shape[1] else local
        for v in (tree.threshold[node], np.nextafter(tree.threshold[node], np.inf),
                  np.nextafter(tree.threshold[node], -np.inf)):
            row = X[rng.integers(len(X))].copy()
            row[col] = v
            rows.append(row)
    return np.array(rows)


def same(forest: IsolationForest, X: np.ndarray) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # float32 overflow of the extremes, in both
        expected = forest.score_samples(X)
        got = CompiledForest(forest).score_samples(X)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    assert np.array_equal(got, expected)


CASES = [  # seed, rows, features, n_estimators, max_samples, max_features, bootstrap
    (0, 600, 22, 200, 256, 1.0, False),
    (1, 3000, 22, 50, 2048, 1.0, False),
    (2, 500, 22, 40, "auto", 0.5, False),
    (3, 400, 6, 30, 1.0, 3, True),
    (4, 300, 3, 25, 0.3, 0.7, False),
    (5, 200, 1, 20, 64, 1.0, False),
    (6, 64, 5, 10, 1, 1.0, False),  # single-sample trees: sklearn's denominator-zero branch
]


@pytest.mark.parametrize(("seed", "n", "width", "trees", "samples", "features", "bootstrap"), CASES)
def test_scores_equal_sklearn_bit_for_bit(seed, n, width, trees, samples, features, bootstrap) -> None:
    X = training(seed, n, width)
    forest = IsolationForest(n_estimators=trees, max_samples=samples, max_features=features, bootstrap=bootstrap,
                             random_state=seed).fit(X)
    same(forest, X)
    same(forest, fresh(seed, 200, width, X))
    same(forest, at_thresholds(forest, X))
    same(forest, X[:1])
    same(forest, np.asfortranarray(X[::-3]))  # layout and order of rows do not matter


def test_a_value_equal_to_its_threshold_goes_left() -> None:
    X = training(8, 400, 5)
    forest = IsolationForest(n_estimators=20, random_state=8).fit(X)
    for tree in (e.tree_ for e in forest.estimators_):  # random thresholds are seldom float32 values: make them
        tree.threshold[:] = tree.threshold.astype(np.float32)  # (a view on the nodes)
    same(forest, at_thresholds(forest, X))


def test_missing_values_follow_the_trees_missing_side() -> None:
    X = training(7, 500, 8)
    forest = IsolationForest(n_estimators=30, max_features=0.6, random_state=7).fit(X)
    Y = fresh(7, 100, 8, X)
    Y[np.random.default_rng(7).random(Y.shape) < 0.2] = np.nan
    same(forest, Y)


def test_rejects_the_wrong_number_of_features() -> None:
    forest = IsolationForest(n_estimators=5, random_state=0).fit(training(0, 100, 4))
    with pytest.raises(ValueError, match="shape"):
        CompiledForest(forest).score_samples(np.zeros((3, 5)))


FORESTS = {width: IsolationForest(n_estimators=40, max_samples=128, max_features=mf, random_state=width)
           .fit(training(width, 300, width)) for width, mf in ((4, 1.0), (9, 0.5))}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(FORESTS)).flatmap(lambda w: st.tuples(st.just(w), arrays(
    np.float64, st.tuples(st.integers(1, 40), st.just(w)),
    elements=st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([-1.0, 0.0, 1.0, 2.0, 7.0])))))
def test_random_arrays_score_as_sklearn(case: tuple[int, np.ndarray]) -> None:
    width, X = case
    same(FORESTS[width], X)


@settings(max_examples=25, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(2, 80), st.integers(1, 4)),
              elements=st.sampled_from([-3.0, 0.0, 0.5, 1.0, 1e-30, 2.5e38]) | st.floats(-1e6, 1e6)),
       st.integers(0, 2**32 - 1), st.sampled_from([1.0, 0.5]))
def test_forests_fitted_on_random_arrays_score_as_sklearn(X: np.ndarray, seed: int, features: float) -> None:
    forest = IsolationForest(n_estimators=8, max_samples=min(len(X), 32), max_features=features,
                             random_state=seed).fit(X)
    same(forest, X)
    same(forest, X[::-1] * 1.5 - 1.0)


def test_model_scores_are_sklearns_negated_and_the_cache_is_not_saved(tmp_path) -> None:
    X, kinds = normal_windows(1)
    model = AnomalyModel(n_estimators=60, max_samples=256, random_state=0).fit(X, kinds)
    model.save(tmp_path / "before", training_window=(0.0, 3600.0))
    Y, ykinds = normal_windows(5, per_kind=40)
    Y, ykinds = np.vstack([Y, flood_row(), X[:50]]), np.concatenate([ykinds, [KINDS.index("ip")], kinds[:50]])
    scores = model.score(Y, ykinds)
    T = transform(Y)
    for k, kind in enumerate(KINDS):
        rows = ykinds == k
        assert np.array_equal(scores[rows], -model.forests_[kind].score_samples(T[rows]))
    assert np.array_equal(model.score(Y[:1], ykinds[:1]), scores[:1])  # one row, as the replay scores
    assert "_compiled_cache" not in pickle.loads(pickle.dumps(model)).__dict__
    model.save(tmp_path / "after", training_window=(0.0, 3600.0))
    assert (tmp_path / "after" / MODEL_FILE).read_bytes() == (tmp_path / "before" / MODEL_FILE).read_bytes()
    loaded = AnomalyModel.load(tmp_path / "after")
    assert np.array_equal(loaded.score(Y, ykinds), scores)
    refit = model.fit(*normal_windows(2))  # new forests_: the cache follows them
    assert np.array_equal(refit.score(Y[:5], ykinds[:5]),
                          -refit.forests_[KINDS[ykinds[0]]].score_samples(transform(Y[:5])))
