//! The standard scenarios, in the order a run performs them.
//!
//! S1–S4 ([`rate`]): fixed-rate runs at each planned rate, then a saturation run, per target.
//! L1 ([`ledger`]): S4 at saturation with the audit ledger deployed four ways.
//! S5 ([`streaming`]): a 64 MiB download and a 1,000-event SSE stream, gateway vs plain proxies.
//! S6 ([`revocation`]): revoke → first denied request, and whether an open stream is cut.
//! S3x2 ([`scale_out`]): S3's saturation through two gateways and two control planes at once.
//! S7 ([`pool`]): three upstream endpoints behind Pingora, nginx and the gateway.
//! The failover drill ([`drill`]): one of the three killed and restarted under load.
//! C2–C4 ([`curves`]): per-request cost over zones, policy size and JWKS keys.
//! C1 ([`curves::revoked`]): per-request and per-revocation cost as revoked anchors grow to a million.
//! S8 ([`redis_failover`]): the Redis primary killed under load, behind Sentinels.
//!
//! `--only` picks scenarios by id (see [`crate::run::SCENARIOS`]).

pub(crate) mod curves;
pub(crate) mod drill;
pub(crate) mod ledger;
pub(crate) mod pool;
pub(crate) mod rate;
pub(crate) mod redis_failover;
pub(crate) mod revocation;
pub(crate) mod scale_out;
pub(crate) mod streaming;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use http::HeaderValue;
use serde::Serialize;

use crate::procs::{self, Child};
use crate::run::Plan;
use crate::scenarios::rate::Target;
use crate::stack::{Caracal, Demo};

/// A running child and where it listens.
pub(crate) struct Peer {
    pub(crate) child: Child,
    pub(crate) addr: SocketAddr,
}

/// Every system under test, running.
pub(crate) struct Systems {
    pub(crate) upstream: Peer,
    pub(crate) pingora: Peer,
    pub(crate) nginx: Option<Peer>,
    /// Envoy and the tokens its JWKS accepts.
    pub(crate) envoy: Option<(Peer, Vec<String>)>,
    pub(crate) caracal: Caracal,
    pub(crate) demo: Demo,
    /// S7's three upstream endpoints (`pool-1`..`pool-3`).
    pub(crate) pool: Vec<Peer>,
    /// Processes the bench did not start but counts: `postgres` and `redis` (their pids from
    /// `bench/run.sh`), with their descendants.
    pub(crate) infra: Vec<(&'static str, u32)>,
    /// The Pingora pass-through round-robining over the pool (S7p).
    pub(crate) pingora_pool: Peer,
    /// nginx with the pool in its `upstream` block (S7n).
    pub(crate) nginx_pool: Option<Peer>,
}

/// Everything the scenarios measured; `None` (or empty) where a scenario was not selected.
#[derive(Debug, Serialize)]
pub(crate) struct Results {
    pub(crate) rate: Vec<rate::RateRecord>,
    pub(crate) premint: Vec<rate::Premint>,
    pub(crate) scale_out: Option<scale_out::ScaleOut>,
    pub(crate) ledger: Vec<ledger::LedgerRun>,
    pub(crate) streaming: Option<streaming::Streaming>,
    pub(crate) revocation: Option<revocation::Revocation>,
    pub(crate) pool: Option<pool::Pool>,
    pub(crate) drills: Vec<drill::Drill>,
    pub(crate) curves: Vec<curves::revoked::CostPoint>,
    /// C2–C4.
    pub(crate) scaling: Vec<curves::Curve>,
    pub(crate) redis_failover: Option<redis_failover::RedisFailover>,
    /// `--profile`: the recordings and the latency slices of the profiled windows.
    #[serde(skip)]
    pub(crate) profiles: Vec<crate::profile::Profile>,
    #[serde(skip)]
    pub(crate) slices: Vec<crate::profile::Slices>,
}

/// Runs the selected scenarios: S1–S4, S3x2, S5, S6, S7, the failover drill (which kills and restarts a
/// pool endpoint), C2–C4, C1 (which leaves a million anchors in the views), then S8 (which kills the
/// bench's Redis, so it goes last). `dir` holds the
/// children's logs.
pub(crate) async fn run_all(sys: &mut Systems, plan: &Plan, dir: &Path) -> anyhow::Result<Results> {
    let (rate, premint, profiles, slices) = rate::run(sys, plan).await?;
    let scale_out = if plan.selects("S3x2") {
        eprintln!("bench: S3x2 scale-out");
        Some(scale_out::run(sys, plan, dir).await?)
    } else {
        None
    };
    let ledger = if plan.selects("L1") {
        eprintln!("bench: L1 audit ledger variants");
        ledger::run(sys, plan, dir).await?
    } else {
        Vec::new()
    };
    let streaming = if plan.selects("S5") {
        eprintln!("bench: S5 streaming");
        Some(streaming::run(sys, plan).await?)
    } else {
        None
    };
    let revocation = if plan.selects("S6") {
        eprintln!("bench: S6 revocation");
        Some(revocation::run(sys, plan).await?)
    } else {
        None
    };
    let pool = pool::run(sys, plan).await?;
    let drills = if plan.selects("drill") { drill::run(sys, plan, dir).await? } else { Vec::new() };
    let mut scaling = Vec::new();
    if plan.selects("C2") {
        eprintln!("bench: C2 cost curve over zones");
        scaling.push(curves::zones::run(sys, plan).await?);
    }
    if plan.selects("C3") {
        eprintln!("bench: C3 cost curves over policy size");
        scaling.push(curves::policy::run(sys, plan, curves::policy::Shape::Rules).await?);
        scaling.push(curves::policy::run(sys, plan, curves::policy::Shape::Entries).await?);
    }
    if plan.selects("C4") {
        eprintln!("bench: C4 cost curve over JWKS keys");
        scaling.push(curves::keys::run(sys, plan).await?);
    }
    let curves = if plan.selects("C1") {
        eprintln!("bench: C1 cost curve over revoked anchors");
        curves::revoked::run(sys, plan).await?
    } else {
        Vec::new()
    };
    let redis_failover = if plan.selects("S8") { Some(redis_failover::run(sys, plan, dir).await?) } else { None };
    Ok(Results { rate, premint, scale_out, ledger, streaming, revocation, pool, drills, curves, scaling, redis_failover, profiles, slices })
}

/// CPU time of each process (and of the load generator itself) at one instant.
pub(crate) struct CpuSnapshot(Vec<(String, u32, Duration)>);

impl Systems {
    /// Every child, Caracal's first.
    pub(crate) fn children(&self) -> Vec<&Child> {
        let c = &self.caracal;
        let mut v = vec![&c.gateway, &c.control_plane, &c.control_plane_2, &self.upstream.child, &self.pingora.child];
        v.extend(self.nginx.as_ref().map(|p| &p.child));
        v.extend(self.envoy.as_ref().map(|(p, _)| &p.child));
        v.extend(self.pool.iter().map(|p| &p.child));
        v.push(&self.pingora_pool.child);
        v.extend(self.nginx_pool.as_ref().map(|p| &p.child));
        v
    }

    /// Where `target` listens, if it runs.
    pub(crate) fn address(&self, target: Target) -> Option<SocketAddr> {
        match target {
            Target::Direct => Some(self.upstream.addr),
            Target::Pingora => Some(self.pingora.addr),
            Target::Nginx => self.nginx.as_ref().map(|p| p.addr),
            Target::Envoy => self.envoy.as_ref().map(|(p, _)| p.addr),
            Target::Gateway | Target::Governed | Target::PoolGateway => Some(self.caracal.gw),
            Target::PoolPingora => Some(self.pingora_pool.addr),
            Target::PoolNginx => self.nginx_pool.as_ref().map(|p| p.addr),
        }
    }

    /// CPU times now: each child with its descendants, and the load generator (this process) alone.
    pub(crate) fn cpu(&self) -> CpuSnapshot {
        let me = std::process::id();
        let mut v: Vec<(String, u32, Duration)> = self.children().into_iter().map(|c| (c.name.clone(), c.pid(), c.cpu())).collect();
        v.extend(self.infra.iter().map(|(name, pid)| ((*name).to_owned(), *pid, procs::tree_cpu(*pid))));
        v.push(("load-generator".to_owned(), me, procs::cpu_of(me).unwrap_or_default()));
        CpuSnapshot(v)
    }

    /// Envoy's tokens as `Authorization` values.
    pub(crate) fn envoy_bearers(&self) -> Option<Vec<HeaderValue>> {
        self.envoy.as_ref().map(|(_, tokens)| tokens.iter().map(|t| crate::load::workload::bearer(t)).collect())
    }
}

impl CpuSnapshot {
    /// CPU times now of `processes` (name, pid), each with its descendants.
    pub(crate) fn of(processes: &[(String, u32)]) -> Self {
        Self(processes.iter().map(|(name, pid)| (name.clone(), *pid, procs::tree_cpu(*pid))).collect())
    }

    /// CPU seconds per 1,000 requests of each process between `self` and `later`.
    pub(crate) fn per_1k(&self, later: &Self, requests: u64) -> BTreeMap<String, f64> {
        if requests == 0 {
            return BTreeMap::new();
        }
        self.0
            .iter()
            .filter_map(|(name, pid, before)| {
                let after = later.0.iter().find(|(_, p, _)| p == pid)?.2;
                Some((name.clone(), after.saturating_sub(*before).as_secs_f64() * 1_000.0 / requests as f64))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_per_thousand_requests() {
        let before = CpuSnapshot(vec![("gateway".into(), 7, Duration::from_secs(1)), ("upstream".into(), 8, Duration::ZERO)]);
        let after = CpuSnapshot(vec![("gateway".into(), 7, Duration::from_secs(3)), ("upstream".into(), 8, Duration::from_millis(500))]);
        let per = before.per_1k(&after, 10_000);
        assert!((per["gateway"] - 0.2).abs() < 1e-9, "2 s over 10,000 requests is 0.2 s per 1,000");
        assert!((per["upstream"] - 0.05).abs() < 1e-9);
        assert!(before.per_1k(&after, 0).is_empty());
    }
}
