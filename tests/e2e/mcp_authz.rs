//! MCP-aware authorization through the real stack (docs/mcp.md §1, §2, §4): the gateway reads
//! the JSON-RPC body, the STS decides each message with the zone's policy and declared MCP
//! operations, denials answer in JSON-RPC, and the resource mandate is bound to the call. The
//! upstream here is the recording one (what reaches it, byte for byte); the real MCP servers and
//! the official client are in `mcp.rs`.

use caracal_e2e::stack::{Demo, MCP_POLICY};
use caracal_e2e::{Stack, StackOptions};
use serde_json::{Value, json};

const MCP_RESOURCE: &str = "mcp://tools.e2e";

/// A demo zone with the MCP policy and an MCP resource on the recording upstream.
async fn mcp_zone(s: &Stack, extra: Value) -> Demo {
    let d = s.demo(false).await;
    s.activate_policy(&d, MCP_POLICY).await;
    let mut body = json!({
        "identifier": MCP_RESOURCE,
        "upstream_url": format!("{}/base", s.upstream.url()),
        "scopes": ["tools.read", "tools.admin"],
        "protocol": "mcp",
        "operation_enforcement": "transport_uniform",
    });
    body.as_object_mut().unwrap().extend(extra.as_object().cloned().unwrap_or_default());
    s.admin_ok("POST", &format!("/v1/zones/{}/resources", d.zone_id), &d.admin, Some(body), 201).await;
    d
}

/// A fresh gateway mandate for the MCP resource.
async fn mandate(s: &Stack, d: &Demo, scope: &str) -> String {
    let session = s.session(d).await;
    s.mandate_for(d, &session, MCP_RESOURCE, scope).await
}

/// A conforming streamable-HTTP POST of `body` with `mandate` (plus `extra` headers).
async fn post(s: &Stack, mandate: &str, body: &str, extra: &[(&str, &str)]) -> caracal_e2e::stack::Answer {
    let bearer = format!("Bearer {mandate}");
    let length = body.len().to_string();
    let mut headers = vec![
        ("authorization", bearer.as_str()),
        ("x-caracal-resource", MCP_RESOURCE),
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
        ("content-length", length.as_str()),
    ];
    headers.extend_from_slice(extra);
    s.raw_with_body("POST", "/mcp", &headers, body.as_bytes()).await
}

fn call(id: u64, tool: &str, arguments: Value) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": tool, "arguments": arguments}}).to_string()
}

fn claims(token: &str) -> Value {
    jsonwebtoken::dangerous::insecure_decode::<Value>(token).unwrap().claims
}

#[tokio::test]
async fn the_policy_decides_each_tool_and_the_upstream_credential_is_bound_to_the_call() {
    let s = Stack::start().await;
    let d = mcp_zone(&s, json!({})).await;

    // Allowed: the body reaches the upstream byte for byte, with a mandate for exactly this call.
    let body = call(7, "read_file", json!({"path": "/etc/motd"}));
    let a = post(&s, &mandate(&s, &d, "tools.read").await, &body, &[]).await;
    assert_eq!(a.status, 200, "{}\n{}", a.text, s.gateway.log_tail(20));
    let seen = s.upstream.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body, body.as_bytes(), "the body read before the exchange is forwarded unchanged");
    let forwarded = seen[0].header("authorization").unwrap().strip_prefix("Bearer ").unwrap();
    let c = claims(forwarded);
    assert_eq!(c["use"], "resource");
    // A resource server recomputes the hash: SHA-256 of the RFC 8785 form of the arguments.
    let expected = caracal_shared::b64::encode(caracal_shared::sig::sha256(br#"{"path":"/etc/motd"}"#));
    assert_eq!(c["mcp_calls"], json!([{"method": "tools/call", "name": "read_file", "args_sha256": expected}]));

    // Denied by the policy: a JSON-RPC error with the request's id, worded as an unknown tool;
    // the upstream is not reached; counted.
    let a = post(&s, &mandate(&s, &d, "tools.read").await, &call(8, "delete_repo", json!({"name": "prod"})), &[]).await;
    assert_eq!(a.status, 200, "MCP_DENIAL_STATUS defaults to 200: {}", a.text);
    assert_eq!(a.body["jsonrpc"], "2.0");
    assert_eq!(a.body["id"], 8);
    assert_eq!(a.body["error"]["code"], -32602);
    assert_eq!(a.body["error"]["message"], "Unknown tool: delete_repo");
    assert!(!a.text.contains("destructive_tool"), "the policy's reason stays in the ledger, not in the answer");
    assert_eq!(s.upstream.requests().len(), 1, "a denied call never reaches the upstream");
    assert_eq!(s.gateway_metric("caracal_gateway_denials_mcp_denied_total").await, 1.0);
    let denied_request = a.headers.get("x-request-id").unwrap().to_str().unwrap().to_owned();

    // A tool the policy does not name is refused the same way (default deny).
    let a = post(&s, &mandate(&s, &d, "tools.read").await, &call(9, "write_file", json!({})), &[]).await;
    assert_eq!(a.body["error"]["message"], "Unknown tool: write_file");

    // A batch is decided element by element: one denied element refuses it all, one error per request.
    let batch = format!(
        "[{},{},{}]",
        call(1, "echo", json!({"message": "hi"})),
        r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{}}"#,
        call(2, "delete_repo", json!({}))
    );
    let a = post(&s, &mandate(&s, &d, "tools.read").await, &batch, &[]).await;
    let ids: Vec<_> = a.body.as_array().unwrap_or_else(|| panic!("{}", a.text)).iter().map(|e| e["id"].clone()).collect();
    assert_eq!(ids, [json!(1), json!(2)]);
    assert_eq!(s.upstream.requests().len(), 1);
    let fine = format!("[{},{}]", call(3, "echo", json!({"message": "hi"})), call(4, "read_file", json!({})));
    let a = post(&s, &mandate(&s, &d, "tools.read").await, &fine, &[]).await;
    assert_eq!(a.status, 200, "{}", a.text);
    let seen = s.upstream.requests();
    let c = claims(seen.last().unwrap().header("authorization").unwrap().strip_prefix("Bearer ").unwrap());
    assert_eq!(c["mcp_calls"].as_array().unwrap().len(), 2, "the credential is bound to every call of the batch");

    // Prompts and resources by name and URI.
    let prompt = |id, name: &str| json!({"jsonrpc": "2.0", "id": id, "method": "prompts/get", "params": {"name": name}}).to_string();
    assert_eq!(post(&s, &mandate(&s, &d, "tools.read").await, &prompt(5, "greeting"), &[]).await.status, 200);
    let a = post(&s, &mandate(&s, &d, "tools.read").await, &prompt(6, "secret_prompt"), &[]).await;
    assert_eq!(a.body["error"]["message"], "Unknown prompt: secret_prompt");
    let read = json!({"jsonrpc": "2.0", "id": 10, "method": "resources/read", "params": {"uri": "docs://secret"}}).to_string();
    let a = post(&s, &mandate(&s, &d, "tools.read").await, &read, &[]).await;
    assert_eq!(a.body["error"]["message"], "Resource not found: docs://secret");
    assert_eq!(s.gateway_metric("caracal_gateway_denials_mcp_denied_total").await, 5.0);

    // The ledger names the tool: the STS's refusal, and the gateway's event of the allowed call.
    let db = sqlx::PgPool::connect(&s.database_url).await.unwrap();
    let start = std::time::Instant::now();
    let (refused, allowed) = loop {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT event_type, event FROM audit_events WHERE zone_id = $1").bind(&d.zone_id).fetch_all(&db).await.unwrap();
        let events: Vec<(String, Value)> = rows.into_iter().map(|(t, e)| (t, serde_json::from_str(&e).unwrap())).collect();
        let refused = events.iter().find(|(t, e)| t == "token_exchange" && e.to_string().contains("delete_repo")).map(|(_, e)| e.clone());
        let allowed =
            events.iter().find(|(t, e)| t == "gateway_resource_request" && e.to_string().contains("read_file")).map(|(_, e)| e.clone());
        if let (Some(r), Some(a)) = (&refused, &allowed) {
            break (r.clone(), a.clone());
        }
        assert!(start.elapsed() < std::time::Duration::from_secs(10), "no ledger rows naming the tools: {events:#?}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(refused["decision"], "deny", "{refused}");
    assert_eq!(refused["metadata_json"]["mcp"]["messages"][0]["name"], "delete_repo", "{refused}");
    assert!(refused["metadata_json"]["reason"].as_str().unwrap().contains("destructive_tool"), "{refused}");
    assert_eq!(allowed["metadata_json"]["mcp_calls"][0]["name"], "read_file", "{allowed}");
    // The admin API explains the refused call by its request id (the original client's `audit.explain`).
    let explained =
        s.admin_ok("GET", &format!("/v1/zones/{}/audit/by-request/{denied_request}/explain", d.zone_id), &d.admin, None, 200).await;
    assert_eq!(explained["decision"], "deny", "{explained}");
    assert!(explained["reason"].as_str().unwrap_or_default().contains("destructive_tool"), "{explained}");
    let events = s.admin_ok("GET", &format!("/v1/zones/{}/audit/by-request/{denied_request}", d.zone_id), &d.admin, None, 200).await;
    assert!(!events["items"].as_array().unwrap().is_empty(), "{events}");
}

#[tokio::test]
async fn malformed_mcp_bodies_answer_in_json_rpc_and_never_reach_the_upstream() {
    let s = Stack::start().await;
    let d = mcp_zone(&s, json!({})).await;

    // The first POST teaches the gateway that the resource is MCP (the STS refuses a POST to it
    // without MCP facts); the kept refusal answers in JSON-RPC.
    let a = post(&s, &mandate(&s, &d, "tools.read").await, "{not json", &[]).await;
    assert_eq!(a.status, 400, "{}", a.text);
    assert_eq!(a.body["error"]["code"], -32700);
    assert_eq!(a.body["id"], Value::Null);

    // From then on a malformed POST is refused before anything is spent: the same mandate still works.
    let m = mandate(&s, &d, "tools.read").await;
    let a = post(&s, &m, r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{}}"#, &[]).await;
    assert_eq!(a.status, 400);
    assert_eq!(a.body["error"]["code"], -32602, "tools/call without a name");
    assert_eq!(a.body["id"], 3);
    let a = post(&s, &m, r#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#, &[]).await;
    assert_eq!(a.body["error"]["code"], -32600);
    // SEP-2243: a mirrored header that does not match the body.
    let body = call(4, "echo", json!({}));
    let a = post(&s, &m, &body, &[("mcp-protocol-version", "2026-07-28"), ("mcp-method", "tools/call"), ("mcp-name", "delete_repo")]).await;
    assert_eq!(a.status, 400);
    assert_eq!(a.body["error"]["code"], -32020);
    assert_eq!(a.body["id"], 4);
    let a = post(&s, &m, &body, &[("mcp-protocol-version", "2026-07-28")]).await;
    assert_eq!(a.body["error"]["code"], -32020, "required from 2026-07-28");
    // Over MCP_MAX_BODY_BYTES (64 KiB): 413 before the mandate is spent.
    let big = call(5, "echo", json!({"message": "x".repeat(70_000)}));
    let a = post(&s, &m, &big, &[]).await;
    assert_eq!(a.status, 413, "{}", a.text);
    assert_eq!(a.body["error"]["code"], -32600);
    assert_eq!(s.upstream.requests().len(), 0, "nothing malformed reached the upstream");
    assert_eq!(s.gateway_metric("caracal_gateway_denials_mcp_malformed_total").await, 6.0);

    let a = post(&s, &m, &call(6, "echo", json!({"message": "hi"})), &[("mcp-method", "tools/call"), ("mcp-name", "echo")]).await;
    assert_eq!(a.status, 200, "the mandate was never spent by the refusals: {}", a.text);
}

#[tokio::test]
async fn an_mcp_resource_refuses_a_post_it_cannot_read_and_an_http_resource_is_untouched() {
    let s = Stack::start().await;
    let d = mcp_zone(&s, json!({})).await;
    // Not recognisably MCP (no event-stream Accept, no Mcp-* header): the STS refuses, fail closed.
    let m = mandate(&s, &d, "tools.read").await;
    let bearer = format!("Bearer {m}");
    let body = call(1, "delete_repo", json!({}));
    let headers = [
        ("authorization", bearer.as_str()),
        ("x-caracal-resource", MCP_RESOURCE),
        ("content-type", "application/json"),
        ("accept", "application/json"),
    ];
    let a =
        s.raw_with_body("POST", "/mcp", &[&headers[..], &[("content-length", &body.len().to_string())]].concat(), body.as_bytes()).await;
    assert_eq!((a.status, a.body["error"].as_str()), (400, Some("mcp_body_required")), "{}", a.text);
    assert_eq!(s.upstream.requests().len(), 0);

    // An HTTP resource receives an MCP-looking JSON POST exactly as sent, with no MCP claims.
    s.admin_ok(
        "POST",
        &format!("/v1/zones/{}/resources", d.zone_id),
        &d.admin,
        Some(json!({"identifier": "https://json.e2e", "upstream_url": s.upstream.url(), "scopes": ["tools.read"], "operation_enforcement": "transport_uniform"})),
        201,
    )
    .await;
    let session = s.session(&d).await;
    let m = s.mandate_for(&d, &session, "https://json.e2e", "tools.read").await;
    let not_rpc = r#"{"prompt":"hello"}"#;
    let bearer = format!("Bearer {m}");
    let headers = [
        ("authorization", bearer.as_str()),
        ("x-caracal-resource", "https://json.e2e"),
        ("content-type", "application/json"),
        ("accept", "text/event-stream"),
        ("content-length", "18"),
    ];
    let a = s.raw_with_body("POST", "/v1/complete", &headers, not_rpc.as_bytes()).await;
    assert_eq!(a.status, 200, "{}", a.text);
    let seen = s.upstream.requests();
    assert_eq!(seen[0].body, not_rpc.as_bytes());
    assert!(claims(seen[0].header("authorization").unwrap().strip_prefix("Bearer ").unwrap()).get("mcp_calls").is_none());
}

#[tokio::test]
async fn declared_mcp_operations_and_the_step_up_challenge() {
    let s = Stack::start_with(StackOptions { gateway_env: vec![("MCP_DENIAL_STATUS".into(), "400".into())], ..Default::default() }).await;
    let d = mcp_zone(
        &s,
        json!({
            "operation_enforcement": "enforced",
            "operations": [{"method": "POST", "path": "/mcp", "scope": "tools.read"}],
            "mcp_operations": [
                {"mcp_method": "tools/call", "name": "read_*", "scope": "tools.read"},
                {"mcp_method": "tools/call", "name": "delete_*", "scope": "tools.admin"},
                {"mcp_method": "tools/list", "scope": "tools.read"}
            ]
        }),
    )
    .await;
    let a = post(&s, &mandate(&s, &d, "tools.read").await, &call(1, "read_file", json!({})), &[]).await;
    assert_eq!(a.status, 200, "{}", a.text);
    // A declared operation whose scope the mandate lacks: the MCP spec's step-up challenge.
    let a = post(&s, &mandate(&s, &d, "tools.read").await, &call(2, "delete_repo", json!({})), &[]).await;
    assert_eq!(a.status, 403, "{}", a.text);
    let challenge = a.headers.get("www-authenticate").unwrap().to_str().unwrap();
    assert!(challenge.starts_with("Bearer error=\"insufficient_scope\", scope=\"tools.admin\""), "{challenge}");
    assert!(challenge.ends_with(&format!("resource_metadata=\"{}/.well-known/oauth-protected-resource/mcp\"", s.gw_url)), "{challenge}");
    assert_eq!(a.body["id"], 2);
    // An undeclared operation: hidden, at MCP_DENIAL_STATUS.
    let a = post(&s, &mandate(&s, &d, "tools.read").await, &call(3, "write_file", json!({})), &[]).await;
    assert_eq!((a.status, a.body["error"]["message"].as_str()), (400, Some("Unknown tool: write_file")), "{}", a.text);
    assert_eq!(s.upstream.requests().len(), 1);
    assert_eq!(s.gateway_metric("caracal_gateway_denials_mcp_denied_total").await, 2.0);

    // The admin API checks declarations, every problem at once.
    let bad = s
        .admin(
            "POST",
            &format!("/v1/zones/{}/resources", d.zone_id),
            &d.admin,
            Some(json!({
                "identifier": "https://plain.e2e", "upstream_url": s.upstream.url(), "scopes": ["tools.read"],
                "protocol": "grpc",
                "mcp_operations": [{"mcp_method": "tools call", "scope": "tools.read"}, {"mcp_method": "tools/list", "scope": "tools.nope"}]
            })),
        )
        .await;
    assert_eq!(bad.status, 400);
    for needle in ["protocol must be http or mcp", "mcp_operations apply to protocol mcp only", "tools call", "tools.nope"] {
        assert!(bad.text.contains(needle), "{needle}: {}", bad.text);
    }
}

/// Real MCP software (`caracal_e2e::mcp`): an MCP resource in front of `upstream` (the zone's
/// policy is [`MCP_POLICY`]).
async fn add_real(s: &Stack, d: &Demo, identifier: &str, upstream: &caracal_e2e::mcp::McpUpstream) {
    let mut body = caracal_e2e::mcp::resource_body(identifier, &[upstream]);
    body["protocol"] = "mcp".into();
    body["operation_enforcement"] = "transport_uniform".into();
    caracal_e2e::mcp::add_resource(s, d, body).await;
}

#[tokio::test]
async fn listings_show_only_what_the_mandate_may_use_in_json_and_sse() {
    use caracal_e2e::mcp::{self, ClientScript, McpUpstream, Mode, PythonOptions, Step};
    if !mcp::available() {
        return;
    }
    let steps = || {
        vec![
            Step::ListTools,
            Step::ListPrompts,
            Step::ListResources,
            Step::call_tool("read_file", json!({"path": "/x"})),
            Step::call_tool("delete_repo", json!({"name": "prod"})),
        ]
    };
    let s = Stack::start().await;
    let d = s.demo(false).await;
    s.activate_policy(&d, MCP_POLICY).await;
    for (mode, json_response) in [(Mode::Legacy, false), (Mode::Legacy, true), (Mode::V2026, true)] {
        let upstream = McpUpstream::python_with(PythonOptions { json_response, ..Default::default() }).await;
        let identifier = format!("mcp://python.{}.{json_response}", if mode == Mode::Legacy { "legacy" } else { "modern" });
        add_real(&s, &d, &identifier, &upstream).await;
        let run = mcp::run_client(&ClientScript::new(&s, &d, &identifier, mode, steps())).await;
        let what = format!("{mode:?}, json {json_response}: {run:#?}\n{}\n{}", s.gateway.log_tail(15), s.control_plane.log_tail(15));
        assert_eq!(run.names(0), ["echo", "read_file", "get_sum"], "delete_repo is not listed: {what}");
        assert_eq!(run.names(1), ["greeting"], "{what}");
        assert_eq!(run.names(2), ["docs://readme"], "{what}");
        assert!(run.text(3).contains("/x"), "{what}");
        assert!(run.error(4)["message"].as_str().unwrap().contains("Unknown tool: delete_repo"), "{what}");
        assert!(upstream.calls().iter().all(|c| !c.contains("delete_repo")), "{:?}", upstream.calls());
    }
    // server-everything answers in SSE with its own priming events and ids.
    let everything = McpUpstream::everything().await;
    add_real(&s, &d, "mcp://everything", &everything).await;
    let run = mcp::run_client(&ClientScript::new(&s, &d, "mcp://everything", Mode::Auto, vec![Step::ListTools, Step::ListPrompts])).await;
    assert_eq!(run.names(0), ["echo", "get-sum"], "{run:#?}");
    assert!(run.names(1).is_empty(), "no prompt of server-everything is allowed: {run:#?}");
}

#[tokio::test]
async fn an_mcp_session_belongs_to_the_root_session_that_opened_it() {
    use caracal_e2e::mcp::{self, McpRaw, McpUpstream};
    if !mcp::available() {
        return;
    }
    let upstream = McpUpstream::python().await;
    let s = Stack::start().await;
    let d = s.demo(false).await;
    s.activate_policy(&d, MCP_POLICY).await;
    add_real(&s, &d, "mcp://sessions", &upstream).await;
    let alice = McpRaw::new(&s, &d, "mcp://sessions").await;
    let mallory = McpRaw::new(&s, &d, "mcp://sessions").await;
    let sid = alice.initialize().await.expect("the server assigns a session id");
    let echo = |id| (id, "tools/call", json!({"name": "echo", "arguments": {"message": "mine"}}));

    let (id, method, params) = echo(1);
    let a = alice.legacy_request(Some(&sid), id, method, params).await;
    assert_eq!(a.status, 200, "{a:#?}");
    assert_eq!(upstream.calls(), ["tools/call echo"]);

    // Another principal (another root session) presenting the id: the transport's unknown session.
    let (id, method, params) = echo(2);
    let a = mallory.legacy_request(Some(&sid), id, method, params).await;
    assert_eq!(a.status, 404, "{a:#?}");
    assert_eq!(a.messages[0]["error"]["message"], "Session not found");
    // An id the gateway never saw issued, and a GET stream on the stolen id, likewise.
    let (id, method, params) = echo(3);
    assert_eq!(alice.legacy_request(Some("f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0"), id, method, params).await.status, 404);
    assert_eq!(mallory.delete_session(&sid).await.status, 404, "nor can another principal end it");
    assert_eq!(upstream.calls(), ["tools/call echo"], "nothing of it reached the server");
    assert_eq!(s.gateway_metric("caracal_gateway_denials_mcp_session_unknown_total").await, 3.0);

    // The owner ends it; the binding goes with it.
    assert_eq!(alice.delete_session(&sid).await.status, 200);
    let (id, method, params) = echo(4);
    assert_eq!(alice.legacy_request(Some(&sid), id, method, params).await.status, 404);
}
