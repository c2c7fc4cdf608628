"""Model kinds: what a learning policy's [model] table holds, as registered types.

A manifest names its kind (`[model] kind = "tree"`); `get(name)` returns the
class registered under that name with `@register` (aios_lab.variants, the
one registry shape of the package), and the deploy loop
(sched.deploy_loop) drives any of them through the one protocol below. Every
module (or subpackage) of this package is imported on the first lookup, so a
new kind is one new module here plus the manifests that name it; nothing
else changes (tests/sched/test_kinds.py registers a third kind and runs it
through the manifest loader, the deploy loop and the CLI's checks).

The two kinds: "tree" (kinds/tree.py: mllb's decision tree, decisions logged
and retrained on) and "freq-table" (kinds/freq_table/: the freq policy's
frequency table, watched and swapped live). Manifests are read often (every
`policy list`, every CLI start in a guest), so a kind module imports what is
heavy (numpy, libbpf) where it is used.
"""
from __future__ import annotations

import importlib
import pkgutil
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar

from ...errors import PolicyError
from ...variants import Variants

if TYPE_CHECKING:
    from ...bpf import BpfObject
    from ..deployment import Deployment
    from ..policy import Policy
    from ..sched_ext import ExitInfo

Event = Callable[[dict], None]

# The deploy options a kind may take (`aios-lab deploy --mode ...`), by their
# library names; a kind lists those it takes in `options`, every other one is
# refused for its policies with one line naming the kinds that take it.
# "model" (the model file) applies to every kind.
DEPLOY_OPTIONS = ("model", "mode", "decisions", "retrain_every", "watch")


class ModelKind(ABC):
    """One learning policy deployed with its model.

    Lifecycle, driven by the deploy loop: `create` loads and checks the model
    file (`load`) before anything touches the kernel; `begin` once before the
    first attach; `start` opens and loads the policy, hands the loaded object
    to `prepare` (the deployment's before_attach step: the model checked
    against the object's BTF and pushed, so the first decision already has
    it) and attaches; it is called again after a restart the kernel asked
    for, after `stop`. While attached, `poll` runs every few tens of
    milliseconds and `tick` once per status interval; `swap` makes another
    model the live one. `end` once after the last detach.
    """

    name: ClassVar[str] = ""
    # For messages: who deploys this kind ("decision-tree policies (mllb)"),
    # what it deploys ("a frequency table"), what its file is called.
    policies: ClassVar[str] = ""
    what: ClassVar[str] = ""
    noun: ClassVar[str] = "model"
    usage: ClassVar[str] = ""
    options: ClassVar[frozenset[str]] = frozenset()
    modes: ClassVar[tuple[str, ...]] = ()     # who decides, when the policy can run without its model
    backends: ClassVar[tuple[str, ...]] = ("sched_ext",)
    required_keys: ClassVar[tuple[str, ...]] = ()   # [model] keys beyond slots_map and ctl_map

    policy: Policy
    dep: Deployment | None

    @classmethod
    @abstractmethod
    def load(cls, path: str | Path) -> Any:
        """Read a model file and check it on its own (ModelError)."""

    @classmethod
    @abstractmethod
    def create(cls, policy: Policy, tunables: dict[str, Any], model_path: str | None = None,
               **options: Any) -> "ModelKind":
        """The deployment of `policy`, the model file loaded and checked; nothing attached."""

    def begin(self) -> None:
        """Before the first attach (e.g. open an output that must not exist yet)."""

    @abstractmethod
    def start(self) -> Deployment:
        """Load, `prepare` the loaded object, attach; return the live deployment."""

    @abstractmethod
    def prepare(self, obj: BpfObject) -> None:
        """After load, before attach (run by `start`'s deployment): fit the
        model to the loaded object (its maps, its BTF limits) and push it. An
        error here leaves nothing attached."""

    @abstractmethod
    def stop(self) -> ExitInfo | None:
        """Detach; safe to call more than once."""

    @abstractmethod
    def swap(self, model: Any, source: str = "") -> Any:
        """Check `model` against the live policy and make it the active one."""

    def poll(self) -> None:
        """Often, while attached: drain what the policy streams to user space."""

    def tick(self, t: float, emit: Event) -> None:
        """Once per status interval: retrain, reload a changed file ..."""

    def status(self) -> dict[str, Any]:
        """What the `attached` event says about the model."""
        return {}

    def end(self, status: str, final: dict[str, Any], emit: Event) -> dict[str, Any]:
        """After the last detach (`status`: complete, truncated or aborted);
        returns what the deploy result reports about the model."""
        return {}


_loaded = False


def _load_all() -> None:
    """Import every module of this package (each registers its kind), once:
    a lookup happens on every manifest read."""
    global _loaded
    if not _loaded:
        _loaded = True
        for mod in pkgutil.iter_modules(__path__):
            importlib.import_module(f"{__name__}.{mod.name}")


KINDS: Variants[type[ModelKind]] = Variants("model kind", PolicyError, "use one of", _load_all)
register, names, get = KINDS.register, KINDS.names, KINDS.get


def for_policy(policy: Policy) -> type[ModelKind] | None:
    """The kind of `policy`'s model; None when it learns nothing."""
    return get(policy.model.kind) if policy.model is not None else None


def noun(name: str | None) -> str:
    """What a kind's model is called ("table", "model"), for a status line."""
    return get(name).noun if name and name in KINDS else "model"


def refused_options(policy: Policy, given: list[str], spell: Callable[[str], str] = str,
                    sep: str = ", ") -> str | None:
    """One line saying which of the deploy options `given` (DEPLOY_OPTIONS names;
    "watch" has its own line, see watchers) do not apply to `policy`, or None."""
    kind = for_policy(policy)
    bad = [n for n in given if kind is None or (n != "model" and n not in kind.options)]
    if not bad:
        return None
    flags = sep.join(spell(n) for n in bad)
    if kind is None:
        return (f"policy {policy.name} learns nothing: {flags} apply to learning policies "
                "(see `aios-lab policy list`)")
    takers = " or ".join(k.policies for k in map(get, names()) if set(bad) & k.options)
    return f"policy {policy.name} deploys {kind.what}: {flags} apply to {takers}" + \
        (f"; {kind.usage}" if kind.usage else "")


def watchers() -> str:
    """Who can watch their model file (for the line refusing --watch)."""
    return " or ".join(k.policies for k in map(get, names()) if "watch" in k.options)
