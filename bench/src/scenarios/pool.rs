//! S7: three upstream endpoints behind each proxy, at the plan's fixed rates and at saturation:
//! S7p (Pingora pass-through, round robin), S7n (nginx `upstream` block), S7g (the gateway, a resource
//! whose endpoints are the three, weights 1/1/1, round robin), and S3 (the gateway, one fixed upstream)
//! alternating with S7g in each mode (`--pool-repeats` pairs), so the gateway's CPU per request with a
//! pool and with one fixed upstream are measured back to back, and a neighbour's burst on a shared
//! machine shows as a spread between pairs rather than as the ratio. Each endpoint counts what it
//! served, so every pool run also shows how the requests were split.

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

/// Gateway CPU seconds per 1,000 requests with the pool (S7g) and with one fixed upstream (S3), each
/// the mean over the alternating repeats of one mode.
#[derive(Debug, PartialEq, Serialize)]
pub(crate) struct CpuRatio {
    pub(crate) mode: Mode,
    pub(crate) fixed_s_per_1k: f64,
    pub(crate) pool_s_per_1k: f64,
    /// `pool / fixed`; the goal is ≤ 1.05.
    pub(crate) ratio: f64,
    /// Each S3 → S7g pair's own ratio (their spread is the measurement's noise).
    pub(crate) pairs: Vec<f64>,
}

/// Runs S7 (the selected parts of it); `None` when nothing of it is selected. Per mode: S7p, S7n,
/// then S3 and S7g alternating `plan.pool_repeats` times (S3 goes with S7g: it is its reference).
pub(crate) async fn run(sys: &Systems, plan: &Plan) -> anyhow::Result<Option<Pool>> {
    let gateway = plan.selects(Target::PoolGateway.id());
    let proxies: Vec<Target> = [Target::PoolPingora, Target::PoolNginx].into_iter().filter(|t| plan.selects(t.id())).collect();
    if proxies.is_empty() && !gateway {
        return Ok(None);
    }
    eprintln!("bench: S7 pool of three endpoints");
    let minters = Minters::new(sys).await?;
    let mut records = Vec::new();
    let mut cpu_ratios = Vec::new();
    for mode in plan.modes() {
        let pairs = if gateway { plan.pool_repeats } else { 0 };
        let order = proxies.iter().copied().chain((0..pairs).flat_map(|_| [Target::Gateway, Target::PoolGateway]));
        let (mut fixed, mut pool) = (Vec::new(), Vec::new());
        for target in order {
            let before = endpoint_stats(sys).await?;
            let Some((rate, _, _)) = rate::measure(sys, plan, target, mode, &minters, None).await? else { continue };
            let counted = target != Target::Gateway;
            let endpoint_requests = if counted { Some(delta(&before, &endpoint_stats(sys).await?)) } else { None };
            let weights_followed = endpoint_requests.as_deref().and_then(|c| weights_followed(c, &WEIGHTS));
            if let Some(c) = &endpoint_requests {
                eprintln!("bench: {:<3} requests per endpoint {c:?}", target.id());
            }
            let gateway_cpu = rate.cpu_s_per_1k.get("gateway").copied();
            match target {
                Target::Gateway => fixed.extend(gateway_cpu),
                Target::PoolGateway => pool.extend(gateway_cpu),
                _ => {}
            }
            records.push(PoolRecord { rate, endpoint_requests, weights_followed });
        }
        cpu_ratios.extend(CpuRatio::of(mode, &fixed, &pool));
    }
    Ok(Some(Pool { endpoints: sys.pool.iter().map(|p| p.addr.to_string()).collect(), weights: WEIGHTS.to_vec(), records, cpu_ratios }))
}

impl CpuRatio {
    /// The ratio of the means of alternating S3 (`fixed`) and S7g (`pool`) runs, and each pair's own.
    fn of(mode: Mode, fixed: &[f64], pool: &[f64]) -> Option<Self> {
        let mean = |v: &[f64]| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
        let (f, p) = (mean(fixed)?, mean(pool)?);
        (f > 0.0).then(|| Self {
            mode,
            fixed_s_per_1k: f,
            pool_s_per_1k: p,
            ratio: p / f,
            pairs: fixed.iter().zip(pool).filter(|(f, _)| **f > 0.0).map(|(f, p)| p / f).collect(),
        })
    }
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
    fn the_cpu_ratio_is_of_the_means_and_keeps_each_pair() {
        let r = CpuRatio::of(Mode::Saturation, &[0.30, 0.34], &[0.33, 0.34]).unwrap();
        assert!((r.ratio - 0.335 / 0.32).abs() < 1e-12);
        assert_eq!(r.pairs.len(), 2);
        assert!((r.pairs[0] - 1.1).abs() < 1e-12 && (r.pairs[1] - 1.0).abs() < 1e-12);
        assert_eq!(CpuRatio::of(Mode::Saturation, &[], &[0.3]), None, "no S3 run: no ratio");
        assert_eq!(CpuRatio::of(Mode::Saturation, &[0.0], &[0.3]), None, "no CPU seen: no ratio");
    }

    #[test]
    fn served_between_two_readings() {
        let s = |served| Stats { served, ..Default::default() };
        assert_eq!(delta(&[s(10), s(3)], &[s(15), s(3)]), vec![5, 0]);
        assert_eq!(delta(&[s(10)], &[s(2)]), vec![0], "a restarted endpoint starts again from 0");
    }
}
