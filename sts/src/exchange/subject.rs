//! What the caller presents: a mandate verified for the one `use` this flow accepts, and alive.
//!
//! A presented mandate must carry a signature by a published key of its zone, this issuer, an
//! audience containing the issuer, an unexpired lifetime not issued in the future, the expected
//! `use` (token confusion is refused: 401 `wrong_token_use`), and no revoked anchor.

use std::sync::Arc;

use caracal_shared::jws::Compact;
use caracal_shared::mandate::{Claims, Use};
use caracal_shared::sig;

use crate::Sts;
use crate::error::StsError;

impl Sts {
    /// Verifies a presented mandate: signature by a published key of the zone, issuer, audience,
    /// lifetime, and `use`.
    ///
    /// A session mandate is presented again for every mint, so its signature check is remembered,
    /// keyed by the SHA-256 of the exact token bytes (a re-encoded signature is different bytes and
    /// is verified afresh). Only the signature is remembered: expiry, `use` and revocation are
    /// checked on every use.
    ///
    /// A gateway mandate is accepted only in the gateway's signed exchange, which is where the
    /// issuer tag stands in for the signature ([`Presenter::Gateway`]).
    pub(super) async fn verify_subject(&self, zone_id: &str, token: &str, expected: Use) -> Result<Claims, StsError> {
        let memo_key = (expected == Use::Session).then(|| sig::sha256(token.as_bytes()));
        let presenter = if expected == Use::Gateway { Presenter::Gateway } else { Presenter::Client };
        let claims = match memo_key.and_then(|k| self.verified_sessions.get(&k)) {
            Some(known) => Claims::clone(&known),
            None => {
                let claims = self.verify_signature(zone_id, token, presenter).await?;
                if let Some(k) = memo_key {
                    self.verified_sessions.insert(k, Arc::new(claims.clone()));
                }
                claims
            }
        };
        let (issuer, now, skew) = (&self.cfg.issuer, super::sign::now().timestamp(), self.cfg.clock_skew.as_secs() as i64);
        check_claims(&claims, zone_id, issuer, issuer, expected, now, skew)?;
        Ok(claims)
    }

    /// A resource mandate this STS issued, presented back by the gateway (MCP list visibility):
    /// checked like a subject token, except that its audience is its one resource.
    pub(super) async fn verify_resource_mandate(&self, zone_id: &str, token: &str) -> Result<Claims, StsError> {
        let claims = self.verify_signature(zone_id, token, Presenter::Gateway).await?;
        let [audience] = claims.aud.as_slice() else { return Err(StsError::InvalidSubjectToken("a resource mandate names one audience")) };
        let (now, skew) = (super::sign::now().timestamp(), self.cfg.clock_skew.as_secs() as i64);
        check_claims(&claims, zone_id, &self.cfg.issuer, audience, Use::Resource, now, skew)?;
        Ok(claims)
    }

    /// A session mandate presented to the Coordinator by a runtime (agent SDK): verified like a
    /// `subject_token` (signature, issuer, audience, expiry, `use=session`) and not revoked.
    pub async fn verify_runtime_mandate(&self, zone_id: &str, token: &str) -> Result<Claims, StsError> {
        let claims = self.verify_subject(zone_id, token, Use::Session).await?;
        self.require_live_anchors(zone_id, claims.anchors())?;
        Ok(claims)
    }

    /// Parses `token` and checks that a published key of the zone issued it: by its ES256 signature,
    /// or, when the gateway presents it, by that key's issuer tag (`caracal_shared::jws`). A missing
    /// or wrong tag is no shortcut: the signature must then verify.
    async fn verify_signature(&self, zone_id: &str, token: &str, presenter: Presenter) -> Result<Claims, StsError> {
        let compact = Compact::parse(token).map_err(|_| StsError::InvalidSubjectToken("malformed"))?;
        let claims: Claims = compact.claims().map_err(|_| StsError::InvalidSubjectToken("malformed claims"))?;
        if claims.zone_id != zone_id {
            return Err(StsError::InvalidSubjectToken("zone mismatch"));
        }
        let keys = match self.keys.zone(zone_id).await {
            Ok(k) => k,
            Err(StsError::ZoneNotFound) => return Err(StsError::InvalidSubjectToken("unknown zone")),
            Err(e) => return Err(e),
        };
        let key = keys.key(&compact.kid).ok_or(StsError::InvalidSubjectToken("unknown signing key"))?;
        let by = if presenter == Presenter::Gateway && key.signer.tagged(&compact) {
            "tag"
        } else {
            compact.verify(&key.verifier).map_err(|_| StsError::InvalidSubjectToken("signature invalid"))?;
            "signature"
        };
        self.metrics.issuer_checks.with_label_values(&[by]).inc();
        Ok(claims)
    }

    /// No anchor (session, root, agent session, edge) of a presented mandate or lineage may be
    /// revoked. A stale view answers 503: the STS cannot tell, so it refuses.
    pub(super) fn require_live_anchors<'a>(&self, zone_id: &str, anchors: impl IntoIterator<Item = &'a str>) -> Result<(), StsError> {
        match self.revoked.any_revoked(zone_id, anchors) {
            Some(false) => Ok(()),
            Some(true) => Err(StsError::SessionInactive),
            None => Err(StsError::Unavailable("the revoked-session view is stale".into())),
        }
    }
}

/// Who presents a mandate, which decides what proves that this STS issued it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Presenter {
    /// A client or a runtime: the ES256 signature, always. A token whose claims are ours but whose
    /// signature bytes are not is refused, as every other verifier refuses it.
    Client,
    /// The gateway, in its HMAC-signed exchange, presenting a gateway mandate whose signature it
    /// verified itself, or a resource mandate it received from us. The issuer tag proves the claims
    /// are ours; the signature bytes were already settled by an authenticated party.
    Gateway,
}

/// The claim checks after the signature (pure, so each rule is unit-tested).
fn check_claims(claims: &Claims, zone_id: &str, issuer: &str, audience: &str, expected: Use, now: i64, skew: i64) -> Result<(), StsError> {
    if claims.zone_id != zone_id {
        return Err(StsError::InvalidSubjectToken("zone mismatch"));
    }
    if claims.iss != issuer || !claims.aud.iter().any(|a| a == audience) {
        return Err(StsError::InvalidSubjectToken("issuer or audience mismatch"));
    }
    if claims.exp <= now {
        return Err(StsError::InvalidSubjectToken("expired"));
    }
    if claims.iat > now + skew {
        return Err(StsError::InvalidSubjectToken("issued in the future"));
    }
    if claims.token_use != expected {
        return Err(StsError::WrongTokenUse(match expected {
            Use::Session => "subject_token must be a session mandate",
            Use::Gateway => "the gateway exchange accepts only gateway mandates",
            _ => "mandate use not accepted here",
        }));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exchange::sign::tests::claims;

    #[test]
    fn each_claim_rule_refuses_on_its_own() {
        let ok = claims(Use::Session);
        let now = ok.iat;
        assert!(check_claims(&ok, "z", "https://iss", "https://iss", Use::Session, now, 60).is_ok());
        let cases: [(Claims, &str); 6] = [
            (Claims { zone_id: "other".into(), ..ok.clone() }, "zone mismatch"),
            (Claims { iss: "https://evil".into(), ..ok.clone() }, "issuer or audience mismatch"),
            (Claims { aud: vec!["https://api".into()], ..ok.clone() }, "issuer or audience mismatch"),
            (Claims { exp: now, ..ok.clone() }, "expired"),
            (Claims { iat: now + 61, ..ok.clone() }, "issued in the future"),
            (Claims { token_use: Use::Gateway, ..ok.clone() }, "subject_token must be a session mandate"),
        ];
        for (c, why) in cases {
            let err = check_claims(&c, "z", "https://iss", "https://iss", Use::Session, now, 60).unwrap_err();
            assert!(err.to_string().contains(why), "{why}: got {err}");
        }
    }

    #[test]
    fn a_resource_mandate_is_never_a_gateway_mandate() {
        let c = claims(Use::Resource);
        let err = check_claims(&c, "z", "https://iss", "https://iss", Use::Gateway, c.iat, 60).unwrap_err();
        assert!(matches!(err, StsError::WrongTokenUse(_)), "{err}");
    }
}
