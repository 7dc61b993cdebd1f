//! C2: per-request cost as the traffic spreads over more zones, 1 → 10,000. Each zone is what the
//! demo zone is (an application, the bench resource in front of the bench upstream, the allow
//! policy), created through the admin API. At each point S3's mandates cycle through every zone
//! (mandate `i` from zone `i mod n`), so every per-zone cache of both processes is in play: the
//! gateway's JWKS cache, the STS's keys, catalog and compiled policies. Before the window one request
//! per zone warms them (the gateway runs with a cold-fetch budget that allows that in one pass).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Context as _;
use tokio::time::Instant;

use super::Curve;
use crate::client::Conn;
use crate::run::Plan;
use crate::scenarios::Systems;
use crate::scenarios::rate::MINT_CONCURRENCY;
use crate::stack::mint::{Minter, mint_cycle};
use crate::stack::{Demo, Tenant, seed_zone};

/// Connections that create zones at once.
const SEED_CONCURRENCY: usize = 8;

fn sizes(plan: &Plan) -> Vec<u64> {
    if plan.smoke { vec![1, 10] } else { vec![1, 100, 1_000, 10_000] }
}

pub(crate) async fn run(sys: &Systems, plan: &Plan) -> anyhow::Result<Curve> {
    let cp = sys.caracal.cp;
    let mut zones = vec![sys.demo.clone()];
    let mut points = Vec::new();
    for n in sizes(plan) {
        let started = Instant::now();
        let added = (n as usize).saturating_sub(zones.len());
        zones.extend(seed(sys, zones.len(), added).await?);
        let seeded_s = started.elapsed().as_secs_f64();
        let sessions: Vec<Arc<Minter>> = zones.iter().map(|z| Arc::new(Minter::session(cp, z))).collect();
        let sessions = mint_cycle(&sessions, zones.len(), MINT_CONCURRENCY).await?;
        let minters: Vec<Arc<Minter>> = zones.iter().zip(&sessions).map(|(z, s)| Arc::new(Minter::gateway(cp, z, s))).collect();
        let warm = mint_cycle(&minters, zones.len(), MINT_CONCURRENCY).await?;
        let tokens = mint_cycle(&minters, super::mandates_needed(plan), MINT_CONCURRENCY).await?;
        super::warm(sys, warm, 16).await?;
        let note = if added > 0 { format!("{added} zones created in {seeded_s:.1} s") } else { String::new() };
        let point = super::measure(sys, plan, n, note, &tokens).await?;
        eprintln!(
            "bench: C2 {n} zones: S3 p50 {:.2} / p99 {:.2} ms, control plane RSS {:.1} MiB",
            point.s3.run.latency.p50_ms,
            point.s3.run.latency.p99_ms,
            point.control_plane_rss_mib.unwrap_or(f64::NAN)
        );
        points.push(point);
    }
    Ok(Curve {
        id: "C2",
        title: "zones the traffic spreads over",
        unit: "zones",
        method: "Zones like the demo zone (application, the bench resource, the allow policy), created through the admin API; \
                 S3's mandates cycle through all of them, and one request per zone warmed both processes' per-zone caches first.",
        points,
    })
}

/// Creates `count` zones after the `have` that exist, over [`SEED_CONCURRENCY`] connections: each
/// as the demo zone, with its own application.
async fn seed(sys: &Systems, have: usize, count: usize) -> anyhow::Result<Vec<Demo>> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..SEED_CONCURRENCY {
        let (next, cp, admin, upstream) = (next.clone(), sys.caracal.cp, sys.demo.admin.clone(), sys.upstream.addr);
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::new(cp);
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return anyhow::Ok(out);
                }
                out.push((i, seed_zone(&mut conn, &admin, &format!("bench-c2-{}", have + i), upstream).await?));
            }
        }));
    }
    let mut all = Vec::with_capacity(count);
    for t in tasks {
        all.extend(t.await.context("seeding task")??);
    }
    all.sort_unstable_by_key(|(i, _)| *i);
    let d = &sys.demo;
    Ok(all
        .into_iter()
        .map(|(_, Tenant { zone_id, app_id, secret, policy_set })| Demo { zone_id, app_id, secret, policy_set, ..d.clone() })
        .collect())
}
