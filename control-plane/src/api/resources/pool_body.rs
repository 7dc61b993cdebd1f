//! The pool parts of a resource body (docs/pools.md): `endpoints`, `load_balancing`, `timeouts`
//! and the upkeep settings `health`, `retry` and `connections`.
//!
//! Numbers that may be out of range are read loosely (`i64`) and checked with everything else, so
//! one answer lists every problem; unknown keys are refused (a typo is not a no-op).

use caracal_shared::pool::{Connections, Endpoint, HashKey, HealthProbe, LoadBalancing, Policy, ProbeKind, Retry, Timeouts};
use serde::{Deserialize, Deserializer};

/// A number as sent, as `T`; out of `T`'s range becomes 0, which every range check refuses.
fn fit<T: TryFrom<i64> + Default>(v: i64) -> T {
    T::try_from(v).unwrap_or_default()
}

/// For `Option<Option<T>>` fields: `Some(None)` for an explicit `null`, `None` when absent.
pub(super) fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// An endpoint as sent.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EndpointBody {
    pub(super) url: String,
    pub(super) weight: Option<i64>,
    /// No new requests go to a draining endpoint.
    #[serde(default)]
    pub(super) drain: bool,
}

impl From<EndpointBody> for Endpoint {
    fn from(e: EndpointBody) -> Self {
        Self { url: e.url, weight: e.weight.map_or(1, fit), drain: e.drain }
    }
}

impl From<Endpoint> for EndpointBody {
    fn from(e: Endpoint) -> Self {
        Self { url: e.url, weight: Some(e.weight.into()), drain: e.drain }
    }
}

/// The endpoint set a body asks for: `endpoints` when sent (with `upstream_url` defaulting to its
/// first URL), else `upstream_url` as a set of one; `None` when neither was sent. The flag says
/// whether `endpoints` was sent.
pub(super) fn pool_of(upstream_url: Option<String>, endpoints: Option<Vec<EndpointBody>>) -> Option<(String, Vec<Endpoint>, bool)> {
    match (upstream_url, endpoints) {
        (url, Some(set)) => {
            let set: Vec<Endpoint> = set.into_iter().map(Endpoint::from).collect();
            let url = url.or_else(|| set.first().map(|e| e.url.clone())).unwrap_or_default();
            Some((url, set, true))
        }
        (Some(url), None) => Some((url.clone(), vec![Endpoint::single(url)], false)),
        (None, None) => None,
    }
}

/// `load_balancing` as sent; checked by [`load_balancing_problems`].
#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub(super) struct LoadBalancingBody {
    policy: Option<String>,
    hash_key: Option<String>,
}

impl From<LoadBalancing> for LoadBalancingBody {
    fn from(lb: LoadBalancing) -> Self {
        let policy = serde_json::to_value(lb.policy).ok().and_then(|v| v.as_str().map(str::to_owned));
        Self { policy, hash_key: lb.hash_key.map(String::from) }
    }
}

/// The settings a `load_balancing` body stands for, every problem reported.
pub(super) fn load_balancing_problems(b: &LoadBalancingBody, problems: &mut Vec<String>) -> LoadBalancing {
    let policy = match b.policy.as_deref().map(Policy::parse) {
        None => Policy::RoundRobin,
        Some(Some(p)) => p,
        Some(None) => {
            problems.push("load_balancing.policy must be round_robin, least_outstanding or consistent_hash".into());
            Policy::RoundRobin
        }
    };
    let hash_key = match &b.hash_key {
        None => None,
        Some(k) => HashKey::try_from(k.clone()).map_err(|e| problems.push(format!("load_balancing.{e}"))).ok(),
    };
    match (policy, b.hash_key.is_some()) {
        (Policy::ConsistentHash, false) => problems.push("load_balancing.hash_key is required for consistent_hash".into()),
        (Policy::RoundRobin | Policy::LeastOutstanding, true) => {
            problems.push("load_balancing.hash_key applies to consistent_hash only".into())
        }
        _ => {}
    }
    LoadBalancing { policy, hash_key }
}

/// `timeouts` as sent.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TimeoutsBody {
    connect_ms: Option<u32>,
    response_header_ms: Option<u32>,
    body_idle_ms: Option<u32>,
}

impl From<TimeoutsBody> for Timeouts {
    fn from(t: TimeoutsBody) -> Self {
        Self { connect_ms: t.connect_ms, response_header_ms: t.response_header_ms, body_idle_ms: t.body_idle_ms }
    }
}

/// How the gateway keeps a pool serving: active probes, retries on another endpoint, and
/// per-endpoint connection settings (docs/pools.md §4, §5, §7).
#[derive(Clone, Default)]
pub(super) struct Upkeep {
    pub(super) health: Option<HealthProbe>,
    pub(super) retry: Retry,
    pub(super) connections: Connections,
}

/// `health` as sent; unsent settings take [`HealthProbe::default`]'s.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HealthBody {
    kind: Option<String>,
    path: Option<String>,
    interval_ms: Option<i64>,
    timeout_ms: Option<i64>,
    healthy_threshold: Option<i64>,
    unhealthy_threshold: Option<i64>,
}

impl HealthBody {
    fn checked(self, problems: &mut Vec<String>) -> HealthProbe {
        let d = HealthProbe::default();
        let kind = match self.kind.as_deref() {
            None | Some("http") => ProbeKind::Http,
            Some("tcp") => ProbeKind::Tcp,
            Some(_) => {
                problems.push("health.kind must be http or tcp".into());
                d.kind
            }
        };
        let probe = HealthProbe {
            kind,
            path: self.path,
            interval_ms: self.interval_ms.map_or(d.interval_ms, fit),
            timeout_ms: self.timeout_ms.map_or(d.timeout_ms, fit),
            healthy_threshold: self.healthy_threshold.map_or(d.healthy_threshold, fit),
            unhealthy_threshold: self.unhealthy_threshold.map_or(d.unhealthy_threshold, fit),
        };
        probe.problems(problems);
        probe
    }
}

/// `retry` as sent; unsent settings take [`Retry::default`]'s.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RetryBody {
    attempts: Option<i64>,
    on_unavailable: Option<bool>,
}

impl RetryBody {
    fn checked(self, problems: &mut Vec<String>) -> Retry {
        let d = Retry::default();
        let retry =
            Retry { attempts: self.attempts.map_or(d.attempts, fit), on_unavailable: self.on_unavailable.unwrap_or(d.on_unavailable) };
        retry.problems(problems);
        retry
    }
}

/// `connections` as sent; unsent settings take [`Connections::default`]'s.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ConnectionsBody {
    max_in_flight: Option<i64>,
    http2: Option<bool>,
}

impl ConnectionsBody {
    fn checked(self, problems: &mut Vec<String>) -> Connections {
        let c = Connections { max_in_flight: self.max_in_flight.map(fit), http2: self.http2.unwrap_or_default() };
        c.problems(problems);
        c
    }
}

/// The upkeep settings of a body, `Some(None)` meaning an explicit `null`.
#[derive(Default)]
pub(super) struct UpkeepBody {
    pub(super) health: Option<Option<HealthBody>>,
    pub(super) retry: Option<Option<RetryBody>>,
    pub(super) connections: Option<Option<ConnectionsBody>>,
}

impl UpkeepBody {
    /// `cur` with the body's changes: a sent setting replaces the stored one whole (`null` removes
    /// the probe or restores the defaults), an absent one stays. Every problem is reported.
    pub(super) fn applied_to(self, cur: Upkeep, problems: &mut Vec<String>) -> Upkeep {
        Upkeep {
            health: match self.health {
                None => cur.health,
                Some(h) => h.map(|h| h.checked(problems)),
            },
            retry: match self.retry {
                None => cur.retry,
                Some(r) => r.map_or_else(Retry::default, |r| r.checked(problems)),
            },
            connections: match self.connections {
                None => cur.connections,
                Some(c) => c.map_or_else(Connections::default, |c| c.checked(problems)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upkeep(body: serde_json::Value) -> UpkeepBody {
        #[derive(Deserialize)]
        struct Sent {
            #[serde(default, deserialize_with = "present")]
            health: Option<Option<HealthBody>>,
            #[serde(default, deserialize_with = "present")]
            retry: Option<Option<RetryBody>>,
            #[serde(default, deserialize_with = "present")]
            connections: Option<Option<ConnectionsBody>>,
        }
        let s: Sent = serde_json::from_value(body).unwrap();
        UpkeepBody { health: s.health, retry: s.retry, connections: s.connections }
    }

    #[test]
    fn absent_keeps_null_resets_and_out_of_range_numbers_are_reported() {
        let stored = Upkeep {
            health: Some(HealthProbe::default()),
            retry: Retry { attempts: 3, on_unavailable: true },
            connections: Connections { max_in_flight: Some(9), http2: true },
        };
        let mut problems = Vec::new();
        let kept = upkeep(serde_json::json!({})).applied_to(stored.clone(), &mut problems);
        assert_eq!((kept.health, kept.retry, kept.connections), (stored.health.clone(), stored.retry, stored.connections));
        let reset = upkeep(serde_json::json!({"health": null, "retry": null, "connections": null})).applied_to(stored, &mut problems);
        assert_eq!((reset.health, reset.retry, reset.connections), (None, Retry::default(), Connections::default()));
        assert!(problems.is_empty(), "{problems:?}");
        let bad = serde_json::json!({
            "health": {"healthy_threshold": 300, "interval_ms": -5},
            "retry": {"attempts": 256},
            "connections": {"max_in_flight": 5_000_000_000_i64}
        });
        upkeep(bad).applied_to(Upkeep::default(), &mut problems);
        assert_eq!(problems.len(), 5, "each out-of-range number is reported, none wraps: {problems:?}");
    }
}
