//! **Resource exchange** — the gateway's signed per-request exchange with a gateway mandate as
//! `subject_token` ⇒ `use=resource`, `aud=[resource]`, plus the upstream directive.
//!
//! Narrowing (each rule in [`authorize`]): exactly one resource, targeted by the mandate; the
//! application still live (its traits go into the policy input like on every other flow); scopes
//! = the mandate's ∩ the resource's. On an **enforced** resource the request must be a declared
//! operation (method and path pattern) whose scope the mandate holds, and its path must be plain:
//! no `;` path parameters, backslashes or percent-encoded separators, dots, `%` or control
//! characters — each is read differently by some upstream (Tomcat's `..;`, `%2F` decoded after
//! routing), so such a path could reach an operation other than the one matched here.
//! Lifetime: `RESOURCE_MANDATE_TTL_SECONDS`, never past the gateway mandate's expiry. Delegated
//! authority is re-resolved against the live graph, so a suspended session stops its mandates
//! before any announcement. A step-up demand is settled only by an approval the mandate carries
//! and that covers this request; the gateway cannot hold a request for a human.

use std::collections::BTreeMap;

use caracal_shared::exchange::TokenResponse;
use caracal_shared::mandate::{Claims, Use};
use serde_json::json;

use super::grant::input;
use super::sign::{response, seconds_left};
use crate::Sts;
use crate::error::StsError;
use crate::form::TokenForm;
use crate::operations;
use crate::step_up;
use crate::store::Resource;

impl Sts {
    pub(super) async fn resource_exchange(&self, form: &TokenForm, subject: &str, request_id: &str) -> Result<TokenResponse, StsError> {
        let zone_id = form.zone_id.as_str();
        let mandate = self.verify_subject(zone_id, subject, Use::Gateway).await?;
        if form.application_id.as_deref() != Some(mandate.client_id.as_str()) {
            return Err(StsError::InvalidSubjectToken("application_id does not match the mandate"));
        }
        let [identifier] = form.resources.as_slice() else {
            return Err(StsError::InvalidRequest("the gateway exchange names exactly one resource".into()));
        };
        let (Some(method), Some(path)) = (form.request_method.as_deref(), form.request_path.as_deref()) else {
            return Err(StsError::InvalidRequest("request_method and request_path are required".into()));
        };
        if !mandate.targets(identifier) {
            return Err(StsError::AccessDenied("the mandate does not target this resource".into()));
        }
        self.require_live_anchors(zone_id, mandate.anchors())?;
        if let (Some(session), Some(edge)) = (&mandate.agent_session_id, &mandate.delegation_edge_id) {
            crate::delegation::resolve(&self.db, zone_id, &mandate.client_id, session, edge).await?;
        }
        let resource = self
            .catalog
            .resource(zone_id, identifier)
            .await?
            .ok_or_else(|| StsError::AccessDenied("policy denied (resource_not_found)".into()))?;
        // An archived application's mandates stop here even before its sessions' revocation lands.
        let app = self.catalog.application(zone_id, &mandate.client_id).await?.ok_or(StsError::SessionInactive)?;
        let scopes = authorize(&resource, &mandate, method, path)?;
        let keys = self.keys.zone(zone_id).await?;
        let action = json!({"id": "TokenExchange", "use": "resource", "method": method.to_ascii_uppercase(), "path": path});
        let granted = self
            .grant(zone_id, std::slice::from_ref(identifier), |r| {
                Ok(input(&app, zone_id, r, action.clone(), Some(&mandate), &scopes, request_id))
            })
            .await?;
        if let Some(demanded) = &granted.step_up {
            let subject = step_up::Subject {
                principal: &mandate.sub,
                authority_record_id: Some(&mandate.root_sid),
                agent_session_id: mandate.agent_session_id.as_deref(),
                delegation_edge_id: mandate.delegation_edge_id.as_deref(),
                ..granted.subject(zone_id, &mandate.client_id, std::slice::from_ref(identifier), &scopes)
            };
            let covered = match mandate.approval_id.as_deref() {
                Some(id) => self.inherited_covers(id, &subject, demanded).await?,
                None => false,
            };
            if !covered {
                return Err(StsError::AccessDenied(
                    "step-up required: obtain an approval covering this request when minting the gateway mandate".into(),
                ));
            }
        }
        let ttl = self.cfg.resource_ttl.as_secs().min(seconds_left(mandate.exp).max(1));
        // Resource mandates inherit the presented mandate's root and delegation, and narrow its scope.
        let claims = Claims {
            aud: vec![resource.identifier.clone()],
            scope: scopes.join(" "),
            root_sid: mandate.root_sid.clone(),
            target: vec![resource.identifier.clone()],
            agent_session_id: mandate.agent_session_id.clone(),
            delegation_edge_id: mandate.delegation_edge_id.clone(),
            delegation_path: mandate.delegation_path.clone(),
            delegation_chain: mandate.delegation_chain.clone(),
            hop_count: mandate.hop_count,
            delegation_graph_epoch: mandate.delegation_graph_epoch,
            approval_id: mandate.approval_id.clone(),
            ..self.fresh_claims(zone_id, &mandate.sub, &mandate.client_id, Use::Resource, mandate.sub_type, ttl)
        };
        let token = self.sign(&keys, &claims)?;
        let directive = self.directive(zone_id, &resource)?;
        self.metrics.exchanges.with_label_values(&[Use::Resource.as_str()]).inc();
        let upstreams = BTreeMap::from([(resource.identifier.clone(), directive)]);
        Ok(response(token, ttl, &claims.scope, vec![resource.identifier.clone()], Some(upstreams), granted.policy_version_id.clone()))
    }
}

/// The scopes the resource mandate carries (the mandate's ∩ the resource's), once an enforced
/// resource has matched the request to a declared operation whose scope the mandate holds.
fn authorize(resource: &Resource, mandate: &Claims, method: &str, path: &str) -> Result<Vec<String>, StsError> {
    let scopes: Vec<String> = mandate.scopes().filter(|s| resource.scopes.iter().any(|r| r == s)).map(str::to_owned).collect();
    if !resource.enforced() {
        return Ok(scopes);
    }
    if let Some(why) = operations::ambiguity(path) {
        return Err(StsError::OperationNotPermitted(format!(
            "the path is ambiguous ({why}); an enforced resource accepts only plain paths"
        )));
    }
    let op = resource.operations.iter().find(|op| op.matches(method, path)).ok_or_else(|| {
        StsError::OperationNotPermitted(format!("{} {path} is not a declared operation of this resource", method.to_ascii_uppercase()))
    })?;
    if !scopes.contains(&op.scope) {
        return Err(StsError::OperationNotPermitted(format!("the mandate lacks the scope {:?} this operation requires", op.scope)));
    }
    Ok(scopes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exchange::sign::tests::claims;
    use crate::operations::Operation;

    fn resource(enforcement: &str) -> Resource {
        let op = |method: &str, path: &str, scope: &str| Operation { method: method.into(), path: path.into(), scope: scope.into() };
        Resource {
            scopes: vec!["read".into(), "write".into(), "admin".into()],
            operations: sqlx::types::Json(vec![
                op("GET", "/items/*", "read"),
                op("POST", "/items", "write"),
                op("GET", "/admin/**", "admin"),
            ]),
            operation_enforcement: enforcement.into(),
            ..Resource::plain("http://up")
        }
    }

    #[test]
    fn declared_operations_and_their_scopes() {
        let m = claims(Use::Gateway); // scope "read write"
        let r = resource("enforced");
        assert_eq!(authorize(&r, &m, "GET", "/items/1").unwrap(), vec!["read", "write"]);
        assert!(authorize(&r, &m, "POST", "/items").is_ok());
        assert!(matches!(authorize(&r, &m, "DELETE", "/items/1"), Err(StsError::OperationNotPermitted(_))), "undeclared method");
        assert!(matches!(authorize(&r, &m, "GET", "/admin/users"), Err(StsError::OperationNotPermitted(_))), "scope not held");
        assert!(authorize(&resource("audit"), &m, "DELETE", "/anything").is_ok(), "only enforced resources check operations");
    }

    #[test]
    fn an_enforced_resource_refuses_paths_upstreams_read_differently() {
        let m = claims(Use::Gateway);
        let r = resource("enforced");
        for path in [
            "/items/..;/admin/users",
            "/items/x;jsessionid=1",
            "/items/a%2F..%2Fadmin",
            "/items/a%2f..%2fadmin",
            "/items/a%5C..%5Cadmin",
            "/items/a\\..\\admin",
            "/items/%2e%2e",
            "/items/%252F",
            "/items/a%00",
        ] {
            let err = authorize(&r, &m, "GET", path).unwrap_err();
            assert!(matches!(err, StsError::OperationNotPermitted(ref d) if d.contains("ambiguous")), "{path}: {err}");
        }
        assert!(authorize(&r, &m, "GET", "/items/caf%C3%A9").is_ok(), "ordinary escapes stay allowed");
    }
}
