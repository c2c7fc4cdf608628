"""The scikit-learn side of the mllb model: the estimator that is trained.

Kept apart from model.py so that loading, checking and pushing a model file
never imports scikit-learn, which takes minutes to import inside a TCG
guest (measured: 3 min for `import sklearn.tree` with 4 vCPUs).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from aios_lab.extras import require

require("sklearn", "learn", "training a load-balancing model")
from sklearn.base import BaseEstimator, ClassifierMixin  # noqa: E402
from sklearn.tree import DecisionTreeClassifier  # noqa: E402
from sklearn.utils.validation import check_array, check_is_fitted, check_X_y  # noqa: E402

from aios_lab.mllb.limits import limits
from aios_lab.mllb.model import QuantizedTree


class TreeModel(ClassifierMixin, BaseEstimator):
    """scikit-learn classifier (1 = migrate) whose tree fits an mllb model slot.

    ``max_leaf_nodes`` <= 256 bounds the tree at 2*256-1 = 511 nodes
    (MLLB_MAX_NODES) whatever ``max_depth``; ``max_depth`` <= MLLB_MAX_DEPTH.
    Train on integer features: quantisation is exact only for integers.
    """

    def __init__(self, max_depth: int = 8, min_samples_leaf: int = 20,
                 max_leaf_nodes: int | None = 256, class_weight: Any = None,
                 random_state: int | None = 0) -> None:
        self.max_depth = max_depth
        self.min_samples_leaf = min_samples_leaf
        self.max_leaf_nodes = max_leaf_nodes
        self.class_weight = class_weight
        self.random_state = random_state

    def fit(self, X, y) -> "TreeModel":
        lim = limits()
        if not 1 <= self.max_depth <= lim.max_depth:
            raise ValueError(f"max_depth must be 1..{lim.max_depth}, not {self.max_depth}")
        most = (lim.max_nodes + 1) // 2  # leaves of a tree of MLLB_MAX_NODES nodes
        if self.max_leaf_nodes is None:
            if 2 ** (self.max_depth + 1) - 1 > lim.max_nodes:
                raise ValueError(f"max_leaf_nodes=None needs max_depth <= 8 to fit "
                                 f"{lim.max_nodes} nodes")
        elif not 2 <= self.max_leaf_nodes <= most:
            raise ValueError(f"max_leaf_nodes must be 2..{most}, not {self.max_leaf_nodes}")
        X, y = check_X_y(X, y)
        self.estimator_ = DecisionTreeClassifier(
            max_depth=self.max_depth, min_samples_leaf=self.min_samples_leaf,
            max_leaf_nodes=self.max_leaf_nodes, class_weight=self.class_weight,
            random_state=self.random_state).fit(X, y)
        self.classes_ = self.estimator_.classes_
        self.n_features_in_ = X.shape[1]
        return self

    def predict(self, X) -> np.ndarray:
        check_is_fitted(self)
        return self.estimator_.predict(check_array(X))

    def predict_proba(self, X) -> np.ndarray:
        check_is_fitted(self)
        return self.estimator_.predict_proba(check_array(X))

    @property
    def feature_importances_(self) -> np.ndarray:
        check_is_fitted(self)
        return self.estimator_.feature_importances_

    def quantize(self) -> "QuantizedTree":
        check_is_fitted(self)
        return QuantizedTree.from_sklearn(self.estimator_)


# --------------------------------------------------------------------------- quantised tree
