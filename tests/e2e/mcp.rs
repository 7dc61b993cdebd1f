//! Real MCP software through the gateway (see `caracal_e2e::mcp`): the reference server
//! (`@modelcontextprotocol/server-everything`) and an `mcp` 2.3.0 Python server as upstreams, the
//! official Python client as the agent, minting a fresh gateway mandate for every HTTP request.
//!
//! These show the harness on today's gateway, which proxies MCP as plain HTTP (the resource
//! declares `POST`/`GET`/`DELETE /mcp`): sessions, SSE and JSON answers, both protocol eras, raw
//! requests. Skipped with a message when the MCP tools are not installed, except under `CI=true`.

use caracal_e2e::Stack;
use caracal_e2e::mcp::{self, ClientRun, ClientScript, McpRaw, McpServer, McpUpstream, Mode, PythonOptions, Step};
use caracal_e2e::stack::Demo;
use serde_json::json;

const EVERYTHING: &str = "https://mcp.e2e.test/everything";
const PYTHON: &str = "https://mcp.e2e.test/python";

/// A stack whose demo zone (allow policy) has the resource `identifier` in front of `upstream`.
async fn stack_for(identifier: &str, upstream: &McpUpstream) -> (Stack, Demo) {
    let s = Stack::start().await;
    let d = s.demo(true).await;
    mcp::add_resource(&s, &d, mcp::resource_body(identifier, &[upstream])).await;
    (s, d)
}

/// Every HTTP request the SDK made carried a mandate of its own, and all of them passed.
fn one_mandate_per_request(run: &ClientRun) {
    assert!(run.fatal.is_none(), "the connection failed: {run:#?}");
    assert!(run.requests.len() > 1, "one HTTP request only: {run:#?}");
    assert_eq!(run.mints, run.requests.len() as u64, "one gateway mandate per HTTP request: {run:#?}");
    for r in &run.requests {
        let status = r["status"].as_u64().unwrap_or(0);
        assert!((200..300).contains(&status), "a request was refused: {r}\n{run:#?}");
    }
}

fn every_kind_of_step() -> Vec<Step> {
    vec![
        Step::ListTools,
        Step::call_tool("echo", json!({"message": "hi"})),
        Step::call_tool("get_sum", json!({"a": 2, "b": 3})),
        Step::ListPrompts,
        Step::get_prompt("greeting", json!({"name": "Ada"})),
        Step::ListResources,
        Step::read_resource("docs://readme"),
    ]
}

/// The Python server's answers to [`every_kind_of_step`], and what reached it.
fn python_answers(run: &ClientRun, upstream: &McpUpstream) {
    let tools = run.names(0);
    for t in ["echo", "read_file", "delete_repo", "get_sum"] {
        assert!(tools.contains(&t.to_owned()), "{t} missing from {tools:?}");
    }
    assert_eq!(run.text(1), "Echo: hi");
    assert_eq!(run.text(2), "5");
    assert_eq!(run.names(3), ["greeting", "secret_prompt"]);
    assert_eq!(run.text(4), "Hello, Ada!");
    assert_eq!(run.names(5), ["docs://readme", "docs://secret"]);
    assert_eq!(run.text(6), "the readme");
    assert_eq!(upstream.calls(), ["tools/call echo", "tools/call get_sum", "prompts/get greeting", "resources/read docs://readme"]);
}

#[tokio::test]
async fn the_official_client_lists_and_calls_tools_of_server_everything_through_the_gateway() {
    if !mcp::available() {
        return;
    }
    let everything = McpUpstream::everything().await;
    let (s, d) = stack_for(EVERYTHING, &everything).await;
    // `auto`: the client probes `server/discover`, server-everything (2025-11-25) refuses it, and
    // the client falls back to `initialize` — all through the gateway.
    let steps =
        vec![Step::ListTools, Step::call_tool("echo", json!({"message": "hi"})), Step::call_tool("get-sum", json!({"a": 2, "b": 3}))];
    let run = mcp::run_client(&ClientScript::new(&s, &d, EVERYTHING, Mode::Auto, steps)).await;
    let tools = run.names(0);
    assert!(tools.contains(&"echo".to_owned()) && tools.contains(&"get-sum".to_owned()), "{tools:?}");
    assert_eq!(run.text(1), "Echo: hi");
    assert_eq!(run.text(2), "The sum of 2 and 3 is 5.");
    assert!(run.fatal.is_none(), "{run:#?}");
    assert_eq!(run.mints, run.requests.len() as u64, "one gateway mandate per HTTP request: {run:#?}");
    let rpc: Vec<&str> = run.requests.iter().filter_map(|r| r["rpc_method"].as_str()).collect();
    assert_eq!(rpc[..3], ["server/discover", "initialize", "notifications/initialized"], "{run:#?}");
    assert_eq!(run.requests[0]["status"], 400, "server-everything refuses the 2026 probe: {run:#?}");
    // Past the probe every request passed, each a request of its own: the session's GET stream and
    // the DELETE that ends it included.
    for r in &run.requests[1..] {
        assert!((200..300).contains(&r["status"].as_u64().unwrap()), "{r}\n{run:#?}");
    }
    let methods = run.http_methods();
    assert!(methods.contains(&"GET") && methods.last() == Some(&"DELETE"), "{methods:?}");
    assert!(run.requests.iter().any(|r| r["content_type"].as_str().is_some_and(|c| c.starts_with("text/event-stream"))));
}

#[tokio::test]
async fn the_official_client_drives_the_python_server_with_sessions_and_sse_through_the_gateway() {
    if !mcp::available() {
        return;
    }
    let python = McpUpstream::python().await;
    let (s, d) = stack_for(PYTHON, &python).await;
    let run = mcp::run_client(&ClientScript::new(&s, &d, PYTHON, Mode::Legacy, every_kind_of_step())).await;
    python_answers(&run, &python);
    one_mandate_per_request(&run);
    assert_eq!(run.requests[0]["rpc_method"], "initialize");
    assert!(run.requests.iter().all(|r| r["mcp_method_header"].is_null()), "the legacy client sends no Mcp-Method: {run:#?}");
    let methods = run.http_methods();
    assert!(methods.contains(&"GET") && methods.last() == Some(&"DELETE"), "a session's GET stream and DELETE: {methods:?}");
    let answers: Vec<&str> =
        run.requests.iter().filter(|r| r["status"] == 200 && r["method"] != "DELETE").filter_map(|r| r["content_type"].as_str()).collect();
    assert!(answers.iter().all(|c| c.starts_with("text/event-stream")), "SSE answers and stream: {answers:?}");
}

#[tokio::test]
async fn the_official_client_drives_the_python_server_in_the_2026_revision_through_the_gateway() {
    if !mcp::available() {
        return;
    }
    let python = McpUpstream::python().await;
    let (s, d) = stack_for(PYTHON, &python).await;
    let run = mcp::run_client(&ClientScript::new(&s, &d, PYTHON, Mode::V2026, every_kind_of_step())).await;
    python_answers(&run, &python);
    one_mandate_per_request(&run);
    // No sessions in 2026-07-28: one POST per operation, its method mirrored in `Mcp-Method`, JSON answers.
    assert_eq!(run.requests.len(), 7, "{run:#?}");
    for r in &run.requests {
        assert_eq!(r["method"], "POST");
        assert_eq!(r["mcp_method_header"], r["rpc_method"], "{r}");
        assert!(r["content_type"].as_str().unwrap().starts_with("application/json"), "{r}");
    }
}

#[tokio::test]
async fn a_raw_tools_list_through_the_gateway_comes_back_as_sse_from_server_everything() {
    if !mcp::available() {
        return;
    }
    let everything = McpUpstream::everything().await;
    let (s, d) = stack_for(EVERYTHING, &everything).await;
    let raw = McpRaw::new(&s, &d, EVERYTHING).await;
    let session = raw.initialize().await.expect("server-everything assigns a session");
    let a = raw.legacy_request(Some(&session), 1, "tools/list", json!({})).await;
    assert_eq!((a.status, a.content_type()), (200, "text/event-stream"), "{a:#?}");
    let tools = a.response(1)["result"]["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect::<Vec<_>>();
    assert!(tools.contains(&"echo") && tools.contains(&"get-sum"), "{tools:?}");
    // Without its session the same request is the server's to refuse.
    let a = raw.legacy_request(None, 2, "tools/list", json!({})).await;
    assert_eq!(a.status, 400, "{a:#?}");
    // Its `get-env` tool answers with its environment: nothing of the test's reaches it.
    let a = raw.legacy_request(Some(&session), 3, "tools/call", json!({"name": "get-env", "arguments": {}})).await;
    let env: serde_json::Value = serde_json::from_str(a.response(3)["result"]["content"][0]["text"].as_str().unwrap()).unwrap();
    let names: Vec<&String> = env.as_object().unwrap().keys().collect();
    assert!(names.iter().all(|n| ["HOME", "PATH", "PORT"].contains(&n.as_str())), "server-everything's environment: {names:?}");
}

#[tokio::test]
async fn a_raw_tools_list_through_the_gateway_comes_back_from_the_python_server_in_both_revisions() {
    if !mcp::available() {
        return;
    }
    let python = McpUpstream::python().await;
    let (s, d) = stack_for(PYTHON, &python).await;
    let raw = McpRaw::new(&s, &d, PYTHON).await;
    // 2026-07-28: no session, a JSON answer.
    let a = raw.modern_request(1, "tools/list", json!({})).await;
    assert_eq!((a.status, a.content_type()), (200, "application/json"), "{a:#?}");
    assert!(a.response(1)["result"]["tools"].as_array().unwrap().iter().any(|t| t["name"] == "delete_repo"), "{a:#?}");
    let a = raw.modern_request(2, "tools/call", json!({"name": "echo", "arguments": {"message": "raw"}})).await;
    assert_eq!(a.response(2)["result"]["content"][0]["text"], "Echo: raw", "{a:#?}");
    // 2025-11-25: a session, SSE answers.
    let session = raw.initialize().await.expect("the Python server assigns a session");
    let a = raw.legacy_request(Some(&session), 3, "tools/list", json!({})).await;
    assert_eq!((a.status, a.content_type()), (200, "text/event-stream"), "{a:#?}");
    assert!(a.response(3)["result"]["tools"].as_array().unwrap().iter().any(|t| t["name"] == "echo"), "{a:#?}");
    assert_eq!(python.calls(), ["tools/call echo"]);
}

/// Replicas listen on ports of their own, the Python server refuses a `Host` that is not its
/// own (what it would see from a gateway that did not rewrite `Host`), and dropping a server
/// stops it. No stack needed.
#[tokio::test]
async fn mcp_servers_start_as_replicas_check_host_and_stop_on_drop() {
    if !mcp::available() {
        return;
    }
    let opts = PythonOptions { json_response: true, stateless: true };
    let replicas = McpUpstream::replicas(McpServer::Python(opts), 2).await;
    assert_ne!(replicas[0].port, replicas[1].port);
    let http = reqwest::Client::new();
    let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {
        "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}}});
    for (host, status) in [(None, 200), (Some("gateway.e2e.test:8081"), 421)] {
        let mut req = http
            .post(replicas[1].url())
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", "tools/list")
            .json(&list);
        if let Some(h) = host {
            req = req.header("host", h);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), status, "Host {host:?}: {}", r.text().await.unwrap());
    }
    let port = replicas[0].port;
    drop(replicas);
    assert!(tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err(), "the server outlived its handle");
}
