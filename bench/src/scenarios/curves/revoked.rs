//! C1: what a governed request and a revocation cost as the revoked
//! anchors held in memory grow from none to a million. Rows go straight into `revocations` (`psql`,
//! `generate_series`, one zone, expiring in two hours). At each point the gateway reloads its
//! snapshot (timed, `POST /internal/revocations/reload`); once the incremental reloads stopped
//! re-reading the new rows ([`settle`]), S3 runs at the reference rate (latency, CPU per request of both processes), then revoke →
//! denied through the gateway over a few trials (the stream path: one anchor added to the view).
//! Each point is read against the first, in the same run. The rows are deleted at the end (the
//! views keep their anchors until they expire), so the curve runs after every scenario but S8.

use std::time::Duration;

use anyhow::Context as _;
use http::HeaderValue;
use serde::Serialize;
use tokio::time::Instant;

use crate::client::Conn;
use crate::hist::quantile;
use crate::load::Mode;
use crate::procs;
use crate::run::Plan;
use crate::scenarios::Systems;
use crate::scenarios::rate::{self, Minters, Target};
use crate::scenarios::revocation::until_denied;
use crate::stack::mint::Minter;
use crate::stack::sid_of;

/// Prefix of the curve's anchor ids (deleted at the end).
const ANCHOR_PREFIX: &str = "bench-curve-";
/// Mandates held per revoke → denied trial.
const PREMINTED: usize = 3;
/// Before a point is measured: the readers' incremental reloads re-read new rows for
/// `RELOAD_OVERLAP` after they were revoked (late commits); past it, the point is the steady state
/// of a view that holds them. Smoke runs only wait for the control plane's next reload.
fn settle(plan: &Plan) -> Duration {
    if plan.smoke { Duration::from_secs(3) } else { caracal_shared::revocation::RELOAD_OVERLAP + Duration::from_secs(5) }
}

/// One point of the curve.
#[derive(Debug, Serialize)]
pub(crate) struct CostPoint {
    pub(crate) revoked_anchors: u64,
    /// The gateway's full snapshot reload at this size, ms.
    pub(crate) gateway_reload_ms: f64,
    /// The gateway's resident memory after it, MiB.
    pub(crate) gateway_rss_mib: Option<f64>,
    /// S3 at the reference rate.
    pub(crate) s3: rate::RateRecord,
    /// Revoke → the first denied request through the gateway, ms.
    pub(crate) denied_p50_ms: Option<f64>,
    pub(crate) denied_max_ms: Option<f64>,
    /// Revoke → the anchor in the gateway's own view (its stream consumer's send-to-apply gauge), ms.
    pub(crate) in_view_p50_ms: Option<f64>,
    pub(crate) in_view_max_ms: Option<f64>,
}

/// The sizes: a million at most (smoke: a thousand).
fn sizes(plan: &Plan) -> Vec<u64> {
    if plan.smoke { vec![0, 1_000] } else { vec![0, 10_000, 100_000, 1_000_000] }
}

pub(crate) async fn run(sys: &Systems, plan: &Plan) -> anyhow::Result<Vec<CostPoint>> {
    let db = sys.caracal.cp_setting("DATABASE_URL").context("the control plane's DATABASE_URL")?.to_owned();
    let rate = plan.rates.iter().copied().fold(0.0, f64::max);
    let minters = Minters::new(sys).await?;
    let mut points = Vec::new();
    let mut held = 0;
    let result = async {
        for n in sizes(plan) {
            if n > held {
                psql(&db, &format!(
                    "INSERT INTO revocations (zone_id, anchor_kind, anchor_id, reason, expires_at) \
                     SELECT '{}', 'sid', '{ANCHOR_PREFIX}' || g, 'bench cost curve', now() + interval '2 hours' \
                     FROM generate_series({}, {}) g",
                    sys.demo.zone_id,
                    held + 1,
                    n
                ))
                .await?;
                held = n;
            }
            let started = Instant::now();
            let loaded = sys.caracal.reload_gateway_revocations().await?;
            let reload_ms = started.elapsed().as_secs_f64() * 1e3;
            anyhow::ensure!(loaded >= n, "the gateway loaded {loaded} revocations, expected at least {n}");
            if n > 0 {
                tokio::time::sleep(settle(plan)).await;
            }
            let Some((s3, _, _)) = rate::measure(sys, plan, Target::Gateway, Mode::Fixed { rate }, &minters, None).await? else {
                anyhow::bail!("the gateway does not run")
            };
            let (denied, in_view) = denials(sys, if plan.smoke { 2 } else { 5 }).await?;
            let point = CostPoint {
                revoked_anchors: n,
                gateway_reload_ms: reload_ms,
                gateway_rss_mib: procs::rss_kib(sys.caracal.gateway.pid()).map(|k| k as f64 / 1024.0),
                s3,
                denied_p50_ms: quantile(&denied, 0.5),
                denied_max_ms: denied.last().copied(),
                in_view_p50_ms: quantile(&in_view, 0.5),
                in_view_max_ms: in_view.last().copied(),
            };
            eprintln!(
                "bench: C1 {n} revoked anchors: gateway reload {reload_ms:.0} ms, RSS {:.1} MiB, S3 p50 {:.2} / p99 {:.2} ms, revoke → denied p50 {:.2} ms, → in the gateway's view p50 {:.2} ms",
                point.gateway_rss_mib.unwrap_or(f64::NAN),
                point.s3.run.latency.p50_ms,
                point.s3.run.latency.p99_ms,
                point.denied_p50_ms.unwrap_or(f64::NAN),
                point.in_view_p50_ms.unwrap_or(f64::NAN)
            );
            points.push(point);
        }
        anyhow::Ok(())
    }
    .await;
    // Whatever happened, the rows go: later processes would load them all.
    psql(&db, &format!("DELETE FROM revocations WHERE anchor_id LIKE '{ANCHOR_PREFIX}%'")).await?;
    result.map(|()| points)
}

/// Revoke → denied through the gateway, and revoke → in the gateway's view, `trials` times, each
/// sorted (ms).
async fn denials(sys: &Systems, trials: usize) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let (cp, d) = (sys.caracal.cp, &sys.demo);
    let mut sts = Conn::new(cp);
    let mut gw = Conn::new(sys.caracal.gw);
    let resource = HeaderValue::from_str(&d.resource)?;
    let (mut out, mut in_view) = (Vec::new(), Vec::new());
    for _ in 0..trials {
        let applied = sys.caracal.gateway_metric(APPLIED).await?.unwrap_or(0.0);
        let session = Minter::session(cp, d).mint(&mut sts).await?;
        let minter = Minter::gateway(cp, d, &session);
        let mut mandates = Vec::with_capacity(PREMINTED);
        for _ in 0..PREMINTED {
            mandates.push(minter.mint(&mut sts).await?);
        }
        sys.caracal.revoke(d, &sid_of(&session)?).await?;
        let t0 = Instant::now();
        if let Some((took, _)) = until_denied(&mut gw, &mandates, &resource, t0).await? {
            out.push(took.as_secs_f64() * 1e3);
        }
        // The stream consumer counts a message once the view holds its anchor and the gauge is set.
        while sys.caracal.gateway_metric(APPLIED).await?.unwrap_or(0.0) <= applied {
            anyhow::ensure!(t0.elapsed() < Duration::from_secs(30), "the gateway did not apply the revocation within 30 s");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        in_view.extend(sys.caracal.gateway_metric(PROPAGATION).await?.map(|s| s * 1e3));
    }
    out.sort_by(f64::total_cmp);
    in_view.sort_by(f64::total_cmp);
    Ok((out, in_view))
}

/// Revocation messages the gateway applied.
const APPLIED: &str = "caracal_gateway_revocation_messages_total";
/// Send-to-apply delay of the newest one, seconds.
const PROPAGATION: &str = "caracal_gateway_revocation_propagation_seconds";

/// Runs one SQL statement with `psql` (Debian: postgresql-client).
async fn psql(url: &str, sql: &str) -> anyhow::Result<()> {
    let out = tokio::process::Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-qc", sql])
        .output()
        .await
        .context("psql (Debian: postgresql-client)")?;
    anyhow::ensure!(out.status.success(), "psql: {}", String::from_utf8_lossy(&out.stderr));
    Ok(())
}
