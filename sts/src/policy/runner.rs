//! Policy evaluation within a time bound, slow policies off the async workers, one zone's trouble
//! kept to itself.
//!
//! **Where an evaluation runs.** A zone's evaluations start on tokio's blocking pool, awaited for
//! at most `POLICY_EVAL_TIMEOUT`; past it the caller gets 503 `policy_eval_failed` while the
//! evaluation finishes (or hits regorus's own timer) in the background. Once [`LEARN`] of them in a
//! row took less than [`INLINE_MAX`], the zone's policy has shown it is an ordinary one (tens of
//! microseconds) and its evaluations run inline on the request's worker: handing each to another
//! thread cost more than the evaluation (measured: futex wake-ups were 11 % of the control plane's
//! CPU on the governed path). The first inline evaluation over [`INLINE_DEMOTE`] sends the zone
//! back to the blocking pool for [`DEMOTION`], so a zone's policy can stall a request worker at
//! most once an hour, for at most the time budget (regorus's timer stops it there). Costs are
//! thread CPU time, so preemption on a busy box never counts against a policy.
//!
//! **Per zone**, on the blocking pool:
//!
//! * at most [`MAX_RUNNING`] evaluations run at once; more wait (asynchronously, within the same
//!   bound) rather than fail, so a burst of ordinary evaluations never errs, and a burst of runaway
//!   ones holds at most that many threads;
//! * once an evaluation of the zone has been running for half the budget, the zone's new
//!   evaluations fail fast until it ends;
//! * an evaluation that regorus's timer stopped, or that used half the budget in CPU time,
//!   **quarantines** the zone for
//!   [`QUARANTINE`]: its evaluations fail fast, so a policy that is always slow costs a thread now
//!   and then, not one per request. Other zones are not affected.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU32, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use serde_json::Value;
use tokio::sync::Semaphore;

use super::{ActivePolicy, Decision};
use crate::error::StsError;

/// Evaluations of one zone that may run at once.
pub const MAX_RUNNING: usize = 16;
/// How long a zone stays quarantined after an evaluation used its whole budget.
pub const QUARANTINE: Duration = Duration::from_secs(5);
/// Consecutive fast evaluations on the blocking pool before a zone's run inline.
pub const LEARN: u32 = 32;
/// Most CPU time an evaluation may use and still count as fast.
pub const INLINE_MAX: Duration = Duration::from_millis(1);
/// CPU time past which an inline evaluation sends its zone back to the blocking pool. Far above
/// [`INLINE_MAX`]: one page fault or cache miss too many must not demote an ordinary policy.
pub const INLINE_DEMOTE: Duration = Duration::from_millis(10);
/// How long a zone whose inline evaluation was slow stays on the blocking pool.
pub const DEMOTION: Duration = Duration::from_secs(3600);

/// Per-zone admission state.
struct Gate {
    running: Arc<Semaphore>,
    /// Evaluations running for more than half the budget.
    slow: AtomicU32,
    /// Unix ms until which the zone stays quarantined.
    quarantined_until_ms: AtomicI64,
    /// Consecutive fast evaluations on the blocking pool (saturates at [`LEARN`]).
    fast_in_a_row: AtomicU32,
    /// Unix ms until which the zone's evaluations stay on the blocking pool.
    offloaded_until_ms: AtomicI64,
}

impl Default for Gate {
    fn default() -> Self {
        Self {
            running: Arc::new(Semaphore::new(MAX_RUNNING)),
            slow: AtomicU32::new(0),
            quarantined_until_ms: AtomicI64::new(0),
            fast_in_a_row: AtomicU32::new(0),
            offloaded_until_ms: AtomicI64::new(0),
        }
    }
}

impl Gate {
    fn refuse(&self, zone_id: &str) -> Result<(), StsError> {
        if self.slow.load(Ordering::Acquire) > 0 || now_ms() < self.quarantined_until_ms.load(Ordering::Acquire) {
            return Err(StsError::PolicyEvalFailed(format!("zone {zone_id} is quarantined after a slow policy evaluation")));
        }
        Ok(())
    }

    fn quarantine(&self) {
        self.quarantined_until_ms.store(now_ms() + QUARANTINE.as_millis() as i64, Ordering::Release);
    }

    fn runs_inline(&self) -> bool {
        self.fast_in_a_row.load(Ordering::Acquire) >= LEARN && now_ms() >= self.offloaded_until_ms.load(Ordering::Acquire)
    }

    /// Records how long an evaluation on the blocking pool took.
    fn observe(&self, took: Duration) {
        if took < INLINE_MAX {
            let _ = self.fast_in_a_row.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < LEARN).then_some(n + 1));
        } else {
            self.fast_in_a_row.store(0, Ordering::Release);
        }
    }

    fn demote(&self) {
        self.fast_in_a_row.store(0, Ordering::Release);
        self.offloaded_until_ms.store(now_ms() + DEMOTION.as_millis() as i64, Ordering::Release);
    }
}

/// An evaluation's progress, moved forward by whichever side gets there first.
const QUEUED: u8 = 0;
const RUNNING: u8 = 1;
/// Running, and counted in [`Gate::slow`].
const RUNNING_SLOW: u8 = 2;
const DONE: u8 = 3;

/// Runs evaluations; see the module docs.
pub struct Runner {
    timeout: Duration,
    gates: DashMap<String, Arc<Gate>>,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// CPU time this thread has used. Evaluations are judged by it, not by wall time: on a busy box a
/// preempted evaluation of an ordinary policy must not count as slow.
fn thread_cpu() -> Duration {
    nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID.now().map_or(Duration::ZERO, Duration::from)
}

/// What one evaluation cost: its thread's CPU time, and whether regorus's timer stopped it.
struct Cost {
    cpu: Duration,
    stopped: bool,
}

/// Evaluates on the calling thread and measures the cost.
fn measured(policy: &ActivePolicy, input: Value) -> (Result<Decision, StsError>, Cost) {
    let before = thread_cpu();
    let out = super::evaluate_now(policy, input);
    let cpu = thread_cpu().saturating_sub(before);
    let stopped = matches!(&out, Err(StsError::PolicyEvalFailed(m)) if m.contains("time limit"));
    (out, Cost { cpu, stopped })
}

impl Runner {
    /// A runner answering within `timeout`.
    pub fn new(timeout: Duration) -> Self {
        Self { timeout, gates: DashMap::new() }
    }

    fn gate(&self, zone_id: &str) -> Arc<Gate> {
        if let Some(g) = self.gates.get(zone_id) {
            return g.clone();
        }
        self.gates.entry(zone_id.to_owned()).or_default().clone()
    }

    /// Whether `zone_id`'s evaluations run on the request's worker now.
    pub fn runs_inline(&self, zone_id: &str) -> bool {
        self.gates.get(zone_id).is_some_and(|g| g.runs_inline())
    }

    /// Evaluates `policy` against `input` for `zone_id`.
    pub async fn run(&self, zone_id: &str, policy: Arc<ActivePolicy>, input: Value) -> Result<Decision, StsError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let gate = self.gate(zone_id);
        gate.refuse(zone_id)?;
        if gate.runs_inline() {
            return self.evaluate_inline(zone_id, &gate, &policy, input);
        }
        let over = || StsError::PolicyEvalFailed(format!("policy evaluation exceeded {} ms", self.timeout.as_millis()));
        let permit = match tokio::time::timeout_at(deadline, gate.running.clone().acquire_owned()).await {
            Ok(Ok(p)) => p,
            Ok(Err(_)) => return Err(StsError::Internal("policy gate closed".into())),
            Err(_) => return Err(over()),
        };
        gate.refuse(zone_id)?;
        let state = Arc::new(AtomicU8::new(QUEUED));
        let started_ms = Arc::new(AtomicI64::new(0));
        let (task_gate, task_state, task_started, budget) = (gate.clone(), state.clone(), started_ms.clone(), self.timeout);
        let mut task = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            task_started.store(now_ms(), Ordering::Release);
            let _ = task_state.compare_exchange(QUEUED, RUNNING, Ordering::AcqRel, Ordering::Acquire);
            let (out, cost) = measured(&policy, input);
            task_gate.observe(cost.cpu);
            if cost.stopped || cost.cpu >= budget / 2 {
                // Overran even if regorus's own timer stopped it before the caller gave up.
                task_gate.quarantine();
            }
            if task_state.swap(DONE, Ordering::AcqRel) == RUNNING_SLOW {
                task_gate.slow.fetch_sub(1, Ordering::AcqRel);
            }
            out
        });
        // Half the budget into the evaluation itself (not its wait for a thread), it counts as slow.
        let slow_after = self.timeout / 2;
        loop {
            let check = (tokio::time::Instant::now() + slow_after / 4).min(deadline);
            match tokio::time::timeout_at(check, &mut task).await {
                Ok(Ok(out)) => return out,
                Ok(Err(join)) => return Err(StsError::PolicyEvalFailed(format!("policy evaluation panicked: {join}"))),
                Err(_) => {
                    let started = started_ms.load(Ordering::Acquire);
                    if started > 0
                        && now_ms() - started >= slow_after.as_millis() as i64
                        && state.compare_exchange(RUNNING, RUNNING_SLOW, Ordering::AcqRel, Ordering::Acquire).is_ok()
                    {
                        gate.slow.fetch_add(1, Ordering::AcqRel);
                        tracing::warn!(zone_id, "policy evaluation is slow; the zone's new evaluations fail fast until it ends");
                    }
                    if tokio::time::Instant::now() >= deadline {
                        // Abandoned while running: the zone fails fast until it ends. (Still queued
                        // for a thread means overload, not this policy: nothing is marked.)
                        if state.compare_exchange(RUNNING, RUNNING_SLOW, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                            gate.slow.fetch_add(1, Ordering::AcqRel);
                        }
                        tracing::warn!(zone_id, timeout_ms = self.timeout.as_millis() as u64, "policy evaluation overran");
                        return Err(over());
                    }
                }
            }
        }
    }

    /// An evaluation on the request's worker, for a zone whose policy has shown it is fast.
    fn evaluate_inline(&self, zone_id: &str, gate: &Gate, policy: &ActivePolicy, input: Value) -> Result<Decision, StsError> {
        let (out, cost) = measured(policy, input);
        if cost.cpu >= INLINE_DEMOTE || cost.stopped {
            gate.demote();
            tracing::warn!(
                zone_id,
                cpu_us = cost.cpu.as_micros() as u64,
                "policy evaluation was slow; the zone's evaluations move off the request workers"
            );
        }
        if cost.stopped || cost.cpu >= self.timeout / 2 {
            gate.quarantine();
            return Err(StsError::PolicyEvalFailed(format!("policy evaluation exceeded {} ms", self.timeout.as_millis())));
        }
        out
    }
}
