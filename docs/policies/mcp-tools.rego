package caracal.authz

import rego.v1

# MCP tools by name (docs/mcp.md). The STS evaluates an MCP POST once per JSON-RPC message, with
# `input.context.mcp` = {kind, method, name, uri, args_sha256, protocol_version, session_id, batch};
# requests without MCP facts (mints, GET streams, DELETE of a session, HTTP resources) have none.
#
# - the protocol's own plumbing (handshake, pings, listings, notifications, answers to the
#   server) is allowed;
# - tools: read_* and a few harmless ones; delete_* is refused with a reason;
# - prompts and resources: one each.
# Everything else is denied: a tool added to the server is unusable until named here.

default result := {"decision": "deny", "evaluation_status": "complete", "determining_policies": ["mcp-tools"], "diagnostics": [{"reason": "no_rule_matched"}]}

deny(reason) := {"decision": "deny", "evaluation_status": "complete", "determining_policies": ["mcp-tools"], "diagnostics": [{"reason": reason}]}

allowed := {"decision": "allow", "evaluation_status": "complete", "determining_policies": ["mcp-tools"], "diagnostics": []}

mcp := input.context.mcp

plumbing := {
	"initialize", "notifications/initialized", "server/discover", "ping",
	"tools/list", "prompts/list", "resources/list", "resources/templates/list",
	"notifications/cancelled", "notifications/progress", "notifications/roots/list_changed",
}

harmless_tools := {"echo", "get-sum", "get_sum"}

# Not an MCP message: decided as any other exchange by an application.
result := allowed if {
	not input.context.mcp
	input.principal.type == "Application"
}

result := allowed if mcp.method in plumbing

# The client's answer to a server request asks for nothing.
result := allowed if mcp.kind == "response"

result := allowed if {
	mcp.method == "tools/call"
	startswith(mcp.name, "read_")
}

result := allowed if {
	mcp.method == "tools/call"
	mcp.name in harmless_tools
}

result := deny("destructive_tool") if {
	mcp.method == "tools/call"
	startswith(mcp.name, "delete_")
}

result := allowed if {
	mcp.method == "prompts/get"
	mcp.name == "greeting"
}

result := allowed if {
	mcp.method == "resources/read"
	mcp.uri == "docs://readme"
}
