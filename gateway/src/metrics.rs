//! The gateway's metrics, registered once.
//!
//! Names follow the original (`caracal_gateway_requests_total`, `caracal_gateway_denials_<kind>_total`
//! with no labels) so existing alert rules keep working; histograms are added for latency.

use std::collections::HashMap;

use caracal_shared::stream_consumer::ConsumerMetrics;
use prometheus::{Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

use crate::deny::Denial;

const LATENCY_BUCKETS: &[f64] = &[0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0];

/// All gateway metrics.
pub struct Metrics {
    registry: Registry,
    /// Every request that reached the proxy pipeline.
    pub requests: IntCounter,
    /// Requests forwarded to an upstream.
    pub allowed: IntCounter,
    /// Requests refused by any denial.
    pub denied: IntCounter,
    /// Per denial label: its own counter (the original's names) and its child of the labelled
    /// `caracal_gateway_denials_total{reason}` family (bounded by `Denial::METRIC_LABELS`).
    denials: HashMap<&'static str, [IntCounter; 2]>,
    /// Time from request arrival to the end of the response.
    pub request_seconds: Histogram,
    /// Time of the signed STS exchange.
    pub sts_exchange_seconds: Histogram,
    /// Time of the JTI `SET NX`.
    pub redis_seconds: Histogram,
    /// Live revoked anchors held in memory (refreshed at scrape).
    pub revocations_active: IntGauge,
    /// Age of the older revocation source, seconds (refreshed at scrape).
    pub revocation_staleness_seconds: Gauge,
    /// Send-to-apply delay of the newest revocation message.
    pub revocation_propagation_seconds: Gauge,
    /// The audit path.
    pub audit: crate::audit::AuditMetrics,
    /// Spooled audit files (refreshed at scrape).
    pub audit_spool_files: IntGauge,
    /// Times the STS circuit opened.
    pub sts_circuit_opened: IntCounter,
    /// Times the STS turned ready while a circuit was open, ending the open periods early.
    pub sts_ready_probes: IntCounter,
    /// JWKS fetches made.
    pub jwks_fetches: IntCounter,
    /// Key lookups refused without a fetch: a zone without known keys, cold-fetch budget spent.
    pub jwks_cold_refused: IntCounter,
    /// Streams cut because an anchor was revoked mid-response.
    pub stream_cuts: IntCounter,
    /// Per-`(resource, endpoint)` upstream pool metrics (docs/pools.md §8).
    pub upstream: std::sync::Arc<crate::phases::pool::metrics::UpstreamMetrics>,
    /// The revocation stream consumer.
    pub revocation_stream: ConsumerMetrics,
    /// Snapshot reloads and their failures.
    pub revocation_reloads: IntCounter,
    pub revocation_reload_errors: IntCounter,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new(max_pool_resources: usize) -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| -> Result<IntCounter, prometheus::Error> {
            let c = IntCounter::new(format!("caracal_gateway_{name}"), help)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let histogram = |name: &str, help: &str| -> Result<Histogram, prometheus::Error> {
            let h = Histogram::with_opts(HistogramOpts::new(format!("caracal_gateway_{name}"), help).buckets(LATENCY_BUCKETS.to_vec()))?;
            registry.register(Box::new(h.clone()))?;
            Ok(h)
        };
        let requests = counter("requests_total", "Requests that entered the proxy pipeline.")?;
        let allowed = counter("requests_allowed_total", "Requests forwarded to an upstream.")?;
        let denied = counter("requests_denied_total", "Requests refused by the gateway.")?;
        let by_reason = IntCounterVec::new(Opts::new("caracal_gateway_denials_total", "Requests denied, by reason."), &["reason"])?;
        registry.register(Box::new(by_reason.clone()))?;
        let mut denials = HashMap::new();
        for label in Denial::METRIC_LABELS {
            let own = counter(&format!("denials_{label}_total"), &format!("Requests denied: {label}."))?;
            denials.insert(*label, [own, by_reason.with_label_values(&[*label])]);
        }
        let gauge = |name: &str, help: &str| -> Result<Gauge, prometheus::Error> {
            let g = Gauge::new(format!("caracal_gateway_{name}"), help)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let revocations_active = IntGauge::new("caracal_gateway_revocations_active", "Live revoked anchors held in memory.")?;
        registry.register(Box::new(revocations_active.clone()))?;
        let revocation_stream = ConsumerMetrics {
            handled: counter("revocation_messages_total", "Revocation messages applied.")?,
            invalid_signatures: counter("revocation_invalid_signatures_total", "Revocation messages with a bad _sig (dead-lettered).")?,
            dead_letters: counter("revocation_dead_letters_total", "Revocation messages moved to the dead-letter stream.")?,
            reclaimed: counter("revocation_pending_reclaimed_total", "Pending revocation messages reclaimed.")?,
            read_errors: counter("revocation_stream_errors_total", "Revocation stream read failures.")?,
            dead_letter_backlog: {
                let g = IntGauge::new("caracal_gateway_revocation_dead_letter_backlog", "Entries in caracal.sessions.revoke.dead.")?;
                registry.register(Box::new(g.clone()))?;
                g
            },
            lag_seconds: gauge(
                "revocation_consumer_lag_seconds",
                "Age of the oldest revocation message this gateway's group has not applied; 0 when caught up.",
            )?,
        };
        Ok(Self {
            revocations_active,
            revocation_staleness_seconds: gauge("revocation_staleness_seconds", "Age of the older revocation source.")?,
            revocation_propagation_seconds: gauge("revocation_propagation_seconds", "Send-to-apply delay of the newest revocation.")?,
            audit: crate::audit::AuditMetrics {
                emitted: counter("audit_emitted_total", "Audit events sent to the stream.")?,
                spooled: counter("audit_spooled_total", "Audit events written to the replay directory.")?,
                drained: counter("audit_drained_total", "Spooled audit events sent after Redis came back.")?,
                lost: counter("audit_dropped_total", "Audit events that could be neither sent nor spooled.")?,
            },
            audit_spool_files: {
                let g = IntGauge::new("caracal_gateway_audit_replay_files", "Audit spool files waiting to be sent.")?;
                registry.register(Box::new(g.clone()))?;
                g
            },
            sts_circuit_opened: counter("sts_circuit_opened_total", "Times the STS circuit breaker opened.")?,
            sts_ready_probes: counter(
                "sts_circuit_ready_probes_total",
                "Times the STS answered /ready again while a circuit was open, so open circuits probed at once.",
            )?,
            jwks_fetches: counter("jwks_fetches_total", "JWKS fetches made (cold zones, TTL expiry, forced by unknown kids).")?,
            jwks_cold_refused: counter(
                "jwks_cold_fetches_refused_total",
                "Key lookups for zones without known keys refused without a fetch (JWKS_COLD_FETCH_BURST/RATE spent).",
            )?,
            stream_cuts: counter("stream_cuts_total", "Responses cut because their session was revoked.")?,
            upstream: std::sync::Arc::new(crate::phases::pool::metrics::UpstreamMetrics::new(&registry, max_pool_resources)?),
            revocation_stream,
            revocation_reloads: counter("revocation_reloads_total", "Revocation snapshots loaded.")?,
            revocation_reload_errors: counter("revocation_reload_errors_total", "Revocation snapshots that failed.")?,
            requests,
            allowed,
            denied,
            denials,
            request_seconds: histogram("request_duration_seconds", "Time to serve a proxied request.")?,
            sts_exchange_seconds: histogram("sts_exchange_duration_seconds", "Time of the signed STS exchange.")?,
            redis_seconds: histogram("redis_duration_seconds", "Time of the JTI single-use check in Redis.")?,
            registry,
        })
    }

    /// Counts a denial.
    pub fn deny(&self, denial: &Denial) {
        self.denied.inc();
        for c in self.denials.get(denial.metric_label()).into_iter().flatten() {
            c.inc();
        }
    }

    /// Prometheus text exposition.
    pub fn render_text(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 * 1024);
        TextEncoder::new().encode(&self.registry.gather(), &mut out).expect("text encoding of gathered metrics");
        out
    }

    /// A flat JSON object of counter values (`/metrics.json`), keyed without the prefix and suffix.
    pub fn render_json(&self) -> Vec<u8> {
        let mut map = serde_json::Map::new();
        for family in self.registry.gather() {
            let name = family.name().trim_start_matches("caracal_gateway_").trim_end_matches("_total").to_owned();
            // Labelled families (per-endpoint upstream metrics) are for Prometheus only.
            if let Some(m) = family.get_metric().first().filter(|m| m.get_label().is_empty()) {
                let value = match family.get_field_type() {
                    prometheus::proto::MetricType::COUNTER => serde_json::json!(m.get_counter().get_value() as u64),
                    prometheus::proto::MetricType::GAUGE => serde_json::json!(m.get_gauge().get_value()),
                    prometheus::proto::MetricType::HISTOGRAM => {
                        let h = m.get_histogram();
                        serde_json::json!({"count": h.get_sample_count(), "sum_seconds": h.get_sample_sum()})
                    }
                    _ => continue,
                };
                map.insert(name, value);
            }
        }
        serde_json::to_vec(&map).expect("metrics JSON serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denials_count_in_their_own_counter() {
        let m = Metrics::new(8).unwrap();
        m.deny(&Denial::Replay);
        m.deny(&Denial::Replay);
        m.deny(&Denial::Signature);
        let text = String::from_utf8(m.render_text()).unwrap();
        assert!(text.contains("caracal_gateway_denials_jti_replay_total 2"), "{text}");
        assert!(text.contains("caracal_gateway_denials_signature_total 1"));
        assert!(text.contains("caracal_gateway_requests_denied_total 3"));
        assert!(text.contains("caracal_gateway_denials_total{reason=\"jti_replay\"} 2"), "{text}");
        assert!(text.contains("caracal_gateway_denials_total{reason=\"revoked\"} 0"), "every reason is exported from the start");
        let json: serde_json::Value = serde_json::from_slice(&m.render_json()).unwrap();
        assert_eq!(json["denials_jti_replay"], 2);
    }
}
