//! What the original's admin client asks about policies besides storing them (issue 14):
//! templates to start from, a simulation of a stored version against an input without activating
//! it, and whether an activation took effect.
//!
//! * `GET /v1/policy-templates`: the example policies of `docs/policies/` (the ones the tests run).
//! * `POST /v1/zones/{z}/policy-sets/{id}/simulate {version_id, input}`: the version's decision for
//!   `input` (the policy input document, `docs/policy.md`), evaluated off the async workers within
//!   [`SIMULATE_BUDGET`]; nothing is activated, cached or recorded as a decision.
//! * `GET /v1/zones/{z}/policy-sets/{id}/activation-status?version_id=`: the zone's active version,
//!   whether it is this set's (and the version asked about), and the version this instance's STS
//!   has loaded.

use std::collections::HashMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};
use crate::extract::AppQuery;
use crate::extract::{AdminPrincipal, AppJson};
use crate::state::AppState;

/// Longest a simulation may evaluate.
const SIMULATE_BUDGET: std::time::Duration = std::time::Duration::from_secs(1);

/// The templates: id, what it does, its source.
const TEMPLATES: [(&str, &str, &str); 6] = [
    (
        "allow-applications",
        "allows every application: plumbing checks only",
        include_str!("../../../docs/policies/allow-applications.rego"),
    ),
    ("freeze-zone", "denies everything with a reason the client sees", include_str!("../../../docs/policies/freeze-zone.rego")),
    ("per-resource-scopes", "one resource, its declared scopes", include_str!("../../../docs/policies/per-resource-scopes.rego")),
    ("agent-labels", "least privilege from application traits", include_str!("../../../docs/policies/agent-labels.rego")),
    (
        "writes-need-approval",
        "step-up: any *.write scope needs an operator's approval",
        include_str!("../../../docs/policies/writes-need-approval.rego"),
    ),
    ("mcp-tools", "MCP by name: plumbing, read_* tools, one prompt, one resource", include_str!("../../../docs/policies/mcp-tools.rego")),
];

/// Routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/policy-templates", get(templates))
        .route("/v1/zones/{zone_id}/policy-sets/{id}/simulate", post(simulate))
        .route("/v1/zones/{zone_id}/policy-sets/{id}/activation-status", get(activation_status))
}

async fn templates(_who: AdminPrincipal) -> Json<Value> {
    Json(Value::Array(
        TEMPLATES
            .iter()
            .map(|(id, description, content)| json!({"id": id, "name": id, "description": description, "content": content}))
            .collect(),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SimulateBody {
    version_id: String,
    input: Option<Value>,
    /// Replay the zone's last `n` recorded exchanges (1..200) instead of one input.
    recent_requests: Option<i64>,
}

/// Most recorded exchanges one simulation replays.
const MAX_RECENT: i64 = 200;

async fn simulate(
    State(state): State<AppState>,
    who: AdminPrincipal,
    Path((zone_id, set_id)): Path<(String, String)>,
    AppJson(b): AppJson<SimulateBody>,
) -> ApiResult<Json<Value>> {
    who.require_zone(&zone_id)?;
    let modules = caracal_sts::policy::version_modules(&state.db, &zone_id, &set_id, &b.version_id)
        .await?
        .ok_or_else(|| ApiError::not_found("policy_version_not_found"))?;
    if let Some(n) = b.recent_requests {
        if !(1..=MAX_RECENT).contains(&n) || b.input.is_some() {
            return Err(ApiError::bad_request("invalid_body", format!("recent_requests is 1..{MAX_RECENT}, without input")));
        }
        return replay(&state, &zone_id, &set_id, &b.version_id, modules, n).await;
    }
    let input = b.input.unwrap_or_else(|| json!({}));
    let (set, version) = (set_id.clone(), b.version_id.clone());
    let run = tokio::task::spawn_blocking(move || {
        let compiled = caracal_sts::policy::compile_modules(&modules)?;
        let policy = caracal_sts::policy::ActivePolicy::new(set, version, compiled);
        caracal_sts::policy::evaluate(Some(&policy), &input).map_err(|e| e.to_string())
    });
    let failed = |e: String| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "policy_eval_failed", e);
    let decision = tokio::time::timeout(SIMULATE_BUDGET, run)
        .await
        .map_err(|_| failed(format!("the evaluation took longer than {SIMULATE_BUDGET:?}")))?
        .map_err(|e| failed(e.to_string()))?
        .map_err(failed)?;
    Ok(Json(json!({
        "zone_id": zone_id,
        "policy_set_id": set_id,
        "version_id": b.version_id,
        "result": {
            "decision": if decision.allow { "allow" } else { "deny" },
            "determining_policies": decision.determining_policies,
            "diagnostics": decision.diagnostics,
        },
    })))
}

/// Replays the zone's last `n` recorded token exchanges (the STS's `token_exchange` evidence:
/// every client mint, and refused per-request exchanges) against the version: each input is rebuilt
/// from the record (application with its current traits, resources with their current scopes, the
/// flow's `use`, method, path, requested scopes) and the decision compared with the recorded one.
async fn replay(state: &AppState, zone_id: &str, set_id: &str, version_id: &str, modules: Vec<String>, n: i64) -> ApiResult<Json<Value>> {
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT request_id, decision, event FROM audit_events WHERE zone_id = $1 AND event_type = 'token_exchange' ORDER BY seq DESC LIMIT $2",
    )
    .bind(zone_id)
    .bind(n)
    .fetch_all(&state.db)
    .await?;
    let mut inputs = Vec::with_capacity(rows.len());
    // Records repeat applications and resources: each is read once per replay.
    let mut traits_of: HashMap<String, Vec<String>> = HashMap::new();
    let mut resource_of: HashMap<String, Option<Value>> = HashMap::new();
    for (request_id, recorded, event) in &rows {
        let meta = serde_json::from_str::<Value>(event).unwrap_or_default()["metadata_json"].clone();
        let app_id = meta["application_id"].as_str().unwrap_or_default().to_owned();
        if !traits_of.contains_key(&app_id) {
            let traits: Option<Vec<String>> = sqlx::query_scalar("SELECT traits FROM applications WHERE zone_id = $1 AND id = $2")
                .bind(zone_id)
                .bind(&app_id)
                .fetch_optional(&state.db)
                .await?;
            traits_of.insert(app_id.clone(), traits.unwrap_or_default());
        }
        let traits = &traits_of[&app_id];
        let resources: Vec<String> = serde_json::from_value(meta["resources"].clone()).unwrap_or_default();
        let use_ = match meta["class"].as_str() {
            Some("session_mint" | "subject_federation") => "session",
            Some("resource_exchange") => "resource",
            _ => "gateway",
        };
        // One evaluation per resource, as the STS does (once with none for a session mint without).
        let mut per_resource = Vec::new();
        for identifier in resources.iter().map(Some).chain(resources.is_empty().then_some(None)) {
            let resource = match identifier {
                Some(i) => {
                    if !resource_of.contains_key(i) {
                        let row: Option<(String, Vec<String>)> = sqlx::query_as(
                            "SELECT id, scopes FROM resources WHERE zone_id = $1 AND identifier = $2 AND archived_at IS NULL",
                        )
                        .bind(zone_id)
                        .bind(i)
                        .fetch_optional(&state.db)
                        .await?;
                        let described = row.map(|(id, scopes)| json!({"type": "Resource", "id": id, "identifier": i, "scopes": scopes}));
                        resource_of.insert(i.clone(), described);
                    }
                    resource_of[i].clone()
                }
                None => None,
            };
            per_resource.push(json!({
                "schema_version": caracal_sts::policy::INPUT_SCHEMA_VERSION,
                "principal": {"type": "Application", "id": app_id, "zone_id": zone_id, "traits": traits},
                "resource": resource,
                "action": {"id": "TokenExchange", "use": use_, "method": meta["method"], "path": meta["path"]},
                "context": {"requested_scopes": meta["requested_scopes"], "request_id": request_id, "replayed": true},
            }));
        }
        inputs.push((request_id.clone(), recorded.clone(), per_resource));
    }
    let (set, version) = (set_id.to_owned(), version_id.to_owned());
    let run = tokio::task::spawn_blocking(move || -> Result<Vec<Value>, String> {
        let policy = caracal_sts::policy::ActivePolicy::new(set, version, caracal_sts::policy::compile_modules(&modules)?);
        inputs
            .into_iter()
            .map(|(request_id, recorded, per_resource)| {
                // A mint is allowed when some requested resource is (the STS grants the allowed ones).
                let mut allow = false;
                for input in &per_resource {
                    allow |= caracal_sts::policy::evaluate(Some(&policy), input).map_err(|e| e.to_string())?.allow;
                }
                let decision = if allow { "allow" } else { "deny" };
                Ok(json!({"request_id": request_id, "recorded": recorded, "decision": decision, "changed": decision != recorded}))
            })
            .collect()
    });
    let failed = |e: String| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "policy_eval_failed", e);
    let results = tokio::time::timeout(SIMULATE_BUDGET * 5, run)
        .await
        .map_err(|_| failed("the replay took too long".into()))?
        .map_err(|e| failed(e.to_string()))?
        .map_err(failed)?;
    let count = |f: &dyn Fn(&Value) -> bool| results.iter().filter(|r| f(r)).count();
    Ok(Json(json!({
        "zone_id": zone_id,
        "policy_set_id": set_id,
        "version_id": version_id,
        "summary": {
            "replayed": results.len(),
            "allow": count(&|r| r["decision"] == "allow"),
            "deny": count(&|r| r["decision"] == "deny"),
            "changed": count(&|r| r["changed"] == true),
        },
        "results": results,
    })))
}

#[derive(Deserialize)]
struct StatusQuery {
    version_id: Option<String>,
    outbox_id: Option<String>,
}

async fn activation_status(
    State(state): State<AppState>,
    who: AdminPrincipal,
    Path((zone_id, set_id)): Path<(String, String)>,
    AppQuery(q): AppQuery<StatusQuery>,
) -> ApiResult<Json<Value>> {
    who.require_zone(&zone_id)?;
    let set: Option<(String,)> = sqlx::query_as("SELECT id FROM policy_sets WHERE zone_id = $1 AND id = $2 AND archived_at IS NULL")
        .bind(&zone_id)
        .bind(&set_id)
        .fetch_optional(&state.db)
        .await?;
    set.ok_or_else(|| ApiError::not_found("policy_set_not_found"))?;
    let active: Option<(String, String)> = sqlx::query_as("SELECT policy_set_id, version_id FROM zone_active_policies WHERE zone_id = $1")
        .bind(&zone_id)
        .fetch_optional(&state.db)
        .await?;
    let active_version = active.as_ref().filter(|(s, _)| *s == set_id).map(|(_, v)| v.clone());
    let loaded = state.sts.policies.active(&zone_id).await.ok().and_then(|p| p.as_ref().as_ref().map(|p| p.version_id.clone()));
    let asked = q.version_id.clone();
    Ok(Json(json!({
        "zone_id": zone_id,
        "policy_set_id": set_id,
        "active": active_version.is_some(),
        "active_version_id": active_version,
        "version_id": asked,
        "version_active": asked.is_some() && asked == active_version,
        "loaded_version_id": loaded,
        "loaded": loaded.is_some() && loaded == active_version,
        "outbox_id": q.outbox_id,
    })))
}
