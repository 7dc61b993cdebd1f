//! The rows the STS reads and writes.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::error::StsError;
use crate::operations::{McpOperation, Operation};

/// An application (OAuth client).
#[derive(Debug, sqlx::FromRow)]
pub struct Application {
    pub id: String,
    pub name: String,
    pub client_secret_sha256: Vec<u8>,
    pub traits: Vec<String>,
    /// When a DCR application stops minting (the catalog may hold it past that: checked per use).
    pub expires_at: Option<DateTime<Utc>>,
}

impl Application {
    /// Whether the application may still act.
    pub fn live(&self) -> bool {
        self.expires_at.is_none_or(|e| e > Utc::now())
    }
}

/// Where a provider credential goes (non-secret part; the key itself is sealed apart).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialPlacement {
    /// `header` (default) or `query`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// Header name for `header` placement (default `Authorization`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// Scheme before the key in the header (e.g. `Bearer`); none sends the bare key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// Query parameter for `query` placement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_param: Option<String>,
    /// Also send the resource mandate as `X-Caracal-Identity`.
    #[serde(default)]
    pub forward_caracal_identity: bool,
}

impl CredentialPlacement {
    /// Every problem of the placement, each named with `prefix` (where the caller's body holds it):
    /// a header must be writable (never a routing or forwarding header), a query parameter plain,
    /// and each location takes only its own fields.
    pub fn problems(&self, prefix: &str, problems: &mut Vec<String>) {
        match self.location.as_deref().unwrap_or("header") {
            "header" => {
                let h = self.header.as_deref().unwrap_or("authorization");
                if !caracal_shared::exchange::is_writable_credential_header(h) {
                    problems.push(format!("{prefix}header {h:?} is not a usable header name"));
                }
                if self.query_param.is_some() {
                    problems.push(format!("{prefix}query_param applies to location query only"));
                }
            }
            "query" => {
                let ok = self
                    .query_param
                    .as_deref()
                    .is_some_and(|q| (1..=64).contains(&q.len()) && q.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b)));
                if !ok {
                    problems.push(format!("{prefix}query_param must match ^[A-Za-z0-9_.-]{{1,64}}$ for location query"));
                }
                if self.header.is_some() || self.scheme.is_some() {
                    problems.push(format!("{prefix}header and {prefix}scheme apply to location header only"));
                }
            }
            other => problems.push(format!("{prefix}location must be header or query, got {other:?}")),
        }
        if let Some(sc) = &self.scheme
            && !(1..=32).contains(&sc.len())
        {
            problems.push(format!("{prefix}scheme must be 1..32 characters"));
        }
    }
}

/// The public configuration of a credential provider (`api_key`): where its key goes, and the
/// upstream hosts it may be sent to (empty: any the resource names).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_param: Option<String>,
    #[serde(default)]
    pub forward_caracal_identity: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_hosts: Vec<String>,
}

impl ProviderConfig {
    /// Where the key goes.
    pub fn placement(&self) -> CredentialPlacement {
        CredentialPlacement {
            location: self.location.clone(),
            header: self.header.clone(),
            scheme: self.scheme.clone(),
            query_param: self.query_param.clone(),
            forward_caracal_identity: self.forward_caracal_identity,
        }
    }
}

/// The public configuration of a `bearer_token` or `http_basic` provider: the header (default
/// `Authorization`), the scheme of a bearer (default `Bearer`), the basic user name, and the
/// upstream hosts the credential may go to (empty: any the resource names).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticCredential {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_hosts: Vec<String>,
}

impl StaticCredential {
    /// Every problem of the configuration; `basic` for `http_basic`.
    pub fn problems(&self, basic: bool) -> Vec<String> {
        let mut p = Vec::new();
        let header = self.header.as_deref().unwrap_or("authorization");
        if !caracal_shared::exchange::is_writable_credential_header(header) {
            p.push(format!("header {header:?} is not a usable credential header"));
        }
        match (basic, &self.username) {
            (true, Some(u)) if !u.is_empty() && u.len() <= 256 && !u.contains(':') && u.bytes().all(|b| (0x20..0x7f).contains(&b)) => {}
            (true, _) => p.push("http_basic needs a username (1..256 printable ASCII, no colon)".into()),
            (false, Some(_)) => p.push("username is for http_basic".into()),
            (false, None) => {}
        }
        if basic && self.scheme.is_some() {
            p.push("scheme is Basic for http_basic".into());
        }
        p
    }
}

/// Associated data binding a provider's sealed secrets to its zone and id.
pub fn provider_config_aad(zone_id: &str, provider_id: &str) -> String {
    format!("caracal/provider/{zone_id}/{provider_id}")
}

/// A protected resource.
#[derive(Clone, sqlx::FromRow)]
pub struct Resource {
    pub id: String,
    pub identifier: String,
    pub upstream_url: String,
    /// The pool; empty means the set of one `upstream_url` (docs/pools.md).
    pub endpoints: sqlx::types::Json<Vec<caracal_shared::pool::Endpoint>>,
    pub load_balancing: sqlx::types::Json<caracal_shared::pool::LoadBalancing>,
    /// The resource's upstream deadlines (absent ⇒ the gateway's).
    pub timeouts: sqlx::types::Json<caracal_shared::pool::Timeouts>,
    /// Active probes of the endpoints (none ⇒ passive ejection only).
    pub health: Option<sqlx::types::Json<caracal_shared::pool::HealthProbe>>,
    /// Retries on another endpoint.
    pub retry: sqlx::types::Json<caracal_shared::pool::Retry>,
    /// Per-endpoint concurrency cap and HTTP/2.
    pub connections: sqlx::types::Json<caracal_shared::pool::Connections>,
    pub scopes: Vec<String>,
    pub operations: sqlx::types::Json<Vec<Operation>>,
    pub operation_enforcement: String,
    /// `http` or `mcp` (a POST must come with the MCP facts the gateway read from its body).
    pub protocol: String,
    /// Declared MCP operations (enforced resources of `protocol: mcp`).
    pub mcp_operations: sqlx::types::Json<Vec<McpOperation>>,
    pub credential_mode: String,
    pub credential_placement: sqlx::types::Json<CredentialPlacement>,
    /// The provider key, sealed with `ZONE_KEK` ([`provider_secret_aad`]).
    pub credential_secret: Option<Vec<u8>>,
    pub credential_kek_id: Option<String>,
    /// `credential_mode = provider`: the provider, its kind, public configuration and sealed secrets.
    pub credential_provider_id: Option<String>,
    pub provider_kind: Option<String>,
    pub provider_config: Option<sqlx::types::Json<serde_json::Value>>,
    pub provider_secret: Option<Vec<u8>>,
    pub provider_kek_id: Option<String>,
}

impl std::fmt::Debug for Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resource").field("id", &self.id).field("identifier", &self.identifier).finish_non_exhaustive()
    }
}

/// Associated data binding a sealed provider key to its zone and resource.
pub fn provider_secret_aad(zone_id: &str, resource_id: &str) -> String {
    format!("caracal/provider-secret/{zone_id}/{resource_id}")
}

impl Resource {
    /// Whether only declared operations may pass the gateway.
    pub fn enforced(&self) -> bool {
        self.operation_enforcement == "enforced"
    }

    /// Whether the resource is an MCP server (streamable HTTP).
    pub fn mcp(&self) -> bool {
        self.protocol == "mcp"
    }
}

#[cfg(test)]
impl Resource {
    /// A resource of one endpoint, every setting at its default, no credential, no operations.
    pub(crate) fn plain(upstream_url: &str) -> Self {
        Self {
            id: "r".into(),
            identifier: "https://api".into(),
            upstream_url: upstream_url.into(),
            endpoints: sqlx::types::Json(vec![]),
            load_balancing: sqlx::types::Json(Default::default()),
            timeouts: sqlx::types::Json(Default::default()),
            health: None,
            retry: sqlx::types::Json(Default::default()),
            connections: sqlx::types::Json(Default::default()),
            scopes: vec!["read".into()],
            operations: sqlx::types::Json(vec![]),
            operation_enforcement: "enforced".into(),
            protocol: "http".into(),
            mcp_operations: sqlx::types::Json(vec![]),
            credential_mode: "none".into(),
            credential_placement: sqlx::types::Json(Default::default()),
            credential_secret: None,
            credential_kek_id: None,
            credential_provider_id: None,
            provider_kind: None,
            provider_config: None,
            provider_secret: None,
            provider_kek_id: None,
        }
    }
}

/// A live application of the zone.
pub async fn application(db: &PgPool, zone_id: &str, id: &str) -> Result<Option<Application>, StsError> {
    Ok(sqlx::query_as(
        "SELECT id, name, client_secret_sha256, traits, expires_at FROM applications \
         WHERE zone_id = $1 AND id = $2 AND archived_at IS NULL AND (expires_at IS NULL OR expires_at > now())",
    )
    .bind(zone_id)
    .bind(id)
    .fetch_optional(db)
    .await?)
}

/// A live resource of the zone by identifier.
pub async fn resource(db: &PgPool, zone_id: &str, identifier: &str) -> Result<Option<Resource>, StsError> {
    Ok(sqlx::query_as(
        "SELECT r.id, r.identifier, r.upstream_url, r.endpoints, r.load_balancing, r.timeouts, r.health, r.retry, r.connections, \
         r.scopes, r.operations, r.operation_enforcement, r.protocol, r.mcp_operations, \
         r.credential_mode, r.credential_placement, r.credential_secret, r.credential_kek_id, r.credential_provider_id, \
         p.kind AS provider_kind, p.config_json AS provider_config, p.secret_config AS provider_secret, p.secret_kek_id AS provider_kek_id \
         FROM resources r LEFT JOIN providers p ON p.zone_id = r.zone_id AND p.id = r.credential_provider_id AND p.archived_at IS NULL \
         WHERE r.zone_id = $1 AND r.identifier = $2 AND r.archived_at IS NULL",
    )
    .bind(zone_id)
    .bind(identifier)
    .fetch_optional(db)
    .await?)
}

/// Whose root session a new authority record is.
#[derive(Clone, Copy, Debug)]
pub enum RootSubject<'a> {
    /// The application itself (client-secret session mint).
    Application,
    /// A federated user, with the issuer that vouched for it (kept in `claims_json.iss`).
    User { subject_id: &'a str, issuer: &'a str },
}

/// Records a new root session held by `application_id`; `ZoneNotFound` when the zone was archived
/// meanwhile, `InvalidClient` when the application was. The key-share locks on the zone and
/// application rows order this insert against an archive of either (which locks the row first):
/// the archive either sees the record and revokes it, or this insert sees the archive.
pub async fn insert_authority_record(
    db: &PgPool,
    zone_id: &str,
    id: &str,
    application_id: &str,
    subject: RootSubject<'_>,
    expires_at: DateTime<Utc>,
) -> Result<(), StsError> {
    let (session_type, subject_id, issuer) = match subject {
        RootSubject::Application => ("application", None, None),
        RootSubject::User { subject_id, issuer } => ("user", Some(subject_id), Some(issuer)),
    };
    let done = sqlx::query(
        "INSERT INTO authority_records (zone_id, id, session_type, subject_id, application_id, expires_at, claims_json) \
         SELECT z.id, $2, $5, COALESCE($6::text, a.id), a.id, $4, \
                CASE WHEN $7::text IS NULL THEN NULL ELSE jsonb_build_object('iss', $7::text) END \
         FROM zones z JOIN applications a ON a.zone_id = z.id AND a.id = $3 \
         WHERE z.id = $1 AND z.archived_at IS NULL AND a.archived_at IS NULL FOR KEY SHARE",
    )
    .bind(zone_id)
    .bind(id)
    .bind(application_id)
    .bind(expires_at)
    .bind(session_type)
    .bind(subject_id)
    .bind(issuer)
    .execute(db)
    .await?;
    if done.rows_affected() == 1 {
        return Ok(());
    }
    let zone_live: Option<(bool,)> =
        sqlx::query_as("SELECT archived_at IS NULL FROM zones WHERE id = $1").bind(zone_id).fetch_optional(db).await?;
    Err(if matches!(zone_live, Some((true,))) { StsError::InvalidClient } else { StsError::ZoneNotFound })
}
