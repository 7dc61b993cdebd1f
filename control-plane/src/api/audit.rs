//! The audit ledger's routes (docs/audit.md).
//!
//! * `GET /v1/zones/{zoneId}/audit?since=&until=&event_type=&decision=&request_id=&session_id=&limit=&cursor=`:
//!   `{items, next_cursor}` in chain order; the cursor is the last `seq` of the page.
//! * `GET /v1/zones/{zoneId}/audit/export?format=ndjson|csv&…same filters`: the whole match,
//!   streamed page by page (memory stays flat however large the ledger).
//! * `GET /v1/zones/{zoneId}/audit/verify?from_seq=&to_seq=`: checks the chain over a range and
//!   says where it breaks.
//! * `POST /v1/audit/sweep` (global token): a full tamper sweep now.
//!
//! Bad filter values are refused (400 `invalid_query`), never silently dropped. Search and export
//! only read the tables, so every control plane answers them; verify and sweep need the chain key
//! and answer 404 `audit_ledger_disabled` where the ledger does not run.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use caracal_audit::query::{self, Filter};
use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::error::{ApiError, ApiResult};
use crate::extract::AdminPrincipal;
use crate::ledger::LedgerHandle;
use crate::state::AppState;

/// Largest search page.
const MAX_LIMIT: i64 = 1000;
/// Rows per page of an export.
const EXPORT_PAGE: i64 = 1000;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/zones/{zone_id}/audit", get(search))
        .route("/v1/zones/{zone_id}/admin-audit", get(admin_search))
        .route("/v1/zones/{zone_id}/audit/by-request/{request_id}", get(by_request))
        .route("/v1/zones/{zone_id}/audit/by-request/{request_id}/explain", get(explain))
        .route("/v1/zones/{zone_id}/audit/export", get(export))
        .route("/v1/zones/{zone_id}/audit/verify", get(verify))
        .route("/v1/audit/sweep", post(sweep))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchQuery {
    since: Option<String>,
    until: Option<String>,
    event_type: Option<String>,
    decision: Option<String>,
    request_id: Option<String>,
    session_id: Option<String>,
    limit: Option<i64>,
    cursor: Option<String>,
    format: Option<String>,
}

impl SearchQuery {
    /// The caller may read the zone, the query string parses strictly, the filters are valid.
    fn checked(who: &AdminPrincipal, zone_id: &str, q: Result<Query<Self>, QueryRejection>) -> ApiResult<(Self, Filter)> {
        who.require_zone(zone_id)?;
        let Query(q) = q.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
        let filter = q.filter(zone_id)?;
        Ok((q, filter))
    }

    fn filter(&self, zone_id: &str) -> ApiResult<Filter> {
        let time = |name: &str, v: &Option<String>| -> ApiResult<Option<DateTime<Utc>>> {
            v.as_deref()
                .map(|s| {
                    DateTime::parse_from_rfc3339(s)
                        .map(|t| t.with_timezone(&Utc))
                        .map_err(|_| ApiError::bad_request("invalid_query", format!("{name} must be an RFC 3339 time, got {s:?}")))
                })
                .transpose()
        };
        let text = |name: &str, v: &Option<String>| -> ApiResult<Option<String>> {
            match v.as_deref() {
                Some(s) if s.is_empty() || s.len() > 256 => {
                    Err(ApiError::bad_request("invalid_query", format!("{name} must be 1..256 characters")))
                }
                other => Ok(other.map(str::to_owned)),
            }
        };
        let after_seq = match self.cursor.as_deref() {
            None => 0,
            Some(c) => c
                .parse::<i64>()
                .ok()
                .filter(|s| *s >= 0)
                .ok_or_else(|| ApiError::bad_request("invalid_cursor", "cursor is not one this server issued"))?,
        };
        let f = Filter {
            zone_id: zone_id.to_owned(),
            since: time("since", &self.since)?,
            until: time("until", &self.until)?,
            event_type: text("event_type", &self.event_type)?,
            decision: text("decision", &self.decision)?,
            request_id: text("request_id", &self.request_id)?,
            session_id: text("session_id", &self.session_id)?,
            after_seq,
        };
        if let (Some(a), Some(b)) = (f.since, f.until)
            && a >= b
        {
            return Err(ApiError::bad_request("invalid_query", "since must be before until"));
        }
        Ok(f)
    }
}

fn ledger(state: &AppState) -> ApiResult<&Arc<LedgerHandle>> {
    state
        .ledger
        .as_ref()
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "audit_ledger_disabled", "this control plane does not run the audit ledger"))
}

async fn search(
    State(state): State<AppState>,
    who: AdminPrincipal,
    Path(zone_id): Path<String>,
    q: Result<Query<SearchQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let (q, filter) = SearchQuery::checked(&who, &zone_id, q)?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request("invalid_query", format!("limit must be between 1 and {MAX_LIMIT}")));
    }
    let rows = query::page(&state.db, &filter, limit).await?;
    let mut body = Vec::with_capacity(rows.len() * 600 + 64);
    body.extend_from_slice(b"{\"items\":[");
    for (i, r) in rows.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        query::json_line(r, &mut body);
    }
    body.extend_from_slice(b"],\"next_cursor\":");
    match rows.last().filter(|_| rows.len() as i64 == limit) {
        Some(last) => body.extend_from_slice(format!("\"{}\"", last.seq).as_bytes()),
        None => body.extend_from_slice(b"null"),
    }
    body.push(b'}');
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// The original's admin audit: the zone's `admin_action` events, searched like the ledger.
async fn admin_search(
    state: State<AppState>,
    who: AdminPrincipal,
    zone: Path<String>,
    q: Result<Query<SearchQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let q = q.map(|Query(mut q)| {
        q.event_type = Some("admin_action".into());
        Query(q)
    });
    search(state, who, zone, q).await
}

/// The events of one request (every stage of one governed call shares its request id), in chain order.
async fn request_events(
    state: &AppState,
    who: &AdminPrincipal,
    zone_id: &str,
    request_id: &str,
) -> ApiResult<Vec<caracal_audit::chain::StoredRow>> {
    who.require_zone(zone_id)?;
    if request_id.is_empty() || request_id.len() > 256 {
        return Err(ApiError::bad_request("invalid_query", "request_id must be 1..256 characters"));
    }
    let filter = Filter {
        zone_id: zone_id.to_owned(),
        since: None,
        until: None,
        event_type: None,
        decision: None,
        request_id: Some(request_id.to_owned()),
        session_id: None,
        after_seq: 0,
    };
    Ok(query::page(&state.db, &filter, MAX_LIMIT).await?)
}

/// `GET …/audit/by-request/{request_id}` (the original client's `audit.by_request`).
async fn by_request(
    State(state): State<AppState>,
    who: AdminPrincipal,
    Path((zone_id, request_id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let rows = request_events(&state, &who, &zone_id, &request_id).await?;
    let mut body = Vec::with_capacity(rows.len() * 600 + 32);
    body.extend_from_slice(b"{\"items\":[");
    for (i, r) in rows.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        query::json_line(r, &mut body);
    }
    body.extend_from_slice(b"]}");
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// `GET …/audit/by-request/{request_id}/explain` (`audit.explain`): what was decided for the request,
/// stage by stage — the STS's evidence and the gateway's event — with each denial's reason.
async fn explain(
    State(state): State<AppState>,
    who: AdminPrincipal,
    Path((zone_id, request_id)): Path<(String, String)>,
) -> ApiResult<Json<serde_json::Value>> {
    let rows = request_events(&state, &who, &zone_id, &request_id).await?;
    if rows.is_empty() {
        return Err(ApiError::not_found("request_not_found"));
    }
    let steps: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            let event: serde_json::Value = serde_json::from_str(&r.event).unwrap_or_default();
            let meta = &event["metadata_json"];
            serde_json::json!({
                "seq": r.seq,
                "event_type": r.event_type,
                "decision": r.decision,
                "status": event["status"],
                "occurred_at": r.occurred_at,
                "reason": meta["reason"],
                "determining_policy": meta["determining_policy"],
                "policy_version_id": meta["policy_version_id"],
                "resource": meta["resource"].as_str().map(str::to_owned).or_else(|| meta["resources"][0].as_str().map(str::to_owned)),
            })
        })
        .collect();
    let denied = rows.iter().find(|r| r.decision == "deny");
    Ok(Json(serde_json::json!({
        "zone_id": zone_id,
        "request_id": request_id,
        "decision": if denied.is_some() { "deny" } else { "allow" },
        "reason": denied.and_then(|r| serde_json::from_str::<serde_json::Value>(&r.event).ok()).map(|e| e["metadata_json"]["reason"].clone()),
        "steps": steps,
    })))
}

async fn export(
    State(state): State<AppState>,
    who: AdminPrincipal,
    Path(zone_id): Path<String>,
    q: Result<Query<SearchQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let (q, filter) = SearchQuery::checked(&who, &zone_id, q)?;
    let csv = match q.format.as_deref().unwrap_or("ndjson") {
        "ndjson" => false,
        "csv" => true,
        other => return Err(ApiError::bad_request("invalid_query", format!("format must be ndjson or csv, got {other:?}"))),
    };
    if q.limit.is_some() {
        return Err(ApiError::bad_request("invalid_query", "an export has no limit; narrow it with since/until or the other filters"));
    }
    // The first page is read before answering, so a database failure is a clean 503, not a
    // truncated 200.
    let first = query::page(&state.db, &filter, EXPORT_PAGE).await?;
    let (content_type, ext) = if csv { ("text/csv; charset=utf-8", "csv") } else { ("application/x-ndjson", "ndjson") };
    Ok((
        [
            (header::CONTENT_TYPE, content_type.to_owned()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"audit-{zone_id}.{ext}\"")),
        ],
        Body::from_stream(pages(state.db.clone(), filter, first, csv)),
    )
        .into_response())
}

/// The export's body, a page per chunk. A failure mid-stream ends the body with an error (the
/// client sees a transfer that did not complete, never a short file that looks whole).
fn pages(
    db: sqlx::PgPool,
    filter: Filter,
    first: Vec<caracal_audit::chain::StoredRow>,
    csv: bool,
) -> impl futures_util::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures_util::stream::unfold(Some((first, filter, true)), move |next| {
        let db = db.clone();
        async move {
            let (rows, mut f, is_first) = next?;
            if rows.is_empty() && !(is_first && csv) {
                return None;
            }
            let chunk = if csv {
                query::csv_rows(&rows, is_first)
            } else {
                let mut out = Vec::with_capacity(rows.len() * 600);
                for r in &rows {
                    query::json_line(r, &mut out);
                    out.push(b'\n');
                }
                out
            };
            if (rows.len() as i64) < EXPORT_PAGE {
                return Some((Ok(chunk), Some((Vec::new(), f, false))));
            }
            f.after_seq = rows.last().map_or(f.after_seq, |r| r.seq);
            match query::page(&db, &f, EXPORT_PAGE).await {
                Ok(more) => Some((Ok(chunk), Some((more, f, false)))),
                Err(e) => {
                    tracing::error!(error = %e, zone_id = %f.zone_id, "audit export failed mid-stream");
                    Some((Err(std::io::Error::other(e)), None))
                }
            }
        }
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VerifyQuery {
    from_seq: Option<i64>,
    to_seq: Option<i64>,
}

async fn verify(
    State(state): State<AppState>,
    who: AdminPrincipal,
    Path(zone_id): Path<String>,
    q: Result<Query<VerifyQuery>, QueryRejection>,
) -> ApiResult<Json<caracal_audit::sweep::ZoneReport>> {
    who.require_zone(&zone_id)?;
    let l = ledger(&state)?;
    let Query(q) = q.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    match (q.from_seq, q.to_seq) {
        (Some(f), _) if f < 1 => return Err(ApiError::bad_request("invalid_query", "from_seq must be at least 1")),
        (Some(f), Some(t)) if t < f => return Err(ApiError::bad_request("invalid_query", "to_seq must not be below from_seq")),
        _ => {}
    }
    let report = caracal_audit::sweep::verify_zone(&state.db, l.ledger.key(), &zone_id, q.from_seq, q.to_seq).await?;
    Ok(Json(report))
}

async fn sweep(State(state): State<AppState>, who: AdminPrincipal) -> ApiResult<Json<caracal_audit::sweep::SweepReport>> {
    who.require_global()?;
    let l = ledger(&state)?;
    Ok(Json(l.sweeper.full().await?))
}
