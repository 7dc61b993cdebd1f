//! C4: per-request cost as the zone's JWKS grows, 1 → 8 keys (`MAX_PUBLISHED_KEYS`, the most a
//! zone publishes). Each point rotates the demo zone's key until its JWKS holds that many (the
//! bench's control planes sign with a new key at once), then waits until the gateway accepts a
//! mandate signed with the newest key (it refetches a zone's keys for an unknown `kid`, at most once
//! per `JWKS_REFETCH_COOLDOWN`). The rotations stay: the keys retire on their own schedule.

use std::time::Duration;

use anyhow::Context as _;
use http::{HeaderValue, Method};
use http_body_util::Full;
use tokio::time::Instant;

use super::{Curve, Point};
use crate::client::Conn;
use crate::run::Plan;
use crate::scenarios::Systems;
use crate::scenarios::rate::{MINT_CONCURRENCY, Minters};
use crate::scenarios::revocation::through_gateway;

/// How long the gateway may take to accept the newest key: its refetch cooldown (30 s by
/// default) and a margin.
const ACCEPT_WITHIN: Duration = Duration::from_secs(45);

fn sizes(plan: &Plan) -> Vec<u64> {
    if plan.smoke { vec![1, 2] } else { vec![1, 2, 4, 8] }
}

pub(crate) async fn run(sys: &Systems, plan: &Plan) -> anyhow::Result<Curve> {
    let mut points: Vec<Point> = Vec::new();
    let mut published = published_keys(sys).await?;
    for k in sizes(plan) {
        while published < k {
            sys.caracal.rotate_key(&sys.demo).await?;
            published = published_keys(sys).await?;
        }
        anyhow::ensure!(published == k, "the zone publishes {published} keys, the point wants {k}");
        // After the rotation: a session and mandates signed with the newest key.
        let minters = Minters::new(sys).await?;
        let waited = until_accepted(sys, &minters).await?;
        let tokens = minters.fixed.mint_many(super::mandates_needed(plan), MINT_CONCURRENCY).await?;
        let note = if k > 1 { format!("the gateway took the newest key in {:.1} s", waited.as_secs_f64()) } else { String::new() };
        let point = super::measure(sys, plan, k, note, &tokens).await?;
        eprintln!("bench: C4 {k} JWKS keys: S3 p50 {:.2} / p99 {:.2} ms", point.s3.run.latency.p50_ms, point.s3.run.latency.p99_ms);
        points.push(point);
    }
    Ok(Curve {
        id: "C4",
        title: "keys in the zone's JWKS",
        unit: "keys",
        method: "The demo zone's key rotated until its JWKS publishes that many (the newest signs at once); the gateway \
                 refetched the set for the new kid before the point.",
        points,
    })
}

/// Keys the demo zone's JWKS publishes (`GET /.well-known/jwks.json?zone_id=`).
async fn published_keys(sys: &Systems) -> anyhow::Result<u64> {
    let mut conn = Conn::new(sys.caracal.cp);
    let req = conn.request(Method::GET, &format!("/.well-known/jwks.json?zone_id={}", sys.demo.zone_id)).body(Full::default())?;
    let (status, body) = conn.fetch(req).await?;
    anyhow::ensure!(status.is_success(), "JWKS answered {status}");
    let jwks: serde_json::Value = serde_json::from_slice(&body).context("JWKS body")?;
    Ok(jwks["keys"].as_array().context("JWKS without keys")?.len() as u64)
}

/// Sends mandates of `minters` through the gateway, one a second, until one passes; how long that took.
async fn until_accepted(sys: &Systems, minters: &Minters) -> anyhow::Result<Duration> {
    let resource = HeaderValue::from_str(&sys.demo.resource)?;
    let (mut sts, mut gw) = (Conn::new(sys.caracal.cp), Conn::new(sys.caracal.gw));
    let t0 = Instant::now();
    loop {
        let mandate = minters.fixed.mint(&mut sts).await?;
        let status = through_gateway(&mut gw, &mandate, &resource).await?;
        if status.is_success() {
            return Ok(t0.elapsed());
        }
        anyhow::ensure!(t0.elapsed() < ACCEPT_WITHIN, "the gateway still answers {status} for the newest key after {ACCEPT_WITHIN:?}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
