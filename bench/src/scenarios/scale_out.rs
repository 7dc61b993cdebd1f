//! S3x2, scale-out (issue 15 item 6): a second control plane and gateway on the same Postgres and
//! Redis, and S3's saturation run through both at once: half the connections to each, each gateway
//! with mandates from its own control plane. Reported against S3 saturation through one pair in the
//! same run. On this box both pairs share the same cores, so the ratio shows what running two costs
//! (shared Redis and Postgres, twice the processes), not what a second machine would add.
//! That each mandate is spent once across both, and that a revocation reaches both, is checked by
//! `tests/e2e/scale_out.rs`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use http::HeaderValue;
use serde::Serialize;

use crate::client::Conn;
use crate::load::workload::{Auth, Workload};
use crate::load::{self, Mode, RunSpec, RunSummary};
use crate::run::Plan;
use crate::scenarios::Systems;
use crate::scenarios::rate::{PATH, premint_pool};
use crate::stack::mint::Minter;

/// What S3x2 measured.
#[derive(Debug, Serialize)]
pub(crate) struct ScaleOut {
    /// Both gateways together, requests per second.
    pub(crate) achieved_rps: f64,
    /// Each gateway's run: the bench's own, then the second one.
    pub(crate) runs: [RunSummary; 2],
    /// CPU seconds per 1,000 requests of all four processes together.
    pub(crate) cpu_s_per_1k: f64,
}

pub(crate) async fn run(sys: &Systems, plan: &Plan, dir: &Path) -> anyhow::Result<ScaleOut> {
    let pair = sys.caracal.start_pair("pair", &[], dir).await?;
    let d = &sys.demo;
    let spec = RunSpec {
        mode: Mode::Saturation,
        connections: (plan.saturation_connections / 2).max(1),
        warmup: plan.warmup,
        duration: plan.duration,
        timeline: false,
    };
    let mut workloads = Vec::new();
    for (cp, gw) in [(sys.caracal.cp, sys.caracal.gw), (pair.cp, pair.gw)] {
        let session = Minter::session(cp, d).mint(&mut Conn::new(cp)).await?;
        let (pool, _) = premint_pool(&Arc::new(Minter::gateway(cp, d, &session)), plan.saturation_pool / 2).await?;
        let resource = Some(HeaderValue::from_str(&d.resource)?);
        workloads.push(Arc::new(Workload { target: gw, path: PATH.to_owned(), resource, auth: Auth::Consume(pool) }));
    }
    sys.caracal.ledger_drained(std::time::Duration::from_secs(180)).await?;
    let processes = || {
        let c = &sys.caracal;
        [&c.gateway, &c.control_plane, &pair.processes[0], &pair.processes[1]].map(|p| p.cpu()).into_iter().sum::<std::time::Duration>()
    };
    let before = processes();
    let [first, second] = [workloads[0].clone(), workloads[1].clone()];
    let (a, b) = tokio::join!(load::run(first, spec), load::run(second, spec));
    let cpu = processes().saturating_sub(before);
    let sent = a.sent + b.sent;
    let runs = [a.summarize(&spec), b.summarize(&spec)];
    let out = ScaleOut {
        achieved_rps: runs.iter().map(|r| r.achieved_rps).sum(),
        cpu_s_per_1k: if sent == 0 { 0.0 } else { cpu.as_secs_f64() * 1_000.0 / sent as f64 },
        runs,
    };
    let errors: BTreeMap<u16, u64> = out.runs.iter().flat_map(|r| r.error_statuses.iter()).fold(BTreeMap::new(), |mut m, (s, n)| {
        *m.entry(*s).or_default() += n;
        m
    });
    eprintln!(
        "bench: S3x2 two gateways and two control planes: {:.0} req/s together ({:.0} + {:.0}), {:.3} CPU s per 1k, errors {errors:?}",
        out.achieved_rps, out.runs[0].achieved_rps, out.runs[1].achieved_rps, out.cpu_s_per_1k
    );
    Ok(out)
}
