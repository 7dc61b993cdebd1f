//! The rows the STS reads and writes.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::error::StsError;
use crate::operations::Operation;

/// An application (OAuth client).
#[derive(Debug, sqlx::FromRow)]
pub struct Application {
    pub id: String,
    pub name: String,
    pub client_secret_sha256: Vec<u8>,
    pub traits: Vec<String>,
}

/// A protected resource.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Resource {
    pub id: String,
    pub identifier: String,
    pub upstream_url: String,
    pub scopes: Vec<String>,
    pub operations: sqlx::types::Json<Vec<Operation>>,
    pub operation_enforcement: String,
    pub credential_mode: String,
}

impl Resource {
    /// Whether only declared operations may pass the gateway.
    pub fn enforced(&self) -> bool {
        self.operation_enforcement == "enforced"
    }
}

/// A live application of the zone.
pub async fn application(db: &PgPool, zone_id: &str, id: &str) -> Result<Option<Application>, StsError> {
    Ok(sqlx::query_as(
        "SELECT id, name, client_secret_sha256, traits FROM applications \
         WHERE zone_id = $1 AND id = $2 AND archived_at IS NULL",
    )
    .bind(zone_id)
    .bind(id)
    .fetch_optional(db)
    .await?)
}

/// A live resource of the zone by identifier.
pub async fn resource(db: &PgPool, zone_id: &str, identifier: &str) -> Result<Option<Resource>, StsError> {
    Ok(sqlx::query_as(
        "SELECT id, identifier, upstream_url, scopes, operations, operation_enforcement, credential_mode \
         FROM resources WHERE zone_id = $1 AND identifier = $2 AND archived_at IS NULL",
    )
    .bind(zone_id)
    .bind(identifier)
    .fetch_optional(db)
    .await?)
}

/// Records a new root session.
pub async fn insert_authority_record(
    db: &PgPool,
    zone_id: &str,
    id: &str,
    application_id: &str,
    expires_at: DateTime<Utc>,
) -> Result<(), StsError> {
    sqlx::query(
        "INSERT INTO authority_records (zone_id, id, session_type, subject_id, application_id, expires_at) \
         VALUES ($1, $2, 'application', $3, $3, $4)",
    )
    .bind(zone_id)
    .bind(id)
    .bind(application_id)
    .bind(expires_at)
    .execute(db)
    .await?;
    Ok(())
}
