//! RFC 8414 authorization-server metadata: what an OAuth (MCP) client can discover about this STS.
//!
//! Served at `GET /.well-known/oauth-authorization-server` and, for an issuer with a path, at the
//! path-inserted form `/.well-known/oauth-authorization-server/<issuer path>` (RFC 8414 §3.1).
//! `issuer` is `ISSUER_URL` byte for byte: clients compare it exactly with the URL they built the
//! request from (§3.3) and with `iss`.
//!
//! Deliberately absent (docs/mcp.md §6): `authorization_endpoint` and PKCE (no user is redirected
//! here: agents authenticate with their client secret and mint by token exchange), `jwks_uri` (each
//! zone has its own key set, `/.well-known/jwks.json?zone_id=`, so there is no one set to name),
//! `scopes_supported` (scopes are per zone), registration and revocation endpoints.

use caracal_shared::exchange::{GRANT_TYPE_TOKEN_EXCHANGE, TOKEN_TYPE_ACCESS_TOKEN, TOKEN_TYPE_GATEWAY_MANDATE, TOKEN_TYPE_ID_TOKEN};

/// The RFC 8414 well-known prefix.
pub const WELL_KNOWN: &str = "/.well-known/oauth-authorization-server";

/// The token endpoint's path below the issuer.
pub const TOKEN_PATH: &str = "/oauth/2/token";

/// The metadata document of the STS whose issuer is `issuer`.
pub fn document(issuer: &str) -> serde_json::Value {
    serde_json::json!({
        "issuer": issuer,
        "token_endpoint": format!("{issuer}{TOKEN_PATH}"),
        "grant_types_supported": [GRANT_TYPE_TOKEN_EXCHANGE],
        // The secret goes in the form (with `zone_id` and `application_id`), never in `Authorization`.
        "token_endpoint_auth_methods_supported": ["client_secret_post"],
        // Required by RFC 8414; empty because there is no authorization endpoint.
        "response_types_supported": [],
        // Extensions (no registered names exist for RFC 8693 token types).
        "subject_token_types_supported": [TOKEN_TYPE_ACCESS_TOKEN, TOKEN_TYPE_ID_TOKEN],
        "requested_token_types_supported": [TOKEN_TYPE_ACCESS_TOKEN, TOKEN_TYPE_GATEWAY_MANDATE],
    })
}

/// Whether a request for `path` asks for the metadata of `issuer`: the well-known prefix followed
/// by the issuer's path (RFC 8414 §3.1), or the bare prefix.
pub fn is_metadata_path(path: &str, issuer: &str) -> bool {
    path.strip_prefix(WELL_KNOWN).is_some_and(|rest| rest.is_empty() || rest == issuer_path(issuer))
}

/// The path of an issuer URL as written (`""` for none): compared byte for byte, like the issuer.
fn issuer_path(issuer: &str) -> &str {
    let after_scheme = issuer.split_once("://").map_or(issuer, |(_, rest)| rest);
    after_scheme.find('/').map_or("", |i| &after_scheme[i..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_names_this_sts_as_it_is() {
        let d = document("https://sts.example");
        assert_eq!(d["issuer"], "https://sts.example", "RFC 8414 §3.3: identical to the configured issuer");
        assert_eq!(d["token_endpoint"], "https://sts.example/oauth/2/token");
        assert_eq!(d["grant_types_supported"], serde_json::json!([GRANT_TYPE_TOKEN_EXCHANGE]));
        assert_eq!(d["token_endpoint_auth_methods_supported"], serde_json::json!(["client_secret_post"]));
        assert_eq!(d["response_types_supported"], serde_json::json!([]), "required by RFC 8414, and empty: no authorization endpoint");
        assert_eq!(d["subject_token_types_supported"], serde_json::json!([TOKEN_TYPE_ACCESS_TOKEN, TOKEN_TYPE_ID_TOKEN]));
        assert_eq!(d["requested_token_types_supported"], serde_json::json!([TOKEN_TYPE_ACCESS_TOKEN, TOKEN_TYPE_GATEWAY_MANDATE]));
        for absent in
            ["authorization_endpoint", "code_challenge_methods_supported", "jwks_uri", "scopes_supported", "registration_endpoint"]
        {
            assert!(d.get(absent).is_none(), "{absent} must be absent");
        }
        let with_path = document("https://cp.example/tenant/sts");
        assert_eq!(with_path["issuer"], "https://cp.example/tenant/sts");
        assert_eq!(with_path["token_endpoint"], "https://cp.example/tenant/sts/oauth/2/token");
    }

    #[test]
    fn the_metadata_lives_at_the_path_inserted_well_known_url() {
        assert!(is_metadata_path("/.well-known/oauth-authorization-server", "https://sts.example"));
        assert!(!is_metadata_path("/.well-known/oauth-authorization-server/other", "https://sts.example"));
        let issuer = "https://cp.example/tenant/sts";
        assert!(is_metadata_path("/.well-known/oauth-authorization-server/tenant/sts", issuer));
        assert!(is_metadata_path("/.well-known/oauth-authorization-server", issuer), "the bare form names the same issuer");
        for other in [
            "/.well-known/oauth-authorization-server/tenant",
            "/.well-known/oauth-authorization-server/tenant/sts/x",
            "/.well-known/oauth-authorization-serverx",
        ] {
            assert!(!is_metadata_path(other, issuer), "{other}");
        }
    }
}
