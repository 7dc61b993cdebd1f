//! The token endpoint's success body, shared by the STS (writer) and the gateway (reader).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `grant_type` of every exchange.
pub const GRANT_TYPE_TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// `subject_token_type` / `issued_token_type` of mandates.
pub const TOKEN_TYPE_ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
/// `subject_token_type` of federated user id tokens.
pub const TOKEN_TYPE_ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";
/// `requested_token_type` that asks for a single-use gateway mandate in exchange for a session
/// mandate. Only our own tools send it: the original answered every direct subject-token exchange
/// 403, and its published clients cache what they get (a single-use token would be replayed).
pub const TOKEN_TYPE_GATEWAY_MANDATE: &str = "urn:caracal:token-type:gateway-mandate";

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
    /// The policy version that allowed the exchange: for the issuer's own evidence, never sent.
    #[serde(skip)]
    pub policy_version_id: Option<String>,
}

/// How the gateway reaches a resource and which credential it injects.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamDirective {
    /// Base URL of the upstream; the inbound path is appended to its path. With a pool, the first
    /// endpoint (what a gateway that predates pools dials).
    pub url: String,
    /// The pool (docs/pools.md); absent for a set of one with the default policy, so a plain
    /// resource's directive is unchanged and `url` is the set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<crate::pool::Endpoint>,
    /// How to pick among `endpoints`; absent means weighted round robin.
    #[serde(default, skip_serializing_if = "crate::pool::LoadBalancing::is_default")]
    pub load_balancing: crate::pool::LoadBalancing,
    /// The resource's own upstream deadlines; absent means the gateway's.
    #[serde(default, skip_serializing_if = "crate::pool::Timeouts::is_default")]
    pub timeouts: crate::pool::Timeouts,
    /// Active probes of the endpoints; absent means passive ejection only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<crate::pool::HealthProbe>,
    /// Retries on another endpoint; absent means the defaults.
    #[serde(default, skip_serializing_if = "crate::pool::Retry::is_default")]
    pub retry: crate::pool::Retry,
    /// Per-endpoint concurrency cap and HTTP/2; absent means none and HTTP/1.1.
    #[serde(default, skip_serializing_if = "crate::pool::Connections::is_default")]
    pub connections: crate::pool::Connections,
    /// `none`, `caracal_jwt` (the resource mandate as a bearer) or `provider_apikey`.
    pub auth_mode: String,
    /// Header the credential goes in (default `Authorization`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_header: Option<String>,
    /// Scheme before the credential in that header (e.g. `Bearer`); none for a bare key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_scheme: Option<String>,
    /// `header` (default) or `query` for `provider_apikey`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_location: Option<String>,
    /// Query parameter carrying the key when `auth_location` is `query`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_param_name: Option<String>,
    /// The provider's key (`provider_apikey`); only ever sent to the gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_token: Option<String>,
    /// Also send the resource mandate as `X-Caracal-Identity` (provider modes).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forward_caracal_identity: bool,
    /// The resource is an MCP server (`docs/mcp.md`): the gateway refuses its malformed POSTs
    /// itself from then on, and answers its denials in JSON-RPC.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mcp: bool,
}

impl UpstreamDirective {
    /// The endpoint set: `endpoints`, or `url` as a set of one (an STS that predates pools).
    pub fn endpoint_set(&self) -> Vec<crate::pool::Endpoint> {
        crate::pool::endpoints_or_single(&self.endpoints, &self.url)
    }
}

impl std::fmt::Debug for UpstreamDirective {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamDirective")
            .field("url", &self.url)
            .field("endpoints", &self.endpoints.len())
            .field("load_balancing", &self.load_balancing.policy)
            .field("auth_mode", &self.auth_mode)
            .field("auth_location", &self.auth_location)
            .field("provider_token", &self.provider_token.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

/// Request headers a credential may never be written to: routing, framing, tracing and
/// forwarding headers, and the `X-Caracal-*` / `X-Forwarded-*` / `Proxy-*` families. Checked when a
/// resource is configured (control plane) and again when a directive is applied (gateway).
pub fn is_writable_credential_header(name: &str) -> bool {
    const RESERVED: &[&str] = &[
        "host",
        "content-length",
        "content-type",
        "transfer-encoding",
        "connection",
        "forwarded",
        "x-request-id",
        "traceparent",
        "tracestate",
        "baggage",
    ];
    let n = name.to_ascii_lowercase();
    let token = !n.is_empty() && n.len() <= 64 && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    token && !RESERVED.contains(&n.as_str()) && !["x-caracal-", "x-forwarded-", "proxy-"].iter().any(|p| n.starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::UpstreamDirective;
    use crate::pool::{Endpoint, LoadBalancing, Policy};

    #[test]
    fn a_plain_directive_is_unchanged_and_a_pool_keeps_url() {
        let plain = UpstreamDirective { url: "http://a".into(), auth_mode: "none".into(), ..Default::default() };
        assert_eq!(serde_json::to_string(&plain).unwrap(), r#"{"url":"http://a","auth_mode":"none"}"#);
        let old: UpstreamDirective = serde_json::from_str(r#"{"url":"http://a","auth_mode":"none"}"#).unwrap();
        assert_eq!(old.endpoint_set(), vec![Endpoint::single("http://a")], "an older STS: url is the set");
        let pool = UpstreamDirective {
            endpoints: vec![Endpoint { url: "http://a".into(), weight: 3, drain: false }, Endpoint::single("http://b")],
            load_balancing: LoadBalancing { policy: Policy::LeastOutstanding, hash_key: None },
            ..plain
        };
        let v: serde_json::Value = serde_json::to_value(&pool).unwrap();
        assert_eq!(v["url"], "http://a", "an older gateway still finds url");
        assert_eq!(v["endpoints"][0]["weight"], 3);
        assert_eq!(v["load_balancing"]["policy"], "least_outstanding");
        assert_eq!(serde_json::from_value::<UpstreamDirective>(v).unwrap(), pool);
    }

    #[test]
    fn credential_headers() {
        for ok in ["Authorization", "X-Api-Key", "api-key"] {
            assert!(super::is_writable_credential_header(ok), "{ok}");
        }
        for bad in ["Host", "X-Forwarded-For", "x-caracal-identity", "Proxy-Authorization", "Content-Length", "bad header", ""] {
            assert!(!super::is_writable_credential_header(bad), "{bad}");
        }
    }
}
