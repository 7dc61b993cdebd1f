//! **MCP list visibility** — `POST /oauth/2/mcp/visible`, signed by the gateway like its
//! per-request exchange: holding a `tools/list` (`prompts/list`, `resources/list`,
//! `resources/templates/list`) response for the resource mandate it was just issued, the gateway
//! asks which of the listed names that mandate may use, so an agent never sees what it cannot call
//! (`docs/mcp.md` §3).
//!
//! The presented resource mandate must be live (signature, expiry, every anchor) and bound to a
//! listing of that kind (`mcp_calls`). Each name is decided as the call it stands for would be:
//! on an enforced resource it must be a declared MCP operation whose scope the mandate holds, and
//! the zone's policy must allow it, seeing `context.mcp` = `{kind: "request", method: <the call
//! method>, name | uri, listing: true}`. Anything else — a dependency failure included — is an
//! error, and the gateway then shows nothing (fail closed).

use caracal_shared::mcp::{Listing, Visible};
use serde_json::json;

use super::TokenRequest;
use super::grant::input;
use crate::Sts;
use crate::error::StsError;
use crate::form::TokenForm;

impl Sts {
    /// Decides which names of a listing stay visible.
    pub async fn mcp_visible(&self, req: TokenRequest<'_>) -> Result<Visible, StsError> {
        let form = TokenForm::parse(req.body)?;
        caracal_shared::zone_context::zone(&form.zone_id, self.visible_in_zone(&req, &form)).await
    }

    async fn visible_in_zone(&self, req: &TokenRequest<'_>, form: &TokenForm) -> Result<Visible, StsError> {
        let gw = req.gateway.as_ref().ok_or(StsError::InvalidGatewaySignature)?;
        self.verify_gateway_signature(gw, req, form).await?;
        let (Some(list), Some(subject)) = (&form.mcp_list, form.subject_token.as_deref()) else {
            return Err(StsError::InvalidRequest("mcp_list and subject_token (the resource mandate) are required".into()));
        };
        let zone_id = form.zone_id.as_str();
        let mandate = self.verify_resource_mandate(zone_id, subject).await?;
        if !mandate.mcp_calls.iter().any(|c| c.method == list.kind.list_method()) {
            return Err(StsError::AccessDenied(format!("the mandate was not issued for {}", list.kind.list_method())));
        }
        self.require_live_anchors(zone_id, mandate.anchors())?;
        let [identifier] = mandate.aud.as_slice() else {
            return Err(StsError::InvalidSubjectToken("a resource mandate names one audience"));
        };
        let resource =
            self.catalog.resource(zone_id, identifier).await?.ok_or_else(|| StsError::AccessDenied("resource_not_found".into()))?;
        let app = self.catalog.application(zone_id, &mandate.client_id).await?.ok_or(StsError::SessionInactive)?;
        let scopes: Vec<String> = mandate.scopes().map(str::to_owned).collect();
        let active = self.policies.active(zone_id).await?;
        let action = json!({"id": "TokenExchange", "use": "resource", "method": "POST", "path": null});
        let mut visible = Vec::new();
        for name in &list.names {
            if !declared(&resource, list, name, &scopes) {
                continue;
            }
            let mut doc = input(&app, zone_id, Some(&resource), action.clone(), Some(&mandate), &scopes, req.request_id);
            let (key, other) = if list.kind.by_uri() { ("uri", "name") } else { ("name", "uri") };
            doc["context"]["mcp"] = json!({"kind": "request", "method": list.kind.call_method(), key: name, other: null, "listing": true});
            let decision = self.policies.evaluate(zone_id, active.as_ref().as_ref(), doc).await?;
            self.metrics.policy_evaluations.with_label_values(&[if decision.allow { "allow" } else { "deny" }]).inc();
            if decision.allow {
                visible.push(name.clone());
            }
        }
        Ok(Visible { visible })
    }
}

/// On an enforced resource, whether the name is a declared operation the mandate has the scope for.
fn declared(resource: &crate::store::Resource, list: &Listing, name: &str, scopes: &[String]) -> bool {
    !resource.enforced()
        || resource.mcp_operations.iter().any(|op| op.matches(list.kind.call_method(), Some(name)) && scopes.contains(&op.scope))
}
