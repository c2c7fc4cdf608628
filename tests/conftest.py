"""Test tiers: unit (default), `bpf` (host kernel), `vm` (boots the VM).

The `guest` tier (tests/guest) only makes sense inside the sched_ext VM:
tests/test_vm.py runs it there in one boot with AIOS_LAB_REQUIRE_GUEST=1,
so on the host it is not collected at all rather than reported as skipped.
"""
import os

collect_ignore = [] if os.environ.get("AIOS_LAB_REQUIRE_GUEST") == "1" else ["guest"]
