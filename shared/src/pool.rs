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
    /// The request path.
    Path,
}

impl TryFrom<String> for HashKey {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        match s.as_str() {
            "sid" => Ok(Self::Sid),
            "path" => Ok(Self::Path),
            _ => match s.strip_prefix("header:") {
                Some(name) if http_token(name) => Ok(Self::Header(name.to_ascii_lowercase())),
                _ => Err(format!("hash_key must be header:<Name>, sid or path, got {s:?}")),
            },
        }
    }
}

impl From<HashKey> for String {
    fn from(k: HashKey) -> String {
        match k {
            HashKey::Header(name) => format!("header:{name}"),
            HashKey::Sid => "sid".into(),
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
    fn hash_keys_round_trip_and_refuse_junk() {
        for (text, key) in
            [("sid", HashKey::Sid), ("path", HashKey::Path), ("header:Mcp-Session-Id", HashKey::Header("mcp-session-id".into()))]
        {
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
