//! Per-`(resource, endpoint)` upstream metrics (docs/pools.md §8), Prometheus conventions.
//!
//! Handles are resolved once when a pool is built, so the request path only increments. Label
//! cardinality is bounded: `endpoint` is the member's index in the set (at most 32) and `resource`
//! is the resource's name for the first `POOL_METRICS_MAX_RESOURCES` resources seen; later ones
//! share the label `other`.

use std::collections::HashSet;
use std::sync::Mutex;

use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

use super::health::Outcome;

const RESPONSE_BUCKETS: &[f64] = &[0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// The upstream metric families.
pub struct UpstreamMetrics {
    requests: IntCounterVec,
    response_seconds: HistogramVec,
    healthy: IntGaugeVec,
    retries: IntCounterVec,
    ejections: IntCounterVec,
    /// Members left out of a pool by the egress policy (never dialed).
    pub members_refused: IntCounter,
    seen: Mutex<HashSet<String>>,
    max_resources: usize,
}

/// One endpoint's handles (shared by the members of its addresses).
#[derive(Clone)]
pub struct MemberMetrics {
    success: IntCounter,
    error: IntCounter,
    connect_failed: IntCounter,
    failed: IntCounter,
    pub response_seconds: Histogram,
    pub healthy: IntGauge,
    pub ejections: IntCounter,
}

impl MemberMetrics {
    /// Counts one attempt.
    pub fn count(&self, outcome: Outcome) {
        match outcome {
            Outcome::Answered(500..) => self.error.inc(),
            Outcome::Answered(_) => self.success.inc(),
            Outcome::ConnectFailed => self.connect_failed.inc(),
            Outcome::Failed => self.failed.inc(),
        }
    }
}

impl UpstreamMetrics {
    /// Registers the families.
    pub fn new(registry: &Registry, max_resources: usize) -> Result<Self, prometheus::Error> {
        let requests = IntCounterVec::new(
            Opts::new(
                "caracal_gateway_upstream_requests_total",
                "Attempts on pool members by outcome (success: < 500, error: 5xx, connect_failed, failed after connecting).",
            ),
            &["resource", "endpoint", "outcome"],
        )?;
        let response_seconds = HistogramVec::new(
            HistogramOpts::new("caracal_gateway_upstream_response_seconds", "Time from dialing a pool member to its response header.")
                .buckets(RESPONSE_BUCKETS.to_vec()),
            &["resource", "endpoint"],
        )?;
        let healthy = IntGaugeVec::new(
            Opts::new(
                "caracal_gateway_upstream_endpoint_healthy",
                "Addresses of a pool endpoint taking requests (probes, passive ejection, drain).",
            ),
            &["resource", "endpoint"],
        )?;
        let retries = IntCounterVec::new(
            Opts::new("caracal_gateway_upstream_retries_total", "Requests retried on another pool member with the same resource mandate."),
            &["resource"],
        )?;
        let ejections = IntCounterVec::new(
            Opts::new("caracal_gateway_upstream_ejections_total", "Pool members ejected by passive health checks."),
            &["resource", "endpoint"],
        )?;
        let members_refused = IntCounter::new(
            "caracal_gateway_upstream_pool_members_refused_total",
            "Upstream pool members left out of their pool by the egress policy (never dialed).",
        )?;
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(response_seconds.clone()),
            Box::new(healthy.clone()),
            Box::new(retries.clone()),
            Box::new(ejections.clone()),
            Box::new(members_refused.clone()),
        ] {
            registry.register(c)?;
        }
        Ok(Self { requests, response_seconds, healthy, retries, ejections, members_refused, seen: Mutex::default(), max_resources })
    }

    /// The `resource` label for a resource: its name while under the cap, else `other`.
    pub fn resource_label(&self, resource: &str) -> String {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.contains(resource) || (seen.len() < self.max_resources && seen.insert(resource.to_owned())) {
            resource.to_owned()
        } else {
            "other".to_owned()
        }
    }

    /// A member's handles.
    pub fn member(&self, resource: &str, endpoint: usize) -> MemberMetrics {
        let e = endpoint.to_string();
        let by = |outcome: &str| self.requests.with_label_values(&[resource, &e, outcome]);
        MemberMetrics {
            success: by("success"),
            error: by("error"),
            connect_failed: by("connect_failed"),
            failed: by("failed"),
            response_seconds: self.response_seconds.with_label_values(&[resource, &e]),
            healthy: self.healthy.with_label_values(&[resource, &e]),
            ejections: self.ejections.with_label_values(&[resource, &e]),
        }
    }

    /// A resource's retry counter.
    pub fn retries(&self, resource: &str) -> IntCounter {
        self.retries.with_label_values(&[resource])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_labels_are_capped() {
        let m = UpstreamMetrics::new(&Registry::new(), 2).unwrap();
        assert_eq!(m.resource_label("a"), "a");
        assert_eq!(m.resource_label("b"), "b");
        assert_eq!(m.resource_label("c"), "other", "over the cap");
        assert_eq!(m.resource_label("a"), "a", "a resource seen before keeps its label");
    }
}
