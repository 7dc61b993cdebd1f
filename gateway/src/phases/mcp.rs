//! MCP on the wire (issue 13 §1; `docs/mcp.md`): what a streamable-HTTP POST asks for, read from
//! its JSON-RPC body, never from headers alone.
//!
//! * The body is one JSON-RPC message (2025-06-18 and later) or, from clients of the 2025-03-26
//!   revision that some servers still accept, a batch (an array): every element is read, so a
//!   policy can decide each one. An empty batch, a non-object element, a wrong `jsonrpc`, a
//!   request without a string `method`, or an `id` that is neither a string nor a number is
//!   `-32600`; text that is not JSON is `-32700`. Over the configured size: 413, before anything
//!   is spent.
//! * `tools/call` and `prompts/get` name their target in `params.name`, `resources/read` (and
//!   `resources/subscribe` / `unsubscribe`) in `params.uri`; a name-bearing request without a
//!   string target is `-32602`.
//! * SEP-2243 headers (`Mcp-Method`, `Mcp-Name`; values may be `=?base64?…?=`): when present they
//!   must match the body; from protocol 2026-07-28 on they are required. Otherwise 400 with
//!   `-32020` (header mismatch). The body stays the authority: a header is only ever compared.

pub mod answer;
pub mod intake;
pub mod known;
pub mod lists;
pub mod sessions;
pub mod visibility;

use base64::Engine;
use caracal_shared::ErrorCode;
use caracal_shared::mcp::{Kind, Post};
use serde_json::Value;

use crate::Deps;
use crate::deny::Denial;
use crate::phases::exchange::ExchangeGrant;
use intake::Intake;

/// JSON-RPC and MCP error codes the gateway answers with.
pub mod code {
    pub const PARSE_ERROR: i64 = -32700;
    pub const INVALID_REQUEST: i64 = -32600;
    pub const INVALID_PARAMS: i64 = -32602;
    /// SEP-2243 (2026-07-28): a mirrored header does not match the body, or is missing.
    pub const HEADER_MISMATCH: i64 = -32020;
}

/// The largest body read before the exchange: Pingora forwards such a body from its retry
/// buffer, which holds 64 KiB (`MCP_MAX_BODY_BYTES` is at most this).
pub const MAX_READABLE_BODY: usize = 64 * 1024;

/// The first protocol revision whose clients must send `Mcp-Method` / `Mcp-Name`.
pub const HEADERS_REQUIRED_FROM: &str = "2026-07-28";

/// What a name-bearing method names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A tool or prompt name (`params.name`).
    Name(String),
    /// A resource URI (`params.uri`).
    Uri(String),
}

impl Target {
    fn text(&self) -> &str {
        match self {
            Self::Name(s) | Self::Uri(s) => s,
        }
    }
}

/// One JSON-RPC message of the body.
#[derive(Clone, Debug, PartialEq)]
pub enum Message {
    /// A request (has an `id`): what policy decides.
    Request { id: Value, method: String, target: Option<Target>, args_sha256: Option<String> },
    /// A notification (no `id`): passes under its own rules.
    Notification { method: String },
    /// The client's answer to a server request (`result` or `error`, no `method`).
    Response { id: Value },
}

impl Message {
    /// The method, for requests and notifications.
    pub fn method(&self) -> Option<&str> {
        match self {
            Self::Request { method, .. } | Self::Notification { method } => Some(method),
            Self::Response { .. } => None,
        }
    }
}

/// A POST body, read.
#[derive(Clone, Debug, PartialEq)]
pub struct Body {
    pub messages: Vec<Message>,
    /// Whether the body was an array.
    pub batch: bool,
}

/// Why a body is refused: the HTTP status and the JSON-RPC error to answer with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Over the configured size.
    TooLarge,
    /// Not read at all (no `Content-Length`, or over the limit): an HTTP status, and a message.
    Status { status: u16, message: String },
    /// A JSON-RPC error: HTTP status, code, message, and the request's `id` when known.
    Rpc { status: u16, code: i64, message: String, id: Option<Value> },
}

impl Refusal {
    fn rpc(code: i64, message: impl Into<String>, id: Option<Value>) -> Self {
        Self::Rpc { status: 400, code, message: message.into(), id }
    }

    /// The HTTP status to answer with.
    pub fn status(&self) -> u16 {
        match self {
            Self::TooLarge => 413,
            Self::Status { status, .. } | Self::Rpc { status, .. } => *status,
        }
    }

    /// The JSON-RPC error body (`id` null when unknown; a body that was not read is an invalid request).
    pub fn body(&self) -> Value {
        let (code, message, id) = match self {
            Self::TooLarge => (code::INVALID_REQUEST, "the request body is too large", None),
            Self::Status { message, .. } => (code::INVALID_REQUEST, message.as_str(), None),
            Self::Rpc { code, message, id, .. } => (*code, message.as_str(), id.as_ref()),
        };
        serde_json::json!({"jsonrpc": "2.0", "id": id.cloned().unwrap_or(Value::Null), "error": {"code": code, "message": message}})
    }
}

/// What a name-bearing method's target is.
#[derive(Clone, Copy)]
enum TargetKind {
    Name,
    Uri,
}

impl TargetKind {
    /// The kind for a name-bearing method.
    fn of(method: &str) -> Option<Self> {
        match method {
            "tools/call" | "prompts/get" => Some(Self::Name),
            "resources/read" | "resources/subscribe" | "resources/unsubscribe" => Some(Self::Uri),
            _ => None,
        }
    }

    /// The params key naming it.
    fn key(self) -> &'static str {
        match self {
            Self::Name => "name",
            Self::Uri => "uri",
        }
    }

    fn target(self, text: String) -> Target {
        match self {
            Self::Name => Target::Name(text),
            Self::Uri => Target::Uri(text),
        }
    }
}

/// Before the signature, Redis and the STS: a POST to a resource known to be MCP that was not read
/// cleanly (malformed, mismatching headers, no length, too large) is refused, nothing spent.
pub fn refuse_known(deps: &Deps, intake: Option<&Intake>, zone_id: &str, resource: &str) -> Result<(), Denial> {
    match intake.and_then(|i| i.refusal(deps.cfg.mcp_max_body_bytes)) {
        Some(refusal) if deps.known_mcp.contains(zone_id, resource) => Err(Denial::McpMalformed(refusal)),
        _ => Ok(()),
    }
}

/// After the exchange: learns whether the resource is MCP, and turns the STS's refusal of an MCP
/// POST into the answer the client's protocol expects — the kept JSON-RPC refusal of a body the
/// STS required, or the denial of the operation (`answer`). Other outcomes pass unchanged.
pub fn after_exchange(
    deps: &Deps,
    intake: Option<&Intake>,
    zone_id: &str,
    resource: &str,
    outcome: Result<ExchangeGrant, Denial>,
) -> Result<ExchangeGrant, Denial> {
    match outcome {
        Ok(grant) => {
            if grant.directive.mcp || intake.is_some() {
                deps.known_mcp.learn(zone_id, resource, grant.directive.mcp);
            }
            Ok(grant)
        }
        Err(Denial::StsRefused { ref code, .. }) if code == ErrorCode::McpBodyRequired.as_str() => {
            deps.known_mcp.learn(zone_id, resource, true);
            match intake.and_then(|i| i.refusal(deps.cfg.mcp_max_body_bytes)) {
                Some(refusal) => Err(Denial::McpMalformed(refusal)),
                None => outcome,
            }
        }
        Err(Denial::StsRefused { status, ref code, ref description, ref scope }) => match intake {
            Some(Intake::Read { body, .. }) => {
                match answer::denial(body, status, code, description, scope.as_deref(), deps.cfg.mcp_denial_status) {
                    Some(d) => Err(Denial::McpDenied(Box::new(d))),
                    None => outcome,
                }
            }
            _ => outcome,
        },
        Err(_) => outcome,
    }
}

/// After the grant, for an MCP resource: who may use its sessions, and a presented session id
/// checked against that (`sessions`).
pub async fn session_owner(
    deps: &Deps,
    grant: &ExchangeGrant,
    headers: &http::HeaderMap,
    zone_id: &str,
    resource: &str,
    root_sid: &str,
    request_id: &str,
) -> Result<Option<sessions::Owner>, Denial> {
    if !grant.directive.mcp {
        return Ok(None);
    }
    let owner = sessions::Owner::new(zone_id, resource, root_sid);
    match sessions::session_id(headers) {
        Err(sessions::MalformedSessionId) => return Err(Denial::McpSessionUnknown),
        Ok(Some(id)) => sessions::check(deps, &owner, id, request_id).await?,
        Ok(None) => {}
    }
    Ok(Some(owner))
}

/// `response_filter`, for an MCP resource: binds a session id the server assigned, and ends the
/// binding of a session the server deleted.
pub async fn at_response(
    deps: &Deps,
    method: &http::Method,
    req: &http::HeaderMap,
    resp: &pingora::http::ResponseHeader,
    ctx: &crate::ctx::RequestCtx,
) -> pingora::Result<()> {
    let Some(owner) = ctx.forward.as_ref().and_then(|f| f.mcp_owner.as_ref()) else { return Ok(()) };
    if !resp.status.is_success() {
        return Ok(());
    }
    let presented = sessions::session_id(req).ok().flatten();
    if *method == http::Method::DELETE {
        if let Some(id) = presented {
            sessions::end(deps, owner, id, &ctx.request_id).await;
        }
        return Ok(());
    }
    match sessions::session_id(&resp.headers) {
        Ok(Some(assigned)) if Some(assigned) != presented => sessions::bind(deps, owner, assigned, &ctx.request_id).await,
        Ok(_) => Ok(()),
        Err(sessions::MalformedSessionId) => {
            pingora::Error::e_explain(pingora::ErrorType::HTTPStatus(502), "the upstream assigned a malformed Mcp-Session-Id")
        }
    }
}

/// Reads one message.
fn message(v: &Value) -> Result<Message, Refusal> {
    let Some(obj) = v.as_object() else { return Err(Refusal::rpc(code::INVALID_REQUEST, "a JSON-RPC message must be an object", None)) };
    let id = obj.get("id").cloned();
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(Refusal::rpc(code::INVALID_REQUEST, "jsonrpc must be \"2.0\"", id));
    }
    if let Some(id) = &id
        && !(id.is_string() || id.is_number())
    {
        return Err(Refusal::rpc(code::INVALID_REQUEST, "id must be a string or a number", None));
    }
    let Some(method) = obj.get("method") else {
        return match (id, obj.contains_key("result") || obj.contains_key("error")) {
            (Some(id), true) => Ok(Message::Response { id }),
            (id, _) => Err(Refusal::rpc(code::INVALID_REQUEST, "a message needs a method, or an id and a result or error", id)),
        };
    };
    let Some(method) = method.as_str().map(str::to_owned) else {
        return Err(Refusal::rpc(code::INVALID_REQUEST, "method must be a string", id));
    };
    let Some(id) = id else { return Ok(Message::Notification { method }) };
    let target = match TargetKind::of(&method) {
        Some(kind) => {
            let key = kind.key();
            let t = obj.get("params").and_then(|p| p.get(key)).and_then(Value::as_str);
            let Some(t) = t else {
                return Err(Refusal::rpc(code::INVALID_PARAMS, format!("{method} needs a string params.{key}"), Some(id)));
            };
            Some(kind.target(t.to_owned()))
        }
        None => None,
    };
    let args_sha256 = obj.get("params").and_then(|p| p.get("arguments")).map(arguments_hash);
    Ok(Message::Request { id, method, target, args_sha256 })
}

/// SHA-256 of the RFC 8785 (JCS) form of `arguments`, base64url: what a resource server recomputes
/// from the body it received to check the mandate's `mcp_calls` (`docs/mcp.md` §4).
fn arguments_hash(arguments: &Value) -> String {
    let canonical = serde_json_canonicalizer::to_vec(arguments).unwrap_or_default();
    caracal_shared::b64::encode(caracal_shared::sig::sha256(&canonical))
}

impl Body {
    /// The ids of the body's requests (what a refusal answers, one error each).
    pub fn request_ids(&self) -> Vec<Value> {
        self.messages.iter().filter_map(|m| if let Message::Request { id, .. } = m { Some(id.clone()) } else { None }).collect()
    }

    /// The facts the exchange carries: each message, and the transport headers around them.
    pub fn post(&self, headers: &http::HeaderMap) -> Post {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned).filter(|v| !v.is_empty());
        let messages = self
            .messages
            .iter()
            .map(|m| {
                let (kind, method, target, args_sha256) = match m {
                    Message::Request { method, target, args_sha256, .. } => {
                        (Kind::Request, Some(method.clone()), target.as_ref(), args_sha256.clone())
                    }
                    Message::Notification { method } => (Kind::Notification, Some(method.clone()), None, None),
                    Message::Response { .. } => (Kind::Response, None, None, None),
                };
                let (name, uri) = match target {
                    Some(Target::Name(n)) => (Some(n.clone()), None),
                    Some(Target::Uri(u)) => (None, Some(u.clone())),
                    None => (None, None),
                };
                caracal_shared::mcp::Message { kind, method, name, uri, args_sha256 }
            })
            .collect();
        Post { protocol_version: header("mcp-protocol-version"), session_id: header("mcp-session-id"), batch: self.batch, messages }
    }
}

/// Reads a POST body of at most `limit` bytes.
pub fn read(body: &[u8], limit: usize) -> Result<Body, Refusal> {
    if body.len() > limit {
        return Err(Refusal::TooLarge);
    }
    let v: Value = serde_json::from_slice(body).map_err(|_| Refusal::rpc(code::PARSE_ERROR, "the body is not JSON", None))?;
    match v {
        Value::Array(items) if items.is_empty() => Err(Refusal::rpc(code::INVALID_REQUEST, "an empty batch", None)),
        Value::Array(items) => Ok(Body { messages: items.iter().map(message).collect::<Result<_, _>>()?, batch: true }),
        other => Ok(Body { messages: vec![message(&other)?], batch: false }),
    }
}

/// A SEP-2243 header value, decoded: plain visible ASCII as is, `=?base64?<UTF-8 as base64>?=`
/// decoded; `None` when it is neither.
pub fn header_value(raw: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(raw).ok()?;
    if let Some(b64) = s.strip_prefix("=?base64?").and_then(|r| r.strip_suffix("?=")) {
        let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
        return String::from_utf8(bytes).ok();
    }
    s.bytes().all(|b| (0x20..0x7f).contains(&b)).then(|| s.to_owned())
}

/// Checks `Mcp-Method` / `Mcp-Name` against the body (see the module docs).
pub fn check_headers(body: &Body, headers: &http::HeaderMap) -> Result<(), Refusal> {
    let version = headers.get("mcp-protocol-version").and_then(|v| v.to_str().ok());
    let required = version.is_some_and(|v| v >= HEADERS_REQUIRED_FROM);
    let sent_method = headers.get("mcp-method").map(|v| header_value(v.as_bytes()));
    let sent_name = headers.get("mcp-name").map(|v| header_value(v.as_bytes()));
    let mismatch =
        |what: &str, id: Option<&Value>| Err(Refusal::rpc(code::HEADER_MISMATCH, format!("Header mismatch: {what}"), id.cloned()));
    for m in &body.messages {
        let (id, method, target) = match m {
            Message::Request { id, method, target, .. } => (Some(id), method.as_str(), target.as_ref()),
            Message::Notification { method } => (None, method.as_str(), None),
            Message::Response { .. } => continue,
        };
        match &sent_method {
            Some(Some(h)) if h == method => {}
            Some(_) => return mismatch("Mcp-Method does not match the body's method", id),
            None if required && id.is_some() => return mismatch("Mcp-Method is required", id),
            None => {}
        }
        match (target, &sent_name) {
            (Some(t), Some(Some(h))) if h == t.text() => {}
            (Some(_), Some(_)) => return mismatch("Mcp-Name does not match the body's name or uri", id),
            (Some(_), None) if required => return mismatch("Mcp-Name is required", id),
            (None, Some(_)) => return mismatch("Mcp-Name is only for tools/call, prompts/get and resources/read", id),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rpc_code(r: Result<Body, Refusal>) -> i64 {
        match r {
            Err(Refusal::Rpc { code, .. }) => code,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_request_names_its_method_and_target() {
        let b =
            read(br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"delete_repo","arguments":{"r":"x"}}}"#, 1024).unwrap();
        assert!(!b.batch);
        assert_eq!(
            b.messages,
            [Message::Request {
                id: 7.into(),
                method: "tools/call".into(),
                target: Some(Target::Name("delete_repo".into())),
                args_sha256: Some(arguments_hash(&serde_json::json!({"r": "x"}))),
            }]
        );
        let r = read(br#"{"jsonrpc":"2.0","id":"a","method":"resources/read","params":{"uri":"file:///etc/passwd"}}"#, 1024).unwrap();
        assert_eq!(
            r.messages[0],
            Message::Request {
                id: "a".into(),
                method: "resources/read".into(),
                target: Some(Target::Uri("file:///etc/passwd".into())),
                args_sha256: None
            }
        );
        let l = read(br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#, 1024).unwrap();
        assert_eq!(l.messages[0], Message::Request { id: 1.into(), method: "tools/list".into(), target: None, args_sha256: None });
    }

    #[test]
    fn arguments_are_hashed_in_canonical_form() {
        let hash = |raw: &str| match &read(raw.as_bytes(), 1024).unwrap().messages[0] {
            Message::Request { args_sha256, .. } => args_sha256.clone().unwrap(),
            other => panic!("{other:?}"),
        };
        let a = hash(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":{"b":1,"a":"\u00e9"}}}"#);
        let b = hash(
            "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"tools/call\",\"params\":{\"arguments\":{ \"a\":\"\u{e9}\", \"b\":1},\"name\":\"t\"}}",
        );
        assert_eq!(a, b, "key order, escapes and white space do not change the hash");
        // The RFC 8785 form of {"b":1,"a":"é"} is {"a":"é","b":1}.
        assert_eq!(a, caracal_shared::b64::encode(caracal_shared::sig::sha256("{\"a\":\"\u{e9}\",\"b\":1}".as_bytes())));
        assert_ne!(a, hash(r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"t","arguments":{"a":"e","b":1}}}"#));
    }

    #[test]
    fn the_exchange_carries_every_message_and_the_transport_headers() {
        let b = read(
            br#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{}}},{"jsonrpc":"2.0","method":"notifications/cancelled"},{"jsonrpc":"2.0","id":"s1","result":{}},{"jsonrpc":"2.0","id":2,"method":"resources/read","params":{"uri":"docs://a"}}]"#,
            1024,
        )
        .unwrap();
        let post = b.post(&headers(&[("mcp-protocol-version", "2025-11-25"), ("mcp-session-id", "abc")]));
        post.validate().unwrap();
        assert_eq!(post.protocol_version.as_deref(), Some("2025-11-25"));
        assert_eq!(post.session_id.as_deref(), Some("abc"));
        let kinds: Vec<_> = post.messages.iter().map(|m| m.kind).collect();
        assert_eq!(kinds, [Kind::Request, Kind::Notification, Kind::Response, Kind::Request]);
        assert_eq!(post.messages[0].name.as_deref(), Some("echo"));
        assert!(post.messages[0].args_sha256.is_some());
        assert_eq!(post.messages[3].uri.as_deref(), Some("docs://a"));
        assert_eq!(b.request_ids(), [serde_json::json!(1), serde_json::json!(2)]);
    }

    #[test]
    fn notifications_responses_and_batches_are_told_apart() {
        let b = read(
            br#"[{"jsonrpc":"2.0","method":"notifications/initialized"},{"jsonrpc":"2.0","id":3,"result":{}},{"jsonrpc":"2.0","id":4,"method":"prompts/get","params":{"name":"p"}}]"#,
            1024,
        )
        .unwrap();
        assert!(b.batch);
        assert_eq!(b.messages[0], Message::Notification { method: "notifications/initialized".into() });
        assert_eq!(b.messages[1], Message::Response { id: 3.into() });
        assert_eq!(b.messages[2].method(), Some("prompts/get"));
    }

    #[test]
    fn malformed_bodies_get_json_rpc_errors_and_oversized_ones_413() {
        assert_eq!(read(&[b'x'; 2000], 1024), Err(Refusal::TooLarge));
        assert_eq!(rpc_code(read(b"{not json", 1024)), code::PARSE_ERROR);
        for bad in [
            &br#"[]"#[..],
            br#"[1]"#,
            br#"{"jsonrpc":"1.0","id":1,"method":"x"}"#,
            br#"{"jsonrpc":"2.0","id":{"a":1},"method":"x"}"#,
            br#"{"jsonrpc":"2.0","id":1,"method":5}"#,
            br#"{"jsonrpc":"2.0","id":1}"#,
            br#""tools/call""#,
        ] {
            assert_eq!(rpc_code(read(bad, 1024)), code::INVALID_REQUEST, "{}", String::from_utf8_lossy(bad));
        }
        let missing = read(br#"{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"arguments":{}}}"#, 1024);
        let Err(r) = missing else { panic!() };
        assert_eq!(r.body()["id"], 9, "the request's id is echoed");
        assert_eq!(r.body()["error"]["code"], code::INVALID_PARAMS);
        let batch_error =
            read(br#"[{"jsonrpc":"2.0","id":1,"method":"tools/list"},{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{}}]"#, 1024);
        assert_eq!(rpc_code(batch_error), code::INVALID_PARAMS, "one bad element refuses the batch");
    }

    #[test]
    fn sep_2243_values_are_decoded() {
        assert_eq!(header_value(b"tools/call").as_deref(), Some("tools/call"));
        assert_eq!(header_value(b"=?base64?w6lzdMOp?=").as_deref(), Some("\u{e9}st\u{e9}"));
        assert_eq!(header_value(b"=?base64?***?="), None);
        assert_eq!(header_value("caf\u{e9}".as_bytes()), None, "raw non-ASCII is not a valid value");
    }

    fn headers(pairs: &[(&'static str, &str)]) -> http::HeaderMap {
        pairs.iter().map(|(k, v)| (http::HeaderName::from_static(k), http::HeaderValue::from_str(v).unwrap())).collect()
    }

    #[test]
    fn mirrored_headers_must_match_the_body_and_are_required_from_2026_07_28() {
        let call = read(br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}"#, 1024).unwrap();
        let code_of = |h: &[(&'static str, &str)]| match check_headers(&call, &headers(h)) {
            Ok(()) => 0,
            Err(Refusal::Rpc { code, status, .. }) => {
                assert_eq!(status, 400);
                code
            }
            Err(other) => panic!("{other:?}"),
        };
        assert_eq!(code_of(&[]), 0, "older clients send no mirrored headers");
        assert_eq!(code_of(&[("mcp-method", "tools/call"), ("mcp-name", "echo")]), 0);
        assert_eq!(code_of(&[("mcp-method", "tools/call"), ("mcp-name", "=?base64?ZWNobw==?=")]), 0, "base64 form");
        assert_eq!(code_of(&[("mcp-method", "tools/list"), ("mcp-name", "echo")]), code::HEADER_MISMATCH);
        assert_eq!(code_of(&[("mcp-method", "tools/call"), ("mcp-name", "delete_repo")]), code::HEADER_MISMATCH);
        assert_eq!(code_of(&[("mcp-method", "Tools/Call"), ("mcp-name", "echo")]), code::HEADER_MISMATCH, "values are case-sensitive");
        assert_eq!(code_of(&[("mcp-protocol-version", "2026-07-28")]), code::HEADER_MISMATCH, "required from 2026-07-28");
        assert_eq!(code_of(&[("mcp-protocol-version", "2026-07-28"), ("mcp-method", "tools/call")]), code::HEADER_MISMATCH);
        assert_eq!(code_of(&[("mcp-protocol-version", "2025-11-25")]), 0);
        let list = read(br#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#, 1024).unwrap();
        assert!(
            check_headers(&list, &headers(&[("mcp-method", "tools/list"), ("mcp-name", "x")])).is_err(),
            "a name for a nameless method"
        );
    }
}
