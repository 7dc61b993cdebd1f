-- MCP-aware authorization (docs/mcp.md §1, §2): a resource is an HTTP API (`http`, the default) or an
-- MCP server (`mcp`: a POST reaches it only with the MCP facts the gateway read from its JSON-RPC
-- body), and an enforced MCP resource declares the MCP operations it accepts
-- (`[{mcp_method, name?, scope}]`). The table's grants and zone row-level security policy (0006)
-- cover the new columns.

ALTER TABLE resources
    ADD COLUMN protocol text NOT NULL DEFAULT 'http' CHECK (protocol IN ('http', 'mcp')),
    ADD COLUMN mcp_operations jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(mcp_operations) = 'array');
