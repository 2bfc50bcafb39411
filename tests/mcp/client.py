"""A scripted MCP client for keygate's integration tests (tests/mcp.rs).

Uses the official MCP Python SDK (PyPI `mcp`, pinned in requirements.txt) over the
Streamable HTTP transport. Usage:

    client.py '<script JSON>'

The script:

    {
      "url": "http://127.0.0.1:PORT/mcp",
      "headers": {"Authorization": "Bearer ..."},   # sent on every HTTP request
      "timeout": 30,                                # seconds for the whole script
      "steps": [
        {"op": "initialize"},
        {"op": "list_tools"},
        {"op": "call_tool", "name": "echo", "arguments": {"message": "hi"}},
        {"op": "call_tool", "name": "...", "arguments": {...}, "progress": true},
        {"op": "ping"},
        {"op": "wait_for_file", "path": "/tmp/x", "timeout": 10}   # until a test says go
      ]
    }

Prints one JSON object on stdout:

    {
      "results": [ one object per step, in order ],
      "http": [ every HTTP exchange: method, JSON-RPC method, status, content type ],
      "error": null or a description of what stopped the script early
    }

A step that the peer answers with a JSON-RPC error records it as
{"ok": false, "error": {"code", "message", "data"}} and the script goes on. Note that
the SDK turns an HTTP 4xx/5xx answer into a JSON-RPC error too, so a test that must tell
a JSON-RPC error from an HTTP error looks at the step's "http" entries (their status).
Exits 0 unless the script itself is malformed.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from typing import Any

import anyio
import httpx2
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError


def _dump(model: Any) -> Any:
    if hasattr(model, "model_dump"):
        return model.model_dump(by_alias=True, mode="json", exclude_none=True)
    return model


class Recorder:
    """Records every HTTP exchange of the transport, through httpx2's event hooks."""

    def __init__(self) -> None:
        self.http: list[dict[str, Any]] = []
        self.session_id: str | None = None

    async def on_request(self, request: httpx2.Request) -> None:
        rpc_method = None
        rpc_id = None
        try:
            body = json.loads(request.content or b"null")
            if isinstance(body, dict):
                rpc_method = body.get("method")
                rpc_id = body.get("id")
        except Exception:  # streaming or non-JSON body: not recorded
            pass
        request.extensions["keygate_test_entry"] = len(self.http)
        self.http.append(
            {
                "method": request.method,
                "rpc_method": rpc_method,
                "rpc_id": rpc_id,
                "status": None,
                "content_type": None,
            }
        )

    async def on_response(self, response: httpx2.Response) -> None:
        index = response.request.extensions.get("keygate_test_entry")
        if index is None:
            return
        entry = self.http[index]
        entry["status"] = response.status_code
        entry["content_type"] = response.headers.get("content-type")
        sid = response.headers.get("mcp-session-id")
        if sid:
            entry["session_id"] = sid
            if entry["rpc_method"] == "initialize":
                self.session_id = sid


def _error(e: MCPError) -> dict[str, Any]:
    return {"code": e.code, "message": e.message, "data": e.data}


async def run_step(session: ClientSession, rec: Recorder, step: dict[str, Any]) -> dict[str, Any]:
    op = step["op"]
    first_http = len(rec.http)
    out: dict[str, Any] = {"op": op}
    started = time.monotonic()
    try:
        if op == "initialize":
            result = await session.initialize()
            out.update(
                ok=True,
                server_name=result.server_info.name,
                server_version=result.server_info.version,
                protocol_version=result.protocol_version,
                session_id=rec.session_id,
                capabilities=_dump(result.capabilities),
            )
        elif op == "list_tools":
            result = await session.list_tools()
            out.update(ok=True, tools=[t.name for t in result.tools], next_cursor=result.next_cursor)
        elif op == "ping":
            await session.send_ping()
            out.update(ok=True)
        elif op == "wait_for_file":
            # Lets the test act (approve a request...) while this session stays open.
            with anyio.fail_after(float(step.get("timeout", 10))):
                while not await anyio.Path(step["path"]).exists():
                    await anyio.sleep(0.05)
            out.update(ok=True)
        elif op == "call_tool":
            out["name"] = step["name"]
            progress: list[dict[str, Any]] = []

            async def on_progress(value: float, total: float | None, message: str | None) -> None:
                progress.append(
                    {
                        "progress": value,
                        "total": total,
                        "message": message,
                        "t": round(time.monotonic() - started, 4),
                    }
                )

            result = await session.call_tool(
                step["name"],
                step.get("arguments") or {},
                progress_callback=on_progress if step.get("progress") else None,
            )
            out.update(
                ok=True,
                is_error=bool(result.is_error),
                content=[_dump(c) for c in result.content],
                text="".join(getattr(c, "text", "") or "" for c in result.content),
                structured=result.structured_content,
            )
            if step.get("progress"):
                out["progress"] = progress
        else:
            raise ValueError(f"unknown op {op!r}")
    except MCPError as e:
        out.update(ok=False, error=_error(e))
    out["t_done"] = round(time.monotonic() - started, 4)
    out["http"] = rec.http[first_http:]
    return out


async def main(script: dict[str, Any]) -> dict[str, Any]:
    rec = Recorder()
    results: list[dict[str, Any]] = []
    report: dict[str, Any] = {"results": results, "http": rec.http, "error": None}
    timeout = float(script.get("timeout", 30))
    try:
        with anyio.fail_after(timeout):
            async with httpx2.AsyncClient(
                headers=script.get("headers") or {},
                timeout=httpx2.Timeout(timeout, read=timeout),
                event_hooks={"request": [rec.on_request], "response": [rec.on_response]},
            ) as http:
                async with streamable_http_client(script["url"], http_client=http) as (read, write):
                    async with ClientSession(read, write) as session:
                        for step in script["steps"]:
                            results.append(await run_step(session, rec, step))
    except BaseException as e:  # report whatever stopped the script, with what it did so far
        if isinstance(e, KeyboardInterrupt):
            raise
        report["error"] = f"{type(e).__name__}: {e}"
        report["traceback"] = traceback.format_exc()
    return report


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: client.py '<script JSON>'")
    print(json.dumps(anyio.run(main, json.loads(sys.argv[1]))))
