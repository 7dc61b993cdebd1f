//! S7: three upstream endpoints behind each proxy, at the plan's fixed rates and at saturation:
//! S7p (Pingora pass-through, round robin), S7n (nginx `upstream` block), S7g (the gateway, a resource
//! whose endpoints are the three, weights 1/1/1, round robin), and S3 (the gateway, one fixed upstream)
//! right before S7g in each mode, so the gateway's CPU per request with a pool and with one fixed
//! upstream are measured back to back. Each endpoint counts what it served, so every pool run also
//! shows how the requests were split.

use serde::Serialize;

use crate::client::Conn;
use crate::load::Mode;
use crate::run::Plan;
use crate::scenarios::Systems;
use crate::scenarios::rate::{self, Minters, RateRecord, Target};
use crate::upstream::{STATS_PATH, Stats};

/// The pool's weights (the gateway's resource; nginx and Pingora use equal weights too).
pub(crate) const WEIGHTS: [u32; 3] = [1, 1, 1];
/// How far (relative) an endpoint's share may stray from its weight's share.
const SPLIT_TOLERANCE: f64 = 0.10;
/// Below this many requests a split says nothing.
const SPLIT_MIN_REQUESTS: u64 = 30;

/// What S7 measured.
#[derive(Debug, Serialize)]
pub(crate) struct Pool {
    pub(crate) endpoints: Vec<String>,
    pub(crate) weights: Vec<u32>,
    pub(crate) records: Vec<PoolRecord>,
    /// Gateway CPU per request, pool over fixed, per mode.
    pub(crate) cpu_ratios: Vec<CpuRatio>,
}

/// One S7 run (or its S3 reference).
#[derive(Debug, Serialize)]
pub(crate) struct PoolRecord {
    #[serde(flatten)]
    pub(crate) rate: RateRecord,
    /// Requests each pool endpoint counted during the run (warm-up included); `None` for S3.
    pub(crate) endpoint_requests: Option<Vec<u64>>,
    /// Whether each endpoint's share is within ±10 % of its weight's share (`None`: too few requests).
    pub(crate) weights_followed: Option<bool>,
}

/// Gateway CPU seconds per 1,000 requests with the pool (S7g) and with one fixed upstream (S3).
#[derive(Debug, Serialize)]
pub(crate) struct CpuRatio {
    pub(crate) mode: Mode,
    pub(crate) fixed_s_per_1k: f64,
    pub(crate) pool_s_per_1k: f64,
    /// `pool / fixed`; the goal is ≤ 1.05.
    pub(crate) ratio: f64,
}

/// The S7 targets, in the order each mode runs them.
const TARGETS: [Target; 4] = [Target::PoolPingora, Target::PoolNginx, Target::Gateway, Target::PoolGateway];

/// Runs S7 (the selected parts of it); `None` when nothing of it is selected.
pub(crate) async fn run(sys: &Systems, plan: &Plan) -> anyhow::Result<Option<Pool>> {
    // S3 runs here as S7g's reference, so it goes with S7g.
    let selected = |t: Target| plan.selects(if t == Target::Gateway { Target::PoolGateway.id() } else { t.id() });
    if !TARGETS.iter().any(|t| selected(*t)) {
        return Ok(None);
    }
    eprintln!("bench: S7 pool of three endpoints");
    let minters = Minters::new(sys).await?;
    let mut records = Vec::new();
    let mut cpu_ratios = Vec::new();
    for mode in plan.modes() {
        let mut fixed_cpu = None;
        for target in TARGETS.into_iter().filter(|t| selected(*t)) {
            let before = endpoint_stats(sys).await?;
            let Some((rate, _)) = rate::measure(sys, plan, target, mode, &minters).await? else { continue };
            let counted = target != Target::Gateway;
            let endpoint_requests = if counted { Some(delta(&before, &endpoint_stats(sys).await?)) } else { None };
            let weights_followed = endpoint_requests.as_deref().and_then(|c| weights_followed(c, &WEIGHTS));
            if let Some(c) = &endpoint_requests {
                eprintln!("bench: {:<3} requests per endpoint {c:?}", target.id());
            }
            let gateway_cpu = rate.cpu_s_per_1k.get("gateway").copied();
            match target {
                Target::Gateway => fixed_cpu = gateway_cpu,
                Target::PoolGateway => {
                    if let (Some(fixed), Some(pool)) = (fixed_cpu, gateway_cpu)
                        && fixed > 0.0
                    {
                        cpu_ratios.push(CpuRatio { mode, fixed_s_per_1k: fixed, pool_s_per_1k: pool, ratio: pool / fixed });
                    }
                }
                _ => {}
            }
            records.push(PoolRecord { rate, endpoint_requests, weights_followed });
        }
    }
    Ok(Some(Pool { endpoints: sys.pool.iter().map(|p| p.addr.to_string()).collect(), weights: WEIGHTS.to_vec(), records, cpu_ratios }))
}

/// Each pool endpoint's [`Stats`], in pool order.
pub(crate) async fn endpoint_stats(sys: &Systems) -> anyhow::Result<Vec<Stats>> {
    let mut out = Vec::with_capacity(sys.pool.len());
    for p in &sys.pool {
        out.push(stats_of(p.addr).await?);
    }
    Ok(out)
}

/// One endpoint's [`Stats`].
pub(crate) async fn stats_of(addr: std::net::SocketAddr) -> anyhow::Result<Stats> {
    let mut conn = Conn::new(addr);
    let req = conn.request(http::Method::GET, STATS_PATH).body(http_body_util::Full::default())?;
    let (status, body) = conn.fetch(req).await?;
    anyhow::ensure!(status.is_success(), "{addr}{STATS_PATH} answered {status}");
    Ok(serde_json::from_slice(&body)?)
}

/// Requests served between two readings of the same endpoints.
fn delta(before: &[Stats], after: &[Stats]) -> Vec<u64> {
    before.iter().zip(after).map(|(b, a)| a.served.saturating_sub(b.served)).collect()
}

/// Whether each endpoint's share of `counts` is within [`SPLIT_TOLERANCE`] (relative) of its share of
/// `weights`; `None` with fewer than [`SPLIT_MIN_REQUESTS`] requests.
pub(crate) fn weights_followed(counts: &[u64], weights: &[u32]) -> Option<bool> {
    let total: u64 = counts.iter().sum();
    let weight_total: u32 = weights.iter().sum();
    if total < SPLIT_MIN_REQUESTS || counts.len() != weights.len() || weight_total == 0 {
        return None;
    }
    Some(counts.iter().zip(weights).all(|(&c, &w)| {
        let expected = f64::from(w) / f64::from(weight_total);
        (c as f64 / total as f64 - expected).abs() <= expected * SPLIT_TOLERANCE
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_split_follows_its_weights_within_ten_percent() {
        assert_eq!(weights_followed(&[334, 333, 333], &WEIGHTS), Some(true));
        assert_eq!(weights_followed(&[310, 345, 345], &WEIGHTS), Some(true), "31 % vs 33.3 %: within 10 % of it");
        assert_eq!(weights_followed(&[290, 355, 355], &WEIGHTS), Some(false), "29 % vs 33.3 %: more than 10 % off");
        assert_eq!(weights_followed(&[1000, 0, 0], &WEIGHTS), Some(false), "everything to the first endpoint");
        assert_eq!(weights_followed(&[500, 340, 160], &[3, 2, 1]), Some(true));
        assert_eq!(weights_followed(&[600, 300, 100], &[3, 2, 1]), Some(false));
        assert_eq!(weights_followed(&[5, 5, 5], &WEIGHTS), None, "too few requests to say");
    }

    #[test]
    fn served_between_two_readings() {
        let s = |served| Stats { served, ..Default::default() };
        assert_eq!(delta(&[s(10), s(3)], &[s(15), s(3)]), vec![5, 0]);
        assert_eq!(delta(&[s(10)], &[s(2)]), vec![0], "a restarted endpoint starts again from 0");
    }
}
