//! **Gateway mint** — client credentials plus the caller's own session mandate as
//! `subject_token`, with `resource`, `scope` and `requested_token_type=urn:caracal:token-type:gateway-mandate`
//! ⇒ `use=gateway`, single use at the gateway. Without that `requested_token_type` the exchange is
//! refused 403, as the original refused every direct subject-token exchange: its published clients
//! cache minted tokens and would present a single-use one twice.
//!
//! Narrowing (each rule in [`narrow`]): the session must be the caller's own and alive; at least one
//! resource; resources within the session's targets when it has any; scopes within each
//! resource's declared scopes (`scope_mismatch`). Lifetime: `ttl_seconds` or
//! `GATEWAY_MANDATE_TTL_SECONDS` (cap 900 s), never past the session's expiry. The session's
//! approval passes on only if it covers this request ([`crate::step_up::covers`]).

use caracal_shared::exchange::TokenResponse;
use caracal_shared::mandate::{Claims, Use};
use serde_json::json;

use super::grant::{input, scopes_within};
use super::sign::{response, seconds_left, ttl_for};
use crate::Sts;
use crate::error::StsError;
use crate::form::TokenForm;
use crate::step_up;
use crate::store::Application;

impl Sts {
    pub(super) async fn gateway_mint(
        &self,
        form: &TokenForm,
        app: &Application,
        subject: &str,
        request_id: &str,
    ) -> Result<TokenResponse, StsError> {
        let zone_id = form.zone_id.as_str();
        let session = self.verify_subject(zone_id, subject, Use::Session).await?;
        narrow(&session, app, &form.resources)?;
        self.require_live_anchors(zone_id, session.anchors())?;
        let keys = self.keys.zone(zone_id).await?;
        let ttl = ttl_for(form.ttl_seconds, self.cfg.gateway_ttl, crate::config::DERIVED_TTL_CAP)?.min(seconds_left(session.exp));
        if ttl == 0 {
            return Err(StsError::InvalidSubjectToken("expired"));
        }
        let granted = self
            .grant(zone_id, &form.resources, |resource| {
                let r = resource.expect("gateway mints name resources");
                if !scopes_within(&form.scopes, &r.scopes) {
                    return Err("scope_mismatch".into());
                }
                let action = json!({"id": "TokenExchange", "use": "gateway"});
                Ok(input(app, zone_id, resource, action, Some(&session), &form.scopes, request_id))
            })
            .await?;
        let target = granted.targets();
        let subject = step_up::Subject {
            principal: &session.sub,
            authority_record_id: Some(&session.root_sid),
            ..granted.subject(zone_id, &app.id, &form.resources, &form.scopes)
        };
        let approval_id = self.step_up_gate(form, &granted, subject, session.approval_id.as_deref(), request_id).await?;
        let claims = Claims {
            scope: form.scope_claim(),
            root_sid: session.root_sid.clone(),
            target: target.clone(),
            approval_id,
            ..self.fresh_claims(zone_id, &session.sub, &app.id, Use::Gateway, session.sub_type, ttl)
        };
        let token = self.sign(&keys, &claims)?;
        self.metrics.exchanges.with_label_values(&[Use::Gateway.as_str()]).inc();
        Ok(response(token, ttl, &claims.scope, target, None, granted.policy_version_id.clone()))
    }
}

/// The session is the caller's own, and the resources are named and within its targets.
fn narrow(session: &Claims, app: &Application, resources: &[String]) -> Result<(), StsError> {
    if session.client_id != app.id {
        return Err(StsError::InvalidSubjectToken("subject_token belongs to another application"));
    }
    if resources.is_empty() {
        return Err(StsError::InvalidRequest("at least one resource is required".into()));
    }
    if !session.target.is_empty()
        && let Some(outside) = resources.iter().find(|r| !session.targets(r))
    {
        return Err(StsError::AccessDenied(format!("resource {outside} is outside the session's targets")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exchange::sign::tests::claims;

    fn app(id: &str) -> Application {
        Application { id: id.into(), name: String::new(), client_secret_sha256: vec![], traits: vec![], expires_at: None }
    }

    #[test]
    fn narrowing_rules() {
        let session = claims(Use::Session);
        let api = vec!["https://api".to_owned()];
        assert!(narrow(&session, &app("app"), &api).is_ok());
        assert!(matches!(narrow(&session, &app("other"), &api), Err(StsError::InvalidSubjectToken(_))), "another app's session");
        assert!(matches!(narrow(&session, &app("app"), &[]), Err(StsError::InvalidRequest(_))), "no resource");
        let outside = vec!["https://elsewhere".to_owned()];
        assert!(matches!(narrow(&session, &app("app"), &outside), Err(StsError::AccessDenied(_))), "outside the targets");
        let untargeted = Claims { target: vec![], ..session };
        assert!(narrow(&untargeted, &app("app"), &outside).is_ok(), "a session without targets limits nothing");
    }
}
