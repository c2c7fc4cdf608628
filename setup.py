"""Wheel contents beyond the Python package (everything else is in pyproject.toml).

A wheel must work outside the checkout, so build_py copies the checkout's
data trees into the package as aios_lab/_data/ (paths.project_root() looks
there when no checkout is around): the BPF sources and headers, the policies
(sources and manifests), the workloads and their data, the kernel pin and the
guest script, and the CO-RE objects compiled ahead of time (CO-RE objects
relocate against the running kernel's BTF when loaded, so one build serves any
kernel with BTF). The objects come from build/ as `aios-lab build` left them;
building a wheel without them is refused, not silently shipped empty.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
TREES = ("bpf", "policies", "workloads", "vm")
# Objects of what a user runs; tests/ objects stay out.
OBJECT_DIRS = ("bpf", "policies")
SKIP = shutil.ignore_patterns("__pycache__", "*.pyc", ".*", "*.o", "*.d", "*.flags", "*.tmp")


class BuildPyWithData(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            # An editable install (make setup) reads the checkout itself, and
            # comes before `aios-lab build` makes any object: nothing to copy.
            return
        data = Path(self.build_lib) / "aios_lab" / "_data"
        shutil.rmtree(data, ignore_errors=True)
        for tree in TREES:
            shutil.copytree(ROOT / tree, data / tree, ignore=SKIP)
        objects = [o for d in OBJECT_DIRS for o in sorted((ROOT / "build" / d).rglob("*.bpf.o"))]
        sources = [s for d in OBJECT_DIRS for s in sorted((ROOT / d).rglob("*.bpf.c"))]
        if len(objects) < len(sources):
            raise SystemExit(f"build/ has {len(objects)} BPF objects for {len(sources)} sources: "
                             "run `make build` (aios-lab build) before building the wheel")
        strip = shutil.which("llvm-strip-14") or shutil.which("llvm-strip")
        for obj in objects:
            dest = data / "build" / obj.relative_to(ROOT / "build")
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(obj, dest)
            if strip:  # DWARF is for debugging the build; CO-RE needs only .BTF/.BTF.ext
                subprocess.run([strip, "-g", str(dest)], check=True)


# setuptools' own build tree must not land in build/, which holds the BPF
# objects; egg_info refuses a base folder that does not exist yet (a clean clone).
SCRATCH = ".setuptools"
(ROOT / SCRATCH).mkdir(exist_ok=True)
setup(cmdclass={"build_py": BuildPyWithData},
      options={"build": {"build_base": f"{SCRATCH}/build"}, "egg_info": {"egg_base": SCRATCH}})
