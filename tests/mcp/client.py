"""The official MCP Python client (`mcp` 2.3.0) as a test driver: runs a script of MCP operations
through the gateway and prints one JSON line per step, then one summary line.

The script is one JSON object on stdin (stdin, not argv: it carries the client secret):

    {"gateway_url": "http://127.0.0.1:P/mcp", "resource": "https://mcp.e2e.test",
     "sts": {"url": "http://127.0.0.1:C", "zone_id": "...", "application_id": "...",
             "client_secret": "...", "scope": "mcp.use", "session_mandate": "... (optional)",
             "ca_file": "... (optional: the STS serves TLS from a test CA)"},
     "mode": "legacy" | "2026-07-28" | "auto", "step_timeout_seconds": 15,
     "steps": [{"op": "list_tools"}, {"op": "call_tool", "name": "echo", "arguments": {"message": "hi"}},
               {"op": "list_prompts"}, {"op": "get_prompt", "name": "greeting", "arguments": {"name": "x"}},
               {"op": "list_resources"}, {"op": "read_resource", "uri": "docs://readme"}]}

Without `session_mandate` the client mints one with its credentials first. Every HTTP request the
SDK makes then gets a gateway mandate of its own, minted just before it is sent (an `httpx2.Auth`
hook; a gateway mandate is single-use), and `X-Caracal-Resource`.

Output, one JSON object a line:

    {"step": 0, "op": "list_tools", "ok": true, "result": {...the MCP result, JSON field names...}}
    {"step": 1, "op": "call_tool", "ok": false, "error": {"type": "MCPError", "code": -32602, "message": "..."}}
    {"summary": {"mints": 7, "requests": [{"method": "POST", "rpc_method": "tools/list",
                 "mcp_method_header": "tools/list" | null, "status": 200, "content_type": "..."}, ...],
                 "fatal": null | {"type", "code", "message"}}}

A step that fails is reported and the next one runs (the session usually survives an MCP error);
`fatal` is set when the connection itself failed (then the steps not run are missing). No token is
ever printed.
"""

import json
import ssl
import sys
from typing import Any

import anyio
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError

GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token"
GATEWAY_MANDATE = "urn:caracal:token-type:gateway-mandate"


class Sts:
    """Mints session and gateway mandates at the STS token endpoint."""

    def __init__(self, http: httpx2.AsyncClient, cfg: dict[str, Any], resource: str):
        self.http, self.cfg, self.resource = http, cfg, resource
        self.session: str | None = cfg.get("session_mandate")
        self.mints = 0

    def _client_form(self) -> dict[str, str]:
        return {
            "grant_type": GRANT,
            "zone_id": self.cfg["zone_id"],
            "application_id": self.cfg["application_id"],
            "client_secret": self.cfg["client_secret"],
        }

    async def _token(self, form: dict[str, str], what: str) -> str:
        r = await self.http.post(f"{self.cfg['url']}/oauth/2/token", data=form)
        if r.status_code != 200:
            # The body is an OAuth error object: no token in it.
            raise RuntimeError(f"{what} mint refused: {r.status_code} {r.text[:300]}")
        return r.json()["access_token"]

    async def gateway_mandate(self) -> str:
        if self.session is None:
            self.session = await self._token(self._client_form(), "session")
        form = {
            **self._client_form(),
            "subject_token": self.session,
            "subject_token_type": ACCESS_TOKEN,
            "requested_token_type": GATEWAY_MANDATE,
            "resource": self.resource,
        }
        if self.cfg.get("scope"):
            form["scope"] = self.cfg["scope"]
        token = await self._token(form, "gateway")
        self.mints += 1
        return token


class MandatePerRequest(httpx2.Auth):
    """A fresh gateway mandate on every HTTP request of the MCP transport (POST, GET, DELETE)."""

    def __init__(self, sts: Sts, resource: str):
        self.sts, self.resource = sts, resource
        self.requests: list[dict[str, Any]] = []

    async def async_auth_flow(self, request: httpx2.Request):
        request.headers["Authorization"] = f"Bearer {await self.sts.gateway_mandate()}"
        request.headers["X-Caracal-Resource"] = self.resource
        seen: dict[str, Any] = {
            "method": request.method,
            "rpc_method": rpc_method(request),
            "mcp_method_header": request.headers.get("mcp-method"),
        }
        self.requests.append(seen)
        response = yield request
        seen["status"] = response.status_code
        seen["content_type"] = response.headers.get("content-type")


def rpc_method(request: httpx2.Request) -> str | None:
    """The JSON-RPC `method` of a POST body (None for GET/DELETE and for a client's responses)."""
    try:
        body = json.loads(request.content) if request.content else None
    except (ValueError, httpx2.RequestNotRead):
        return None
    return body.get("method") if isinstance(body, dict) else None


def dump(result: Any) -> Any:
    return result.model_dump(mode="json", by_alias=True, exclude_none=True)


def error_of(e: BaseException) -> dict[str, Any]:
    if isinstance(e, BaseExceptionGroup) and len(e.exceptions) == 1:
        return error_of(e.exceptions[0])
    if isinstance(e, MCPError):
        return {"type": "MCPError", "code": e.code, "message": e.message}
    return {"type": type(e).__name__, "code": None, "message": str(e)[:500]}


async def run_step(client: Client, step: dict[str, Any]) -> Any:
    match step["op"]:
        case "list_tools":
            return await client.list_tools()
        case "call_tool":
            return await client.call_tool(step["name"], step.get("arguments") or {})
        case "list_prompts":
            return await client.list_prompts()
        case "get_prompt":
            return await client.get_prompt(step["name"], step.get("arguments") or {})
        case "list_resources":
            return await client.list_resources()
        case "read_resource":
            return await client.read_resource(step["uri"])
        case op:
            raise ValueError(f"unknown op {op!r}")


def emit(line: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


async def main(script: dict[str, Any]) -> None:
    timeout = float(script.get("step_timeout_seconds", 15))
    fatal = None
    # The STS may serve TLS from a test CA.
    ca_file = script["sts"].get("ca_file")
    verify = ssl.create_default_context(cafile=ca_file) if ca_file else True
    async with httpx2.AsyncClient(timeout=10, verify=verify) as sts_http:
        sts = Sts(sts_http, script["sts"], script["resource"])
        auth = MandatePerRequest(sts, script["resource"])
        try:
            async with create_mcp_http_client(auth=auth) as http:
                transport = streamable_http_client(script["gateway_url"], http_client=http)
                # No response cache: every list step must reach the server.
                async with Client(transport, mode=script.get("mode", "auto"), cache=None) as client:
                    for i, step in enumerate(script["steps"]):
                        line: dict[str, Any] = {"step": i, "op": step["op"]}
                        try:
                            with anyio.fail_after(timeout):
                                line |= {"ok": True, "result": dump(await run_step(client, step))}
                        except Exception as e:
                            line |= {"ok": False, "error": error_of(e)}
                        emit(line)
        except BaseException as e:
            if not isinstance(e, Exception | BaseExceptionGroup):
                raise
            fatal = error_of(e)
        emit({"summary": {"mints": sts.mints, "requests": auth.requests, "fatal": fatal}})


if __name__ == "__main__":
    anyio.run(main, json.load(sys.stdin))
