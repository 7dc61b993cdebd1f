//! Answering a refused MCP operation in the protocol the client speaks (`docs/mcp.md` §2).
//!
//! The MCP authorization spec has one denial of its own: 403 with `WWW-Authenticate: Bearer
//! error="insufficient_scope", scope=…` when a scope would allow the call (clients step up and
//! retry). Every other refusal — the policy, an undeclared operation — is a JSON-RPC error carrying
//! each request's `id`, worded as the server's own answer to something that does not exist
//! (`Unknown tool: x`), so a denied tool's existence is not revealed, at `MCP_DENIAL_STATUS`.

use bytes::Bytes;
use serde_json::{Value, json};

use super::{Body, Message, Target, code};

/// A refused MCP operation, ready to answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct McpDenial {
    /// HTTP status.
    pub status: u16,
    /// `WWW-Authenticate` for a missing scope.
    pub challenge: Option<String>,
    /// The JSON-RPC body.
    pub body: Bytes,
    /// The STS's code and description (logs, metrics, audit; never sent as such).
    pub code: String,
    pub description: String,
}

/// The STS's refusal of an MCP POST, as the client should see it; `None` when the refusal is not
/// about the operation (an invalid token, a rate limit: answered as before).
pub fn denial(body: &Body, status: u16, code: &str, description: &str, scope: Option<&str>, denial_status: u16) -> Option<McpDenial> {
    let (status, challenge, value) = match (status, code, scope) {
        (403, "scope_insufficient", Some(scope)) if plain(scope) => {
            let needs = |_: &Message| (code::INVALID_PARAMS, format!("Insufficient scope: this operation needs {scope}"));
            (403, Some(format!("Bearer error=\"insufficient_scope\", scope=\"{scope}\"")), errors(body, &needs))
        }
        // The STS does not say which element of a refused batch it refused: every request gets
        // the same answer, naming none.
        (403, "access_denied" | "operation_not_permitted" | "scope_insufficient", _) if body.batch => {
            (denial_status, None, errors(body, &|_| (code::INVALID_REQUEST, "Batch refused: a request in it is not permitted".into())))
        }
        (403, "access_denied" | "operation_not_permitted" | "scope_insufficient", _) => (denial_status, None, errors(body, &hidden)),
        _ => return None,
    };
    Some(McpDenial { status, challenge, body: Bytes::from(value.to_string()), code: code.to_owned(), description: description.to_owned() })
}

/// What a server answers for something it does not have.
fn hidden(m: &Message) -> (i64, String) {
    match m {
        Message::Request { method, target: Some(Target::Name(n)), .. } if method == "prompts/get" => {
            (code::INVALID_PARAMS, format!("Unknown prompt: {n}"))
        }
        Message::Request { target: Some(Target::Name(n)), .. } => (code::INVALID_PARAMS, format!("Unknown tool: {n}")),
        Message::Request { target: Some(Target::Uri(u)), .. } => (code::INVALID_PARAMS, format!("Resource not found: {u}")),
        other => (METHOD_NOT_FOUND, format!("Method not found: {}", other.method().unwrap_or("response"))),
    }
}

/// JSON-RPC "method not found".
const METHOD_NOT_FOUND: i64 = -32601;

/// One error per request (an array for a batch); a POST of notifications or responses alone
/// gets one error without an `id`.
fn errors(body: &Body, error: &dyn Fn(&Message) -> (i64, String)) -> Value {
    let one = |m: &Message, id: Value| {
        let (code, message) = error(m);
        json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
    };
    let answers: Vec<Value> =
        body.messages.iter().filter_map(|m| if let Message::Request { id, .. } = m { Some(one(m, id.clone())) } else { None }).collect();
    match (body.batch, answers.len()) {
        (_, 0) => one(&body.messages[0], Value::Null),
        (false, _) => answers.into_iter().next().unwrap_or_default(),
        (true, _) => Value::Array(answers),
    }
}

/// A scope fits in a quoted challenge parameter without escaping.
fn plain(scope: &str) -> bool {
    !scope.is_empty() && scope.bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
}

#[cfg(test)]
mod tests {
    use super::super::read;
    use super::*;

    fn parsed(raw: &str) -> Body {
        read(raw.as_bytes(), 4096).unwrap()
    }

    fn json_of(d: &McpDenial) -> Value {
        serde_json::from_slice(&d.body).unwrap()
    }

    #[test]
    fn a_policy_denial_looks_like_an_unknown_tool_with_the_requests_id() {
        let call = parsed(r#"{"jsonrpc":"2.0","id":42,"method":"tools/call","params":{"name":"delete_repo"}}"#);
        let d = denial(&call, 403, "access_denied", "policy denied", None, 200).unwrap();
        assert_eq!(d.status, 200);
        assert_eq!(d.challenge, None);
        let v = json_of(&d);
        assert_eq!(v["id"], 42);
        assert_eq!(v["error"]["code"], -32602);
        assert_eq!(v["error"]["message"], "Unknown tool: delete_repo");
        let prompt = parsed(r#"{"jsonrpc":"2.0","id":"p","method":"prompts/get","params":{"name":"secret"}}"#);
        assert_eq!(
            json_of(&denial(&prompt, 403, "operation_not_permitted", "x", None, 400).unwrap())["error"]["message"],
            "Unknown prompt: secret"
        );
        let read_ = parsed(r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"docs://secret"}}"#);
        assert_eq!(
            json_of(&denial(&read_, 403, "access_denied", "x", None, 200).unwrap())["error"]["message"],
            "Resource not found: docs://secret"
        );
        let list = parsed(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#);
        assert_eq!(json_of(&denial(&list, 403, "access_denied", "x", None, 200).unwrap())["error"]["code"], -32601);
    }

    #[test]
    fn a_missing_scope_is_the_specs_step_up_challenge() {
        let call = parsed(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_repo"}}"#);
        let d = denial(&call, 403, "scope_insufficient", "needs admin", Some("admin"), 200).unwrap();
        assert_eq!(d.status, 403);
        assert_eq!(d.challenge.as_deref(), Some("Bearer error=\"insufficient_scope\", scope=\"admin\""));
        assert_eq!(json_of(&d)["id"], 1);
        let odd = denial(&call, 403, "scope_insufficient", "x", Some("a\"b"), 200).unwrap();
        assert_eq!((odd.status, odd.challenge), (200, None), "a scope that cannot be quoted is never put in a header");
    }

    #[test]
    fn a_batch_gets_one_error_per_request_and_other_refusals_are_not_mcp() {
        let batch = parsed(
            r#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"}},{"jsonrpc":"2.0","method":"notifications/x"},{"jsonrpc":"2.0","id":2,"method":"tools/list"}]"#,
        );
        let v = json_of(&denial(&batch, 403, "access_denied", "x", None, 200).unwrap());
        let ids: Vec<_> = v.as_array().unwrap().iter().map(|e| e["id"].clone()).collect();
        assert_eq!(ids, [json!(1), json!(2)]);
        assert_eq!(v[0]["error"]["message"], "Batch refused: a request in it is not permitted", "no element is named");
        let note = parsed(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
        assert_eq!(json_of(&denial(&note, 403, "access_denied", "x", None, 200).unwrap())["id"], Value::Null);
        assert!(denial(&batch, 401, "invalid_token", "x", None, 200).is_none());
        assert!(denial(&batch, 429, "provider_rate_limited", "x", None, 200).is_none());
    }
}
