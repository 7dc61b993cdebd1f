//! Control-plane metrics (the STS registers its own in the same registry).

use prometheus::{Encoder, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

/// Registry and the control plane's own metrics.
pub struct Metrics {
    pub registry: Registry,
    /// Admin API responses by status class.
    pub api_responses: IntCounterVec,
    /// Outbox messages published, by stream.
    pub outbox_published: IntCounterVec,
    /// Outbox publish failures (retried with backoff).
    pub outbox_failures: IntCounterVec,
    /// Outbox rows not yet published.
    pub outbox_pending: IntGauge,
    /// Control invocations by outcome (`ok`, `deny`, `failed`) and wire code.
    pub control_invocations: IntCounterVec,
    /// Control audit frames that could not be recorded, by decision.
    pub control_audit_failures: IntCounterVec,
    /// Mutating requests refused before anyone was authenticated, by surface (`admin`,
    /// `coordinator`): counted here instead of filed as evidence under a caller-chosen zone.
    pub unauthenticated_requests: IntCounterVec,
    /// Coordinator requests refused (4xx), by error code.
    pub coordinator_denials: IntCounterVec,
    /// Failed admin and bootstrap authentications, by surface and outcome (`refused` 401,
    /// `throttled` 429).
    pub admin_auth_failures: IntCounterVec,
    /// Async worker threads serving (`CONTROL_PLANE_THREADS`), as the runtime reports them.
    pub worker_threads: IntGauge,
}

impl Metrics {
    /// Creates and registers.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let api_responses =
            IntCounterVec::new(Opts::new("caracal_api_responses_total", "Admin API responses, by status class."), &["class"])?;
        let outbox_published =
            IntCounterVec::new(Opts::new("caracal_outbox_published_total", "Outbox messages published, by stream."), &["stream"])?;
        let outbox_failures =
            IntCounterVec::new(Opts::new("caracal_outbox_failures_total", "Outbox publish failures, by stream."), &["stream"])?;
        let outbox_pending = IntGauge::new("caracal_outbox_pending", "Outbox rows not yet published.")?;
        registry.register(Box::new(api_responses.clone()))?;
        registry.register(Box::new(outbox_published.clone()))?;
        registry.register(Box::new(outbox_failures.clone()))?;
        let control_invocations = IntCounterVec::new(
            Opts::new("caracal_control_invocations_total", "Control invocations, by outcome and wire code."),
            &["code", "outcome"],
        )?;
        let control_audit_failures = IntCounterVec::new(
            Opts::new("caracal_control_audit_failures_total", "Control audit frames that could not be recorded, by decision."),
            &["decision"],
        )?;
        registry.register(Box::new(outbox_pending.clone()))?;
        registry.register(Box::new(control_invocations.clone()))?;
        registry.register(Box::new(control_audit_failures.clone()))?;
        let unauthenticated_requests = IntCounterVec::new(
            Opts::new("caracal_unauthenticated_requests_total", "Mutating requests refused before authentication, by surface."),
            &["surface"],
        )?;
        registry.register(Box::new(unauthenticated_requests.clone()))?;
        let coordinator_denials = IntCounterVec::new(
            Opts::new("caracal_coordinator_denials_total", "Coordinator requests refused (4xx), by error code."),
            &["code"],
        )?;
        registry.register(Box::new(coordinator_denials.clone()))?;
        let admin_auth_failures = IntCounterVec::new(
            Opts::new("caracal_admin_auth_failures_total", "Failed admin and bootstrap authentications, by surface and outcome."),
            &["surface", "outcome"],
        )?;
        registry.register(Box::new(admin_auth_failures.clone()))?;
        let worker_threads =
            IntGauge::new("caracal_control_plane_worker_threads", "Async worker threads serving (CONTROL_PLANE_THREADS).")?;
        registry.register(Box::new(worker_threads.clone()))?;
        Ok(Self {
            registry,
            api_responses,
            outbox_published,
            outbox_failures,
            outbox_pending,
            control_invocations,
            control_audit_failures,
            unauthenticated_requests,
            coordinator_denials,
            admin_auth_failures,
            worker_threads,
        })
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 * 1024);
        TextEncoder::new().encode(&self.registry.gather(), &mut out).expect("text encoding");
        out
    }
}
