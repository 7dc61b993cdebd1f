//! The load generator: fixed-rate (open loop, coordinated-omission corrected) and saturation (closed
//! loop) runs over one kept-alive HTTP/1.1 connection per worker task.
//!
//! Fixed rate: request `i` of a connection is intended at a fixed time ([`schedule`]). A request that
//! could not be sent on time because the previous answer was late is timed from its *intended* time,
//! so a stall shows up in every request it delayed (wrk2's correction). A request sent on time is
//! timed from when it actually left: the tokio timer wakes up to 1 ms late, and that is the
//! generator's error, not the system's.

mod schedule;
pub(crate) mod timeline;
pub(crate) mod workload;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::hist::{Latency, Summary};
pub(crate) use schedule::Schedule;
pub(crate) use workload::{Outcome, Workload};

/// Open or closed loop.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub(crate) enum Mode {
    /// `rate` requests per second in total, whatever the answers take.
    Fixed { rate: f64 },
    /// Every connection sends its next request as soon as the previous one is answered.
    Saturation,
}

/// The shape of one run.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RunSpec {
    pub(crate) mode: Mode,
    pub(crate) connections: usize,
    /// Sent but not recorded (connections open, caches fill).
    pub(crate) warmup: Duration,
    /// The measured window.
    pub(crate) duration: Duration,
    /// Keep every measured request's [`timeline::Sample`] (fixed rate only; the failover drill).
    pub(crate) timeline: bool,
}

/// What a run measured.
pub(crate) struct RunResult {
    pub(crate) latency: Latency,
    /// Answers recorded in the window, any status.
    pub(crate) recorded: u64,
    /// Requests sent in total (warm-up included), for per-request CPU figures.
    pub(crate) sent: u64,
    /// Non-2xx answers in the window, by status.
    pub(crate) statuses: BTreeMap<u16, u64>,
    pub(crate) transport_errors: u64,
    /// Fixed rate: requests never sent because the run hit its deadline (the rate was not sustained).
    pub(crate) unsent: u64,
    /// The measured window as it really was (saturation stops early when a mandate pool runs dry).
    pub(crate) window: Duration,
    pub(crate) exhausted: bool,
    /// Every measured request, when the spec asked for a timeline.
    pub(crate) samples: Vec<timeline::Sample>,
}

/// The summary a report keeps of a run.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct RunSummary {
    pub(crate) mode: Mode,
    pub(crate) connections: usize,
    pub(crate) window_s: f64,
    pub(crate) requests: u64,
    pub(crate) errors: u64,
    pub(crate) error_statuses: BTreeMap<u16, u64>,
    pub(crate) transport_errors: u64,
    pub(crate) unsent: u64,
    pub(crate) achieved_rps: f64,
    pub(crate) pool_exhausted: bool,
    pub(crate) latency: Summary,
    /// `(percentile, ms)` points for the latency plot.
    pub(crate) spectrum: Vec<(f64, f64)>,
    /// The latency over time, 100 ms at a time (fixed-rate runs that kept a timeline).
    pub(crate) over_time: Vec<timeline::Slice>,
}

impl RunResult {
    /// Non-2xx and transport failures in the window.
    pub(crate) fn errors(&self) -> u64 {
        self.statuses.values().sum::<u64>() + self.transport_errors
    }

    /// Answers per second over the window.
    pub(crate) fn achieved_rps(&self) -> f64 {
        if self.window.is_zero() { 0.0 } else { self.recorded as f64 / self.window.as_secs_f64() }
    }

    /// The report's view of the run.
    pub(crate) fn summarize(&self, spec: &RunSpec) -> RunSummary {
        RunSummary {
            mode: spec.mode,
            connections: spec.connections,
            window_s: self.window.as_secs_f64(),
            requests: self.recorded,
            errors: self.errors(),
            error_statuses: self.statuses.clone(),
            transport_errors: self.transport_errors,
            unsent: self.unsent,
            achieved_rps: self.achieved_rps(),
            pool_exhausted: self.exhausted,
            latency: self.latency.summary(),
            spectrum: self.latency.spectrum(),
            over_time: timeline::slices(&self.samples),
        }
    }

    fn empty() -> Self {
        Self {
            latency: Latency::new(),
            recorded: 0,
            sent: 0,
            statuses: BTreeMap::new(),
            transport_errors: 0,
            unsent: 0,
            window: Duration::ZERO,
            exhausted: false,
            samples: Vec::new(),
        }
    }

    fn note(&mut self, outcome: Outcome, latency: Duration) {
        self.recorded += 1;
        self.latency.record(latency);
        match outcome {
            Outcome::Ok | Outcome::Exhausted => {}
            Outcome::Status(s) => *self.statuses.entry(s).or_default() += 1,
            Outcome::Transport => self.transport_errors += 1,
        }
    }

    fn merge(&mut self, other: Self) {
        self.latency.merge(&other.latency);
        self.recorded += other.recorded;
        self.sent += other.sent;
        for (s, n) in other.statuses {
            *self.statuses.entry(s).or_default() += n;
        }
        self.transport_errors += other.transport_errors;
        self.unsent += other.unsent;
        self.exhausted |= other.exhausted;
        self.samples.extend(other.samples);
    }
}

/// Runs `workload` as `spec` says.
pub(crate) async fn run(workload: Arc<Workload>, spec: RunSpec) -> RunResult {
    // Workers start a little later than now, so the first intended times are not already past.
    run_at(workload, spec, Instant::now() + Duration::from_millis(20)).await
}

/// Runs `workload` as `spec` says, the schedule starting at `t0` (the measured window at
/// `t0 + spec.warmup`), so a caller can act at known points of the window (the failover drill).
pub(crate) async fn run_at(workload: Arc<Workload>, spec: RunSpec, t0: Instant) -> RunResult {
    let stop = Arc::new(AtomicBool::new(false));
    let exhausted_at = Arc::new(std::sync::Mutex::new(None::<Instant>));
    let mut tasks = Vec::with_capacity(spec.connections);
    for c in 0..spec.connections {
        let (w, stop, ex) = (workload.clone(), stop.clone(), exhausted_at.clone());
        tasks.push(tokio::spawn(async move {
            match spec.mode {
                Mode::Fixed { rate } => fixed_worker(&w, c, rate, spec, t0).await,
                Mode::Saturation => closed_worker(&w, spec, t0, &stop, &ex).await,
            }
        }));
    }
    let mut total = RunResult::empty();
    let mut last_done = t0 + spec.warmup;
    for t in tasks {
        let (r, done) = t.await.expect("load workers do not panic");
        last_done = last_done.max(done);
        total.merge(r);
    }
    let start = t0 + spec.warmup;
    let end = match (spec.mode, *exhausted_at.lock().expect("not poisoned")) {
        (Mode::Saturation, Some(ex)) => ex.min(start + spec.duration),
        (Mode::Saturation, None) => start + spec.duration,
        // The window ends with the last answer: a system that falls behind stretches it.
        (Mode::Fixed { .. }, _) => last_done.max(start + spec.duration),
    };
    total.window = end.saturating_duration_since(start);
    total
}

/// How far past its window a fixed-rate run may go before the rest is declared unsent.
fn deadline(spec: &RunSpec) -> Duration {
    spec.warmup + spec.duration * 2 + Duration::from_secs(5)
}

async fn fixed_worker(w: &Workload, conn: usize, rate: f64, spec: RunSpec, t0: Instant) -> (RunResult, Instant) {
    let schedule = Schedule::new(conn, spec.connections, rate, spec.warmup + spec.duration);
    let mut out = RunResult::empty();
    let mut worker = w.worker();
    let mut last_done = t0;
    let hard_stop = t0 + deadline(&spec);
    for i in 0..schedule.count() {
        let offset = schedule.at(i);
        let intended = t0 + offset;
        let now = Instant::now();
        if now >= hard_stop {
            out.unsent += schedule.count() - i;
            break;
        }
        // On time: wait and time from the real send. Late: the system made us late; time from intended.
        let start = if now < intended {
            tokio::time::sleep_until(intended).await;
            Instant::now()
        } else {
            intended
        };
        let outcome = w.call(&mut worker).await;
        let done = Instant::now();
        out.sent += 1;
        if outcome == Outcome::Exhausted {
            out.exhausted = true;
            out.unsent += schedule.count() - i;
            break;
        }
        last_done = done;
        if offset >= spec.warmup {
            out.note(outcome, done - start);
            if spec.timeline {
                let window = t0 + spec.warmup;
                out.samples.push(timeline::Sample {
                    intended: offset - spec.warmup,
                    answered: done.saturating_duration_since(window),
                    latency: done - start,
                    failed: outcome != Outcome::Ok,
                });
            }
        }
    }
    (out, last_done)
}

async fn closed_worker(
    w: &Workload,
    spec: RunSpec,
    t0: Instant,
    stop: &AtomicBool,
    exhausted_at: &std::sync::Mutex<Option<Instant>>,
) -> (RunResult, Instant) {
    tokio::time::sleep_until(t0).await;
    let (start, end) = (t0 + spec.warmup, t0 + spec.warmup + spec.duration);
    let mut out = RunResult::empty();
    let mut worker = w.worker();
    loop {
        let sent_at = Instant::now();
        if sent_at >= end || stop.load(Ordering::Relaxed) {
            break;
        }
        let outcome = w.call(&mut worker).await;
        let done = Instant::now();
        if outcome == Outcome::Exhausted {
            out.exhausted = true;
            stop.store(true, Ordering::Relaxed);
            let mut ex = exhausted_at.lock().expect("not poisoned");
            *ex = Some(ex.map_or(done, |e| e.min(done)));
            break;
        }
        out.sent += 1;
        if sent_at >= start && done <= end {
            out.note(outcome, done - sent_at);
        }
    }
    (out, end)
}

/// `caracal-bench load URL`: one run against any plain-HTTP URL, printed as JSON.
pub(crate) async fn adhoc(url: &str, rate: Option<f64>, duration: Duration, connections: usize) -> anyhow::Result<()> {
    let uri: http::Uri = url.parse()?;
    let authority = uri.authority().ok_or_else(|| anyhow::anyhow!("{url}: no host"))?;
    let addr: SocketAddr =
        tokio::net::lookup_host(authority.as_str()).await?.next().ok_or_else(|| anyhow::anyhow!("{url}: host does not resolve"))?;
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mode = rate.map_or(Mode::Saturation, |rate| Mode::Fixed { rate });
    let spec = RunSpec { mode, connections, warmup: Duration::from_millis(500), duration, timeline: false };
    let result = run(Arc::new(Workload::plain(addr, path)), spec).await;
    println!("{}", serde_json::to_string_pretty(&result.summarize(&spec))?);
    Ok(())
}
