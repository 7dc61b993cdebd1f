//! Parsing the RFC 8693 form body of `POST /oauth/2/token`.
//!
//! Strict on purpose: every field except `resource` may appear once (a duplicated field is a classic
//! parameter-pollution vector), `actor_token` and client assertions are refused, and values are
//! checked for shape before any lookup uses them.

use caracal_shared::exchange::{GRANT_TYPE_TOKEN_EXCHANGE, TOKEN_TYPE_ACCESS_TOKEN, TOKEN_TYPE_GATEWAY_MANDATE, TOKEN_TYPE_ID_TOKEN};
use caracal_shared::mandate::is_valid_id;

use crate::error::StsError;

/// Largest accepted body.
pub const MAX_FORM_BYTES: usize = 64 * 1024;

/// What `subject_token` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectTokenType {
    /// A Caracal mandate (`urn:ietf:params:oauth:token-type:access_token`).
    Mandate,
    /// An OpenID provider's `id_token`, for subject federation.
    IdToken,
}

/// Fields a subject federation must not carry: it is the id_token and the caller, nothing more.
const NOT_WITH_ID_TOKEN: [&str; 12] = [
    "resource",
    "scope",
    "session_id",
    "agent_session_id",
    "delegation_edge_id",
    "approval_id",
    "request_method",
    "request_path",
    "gateway_request_id",
    "requested_token_type",
    "mcp",
    "mcp_list",
];

/// The fields of a token request.
#[derive(Debug, Default)]
pub struct TokenForm {
    pub zone_id: String,
    pub application_id: Option<String>,
    pub client_secret: Option<String>,
    pub subject_token: Option<String>,
    /// What `subject_token` is (set exactly when it is).
    pub subject_token_type: Option<SubjectTokenType>,
    /// Resource identifiers, trimmed, deduplicated, sorted.
    pub resources: Vec<String>,
    /// Requested scopes, deduplicated, in request order.
    pub scopes: Vec<String>,
    pub ttl_seconds: Option<u64>,
    pub request_method: Option<String>,
    pub request_path: Option<String>,
    pub gateway_request_id: Option<String>,
    pub session_id: Option<String>,
    pub agent_session_id: Option<String>,
    pub delegation_edge_id: Option<String>,
    pub approval_id: Option<String>,
    /// Whether a subject-token exchange asked for a gateway mandate
    /// (`requested_token_type=urn:caracal:token-type:gateway-mandate`).
    pub wants_gateway_mandate: bool,
    /// The gateway's reading of an MCP POST (JSON; `docs/mcp.md`), on per-request exchanges.
    pub mcp: Option<caracal_shared::mcp::Post>,
    /// No `zone_id` was sent: a control key's client-credentials mint, whose zone is its
    /// application's (the original's zone-less `ControlClient`); `zone_id` is empty until derived.
    pub zone_derived: bool,
    /// The names of a listing whose visibility the gateway asks for (`POST /oauth/2/mcp/visible`).
    pub mcp_list: Option<caracal_shared::mcp::Listing>,
}

fn invalid(msg: impl Into<String>) -> StsError {
    StsError::InvalidRequest(msg.into())
}

impl TokenForm {
    /// Parses and shape-checks a body.
    pub fn parse(body: &[u8]) -> Result<Self, StsError> {
        if body.len() > MAX_FORM_BYTES {
            return Err(StsError::PayloadTooLarge);
        }
        let mut f = Self::default();
        let mut seen: Vec<String> = Vec::new();
        let (mut grant_type, mut subject_token_type, mut zone_id) = (None, None, None);
        for (k, v) in form_urlencoded::parse(body) {
            if k == "resource" && !seen.iter().any(|s| s == "resource") {
                seen.push("resource".into());
            } else if k != "resource" {
                if seen.iter().any(|s| *s == k) {
                    return Err(invalid(format!("duplicate form field: {k}")));
                }
                seen.push(k.to_string());
            }
            let v = v.into_owned();
            match &*k {
                "grant_type" => grant_type = Some(v),
                "subject_token_type" => subject_token_type = Some(v),
                "zone_id" => zone_id = Some(v),
                "application_id" => f.application_id = Some(v),
                "client_secret" => f.client_secret = Some(v),
                "subject_token" => f.subject_token = Some(v),
                "resource" => {
                    let r = v.trim();
                    if r.is_empty() || r.len() > 512 {
                        return Err(invalid("resource must be 1..512 characters"));
                    }
                    f.resources.push(r.to_owned());
                }
                "scope" => {
                    for s in v.split_ascii_whitespace() {
                        if s.len() > 200 {
                            return Err(invalid("scope too long"));
                        }
                        if !f.scopes.iter().any(|x| x == s) {
                            f.scopes.push(s.to_owned());
                        }
                    }
                }
                "ttl_seconds" => f.ttl_seconds = Some(v.trim().parse().map_err(|_| invalid("ttl_seconds must be a non-negative integer"))?),
                "request_method" => f.request_method = Some(v),
                "request_path" => f.request_path = Some(v),
                "gateway_request_id" => f.gateway_request_id = Some(v),
                "session_id" => f.session_id = Some(v),
                "agent_session_id" => f.agent_session_id = Some(v),
                "delegation_edge_id" => f.delegation_edge_id = Some(v),
                "approval_id" => f.approval_id = Some(v),
                "mcp" => {
                    let post: caracal_shared::mcp::Post =
                        serde_json::from_str(&v).map_err(|e| invalid(format!("mcp is malformed: {e}")))?;
                    post.validate().map_err(invalid)?;
                    f.mcp = Some(post);
                }
                "mcp_list" => {
                    let list: caracal_shared::mcp::Listing =
                        serde_json::from_str(&v).map_err(|e| invalid(format!("mcp_list is malformed: {e}")))?;
                    if list.names.len() > caracal_shared::mcp::MAX_LISTED || list.names.iter().any(|n| n.is_empty() || n.len() > 2048) {
                        return Err(invalid("mcp_list: at most 1000 names of 1..2048 characters"));
                    }
                    f.mcp_list = Some(list);
                }
                "requested_token_type" => match v.as_str() {
                    TOKEN_TYPE_GATEWAY_MANDATE => f.wants_gateway_mandate = true,
                    TOKEN_TYPE_ACCESS_TOKEN => {}
                    _ => {
                        return Err(invalid(format!(
                            "requested_token_type must be {TOKEN_TYPE_ACCESS_TOKEN} or {TOKEN_TYPE_GATEWAY_MANDATE}"
                        )));
                    }
                },
                "actor_token" | "actor_token_type" | "client_assertion" | "client_assertion_type" => {
                    return Err(invalid(format!("{k} is not supported")));
                }
                _ => {} // Unknown fields are ignored (RFC 6749 §3.2).
            }
        }
        if grant_type.as_deref() != Some(GRANT_TYPE_TOKEN_EXCHANGE) {
            return Err(invalid(format!("grant_type must be {GRANT_TYPE_TOKEN_EXCHANGE}")));
        }
        match (&f.subject_token, subject_token_type.as_deref()) {
            (None, None) => {}
            (Some(t), Some(TOKEN_TYPE_ACCESS_TOKEN)) if !t.is_empty() => f.subject_token_type = Some(SubjectTokenType::Mandate),
            (Some(t), Some(TOKEN_TYPE_ID_TOKEN)) if !t.is_empty() => {
                if let Some(extra) = NOT_WITH_ID_TOKEN.iter().find(|n| seen.iter().any(|s| s == *n)) {
                    return Err(invalid(format!(
                        "a subject federation carries only the id_token (no resource, scope, session, edge or approval): {extra} given"
                    )));
                }
                f.subject_token_type = Some(SubjectTokenType::IdToken);
            }
            (Some(_), None) | (None, Some(_)) => return Err(invalid("subject_token and subject_token_type go together")),
            _ => return Err(invalid(format!("subject_token_type must be {TOKEN_TYPE_ACCESS_TOKEN} or {TOKEN_TYPE_ID_TOKEN}"))),
        }
        let control_key_mint = f.subject_token.is_none() && f.application_id.is_some() && f.client_secret.is_some();
        match zone_id {
            None if control_key_mint => f.zone_derived = true,
            z => f.zone_id = z.filter(|z| is_valid_id(z)).ok_or_else(|| invalid("zone_id is required ([A-Za-z0-9._:-]{1,128})"))?,
        }
        for (name, value) in [
            ("application_id", &f.application_id),
            ("session_id", &f.session_id),
            ("agent_session_id", &f.agent_session_id),
            ("delegation_edge_id", &f.delegation_edge_id),
        ] {
            if let Some(v) = value
                && !is_valid_id(v)
            {
                return Err(invalid(format!("{name} is malformed")));
            }
        }
        f.resources.sort_unstable();
        f.resources.dedup();
        Ok(f)
    }

    /// The requested scopes joined for a `scope` claim.
    pub fn scope_claim(&self) -> String {
        self.scopes.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(extra: &str) -> Vec<u8> {
        format!(
            "grant_type={}&zone_id=z1{extra}",
            form_urlencoded::byte_serialize(GRANT_TYPE_TOKEN_EXCHANGE.as_bytes()).collect::<String>()
        )
        .into_bytes()
    }

    #[test]
    fn parses_repeated_resources_and_scopes() {
        let f = TokenForm::parse(&body("&resource=b&resource=a&resource=b&scope=read+write+read&ttl_seconds=60")).unwrap();
        assert_eq!(f.resources, ["a", "b"]);
        assert_eq!(f.scopes, ["read", "write"]);
        assert_eq!(f.ttl_seconds, Some(60));
        assert_eq!(f.zone_id, "z1");
    }

    #[test]
    fn refuses_bad_shapes() {
        let cases = [
            ("&zone_id=z2", "duplicate"),
            ("&scope=a&scope=b", "duplicate"),
            ("&actor_token=x", "actor_token"),
            ("&ttl_seconds=-1", "ttl_seconds"),
            ("&subject_token=abc", "go together"),
            ("&subject_token=abc&subject_token_type=urn:x", "subject_token_type"),
            ("&application_id=a%20b", "application_id"),
            ("&resource=+", "resource"),
            ("&requested_token_type=urn:ietf:params:oauth:token-type:jwt", "requested_token_type"),
        ];
        for (extra, needle) in cases {
            match TokenForm::parse(&body(extra)) {
                Err(StsError::InvalidRequest(m)) => assert!(m.contains(needle), "{extra}: {m}"),
                other => panic!("{extra}: expected invalid request, got {other:?}"),
            }
        }
        assert!(TokenForm::parse(b"grant_type=client_credentials&zone_id=z").is_err());
        assert!(TokenForm::parse(&body("").into_iter().chain(std::iter::repeat_n(b'a', MAX_FORM_BYTES)).collect::<Vec<_>>()).is_err());
        let no_zone = format!("grant_type={}", form_urlencoded::byte_serialize(GRANT_TYPE_TOKEN_EXCHANGE.as_bytes()).collect::<String>());
        assert!(TokenForm::parse(no_zone.as_bytes()).is_err());
        let control_key = format!("{no_zone}&application_id=k&client_secret=s");
        let f = TokenForm::parse(control_key.as_bytes()).unwrap();
        assert!(f.zone_derived && f.zone_id.is_empty(), "a client-credentials mint may leave its zone to be derived");
        assert!(
            TokenForm::parse(
                format!("{control_key}&subject_token=t&subject_token_type=urn:ietf:params:oauth:token-type:access_token").as_bytes()
            )
            .is_err()
        );
    }

    #[test]
    fn a_federation_carries_only_the_id_token() {
        let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let fed = format!("&subject_token=eyJ.x.y&subject_token_type={}", enc(TOKEN_TYPE_ID_TOKEN));
        let f = TokenForm::parse(&body(&format!("{fed}&application_id=a&client_secret=s&ttl_seconds=60"))).unwrap();
        assert_eq!(f.subject_token_type, Some(SubjectTokenType::IdToken));
        for extra in NOT_WITH_ID_TOKEN {
            match TokenForm::parse(&body(&format!("{fed}&{extra}=x"))) {
                Err(StsError::InvalidRequest(m)) => assert!(m.contains(extra), "{extra}: {m}"),
                other => panic!("{extra}: expected invalid request, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_gateway_mandate_is_asked_for_by_name() {
        let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        assert!(!TokenForm::parse(&body("")).unwrap().wants_gateway_mandate);
        let plain = format!("&requested_token_type={}", enc(TOKEN_TYPE_ACCESS_TOKEN));
        assert!(!TokenForm::parse(&body(&plain)).unwrap().wants_gateway_mandate);
        let named = format!("&requested_token_type={}", enc(TOKEN_TYPE_GATEWAY_MANDATE));
        assert!(TokenForm::parse(&body(&named)).unwrap().wants_gateway_mandate);
    }
}
