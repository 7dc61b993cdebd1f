//! Cost curves (issue 15 item 5): what a governed request costs as one dimension of the deployment
//! grows, each point read against the first of its curve, in the same run.
//!
//! * C1 ([`revoked`]): revoked anchors held in the views, 0 → 1,000,000.
//! * C2 ([`zones`]): zones the traffic is spread over, 1 → 10,000.
//! * C3 ([`policy`]): the zone's active policy, 1 → 1,000 rules, and 1 → 1,000 entries of a lookup.
//! * C4 ([`keys`]): keys in the zone's JWKS, 1 → 8 (the most a zone publishes).
//!
//! C2–C4 measure S3 at the reference rate (the highest planned) at each point: latency, and CPU
//! per request of the gateway and the control plane.

pub(crate) mod keys;
pub(crate) mod policy;
pub(crate) mod revoked;
pub(crate) mod zones;

use std::sync::Arc;

use anyhow::Context as _;
use http::HeaderValue;
use serde::Serialize;

use crate::client::Conn;
use crate::load::Mode;
use crate::load::workload::Auth;
use crate::procs;
use crate::run::Plan;
use crate::scenarios::Systems;
use crate::scenarios::rate::{self, RateRecord, Target};
use crate::scenarios::revocation::through_gateway;
use crate::stack::mint::MandatePool;

/// One of C2–C4.
#[derive(Debug, Serialize)]
pub(crate) struct Curve {
    pub(crate) id: &'static str,
    pub(crate) title: &'static str,
    /// What a point's `size` counts.
    pub(crate) unit: &'static str,
    /// How the points were made, for the report.
    pub(crate) method: &'static str,
    pub(crate) points: Vec<Point>,
}

/// S3 at the reference rate with the curve's dimension at `size`.
#[derive(Debug, Serialize)]
pub(crate) struct Point {
    pub(crate) size: u64,
    /// What else the point cost or held (seeding time, the policy's bytes).
    pub(crate) note: String,
    pub(crate) gateway_rss_mib: Option<f64>,
    pub(crate) control_plane_rss_mib: Option<f64>,
    pub(crate) s3: RateRecord,
}

/// The rate every curve point runs at: the highest planned.
pub(crate) fn reference_rate(plan: &Plan) -> f64 {
    plan.rates.iter().copied().fold(0.0, f64::max)
}

/// Single-use mandates one point's S3 run consumes.
pub(crate) fn mandates_needed(plan: &Plan) -> usize {
    rate::mandates_for(plan, reference_rate(plan))
}

/// S3 at the reference rate over `tokens`, consumed in order, after the ledger filed the mints'
/// evidence; then the point, with both processes' resident memory.
pub(crate) async fn measure(sys: &Systems, plan: &Plan, size: u64, note: String, tokens: &[String]) -> anyhow::Result<Point> {
    sys.caracal.ledger_drained(rate::LEDGER_DRAIN_LIMIT).await?;
    let resource = HeaderValue::from_str(&sys.demo.resource)?;
    let auth = Auth::Consume(Arc::new(MandatePool::new(tokens)));
    let mode = Mode::Fixed { rate: reference_rate(plan) };
    let (s3, _) = rate::execute(sys, plan, Target::Gateway, mode, auth, Some(resource), None).await?;
    let mib = |pid| procs::rss_kib(pid).map(|k| k as f64 / 1024.0);
    let c = &sys.caracal;
    Ok(Point { size, note, gateway_rss_mib: mib(c.gateway.pid()), control_plane_rss_mib: mib(c.control_plane.pid()), s3 })
}

/// One request per mandate through the gateway over `concurrency` connections; every one must
/// pass (a point measures warm caches, not first fetches).
pub(crate) async fn warm(sys: &Systems, tokens: Vec<String>, concurrency: usize) -> anyhow::Result<()> {
    let resource = HeaderValue::from_str(&sys.demo.resource)?;
    let tokens: Arc<[String]> = tokens.into();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (tokens, next, resource, gw) = (tokens.clone(), next.clone(), resource.clone(), sys.caracal.gw);
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::new(gw);
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(t) = tokens.get(i) else { return anyhow::Ok(()) };
                let status = through_gateway(&mut conn, t, &resource).await?;
                anyhow::ensure!(status.is_success(), "warm-up request {i} answered {status}");
            }
        }));
    }
    for t in tasks {
        t.await.context("warm-up task")??;
    }
    Ok(())
}
