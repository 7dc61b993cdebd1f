//! S1–S4: the same small GET through each target at fixed rates, then at saturation. [`measure`] is
//! one such run of any target, shared with the pool scenario (S7).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use anyhow::Context as _;
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
pub(crate) const MINT_CONCURRENCY: usize = 8;

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
    /// S7p: the Pingora pass-through, round robin over the three pool endpoints.
    PoolPingora,
    /// S7n: nginx, an `upstream` block of the three pool endpoints.
    PoolNginx,
    /// S7g: the gateway, a resource whose endpoints are the three (weights 1/1/1, round robin).
    PoolGateway,
}

impl Target {
    /// S1–S4, in run order.
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
            Self::PoolPingora => "S7p",
            Self::PoolNginx => "S7n",
            Self::PoolGateway => "S7g",
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
            Self::PoolPingora => "Pingora pass-through, 3 upstreams",
            Self::PoolNginx => "nginx upstream block, 3 servers",
            Self::PoolGateway => "caracal-gateway, pool of 3",
        }
    }

    /// Whether requests carry a gateway mandate and the resource header.
    pub(crate) fn governed(self) -> bool {
        matches!(self, Self::Gateway | Self::Governed | Self::PoolGateway)
    }
}

/// Gateway mandate minters: the fixed-upstream resource (S3, S4) and the pool resource (S7g).
pub(crate) struct Minters {
    pub(crate) fixed: Arc<Minter>,
    pub(crate) pool: Arc<Minter>,
}

impl Minters {
    /// One session, minters for both resources.
    pub(crate) async fn new(sys: &Systems) -> anyhow::Result<Self> {
        let (cp, d) = (sys.caracal.cp, &sys.demo);
        let session = Minter::session(cp, d).mint(&mut Conn::new(cp)).await?;
        Ok(Self {
            fixed: Arc::new(Minter::gateway(cp, d, &session)),
            pool: Arc::new(Minter::gateway_for(cp, d, &session, &d.pool_resource)),
        })
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
    /// How long the audit ledger then took to file the pre-mint's evidence, before the window.
    pub(crate) ledger_drain_s: f64,
}

/// The longest wait for the ledger after a pre-mint (80,000 mints' evidence on two cores).
pub(crate) const LEDGER_DRAIN_LIMIT: Duration = Duration::from_secs(180);

/// A profiled window's recordings and latency slices.
pub(crate) type Profiled = (Vec<crate::profile::Profile>, Option<crate::profile::Slices>);

/// What [`run`] measured: the records, the pre-mints, and with `--profile` the profiles and
/// latency slices of the governed windows.
pub(crate) type Measured = (Vec<RateRecord>, Vec<Premint>, Vec<crate::profile::Profile>, Vec<crate::profile::Slices>);

/// Runs every selected target at each rate, then at saturation.
pub(crate) async fn run(sys: &Systems, plan: &Plan) -> anyhow::Result<Measured> {
    let mut records = Vec::new();
    let mut premints = Vec::new();
    let mut profiles = Vec::new();
    let mut slices = Vec::new();
    let minters = Minters::new(sys).await?;
    for target in Target::ALL.into_iter().filter(|t| plan.selects(t.id())) {
        for mode in plan.modes() {
            // Recorded around the timed window only (after the pre-mint and the ledger's catching up).
            let profiled = plan.profile.as_ref().filter(|_| matches!(target, Target::Gateway | Target::Governed));
            let Some((record, premint, found)) = measure(sys, plan, target, mode, &minters, profiled).await? else { continue };
            if let Some((p, sl)) = found {
                profiles.extend(p);
                slices.extend(sl);
            }
            premints.extend(premint);
            records.push(record);
        }
    }
    Ok((records, premints, profiles, slices))
}

/// One run of `target` in `mode`, with CPU per 1,000 requests; `None` when the target does not run.
/// Gateway targets pre-mint their single-use mandates first (reported as a [`Premint`]).
pub(crate) async fn measure(
    sys: &Systems,
    plan: &Plan,
    target: Target,
    mode: Mode,
    minters: &Minters,
    profile: Option<&(std::path::PathBuf, crate::profile::Mode)>,
) -> anyhow::Result<Option<(RateRecord, Option<Premint>, Option<Profiled>)>> {
    if sys.address(target).is_none() {
        return Ok(None);
    }
    let mut premint = None;
    let auth = match target {
        Target::Direct | Target::Pingora | Target::Nginx | Target::PoolPingora | Target::PoolNginx => Auth::None,
        Target::Envoy => Auth::Cycle(sys.envoy_bearers().unwrap_or_default(), AtomicUsize::new(0)),
        Target::Gateway | Target::PoolGateway => {
            let n = match mode {
                Mode::Fixed { rate } => mandates_for(plan, rate),
                Mode::Saturation => plan.saturation_pool,
            };
            let minter = if target == Target::Gateway { &minters.fixed } else { &minters.pool };
            let (pool, mut p) = premint_pool(minter, n).await?;
            p.ledger_drain_s = sys.caracal.ledger_drained(LEDGER_DRAIN_LIMIT).await?.as_secs_f64();
            premint = Some(p);
            Auth::Consume(pool)
        }
        Target::Governed => Auth::Mint(minters.fixed.clone()),
    };
    let resource = target.governed().then(|| {
        let id = if target == Target::PoolGateway { &sys.demo.pool_resource } else { &sys.demo.resource };
        HeaderValue::from_str(id).expect("resource identifiers are header-safe")
    });
    let (record, profiled) = execute(sys, plan, target, mode, auth, resource, profile).await?;
    Ok(Some((record, premint, profiled)))
}

/// One run of `workload`'s requests (`auth`, `resource`) through `target` in `mode`, with CPU per
/// 1,000 requests, recorded with `profile` when given.
pub(crate) async fn execute(
    sys: &Systems,
    plan: &Plan,
    target: Target,
    mode: Mode,
    auth: Auth,
    resource: Option<HeaderValue>,
    profile: Option<&(std::path::PathBuf, crate::profile::Mode)>,
) -> anyhow::Result<(RateRecord, Option<Profiled>)> {
    let addr = sys.address(target).context("the target does not run")?;
    let connections = if mode == Mode::Saturation { plan.saturation_connections } else { plan.connections };
    // Every fixed-rate run keeps its timeline (the report's latency over time).
    let keep = mode != Mode::Saturation;
    let spec = RunSpec { mode, connections, warmup: plan.warmup, duration: plan.duration, timeline: keep };
    let workload = Arc::new(Workload { target: addr, path: PATH.to_owned(), resource, auth });
    let label = match mode {
        Mode::Fixed { rate } => format!("{}-{rate}", target.id()),
        Mode::Saturation => format!("{}-saturation", target.id()),
    };
    let window = match profile {
        Some((dir, what)) => {
            let c = &sys.caracal;
            let processes = [("gateway", c.gateway.pid()), ("control-plane", c.control_plane.pid())];
            Some(crate::profile::start(dir, &label, &processes, *what)?)
        }
        None => None,
    };
    let before = sys.cpu();
    let result = load::run(workload, spec).await;
    let cpu = before.per_1k(&sys.cpu(), result.sent);
    let run = result.summarize(&spec);
    eprintln!("{}", progress_line(target, &run));
    let profiled = match window {
        Some(w) => {
            eprintln!("bench: analysing the profiles of {label}");
            let slices = (!result.samples.is_empty()).then(|| crate::profile::slices(&label, &result.samples));
            Some((w.finish()?, slices))
        }
        None => None,
    };
    Ok((RateRecord { scenario: target.id(), target, label: target.label(), run, cpu_s_per_1k: cpu }, profiled))
}

/// Single-use mandates S3 consumes in one fixed-rate run at `rate` (its warm-up, its window, and one
/// in flight per connection).
pub(crate) fn mandates_for(plan: &Plan, rate: f64) -> usize {
    (rate * (plan.warmup + plan.duration).as_secs_f64()).ceil() as usize + plan.connections
}

/// `n` single-use mandates from `minter`, and how fast they were minted.
pub(crate) async fn premint_pool(minter: &Arc<Minter>, n: usize) -> anyhow::Result<(Arc<MandatePool>, Premint)> {
    let started = Instant::now();
    let tokens = minter.mint_many(n, MINT_CONCURRENCY).await?;
    let seconds = started.elapsed().as_secs_f64();
    Ok((Arc::new(MandatePool::new(&tokens)), Premint { mandates: n, seconds, per_second: n as f64 / seconds, ledger_drain_s: 0.0 }))
}

fn progress_line(target: Target, r: &RunSummary) -> String {
    let mode = match r.mode {
        Mode::Fixed { rate } => format!("{rate} req/s"),
        Mode::Saturation => "saturation".to_owned(),
    };
    format!(
        "bench: {:<3} {:<33} {:>12}: {:>8.0} req/s, p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, {} requests, {} errors, {} unsent",
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
