//! Policy evaluation off the async workers, within a time bound, one zone's trouble kept to itself.
//!
//! Each evaluation runs on tokio's blocking pool (never on a worker that serves requests) and is
//! awaited for at most `POLICY_EVAL_TIMEOUT`; past it the caller gets 503 `policy_eval_failed`
//! while the evaluation finishes (or hits regorus's own timer) in the background. Per zone:
//!
//! * at most [`MAX_IN_FLIGHT`] evaluations at once, so a burst of slow ones cannot take the pool;
//! * a zone whose evaluation overran (took the whole budget, whoever stopped it) is **quarantined** — its evaluations fail fast — until the
//!   overrunning one has ended and [`QUARANTINE`] has passed, so a policy that is always slow costs
//!   one thread now and then, not one per request. Other zones are not affected.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU32, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use serde_json::Value;

use super::{ActivePolicy, Decision};
use crate::error::StsError;

/// Evaluations of one zone that may run at once.
pub const MAX_IN_FLIGHT: u32 = 16;
/// How long a zone stays quarantined after an overrun ended.
pub const QUARANTINE: Duration = Duration::from_secs(5);

/// Per-zone admission state.
#[derive(Default)]
struct Gate {
    in_flight: AtomicU32,
    /// Evaluations that overran and are still running.
    overrunning: AtomicU32,
    /// Unix ms until which the zone stays quarantined after its last overrun.
    quarantined_until_ms: AtomicI64,
}

/// An evaluation's progress, settled by whichever side gets there first.
const RUNNING: u8 = 0;
const DONE: u8 = 1;
const ABANDONED: u8 = 2;

/// Runs evaluations; see the module docs.
pub struct Runner {
    timeout: Duration,
    gates: DashMap<String, Arc<Gate>>,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
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

    /// Evaluates `policy` against `input` for `zone_id`.
    pub async fn run(&self, zone_id: &str, policy: Arc<ActivePolicy>, input: Value) -> Result<Decision, StsError> {
        let gate = self.gate(zone_id);
        if gate.overrunning.load(Ordering::Acquire) > 0 || now_ms() < gate.quarantined_until_ms.load(Ordering::Acquire) {
            return Err(StsError::PolicyEvalFailed(format!("zone {zone_id} is quarantined after a policy evaluation overran")));
        }
        if gate.in_flight.fetch_add(1, Ordering::AcqRel) >= MAX_IN_FLIGHT {
            gate.in_flight.fetch_sub(1, Ordering::AcqRel);
            return Err(StsError::PolicyEvalFailed(format!("zone {zone_id} has {MAX_IN_FLIGHT} policy evaluations running")));
        }
        let state = Arc::new(AtomicU8::new(RUNNING));
        let (task_gate, task_state, budget) = (gate.clone(), state.clone(), self.timeout);
        let task = tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let out = super::evaluate_now(&policy, input);
            task_gate.in_flight.fetch_sub(1, Ordering::AcqRel);
            if started.elapsed() >= budget {
                // Overran even if regorus's own timer stopped it before the caller gave up.
                task_gate.quarantined_until_ms.store(now_ms() + QUARANTINE.as_millis() as i64, Ordering::Release);
            }
            if task_state.compare_exchange(RUNNING, DONE, Ordering::AcqRel, Ordering::Acquire).is_err() {
                // Abandoned by the caller: this overrun is over; the quarantine runs from now.
                task_gate.quarantined_until_ms.store(now_ms() + QUARANTINE.as_millis() as i64, Ordering::Release);
                task_gate.overrunning.fetch_sub(1, Ordering::AcqRel);
            }
            out
        });
        match tokio::time::timeout(self.timeout, task).await {
            Ok(Ok(out)) => out,
            Ok(Err(join)) => Err(StsError::PolicyEvalFailed(format!("policy evaluation panicked: {join}"))),
            Err(_) => {
                gate.overrunning.fetch_add(1, Ordering::AcqRel);
                if state.compare_exchange(RUNNING, ABANDONED, Ordering::AcqRel, Ordering::Acquire).is_err() {
                    // It finished just now; nothing is left running.
                    gate.overrunning.fetch_sub(1, Ordering::AcqRel);
                }
                gate.quarantined_until_ms.store(now_ms() + QUARANTINE.as_millis() as i64, Ordering::Release);
                tracing::warn!(zone_id, timeout_ms = self.timeout.as_millis() as u64, "policy evaluation overran; zone quarantined");
                Err(StsError::PolicyEvalFailed(format!("policy evaluation exceeded {} ms", self.timeout.as_millis())))
            }
        }
    }
}
