//! **Delegated mint** (the SDK path) — client credentials plus `agent_session_id` and
//! `delegation_edge_id`, no subject token ⇒ `use=gateway` carrying the lineage
//! (`delegation_path`, `delegation_chain`, `hop_count`, `delegation_graph_epoch`).
//!
//! The lineage is resolved from the live graph ([`crate::delegation::resolve`]): every session and
//! edge on the chain active, unexpired, contiguous, within its hop limit, none revoked. Narrowing
//! (each rule in [`narrow`]): at least one resource and one scope; scopes within the leaf edge's;
//! resources within the leaf edge's when it names any; each resource declares the scopes. Lifetime:
//! `ttl_seconds` or `GATEWAY_MANDATE_TTL_SECONDS` (cap 900 s), never past the earliest expiry on
//! the chain nor the leaf edge's `max_ttl_seconds`.

use caracal_shared::exchange::TokenResponse;
use caracal_shared::mandate::{Claims, SubType, Use};
use chrono::{DateTime, Utc};
use serde_json::json;

use super::grant::{input, scopes_within};
use super::sign::{now, response, ttl_for};
use crate::Sts;
use crate::delegation::Lineage;
use crate::error::StsError;
use crate::form::TokenForm;
use crate::step_up;
use crate::store::Application;

impl Sts {
    pub(super) async fn delegated_mint(
        &self,
        form: &TokenForm,
        app: &Application,
        agent_session_id: &str,
        edge_id: &str,
        request_id: &str,
    ) -> Result<TokenResponse, StsError> {
        let zone_id = form.zone_id.as_str();
        if form.resources.is_empty() || form.scopes.is_empty() {
            return Err(StsError::InvalidRequest("a delegated mint names at least one resource and one scope".into()));
        }
        let lineage = crate::delegation::resolve(&self.db, zone_id, &app.id, agent_session_id, edge_id).await?;
        self.require_live_anchors(zone_id, lineage.anchors.iter().map(String::as_str).chain([lineage.root_sid.as_str()]))?;
        narrow(&lineage, &form.scopes, &form.resources)?;
        let keys = self.keys.zone(zone_id).await?;
        let requested = ttl_for(form.ttl_seconds, self.cfg.gateway_ttl, crate::config::DERIVED_TTL_CAP)?;
        let ttl = lifetime(requested, &lineage, now());
        if ttl == 0 {
            return Err(StsError::AccessDenied("delegation refused: the chain expires now".into()));
        }
        let delegation = json!({
            "id": lineage.edge_id, "agent_session_id": lineage.agent_session_id, "path": lineage.path,
            "hop_count": lineage.path.len(), "graph_epoch": lineage.epoch, "scopes": lineage.scopes, "resources": lineage.resources,
        });
        let granted = self
            .grant(zone_id, &form.resources, |resource| {
                let r = resource.expect("delegated mints name resources");
                if !scopes_within(&form.scopes, &r.scopes) {
                    return Err("scope_mismatch".into());
                }
                let mut doc =
                    input(app, zone_id, resource, json!({"id": "TokenExchange", "use": "gateway"}), None, &form.scopes, request_id);
                doc["principal"]["agent_session_id"] = json!(lineage.agent_session_id);
                doc["delegation_edge"] = delegation.clone();
                Ok(doc)
            })
            .await?;
        let target = granted.targets();
        let subject = step_up::Subject {
            authority_record_id: Some(&lineage.root_sid),
            agent_session_id: Some(&lineage.agent_session_id),
            delegation_edge_id: Some(&lineage.edge_id),
            ..granted.subject(zone_id, &app.id, &form.resources, &form.scopes)
        };
        let approval_id = self.step_up_gate(form, &granted, subject, None, request_id).await?;
        let claims = Claims {
            approval_id,
            scope: form.scope_claim(),
            root_sid: lineage.root_sid.clone(),
            target: target.clone(),
            agent_session_id: Some(lineage.agent_session_id.clone()),
            delegation_edge_id: Some(lineage.edge_id.clone()),
            hop_count: Some(lineage.path.len() as u32),
            delegation_graph_epoch: Some(lineage.epoch.max(0) as u64),
            delegation_path: lineage.path,
            delegation_chain: lineage.chain,
            ..self.fresh_claims(zone_id, &app.id, &app.id, Use::Gateway, SubType::Application, ttl)
        };
        let token = self.sign(&keys, &claims)?;
        self.metrics.exchanges.with_label_values(&["gateway_delegated"]).inc();
        Ok(response(token, ttl, &claims.scope, target, None, granted.policy_version_id.clone()))
    }
}

/// Scopes within the leaf edge's; resources within the leaf edge's when it names any.
fn narrow(lineage: &Lineage, scopes: &[String], resources: &[String]) -> Result<(), StsError> {
    if let Some(extra) = scopes.iter().find(|s| !lineage.scopes.contains(s)) {
        return Err(StsError::AccessDenied(format!("delegation scope exceeded ({extra})")));
    }
    if !lineage.resources.is_empty()
        && let Some(outside) = resources.iter().find(|r| !lineage.resources.contains(r))
    {
        return Err(StsError::AccessDenied(format!("resource {outside} is outside the delegation")));
    }
    Ok(())
}

/// The requested lifetime, cut to the chain's earliest expiry and the leaf's `max_ttl_seconds`.
fn lifetime(requested: u64, lineage: &Lineage, now: DateTime<Utc>) -> u64 {
    let mut ttl = requested.min((lineage.expires_at - now).num_seconds().max(0) as u64);
    if let Some(max) = lineage.max_ttl_seconds {
        ttl = ttl.min(max.max(0) as u64);
    }
    ttl
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lineage() -> Lineage {
        Lineage {
            root_sid: "root".into(),
            agent_session_id: "agent".into(),
            edge_id: "e2".into(),
            scopes: vec!["read".into()],
            resources: vec!["https://api".into()],
            expires_at: Utc::now() + chrono::Duration::seconds(100),
            max_ttl_seconds: None,
            path: vec!["e1".into(), "e2".into()],
            chain: vec![],
            epoch: 3,
            anchors: vec![],
        }
    }

    #[test]
    fn narrows_to_the_leaf_edge() {
        let l = lineage();
        let (read, write) = (vec!["read".to_owned()], vec!["write".to_owned()]);
        let (api, other) = (vec!["https://api".to_owned()], vec!["https://other".to_owned()]);
        assert!(narrow(&l, &read, &api).is_ok());
        assert!(narrow(&l, &write, &api).unwrap_err().to_string().contains("scope exceeded"));
        assert!(narrow(&l, &read, &other).unwrap_err().to_string().contains("outside the delegation"));
        let unbounded = Lineage { resources: vec![], ..lineage() };
        assert!(narrow(&unbounded, &read, &other).is_ok(), "an edge without resources limits scopes only");
    }

    #[test]
    fn lifetime_never_outlives_the_chain_or_the_edge_limit() {
        let now = Utc::now();
        let l = lineage();
        assert!((99..=100).contains(&lifetime(900, &l, now)), "cut to the chain's expiry");
        assert_eq!(lifetime(30, &l, now), 30);
        assert_eq!(lifetime(900, &Lineage { max_ttl_seconds: Some(20), ..lineage() }, now), 20);
        assert_eq!(lifetime(900, &Lineage { expires_at: now - chrono::Duration::seconds(1), ..lineage() }, now), 0);
    }
}
