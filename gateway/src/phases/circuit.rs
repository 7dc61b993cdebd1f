//! The STS circuit breakers: one per zone, and one for the STS as a whole.
//!
//! A [`Circuit`] opens after `STS_CIRCUIT_FAILURES` failures within `STS_CIRCUIT_WINDOW`; requests
//! then fail fast with 503 `sts_unavailable` (`sts_circuit_open`) instead of piling onto a
//! struggling STS. After `STS_CIRCUIT_OPEN` one request is let through as a probe (half-open);
//! its success closes the circuit, its failure opens it again. The failure count resets when its
//! window passes or on any success (the original never reset it, so one stray failure re-opened
//! the circuit). A probe whose request ends without an outcome (the client went away mid
//! exchange) hands the probe back, so a circuit can never stay half-open for good. When the STS
//! turns ready again after having been seen unready, the open periods end early
//! ([`Circuits::probe_now`], from `background::sts_readiness`): an outage ends for the gateway
//! when it ends for the STS, not up to `STS_CIRCUIT_OPEN` later.
//!
//! [`Circuits`] decides which circuit an outcome counts against ([`Health`]):
//!
//! * **A zone's failure** — the STS answered 5xx for this zone's exchange (`policy_eval_failed`
//!   from a broken policy, an internal error), or the exchange timed out — opens that zone's
//!   circuit only; other zones keep flowing. The STS was reachable, so it counts as a success
//!   for the global circuit.
//! * **The STS is down** — connection refused or reset, an answer outside the contract (a proxy's
//!   HTML error page, an unreadable 200) — counts against the global circuit, which fails every
//!   zone fast.
//! * A policy refusal (4xx, including 429) is a healthy STS saying no.
//!
//! Zone circuits exist only for zones that failed: the map holds at most
//! [`MAX_ZONE_CIRCUITS`] zones and forgets one idle for [`ZONE_IDLE`] (zone ids here come from
//! verified mandates, so only real zones can be added). An evicted open circuit closes early,
//! which costs the STS some load, never a wrong answer. The hot path reads one atomic (global)
//! and looks the zone up in a concurrent map.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, AtomicU32, Ordering};
use std::time::Duration;

const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const HALF_OPEN: u8 = 2;

/// What the circuit lets a request do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admit {
    /// Closed: go ahead.
    Pass,
    /// Half-open: go ahead as the single probe.
    Probe,
    /// Open: fail fast.
    Reject,
}

/// The breaker.
pub struct Circuit {
    state: AtomicU8,
    failures: AtomicU32,
    window_start_ms: AtomicI64,
    opened_ms: AtomicI64,
    threshold: u32,
    window_ms: i64,
    open_ms: i64,
    /// Times the circuit opened.
    pub opened: prometheus::IntCounter,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Circuit {
    /// A closed circuit.
    pub fn new(threshold: u32, window: Duration, open: Duration, opened: prometheus::IntCounter) -> Self {
        Self {
            state: AtomicU8::new(CLOSED),
            failures: AtomicU32::new(0),
            window_start_ms: AtomicI64::new(0),
            opened_ms: AtomicI64::new(0),
            threshold: threshold.max(1),
            window_ms: window.as_millis() as i64,
            open_ms: open.as_millis() as i64,
            opened,
        }
    }

    /// Whether a request may call the STS now.
    pub fn admit(&self) -> Admit {
        match self.state.load(Ordering::Acquire) {
            CLOSED => Admit::Pass,
            OPEN if now_ms() - self.opened_ms.load(Ordering::Acquire) >= self.open_ms => {
                // Exactly one request wins the probe.
                match self.state.compare_exchange(OPEN, HALF_OPEN, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => Admit::Probe,
                    Err(_) => Admit::Reject,
                }
            }
            _ => Admit::Reject,
        }
    }

    /// Records the outcome of an admitted call; `unavailable` is a transport error or 5xx.
    pub fn record(&self, admit: Admit, unavailable: bool) {
        if !unavailable {
            // Read first: an unconditional store would bounce this cache line between workers on
            // every request.
            if self.failures.load(Ordering::Acquire) != 0 {
                self.failures.store(0, Ordering::Release);
            }
            if admit == Admit::Probe {
                self.state.store(CLOSED, Ordering::Release);
                tracing::info!("STS circuit closed after a successful probe");
            }
            return;
        }
        if admit == Admit::Probe {
            self.open();
            return;
        }
        let now = now_ms();
        let start = self.window_start_ms.load(Ordering::Acquire);
        let n = if now - start > self.window_ms {
            self.window_start_ms.store(now, Ordering::Release);
            self.failures.store(1, Ordering::Release);
            1
        } else {
            self.failures.fetch_add(1, Ordering::AcqRel) + 1
        };
        if n >= self.threshold && self.state.compare_exchange(CLOSED, OPEN, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            self.opened_ms.store(now, Ordering::Release);
            self.failures.store(0, Ordering::Release);
            self.opened.inc();
            tracing::error!(failures = n, "STS circuit opened");
        }
    }

    /// Hands back a probe that ended without an outcome: the next request may probe at once.
    pub fn abandon(&self, admit: Admit) {
        if admit == Admit::Probe {
            let _ = self.state.compare_exchange(HALF_OPEN, OPEN, Ordering::AcqRel, Ordering::Acquire);
        }
    }

    fn open(&self) {
        self.opened_ms.store(now_ms(), Ordering::Release);
        self.state.store(OPEN, Ordering::Release);
        self.opened.inc();
        tracing::error!("STS circuit re-opened: the probe failed");
    }

    /// Whether the circuit is open (for `/ready` and metrics).
    pub fn is_open(&self) -> bool {
        self.state.load(Ordering::Acquire) != CLOSED
    }

    /// Ends an open period early: the next request probes. Returns whether the circuit was open.
    pub fn probe_now(&self) -> bool {
        if self.state.load(Ordering::Acquire) != OPEN {
            return false;
        }
        self.opened_ms.store(0, Ordering::Release);
        true
    }
}

/// Most zones with a circuit of their own.
pub const MAX_ZONE_CIRCUITS: u64 = 10_000;
/// A zone circuit unused this long is forgotten.
pub const ZONE_IDLE: Duration = Duration::from_secs(600);

/// What an exchange's outcome says about the STS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// A grant or a refusal: the STS works.
    Healthy,
    /// This zone's exchange failed (5xx, timeout): the zone's circuit counts it.
    ZoneFailing,
    /// The STS could not be reached or answered outside the contract: every zone is affected.
    StsDown,
}

/// The circuit settings.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    pub failures: u32,
    pub window: Duration,
    pub open: Duration,
}

/// The global circuit and the zones' circuits.
pub struct Circuits {
    global: Circuit,
    zones: moka::sync::Cache<String, Arc<Circuit>>,
    /// Whether any zone ever failed: until then the hot path skips the zone lookup.
    any_zone: AtomicBool,
    settings: Settings,
    opened: prometheus::IntCounter,
}

/// Permission to call the STS, to be settled with [`Ticket::record`]; dropped unsettled (the
/// request ended mid exchange) it hands back any probe it held.
pub struct Ticket<'a> {
    circuits: &'a Circuits,
    global: Admit,
    zone: Option<(Arc<Circuit>, Admit)>,
    zone_id: &'a str,
    settled: bool,
}

impl Circuits {
    /// All circuits closed.
    pub fn new(settings: Settings, opened: prometheus::IntCounter) -> Self {
        Self {
            global: Circuit::new(settings.failures, settings.window, settings.open, opened.clone()),
            zones: moka::sync::Cache::builder().max_capacity(MAX_ZONE_CIRCUITS).time_to_idle(ZONE_IDLE).build(),
            any_zone: AtomicBool::new(false),
            settings,
            opened,
        }
    }

    /// Whether a request of `zone_id` may call the STS now.
    pub fn admit<'a>(&'a self, zone_id: &'a str) -> Option<Ticket<'a>> {
        let known = self.any_zone.load(Ordering::Acquire).then(|| self.zones.get(zone_id)).flatten();
        let zone = match known {
            Some(c) => match c.admit() {
                Admit::Reject => return None,
                a => Some((c, a)),
            },
            None => None,
        };
        let global = self.global.admit();
        if global == Admit::Reject {
            if let Some((c, a)) = &zone {
                c.abandon(*a);
            }
            return None;
        }
        Some(Ticket { circuits: self, global, zone, zone_id, settled: false })
    }

    /// Whether the global circuit is open.
    pub fn is_open(&self) -> bool {
        self.global.is_open()
    }

    /// Whether any circuit, global or a zone's, is open or probing.
    pub fn any_open(&self) -> bool {
        self.global.is_open() || (self.any_zone.load(Ordering::Acquire) && self.zones.iter().any(|(_, c)| c.is_open()))
    }

    /// Lets every open circuit probe with its next request (the STS said it is ready again);
    /// returns how many were open.
    pub fn probe_now(&self) -> usize {
        let zones = self.zones.iter().filter(|(_, c)| c.probe_now()).count();
        zones + usize::from(self.global.probe_now())
    }
}

impl Ticket<'_> {
    /// Counts the outcome against the circuit it concerns.
    pub fn record(mut self, health: Health) {
        self.settled = true;
        let c = self.circuits;
        match health {
            Health::Healthy => {
                c.global.record(self.global, false);
                if let Some((z, a)) = &self.zone {
                    z.record(*a, false);
                }
            }
            Health::ZoneFailing => {
                c.global.record(self.global, false);
                let (z, a) = self.zone.take().unwrap_or_else(|| {
                    c.any_zone.store(true, Ordering::Release);
                    let s = c.settings;
                    let z =
                        c.zones.get_with_by_ref(self.zone_id, || Arc::new(Circuit::new(s.failures, s.window, s.open, c.opened.clone())));
                    (z, Admit::Pass)
                });
                z.record(a, true);
            }
            Health::StsDown => {
                c.global.record(self.global, true);
                // A zone's probe learned nothing about the zone: let the next request probe.
                if let Some((z, a)) = &self.zone {
                    z.abandon(*a);
                }
            }
        }
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.circuits.global.abandon(self.global);
            if let Some((z, a)) = &self.zone {
                z.abandon(*a);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn circuit(open_ms: u64) -> Circuit {
        Circuit::new(3, Duration::from_secs(10), Duration::from_millis(open_ms), prometheus::IntCounter::new("c", "c").unwrap())
    }

    #[test]
    fn opens_after_the_threshold_and_probes_one_at_a_time() {
        let c = circuit(50);
        for _ in 0..2 {
            assert_eq!(c.admit(), Admit::Pass);
            c.record(Admit::Pass, true);
        }
        assert!(!c.is_open());
        c.record(Admit::Pass, true);
        assert!(c.is_open());
        assert_eq!(c.admit(), Admit::Reject);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(c.admit(), Admit::Probe);
        assert_eq!(c.admit(), Admit::Reject, "only one probe at a time");
        c.record(Admit::Probe, true);
        assert_eq!(c.admit(), Admit::Reject, "a failed probe re-opens");
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(c.admit(), Admit::Probe);
        c.record(Admit::Probe, false);
        assert_eq!(c.admit(), Admit::Pass, "a good probe closes");
        assert_eq!(c.opened.get(), 2);
    }

    #[test]
    fn a_success_or_a_passed_window_resets_the_count() {
        let c = circuit(50);
        c.record(Admit::Pass, true);
        c.record(Admit::Pass, true);
        c.record(Admit::Pass, false);
        c.record(Admit::Pass, true);
        c.record(Admit::Pass, true);
        assert!(!c.is_open(), "the success reset the count");
        let w = Circuit::new(2, Duration::from_millis(20), Duration::from_secs(1), prometheus::IntCounter::new("w", "w").unwrap());
        w.record(Admit::Pass, true);
        std::thread::sleep(Duration::from_millis(30));
        w.record(Admit::Pass, true);
        assert!(!w.is_open(), "failures in different windows do not add up");
    }

    fn circuits(open_ms: u64) -> Circuits {
        let settings = Settings { failures: 3, window: Duration::from_secs(10), open: Duration::from_millis(open_ms) };
        Circuits::new(settings, prometheus::IntCounter::new("o", "o").unwrap())
    }

    fn outcome(c: &Circuits, zone: &str, health: Health) {
        c.admit(zone).expect("admitted").record(health);
    }

    #[test]
    fn a_zones_failures_open_only_its_circuit() {
        let c = circuits(1000);
        for _ in 0..3 {
            outcome(&c, "a", Health::ZoneFailing);
        }
        assert!(c.admit("a").is_none(), "zone a fails fast");
        assert!(c.admit("b").is_some(), "zone b flows");
        assert!(!c.is_open(), "the STS itself is fine");
        assert_eq!(c.opened.get(), 1);
    }

    #[test]
    fn the_sts_down_opens_the_global_circuit_for_every_zone() {
        let c = circuits(1000);
        for z in ["a", "b", "c"] {
            outcome(&c, z, Health::StsDown);
        }
        assert!(c.is_open());
        assert!(c.admit("d").is_none(), "a zone never seen fails fast too");
    }

    #[test]
    fn a_zone_failure_is_a_global_success() {
        let c = circuits(1000);
        outcome(&c, "a", Health::StsDown);
        outcome(&c, "a", Health::StsDown);
        outcome(&c, "b", Health::ZoneFailing);
        outcome(&c, "a", Health::StsDown);
        assert!(!c.is_open(), "the STS answered in between: the global count was reset");
    }

    #[test]
    fn refusals_are_healthy_and_close_a_probing_zone() {
        let c = circuits(30);
        for _ in 0..3 {
            outcome(&c, "a", Health::ZoneFailing);
        }
        std::thread::sleep(Duration::from_millis(40));
        let probe = c.admit("a").expect("the probe");
        assert!(c.admit("a").is_none(), "one probe at a time");
        probe.record(Health::Healthy);
        assert!(c.admit("a").is_some(), "a good probe closes the zone's circuit");
    }

    #[test]
    fn an_unsettled_probe_is_handed_back() {
        let c = circuits(30);
        for _ in 0..3 {
            outcome(&c, "a", Health::ZoneFailing);
        }
        std::thread::sleep(Duration::from_millis(40));
        drop(c.admit("a").expect("the probe"));
        assert!(c.admit("a").is_some(), "the client went away mid probe: the next request probes");
        let g = circuits(30);
        for z in ["x", "y", "z"] {
            outcome(&g, z, Health::StsDown);
        }
        std::thread::sleep(Duration::from_millis(40));
        drop(g.admit("x").expect("the global probe"));
        assert!(g.admit("x").is_some(), "the global probe is handed back too");
    }

    #[test]
    fn a_zone_probe_is_handed_back_when_the_global_circuit_rejects() {
        let c = circuits(30);
        for _ in 0..3 {
            outcome(&c, "a", Health::ZoneFailing);
        }
        std::thread::sleep(Duration::from_millis(40));
        for z in ["x", "y", "z"] {
            outcome(&c, z, Health::StsDown);
        }
        assert!(c.admit("a").is_none(), "the global circuit is open");
        std::thread::sleep(Duration::from_millis(40));
        assert!(c.admit("a").is_some(), "the zone's probe was not lost to the global rejection");
    }

    #[test]
    fn probe_now_ends_every_open_period_but_lets_only_one_probe_each() {
        let c = circuits(60_000);
        assert!(!c.any_open());
        assert_eq!(c.probe_now(), 0, "nothing open, nothing to do");
        for _ in 0..3 {
            outcome(&c, "a", Health::ZoneFailing);
        }
        assert!(c.any_open(), "a zone's circuit counts");
        assert!(!c.is_open(), "the global one is closed");
        for z in ["x", "y", "z"] {
            outcome(&c, z, Health::StsDown);
        }
        assert!(c.admit("b").is_none(), "open for a minute");
        assert_eq!(c.probe_now(), 2, "the global circuit and zone a's");
        let probe = c.admit("a").expect("the probe, at once");
        assert!(c.admit("a").is_none() && c.admit("b").is_none(), "still one probe at a time");
        probe.record(Health::Healthy);
        assert!(c.admit("a").is_some() && c.admit("b").is_some(), "the probe closed both");
        assert!(!c.any_open());
    }
}
