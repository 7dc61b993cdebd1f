//! Asking the zone's policy: one evaluation per requested resource, the input document built the
//! same way for every flow (`docs/policy.md`), and what the allowing decisions demand.

use std::sync::Arc;

use caracal_shared::mandate::Claims;
use serde_json::{Value, json};

use crate::Sts;
use crate::error::StsError;
use crate::policy;
use crate::step_up;
use crate::store::{Application, Resource};

/// What the policy granted for one request.
pub(super) struct Grant {
    /// The granted resources in request order (`None`: a mint that names no resource).
    pub(super) resources: Vec<Option<Arc<Resource>>>,
    /// The step-up the allowing decisions demand.
    pub(super) step_up: Option<step_up::Requirement>,
    /// The policy version that decided.
    pub(super) policy_version_id: Option<String>,
}

impl Grant {
    /// What a step-up for this grant is bound to: the mint as `app_id` asked for it, with no lineage
    /// (flows that have one add it).
    pub(super) fn subject<'a>(
        &'a self,
        zone_id: &'a str,
        app_id: &'a str,
        resources: &'a [String],
        scopes: &'a [String],
    ) -> step_up::Subject<'a> {
        step_up::Subject {
            zone_id,
            application_id: app_id,
            principal: app_id,
            authority_record_id: None,
            agent_session_id: None,
            delegation_edge_id: None,
            resources,
            scopes,
            policy_version_id: self.policy_version_id.as_deref(),
        }
    }

    /// Identifiers of the granted resources.
    pub(super) fn targets(&self) -> Vec<String> {
        self.resources.iter().flatten().map(|r| r.identifier.clone()).collect()
    }
}

impl Sts {
    /// Evaluates the policy for each requested resource; returns the granted ones in order, with
    /// the step-up the allowing decisions demand. `check` applies the flow's own narrowing to a
    /// resource and builds its input, or names why the resource is refused.
    pub(super) async fn grant(
        &self,
        zone_id: &str,
        resources: &[String],
        check: impl Fn(Option<&Resource>) -> Result<Value, String>,
    ) -> Result<Grant, StsError> {
        let active = self.policies.active(zone_id).await?;
        let mut granted = Vec::new();
        let mut step_up_decls: Vec<Value> = Vec::new();
        let mut first_reason: Option<String> = None;
        let mut candidates: Vec<Option<Arc<Resource>>> = Vec::new();
        if resources.is_empty() {
            candidates.push(None);
        }
        for identifier in resources {
            match self.catalog.resource(zone_id, identifier).await? {
                Some(r) => candidates.push(Some(r)),
                None => {
                    first_reason.get_or_insert_with(|| "resource_not_found".into());
                }
            }
        }
        for resource in candidates {
            let input = match check(resource.as_deref()) {
                Ok(input) => input,
                Err(reason) => {
                    first_reason.get_or_insert(reason);
                    continue;
                }
            };
            let decision = self.policies.evaluate(zone_id, active.as_ref().as_ref(), input).await?;
            self.metrics.policy_evaluations.with_label_values(&[if decision.allow { "allow" } else { "deny" }]).inc();
            if decision.allow {
                granted.push(resource);
                let decls = decision.diagnostics.as_array().into_iter().flatten().filter(|d| d.get("step_up_required").is_some());
                step_up_decls.extend(decls.cloned());
            } else {
                first_reason.get_or_insert_with(|| decision.reason().unwrap_or("policy_denied").to_owned());
            }
        }
        if granted.is_empty() {
            return Err(StsError::AccessDenied(match first_reason {
                Some(r) => format!("policy denied ({r})"),
                None => "policy denied".into(),
            }));
        }
        Ok(Grant {
            resources: granted,
            step_up: step_up::requirement(&step_up_decls)?,
            policy_version_id: active.as_ref().as_ref().map(|p| p.version_id.clone()),
        })
    }
}

/// Whether every requested scope is one of `allowed`.
pub(super) fn scopes_within(requested: &[String], allowed: &[String]) -> bool {
    requested.iter().all(|s| allowed.contains(s))
}

/// The policy input document (see `docs/policy.md`). Every flow passes the application as the
/// catalog knows it, traits included: a deny-list policy keyed on traits must see them on every
/// exchange, the per-request one too.
pub(super) fn input(
    app: &Application,
    zone_id: &str,
    resource: Option<&Resource>,
    action: Value,
    presented: Option<&Claims>,
    requested_scopes: &[String],
    request_id: &str,
) -> Value {
    json!({
        "schema_version": policy::INPUT_SCHEMA_VERSION,
        "principal": {"type": "Application", "id": app.id, "zone_id": zone_id, "traits": app.traits},
        "resource": resource.map(|r| json!({"type": "Resource", "id": r.id, "identifier": r.identifier, "scopes": r.scopes})),
        "action": action,
        "session": presented.map(|c| json!({"id": c.sid, "root_id": c.root_sid})),
        "context": {
            "requested_scopes": requested_scopes,
            "subject_claims": presented.map(|c| json!({
                "use": c.token_use.as_str(), "scope": c.scope, "target": c.target, "sub": c.sub, "sub_type": c.sub_type,
                "approval_id": c.approval_id,
            })),
            "request_id": request_id,
        },
    })
}
