//! The MCP facts of one streamable-HTTP POST as the gateway read them from its JSON-RPC body
//! (`docs/mcp.md`): sent to the STS in the signed exchange (form field `mcp`, JSON), put into the
//! policy input, and bound into the resource mandate (`mcp_calls`) so the upstream credential
//! authorizes exactly these calls.

use serde::{Deserialize, Serialize};

/// Most messages one POST may carry (the TS SDK's batch limit).
pub const MAX_MESSAGES: usize = 100;
/// Longest method, name or URI carried.
pub const MAX_TEXT: usize = 2048;
/// The protocol revision from which `Mcp-Session-Id` no longer exists.
pub const SESSIONLESS_FROM: &str = "2026-07-28";

/// What a JSON-RPC message is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Has an `id` and a `method`: asks for something.
    Request,
    /// Has a `method` and no `id`.
    Notification,
    /// The client's answer to a server request (`result` or `error`).
    Response,
}

/// One message of the POST.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub kind: Kind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// `params.name` of `tools/call` and `prompts/get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `params.uri` of `resources/read`, `resources/subscribe` and `resources/unsubscribe`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// SHA-256 of the JSON Canonicalization Scheme (RFC 8785) form of `params.arguments`,
    /// base64url without padding; absent when the message has no arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args_sha256: Option<String>,
}

/// One POST: its messages and the transport facts around them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Post {
    /// `MCP-Protocol-Version` (absent on `initialize` and from clients of 2025-03-26).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol_version: Option<String>,
    /// `Mcp-Session-Id` (revisions before 2026-07-28).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// Whether the body was a batch (an array).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub batch: bool,
    pub messages: Vec<Message>,
}

impl Post {
    /// Checks the shape a signed exchange must have; the reason otherwise.
    pub fn validate(&self) -> Result<(), String> {
        if self.messages.is_empty() || self.messages.len() > MAX_MESSAGES {
            return Err(format!("mcp carries 1..{MAX_MESSAGES} messages"));
        }
        if !self.batch && self.messages.len() != 1 {
            return Err("mcp: several messages outside a batch".into());
        }
        let texts = [&self.protocol_version, &self.session_id];
        let long = |t: &Option<String>| t.as_ref().is_some_and(|s| s.is_empty() || s.len() > MAX_TEXT);
        if texts.into_iter().any(long) {
            return Err("mcp: protocol_version and session_id are 1..2048 characters".into());
        }
        for m in &self.messages {
            if [&m.method, &m.name, &m.uri, &m.args_sha256].into_iter().any(long) {
                return Err(format!("mcp: method, name, uri and args_sha256 are 1..{MAX_TEXT} characters"));
            }
            let targets = usize::from(m.name.is_some()) + usize::from(m.uri.is_some());
            let shape = match m.kind {
                Kind::Request => m.method.is_some() && targets <= 1,
                Kind::Notification => m.method.is_some() && targets == 0 && m.args_sha256.is_none(),
                Kind::Response => m.method.is_none() && targets == 0 && m.args_sha256.is_none(),
            };
            if !shape {
                return Err(format!("mcp: a {:?} message of the wrong shape", m.kind));
            }
        }
        Ok(())
    }

    /// The calls a resource mandate for this POST is bound to: its requests and notifications,
    /// in order (a client's response to a server request carries no authority of its own).
    pub fn calls(&self) -> Vec<Call> {
        self.messages
            .iter()
            .filter_map(|m| {
                Some(Call { method: m.method.clone()?, name: m.name.clone(), uri: m.uri.clone(), args_sha256: m.args_sha256.clone() })
            })
            .collect()
    }
}

/// One call a resource mandate authorizes (claim `mcp_calls`, documented for resource servers in
/// `docs/mcp.md` §4): the upstream may check that the JSON-RPC body it received is exactly these.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Call {
    pub method: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args_sha256: Option<String>,
}

/// Most names one listing decision covers.
pub const MAX_LISTED: usize = 1000;

/// What a listing lists (`docs/mcp.md` §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ListKind {
    Tools,
    Prompts,
    Resources,
    ResourceTemplates,
}

impl ListKind {
    /// The kind a list method asks for.
    pub fn of(method: &str) -> Option<Self> {
        match method {
            "tools/list" => Some(Self::Tools),
            "prompts/list" => Some(Self::Prompts),
            "resources/list" => Some(Self::Resources),
            "resources/templates/list" => Some(Self::ResourceTemplates),
            _ => None,
        }
    }

    /// The list method.
    pub fn list_method(self) -> &'static str {
        match self {
            Self::Tools => "tools/list",
            Self::Prompts => "prompts/list",
            Self::Resources => "resources/list",
            Self::ResourceTemplates => "resources/templates/list",
        }
    }

    /// The method that uses a listed item: what the policy decides for it.
    pub fn call_method(self) -> &'static str {
        match self {
            Self::Tools => "tools/call",
            Self::Prompts => "prompts/get",
            Self::Resources | Self::ResourceTemplates => "resources/read",
        }
    }

    /// The key of the result's array, and the key naming each item.
    pub fn keys(self) -> (&'static str, &'static str) {
        match self {
            Self::Tools => ("tools", "name"),
            Self::Prompts => ("prompts", "name"),
            Self::Resources => ("resources", "uri"),
            Self::ResourceTemplates => ("resourceTemplates", "uriTemplate"),
        }
    }

    /// Whether items are named by URI (resources) rather than by name.
    pub fn by_uri(self) -> bool {
        matches!(self, Self::Resources | Self::ResourceTemplates)
    }
}

/// The gateway's question about a listing (form field `mcp_list` of `POST /oauth/2/mcp/visible`):
/// which of these names may the resource mandate it was issued for use?
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listing {
    pub kind: ListKind,
    pub names: Vec<String>,
}

/// The STS's answer: the names that stay visible.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Visible {
    pub visible: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(method: &str, name: Option<&str>) -> Message {
        Message { kind: Kind::Request, method: Some(method.into()), name: name.map(Into::into), uri: None, args_sha256: None }
    }

    #[test]
    fn shapes() {
        let one = Post { protocol_version: None, session_id: None, batch: false, messages: vec![call("tools/call", Some("echo"))] };
        assert!(one.validate().is_ok());
        assert_eq!(one.calls()[0].name.as_deref(), Some("echo"));
        let two = Post { messages: vec![call("ping", None), call("tools/list", None)], ..one.clone() };
        assert!(two.validate().unwrap_err().contains("outside a batch"));
        assert!(Post { batch: true, ..two }.validate().is_ok());
        let response = Message { kind: Kind::Response, method: None, name: None, uri: None, args_sha256: None };
        let answered = Post { messages: vec![response], ..one.clone() };
        assert!(answered.validate().is_ok());
        assert!(answered.calls().is_empty(), "a response authorizes nothing");
        let both = Message { uri: Some("x://y".into()), ..call("tools/call", Some("echo")) };
        assert!(Post { messages: vec![both], ..one.clone() }.validate().is_err());
        assert!(Post { messages: vec![], ..one.clone() }.validate().is_err());
        let long = call("tools/call", Some(&"a".repeat(MAX_TEXT + 1)));
        assert!(Post { messages: vec![long], ..one }.validate().is_err());
    }
}
