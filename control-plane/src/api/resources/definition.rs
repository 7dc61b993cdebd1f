//! A resource definition: the create / update body, merged with the stored resource on update,
//! and checked as a whole — every problem reported at once (400 `invalid_resource`, joined by
//! `; `) — before anything is written. Also where the provider key is sealed and its binding to
//! the destinations it was given for is enforced.

use caracal_shared::pool::{Endpoint, LoadBalancing, Timeouts};
use caracal_sts::operations::{McpOperation, Operation};
use caracal_sts::store::{CredentialPlacement, provider_secret_aad};
use serde::Deserialize;
use sqlx::types::Json as SqlJson;

use super::ResourceRow;
use super::pool_body::{
    ConnectionsBody, EndpointBody, HealthBody, LoadBalancingBody, RetryBody, TimeoutsBody, Upkeep, UpkeepBody, load_balancing_problems,
    pool_of, present,
};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// The `credential` object of a request: placement plus the provider key (write-only).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct CredentialBody {
    #[serde(flatten)]
    placement: CredentialPlacement,
    secret: Option<String>,
}

/// Create and update body; on update every field is optional.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct Body {
    name: Option<String>,
    identifier: Option<String>,
    upstream_url: Option<String>,
    endpoints: Option<Vec<EndpointBody>>,
    load_balancing: Option<LoadBalancingBody>,
    timeouts: Option<TimeoutsBody>,
    /// `null` removes the probe.
    #[serde(default, deserialize_with = "present")]
    health: Option<Option<HealthBody>>,
    /// `null` restores the defaults.
    #[serde(default, deserialize_with = "present")]
    retry: Option<Option<RetryBody>>,
    /// `null` restores the defaults.
    #[serde(default, deserialize_with = "present")]
    connections: Option<Option<ConnectionsBody>>,
    scopes: Option<Vec<String>>,
    operations: Option<Vec<Operation>>,
    operation_enforcement: Option<String>,
    protocol: Option<String>,
    mcp_operations: Option<Vec<McpOperation>>,
    credential_mode: Option<String>,
    credential: Option<CredentialBody>,
    /// The credential provider (`docs/providers.md`); `null` detaches it.
    #[serde(default, deserialize_with = "present")]
    credential_provider_id: Option<Option<String>>,
}

impl Body {
    /// An update of the endpoint set alone.
    pub(super) fn endpoints(set: Vec<EndpointBody>) -> Self {
        Self { endpoints: Some(set), ..Self::default() }
    }

    fn upkeep(&mut self) -> UpkeepBody {
        UpkeepBody { health: self.health.take(), retry: self.retry.take(), connections: self.connections.take() }
    }
}

/// A complete resource definition, checked.
pub(super) struct Definition {
    name: String,
    pub(super) identifier: String,
    upstream_url: String,
    /// The set; `[upstream_url]` unless `endpoints` was sent.
    endpoints: Vec<Endpoint>,
    /// Whether `endpoints` was sent (then it is checked member by member).
    explicit_endpoints: bool,
    load_balancing_body: LoadBalancingBody,
    /// Filled by [`Definition::validate`].
    load_balancing: LoadBalancing,
    timeouts: Timeouts,
    upkeep: Upkeep,
    scopes: Vec<String>,
    operations: Vec<Operation>,
    operation_enforcement: String,
    protocol: String,
    mcp_operations: Vec<McpOperation>,
    credential_mode: String,
    /// With `credential_mode = provider`.
    pub(super) credential_provider_id: Option<String>,
    placement: CredentialPlacement,
    /// The provider key sealed with `ZONE_KEK`, and that KEK's id.
    sealed_secret: Option<(Vec<u8>, String)>,
    /// Problems already found while reading the body; [`Definition::validate`] adds the rest.
    problems: Vec<String>,
}

/// The request needs these to create a resource.
const REQUIRED: &str = "identifier, upstream_url (or endpoints) and scopes are required";

impl Definition {
    /// A new resource `id` from a create body, checked.
    pub(super) fn create(state: &AppState, zone_id: &str, id: &str, mut b: Body) -> ApiResult<Self> {
        let mut problems = Vec::new();
        let upkeep = b.upkeep().applied_to(Upkeep::default(), &mut problems);
        let (Some(identifier), Some(scopes)) = (b.identifier, b.scopes) else {
            return Err(ApiError::bad_request("invalid_resource", REQUIRED));
        };
        let Some((upstream_url, endpoints, explicit_endpoints)) = pool_of(b.upstream_url, b.endpoints) else {
            return Err(ApiError::bad_request("invalid_resource", REQUIRED));
        };
        let credential = b.credential.unwrap_or_default();
        Self {
            name: b.name.unwrap_or_default().trim().to_owned(),
            identifier,
            upstream_url,
            endpoints,
            explicit_endpoints,
            load_balancing_body: b.load_balancing.unwrap_or_default(),
            load_balancing: LoadBalancing::default(),
            timeouts: b.timeouts.map(Timeouts::from).unwrap_or_default(),
            upkeep,
            scopes,
            operations: b.operations.unwrap_or_default(),
            operation_enforcement: b.operation_enforcement.unwrap_or_else(|| "enforced".into()),
            protocol: b.protocol.unwrap_or_else(|| "http".into()),
            mcp_operations: b.mcp_operations.unwrap_or_default(),
            credential_mode: b.credential_mode.unwrap_or_else(|| {
                if b.credential_provider_id.as_ref().is_some_and(Option::is_some) { "provider" } else { "caracal_jwt" }.into()
            }),
            credential_provider_id: b.credential_provider_id.flatten(),
            placement: credential.placement,
            sealed_secret: seal(state, zone_id, id, credential.secret.as_deref())?,
            problems,
        }
        .validate(control_audience(state))
    }

    /// The stored resource `cur` (whose sealed key is `stored_secret`) with the body's changes,
    /// checked. The stored key may go on to any endpoint of the set: adding a destination it was
    /// not given for, or renaming the identifier, without a new key is refused (409
    /// `credential_secret_required`); removing or re-weighting members is not a move.
    pub(super) fn update(
        state: &AppState,
        zone_id: &str,
        cur: ResourceRow,
        stored_secret: Option<(Vec<u8>, String)>,
        mut b: Body,
    ) -> ApiResult<Self> {
        let cur_set = caracal_shared::pool::endpoints_or_single(&cur.endpoints.0, &cur.upstream_url);
        let cur_destinations: Vec<_> = cur_set.iter().map(|e| destination(&e.url)).collect();
        let cur_identifier = cur.identifier.clone();
        let mut problems = Vec::new();
        let stored_upkeep = Upkeep { health: cur.health.map(|h| h.0), retry: cur.retry.0, connections: cur.connections.0 };
        let upkeep = b.upkeep().applied_to(stored_upkeep, &mut problems);
        let new_secret = b.credential.as_ref().is_some_and(|c| c.secret.is_some());
        let (placement, sealed_secret) = match b.credential {
            Some(c) => {
                let sealed = match c.secret.as_deref() {
                    Some(secret) => seal(state, zone_id, &cur.id, Some(secret))?,
                    None => stored_secret,
                };
                (c.placement, sealed)
            }
            None => (cur.credential.0, stored_secret),
        };
        let (upstream_url, endpoints, explicit_endpoints) =
            pool_of(b.upstream_url, b.endpoints).unwrap_or_else(|| (cur.upstream_url.clone(), cur_set, false));
        let def = Self {
            name: b.name.unwrap_or(cur.name).trim().to_owned(),
            identifier: b.identifier.unwrap_or(cur.identifier),
            upstream_url,
            endpoints,
            explicit_endpoints,
            load_balancing_body: b.load_balancing.unwrap_or_else(|| cur.load_balancing.0.into()),
            load_balancing: LoadBalancing::default(),
            timeouts: b.timeouts.map_or(cur.timeouts.0, Timeouts::from),
            upkeep,
            scopes: b.scopes.unwrap_or(cur.scopes),
            operations: b.operations.unwrap_or(cur.operations.0),
            operation_enforcement: b.operation_enforcement.unwrap_or(cur.operation_enforcement),
            protocol: b.protocol.unwrap_or(cur.protocol),
            mcp_operations: b.mcp_operations.unwrap_or(cur.mcp_operations.0),
            credential_mode: match (b.credential_mode, &b.credential_provider_id) {
                (Some(m), _) => m,
                (None, Some(Some(_))) => "provider".into(),
                // Detached from its provider: the resource mandate again, unless told otherwise.
                (None, Some(None)) if cur.credential_mode == "provider" => "caracal_jwt".into(),
                (None, _) => cur.credential_mode,
            },
            credential_provider_id: match b.credential_provider_id {
                Some(v) => v,
                None => cur.credential_provider_id,
            },
            placement,
            sealed_secret,
            problems,
        }
        .validate(control_audience(state))?;
        let moved = def.endpoints.iter().any(|e| !cur_destinations.contains(&destination(&e.url))) || def.identifier != cur_identifier;
        if def.sealed_secret.is_some() && !new_secret && moved {
            return Err(ApiError::conflict(
                "credential_secret_required",
                "the stored provider key is not sent to a new upstream scheme, host or port, or under a new identifier; \
                 send credential.secret for the new destination",
            ));
        }
        Ok(def)
    }

    /// The endpoint set.
    pub(super) fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    /// Binds the definition's fields as the next eighteen parameters (name … credential_kek_id,
    /// endpoints, load_balancing, timeouts, health, retry, connections, protocol, mcp_operations).
    pub(super) fn bind<'q, O>(
        &'q self,
        q: sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments> {
        q.bind(&self.name)
            .bind(&self.identifier)
            .bind(&self.upstream_url)
            .bind(&self.scopes)
            .bind(SqlJson(&self.operations))
            .bind(&self.operation_enforcement)
            .bind(&self.credential_mode)
            .bind(SqlJson(&self.placement))
            .bind(self.sealed_secret.as_ref().map(|(s, _)| s))
            .bind(self.sealed_secret.as_ref().map(|(_, k)| k))
            .bind(SqlJson(&self.endpoints))
            .bind(SqlJson(&self.load_balancing))
            .bind(SqlJson(&self.timeouts))
            // SQL NULL, not JSON null, when there is no probe.
            .bind(self.upkeep.health.as_ref().map(SqlJson))
            .bind(SqlJson(&self.upkeep.retry))
            .bind(SqlJson(&self.upkeep.connections))
            .bind(&self.protocol)
            .bind(SqlJson(&self.mcp_operations))
            .bind(&self.credential_provider_id)
    }

    /// Checks every field and reports every problem at once. `control_audience` (when Control is
    /// enabled) is accepted as an identifier even though it is not a URI: the original's default
    /// audience is `caracal-control`, and Control clients already request that resource.
    fn validate(mut self, control_audience: Option<&str>) -> ApiResult<Self> {
        let mut problems = std::mem::take(&mut self.problems);
        self.identifier = self.identifier.trim().to_owned();
        match url::Url::parse(&self.identifier) {
            Ok(u) if u.username().is_empty() && u.password().is_none() && self.identifier.len() <= 512 => {}
            _ if control_audience == Some(self.identifier.as_str()) => {}
            _ => problems.push(
                "identifier must be an absolute URI (e.g. https://api.example.com or mcp://tools) without userinfo, ≤ 512 chars".to_owned(),
            ),
        }
        if self.name.is_empty() {
            self.name = self.identifier.chars().take(200).collect();
        }
        if self.name.chars().count() > 200 || self.name.chars().any(char::is_control) {
            problems.push("name must be ≤ 200 printable characters".into());
        }
        if self.explicit_endpoints {
            caracal_shared::pool::endpoint_problems(&self.endpoints, &mut problems);
            if self.endpoints.first().is_some_and(|e| e.url != self.upstream_url) {
                problems.push("upstream_url must equal endpoints[0].url when both are given".into());
            }
        } else if !caracal_shared::pool::url_ok(&self.upstream_url) {
            problems.push("upstream_url must be an absolute http(s) URL without userinfo or fragment".into());
        }
        self.load_balancing = load_balancing_problems(&self.load_balancing_body, &mut problems);
        self.timeouts.problems(&mut problems);
        let scope_ok = |s: &String| (1..=200).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b":_./-".contains(&b));
        if self.scopes.is_empty() || self.scopes.len() > 64 || !self.scopes.iter().all(scope_ok) {
            problems.push("scopes: 1..64 entries, each ^[A-Za-z0-9:_./-]{1,200}$".into());
        }
        self.scopes.dedup();
        if self.operations.len() > 256 {
            problems.push("operations: at most 256".into());
        }
        for op in &mut self.operations {
            op.method = op.method.to_ascii_uppercase();
            if let Err(p) = op.validate(&self.scopes) {
                problems.push(p);
            }
        }
        for (i, a) in self.operations.iter().enumerate() {
            if self.operations[..i].iter().any(|b| b.method == a.method && b.path == a.path) {
                problems.push(format!("operation {} {} is declared twice", a.method, a.path));
            }
        }
        if !matches!(self.operation_enforcement.as_str(), "enforced" | "transport_uniform") {
            problems.push("operation_enforcement must be enforced or transport_uniform".into());
        }
        self.mcp_problems(&mut problems);
        if !matches!(self.credential_mode.as_str(), "none" | "caracal_jwt" | "provider_apikey" | "provider") {
            problems.push("credential_mode must be none, caracal_jwt, provider_apikey or provider".into());
        }
        if (self.credential_mode == "provider") != self.credential_provider_id.is_some() {
            problems.push("credential_mode provider and credential_provider_id go together".into());
        }
        placement_problems(&self.credential_mode, &self.placement, self.sealed_secret.is_some(), &mut problems);
        if self.credential_mode != "provider_apikey" {
            self.sealed_secret = None;
        }
        if problems.is_empty() { Ok(self) } else { Err(ApiError::bad_request("invalid_resource", problems.join("; "))) }
    }
}

impl Definition {
    /// `protocol` and `mcp_operations`: declarations only on an MCP resource, each checked, none twice.
    fn mcp_problems(&self, problems: &mut Vec<String>) {
        if !matches!(self.protocol.as_str(), "http" | "mcp") {
            problems.push("protocol must be http or mcp".into());
        }
        if self.protocol != "mcp" && !self.mcp_operations.is_empty() {
            problems.push("mcp_operations apply to protocol mcp only".into());
        }
        if self.mcp_operations.len() > 256 {
            problems.push("mcp_operations: at most 256".into());
        }
        for (i, op) in self.mcp_operations.iter().enumerate() {
            if let Err(p) = op.validate(&self.scopes) {
                problems.push(p);
            }
            if self.mcp_operations[..i].iter().any(|o| o.mcp_method == op.mcp_method && o.name == op.name) {
                problems.push(format!("mcp operation {} {:?} is declared twice", op.mcp_method, op.name.as_deref().unwrap_or("*")));
            }
        }
    }
}

fn placement_problems(mode: &str, p: &CredentialPlacement, has_secret: bool, problems: &mut Vec<String>) {
    if mode != "provider_apikey" {
        if *p != CredentialPlacement::default() {
            problems.push("credential applies to credential_mode provider_apikey only".into());
        }
        return;
    }
    if !has_secret {
        problems.push("provider_apikey needs credential.secret".into());
    }
    p.problems("credential.", problems);
}

/// A provider key must fit in a header or a query parameter without smuggling anything.
fn secret_problems(secret: &str, problems: &mut Vec<String>) {
    if secret.is_empty() || secret.len() > 4096 || !secret.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        problems.push("credential.secret must be 1..4096 visible ASCII characters".into());
    }
}

/// The Control audience when Control is enabled.
pub(super) fn control_audience(state: &AppState) -> Option<&str> {
    state.cfg.control.as_ref().map(|c| c.audience.as_str())
}

/// Checks and seals a provider key for resource `id` (bound to zone and resource).
fn seal(state: &AppState, zone_id: &str, id: &str, secret: Option<&str>) -> ApiResult<Option<(Vec<u8>, String)>> {
    let Some(secret) = secret else { return Ok(None) };
    let mut problems = Vec::new();
    secret_problems(secret, &mut problems);
    if !problems.is_empty() {
        return Err(ApiError::bad_request("invalid_resource", problems.join("; ")));
    }
    let kek = state.sts.keys.kek();
    Ok(Some((kek.seal(&provider_secret_aad(zone_id, id), secret.as_bytes()), kek.id().to_owned())))
}

/// Where requests to an upstream URL go: scheme, host and port (the default port when absent).
fn destination(upstream_url: &str) -> Option<(String, String, u16)> {
    let u = url::Url::parse(upstream_url).ok()?;
    Some((u.scheme().to_owned(), u.host_str()?.to_ascii_lowercase(), u.port_or_known_default()?))
}

#[cfg(test)]
mod tests {
    use super::destination;

    #[test]
    fn a_destination_is_scheme_host_and_port() {
        let d = |u: &str| destination(u);
        assert_eq!(d("https://API.example.com/v1"), d("https://api.example.com:443/v2?x=1"), "case, default port and path do not matter");
        assert_ne!(d("https://api.example.com"), d("http://api.example.com"));
        assert_ne!(d("https://api.example.com"), d("https://api.example.com:8443"));
        assert_ne!(d("https://api.example.com"), d("https://evil.example.com"));
        assert_eq!(d("not a url"), None);
    }
}
