"""mllb's limits as the compiled policy declares them.

The tree's bounds (nodes per slot, depth the BPF loop walks, the feature
clamp), the slot magic and the features live in policies/mllb/intf.h as
`enum mllb_limit` and `enum mllb_feature`; clang puts both into the object's
BTF, and this module reads them from there (the built object, or the wheel's
copy), so Python never repeats them. Training, checking a model file and
pushing it into a live slot all use the same numbers.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from aios_lab.bpf.btf import Btf
from aios_lab.errors import BuildError, LayoutError

POLICY = "mllb"
LIMIT_ENUM = "mllb_limit"
FEATURE_ENUM, FEATURE_PREFIX = "mllb_feature", "MLLB_F_"


@dataclass(frozen=True)
class TreeLimits:
    max_nodes: int          # MLLB_MAX_NODES: nodes per model slot
    max_depth: int          # MLLB_MAX_DEPTH: the BPF walk visits at most this + 1 nodes
    feature_max: int        # MLLB_FEATURE_MAX: features (and thresholds) are clamped to +-this
    magic: int              # MLLB_MODEL_MAGIC: a slot holding a model starts with it
    max_cpus: int           # MLLB_MAX_CPUS
    feature_names: list[str]    # enum mllb_feature, lower-cased, in index order

    @property
    def nr_features(self) -> int:
        return len(self.feature_names)

    @classmethod
    def from_btf(cls, btf: Btf, features_enum: str = FEATURE_ENUM,
                 feature_prefix: str = FEATURE_PREFIX) -> "TreeLimits":
        limit = btf.enum(LIMIT_ENUM)
        enum = btf.enum(features_enum)
        names = {i: n.removeprefix(feature_prefix).lower() for n, i in enum.items() if n.startswith(feature_prefix)}
        if sorted(names) != list(range(len(names))):
            raise LayoutError(f"enum {features_enum}: {feature_prefix}* values are not 0..{len(names) - 1}")
        try:
            return cls(max_nodes=limit["MLLB_MAX_NODES"], max_depth=limit["MLLB_MAX_DEPTH"],
                       feature_max=limit["MLLB_FEATURE_MAX"], magic=limit["MLLB_MODEL_MAGIC"],
                       max_cpus=limit["MLLB_MAX_CPUS"], feature_names=[names[i] for i in sorted(names)])
        except KeyError as exc:
            raise LayoutError(f"enum {LIMIT_ENUM} lacks {exc.args[0]}",
                              hint="rebuild the policy (`aios-lab build`)") from None


def object_path() -> Path:
    from aios_lab.sched import policy

    return policy.get(POLICY).object_path


@functools.lru_cache(maxsize=None)
def limits() -> TreeLimits:
    """The limits of the mllb this aios-lab deploys, from its object's BTF
    (parsed once; no root or kernel support needed)."""
    path = object_path()
    if not path.exists():
        raise BuildError(f"{path} is not built; mllb's limits are read from it",
                         hint="run `aios-lab build`")
    with Btf.parse(path) as btf:
        return TreeLimits.from_btf(btf)
