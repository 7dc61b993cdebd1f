//! Upstream pools: a resource's endpoints and how the gateway spreads requests over them
//! (docs/pools.md). Stored by the control plane, carried by the STS directive, read by the gateway.

use serde::{Deserialize, Serialize};

/// Most endpoints a resource may have.
pub const MAX_ENDPOINTS: usize = 32;
/// Highest endpoint weight.
pub const MAX_WEIGHT: u32 = 1000;

/// One member of a resource's upstream pool.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Endpoint {
    /// Base URL; the inbound path is appended to its path.
    pub url: String,
    /// Relative share of requests (1..=[`MAX_WEIGHT`]).
    #[serde(default = "one")]
    pub weight: u32,
    /// Draining: no new requests (in-flight ones finish); the member stays in the set so a hash
    /// ring keeps its shape.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub drain: bool,
}

fn one() -> u32 {
    1
}

impl Endpoint {
    /// An endpoint of weight 1.
    pub fn single(url: impl Into<String>) -> Self {
        Self { url: url.into(), weight: 1, drain: false }
    }
}

/// The stored set, or the set of one `upstream_url` when the set is empty (a row written before
/// pools existed, or by an older control plane during an upgrade).
pub fn endpoints_or_single(endpoints: &[Endpoint], upstream_url: &str) -> Vec<Endpoint> {
    if endpoints.is_empty() { vec![Endpoint::single(upstream_url)] } else { endpoints.to_vec() }
}

/// A credential provider's `allowed_hosts` binding against an endpoint set: the first endpoint
/// whose host is not listed (compared without case; a URL without a host is never allowed), or
/// `None` when every one is — or when `allowed` is empty, which binds nothing. The admin API checks
/// it when a resource is bound, and the STS again before it sends the credential.
pub fn endpoint_outside<'a>(allowed: &[String], endpoints: &'a [Endpoint]) -> Option<&'a Endpoint> {
    if allowed.is_empty() {
        return None;
    }
    endpoints.iter().find(|e| {
        let host = url::Url::parse(&e.url).ok().and_then(|u| u.host_str().map(str::to_owned));
        !host.is_some_and(|h| allowed.iter().any(|a| a.eq_ignore_ascii_case(&h)))
    })
}

/// How the gateway picks an endpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// Weighted round robin.
    #[default]
    RoundRobin,
    /// Fewest requests in flight (power of two choices).
    LeastOutstanding,
    /// A hash ring over a request key: the same key stays on one endpoint.
    ConsistentHash,
}

impl Policy {
    /// Parses the API / storage name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "round_robin" => Some(Self::RoundRobin),
            "least_outstanding" => Some(Self::LeastOutstanding),
            "consistent_hash" => Some(Self::ConsistentHash),
            _ => None,
        }
    }
}

/// The request key a consistent hash is taken over.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum HashKey {
    /// A request header (`header:<Name>`), e.g. `Mcp-Session-Id`.
    Header(String),
    /// The calling mandate's session id (`sid`).
    Sid,
    /// The root session the calling mandate descends from (`root_sid`): every mandate minted
    /// from one session mandate shares it, so all of an agent's requests — an MCP session's
    /// `initialize` (which has no `Mcp-Session-Id` yet) and everything after it — land on one
    /// endpoint while the set is unchanged.
    RootSid,
    /// The request path.
    Path,
}

impl TryFrom<String> for HashKey {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        match s.as_str() {
            "sid" => Ok(Self::Sid),
            "root_sid" => Ok(Self::RootSid),
            "path" => Ok(Self::Path),
            _ => match s.strip_prefix("header:") {
                Some(name) if http_token(name) => Ok(Self::Header(name.to_ascii_lowercase())),
                _ => Err(format!("hash_key must be header:<Name>, sid, root_sid or path, got {s:?}")),
            },
        }
    }
}

impl From<HashKey> for String {
    fn from(k: HashKey) -> String {
        match k {
            HashKey::Header(name) => format!("header:{name}"),
            HashKey::Sid => "sid".into(),
            HashKey::RootSid => "root_sid".into(),
            HashKey::Path => "path".into(),
        }
    }
}

/// A header name the gateway can read: an HTTP token of at most 64 characters.
fn http_token(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A resource's load-balancing settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LoadBalancing {
    pub policy: Policy,
    /// Required for, and only for, [`Policy::ConsistentHash`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_key: Option<HashKey>,
}

impl LoadBalancing {
    /// Whether these are the defaults (weighted round robin).
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// Per-resource upstream deadlines in milliseconds (docs/pools.md §6); absent ⇒ the gateway's
/// `UPSTREAM_TIMEOUT`, `UPSTREAM_RESPONSE_HEADER_TIMEOUT`, `UPSTREAM_BODY_IDLE_TIMEOUT`. Open
/// streams (SSE) keep their exemption from the idle deadline.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Timeouts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_ms: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_header_ms: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_idle_ms: Option<u32>,
}

impl Timeouts {
    /// Whether every deadline is the gateway's.
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// Every out-of-range deadline, for the admin API.
    pub fn problems(&self, problems: &mut Vec<String>) {
        for (name, v, max) in [
            ("connect_ms", self.connect_ms, 60_000),
            ("response_header_ms", self.response_header_ms, 3_600_000),
            ("body_idle_ms", self.body_idle_ms, 3_600_000),
        ] {
            if v.is_some_and(|v| !(50..=max).contains(&v)) {
                problems.push(format!("timeouts.{name} must be 50..{max}"));
            }
        }
    }
}

/// How an active probe checks an endpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeKind {
    /// `GET <endpoint path><probe path>`; any 2xx or 3xx is healthy.
    #[default]
    Http,
    /// A TCP (and, for https endpoints, TLS) handshake.
    Tcp,
}

/// Active health probes of every endpoint (docs/pools.md §4); absent ⇒ passive ejection only.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HealthProbe {
    #[serde(default)]
    pub kind: ProbeKind,
    /// Appended to the endpoint's base path (http probes only); default `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default = "HealthProbe::default_interval_ms")]
    pub interval_ms: u32,
    #[serde(default = "HealthProbe::default_timeout_ms")]
    pub timeout_ms: u32,
    /// Consecutive successes that make a down endpoint healthy.
    #[serde(default = "HealthProbe::default_healthy")]
    pub healthy_threshold: u8,
    /// Consecutive failures that make a healthy endpoint down.
    #[serde(default = "HealthProbe::default_unhealthy")]
    pub unhealthy_threshold: u8,
}

impl Default for HealthProbe {
    /// An http probe of `/` every 5 s, 1 s timeout, healthy after 2 successes, down after 3 failures.
    fn default() -> Self {
        Self {
            kind: ProbeKind::default(),
            path: None,
            interval_ms: Self::default_interval_ms(),
            timeout_ms: Self::default_timeout_ms(),
            healthy_threshold: Self::default_healthy(),
            unhealthy_threshold: Self::default_unhealthy(),
        }
    }
}

impl HealthProbe {
    fn default_interval_ms() -> u32 {
        5_000
    }
    fn default_timeout_ms() -> u32 {
        1_000
    }
    fn default_healthy() -> u8 {
        2
    }
    fn default_unhealthy() -> u8 {
        3
    }

    /// Every problem, for the admin API.
    pub fn problems(&self, problems: &mut Vec<String>) {
        if !(200..=300_000).contains(&self.interval_ms) {
            problems.push("health.interval_ms must be 200..300000".into());
        }
        if !(50..=60_000).contains(&self.timeout_ms) || self.timeout_ms > self.interval_ms {
            problems.push("health.timeout_ms must be 50..60000 and at most interval_ms".into());
        }
        for (name, v) in [("healthy_threshold", self.healthy_threshold), ("unhealthy_threshold", self.unhealthy_threshold)] {
            if !(1..=10).contains(&v) {
                problems.push(format!("health.{name} must be 1..10"));
            }
        }
        match (&self.path, self.kind) {
            (Some(_), ProbeKind::Tcp) => problems.push("health.path applies to http probes only".into()),
            (Some(p), ProbeKind::Http) if !probe_path_ok(p) => {
                problems.push("health.path must start with / and be at most 256 visible ASCII characters".into());
            }
            _ => {}
        }
    }
}

/// A probe path: absolute, visible ASCII, no fragment, bounded.
fn probe_path_ok(p: &str) -> bool {
    p.starts_with('/') && p.len() <= 256 && p.bytes().all(|b| b.is_ascii_graphic() && b != b'#')
}

/// Most attempts (first try included) a request may make.
pub const MAX_ATTEMPTS: u8 = 5;

/// Retries without re-spending authority (docs/pools.md §5): the same resource mandate goes to
/// another endpoint; never a second agent mandate or STS exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Retry {
    /// Attempts per request, the first included (1 = no retry), each on a different endpoint.
    #[serde(default = "Retry::default_attempts")]
    pub attempts: u8,
    /// Also retry a 502/503 answer to an idempotent request without a body (opt-in).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub on_unavailable: bool,
}

impl Default for Retry {
    fn default() -> Self {
        Self { attempts: Self::default_attempts(), on_unavailable: false }
    }
}

impl Retry {
    fn default_attempts() -> u8 {
        2
    }

    /// Whether these are the defaults.
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// Every problem, for the admin API.
    pub fn problems(&self, problems: &mut Vec<String>) {
        if !(1..=MAX_ATTEMPTS).contains(&self.attempts) {
            problems.push(format!("retry.attempts must be 1..{MAX_ATTEMPTS}"));
        }
    }
}

/// Per-endpoint connection settings (docs/pools.md §7).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Connections {
    /// Requests in flight per endpoint; over it the endpoint is skipped, and when every endpoint
    /// is at its cap the request is shed (503 `upstream_overloaded`) instead of queued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<u32>,
    /// Speak HTTP/2 to the endpoints (ALPN over TLS, prior knowledge over cleartext).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub http2: bool,
}

impl Connections {
    /// Whether these are the defaults.
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// Every problem, for the admin API.
    pub fn problems(&self, problems: &mut Vec<String>) {
        if self.max_in_flight.is_some_and(|n| !(1..=100_000).contains(&n)) {
            problems.push("connections.max_in_flight must be 1..100000".into());
        }
    }
}

/// Checks an endpoint URL like an `upstream_url`: absolute http(s) with a host, no userinfo or
/// fragment.
pub fn url_ok(url: &str) -> bool {
    matches!(url::Url::parse(url), Ok(u)
        if matches!(u.scheme(), "http" | "https") && u.host().is_some() && u.username().is_empty()
            && u.password().is_none() && u.fragment().is_none())
}

/// Every problem with an endpoint set, for the admin API (which reports them all at once).
pub fn endpoint_problems(endpoints: &[Endpoint], problems: &mut Vec<String>) {
    if endpoints.is_empty() || endpoints.len() > MAX_ENDPOINTS {
        problems.push(format!("endpoints: 1..{MAX_ENDPOINTS} entries"));
    }
    for (i, e) in endpoints.iter().enumerate() {
        if !url_ok(&e.url) {
            problems.push(format!("endpoints[{i}].url must be an absolute http(s) URL without userinfo or fragment"));
        }
        if !(1..=MAX_WEIGHT).contains(&e.weight) {
            problems.push(format!("endpoints[{i}].weight must be 1..{MAX_WEIGHT}"));
        }
        if endpoints[..i].iter().any(|o| o.url == e.url) {
            problems.push(format!("endpoints[{i}].url is listed twice"));
        }
    }
    if !endpoints.is_empty() && endpoints.iter().all(|e| e.drain) {
        problems.push("endpoints: at least one endpoint must not be draining".into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_allowed_hosts_binding_covers_every_endpoint() {
        let set = [Endpoint::single("https://API.example:8443/v1"), Endpoint::single("https://b.example/")];
        let allowed = |hosts: &[&str]| hosts.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>();
        assert!(endpoint_outside(&[], &set).is_none(), "no binding");
        assert!(endpoint_outside(&allowed(&["api.example", "B.EXAMPLE"]), &set).is_none(), "case does not matter");
        assert_eq!(endpoint_outside(&allowed(&["api.example"]), &set).map(|e| e.url.as_str()), Some("https://b.example/"));
        assert!(endpoint_outside(&allowed(&["api.example"]), &[Endpoint::single("not a url")]).is_some(), "no host, not allowed");
    }

    #[test]
    fn hash_keys_round_trip_and_refuse_junk() {
        for (text, key) in [
            ("sid", HashKey::Sid),
            ("root_sid", HashKey::RootSid),
            ("path", HashKey::Path),
            ("header:Mcp-Session-Id", HashKey::Header("mcp-session-id".into())),
        ] {
            assert_eq!(HashKey::try_from(text.to_owned()).unwrap(), key);
        }
        assert_eq!(String::from(HashKey::Header("mcp-session-id".into())), "header:mcp-session-id");
        for bad in ["", "header:", "header:a b", "cookie", "Header:X"] {
            assert!(HashKey::try_from(bad.to_owned()).is_err(), "{bad}");
        }
    }

    #[test]
    fn wire_shape() {
        let lb: LoadBalancing = serde_json::from_str(r#"{"policy":"consistent_hash","hash_key":"header:X-K"}"#).unwrap();
        assert_eq!(lb, LoadBalancing { policy: Policy::ConsistentHash, hash_key: Some(HashKey::Header("x-k".into())) });
        assert_eq!(serde_json::to_string(&LoadBalancing::default()).unwrap(), r#"{"policy":"round_robin"}"#);
        let e: Endpoint = serde_json::from_str(r#"{"url":"http://a"}"#).unwrap();
        assert_eq!(e.weight, 1, "weight defaults to 1");
        assert_eq!(endpoints_or_single(&[], "http://u"), vec![Endpoint::single("http://u")]);
    }

    #[test]
    fn health_retry_and_connection_settings_default_and_report_every_problem() {
        assert_eq!(serde_json::from_str::<HealthProbe>("{}").unwrap(), HealthProbe::default(), "one set of defaults");
        let h: HealthProbe = serde_json::from_str(r#"{"path":"/healthz"}"#).unwrap();
        assert_eq!((h.kind, h.interval_ms, h.timeout_ms, h.healthy_threshold, h.unhealthy_threshold), (ProbeKind::Http, 5000, 1000, 2, 3));
        let mut p = Vec::new();
        h.problems(&mut p);
        assert!(p.is_empty(), "{p:?}");
        let bad: HealthProbe = serde_json::from_str(
            r#"{"kind":"tcp","path":"/x","interval_ms":10,"timeout_ms":20,"healthy_threshold":0,"unhealthy_threshold":11}"#,
        )
        .unwrap();
        bad.problems(&mut p);
        assert_eq!(p.len(), 5, "{p:?}");
        // Read leniently: a key added by a newer control plane must not fail an older gateway's
        // whole exchange (the admin API refuses unknown keys with its own body types).
        assert!(serde_json::from_str::<HealthProbe>(r#"{"jitter_ms":1}"#).is_ok());
        assert_eq!(serde_json::from_str::<Retry>("{}").unwrap(), Retry::default());
        let mut p = Vec::new();
        Retry { attempts: 9, on_unavailable: true }.problems(&mut p);
        Connections { max_in_flight: Some(0), http2: true }.problems(&mut p);
        assert_eq!(p, ["retry.attempts must be 1..5", "connections.max_in_flight must be 1..100000"]);
    }

    #[test]
    fn every_endpoint_problem_is_reported() {
        let mut p = Vec::new();
        let set = [
            Endpoint { url: "ftp://x".into(), weight: 0, drain: false },
            Endpoint::single("http://a"),
            Endpoint { url: "http://a".into(), weight: 5000, drain: true },
        ];
        endpoint_problems(&set, &mut p);
        assert_eq!(p.len(), 4, "{p:?}");
        let mut drained = Vec::new();
        endpoint_problems(&[Endpoint { drain: true, ..Endpoint::single("http://a") }], &mut drained);
        assert_eq!(drained, ["endpoints: at least one endpoint must not be draining"]);
        let mut none = Vec::new();
        endpoint_problems(&[], &mut none);
        assert_eq!(none.len(), 1);
    }
}
