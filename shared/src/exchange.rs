//! The token endpoint's success body, shared by the STS (writer) and the gateway (reader).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `grant_type` of every exchange.
pub const GRANT_TYPE_TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// `subject_token_type` / `issued_token_type` of mandates.
pub const TOKEN_TYPE_ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
/// `subject_token_type` of federated user id tokens.
pub const TOKEN_TYPE_ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";

/// `POST /oauth/2/token` success body (RFC 8693 plus Caracal's `upstreams`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: String,
    pub expires_in: u64,
    pub issued_token_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_resources: Vec<String>,
    /// Only on gateway-signed exchanges: where and how to forward, per resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstreams: Option<BTreeMap<String, UpstreamDirective>>,
}

/// How the gateway reaches a resource and which credential it injects.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamDirective {
    /// Base URL of the upstream; the inbound path is appended to its path.
    pub url: String,
    /// `none` or `caracal_jwt` (the resource mandate as a bearer).
    pub auth_mode: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_header: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_scheme: Option<String>,
}
