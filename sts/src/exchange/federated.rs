//! **Subject federation** — client credentials and an OpenID provider's `id_token`
//! (`subject_token_type=urn:ietf:params:oauth:token-type:id_token`) ⇒ `use=session`,
//! `sub_type=user`, `sub` = the token's `sub`, `aud=[issuer]`, no `scope`, no `target`.
//!
//! The body carries the id_token and nothing to narrow (the form refuses resource, scope,
//! session, edge and approval fields). The token is verified against the zone's subject issuer
//! ([`crate::federation`]); the policy is not consulted (there is no resource to ask about — as in
//! the original, federation is decided by the issuer registration). A `user` authority record is
//! written (subject = `sub`, issuer remembered), held by the calling application: the SDK then
//! starts Coordinator sessions for it (`subject_session_id`). Lifetime: `ttl_seconds` or 15 min, at
//! most 60 min.

use caracal_shared::exchange::TokenResponse;
use caracal_shared::mandate::{Claims, SubType, Use};

use super::sign::{now, response, ttl_for};
use crate::Sts;
use crate::error::StsError;
use crate::form::TokenForm;
use crate::store::{self, Application};

/// Default lifetime of a federated user's session mandate.
pub(crate) const FEDERATED_TTL_DEFAULT: std::time::Duration = std::time::Duration::from_secs(900);
/// Longest lifetime of a federated user's session mandate.
pub(crate) const FEDERATED_TTL_CAP: u64 = 3600;

impl Sts {
    pub(super) async fn federate(&self, form: &TokenForm, app: &Application, id_token: &str) -> Result<TokenResponse, StsError> {
        let zone_id = form.zone_id.as_str();
        let ttl = ttl_for(form.ttl_seconds, FEDERATED_TTL_DEFAULT, FEDERATED_TTL_CAP)?;
        let keys = self.keys.zone(zone_id).await?;
        let user = self.verify_id_token(zone_id, id_token).await?;
        let fresh = self.fresh_claims(zone_id, &user.sub, &app.id, Use::Session, SubType::User, ttl);
        let exp = chrono::DateTime::from_timestamp(fresh.exp, 0).unwrap_or_else(now);
        let subject = store::RootSubject::User { subject_id: &user.sub, issuer: &user.iss };
        store::insert_authority_record(&self.db, zone_id, &fresh.sid, &app.id, subject, exp).await?;
        let claims = Claims { root_sid: fresh.sid.clone(), ..fresh };
        let token = self.sign(&keys, &claims)?;
        self.metrics.exchanges.with_label_values(&[Use::Session.as_str()]).inc();
        Ok(response(token, ttl, "", Vec::new(), None, None))
    }
}
