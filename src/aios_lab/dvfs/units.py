"""What one item of a trace's demand is: the demand units, registered by name.

`interval` (dvfs.demand.from_trace): a task's on-CPU time per collection
interval and CPU, from task_intervals; every trace has it, and every
figure before issue 22's activations was made with it.
`activation` (dvfs.activation.from_switches): one item per activation (a
wakeup's run until the task sleeps), from the whole switch stream; only
traces recorded with `--stream-budget 0` have it.

Each unit has its recorded traces in its own folder under workloads/dvfs,
so the older recordings and their figures stay reproducible.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import ClassVar

from .. import paths
from ..errors import ModelError
from ..variants import Variants
from .demand import Demand


class DemandUnit:
    name: ClassVar[str]
    folder: ClassVar[str]     # under workloads/dvfs
    loader: ClassVar[str]     # "module:function" under aios_lab.dvfs, imported on first load

    @classmethod
    def traces_dir(cls) -> Path:
        return paths.project_root() / "workloads" / "dvfs" / cls.folder

    @classmethod
    def load(cls, path: Path) -> Demand:
        module, func = cls.loader.split(":")
        return getattr(importlib.import_module(f"{__package__}.{module}"), func)(path)


UNITS: Variants[type[DemandUnit]] = Variants("demand unit", ModelError, "use one of")
register, names, get = UNITS.register, UNITS.names, UNITS.get
DEFAULT = "interval"


@register
class Interval(DemandUnit):
    name, folder, loader = "interval", "traces", "demand:from_trace"


@register
class Activation(DemandUnit):
    name, folder, loader = "activation", "traces-switches", "activation:from_switches"
