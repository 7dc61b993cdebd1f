//! Who is invoking: a session mandate of this STS, minted for the Control audience.
//!
//! A Control client mints its token like any Caracal client: `POST /oauth/2/token` with its
//! client credentials, `resource=<CONTROL_AUDIENCE>` and the `control:<command>:<verb>` scopes it
//! needs, which the zone's policy must allow. The answer is a `use=session` mandate whose `target`
//! names the audience. It is checked here against the very keys the zone's JWKS publishes (the
//! STS runs in this process): ES256 only, the STS issuer, not expired, not issued in the future,
//! session not revoked, `target` ∋ audience, `jti` and `sub` present. Any failure is 401
//! `unauthorized`; the token itself is never logged, only its fingerprint.

use axum::http::HeaderMap;
use caracal_shared::jws::Compact;
use caracal_shared::mandate::{Claims, is_valid_id};
use caracal_sts::{Sts, StsError};
use serde::Deserialize;

use crate::control::Refusal;
use crate::extract::bearer;

/// A verified control caller.
#[derive(Clone, Debug)]
pub struct Principal {
    pub claims: Claims,
    /// First 8 bytes of the token's SHA-256, for logs and evidence.
    pub fingerprint: String,
}

impl Principal {
    /// The zone every dispatched call is confined to.
    pub fn zone(&self) -> &str {
        &self.claims.zone_id
    }

    /// Key of the per-subject bucket.
    pub fn subject_key(&self) -> String {
        format!("{}/{}", self.claims.zone_id, self.claims.sub)
    }

    /// 403 `denied` unless the token carries `scope`.
    pub fn require_scope(&self, scope: &str) -> Result<(), Refusal> {
        if self.claims.scopes().any(|s| s == scope) { Ok(()) } else { Err(Refusal::Denied(format!("missing scope {scope}"))) }
    }
}

#[derive(Deserialize)]
struct ZoneOnly {
    zone_id: String,
}

/// Verifies the bearer of `headers` as a control token for `audience`.
pub async fn authenticate(sts: &Sts, headers: &HeaderMap, audience: &str) -> Result<Principal, Refusal> {
    let token = bearer(headers).ok_or(Refusal::Unauthorized("a Bearer control token is required"))?;
    let fingerprint = caracal_shared::sig::fingerprint(token);
    let refuse = |reason: &'static str, detail: &dyn std::fmt::Display| {
        tracing::info!(token_fp = %fingerprint, reason, detail = %detail, "control token refused");
        Refusal::Unauthorized(reason)
    };
    // The zone picks the key set; the signature check below is what makes it trustworthy.
    let zone_id = Compact::parse(token)
        .ok()
        .and_then(|c| c.claims::<ZoneOnly>().ok())
        .map(|z| z.zone_id)
        .filter(|z| is_valid_id(z))
        .ok_or_else(|| refuse("malformed token", &"not an ES256 compact JWS with a zone_id"))?;
    let claims = sts.verify_runtime_mandate(&zone_id, token).await.map_err(|e| refuse(reason(&e), &e))?;
    if !claims.targets(audience) {
        return Err(refuse("the token was not issued for the Control audience", &audience));
    }
    if !is_valid_id(&claims.jti) || claims.sub.is_empty() {
        return Err(refuse("the token lacks a usable jti or sub", &claims.jti));
    }
    Ok(Principal { claims, fingerprint })
}

/// What the caller is told: coarse enough to reveal nothing about other zones' keys.
fn reason(e: &StsError) -> &'static str {
    match e {
        StsError::InvalidSubjectToken("expired") => "token expired",
        StsError::InvalidSubjectToken("issued in the future") => "token issued in the future",
        StsError::InvalidSubjectToken(_) => "token signature, issuer or zone invalid",
        StsError::WrongTokenUse(_) => "only session mandates are accepted",
        StsError::SessionInactive => "the token's session is revoked",
        _ => "the token could not be verified",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_reasons_are_coarse() {
        assert_eq!(reason(&StsError::InvalidSubjectToken("unknown signing key")), "token signature, issuer or zone invalid");
        assert_eq!(reason(&StsError::InvalidSubjectToken("unknown zone")), "token signature, issuer or zone invalid");
        assert_eq!(reason(&StsError::InvalidSubjectToken("expired")), "token expired");
        assert_eq!(reason(&StsError::Unavailable("db".into())), "the token could not be verified");
    }
}
