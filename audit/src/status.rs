//! What the ledger reports on `/ready`.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

use crate::chain::{Break, BreakKind};

/// Findings of the latest sweep, as `/ready` and the sweep endpoint show them.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Findings {
    pub content_mismatch: u64,
    pub chain_break: u64,
    pub hmac_mismatch: u64,
    /// The first few, with where they are.
    pub first: Vec<Break>,
    pub last_sweep_at: Option<chrono::DateTime<chrono::Utc>>,
    pub last_full_sweep_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl Findings {
    pub fn total(&self) -> u64 {
        self.content_mismatch + self.chain_break + self.hmac_mismatch
    }

    pub(crate) fn count(&mut self, kind: BreakKind) {
        match kind {
            BreakKind::ContentMismatch => self.content_mismatch += 1,
            BreakKind::ChainBreak => self.chain_break += 1,
            BreakKind::HmacMismatch => self.hmac_mismatch += 1,
        }
    }
}

/// Shared between the consumer, the sweeper and the HTTP handlers.
#[derive(Default)]
pub struct Status {
    ingest_healthy: AtomicBool,
    store_failing: AtomicBool,
    findings: Mutex<Findings>,
}

impl Status {
    pub fn set_ingest_healthy(&self, v: bool) {
        self.ingest_healthy.store(v, Ordering::Relaxed);
    }

    pub fn set_store_failing(&self, v: bool) {
        self.store_failing.store(v, Ordering::Relaxed);
    }

    pub fn ingest_healthy(&self) -> bool {
        self.ingest_healthy.load(Ordering::Relaxed)
    }

    pub fn store_failing(&self) -> bool {
        self.store_failing.load(Ordering::Relaxed)
    }

    /// Findings of the latest sweep.
    pub fn findings(&self) -> Findings {
        self.findings.lock().expect("findings lock").clone()
    }

    pub(crate) fn set_findings(&self, f: Findings) {
        *self.findings.lock().expect("findings lock") = f;
    }
}
