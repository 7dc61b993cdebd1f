//! Authentication of the inbound mandate.
//!
//! First an unverified peek (shape and claims), so malformed, expiring, wrong-`use`, wrong-issuer and
//! wrong-target mandates are refused without spending a signature check; then ES256 against the
//! zone's published keys ([`crate::jwks`]). Only [`verify`] builds a [`VerifiedMandate`].
//!
//! Denials: `bad_bearer` (malformed), `expiring` (401 `credential_expired_not_renewable`),
//! `bad_routing` (zone or client claim), `wrong_use`, `bad_claims` (iss/aud), `target_mismatch`
//! (403), `signature`, `keys_unavailable` (503).

use caracal_shared::Claims;
use caracal_shared::jws::Compact;
use caracal_shared::mandate::{Use, is_valid_id};

use crate::deny::Denial;
use crate::jwks::{JwksCache, KeyLookup};

/// A bearer split and its claims decoded; nothing is trusted yet.
pub struct Peeked<'a> {
    pub token: &'a str,
    compact: Compact<'a>,
    pub claims: Claims,
}

/// A mandate whose signature verified against its zone's published keys.
pub struct VerifiedMandate<'a> {
    pub token: &'a str,
    pub claims: Claims,
}

/// Splits the token and decodes its claims.
pub fn peek(token: &str) -> Result<Peeked<'_>, Denial> {
    let compact = Compact::parse(token).map_err(|_| Denial::MalformedBearer)?;
    let claims: Claims = compact.claims().map_err(|_| Denial::MalformedBearer)?;
    Ok(Peeked { token, compact, claims })
}

/// Refuses a mandate that expires within `preflight_secs` of `now`.
pub fn not_expiring(p: &Peeked<'_>, now: i64, preflight_secs: i64) -> Result<(), Denial> {
    if p.claims.exp - now < preflight_secs { Err(Denial::Expiring) } else { Ok(()) }
}

/// Checks the claims that decide whether this mandate may be used here at all.
pub fn check_claims(p: &Peeked<'_>, issuer: &str, resource: &str) -> Result<(), Denial> {
    let c = &p.claims;
    if !is_valid_id(&c.zone_id) || !is_valid_id(&c.client_id) {
        return Err(Denial::BadIdentityClaims);
    }
    if c.token_use != Use::Gateway {
        return Err(Denial::WrongUse);
    }
    if c.iss != issuer || !c.aud.iter().any(|a| a == issuer) {
        return Err(Denial::WrongIssuer);
    }
    if c.jti.is_empty() || c.sid.is_empty() || c.root_sid.is_empty() {
        return Err(Denial::MalformedBearer);
    }
    if !c.targets(resource) {
        return Err(Denial::TargetMismatch);
    }
    Ok(())
}

/// Verifies the signature with the zone's keys.
pub async fn verify<'a>(jwks: &JwksCache, p: Peeked<'a>) -> Result<VerifiedMandate<'a>, Denial> {
    let key = match jwks.key(&p.claims.zone_id, &p.compact.kid).await {
        KeyLookup::Found(key) => key,
        KeyLookup::Unknown => return Err(Denial::Signature),
        KeyLookup::Unavailable => return Err(Denial::KeysUnavailable),
    };
    p.compact.verify(&key).map_err(|_| Denial::Signature)?;
    Ok(VerifiedMandate { token: p.token, claims: p.claims })
}

#[cfg(test)]
mod tests {
    use caracal_shared::jws::SigningKey;
    use caracal_shared::mandate::SubType;

    use super::*;

    fn claims(use_: Use) -> Claims {
        Claims {
            iss: "https://sts".into(),
            sub: "app".into(),
            aud: vec!["https://sts".into()],
            exp: 1_000,
            iat: 900,
            jti: "j1".into(),
            zone_id: "z1".into(),
            client_id: "app".into(),
            scope: "read".into(),
            sid: "s1".into(),
            root_sid: "s0".into(),
            token_use: use_,
            sub_type: SubType::Application,
            target: vec!["api://r".into()],
            agent_session_id: None,
            delegation_edge_id: None,
            delegation_path: vec![],
            delegation_chain: vec![],
            hop_count: None,
            delegation_graph_epoch: None,
            approval_id: None,
            mcp_calls: vec![],
        }
    }

    fn token(c: &Claims) -> String {
        SigningKey::generate("k").unwrap().0.sign(c).unwrap()
    }

    #[test]
    fn claim_rules() {
        let ok = token(&claims(Use::Gateway));
        let p = peek(&ok).unwrap();
        assert_eq!(check_claims(&p, "https://sts", "api://r"), Ok(()));
        assert_eq!(check_claims(&p, "https://sts", "api://other"), Err(Denial::TargetMismatch));
        assert_eq!(check_claims(&p, "https://evil", "api://r"), Err(Denial::WrongIssuer));
        assert_eq!(not_expiring(&p, 1_000 - 35, 35), Ok(()));
        assert_eq!(not_expiring(&p, 1_000 - 34, 35), Err(Denial::Expiring));
        for u in [Use::Session, Use::Resource, Use::Unknown] {
            let t = token(&claims(u));
            assert_eq!(check_claims(&peek(&t).unwrap(), "https://sts", "api://r"), Err(Denial::WrongUse), "{u:?}");
        }
        let mut bad_zone = claims(Use::Gateway);
        bad_zone.zone_id = "z one".into();
        let t = token(&bad_zone);
        assert_eq!(check_claims(&peek(&t).unwrap(), "https://sts", "api://r"), Err(Denial::BadIdentityClaims));
        assert!(matches!(peek("not.a.jwt"), Err(Denial::MalformedBearer)));
    }
}
