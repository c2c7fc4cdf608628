"""Guest tier: runs inside the sched_ext VM (tests/vm/test_runner_boot.py boots it once).

Outside the VM these tests are skipped, except when AIOS_LAB_REQUIRE_GUEST=1
(set by the VM tier), where a missing sched_ext is a failure, not a skip.
"""
import os
import subprocess
import sys
import time

import pytest

from aios_lab.sched import sched_ext

from tests.helpers import REPO as ROOT


def pytest_collection_modifyitems(config, items):
    if sched_ext.available() and os.geteuid() == 0:
        return
    if os.environ.get("AIOS_LAB_REQUIRE_GUEST") == "1":
        raise pytest.UsageError("guest tier: this kernel has no sched_ext or we are not root")
    skip = pytest.mark.skip(reason="needs the sched_ext VM (run via tests/vm/test_runner_boot.py)")
    for item in items:
        if "guest" in item.keywords:
            item.add_marker(skip)


def aios(*args: str, env: dict | None = None, **kw) -> subprocess.Popen:
    """Start the aios-lab CLI as a separate process, as a user would."""
    full_env = dict(os.environ, **(env or {}))
    return subprocess.Popen([sys.executable, "-m", "aios_lab.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=full_env, cwd=ROOT, **kw)


def wait_for(pred, timeout: float, what: str, poll: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        val = pred()
        if val:
            return val
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def scx_state() -> tuple[str, str | None]:
    st = sched_ext.read_state()
    return st.state, st.ops


@pytest.fixture(autouse=True)
def sched_ext_disabled_around_each_test():
    """Each test starts and must end with no scheduler attached."""
    if sched_ext.available():
        wait_for(lambda: scx_state()[0] == "disabled", 20, "sched_ext disabled before the test")
    yield
    if sched_ext.available():
        wait_for(lambda: scx_state()[0] == "disabled", 20, "sched_ext disabled after the test")
