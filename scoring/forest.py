"""A fitted IsolationForest flattened into numpy arrays, scoring exactly as its `score_samples` does.

Why: sklearn's `score_samples` dispatches each of the 200 trees through joblib, a fixed cost per call
that dominated replay, where the scorer runs hundreds of times on small batches. `CompiledForest` walks
every (tree, row) pair at once, one level per step, over all trees' nodes stacked in flat arrays, and
repeats sklearn's arithmetic in its order (rows cast to float32 against float64 thresholds, NaN sent to
`missing_go_to_left`, path terms added tree by tree, the same final formula): scores equal bit for bit.
Per row it is slower than the trees' C loop, so above ~1,000 rows per call sklearn would be faster.
It reads private fitted attributes of the forest; `AnomalyModel.load` pins the scikit-learn version.
"""

from __future__ import annotations

from typing import Any

import numpy as np

CHUNK_CELLS = 1 << 15  # (tree, row) pairs walked at once: keeps the working arrays cache-sized


class CompiledForest:
    """`score_samples` of a fitted `sklearn.ensemble.IsolationForest`, in numpy alone."""

    def __init__(self, forest: Any) -> None:
        from sklearn.ensemble._iforest import _average_path_length
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(forest)
        self.n_features_in_ = int(forest.n_features_in_)
        # As sklearn: trees see a feature subset only when max_features < n_features (`_max_features`).
        subset = forest._max_features != self.n_features_in_
        feature, threshold, children, value, missing_left, roots = [], [], [], [], [], []
        offset, max_depth = 0, 0
        for t, (est, cols) in enumerate(zip(forest.estimators_, forest.estimators_features_, strict=True)):
            tree = est.tree_
            n = tree.node_count
            ids = np.arange(n, dtype=np.intp)
            leaf = tree.children_left == -1  # sklearn's TREE_LEAF
            local = np.where(leaf, 0, tree.feature)
            feature.append(np.asarray(cols, dtype=np.intp)[local] if subset else local.astype(np.intp))
            threshold.append(np.where(leaf, np.inf, tree.threshold))  # leaves loop onto themselves
            left = np.where(leaf, ids, tree.children_left) + offset
            right = np.where(leaf, ids, tree.children_right) + offset
            children.append(np.stack([left, right], axis=1).ravel())  # children[2*node + goes_right]
            # Per node, the term `_parallel_compute_tree_depths` adds for a row ending there.
            value.append(forest._decision_path_lengths[t] + forest._average_path_length_per_tree[t] - 1.0)
            missing_left.append(np.asarray(tree.missing_go_to_left, dtype=bool))
            roots.append(offset)
            offset += n
            max_depth = max(max_depth, int(tree.max_depth))
        self.feature_ = np.concatenate(feature)
        self.threshold_ = np.concatenate(threshold).astype(np.float64)
        self.children_ = np.concatenate(children).astype(np.intp)
        self.value_ = np.concatenate(value).astype(np.float64)
        self.missing_right_ = ~np.concatenate(missing_left)
        self.roots_ = np.asarray(roots, dtype=np.intp)
        self.max_depth_ = max_depth
        self.denominator_ = len(forest.estimators_) * _average_path_length([forest._max_samples])

    def score_samples(self, X: Any) -> np.ndarray:
        """Equal to `forest.score_samples(X)` for dense input (lower = more abnormal)."""
        X = np.asarray(X, dtype=np.float32)  # what sklearn's validation and trees do to the input
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise ValueError(f"X must have shape (n, {self.n_features_in_}), got {X.shape}")
        X = np.ascontiguousarray(X)
        depths = np.zeros(len(X))
        step = max(1, CHUNK_CELLS // len(self.roots_))
        for start in range(0, len(X), step):
            depths[start:start + step] = self._depths(X[start:start + step])
        denominator = self.denominator_
        # sklearn: -(2 ** -divide(depths, denominator, out=ones, where=denominator != 0)).
        scores: np.ndarray = -(2 ** (-np.divide(depths, denominator, out=np.ones_like(depths), where=denominator != 0)))
        return scores

    def _depths(self, X: np.ndarray) -> np.ndarray:
        """Summed path-length terms per row: the trees' terms added one tree after the other."""
        n, width = X.shape
        flat = X.ravel()
        has_nan = bool(np.isnan(flat).any())
        base = (np.arange(n, dtype=np.intp) * width)[None, :]
        node = np.repeat(self.roots_[:, None], n, axis=1)  # (trees, rows)
        for _ in range(self.max_depth_):
            x = flat[base + self.feature_[node]]
            right = x > self.threshold_[node]  # float32 against float64, as in the trees' C loop
            if has_nan:
                right |= np.isnan(x) & self.missing_right_[node]
            node = self.children_[2 * node + right]
        # Sequential accumulation over the tree axis: bit for bit sklearn's `depths += ...` per tree.
        summed: np.ndarray = np.add.accumulate(self.value_[node], axis=0)[-1]
        return summed


__all__ = ["CompiledForest"]
