"""Drafts: policy sources an agent hands over as text, written into folders
the verifier and the registry can use.

A draft is a policy folder (manifest.toml, the source, and for a variant of
an installed policy that policy's other files, its headers) under
`drafts/<digest>/<name>/` in aios-lab's data dir, private to the user. The
folder's path is the sha256 of its contents: clang writes the source's
absolute path into the object, so the same text must land in the same folder
for the same draft to build the same object and so be the same registry
entry (entry.py). A folder is published by one rename, complete or absent,
and never rewritten.

A draft may not take the name of an installed policy: the verifier finds a
policy by its name (sched.policy.discover), and two of one name is an error
there.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from pathlib import Path

from .. import paths
from ..atomic import publish_dir
from ..errors import InputError, PolicyError
from ..safe_read import load_toml
from .entry import NAME_RE, Entry
from .store import sha256

MAX_SOURCE = 256 << 10      # a sched_ext policy is a few hundred lines; more is a mistake
MAX_MANIFEST = 64 << 10
_NAME_LINE = re.compile(r'^name\s*=\s*"[^"\n]*"[ \t]*$', re.MULTILINE)


def root() -> Path:
    """$XDG_DATA_HOME/aios-lab/drafts (one folder per draft)."""
    return paths.data_dir() / "drafts"


def _text(value: str, what: str, limit: int) -> bytes:
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"the {what} is empty", hint=f"give the {what} as text")
    data = value.encode("utf-8")
    if len(data) > limit:
        raise InputError(f"the {what} is {len(data)} bytes, more than the {limit} a draft may have",
                         hint=f"a policy's {what} is far smaller; check what was passed")
    return data


def _renamed(manifest: str, name: str) -> str:
    """`manifest` with its top-level `name = "..."` line set to `name`."""
    head = manifest.split("\n[", 1)[0]   # top-level keys come before the first table
    if len(_NAME_LINE.findall(head)) != 1:
        raise PolicyError("the base policy's manifest has no single top-level name = \"...\" line to rename")
    return _NAME_LINE.sub(f'name = "{name}"', manifest, count=1)


def write(source: str, *, manifest: str | None = None, base: str | None = None, name: str | None = None) -> Path:
    """Write a draft and return its policy folder.

    Either `manifest` (its text; its name is the draft's) or `base`, an
    installed policy whose manifest and headers the draft takes, renamed to
    `name`. Nothing is built here (registry.submit_folder builds)."""
    from ..sched.policy import discover, load_manifest

    src = _text(source, "source", MAX_SOURCE)
    if name is not None and not (isinstance(name, str) and NAME_RE.match(name)):
        raise InputError(f"name {name!r} is not a plain policy name", hint="letters, digits, _ . - (at most 64)")
    if (manifest is None) == (base is None):
        raise InputError("give either a manifest (its text) or a base policy's name, not both or neither")
    installed = discover()
    files: dict[str, bytes] = {}
    if base is not None:
        if base not in installed:
            raise PolicyError(f"no installed policy named {base!r} to base a draft on",
                              hint=f"known: {', '.join(sorted(installed))}")
        if not name:
            raise InputError(f"a variant of {base} needs a name of its own", hint=f"e.g. {base}-v2")
        based = installed[base]
        man_text = _renamed((based.folder / "manifest.toml").read_text(), name)
        for f in sorted(based.folder.iterdir()):
            if f.is_file() and f.name not in ("manifest.toml", based.source):
                files[f.name] = f.read_bytes()[:MAX_SOURCE + 1]
                if len(files[f.name]) > MAX_SOURCE:
                    raise InputError(f"{f} is more than the {MAX_SOURCE} bytes a draft's file may have")
    else:
        man_text = manifest
    man = _text(man_text, "manifest", MAX_MANIFEST)
    with tempfile.TemporaryDirectory(prefix="aios-draft-") as tmp:
        # Parse it where it can see a source file, as load_manifest wants.
        probe = Path(tmp) / "probe"
        probe.mkdir()
        (probe / "manifest.toml").write_bytes(man)
        declared = load_toml(probe / "manifest.toml", error=PolicyError, what="draft manifest").get("source")
        if not isinstance(declared, str) or "/" in declared or declared in ("", ".", "..", "manifest.toml"):
            raise PolicyError("the manifest's source must name a plain file beside it, e.g. source = \"x.bpf.c\"")
        (probe / declared).write_bytes(src)
        pol = load_manifest(probe / "manifest.toml")
        source_file = pol.source
    if name and pol.name != name:
        raise InputError(f"the manifest names the policy {pol.name!r}, not {name!r}",
                         hint="leave the name out, or make the manifest's name match")
    if not NAME_RE.match(pol.name):
        raise PolicyError(f"policy name {pol.name!r} is not a plain name (letters, digits, _ . -)")
    if pol.name in installed:
        raise PolicyError(f"{pol.name!r} is the name of an installed policy ({installed[pol.name].folder})",
                          hint="give the draft a name of its own")
    files["manifest.toml"], files[source_file] = man, src
    digest = hashlib.sha256()
    for fname in sorted(files):
        digest.update(f"{fname}\0{sha256(files[fname])}\n".encode())
    dest = root() / digest.hexdigest()[:32]
    folder = dest / pol.name
    if (folder / "manifest.toml").is_file():
        return folder
    root().mkdir(parents=True, exist_ok=True, mode=0o700)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=root()))
    try:
        (staging / pol.name).mkdir()
        for fname, data in files.items():
            (staging / pol.name / fname).write_bytes(data)
        try:
            publish_dir(staging, dest, replace=False)
        except OSError:
            if not (folder / "manifest.toml").is_file():   # not a concurrent writer of the same draft
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return folder


def folder_of(entry: Entry) -> Path | None:
    """The draft folder a registry entry was built from (its manifest and
    source are the entry's), or None."""
    base = root()
    if not base.is_dir():
        return None
    for manifest in sorted(base.glob(f"*/{entry.name}/manifest.toml")):
        if sha256(manifest.read_bytes()) != entry.manifest:
            continue
        from ..sched.policy import load_manifest

        try:
            pol = load_manifest(manifest)
        except PolicyError:
            continue
        if entry.source is None or sha256(pol.source_path.read_bytes()) == entry.source:
            return manifest.parent
    return None


def search_path_with(folder: Path) -> str:
    """AIOS_LAB_POLICY_PATH with `folder`'s parent added (what the verifier
    needs to find the draft by name)."""
    extra = os.environ.get("AIOS_LAB_POLICY_PATH", "")
    return os.pathsep.join(p for p in (extra, str(folder.parent)) if p)
