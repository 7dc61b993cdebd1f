//! Mandate claims (DESIGN §3).
//!
//! A mandate is an ES256 JWT. The claim names, JSON types and the `use` classes are fixed by the
//! clients already deployed (DESIGN §9): `aud`, `target` and `delegation_path` are arrays, `exp`,
//! `iat`, `hop_count` and `delegation_graph_epoch` are integers.

use serde::{Deserialize, Serialize};

/// What a mandate may be used for. A mandate is never accepted for another use (token confusion).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Use {
    /// Ambient session authority: only accepted by the STS as a `subject_token`.
    Session,
    /// Single-use ingress authority: only accepted by the gateway, once.
    Gateway,
    /// Per-request authority for one resource, forwarded to the upstream.
    Resource,
    /// Anything else a token might claim; always refused.
    #[serde(other)]
    Unknown,
}

impl Use {
    /// The claim value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Session => "session",
            Self::Gateway => "gateway",
            Self::Resource => "resource",
            Self::Unknown => "unknown",
        }
    }
}

/// Who the subject is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SubType {
    Application,
    User,
}

/// One hop of a delegation chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DelegationHop {
    pub application_id: String,
    pub agent_session_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegation_edge_id: Option<String>,
}

/// The claims of every mandate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub aud: Vec<String>,
    pub exp: i64,
    pub iat: i64,
    /// UUIDv7; with `iss` the key of single use at the gateway.
    pub jti: String,
    pub zone_id: String,
    pub client_id: String,
    /// Space-separated scopes; omitted when empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub scope: String,
    /// This mandate's own session id.
    pub sid: String,
    /// The root session every derived mandate descends from; revoking it revokes them all.
    pub root_sid: String,
    #[serde(rename = "use")]
    pub token_use: Use,
    pub sub_type: SubType,
    /// Resource identifiers this mandate may be presented for.
    #[serde(default)]
    pub target: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_session_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegation_edge_id: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub delegation_path: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub delegation_chain: Vec<DelegationHop>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hop_count: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegation_graph_epoch: Option<u64>,
    /// The step-up approval that authorized this mandate's lineage (inherited when narrowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_id: Option<String>,
    /// Resource mandates for an MCP POST: the calls this credential authorizes, nothing else
    /// (`docs/mcp.md` §4).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mcp_calls: Vec<crate::mcp::Call>,
}

impl Claims {
    /// Iterates the scopes of the `scope` claim.
    pub fn scopes(&self) -> impl Iterator<Item = &str> {
        self.scope.split_ascii_whitespace()
    }

    /// Whether `resource` is among the mandate's targets.
    pub fn targets(&self, resource: &str) -> bool {
        self.target.iter().any(|t| t == resource)
    }

    /// The revocation anchors this mandate hangs from, in the order they are checked.
    pub fn anchors(&self) -> impl Iterator<Item = &str> {
        [Some(self.sid.as_str()), Some(self.root_sid.as_str()), self.agent_session_id.as_deref(), self.delegation_edge_id.as_deref()]
            .into_iter()
            .flatten()
            .filter(|a| !a.is_empty())
    }
}

/// Zone ids and client ids: `^[A-Za-z0-9._:-]{1,128}$`, checked before they are used as cache or
/// Redis keys.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Claims {
        Claims {
            iss: "http://sts".into(),
            sub: "app".into(),
            aud: vec!["http://sts".into()],
            exp: 2,
            iat: 1,
            jti: "j".into(),
            zone_id: "z".into(),
            client_id: "app".into(),
            scope: "read write".into(),
            sid: "s1".into(),
            root_sid: "s0".into(),
            token_use: Use::Gateway,
            sub_type: SubType::Application,
            target: vec!["https://api".into()],
            agent_session_id: None,
            delegation_edge_id: Some("e1".into()),
            delegation_path: vec![],
            delegation_chain: vec![],
            hop_count: None,
            delegation_graph_epoch: None,
            approval_id: None,
            mcp_calls: vec![],
        }
    }

    #[test]
    fn json_shape_matches_the_wire_contract() {
        let v = serde_json::to_value(sample()).unwrap();
        assert!(v["aud"].is_array() && v["target"].is_array());
        assert_eq!(v["use"], "gateway");
        assert_eq!(v["sub_type"], "application");
        assert!(v["exp"].is_i64());
        assert!(v.get("agent_session_id").is_none(), "absent optional claims are omitted");
    }

    #[test]
    fn unknown_use_is_parsed_but_distinct() {
        let mut v = serde_json::to_value(sample()).unwrap();
        v["use"] = "ambient".into();
        let c: Claims = serde_json::from_value(v).unwrap();
        assert_eq!(c.token_use, Use::Unknown);
    }

    #[test]
    fn anchors_skip_absent_ids() {
        assert_eq!(sample().anchors().collect::<Vec<_>>(), ["s1", "s0", "e1"]);
    }

    #[test]
    fn id_pattern() {
        assert!(is_valid_id("zone-1.a:b_c"));
        assert!(!is_valid_id(""));
        assert!(!is_valid_id("z one"));
        assert!(!is_valid_id(&"a".repeat(129)));
    }
}
