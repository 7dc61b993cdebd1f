//! **Session mint** — client credentials, no subject token ⇒ `use=session`, `aud=[issuer]`.
//!
//! Narrowing: each named resource must declare every requested scope (`scope_mismatch`), except
//! `agent:lifecycle`, which every resource with an upstream implies (as in the original: the SDK's
//! bootstrap mint asks it for each resource it was configured with); a mint that names no
//! resource is evaluated once without one. The zone's policy decides either way. Lifetime: `ttl_seconds` or
//! `SESSION_TTL_SECONDS`, at most 3600 s. A root session (authority record) is written so that the
//! session, and everything derived from it (`root_sid`), can be revoked. A session is its own root.
//!
//! **Session-bound** (`agent_session_id` without `delegation_edge_id`, as the SDK sends from a
//! session that holds no delegation): the agent session must be live and the caller's, and such a
//! session holds lifecycle authority only — asking any scope but `agent:lifecycle` is 403
//! `access_denied` (authority over resources travels through a delegation edge). The mandate
//! carries `agent_session_id`.

use caracal_shared::exchange::TokenResponse;
use caracal_shared::mandate::{Claims, SubType, Use};
use serde_json::json;

use super::grant::input;
use super::sign::{now, response, ttl_for};
use crate::Sts;
use crate::error::StsError;
use crate::form::TokenForm;
use crate::store::{self, Application, Resource};

/// The scope a runtime's session mandate carries for the Coordinator.
pub(crate) const LIFECYCLE_SCOPE: &str = "agent:lifecycle";

impl Sts {
    pub(super) async fn session_mint(
        &self,
        form: &TokenForm,
        app: &Application,
        bound: Option<&str>,
        request_id: &str,
    ) -> Result<TokenResponse, StsError> {
        let zone_id = form.zone_id.as_str();
        if let Some(agent_session_id) = bound {
            self.require_own_live_session(zone_id, &app.id, agent_session_id).await?;
            if let Some(other) = form.scopes.iter().find(|s| *s != LIFECYCLE_SCOPE) {
                return Err(StsError::AccessDenied(format!(
                    "the agent session holds lifecycle authority only ({other} needs a delegation_edge_id)"
                )));
            }
        }
        let keys = self.keys.zone(zone_id).await?;
        let ttl = ttl_for(form.ttl_seconds, self.cfg.session_ttl, crate::config::SESSION_TTL_CAP)?;
        let granted = self
            .grant(zone_id, &form.resources, |resource| {
                if let Some(r) = resource
                    && !session_scopes_within(&form.scopes, r)
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
        store::insert_authority_record(&self.db, zone_id, &fresh.sid, &app.id, store::RootSubject::Application, exp).await?;
        let claims = Claims {
            scope: form.scope_claim(),
            root_sid: fresh.sid.clone(),
            target: target.clone(),
            approval_id,
            agent_session_id: bound.map(str::to_owned),
            ..fresh
        };
        let token = self.sign(&keys, &claims)?;
        self.metrics.exchanges.with_label_values(&[Use::Session.as_str()]).inc();
        Ok(response(token, ttl, &claims.scope, target, None, granted.policy_version_id.clone()))
    }
}

impl Sts {
    /// Refuses (403) an agent session that is unknown, another application's, not live, or revoked.
    async fn require_own_live_session(&self, zone_id: &str, app_id: &str, agent_session_id: &str) -> Result<(), StsError> {
        let (live,): (bool,) = sqlx::query_as(
            "SELECT EXISTS (SELECT 1 FROM agent_sessions WHERE zone_id = $1 AND id = $2 AND application_id = $3 AND status = 'active' \
             AND expires_at > now() AND (heartbeat_deadline_at IS NULL OR heartbeat_deadline_at > now()))",
        )
        .bind(zone_id)
        .bind(agent_session_id)
        .bind(app_id)
        .fetch_one(&self.db)
        .await?;
        if !live {
            return Err(StsError::AccessDenied("the agent session is not a live session of this application".into()));
        }
        self.require_live_anchors(zone_id, [agent_session_id])
    }
}

/// Whether `resource` declares every requested scope, `agent:lifecycle` being implied by a
/// resource with an upstream.
fn session_scopes_within(requested: &[String], resource: &Resource) -> bool {
    requested.iter().all(|s| resource.scopes.contains(s) || (s == LIFECYCLE_SCOPE && !resource.upstream_url.is_empty()))
}
