//! The figures the report leads with, and the targets checked against them.

use serde::Serialize;

use crate::load::Mode;
use crate::report::{ORIGINAL_GOVERNED_RPS_PER_VCPU, fixed, saturation};
use crate::run::Plan;
use crate::scenarios::Results;
use crate::scenarios::rate::Target;

/// Headline ratios; `None` where a scenario did not run.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Ratios {
    /// The rate the latency differences are taken at (the highest planned, 1,000 req/s by default).
    pub(crate) at_rate: f64,
    pub(crate) s3_minus_s2_p50_ms: Option<f64>,
    pub(crate) s3_minus_s2_p99_ms: Option<f64>,
    pub(crate) s3_minus_s2n_p50_ms: Option<f64>,
    pub(crate) s3_minus_s2n_p99_ms: Option<f64>,
    pub(crate) s3_minus_s2j_p50_ms: Option<f64>,
    pub(crate) s3_minus_s2j_p99_ms: Option<f64>,
    pub(crate) saturation_s3_over_s2: Option<f64>,
    pub(crate) saturation_s3_over_s2n: Option<f64>,
    pub(crate) saturation_s3_over_s2j: Option<f64>,
    /// S1 saturation: the load generator's own ceiling (upstream behind it does almost nothing).
    pub(crate) generator_ceiling_rps: Option<f64>,
    pub(crate) s4_saturation_rps: Option<f64>,
    /// The original's published figure scaled to this machine's cores.
    pub(crate) original_governed_rps: f64,
    pub(crate) s4_over_original: Option<f64>,
    pub(crate) s5_gateway_over_s2_bytes: Option<f64>,
    pub(crate) s5_gateway_over_s2n_bytes: Option<f64>,
    /// The gateway's resident memory with `plan.open_streams` SSE streams open (MiB), when all opened.
    pub(crate) s5_gateway_open_streams_rss_mib: Option<f64>,
    pub(crate) open_streams: usize,
    pub(crate) s6a_p99_ms: Option<f64>,
    pub(crate) s6b_streams_cut: String,
    /// Revoke returned → another STS instance refuses to mint, p99.
    pub(crate) s6c_p99_ms: Option<f64>,
    /// S7: gateway CPU per request with the pool over one fixed upstream (S7g / S3) at `at_rate`.
    pub(crate) s7_pool_cpu_ratio: Option<f64>,
    /// The same at saturation.
    pub(crate) s7_pool_cpu_ratio_saturation: Option<f64>,
    /// The failover drill through the gateway: client-visible errors and p99.
    pub(crate) drill_gateway_errors: Option<u64>,
    pub(crate) drill_gateway_p99_ms: Option<f64>,
    /// S3x2 (two gateways and two control planes at once) over S3 saturation through one.
    pub(crate) s3x2_over_s3: Option<f64>,
    /// S8: kill of the Redis primary → the last refused request, ms (0: none refused).
    pub(crate) s8_recovered_ms: Option<f64>,
}

/// One target of the issue, checked.
#[derive(Debug, Serialize)]
pub(crate) struct TargetCheck {
    pub(crate) goal: &'static str,
    pub(crate) measured: String,
    /// `None`: not measured in this run.
    pub(crate) met: Option<bool>,
}

impl Ratios {
    /// Derives the ratios from the results.
    pub(crate) fn compute(plan: &Plan, r: &Results, cores: usize) -> Self {
        let at_rate = plan.rates.iter().copied().fold(0.0, f64::max);
        let lat = |t: Target| fixed(r, t, at_rate).map(|x| &x.run.latency);
        let diff = |t: Target, p: fn(&crate::hist::Summary) -> f64| Some(p(lat(Target::Gateway)?) - p(lat(t)?));
        let sat = |t: Target| saturation(r, t).map(|x| x.run.achieved_rps).filter(|v| *v > 0.0);
        let over = |a: Option<f64>, b: Option<f64>| Some(a? / b?);
        let bytes = |t: Target| r.streaming.as_ref()?.downloads.iter().find(|d| d.target == t).and_then(|d| d.mib_per_s);
        let original = ORIGINAL_GOVERNED_RPS_PER_VCPU * cores as f64;
        let rev = r.revocation.as_ref();
        let pool_ratio = |mode: Mode| r.pool.as_ref()?.cpu_ratios.iter().find(|c| c.mode == mode).map(|c| c.ratio);
        let drill = r.drills.iter().find(|d| d.scenario == Target::PoolGateway.id());
        Self {
            at_rate,
            s3_minus_s2_p50_ms: diff(Target::Pingora, |s| s.p50_ms),
            s3_minus_s2_p99_ms: diff(Target::Pingora, |s| s.p99_ms),
            s3_minus_s2n_p50_ms: diff(Target::Nginx, |s| s.p50_ms),
            s3_minus_s2n_p99_ms: diff(Target::Nginx, |s| s.p99_ms),
            s3_minus_s2j_p50_ms: diff(Target::Envoy, |s| s.p50_ms),
            s3_minus_s2j_p99_ms: diff(Target::Envoy, |s| s.p99_ms),
            saturation_s3_over_s2: over(sat(Target::Gateway), sat(Target::Pingora)),
            saturation_s3_over_s2n: over(sat(Target::Gateway), sat(Target::Nginx)),
            saturation_s3_over_s2j: over(sat(Target::Gateway), sat(Target::Envoy)),
            generator_ceiling_rps: sat(Target::Direct),
            s4_saturation_rps: sat(Target::Governed),
            original_governed_rps: original,
            s4_over_original: sat(Target::Governed).map(|s| s / original),
            s5_gateway_over_s2_bytes: over(bytes(Target::Gateway), bytes(Target::Pingora)),
            s5_gateway_over_s2n_bytes: over(bytes(Target::Gateway), bytes(Target::Nginx)),
            s5_gateway_open_streams_rss_mib: r
                .streaming
                .as_ref()
                .and_then(|st| st.open.iter().find(|o| o.target == Target::Gateway && o.opened == o.streams))
                .and_then(|o| o.rss_open_mib()),
            open_streams: plan.open_streams,
            s6a_p99_ms: rev.and_then(|v| v.denied_p99_ms),
            s6c_p99_ms: rev.and_then(|v| v.other_sts_p99_ms),
            s6b_streams_cut: match rev {
                None => "not measured".into(),
                Some(rev) if rev.streams_watched == 0 => "not measured".into(),
                Some(rev) if rev.streams_cut == 0 => {
                    format!("not cut within {} s ({} of {} streams stayed open)", rev.cut_wait_s, rev.streams_watched, rev.streams_watched)
                }
                Some(rev) => {
                    format!("{} of {} cut, p99 {:.1} ms", rev.streams_cut, rev.streams_watched, rev.cut_p99_ms.unwrap_or(f64::NAN))
                }
            },
            s7_pool_cpu_ratio: pool_ratio(Mode::Fixed { rate: at_rate }),
            s7_pool_cpu_ratio_saturation: pool_ratio(Mode::Saturation),
            drill_gateway_errors: drill.map(|d| d.run.errors),
            drill_gateway_p99_ms: drill.map(|d| d.run.latency.p99_ms),
            s3x2_over_s3: over(r.scale_out.as_ref().map(|s| s.achieved_rps), sat(Target::Gateway)),
            s8_recovered_ms: r.redis_failover.as_ref().map(|f| f.recovered_ms.unwrap_or(0.0)),
        }
    }

    /// The targets.
    pub(crate) fn targets(&self) -> Vec<TargetCheck> {
        let check = |goal, v: Option<f64>, show: &dyn Fn(f64) -> String, ok: &dyn Fn(f64) -> bool| TargetCheck {
            goal,
            measured: v.map_or_else(|| "not measured".to_owned(), show),
            met: v.map(ok),
        };
        vec![
            check("S3 adds ≤ 1 ms p99 over S2 at 1,000 req/s", self.s3_minus_s2_p99_ms, &|v| format!("{v:+.2} ms"), &|v| v <= 1.0),
            check("S3 saturation ≥ 35% of S2", self.saturation_s3_over_s2, &|v| format!("{:.1}%", v * 100.0), &|v| v >= 0.35),
            check("S4 ≥ 3,000 governed req/s", self.s4_saturation_rps, &|v| format!("{v:.0} req/s"), &|v| v >= 3_000.0),
            check("S5 gateway ≥ 90% of plain-proxy bytes/s", self.s5_gateway_over_s2_bytes, &|v| format!("{:.1}%", v * 100.0), &|v| {
                v >= 0.9
            }),
            check(
                "S5 gateway RSS with 1,000 SSE streams open ≤ 64 MiB",
                self.s5_gateway_open_streams_rss_mib.filter(|_| self.open_streams >= 1_000),
                &|v| format!("{v:.1} MiB"),
                &|v| v <= 64.0,
            ),
            check("S6(a) revoke → denied p99 ≤ 50 ms", self.s6a_p99_ms, &|v| format!("{v:.2} ms"), &|v| v <= 50.0),
            check("S6(c) revoke → every STS instance refuses, p99 < 1 s (seed 002)", self.s6c_p99_ms, &|v| format!("{v:.2} ms"), &|v| {
                v < 1_000.0
            }),
            check(
                "S7 pool costs the gateway ≤ 5% more CPU per request than one fixed upstream (S7g / S3 at 1,000 req/s)",
                self.s7_pool_cpu_ratio,
                &|v| format!("{:.1}%", v * 100.0),
                &|v| v <= 1.05,
            ),
            check(
                "Failover drill: zero client-visible errors through the gateway",
                self.drill_gateway_errors.map(|e| e as f64),
                &|v| format!("{v:.0} errors"),
                &|v| v == 0.0,
            ),
            check(
                "S8 Redis primary killed: requests refused only until the Sentinel failover, ≤ 10 s",
                self.s8_recovered_ms,
                &|v| format!("{:.2} s", v / 1e3),
                &|v| v <= 10_000.0,
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_report_met_missed_and_unmeasured() {
        let r = Ratios {
            s3_minus_s2_p99_ms: Some(0.4),
            saturation_s3_over_s2: Some(0.2),
            s4_saturation_rps: None,
            s5_gateway_over_s2_bytes: Some(0.95),
            s5_gateway_open_streams_rss_mib: Some(93.8),
            open_streams: 1_000,
            s6a_p99_ms: Some(51.0),
            ..Default::default()
        };
        let t = r.targets();
        let met: Vec<Option<bool>> = t.iter().map(|c| c.met).collect();
        assert_eq!(met, vec![Some(true), Some(false), None, Some(true), Some(false), Some(false), None, None, None, None]);
        assert_eq!(t[4].measured, "93.8 MiB");
        let smoke = Ratios { s5_gateway_open_streams_rss_mib: Some(30.0), open_streams: 50, ..Default::default() };
        assert_eq!(smoke.targets()[4].met, None, "50 streams say nothing about the 1,000-stream goal");
        assert_eq!(t[0].measured, "+0.40 ms");
        assert_eq!(t[1].measured, "20.0%");
        assert_eq!(t[2].measured, "not measured");
    }

    #[test]
    fn pool_and_drill_targets() {
        let r = Ratios { s7_pool_cpu_ratio: Some(1.031), drill_gateway_errors: Some(2_310), ..Default::default() };
        let t = r.targets();
        assert_eq!((t[7].measured.as_str(), t[7].met), ("103.1%", Some(true)));
        assert_eq!((t[8].measured.as_str(), t[8].met), ("2310 errors", Some(false)));
        let r = Ratios { s7_pool_cpu_ratio: Some(1.08), drill_gateway_errors: Some(0), ..Default::default() };
        assert_eq!(r.targets()[7].met, Some(false));
        assert_eq!(r.targets()[8].met, Some(true));
    }
}
