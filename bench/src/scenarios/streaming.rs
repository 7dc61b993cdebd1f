//! S5: streaming through each target: one large download (bytes/s) and one SSE stream (time to first
//! event, events/s). Every trial uses a fresh connection and, through the gateway, a fresh mandate.

use std::time::{Duration, Instant};

use http::header::AUTHORIZATION;
use http::{HeaderValue, Method};
use http_body_util::{BodyExt, Full};
use serde::Serialize;

use crate::client::Conn;
use crate::hist::quantile;
use crate::load::workload::{RESOURCE_HEADER, bearer};
use crate::run::Plan;
use crate::scenarios::Systems;
use crate::scenarios::rate::Target;
use crate::stack::mint::Minter;

/// Everything S5 measured.
#[derive(Debug, Serialize)]
pub(crate) struct Streaming {
    pub(crate) downloads: Vec<Download>,
    pub(crate) sse: Vec<SseRecord>,
}

/// The large download through one target.
#[derive(Debug, Serialize)]
pub(crate) struct Download {
    pub(crate) target: Target,
    pub(crate) label: &'static str,
    pub(crate) bytes: u64,
    /// Median over the trials, MiB/s.
    pub(crate) mib_per_s: Option<f64>,
    pub(crate) trials_mib_per_s: Vec<f64>,
    pub(crate) failures: Vec<String>,
}

/// The SSE stream through one target (medians over the trials).
#[derive(Debug, Serialize)]
pub(crate) struct SseRecord {
    pub(crate) target: Target,
    pub(crate) label: &'static str,
    pub(crate) events: u64,
    pub(crate) first_event_ms: Option<f64>,
    pub(crate) total_ms: Option<f64>,
    pub(crate) events_per_s: Option<f64>,
    pub(crate) failures: Vec<String>,
}

const TARGETS: [Target; 5] = [Target::Direct, Target::Pingora, Target::Nginx, Target::Envoy, Target::Gateway];

/// Runs the downloads, then the SSE streams.
pub(crate) async fn run(sys: &Systems, plan: &Plan) -> anyhow::Result<Streaming> {
    let session = Minter::session(sys.caracal.cp, &sys.demo).mint(&mut Conn::new(sys.caracal.cp)).await?;
    let minter = Minter::gateway(sys.caracal.cp, &sys.demo, &session);
    let mut sts = Conn::new(sys.caracal.cp);
    let mut downloads = Vec::new();
    let mut sse = Vec::new();
    let download_path = format!("/bytes/{}", plan.stream_bytes);
    let sse_path = format!("/sse?n={}", plan.sse_events);
    for target in TARGETS {
        let Some(addr) = sys.address(target) else { continue };
        let mut d = Download {
            target,
            label: target.label(),
            bytes: plan.stream_bytes,
            mib_per_s: None,
            trials_mib_per_s: vec![],
            failures: vec![],
        };
        let mut s = SseRecord {
            target,
            label: target.label(),
            events: 0,
            first_event_ms: None,
            total_ms: None,
            events_per_s: None,
            failures: vec![],
        };
        let (mut firsts, mut totals, mut rates) = (vec![], vec![], vec![]);
        for _ in 0..plan.stream_repeats {
            let h = trial_headers(sys, target, &minter, &mut sts).await?;
            match stream_once(addr, &download_path, &h, false).await {
                Ok(t) if t.bytes == plan.stream_bytes => d.trials_mib_per_s.push(t.bytes as f64 / 1_048_576.0 / t.total.as_secs_f64()),
                Ok(t) => d.failures.push(format!("status {} after {} bytes", t.status, t.bytes)),
                Err(e) => d.failures.push(e.to_string()),
            }
            let h = trial_headers(sys, target, &minter, &mut sts).await?;
            match stream_once(addr, &sse_path, &h, true).await {
                Ok(t) if t.events == plan.sse_events => {
                    s.events = t.events;
                    firsts.push(t.first_event.unwrap_or(t.total).as_secs_f64() * 1e3);
                    totals.push(t.total.as_secs_f64() * 1e3);
                    rates.push(t.events as f64 / t.total.as_secs_f64());
                }
                Ok(t) => s.failures.push(format!("status {} after {} events", t.status, t.events)),
                Err(e) => s.failures.push(e.to_string()),
            }
        }
        d.mib_per_s = median(&mut d.trials_mib_per_s.clone());
        (s.first_event_ms, s.total_ms, s.events_per_s) = (median(&mut firsts), median(&mut totals), median(&mut rates));
        eprintln!(
            "bench: S5 {:<28} download {:>8.1} MiB/s, SSE first event {:.2} ms, {:.0} events/s",
            target.label(),
            d.mib_per_s.unwrap_or(0.0),
            s.first_event_ms.unwrap_or(0.0),
            s.events_per_s.unwrap_or(0.0)
        );
        downloads.push(d);
        sse.push(s);
    }
    Ok(Streaming { downloads, sse })
}

/// The headers one trial through `target` needs (a fresh mandate for the gateway).
async fn trial_headers(sys: &Systems, target: Target, minter: &Minter, sts: &mut Conn) -> anyhow::Result<Vec<(&'static str, HeaderValue)>> {
    Ok(match target {
        Target::Gateway | Target::Governed => {
            let token = minter.mint(sts).await?;
            vec![(AUTHORIZATION.as_str(), bearer(&token)), (RESOURCE_HEADER, HeaderValue::from_str(&sys.demo.resource)?)]
        }
        Target::Envoy => {
            sys.envoy_bearers().and_then(|b| b.first().cloned()).map(|b| vec![(AUTHORIZATION.as_str(), b)]).unwrap_or_default()
        }
        Target::Direct | Target::Pingora | Target::Nginx => vec![],
        // S5 does not stream through the pool (S7 measures it).
        Target::PoolPingora | Target::PoolNginx | Target::PoolGateway => vec![],
    })
}

/// What one streamed response did.
pub(crate) struct Trial {
    pub(crate) status: u16,
    pub(crate) bytes: u64,
    pub(crate) events: u64,
    /// From sending the request to the end of the first event.
    pub(crate) first_event: Option<Duration>,
    pub(crate) total: Duration,
}

/// GETs `path` on a fresh connection and reads the body to its end, counting SSE events if asked.
pub(crate) async fn stream_once(
    addr: std::net::SocketAddr,
    path: &str,
    headers: &[(&str, HeaderValue)],
    sse: bool,
) -> anyhow::Result<Trial> {
    let mut conn = Conn::new(addr);
    let mut req = conn.request(Method::GET, path);
    for (k, v) in headers {
        req = req.header(*k, v.clone());
    }
    let started = Instant::now();
    let resp = conn.send(req.body(Full::default())?).await?;
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    let (mut bytes, mut counter, mut first_event) = (0u64, EventCounter::default(), None);
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else { continue };
        bytes += data.len() as u64;
        if sse {
            counter.feed(&data);
            if first_event.is_none() && counter.events > 0 {
                first_event = Some(started.elapsed());
            }
        }
    }
    Ok(Trial { status, bytes, events: counter.events, first_event, total: started.elapsed() })
}

/// Counts SSE events (blocks ended by a blank line) across chunk boundaries.
#[derive(Default)]
pub(crate) struct EventCounter {
    pub(crate) events: u64,
    after_newline: bool,
}

impl EventCounter {
    /// Feeds the next chunk of the stream.
    pub(crate) fn feed(&mut self, chunk: &[u8]) {
        for &b in chunk {
            match b {
                b'\n' if self.after_newline => {
                    self.events += 1;
                    self.after_newline = false;
                }
                b'\n' => self.after_newline = true,
                b'\r' => {}
                _ => self.after_newline = false,
            }
        }
    }
}

fn median(v: &mut [f64]) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    quantile(v, 0.5)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_events_split_across_chunks() {
        let mut c = EventCounter::default();
        for chunk in ["id: 1\ndata: a\n", "\nid: 2\ndata: b\n\n", "data: c\r\n", "\r\n", "data: partial\n"] {
            c.feed(chunk.as_bytes());
        }
        assert_eq!(c.events, 3, "the last block is not finished");
    }
}
