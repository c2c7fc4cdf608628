"""`aios-lab mcp` end to end inside the VM (pytest -m guest): the SDK's own
client starts the server over stdio, submits a policy's source text,
verifies it (every stage, the kernel ones in this process: the guest has
sched_ext), and deploys it through the root service on a Unix socket; the
kernel then runs it."""
import asyncio
import json
import os
import sys
import threading
import time
from pathlib import Path

import pytest

from aios_lab.control.registry import Registry
from aios_lab.control.service import ServiceConfig, serve
from aios_lab.sched.policy import get

from .conftest import ROOT, scx_state, wait_for

pytestmark = pytest.mark.guest
pytest.importorskip("mcp.client.stdio", reason="the [mcp] extra is not installed")

VERIFY_TIMEOUT_S = 400   # static + verifier + liveness (its stress mix is criteria.STRESS_S) on a busy TCG guest


def _data(result):
    if result.is_error:
        raise AssertionError(f"tool error: {result.content[0].text}")
    sc = result.structured_content
    if sc is not None:
        return sc.get("result", sc) if isinstance(sc, dict) and set(sc) == {"result"} else sc
    return json.loads(result.content[0].text)


def test_an_agent_submits_verifies_and_deploys_a_policy_over_mcp(tmp_path):
    from mcp import Client
    from mcp.client.stdio import StdioServerParameters

    # The guest's root filesystem is the host's, read-only: every write of
    # this test (drafts, their objects, the registry, jobs) goes to tmp_path.
    build = tmp_path / "build"
    build.mkdir()
    (build / "vmlinux.h").symlink_to(ROOT / "build" / "vmlinux.h")
    env = {k: v for k, v in os.environ.items() if k.startswith("AIOS_LAB_")}
    env.update(XDG_DATA_HOME=str(tmp_path / "data"), AIOS_LAB_REGISTRY=str(tmp_path / "registry"),
               AIOS_LAB_BUILD=str(build))
    cfg = ServiceConfig(socket=tmp_path / "control.sock", group="root", registry=tmp_path / "registry",
                        run_dir=tmp_path / "entries", deployer="sched_ext", burst=5, max_duration_s=120)
    stop, ready = threading.Event(), threading.Event()
    service = threading.Thread(target=serve, args=(cfg, stop), kwargs={"ready": ready}, daemon=True)
    service.start()
    assert ready.wait(30)
    server = StdioServerParameters(command=sys.executable, args=["-m", "aios_lab.cli", "mcp", "--socket", str(cfg.socket)],
                                   env=env, cwd=str(tmp_path))
    source = get("fifo").source_path.read_text()

    async def agent():
        async with Client(server, read_timeout_seconds=120) as client:
            entry = _data(await client.call_tool("submit_policy", {
                "source": source, "base": "fifo", "name": "fifo-agent", "tunables": {"slice_ns": 5_000_000},
                "agent": "e2e"}))
            # Not verified yet: the service refuses, and says why.
            early = await client.call_tool("deploy_policy", {"hash": entry["hash"], "duration": 60})
            # The performance stage has its own VM test (it needs QEMU at
            # real-time priority to judge placement on a busy host).
            job = _data(await client.call_tool("verify_policy", {"ref": entry["hash"], "agent": "e2e",
                                                                 "stages": ["static", "verifier", "liveness"]}))
            seen, deadline = [], time.monotonic() + VERIFY_TIMEOUT_S
            while True:
                st = _data(await client.call_tool("verify_status", {"job": job["job"]}))
                seen.append([s["stage"] for s in st["stages"]])
                if st["state"] != "running" or time.monotonic() > deadline:
                    break
                await asyncio.sleep(1)
            deployed = _data(await client.call_tool("deploy_policy", {"hash": entry["hash"], "duration": 60,
                                                                      "agent": "e2e"})) if st.get("passed") else None
            status = _data(await client.call_tool("status", {})) if deployed else None
            state = Path("/sys/kernel/sched_ext/state").read_text().strip()
            stopped = _data(await client.call_tool("stop_policy", {"agent": "e2e"})) if deployed else None
            return entry, early, st, seen, deployed, status, state, stopped

    try:
        entry, early, st, seen, deployed, status, state, stopped = asyncio.run(agent())
        wait_for(lambda: scx_state()[0] == "disabled", 20, "the policy detached on stop_policy")
    finally:
        stop.set()
        service.join(30)
    assert entry["created"] and entry["author"]["kind"] == "agent" and entry["author"]["name"] == "e2e"
    assert early.is_error and "has no passing verification" in early.content[0].text
    assert st["state"] == "done" and st["passed"], (st.get("error"), [(s["stage"], s["reason"]) for s in st["stages"]])
    assert [(s["stage"], s["passed"]) for s in st["stages"]] == [
        ("static", True), ("verifier", True), ("liveness", True)], st
    # Each stage was reported as it ended, before the job was done.
    assert any(0 < len(s) < 3 for s in seen), seen
    assert deployed["entry"] == entry["hash"] and deployed["loaded"]
    assert state == "enabled"
    assert status["sched_ext"]["state"] == "enabled" and status["sched_ext"]["ops"] == "fifo"
    assert status["policy"]["name"] == "fifo-agent" and status["policy"]["tunables"]["slice_ns"] == 5_000_000
    assert stopped["entry"] == entry["hash"]
    with Registry(cfg.registry) as reg:
        (run,) = reg.runs(entry["hash"])
        assert run.verdict == "pass" and run.author.name == "e2e" and run.platform["kernel_release"] == os.uname().release
        acts = [(r.action, r.verdict.split(":")[0]) for r in reg.audit_records(entry["hash"])]
        assert acts == [("submit", "accepted"), ("deploy", "refused"), ("verify", "pass"),
                        ("deploy", "accepted"), ("stop", "accepted")], acts
        assert reg.verify_chain().ok
