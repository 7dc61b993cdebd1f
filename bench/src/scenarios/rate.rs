//! S1–S4: the same small GET through each target at fixed rates, then at saturation.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Instant;

use http::HeaderValue;
use serde::Serialize;

use crate::client::Conn;
use crate::load::workload::{Auth, Workload};
use crate::load::{self, Mode, RunSpec, RunSummary};
use crate::run::Plan;
use crate::scenarios::Systems;
use crate::stack::mint::{MandatePool, Minter};

/// The path every S1–S4 request asks for (the upstream answers it with its small JSON body).
pub(crate) const PATH: &str = "/v1/items/42";
/// Connections that pre-mint mandates in bulk.
const MINT_CONCURRENCY: usize = 8;

/// Who a request goes through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub(crate) enum Target {
    /// S1: straight to the upstream (also the load generator's own ceiling).
    Direct,
    /// S2: the Pingora pass-through.
    Pingora,
    /// S2n: nginx.
    Nginx,
    /// S2j: Envoy verifying an ES256 JWT.
    Envoy,
    /// S3: the gateway, a pre-minted single-use mandate per request.
    Gateway,
    /// S4: mint a gateway mandate at the STS, then call the gateway.
    Governed,
}

impl Target {
    /// In run order.
    pub(crate) const ALL: [Self; 6] = [Self::Direct, Self::Pingora, Self::Nginx, Self::Envoy, Self::Gateway, Self::Governed];

    /// Scenario id in the report.
    pub(crate) fn id(self) -> &'static str {
        match self {
            Self::Direct => "S1",
            Self::Pingora => "S2",
            Self::Nginx => "S2n",
            Self::Envoy => "S2j",
            Self::Gateway => "S3",
            Self::Governed => "S4",
        }
    }

    /// What the scenario is, for tables.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Direct => "direct to upstream",
            Self::Pingora => "Pingora pass-through",
            Self::Nginx => "nginx",
            Self::Envoy => "Envoy + jwt_authn (ES256)",
            Self::Gateway => "caracal-gateway",
            Self::Governed => "governed loop (mint + gateway)",
        }
    }
}

/// One fixed-rate or saturation run of one target.
#[derive(Debug, Serialize)]
pub(crate) struct RateRecord {
    pub(crate) scenario: &'static str,
    pub(crate) target: Target,
    pub(crate) label: &'static str,
    #[serde(flatten)]
    pub(crate) run: RunSummary,
    /// CPU seconds per 1,000 requests, per process (warm-up included on both sides of the division).
    pub(crate) cpu_s_per_1k: BTreeMap<String, f64>,
}

/// A bulk pre-mint before an S3 run (the STS mint throughput, as a by-product).
#[derive(Debug, Serialize)]
pub(crate) struct Premint {
    pub(crate) mandates: usize,
    pub(crate) seconds: f64,
    pub(crate) per_second: f64,
}

/// Runs every available target at each rate, then at saturation.
pub(crate) async fn run(sys: &Systems, plan: &Plan) -> anyhow::Result<(Vec<RateRecord>, Vec<Premint>)> {
    let mut records = Vec::new();
    let mut premints = Vec::new();
    let session = Minter::session(sys.caracal.cp, &sys.demo).mint(&mut Conn::new(sys.caracal.cp)).await?;
    let governed = Arc::new(Minter::gateway(sys.caracal.cp, &sys.demo, &session));
    let modes = plan.rates.iter().map(|&rate| Mode::Fixed { rate }).chain([Mode::Saturation]);
    for target in Target::ALL {
        for mode in modes.clone() {
            let connections = if mode == Mode::Saturation { plan.saturation_connections } else { plan.connections };
            let spec = RunSpec { mode, connections, warmup: plan.warmup, duration: plan.duration };
            let auth = match target {
                Target::Direct | Target::Pingora | Target::Nginx => Auth::None,
                Target::Envoy => Auth::Cycle(sys.envoy_bearers().unwrap_or_default(), AtomicUsize::new(0)),
                Target::Gateway => {
                    let n = match mode {
                        Mode::Fixed { rate } => (rate * (plan.warmup + plan.duration).as_secs_f64()).ceil() as usize + connections,
                        Mode::Saturation => plan.saturation_pool,
                    };
                    let started = Instant::now();
                    let tokens = governed.mint_many(n, MINT_CONCURRENCY).await?;
                    let seconds = started.elapsed().as_secs_f64();
                    premints.push(Premint { mandates: n, seconds, per_second: n as f64 / seconds });
                    Auth::Consume(Arc::new(MandatePool::new(&tokens)))
                }
                Target::Governed => Auth::Mint(governed.clone()),
            };
            let Some(addr) = sys.address(target) else { continue };
            let governed_request = matches!(target, Target::Gateway | Target::Governed);
            let resource =
                governed_request.then(|| HeaderValue::from_str(&sys.demo.resource).expect("resource identifiers are header-safe"));
            let workload = Arc::new(Workload { target: addr, path: PATH.to_owned(), resource, auth });
            let before = sys.cpu();
            let result = load::run(workload, spec).await;
            let cpu = before.per_1k(&sys.cpu(), result.sent);
            let run = result.summarize(&spec);
            eprintln!("{}", progress_line(target, &run));
            records.push(RateRecord { scenario: target.id(), target, label: target.label(), run, cpu_s_per_1k: cpu });
        }
    }
    Ok((records, premints))
}

fn progress_line(target: Target, r: &RunSummary) -> String {
    let mode = match r.mode {
        Mode::Fixed { rate } => format!("{rate} req/s"),
        Mode::Saturation => "saturation".to_owned(),
    };
    format!(
        "bench: {} {:<28} {:>12}: {:>8.0} req/s, p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, {} requests, {} errors, {} unsent",
        target.id(),
        target.label(),
        mode,
        r.achieved_rps,
        r.latency.p50_ms,
        r.latency.p99_ms,
        r.latency.p999_ms,
        r.requests,
        r.errors,
        r.unsent
    )
}
