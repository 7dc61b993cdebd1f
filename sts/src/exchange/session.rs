//! **Session mint** — client credentials, no subject token ⇒ `use=session`, `aud=[issuer]`.
//!
//! Narrowing: each named resource must declare every requested scope (`scope_mismatch`); a mint
//! that names no resource is evaluated once without one. Lifetime: `ttl_seconds` or
//! `SESSION_TTL_SECONDS`, at most 3600 s. A root session (authority record) is written so that the
//! session, and everything derived from it (`root_sid`), can be revoked. A session is its own root.

use caracal_shared::exchange::TokenResponse;
use caracal_shared::mandate::{Claims, SubType, Use};
use serde_json::json;

use super::grant::{input, scopes_within};
use super::sign::{now, response, ttl_for};
use crate::Sts;
use crate::error::StsError;
use crate::form::TokenForm;
use crate::store::{self, Application};

impl Sts {
    pub(super) async fn session_mint(&self, form: &TokenForm, app: &Application, request_id: &str) -> Result<TokenResponse, StsError> {
        let zone_id = form.zone_id.as_str();
        let keys = self.keys.zone(zone_id).await?;
        let ttl = ttl_for(form.ttl_seconds, self.cfg.session_ttl, crate::config::SESSION_TTL_CAP)?;
        let granted = self
            .grant(zone_id, &form.resources, |resource| {
                if let Some(r) = resource
                    && !scopes_within(&form.scopes, &r.scopes)
                {
                    return Err("scope_mismatch".into());
                }
                Ok(input(app, zone_id, resource, json!({"id": "TokenExchange", "use": "session"}), None, &form.scopes, request_id))
            })
            .await?;
        let target = granted.targets();
        let subject = granted.subject(zone_id, &app.id, &form.resources, &form.scopes);
        let approval_id = self.step_up_gate(form, &granted, subject, None, request_id).await?;
        let fresh = self.fresh_claims(zone_id, &app.id, &app.id, Use::Session, SubType::Application, ttl);
        let exp = chrono::DateTime::from_timestamp(fresh.exp, 0).unwrap_or_else(now);
        store::insert_authority_record(&self.db, zone_id, &fresh.sid, &app.id, exp).await?;
        let claims = Claims { scope: form.scope_claim(), root_sid: fresh.sid.clone(), target: target.clone(), approval_id, ..fresh };
        let token = self.sign(&keys, &claims)?;
        self.metrics.exchanges.with_label_values(&[Use::Session.as_str()]).inc();
        Ok(response(token, ttl, &claims.scope, target, None, granted.policy_version_id.clone()))
    }
}
