"""An MCP server built on the official Python SDK (`mcp` 2.3.0, `MCPServer`), for the gateway's MCP tests.

Serves Streamable HTTP at http://127.0.0.1:<port>/mcp, both protocol eras on one endpoint: the legacy
2025-11-25 path (initialize, sessions, SSE answers) and the 2026-07-28 path (no sessions, JSON answers,
Mcp-Method/Mcp-Name checked against the body).

    python server.py --port P [--json] [--stateless] [--calls-file FILE] [--allow-host HOST]...

--json          answer legacy requests with application/json instead of SSE
--stateless     no Mcp-Session-Id on the legacy path (a fresh transport per request)
--calls-file    append one line per tool call, prompt get and resource read: "<method> <name or uri>",
                e.g. "tools/call delete_repo", so a test can show that a refused call never got here
--allow-host    another Host header value to accept (repeatable)

The SDK turns on DNS-rebinding protection for a loopback bind and answers 421 to any other Host. The
gateway sets Host to the upstream's authority (127.0.0.1:<port>), which is allowed here explicitly; a
request that reached this server with the gateway's own Host would be refused, which is the point.
"""

import argparse
import sys

from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings

args = argparse.ArgumentParser()
args.add_argument("--port", type=int, required=True)
args.add_argument("--json", action="store_true")
args.add_argument("--stateless", action="store_true")
args.add_argument("--calls-file")
args.add_argument("--allow-host", action="append", default=[])
opts = args.parse_args()

mcp = MCPServer("caracal-e2e-python", log_level="WARNING")


def record(method: str, target: str) -> None:
    """Appends the call to --calls-file (written and closed at once, so a test reads it at any time)."""
    if opts.calls_file:
        with open(opts.calls_file, "a", encoding="utf-8") as f:
            f.write(f"{method} {target}\n")


@mcp.tool()
def echo(message: str) -> str:
    """Echoes the message back."""
    record("tools/call", "echo")
    return f"Echo: {message}"


@mcp.tool()
def read_file(path: str) -> str:
    """Pretends to read a file."""
    record("tools/call", "read_file")
    return f"contents of {path}"


@mcp.tool()
def delete_repo(name: str) -> str:
    """Pretends to delete a repository: the call a policy should refuse."""
    record("tools/call", "delete_repo")
    return f"deleted repository {name}"


@mcp.tool()
def get_sum(a: int, b: int) -> int:
    """Adds two numbers."""
    record("tools/call", "get_sum")
    return a + b


@mcp.prompt()
def greeting(name: str) -> str:
    """A greeting for someone."""
    record("prompts/get", "greeting")
    return f"Hello, {name}!"


@mcp.prompt()
def secret_prompt() -> str:
    """A prompt a policy should hide."""
    record("prompts/get", "secret_prompt")
    return "the secret prompt"


@mcp.resource("docs://readme", mime_type="text/plain")
def readme() -> str:
    """The readme."""
    record("resources/read", "docs://readme")
    return "the readme"


@mcp.resource("docs://secret", mime_type="text/plain")
def secret() -> str:
    """A resource a policy should hide."""
    record("resources/read", "docs://secret")
    return "the secret document"


if __name__ == "__main__":
    hosts = [f"127.0.0.1:{opts.port}", f"localhost:{opts.port}", *opts.allow_host]
    security = TransportSecuritySettings(enable_dns_rebinding_protection=True, allowed_hosts=hosts)
    sys.stdout.write(f"serving on 127.0.0.1:{opts.port} json={opts.json} stateless={opts.stateless}\n")
    sys.stdout.flush()
    mcp.run(
        "streamable-http",
        host="127.0.0.1",
        port=opts.port,
        streamable_http_path="/mcp",
        json_response=opts.json,
        stateless_http=opts.stateless,
        transport_security=security,
    )
