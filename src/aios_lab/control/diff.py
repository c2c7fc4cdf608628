"""What changed between two registry entries: the manifest (a unified diff),
the tunable values, the model, and the object's size and sections."""
from __future__ import annotations

import difflib
import json
from typing import Any

from .elf import sections
from .entry import Entry
from .registry import Registry


def _text(data: bytes) -> list[str]:
    return data.decode("utf-8", "replace").splitlines(keepends=True)


def _unified(a: bytes, b: bytes, name_a: str, name_b: str) -> list[str]:
    return [ln.rstrip("\n") for ln in difflib.unified_diff(_text(a), _text(b), name_a, name_b)]


def _model_text(data: bytes) -> bytes | None:
    """A JSON model (mllb's tree, freq's table) pretty-printed so that a diff
    shows which fields changed; None for a binary model."""
    try:
        return (json.dumps(json.loads(data), indent=1, sort_keys=True) + "\n").encode()
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None


def diff_entries(reg: Registry, a: Entry, b: Entry) -> dict[str, Any]:
    ta, tb = reg.tunables(a), reg.tunables(b)
    tunables = {k: [ta.get(k), tb.get(k)] for k in sorted(set(ta) | set(tb)) if ta.get(k) != tb.get(k)}
    sa, sb = sections(reg.blob(a.object)), sections(reg.blob(b.object))
    sec = [{"section": k, "a": sa.get(k), "b": sb.get(k)} for k in sorted(set(sa) | set(sb))
           if sa.get(k) != sb.get(k)]
    model: dict[str, Any] = {"a": a.model, "b": b.model, "diff": []}
    if a.model != b.model and a.model and b.model:
        ma, mb = _model_text(reg.blob(a.model)), _model_text(reg.blob(b.model))
        if ma is not None and mb is not None:
            model["diff"] = _unified(ma, mb, f"{a.hash[:12]}/model", f"{b.hash[:12]}/model")
    return {
        "a": a.hash, "b": b.hash, "same": a.hash == b.hash,
        "manifest": _unified(reg.blob(a.manifest), reg.blob(b.manifest),
                             f"{a.hash[:12]}/manifest.toml", f"{b.hash[:12]}/manifest.toml"),
        "tunables": tunables,
        "model": model,
        "object": {"a": {"sha256": a.object, "size": a.object_size},
                   "b": {"sha256": b.object, "size": b.object_size}, "sections": sec},
    }
