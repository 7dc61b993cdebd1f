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

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};
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
}

async fn simulate(
    State(state): State<AppState>,
    who: AdminPrincipal,
    Path((zone_id, set_id)): Path<(String, String)>,
    AppJson(b): AppJson<SimulateBody>,
) -> ApiResult<Json<Value>> {
    who.require_zone(&zone_id)?;
    let rego: Option<(String,)> =
        sqlx::query_as("SELECT rego FROM policy_set_versions WHERE zone_id = $1 AND policy_set_id = $2 AND id = $3")
            .bind(&zone_id)
            .bind(&set_id)
            .bind(&b.version_id)
            .fetch_optional(&state.db)
            .await?;
    let (rego,) = rego.ok_or_else(|| ApiError::not_found("policy_version_not_found"))?;
    let input = b.input.unwrap_or_else(|| json!({}));
    let (set, version) = (set_id.clone(), b.version_id.clone());
    let run = tokio::task::spawn_blocking(move || {
        let compiled = caracal_sts::policy::compile(&rego)?;
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

#[derive(Deserialize)]
struct StatusQuery {
    version_id: Option<String>,
    outbox_id: Option<String>,
}

async fn activation_status(
    State(state): State<AppState>,
    who: AdminPrincipal,
    Path((zone_id, set_id)): Path<(String, String)>,
    Query(q): Query<StatusQuery>,
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
