//! The failover drill: a fixed-rate run through a pool of the three endpoints; at `kill_at` one
//! endpoint process is killed (SIGKILL), at `restart_at` it is started again on the same port.
//! Run against the gateway (the drill resource: weights 1/1/1, round robin, health probes and
//! retries when the control plane takes them) and against nginx's `upstream` block (S7n).
//!
//! Figures (times from the start of the measured window; see bench/README.md):
//! - client-visible errors: non-2xx answers and transport failures, before the kill, while the
//!   endpoint was down (answered in `[kill, back)`, `back` being when the restarted process was
//!   listening again) and after it was back;
//! - p99 over the whole drill and per second (by intended send time);
//! - time to eject: from the kill to the last client-visible error answered while the endpoint was
//!   down. No such error: nothing reached the client (retries hid the dead endpoint). Errors until
//!   less than [`STILL_FAILING`] before it was back: not ejected;
//! - time to recover: from the returned endpoint listening again to the first request it served, both
//!   read from that endpoint's own clock (its `/__bench/stats`); the restart itself (spawn → listening)
//!   is shown apart, being the process's start-up, not the proxy's doing.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use serde::Serialize;
use tokio::time::Instant;

use crate::client::Conn;
use crate::load::timeline::{self, Second};
use crate::load::workload::{Auth, Workload};
use crate::load::{self, RunSummary};
use crate::peers;
use crate::run::Plan;
use crate::scenarios::pool::stats_of;
use crate::scenarios::rate::{PATH, Target, premint_pool};
use crate::scenarios::{Peer, Systems};
use crate::stack::mint::Minter;
use crate::upstream::unix_us;

/// The endpoint the drill kills: the second of the three.
const VICTIM: usize = 1;
/// Errors this close to the endpoint's return mean it was still being picked while dead.
pub(crate) const STILL_FAILING: Duration = Duration::from_secs(1);

/// The shape of a drill.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct DrillPlan {
    pub(crate) rate: f64,
    #[serde(serialize_with = "crate::run::as_secs")]
    pub(crate) duration: Duration,
    #[serde(serialize_with = "crate::run::as_secs")]
    pub(crate) kill_at: Duration,
    #[serde(serialize_with = "crate::run::as_secs")]
    pub(crate) restart_at: Duration,
}

/// What one drill measured.
#[derive(Debug, Serialize)]
pub(crate) struct Drill {
    pub(crate) scenario: &'static str,
    pub(crate) label: &'static str,
    /// The pool's failure settings (the gateway's resource; nginx's defaults).
    pub(crate) settings: String,
    pub(crate) killed_endpoint: String,
    /// When the kill and the restart really happened, and when the endpoint was listening again,
    /// seconds from the start of the measured window.
    pub(crate) killed_at_s: f64,
    pub(crate) restarted_at_s: f64,
    pub(crate) back_at_s: f64,
    #[serde(flatten)]
    pub(crate) run: RunSummary,
    pub(crate) errors_before_kill: u64,
    pub(crate) errors_while_down: u64,
    pub(crate) errors_after_back: u64,
    pub(crate) eject: Eject,
    /// Restart (spawn) → the endpoint listening again, ms.
    pub(crate) restart_to_listening_ms: Option<f64>,
    /// Listening again → the first request it served, ms; `None`: none within the drill.
    pub(crate) recover_ms: Option<f64>,
    /// Requests the returned endpoint served before the drill ended.
    pub(crate) returned_endpoint_served: u64,
    pub(crate) seconds: Vec<Second>,
}

/// The time to eject, as the client sees it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub(crate) enum Eject {
    /// No client-visible error while the endpoint was down.
    NoErrors,
    /// The last client-visible error came `ms` after the kill.
    After { ms: f64 },
    /// Errors went on until the endpoint was back: it was never taken out.
    NotEjected,
}

impl std::fmt::Display for Eject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NoErrors => f.write_str("no client-visible error"),
            Self::After { ms } => write!(f, "{ms:.0} ms"),
            Self::NotEjected => f.write_str("not ejected (errors until it was back)"),
        }
    }
}

/// Who the drill goes through.
#[derive(Clone, Copy)]
enum Through {
    Gateway,
    Nginx,
}

/// Runs the drill against the gateway, then nginx (when it runs).
pub(crate) async fn run(sys: &mut Systems, plan: &Plan, dir: &Path) -> anyhow::Result<Vec<Drill>> {
    let mut out = Vec::new();
    let mut restarts = 0;
    for through in [Through::Gateway, Through::Nginx] {
        if matches!(through, Through::Nginx) && sys.nginx_pool.is_none() {
            continue;
        }
        restarts += 1;
        let d = drill(sys, plan, through, dir, restarts).await?;
        eprintln!(
            "bench: drill {} {}: {} errors ({} while down, {} once back), p99 {:.2} ms, eject: {}, recover: {}",
            d.scenario,
            d.label,
            d.run.errors,
            d.errors_while_down,
            d.errors_after_back,
            d.run.latency.p99_ms,
            d.eject,
            d.recover_ms.map_or("none within the drill".into(), |v| format!("{v:.0} ms")),
        );
        out.push(d);
    }
    Ok(out)
}

async fn drill(sys: &mut Systems, plan: &Plan, through: Through, dir: &Path, restarts: usize) -> anyhow::Result<Drill> {
    let p = &plan.drill;
    let spec = plan.drill_spec();
    let (target, settings, workload) = match through {
        Through::Gateway => {
            let d = &sys.demo;
            let session = Minter::session(sys.caracal.cp, d).mint(&mut Conn::new(sys.caracal.cp)).await?;
            let minter = Arc::new(Minter::gateway_for(sys.caracal.cp, d, &session, &d.drill_resource));
            let n = (p.rate * (plan.warmup + p.duration).as_secs_f64()).ceil() as usize + plan.connections;
            let (pool, _) = premint_pool(&minter, n).await?;
            let resource = Some(HeaderValue::from_str(&d.drill_resource)?);
            let w = Workload { target: sys.caracal.gw, path: PATH.to_owned(), resource, auth: Auth::Consume(pool) };
            (Target::PoolGateway, d.drill_settings.note.clone(), w)
        }
        Through::Nginx => {
            let addr = sys.nginx_pool.as_ref().map(|n| n.addr).expect("checked by the caller");
            let settings = "nginx defaults: max_fails=1 fail_timeout=10s, proxy_next_upstream error timeout".to_owned();
            (Target::PoolNginx, settings, Workload::plain(addr, PATH))
        }
    };
    eprintln!(
        "bench: drill {} at {} req/s for {:?}: kill at {:?}, restart at {:?}",
        target.id(),
        p.rate,
        p.duration,
        p.kill_at,
        p.restart_at
    );
    let t0 = Instant::now() + Duration::from_millis(20);
    let window = t0 + plan.warmup;
    let victim = &mut sys.pool[VICTIM];
    let name = format!("pool-{}-r{restarts}", VICTIM + 1);
    let (result, events) = tokio::join!(load::run_at(Arc::new(workload), spec, t0), crash_and_restart(victim, &name, window, p, dir));
    let events = events?;
    let returned = stats_of(victim.addr).await?;
    let errors = timeline::error_times(&result.samples);
    let count = |from: Duration, to: Duration| errors.iter().filter(|e| **e >= from && **e < to).count() as u64;
    let start_up = returned.listening_unix_us.checked_sub(events.spawned_unix_us).map(Duration::from_micros);
    let back = events.restarted + start_up.unwrap_or_default();
    let recover_ms = returned.first_served_unix_us.and_then(|f| f.checked_sub(returned.listening_unix_us)).map(|us| us as f64 / 1e3);
    Ok(Drill {
        scenario: target.id(),
        label: target.label(),
        settings,
        killed_endpoint: victim.addr.to_string(),
        killed_at_s: events.killed.as_secs_f64(),
        restarted_at_s: events.restarted.as_secs_f64(),
        back_at_s: back.as_secs_f64(),
        errors_before_kill: count(Duration::ZERO, events.killed),
        errors_while_down: count(events.killed, back),
        errors_after_back: count(back, Duration::MAX),
        eject: eject(&errors, events.killed, back),
        restart_to_listening_ms: start_up.map(|d| d.as_secs_f64() * 1e3),
        recover_ms,
        returned_endpoint_served: returned.served,
        seconds: timeline::per_second(&result.samples),
        run: result.summarize(&spec),
    })
}

/// When the drill's two events happened.
struct Events {
    /// From the start of the measured window.
    killed: Duration,
    restarted: Duration,
    spawned_unix_us: u64,
}

/// Kills `victim` at `window + kill_at`, starts it again as `name` at `window + restart_at`.
async fn crash_and_restart(victim: &mut Peer, name: &str, window: Instant, p: &DrillPlan, dir: &Path) -> anyhow::Result<Events> {
    tokio::time::sleep_until(window + p.kill_at).await;
    let killed = Instant::now().saturating_duration_since(window);
    victim.child.kill();
    tokio::time::sleep_until(window + p.restart_at).await;
    let restarted = Instant::now().saturating_duration_since(window);
    let spawned_unix_us = unix_us();
    victim.child = peers::start_upstream(name, victim.addr, dir).await?;
    Ok(Events { killed, restarted, spawned_unix_us })
}

/// The time to eject from the answer times of the failed requests (see the module docs); `back`:
/// when the endpoint was listening again.
pub(crate) fn eject(errors: &[Duration], killed: Duration, back: Duration) -> Eject {
    match errors.iter().filter(|e| **e >= killed && **e < back).max() {
        None => Eject::NoErrors,
        Some(last) if back.saturating_sub(*last) < STILL_FAILING => Eject::NotEjected,
        Some(last) => Eject::After { ms: (*last - killed).as_secs_f64() * 1e3 },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_to_eject_as_the_client_sees_it() {
        let s = Duration::from_secs_f64;
        let (kill, restart) = (s(5.0), s(12.0));
        assert_eq!(eject(&[], kill, restart), Eject::NoErrors);
        assert_eq!(eject(&[s(4.0), s(12.5)], kill, restart), Eject::NoErrors, "errors outside the down window do not count");
        assert_eq!(eject(&[s(5.01), s(5.2), s(6.5)], kill, restart), Eject::After { ms: 1500.0 });
        assert_eq!(eject(&[s(5.01), s(11.5)], kill, restart), Eject::NotEjected, "still failing half a second before the restart");
        assert_eq!(Eject::After { ms: 1500.4 }.to_string(), "1500 ms");
    }
}
