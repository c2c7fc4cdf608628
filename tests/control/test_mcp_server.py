"""`aios-lab mcp` end to end: the SDK's own client talks to the server over stdio."""
from __future__ import annotations

import asyncio
import json
import sys

import pytest

pytest.importorskip("mcp.server.mcpserver", reason="the [mcp] extra is not installed")

from mcp import Client  # noqa: E402
from mcp.client.stdio import StdioServerParameters  # noqa: E402

from tests.helpers.traces import workload_trace  # noqa: E402


def _server() -> StdioServerParameters:
    return StdioServerParameters(command=sys.executable, args=["-m", "aios_lab.control.mcp_server"])


def _data(result) -> object:
    """A tool result's structured content, or its text parsed as JSON."""
    if result.structured_content is not None:
        sc = result.structured_content
        return sc.get("result", sc) if isinstance(sc, dict) and set(sc) == {"result"} else sc
    return json.loads(result.content[0].text)


def test_tools_over_stdio(tmp_path):
    trace = workload_trace(tmp_path / "t", busy=0.95, vol=100, invol=900, wakeups=100)

    async def session():
        async with Client(_server(), read_timeout_seconds=120) as client:
            tools = (await client.list_tools()).tools
            names = {t.name for t in tools}
            # Every tool tells an agent what it does (its docstring).
            assert all(t.description and len(t.description) > 40 for t in tools), \
                [t.name for t in tools if not t.description]
            pols = _data(await client.call_tool("policies", {}))
            prof = _data(await client.call_tool("profile_trace", {"trace": str(trace)}))
            src = _data(await client.call_tool("policy_source", {"name": "fifo"}))
            bad = await client.call_tool("policy_source", {"name": "no-such-policy"})
            broken = await client.call_tool("profile_trace", {"trace": str(tmp_path / "missing")})
            return names, pols, prof, src, bad, broken

    names, pols, prof, src, bad, broken = asyncio.run(session())
    assert {"policies", "policy_source", "profile_trace", "profile_workload", "status", "search_policies",
            "get_policy", "submit_policy", "verify_policy", "verify_status", "compare_policies", "history",
            "deploy_policy", "stop_policy", "rollback"} <= names
    assert {"fifo", "mllb", "freq"} <= {p["name"] for p in pols}
    assert prof["class"] == "cpu-bound" and prof["threads"] == 2
    assert "SEC(" in src["source"] and 'name = "fifo"' in src["manifest"]
    # Library errors arrive with the CLI's one line (a crash would carry no message), flagged as errors.
    assert bad.is_error and "no policy named 'no-such-policy'" in bad.content[0].text
    assert broken.is_error and "no such directory" in broken.content[0].text
