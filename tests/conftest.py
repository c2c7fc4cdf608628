"""Test tiers: unit (default), `bpf` (host kernel), `vm` (boots the VM).

The `guest` tier (tests/guest) only makes sense inside the sched_ext VM:
tests/vm/test_runner_boot.py runs it there in one boot with
AIOS_LAB_REQUIRE_GUEST=1, so on the host it is not collected at all rather
than reported as skipped.

The tests mirror the code (tests/<package>/test_<module>.py). Every folder
of tests is a package, so that two test modules of one name in different
folders (tests/bench/test_spec.py, tests/sweep/test_spec.py) import as
distinct modules under pytest's default import mode, and what several
modules share is imported from tests.helpers (REPO, the checkout's root,
among it). tests/data holds test-only BPF sources and policies, no tests.
"""
import os

collect_ignore = [] if os.environ.get("AIOS_LAB_REQUIRE_GUEST") == "1" else ["guest"]
