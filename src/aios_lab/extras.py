"""Optional parts of aios-lab (pyproject extras) and the one line that says
which to install when one is missing.

`pip install aios-lab` gives collect, analyze (text), compare, export
perfetto, policy list/build/deploy; the heavy parts are extras:
``vm`` (virtme-ng), ``learn`` (scikit-learn, gymnasium), ``report``
(matplotlib, for HTML reports and figures); ``all`` is every one.
"""
from __future__ import annotations

import importlib
from types import ModuleType

from .errors import MissingDependency


def require(module: str, extra: str, what: str) -> ModuleType:
    """``module`` imported, or MissingDependency naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError:
        top = module.split(".")[0]
        raise MissingDependency(f"{what} needs {top}, an optional part of aios-lab",
                                hint=f"pip install 'aios-lab[{extra}]'") from None
