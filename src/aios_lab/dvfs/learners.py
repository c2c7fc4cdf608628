"""Frequency-table learners: estimator classes, registered by name.

Each learner follows scikit-learn's estimator conventions: its parameters
are the keyword arguments of ``__init__``, stored as given (no work there,
so ``get_params``, ``set_params`` and ``sklearn.base.clone`` work);
``fit(demands)`` learns from training demands on the simulator and returns
the learner; what it learned is in attributes ending in ``_``, ``table_``
(the FreqTable) for every learner. The built-in ones are ``rl`` (dvfs.rl,
tabular Q-learning) and ``sweep`` (dvfs.sweep, the sampled table); the
names are what `aios-lab train freq --method` and the dvfs-train sweep
cell take. A new learner is a TableLearner subclass with a ``name`` and
``@register``, in its own module listed in ``_load_builtin``.

Everything a learner learns from is SIMULATED (dvfs.sim).
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, ClassVar

from ..errors import ModelError
from ..variants import Variants
from ..extras import require

require("sklearn", "learn", "training a frequency table")
from sklearn.base import BaseEstimator  # noqa: E402

from .demand import Demand  # noqa: E402
from .platform import Cluster, load_cluster  # noqa: E402
from .table import FreqTable  # noqa: E402



class TableLearner(BaseEstimator):
    """A learner of a FreqTable from demands replayed on the simulator.

    Fitted attributes every learner sets: ``table_`` (FreqTable) and
    ``curve_`` (one dict per training episode; empty for a learner
    without episodes)."""

    name: ClassVar[str]
    table_: FreqTable
    curve_: list[dict]

    def fit(self, X: list[Demand], y: None = None, *, test: list[Demand] | None = None,
            progress: Callable[[str], None] | None = None) -> "TableLearner":
        """Learn from the training demands `X` (`y` is unused, as for any
        unsupervised estimator). `test`: held-out demands a learner may
        report on while it learns (it never learns from them); `progress`:
        one line at a time of what it is doing."""
        raise NotImplementedError

    @staticmethod
    def _check_demands(X: list[Demand]) -> list[Demand]:
        if not X:
            raise ModelError("no training demand: give at least one trace")
        return list(X)

    def _cluster(self) -> Cluster:
        """The `cluster` parameter: a Cluster, or its `platform:cluster` name."""
        c = self.cluster  # every learner has one: the table is for that cluster's OPPs
        return load_cluster(c) if isinstance(c, str) else c


def _load_builtin() -> None:
    from . import rl, sweep  # noqa: F401  (registers them)


LEARNERS: Variants[type[TableLearner]] = Variants("training method", ModelError, "use", _load_builtin)
register, names, get = LEARNERS.register, LEARNERS.names, LEARNERS.get


def make(name: str, **options: Any) -> TableLearner:
    """The learner `name` with those of `options` it takes as parameters:
    a caller with one set of options for every learner (the CLI, the
    dvfs-train cell) passes them all, and RL's `episodes` does not reach
    the sweep."""
    cls = get(name)
    takes = set(inspect.signature(cls.__init__).parameters) - {"self"}
    return cls(**{k: v for k, v in options.items() if k in takes})
