//! W3C trace context and the per-phase timings of one request.
//!
//! The trace is continued, never trusted: a valid inbound `traceparent` gives the trace id (and
//! its `tracestate` is kept), anything else starts a new trace. The gateway is one span of it:
//! the upstream and the STS get `traceparent` with the gateway's own span id as parent. Nothing
//! here is read by a check; the ids only join logs and traces.
//!
//! [`Timings`] are the phases a forwarded request spent time in, for the optional
//! `Server-Timing` response header (`SERVER_TIMING=true`) and the access log.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use caracal_shared::trace_context::TraceParent;
use pingora::http::RequestHeader;

/// The request's place in a trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trace {
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// The gateway's span: 16 lowercase hex digits.
    pub span_id: String,
    /// `01` sampled, `00` not; inherited.
    flags: String,
    /// The caller's span, when the trace was continued.
    pub parent_span_id: Option<u64>,
    /// Kept only with the valid `traceparent` it belongs to.
    pub tracestate: Option<String>,
}

impl Trace {
    /// Continues the inbound trace, or starts one.
    pub fn of(req: &RequestHeader) -> Self {
        let span_id = format!("{:016x}", fastrand::u64(1..));
        let inbound = req.headers.get("traceparent").and_then(|v| v.to_str().ok()).and_then(TraceParent::parse);
        match inbound {
            Some(t) => Self {
                trace_id: t.trace_id.to_owned(),
                span_id,
                flags: t.flags.to_owned(),
                parent_span_id: u64::from_str_radix(t.parent_id, 16).ok(),
                tracestate: req.headers.get("tracestate").and_then(|v| v.to_str().ok()).map(str::to_owned),
            },
            None => Self {
                trace_id: format!("{:032x}", fastrand::u128(1..)),
                span_id,
                flags: "01".into(),
                parent_span_id: None,
                tracestate: None,
            },
        }
    }

    /// `traceparent` for a hop the gateway makes (the upstream, the STS).
    pub fn traceparent(&self) -> String {
        format!("00-{}-{}-{}", self.trace_id, self.span_id, self.flags)
    }

    /// Whether the caller asked for this trace to be recorded (the W3C sampled flag).
    pub fn sampled(&self) -> bool {
        u8::from_str_radix(&self.flags, 16).is_ok_and(|f| f & 1 == 1)
    }
}

/// When a phase started and how long it took.
#[derive(Clone, Copy, Debug)]
pub struct Phase {
    pub start: Instant,
    pub took: Duration,
}

/// Time spent in each phase of a forwarded request.
#[derive(Clone, Copy, Debug, Default)]
pub struct Timings {
    /// Signature verification (with a key fetch when the zone's keys were not cached).
    pub verify: Option<Phase>,
    /// The single-use mark in Redis.
    pub replay: Option<Phase>,
    /// The signed exchange with the STS.
    pub sts: Option<Phase>,
    /// From the request sent upstream to the upstream's response header.
    pub upstream: Option<Phase>,
    /// When the request was handed to the upstream connection.
    pub upstream_sent: Option<Instant>,
    /// Whether anything reads the phases (`Server-Timing`, the sampled access log, trace export):
    /// unread phases are not timed. Six more clock readings per request showed as clock time
    /// going from 0.4 % to 1.1 % of the gateway's samples at saturation (bench profile, issue 16
    /// note). The STS exchange is timed always (its histogram).
    pub on: bool,
}

impl Timings {
    /// Timings that are taken when `on`.
    pub fn new(on: bool) -> Self {
        Self { on, ..Self::default() }
    }

    /// Times `f` into the slot `at` picks, when timings are on.
    pub async fn time<T>(&mut self, at: fn(&mut Self) -> &mut Option<Phase>, f: impl Future<Output = T>) -> T {
        if !self.on {
            return f.await;
        }
        self.time_always(at, f).await
    }

    /// Times `f` into the slot `at` picks, whether timings are on or not.
    pub async fn time_always<T>(&mut self, at: fn(&mut Self) -> &mut Option<Phase>, f: impl Future<Output = T>) -> T {
        let start = Instant::now();
        let out = f.await;
        *at(self) = Some(Phase { start, took: start.elapsed() });
        out
    }

    /// The phases that ran, named as in `Server-Timing` and the exported spans.
    pub fn phases(&self) -> impl Iterator<Item = (&'static str, Phase)> {
        [("verify", self.verify), ("replay", self.replay), ("sts", self.sts), ("upstream", self.upstream)]
            .into_iter()
            .filter_map(|(n, p)| p.map(|p| (n, p)))
    }

    /// `Server-Timing` (milliseconds, three decimals): each phase that ran, then `gateway`, the
    /// whole time until the response header.
    pub fn server_timing(&self, total: Duration) -> String {
        let mut out = String::with_capacity(96);
        for (name, p) in self.phases() {
            let _ = write!(out, "{name};dur={:.3}, ", p.took.as_secs_f64() * 1e3);
        }
        let _ = write!(out, "gateway;dur={:.3}", total.as_secs_f64() * 1e3);
        out
    }

    /// Milliseconds of a phase for the access log (0 when it did not run).
    pub fn ms(p: Option<Phase>) -> f64 {
        p.map_or(0.0, |p| p.took.as_secs_f64() * 1e3)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use caracal_shared::trace_context::valid_traceparent;

    fn req(headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        for (k, v) in headers {
            r.insert_header(k.to_string(), *v).unwrap();
        }
        r
    }

    #[test]
    fn a_valid_inbound_trace_is_continued_with_the_gateways_own_span() {
        let inbound = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        let t = Trace::of(&req(&[("traceparent", inbound), ("tracestate", "vendor=1")]));
        assert_eq!(t.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(t.span_id, "00f067aa0ba902b7", "the gateway is a span of its own");
        let out = t.traceparent();
        assert!(valid_traceparent(&out) && out.ends_with("-00"), "{out}: the sampling decision is inherited");
        assert_eq!(t.tracestate.as_deref(), Some("vendor=1"));
        let later = Trace::of(&req(&[("traceparent", "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future")]));
        assert_eq!(later.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736", "a later version's known fields are read");
    }

    #[test]
    fn anything_else_starts_a_new_trace_and_drops_its_tracestate() {
        for bad in ["", "00-00000000000000000000000000000000-00f067aa0ba902b7-01", "00-4bf92f3577b34da6a3ce929d0e0e4736-zz", "x"] {
            let t = Trace::of(&req(&[("traceparent", bad), ("tracestate", "forged=1")]));
            assert!(valid_traceparent(&t.traceparent()), "{bad:?}");
            assert_eq!(t.tracestate, None, "{bad:?}");
        }
        let (a, b) = (Trace::of(&req(&[])), Trace::of(&req(&[])));
        assert_ne!(a.trace_id, b.trace_id);
    }

    #[test]
    fn server_timing_lists_the_phases_that_ran() {
        let at = |us| Some(Phase { start: Instant::now(), took: Duration::from_micros(us) });
        let t = Timings { verify: at(61), sts: at(812), ..Default::default() };
        assert_eq!(t.server_timing(Duration::from_micros(1500)), "verify;dur=0.061, sts;dur=0.812, gateway;dur=1.500");
    }
}
