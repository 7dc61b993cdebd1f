//! Subject federation: an OpenID provider's `id_token` verified against a subject issuer of the
//! zone (`docs/federation.md`).
//!
//! The token's unverified `iss` only picks the issuer row; everything is then checked against
//! that row: the signature by a key of its JWKS ([`jwks`]) named by the header's `kid` (required),
//! an algorithm among RS256/384/512 and ES256/384, `iss` equal to the row's issuer, `aud`
//! containing its audience, `exp` and `iat` present, `exp`/`nbf`/`iat` within the clock leeway
//! (`STS_CLOCK_SKEW_SECONDS`, 60 s), and a `sub` that obeys [`check_sub`].

pub mod jwks;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::Sts;
use crate::error::StsError;

/// Algorithms an `id_token` may be signed with.
const ALGORITHMS: [Algorithm; 5] = [Algorithm::RS256, Algorithm::RS384, Algorithm::RS512, Algorithm::ES256, Algorithm::ES384];
/// Longest accepted `sub`, in bytes.
pub const MAX_SUB_BYTES: usize = 512;
/// The prefix reserved for Caracal's own subjects.
pub const RESERVED_SUB_PREFIX: &str = "caracal:";

/// The user an `id_token` vouched for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FederatedUser {
    pub sub: String,
    pub iss: String,
}

/// A zone's subject issuer.
#[derive(Debug, sqlx::FromRow)]
struct IssuerRow {
    id: String,
    issuer: String,
    jwks_url: String,
    audience: String,
}

#[derive(Deserialize)]
struct Unverified {
    iss: Option<String>,
}

#[derive(Deserialize)]
struct IdClaims {
    sub: String,
    iss: String,
    iat: i64,
}

impl Sts {
    /// Verifies `token` against the zone's subject issuers; 401 `invalid_token` for a token that
    /// fails any rule, 503 when the issuer's keys cannot be fetched (fail closed).
    pub(crate) async fn verify_id_token(&self, zone_id: &str, token: &str) -> Result<FederatedUser, StsError> {
        let bad = StsError::InvalidSubjectToken;
        let header = jsonwebtoken::decode_header(token).map_err(|_| bad("malformed id_token"))?;
        if !ALGORITHMS.contains(&header.alg) {
            return Err(bad("id_token algorithm not accepted (RS256/384/512, ES256/384)"));
        }
        let kid = header.kid.filter(|k| !k.is_empty()).ok_or(bad("id_token has no kid"))?;
        let iss = jsonwebtoken::dangerous::insecure_decode_claims::<Unverified>(token)
            .ok()
            .and_then(|c| c.iss)
            .ok_or(bad("id_token has no iss"))?;
        let row: Option<IssuerRow> = sqlx::query_as(
            "SELECT id, issuer, jwks_url, audience FROM subject_issuers WHERE zone_id = $1 AND issuer = $2 AND archived_at IS NULL",
        )
        .bind(zone_id)
        .bind(&iss)
        .fetch_optional(&self.db)
        .await?;
        let row = row.ok_or(bad("id_token issuer is not a subject issuer of the zone"))?;
        let mut keys = self.jwks_of(zone_id, &row).await?;
        if keys.find(&kid).is_none() && self.federation.forget_for_refetch(zone_id, &row.id, &row.jwks_url).await {
            keys = self.jwks_of(zone_id, &row).await?;
        }
        let jwk = keys.find(&kid).ok_or(bad("id_token signing key is unknown"))?;
        let key = DecodingKey::from_jwk(jwk).map_err(|_| bad("id_token signing key is unusable"))?;
        let leeway = self.cfg.clock_skew.as_secs();
        let mut v = Validation::new(header.alg);
        v.set_audience(&[&row.audience]);
        v.set_issuer(&[&row.issuer]);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        v.leeway = leeway;
        v.validate_nbf = true;
        let claims = jsonwebtoken::decode::<IdClaims>(token, &key, &v)
            .map_err(|e| {
                bad(match e.kind() {
                    ErrorKind::ExpiredSignature => "id_token expired",
                    ErrorKind::ImmatureSignature => "id_token not yet valid",
                    ErrorKind::InvalidAudience => "id_token audience mismatch",
                    ErrorKind::InvalidIssuer => "id_token issuer mismatch",
                    ErrorKind::InvalidSignature => "id_token signature invalid",
                    ErrorKind::InvalidAlgorithm => "id_token algorithm does not match its key",
                    _ => "id_token claims invalid",
                })
            })?
            .claims;
        if claims.iat > chrono::Utc::now().timestamp() + leeway as i64 {
            return Err(bad("id_token issued in the future"));
        }
        check_sub(&claims.sub).map_err(bad)?;
        Ok(FederatedUser { sub: claims.sub, iss: claims.iss })
    }

    async fn jwks_of(&self, zone_id: &str, row: &IssuerRow) -> Result<std::sync::Arc<jsonwebtoken::jwk::JwkSet>, StsError> {
        self.federation
            .get(zone_id, &row.id, &row.jwks_url)
            .await
            .map_err(|e| StsError::Unavailable(format!("JWKS of subject issuer {} ({}): {e}", row.id, row.issuer)))
    }
}

/// The `sub` rules: non-empty, at most 512 bytes, not in Caracal's reserved `caracal:` namespace,
/// no U+FFFD (a lossy decoding upstream), no control characters, no bidi overrides or isolates,
/// no leading or trailing whitespace.
pub fn check_sub(sub: &str) -> Result<(), &'static str> {
    if sub.is_empty() {
        return Err("id_token sub is empty");
    }
    if sub.len() > MAX_SUB_BYTES {
        return Err("id_token sub is longer than 512 bytes");
    }
    if sub.starts_with(RESERVED_SUB_PREFIX) {
        return Err("id_token sub uses the reserved caracal: prefix");
    }
    if sub.chars().any(|c| c == '\u{FFFD}') {
        return Err("id_token sub holds U+FFFD");
    }
    if sub.chars().any(char::is_control) {
        return Err("id_token sub holds a control character");
    }
    if sub.chars().any(|c| matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')) {
        return Err("id_token sub holds a bidi override");
    }
    if sub.trim() != sub {
        return Err("id_token sub has surrounding whitespace");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sub_rules_each_refuse_on_their_own() {
        assert!(check_sub("248289761001").is_ok());
        assert!(check_sub("user@example.com").is_ok());
        assert!(check_sub(&"a".repeat(512)).is_ok());
        let cases = [
            ("", "empty"),
            (&*"a".repeat(513), "512"),
            ("caracal:app", "reserved"),
            ("bad\u{FFFD}", "U+FFFD"),
            ("a\u{0}b", "control"),
            ("a\nb", "control"),
            ("a\u{202E}b", "bidi"),
            ("a\u{2066}b", "bidi"),
            (" user", "whitespace"),
            ("user\u{3000}", "whitespace"),
        ];
        for (sub, why) in cases {
            let err = check_sub(sub).unwrap_err();
            assert!(err.contains(why), "{sub:?}: {err}");
        }
    }
}
