//! STS metrics, registered in the control plane's registry.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts, Registry};

/// Counters and histograms of the token endpoint.
pub struct StsMetrics {
    /// Mandates issued, by `use`.
    pub exchanges: IntCounterVec,
    /// Refused or failed exchanges, by reason.
    pub denials: IntCounterVec,
    /// Policy evaluations, by decision.
    pub policy_evaluations: IntCounterVec,
    /// Presented mandates found to be ours, by what proved it (`tag` or `signature`).
    pub issuer_checks: IntCounterVec,
    /// Time spent per token request.
    pub exchange_seconds: Histogram,
    /// Refused requests whose caller never authenticated (no evidence is filed for them).
    pub unauthenticated: IntCounter,
}

impl StsMetrics {
    /// Creates and registers the metrics.
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let exchanges = IntCounterVec::new(Opts::new("caracal_sts_exchanges_total", "Mandates issued, by use."), &["use"])?;
        let denials =
            IntCounterVec::new(Opts::new("caracal_sts_denials_total", "Token requests refused or failed, by reason."), &["reason"])?;
        let policy_evaluations =
            IntCounterVec::new(Opts::new("caracal_sts_policy_evaluations_total", "Policy evaluations, by decision."), &["decision"])?;
        let exchange_seconds = Histogram::with_opts(
            HistogramOpts::new("caracal_sts_exchange_seconds", "Time to answer a token request.")
                .buckets(vec![0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0]),
        )?;
        let issuer_checks = IntCounterVec::new(
            Opts::new("caracal_sts_issuer_checks_total", "Presented mandates proven issued here, by what proved it (tag or signature)."),
            &["by"],
        )?;
        registry.register(Box::new(exchanges.clone()))?;
        registry.register(Box::new(issuer_checks.clone()))?;
        registry.register(Box::new(denials.clone()))?;
        registry.register(Box::new(policy_evaluations.clone()))?;
        let unauthenticated = IntCounter::new(
            "caracal_sts_unauthenticated_refusals_total",
            "Token requests refused before the caller authenticated (counted, not filed as evidence).",
        )?;
        registry.register(Box::new(exchange_seconds.clone()))?;
        registry.register(Box::new(unauthenticated.clone()))?;
        Ok(Self { exchanges, issuer_checks, denials, policy_evaluations, exchange_seconds, unauthenticated })
    }
}
