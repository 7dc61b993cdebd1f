//! Delegated authority, checked against the live graph at exchange time.
//!
//! A mint with `agent_session_id` + `delegation_edge_id` is allowed only when the agent session is
//! live and owned by the caller, the edge targets it and was issued to the caller's application,
//! and every edge on the way back to the root edge is active, unexpired and contiguous (each edge's
//! source is its parent's target), with a live source session, at most `max_hops` long and without
//! cycles. The result carries what the mandate must say: the root session, the path of edge ids
//! (root → leaf), the chain of hops, the graph epoch, and the narrowest scopes, resources and
//! expiry along the path.

use caracal_shared::mandate::DelegationHop;
use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::error::StsError;

/// Longest chain walked.
const MAX_PATH: usize = 10;

/// A checked delegation.
#[derive(Debug)]
pub struct Lineage {
    /// The root session (authority record) the agent session derives from.
    pub root_sid: String,
    pub agent_session_id: String,
    pub edge_id: String,
    /// The leaf edge's scopes (each edge only narrows its parent's).
    pub scopes: Vec<String>,
    /// The leaf edge's resources; empty = not limited by the edge.
    pub resources: Vec<String>,
    /// The earliest expiry along the path (sessions and edges).
    pub expires_at: DateTime<Utc>,
    /// The smallest `max_ttl_seconds` constraint along the path.
    pub max_ttl_seconds: Option<i64>,
    /// Edge ids, root → leaf.
    pub path: Vec<String>,
    pub chain: Vec<DelegationHop>,
    pub epoch: i64,
    /// Every session and edge on the path, for the revocation check.
    pub anchors: Vec<String>,
}

#[derive(sqlx::FromRow)]
struct EdgeRow {
    id: String,
    source_session_id: String,
    target_session_id: String,
    parent_edge_id: Option<String>,
    issuer_application_id: String,
    receiver_application_id: String,
    scopes: Vec<String>,
    resources: Vec<String>,
    max_hops: i32,
    hop: i32,
    constraints: sqlx::types::Json<serde_json::Value>,
    status: String,
    expires_at: DateTime<Utc>,
    /// Mirrored onto a child session (`parent_authority: inherit`): not a hop of its own.
    inherited: bool,
}

#[derive(sqlx::FromRow)]
struct SessionRow {
    id: String,
    application_id: String,
    subject_authority_record_id: String,
    status: String,
    expires_at: DateTime<Utc>,
    heartbeat_deadline_at: Option<DateTime<Utc>>,
}

impl SessionRow {
    fn is_live(&self, now: DateTime<Utc>) -> bool {
        self.status == "active" && self.expires_at > now && self.heartbeat_deadline_at.is_none_or(|d| d > now)
    }
}

fn deny(why: &str) -> StsError {
    StsError::AccessDenied(format!("delegation refused: {why}"))
}

/// Resolves and checks the lineage of `edge_id` for `application_id` acting as `agent_session_id`.
pub async fn resolve(db: &PgPool, zone_id: &str, application_id: &str, agent_session_id: &str, edge_id: &str) -> Result<Lineage, StsError> {
    let now = Utc::now();
    let edges: Vec<EdgeRow> = sqlx::query_as(
        "WITH RECURSIVE chain AS ( \
             SELECT e.*, 1 AS depth FROM delegation_edges e WHERE e.zone_id = $1 AND e.id = $2 \
             UNION ALL SELECT p.*, c.depth + 1 FROM delegation_edges p JOIN chain c ON p.id = c.parent_edge_id \
             WHERE p.zone_id = $1 AND c.depth <= $3) \
         SELECT id, source_session_id, target_session_id, parent_edge_id, issuer_application_id, receiver_application_id, \
                scopes, resources, max_hops, hop, constraints, status, expires_at, inherited FROM chain ORDER BY depth",
    )
    .bind(zone_id)
    .bind(edge_id)
    .bind(MAX_PATH as i32)
    .fetch_all(db)
    .await?;
    let leaf = edges.first().ok_or_else(|| deny("unknown delegation edge"))?;
    if leaf.target_session_id != agent_session_id {
        return Err(deny("the edge does not target this agent session"));
    }
    if leaf.receiver_application_id != application_id {
        return Err(deny("the edge was not issued to this application"));
    }
    if edges.len() > MAX_PATH || edges.last().is_some_and(|root| root.parent_edge_id.is_some()) {
        return Err(deny("the chain is too long or does not reach a root edge"));
    }
    let mut seen = std::collections::HashSet::new();
    for (i, e) in edges.iter().enumerate() {
        if !seen.insert(e.id.as_str()) {
            return Err(deny("the chain has a cycle"));
        }
        if e.status != "active" || e.expires_at <= now {
            return Err(deny("an edge on the chain is revoked or expired"));
        }
        if let Some(child) = i.checked_sub(1).map(|c| &edges[c])
            && (child.source_session_id != e.target_session_id || child.issuer_application_id != e.receiver_application_id)
        {
            return Err(deny("the chain is not contiguous"));
        }
    }
    let root = edges.last().expect("non-empty");
    // An inherited edge hands its parent edge's authority one session down the same tree: it
    // repeats that edge's hop instead of adding one.
    let hops = edges.iter().filter(|e| !e.inherited).count();
    if hops as i32 > root.max_hops || leaf.hop as usize != hops {
        return Err(deny("the chain exceeds its hop limit"));
    }
    let mut session_ids: Vec<&str> = edges.iter().map(|e| e.source_session_id.as_str()).collect();
    session_ids.push(agent_session_id);
    let sessions: Vec<SessionRow> = sqlx::query_as(
        "SELECT id, application_id, subject_authority_record_id, status, expires_at, heartbeat_deadline_at \
         FROM agent_sessions WHERE zone_id = $1 AND id = ANY($2)",
    )
    .bind(zone_id)
    .bind(&session_ids)
    .fetch_all(db)
    .await?;
    let target = sessions.iter().find(|s| s.id == agent_session_id).ok_or_else(|| deny("unknown agent session"))?;
    if target.application_id != application_id {
        return Err(deny("the agent session belongs to another application"));
    }
    if session_ids.iter().any(|id| !sessions.iter().any(|s| s.id == *id && s.is_live(now))) {
        return Err(deny("a session on the chain is not active"));
    }
    let (epoch,): (i64,) = sqlx::query_as("SELECT COALESCE((SELECT epoch FROM delegation_graph_epochs WHERE zone_id = $1), 0)")
        .bind(zone_id)
        .fetch_one(db)
        .await?;
    let expires_at = edges.iter().map(|e| e.expires_at).chain(sessions.iter().map(|s| s.expires_at)).min().unwrap_or(now);
    let mut chain: Vec<DelegationHop> = edges
        .iter()
        .rev()
        .map(|e| DelegationHop {
            application_id: e.issuer_application_id.clone(),
            agent_session_id: e.source_session_id.clone(),
            delegation_edge_id: Some(e.id.clone()),
        })
        .collect();
    chain.push(DelegationHop {
        application_id: application_id.to_owned(),
        agent_session_id: agent_session_id.to_owned(),
        delegation_edge_id: None,
    });
    let mut anchors: Vec<String> = edges.iter().map(|e| e.id.clone()).collect();
    anchors.extend(session_ids.iter().map(|s| (*s).to_owned()));
    Ok(Lineage {
        root_sid: target.subject_authority_record_id.clone(),
        agent_session_id: agent_session_id.to_owned(),
        edge_id: edge_id.to_owned(),
        scopes: leaf.scopes.clone(),
        resources: leaf.resources.clone(),
        expires_at,
        // The narrowest cap on the path (edges created before caps were inherited may lack it).
        max_ttl_seconds: edges.iter().filter_map(|e| e.constraints.0.get("max_ttl_seconds").and_then(serde_json::Value::as_i64)).min(),
        path: edges.iter().rev().map(|e| e.id.clone()).collect(),
        chain,
        epoch,
        anchors,
    })
}
