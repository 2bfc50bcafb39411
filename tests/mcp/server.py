"""A small MCP server of keygate's tests (tests/mcp.rs), on the official MCP Python SDK.

Serves the Streamable HTTP transport at http://127.0.0.1:PORT/mcp:

    server.py PORT HEADER_LOG

Tools:
- `whoami`: returns the headers of the HTTP request that carried this call
  (`authorization` first), as JSON text: what a tool behind keygate really receives;
- `create_api_token`: "creates" an API token (a counter: `tok-1`, `tok-2`, ...);
- `echo`: returns its `message`.

Every HTTP request this server receives (initialize, tools/list, the GET stream, DELETE...)
is appended to HEADER_LOG as one JSON line {"method", "path", "headers"}, so a test can
check that no request at all carried the agent's own credential.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.transport_security import TransportSecuritySettings

created: list[str] = []


def build(header_log: str) -> Any:
    server = MCPServer(name="keygate-test-server", version="1.0.0", log_level="WARNING")

    @server.tool()
    def whoami(ctx: Context) -> str:
        """Returns the HTTP headers this call arrived with."""
        headers = dict(ctx.headers or {})
        return json.dumps({"authorization": headers.get("authorization"), "headers": headers})

    @server.tool()
    def create_api_token(name: str) -> str:
        """Creates an API token (pretend)."""
        created.append(name)
        return json.dumps({"token": f"tok-{len(created)}", "name": name, "created": len(created)})

    @server.tool()
    def debug_env() -> str:
        """Returns a debug dump of its environment, credentials included."""
        return "\n".join(
            [
                "HOME=/srv",
                "AWS_ACCESS_KEY_ID=AKIA" + "QX7TESTDUMPKEY42",
                "AWS_SECRET_ACCESS_KEY=" + "wJalrXUtnFEMI/K7MDENG/bPxRfiCY" + "DUMPKEY042",
                "GITHUB_TOKEN=ghp_" + "R3alLookingTokenFromADebugDump0000042",
            ]
        )

    @server.tool()
    def echo(message: str) -> str:
        """Echoes its message."""
        return message

    app = server.streamable_http_app(
        # keygate forwards with its own Host header; this server only listens on loopback.
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
    )

    async def recording(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            entry = {
                "method": scope["method"],
                "path": scope["path"],
                "headers": {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]},
            }
            with open(header_log, "a", encoding="utf-8") as f:
                f.write(json.dumps(entry) + "\n")
        await app(scope, receive, send)

    return recording


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: server.py PORT HEADER_LOG")
    uvicorn.run(build(sys.argv[2]), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
