"""`aios-lab mcp`: the control plane for agents, over MCP (stdio).

Built on the official MCP Python SDK (`mcp`, the optional extra `[mcp]`).
Each tool is a thin, typed wrapper over the same library call the CLI makes,
returning plain data; a library error (aios_lab.errors) becomes a ToolError
whose text is the one line the CLI would print, so an agent reads the same
diagnosis a person does. Nothing here needs root: telemetry for a profile is
collected inside the VM (as root there), and deploying on the host goes
through the root service, never through this process.
"""
from __future__ import annotations

import functools
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, TypeVar

from ..errors import AiosError
from ..extras import require

_F = TypeVar("_F", bound=Callable[..., Any])

SERVER_NAME = "aios-lab"
INSTRUCTIONS = (
    "Learned Linux scheduling and DVFS. Profile a workload before choosing a policy; "
    "every policy must pass `verify` before it can be deployed; results are measured, "
    "never estimated, and each comes with the data it was computed from.")


def _load_sdk():
    server = require("mcp.server.mcpserver", "mcp", "the MCP server (aios-lab mcp)")
    exceptions = require("mcp.server.mcpserver.exceptions", "mcp", "the MCP server (aios-lab mcp)")
    return server.MCPServer, exceptions.ToolError


def _tool_errors(tool_error: type[Exception]) -> Callable[[_F], _F]:
    """Turn the library's typed errors into the SDK's anticipated ToolError."""
    def wrap(fn: _F) -> _F:
        @functools.wraps(fn)
        def inner(*a: Any, **k: Any) -> Any:
            try:
                return fn(*a, **k)
            except AiosError as exc:
                raise tool_error(exc.one_line()) from exc
        return inner  # type: ignore[return-value]
    return wrap


# -- the tools' bodies: plain functions, so the CLI and tests can call them too ----------------

def policies(include_test_only: bool = False) -> list[dict[str, Any]]:
    """The policies this installation can deploy, with their tunables and ranges."""
    from ..sched import policy as pol

    out = []
    for p in pol.discover().values():
        if p.test_only and not include_test_only:
            continue
        out.append({"name": p.name, "kind": p.kind, "summary": p.summary, "optimises": p.optimises,
                    "built": p.object_path.exists(), "model_kind": p.model.kind if p.model else None,
                    "tunables": {n: {"type": t.type, "default": t.default, "min": t.min, "max": t.max,
                                     "help": t.help} for n, t in p.tunables.items()}})
    return out


def policy_source(name: str) -> dict[str, Any]:
    """One policy's manifest and BPF source text (what an agent edits to propose a variant)."""
    from ..sched import policy as pol

    p = pol.get(name)
    manifest = p.folder / "manifest.toml"
    return {"name": p.name, "manifest": manifest.read_text(), "source_file": p.source,
            "source": p.source_path.read_text()}


def profile_trace(trace: str) -> dict[str, Any]:
    """The workload profile (analysis.profile) of a trace already collected."""
    from ..analysis.profile import profile_trace as _profile

    return _profile(trace)


def profile_workload(command: list[str], seconds: float = 5.0, cpus: int = 2) -> dict[str, Any]:
    """Run ``command`` in the VM for ``seconds`` under telemetry and profile it.

    The collection runs as root inside the guest (BPF needs it), so this
    works unprivileged on any host with the VM set up (`aios-lab vm build`)."""
    from ..analysis.profile import profile_trace as _profile
    from ..vm import runner
    from ..vm.topology import Topology

    if not command:
        raise AiosError("profile_workload needs a command to run", hint='e.g. ["hackbench", "-l", "200"]')
    if not 0 < seconds <= 120:
        raise AiosError(f"seconds={seconds} is outside (0, 120]")
    with tempfile.TemporaryDirectory(prefix="aios-profile-") as tmp:
        out = Path(tmp) / "trace"
        cmd = [sys.executable, "-m", "aios_lab.cli", "collect", "--duration", str(seconds),
               "--out", str(out), "--", *command]
        res = runner.run(cmd, topology=Topology(cpus=cpus), rwdirs=[Path(tmp)], timeout_s=600 + seconds,
                         emulator_fault_retries=1)
        if not out.exists():
            raise AiosError(f"the collection in the VM wrote no trace (exit {res.returncode}): "
                            f"{res.output.strip().splitlines()[-1:] or ['no output']}")
        prof = _profile(out)
    prof["trace"] = None  # the trace lived in a temporary folder
    prof["collected_in"] = {"vm": res.describe(), "command": command, "seconds": seconds}
    return prof


def status() -> dict[str, Any]:
    """sched_ext as the kernel reports it (state, attached ops) and our policy's live stats."""
    from ..sched.status import live_status

    return live_status()


# -- the server ---------------------------------------------------------------------------------

def build_server():
    """The MCPServer with every tool registered (imports the SDK)."""
    MCPServer, ToolError = _load_sdk()
    server = MCPServer(SERVER_NAME, instructions=INSTRUCTIONS)
    wrap = _tool_errors(ToolError)
    for fn in (policies, policy_source, profile_trace, profile_workload, status):
        server.tool()(wrap(fn))
    return server


def main() -> None:
    build_server().run("stdio")


if __name__ == "__main__":
    main()
