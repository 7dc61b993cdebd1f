//! The last step of every flow: fresh claims, the zone's current key, the OAuth answer.

use std::collections::BTreeMap;
use std::time::Duration;

use caracal_shared::exchange::{TOKEN_TYPE_ACCESS_TOKEN, TokenResponse, UpstreamDirective};
use caracal_shared::mandate::{Claims, SubType, Use};
use chrono::{DateTime, Utc};

use crate::Sts;
use crate::error::StsError;

pub(super) fn now() -> DateTime<Utc> {
    Utc::now()
}

/// The lifetime a mint asked for (`ttl_seconds`), its default, or a refusal past the cap.
pub(super) fn ttl_for(requested: Option<u64>, default: Duration, cap: u64) -> Result<u64, StsError> {
    match requested {
        None | Some(0) => Ok(default.as_secs()),
        Some(t) if t > cap => Err(StsError::InvalidRequest(format!("ttl_seconds exceeds the {cap} s cap"))),
        Some(t) => Ok(t),
    }
}

/// Seconds left until `exp` (never negative).
pub(super) fn seconds_left(exp: i64) -> u64 {
    (exp - now().timestamp()).max(0) as u64
}

impl Sts {
    /// Claims of a new mandate: issuer, audience `[issuer]`, lifetime from now, fresh `jti` and
    /// `sid`; callers set scope, root, targets and anything inherited.
    pub(super) fn fresh_claims(&self, zone_id: &str, sub: &str, client_id: &str, token_use: Use, sub_type: SubType, ttl: u64) -> Claims {
        let iat = now().timestamp();
        Claims {
            iss: self.cfg.issuer.clone(),
            sub: sub.to_owned(),
            aud: vec![self.cfg.issuer.clone()],
            exp: iat + ttl as i64,
            iat,
            jti: uuid::Uuid::now_v7().to_string(),
            zone_id: zone_id.to_owned(),
            client_id: client_id.to_owned(),
            scope: String::new(),
            sid: uuid::Uuid::now_v7().to_string(),
            root_sid: String::new(),
            token_use,
            sub_type,
            target: Vec::new(),
            agent_session_id: None,
            delegation_edge_id: None,
            delegation_path: Vec::new(),
            delegation_chain: Vec::new(),
            hop_count: None,
            delegation_graph_epoch: None,
            approval_id: None,
            mcp_calls: vec![],
        }
    }

    /// Signs with the zone key that signs now.
    pub(super) fn sign(&self, keys: &crate::keys::ZoneKeys, claims: &Claims) -> Result<String, StsError> {
        let signer = keys.signer(now()).ok_or_else(|| StsError::Internal(format!("zone {} has no active signing key", claims.zone_id)))?;
        signer.sign(claims).map_err(|e| StsError::Internal(format!("signing: {e}")))
    }
}

/// The token endpoint's success body.
pub(super) fn response(
    token: String,
    ttl: u64,
    scope: &str,
    target: Vec<String>,
    upstreams: Option<BTreeMap<String, UpstreamDirective>>,
    policy_version_id: Option<String>,
) -> TokenResponse {
    TokenResponse {
        access_token: token,
        token_type: "Bearer".into(),
        expires_in: ttl,
        issued_token_type: TOKEN_TYPE_ACCESS_TOKEN.into(),
        scope: (!scope.is_empty()).then(|| scope.to_owned()),
        target_resources: target,
        upstreams,
        policy_version_id,
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// Well-formed claims of zone `z`, issuer `https://iss`, valid for five minutes.
    pub(crate) fn claims(token_use: Use) -> Claims {
        let iat = now().timestamp();
        Claims {
            iss: "https://iss".into(),
            sub: "app".into(),
            aud: vec!["https://iss".into()],
            exp: iat + 300,
            iat,
            jti: "j".into(),
            zone_id: "z".into(),
            client_id: "app".into(),
            scope: "read write".into(),
            sid: "s".into(),
            root_sid: "s".into(),
            token_use,
            sub_type: SubType::Application,
            target: vec!["https://api".into()],
            agent_session_id: None,
            delegation_edge_id: None,
            delegation_path: Vec::new(),
            delegation_chain: Vec::new(),
            hop_count: None,
            delegation_graph_epoch: None,
            approval_id: None,
            mcp_calls: vec![],
        }
    }

    #[test]
    fn ttl_defaults_caps_and_zero() {
        let d = Duration::from_secs(120);
        assert_eq!(ttl_for(None, d, 900).unwrap(), 120);
        assert_eq!(ttl_for(Some(0), d, 900).unwrap(), 120, "0 asks for the default");
        assert_eq!(ttl_for(Some(900), d, 900).unwrap(), 900);
        assert!(matches!(ttl_for(Some(901), d, 900), Err(StsError::InvalidRequest(_))));
    }
}
