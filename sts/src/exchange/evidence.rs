//! Evidence of decided exchanges (`token_exchange` events on the audit stream).

use caracal_shared::exchange::TokenResponse;
use caracal_shared::jws::Compact;
use caracal_shared::mandate::Claims;
use serde_json::json;

use super::TokenRequest;
use crate::Sts;
use crate::error::StsError;
use crate::form::TokenForm;

impl Sts {
    /// Evidence of a decided exchange (`token_exchange`): who asked for what, the decision and
    /// the reason code, the mandate's anchors and `jti` on an allow. Never a token or a secret.
    /// Called only for authenticated callers (a client whose secret matched, or the gateway):
    /// unauthenticated requests name a zone of their choosing and are only counted. Malformed
    /// requests leave no row either. Refused per-request exchanges are recorded here; allowed ones
    /// by the gateway.
    pub(super) async fn record(&self, req: &TokenRequest<'_>, form: &TokenForm, out: &Result<TokenResponse, StsError>) {
        let Some(tx) = self.evidence.get() else { return };
        if !caracal_shared::mandate::is_valid_id(&form.zone_id) || matches!(out, Err(StsError::InvalidRequest(_) | StsError::ZoneNotFound))
        {
            return;
        }
        // An allowed per-request exchange is evidenced by the gateway's own event for the same
        // request id (it knows the outcome upstream too); one row per governed call, not two.
        if req.gateway.is_some() && out.is_ok() {
            return;
        }
        let federation = form.subject_token_type == Some(crate::form::SubjectTokenType::IdToken);
        let class = match (req.gateway.is_some(), form.subject_token.is_some(), form.delegation_edge_id.is_some()) {
            (true, ..) => "resource_exchange",
            (false, true, _) if federation => "subject_federation",
            (false, _, true) => "delegated_mint",
            (false, true, false) => "gateway_mint",
            (false, false, false) => "session_mint",
        };
        let mut meta = json!({
            "class": class,
            "application_id": form.application_id,
            "resources": form.resources,
            "requested_scopes": form.scopes,
            "agent_session_id": form.agent_session_id,
            "delegation_edge_id": form.delegation_edge_id,
            "approval_id": form.approval_id,
            "method": form.request_method,
            "path": form.request_path,
        });
        if let Some(mcp) = &form.mcp {
            // Which tool, prompt or resource was refused (names and URIs; never arguments).
            meta["mcp"] = serde_json::to_value(mcp).unwrap_or_default();
        }
        let (decision, status) = match out {
            Ok(resp) => {
                meta["policy_version_id"] = resp.policy_version_id.clone().into();
                if let Ok(c) = Compact::parse(&resp.access_token).and_then(|t| t.claims::<Claims>()) {
                    meta["session_id"] = c.sid.into();
                    meta["root_sid"] = c.root_sid.into();
                    meta["jti"] = c.jti.into();
                    meta["use"] = c.token_use.as_str().into();
                    if federation {
                        // The federated subject: an IdP's user id, not a secret.
                        meta["subject_id"] = c.sub.into();
                        meta["sub_type"] = "user".into();
                        // Decided by the issuer registration, not by the zone's policy.
                        meta["determining_policy"] = "caracal-subject-federation".into();
                    }
                    meta["expires_at"] = c.exp.into();
                    if c.agent_session_id.is_some() {
                        meta["agent_session_id"] = c.agent_session_id.into();
                    }
                }
                ("allow", "complete".to_owned())
            }
            Err(e) => {
                meta["reason"] = e.wire().2.into();
                ("deny", e.metric_label().to_owned())
            }
        };
        let event = caracal_shared::audit::AuditEvent::new(&form.zone_id, "token_exchange", req.request_id, decision, &status, meta);
        caracal_shared::audit::enqueue(tx, event).await;
    }
}
