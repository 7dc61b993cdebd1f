//! L1, the audit ledger's cost (issue 15 item 4): S4 (mint + gateway) at saturation through a
//! control plane and gateway of their own, once per way of deploying the ledger, in one run:
//!
//! * in the serving control plane, as the bench's own (`AUDIT_BATCH` 500, 25 ms linger);
//! * the same with larger batches (`AUDIT_BATCH` 2,000, 100 ms linger);
//! * split: the serving control plane without a ledger, a control plane of its own filing;
//! * unfiled: nothing files (the bound; not a deployment, events only pile up).
//!
//! A ledger walks the whole chain once when it starts (its first tamper sweep); each variant's
//! window opens after that sweep finished, so it measures filing, not the start-up walk.
//!
//! Each variant runs on a Redis database of its own (`REDIS_URL …/N`), so only its ledger files its
//! events, on the bench's Postgres. CPU per request counts every process of the variant and Postgres
//! and Redis. After the window the variant's ledger must file the backlog: the report gives the
//! backlog left at the end of the window and how long filing it took, so a ledger that only kept
//! up by falling behind shows.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use serde::Serialize;

use crate::client::Conn;
use crate::load::workload::{Auth, Workload};
use crate::load::{self, Mode, RunSpec, RunSummary};

use crate::run::Plan;
use crate::scenarios::rate::PATH;
use crate::scenarios::{CpuSnapshot, Systems};
use crate::stack::mint::Minter;
use crate::stack::{audit_backlog, audit_drained, metric};

/// How long a variant's ledger may take to file its backlog after the window.
const DRAIN_LIMIT: Duration = Duration::from_secs(300);

/// The longest a ledger's first sweep may take.
const FIRST_SWEEP_LIMIT: Duration = Duration::from_secs(300);

/// Waits until the ledger of the control plane at `addr` finished its first (full) tamper sweep.
async fn first_sweep_done(addr: std::net::SocketAddr) -> anyhow::Result<Duration> {
    let started = tokio::time::Instant::now();
    while metric(addr, "caracal_audit_last_full_sweep_unix").await?.unwrap_or(0.0) <= 0.0 {
        anyhow::ensure!(
            started.elapsed() < FIRST_SWEEP_LIMIT,
            "the ledger at {addr} did not finish its first sweep within {FIRST_SWEEP_LIMIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(started.elapsed())
}

/// A way of deploying the ledger.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub(crate) enum Variant {
    InProcess,
    Batched,
    Split,
    Unfiled,
}

impl Variant {
    const ALL: [Self; 4] = [Self::InProcess, Self::Batched, Self::Split, Self::Unfiled];

    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::InProcess => "in the serving control plane (AUDIT_BATCH 500, linger 25 ms)",
            Self::Batched => "in the serving control plane, AUDIT_BATCH 2,000, linger 100 ms",
            Self::Split => "split: a control plane of its own files",
            Self::Unfiled => "none (nothing filed: the bound)",
        }
    }

    /// The serving control plane's settings.
    fn serving_env(self) -> Vec<(String, String)> {
        let v: &[(&str, &str)] = match self {
            Self::InProcess => &[("AUDIT_LEDGER_ENABLED", "true")],
            Self::Batched => &[("AUDIT_LEDGER_ENABLED", "true"), ("AUDIT_BATCH", "2000"), ("AUDIT_INGEST_LINGER", "100ms")],
            Self::Split | Self::Unfiled => &[("AUDIT_LEDGER_ENABLED", "false")],
        };
        v.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }
}

/// One variant's run.
#[derive(Debug, Serialize)]
pub(crate) struct LedgerRun {
    pub(crate) variant: Variant,
    pub(crate) label: &'static str,
    pub(crate) run: RunSummary,
    /// CPU seconds per 1,000 requests: the variant's processes (`gateway`, `control-plane`,
    /// `ledger`), `postgres` and `redis`.
    pub(crate) cpu_s_per_1k: std::collections::BTreeMap<String, f64>,
    /// Events not yet filed when the window closed (`None`: nothing files them).
    pub(crate) backlog_at_end: Option<u64>,
    /// How long filing that backlog took, s.
    pub(crate) drained_s: Option<f64>,
    /// From the ledger's control plane being ready to its first (full) tamper sweep finished, s.
    pub(crate) first_sweep_s: Option<f64>,
}

pub(crate) async fn run(sys: &Systems, plan: &Plan, dir: &Path) -> anyhow::Result<Vec<LedgerRun>> {
    let mut out = Vec::new();
    for (i, variant) in Variant::ALL.into_iter().enumerate() {
        let redis_url = format!("{}/{}", sys.caracal.redis_url().trim_end_matches('/'), i + 1);
        let mut env = variant.serving_env();
        env.push(("REDIS_URL".into(), redis_url.clone()));
        let pair = sys.caracal.start_pair(&format!("ledger-{}", i + 1), &env, dir).await?;
        let (ledger, filer) = match variant {
            Variant::Split => {
                let own = [("AUDIT_LEDGER_ENABLED".to_owned(), "true".to_owned()), ("REDIS_URL".to_owned(), redis_url.clone())];
                let (child, addr) = sys.caracal.start_control_plane(&format!("ledger-{}-filer", i + 1), &own, dir).await?;
                (Some(child), Some(addr))
            }
            Variant::InProcess | Variant::Batched => (None, Some(pair.cp)),
            Variant::Unfiled => (None, None),
        };
        let first_sweep_s = match filer {
            Some(addr) => Some(first_sweep_done(addr).await?.as_secs_f64()),
            None => None,
        };
        let d = &sys.demo;
        let session = Minter::session(pair.cp, d).mint(&mut Conn::new(pair.cp)).await?;
        let minter = Arc::new(Minter::gateway(pair.cp, d, &session));
        let resource = Some(HeaderValue::from_str(&d.resource)?);
        let workload = Arc::new(Workload { target: pair.gw, path: PATH.to_owned(), resource, auth: Auth::Mint(minter) });
        let spec = RunSpec {
            mode: Mode::Saturation,
            connections: plan.saturation_connections,
            warmup: plan.warmup,
            duration: plan.duration,
            timeline: false,
        };
        let mut processes: Vec<(String, u32)> =
            vec![("gateway".into(), pair.processes[1].pid()), ("control-plane".into(), pair.processes[0].pid())];
        processes.extend(ledger.as_ref().map(|c| ("ledger".to_owned(), c.pid())));
        processes.extend(sys.infra.iter().map(|(n, p)| ((*n).to_owned(), *p)));
        let before = CpuSnapshot::of(&processes);
        let result = load::run(workload, spec).await;
        let cpu_s_per_1k = before.per_1k(&CpuSnapshot::of(&processes), result.sent);
        let (backlog_at_end, drained_s) = match variant {
            Variant::Unfiled => (None, None),
            _ => (audit_backlog(&redis_url).await?, Some(audit_drained(&redis_url, DRAIN_LIMIT).await?.as_secs_f64())),
        };
        let run = result.summarize(&spec);
        eprintln!(
            "bench: L1 ledger {}: {:.0} req/s, backlog at the end {backlog_at_end:?}, filed {drained_s:?} s later",
            variant.label(),
            run.achieved_rps
        );
        out.push(LedgerRun { variant, label: variant.label(), run, cpu_s_per_1k, backlog_at_end, drained_s, first_sweep_s });
        drop(ledger);
        drop(pair);
        // The variant's database goes with it (for the unfiled variant: its events, by design).
        let _ = tokio::process::Command::new("redis-cli").args(["-u", &redis_url, "FLUSHDB"]).output().await;
    }
    Ok(out)
}
