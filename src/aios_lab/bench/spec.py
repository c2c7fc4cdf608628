"""The schedulers a benchmark compares, one registered type per kind.

A label on `bench-schedulers --policies` names one of:

- ``eevdf``: the kernel's own fair class, no sched_ext policy (the baseline);
- one of the kernel's example schedulers (``scx_simple``, ...; see aios_lab.upstream);
- a policy of ours by name (``fifo``), attached with its defaults;
- ``<learning policy>-<mode>``: a decision-tree policy (mllb) in one of the
  modes registered below: ``collect`` (its heuristic decides and logs),
  ``model`` (a trained model decides) or ``stay`` (the never-migrate control:
  model mode with a one-leaf model that always says stay). A learning
  policy's bare name is its collect mode.

Each type knows how to attach itself (`start`), so a run never asks which
kind it holds; a new mode is one more registered class.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from .. import upstream
from ..sched import kinds
from ..sched import policy as pol
from ..sched.deployment import Deployment
from ..errors import AiosError
from ..variants import Variants

if TYPE_CHECKING:
    from ..mllb.model import ModelFile
    from ..mllb.session import LearningRun

BASELINE = "eevdf"  # the kernel's own fair class: no sched_ext policy attached

# What `start` returns: the attached scheduler (Deployment's shape; None for
# the baseline) and, for a learning policy, its LearningRun (which stops it).
Started = tuple["Deployment | upstream.UpstreamRun | None", "LearningRun | None"]


@dataclass(frozen=True)
class SchedSpec:
    """One scheduler of a comparison; `SchedSpec.parse(label)` gives the right type."""
    label: str
    policy: str | None = None

    needs_sched_ext: ClassVar[bool] = True
    # Runs with the comparison's trained model (bench trains one unless given).
    needs_model: ClassVar[bool] = False

    @classmethod
    def parse(cls, label: str) -> "SchedSpec":
        if label == BASELINE:
            return Baseline(label)
        if upstream.is_upstream(label):
            return UpstreamScheduler(label)
        for mode in LEARNING_MODES.names():
            if label.endswith(f"-{mode}"):
                name = label[: -len(mode) - 1]
                if not _has_modes(name):
                    raise AiosError(f"{label}: policy {name} has no {mode} mode (only decision-tree policies do)")
                return LEARNING_MODES.get(mode)(label, name)
        if _has_modes(label):
            return CollectMode(label, label)
        return PlainPolicy(label, label)

    def start(self, model: "ModelFile | None") -> Started:
        """Attach this scheduler; `model` is the comparison's trained one, if any."""
        raise NotImplementedError


class Baseline(SchedSpec):
    needs_sched_ext = False

    def start(self, model: "ModelFile | None") -> Started:
        return None, None


class UpstreamScheduler(SchedSpec):
    def start(self, model: "ModelFile | None") -> Started:
        binary = upstream.built().get(self.label)
        if binary is None:
            raise AiosError(f"{self.label} is not built",
                            hint="aios-lab build --upstream (the kernel's tools/sched_ext, cached)")
        return upstream.UpstreamRun(self.label, binary).start(), None


@dataclass(frozen=True)
class PlainPolicy(SchedSpec):
    # (name, value) pairs set before load; empty: the manifest's defaults.
    tunables: tuple[tuple[str, Any], ...] = ()

    def start(self, model: "ModelFile | None") -> Started:
        assert self.policy is not None
        return Deployment(pol.get(self.policy), dict(self.tunables)).start(), None


def _has_modes(name: str) -> bool:
    """Collect/model modes belong to decision-tree policies (mllb); a
    frequency-table policy (freq) runs here as a plain one, with no table."""
    kind = kinds.for_policy(pol.get(name))
    return kind is not None and bool(kind.modes)


class LearningMode(SchedSpec):
    """A decision-tree policy in one mode, run through mllb's LearningRun."""
    name: ClassVar[str]     # the mode: the label's suffix (`<policy>-<mode>`)

    def run_args(self, model: "ModelFile | None") -> tuple[str, "ModelFile | None", str]:
        """The LearningRun's (mode, model, model source) for this mode."""
        raise NotImplementedError

    def start(self, model: "ModelFile | None") -> Started:
        from ..mllb.session import LearningRun

        assert self.policy is not None
        mode, model, source = self.run_args(model)
        run = LearningRun(policy=pol.get(self.policy), mode=mode, model=model, model_source=source)
        run.start()
        return run.dep, run


LEARNING_MODES: Variants[type[LearningMode]] = Variants("learning mode", AiosError, "modes:")
learning_mode = LEARNING_MODES.register


@learning_mode
class CollectMode(LearningMode):
    name = "collect"

    def run_args(self, model: "ModelFile | None") -> tuple[str, "ModelFile | None", str]:
        # The comparison's model, if it has one, is loaded (and checked
        # against the policy) but the heuristic decides.
        return "collect", model, "experiment" if model else ""


@learning_mode
class ModelMode(LearningMode):
    name = "model"
    needs_model = True

    def run_args(self, model: "ModelFile | None") -> tuple[str, "ModelFile | None", str]:
        if model is None:
            raise AiosError(f"{self.label} needs a model", hint="train one first (bench trains one unless --model)")
        return "model", model, "experiment"


@learning_mode
class StayControl(LearningMode):
    """The never-migrate control: model mode with a one-leaf model that always says stay."""
    name = "stay"

    def run_args(self, model: "ModelFile | None") -> tuple[str, "ModelFile | None", str]:
        from ..mllb.model import STAY, constant_model

        return "model", constant_model(STAY), "never-migrate control"
