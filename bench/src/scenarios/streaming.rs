//! S5: streaming through each target: one large download (bytes/s) and one SSE stream (time to first
//! event, events/s). Every trial uses a fresh connection and, through the gateway, a fresh mandate.
//! Then many SSE streams held open at once through Pingora and the gateway: each one's resident memory
//! with all of them open.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;

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
    pub(crate) open: Vec<OpenStreams>,
}

/// Many SSE streams open at once through one target, and its resident memory meanwhile.
#[derive(Debug, Serialize)]
pub(crate) struct OpenStreams {
    pub(crate) target: Target,
    pub(crate) label: &'static str,
    /// Streams asked for, and how many delivered their first event.
    pub(crate) streams: usize,
    pub(crate) opened: usize,
    /// The target's resident set (`VmRSS`, KiB) before the streams, and with all of them open.
    pub(crate) rss_before_kib: Option<u64>,
    pub(crate) rss_open_kib: Option<u64>,
    /// Sockets the target held at that moment (each stream: one from the client, one to the upstream).
    pub(crate) sockets_open: Option<usize>,
    /// The first few failures (status or error), and how many there were in all.
    pub(crate) failures: Vec<String>,
    pub(crate) failed: usize,
}

impl OpenStreams {
    /// Resident memory with every stream open, MiB.
    pub(crate) fn rss_open_mib(&self) -> Option<f64> {
        self.rss_open_kib.map(|k| k as f64 / 1024.0)
    }

    /// Resident memory each open stream added, KiB.
    pub(crate) fn kib_per_stream(&self) -> Option<f64> {
        let grown = self.rss_open_kib?.checked_sub(self.rss_before_kib?)?;
        (self.opened > 0).then(|| grown as f64 / self.opened as f64)
    }
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
    let minter = Arc::new(minter);
    let mut open = Vec::new();
    for target in [Target::Pingora, Target::Gateway] {
        let o = hold_open(sys, plan, target, &minter).await?;
        eprintln!(
            "bench: S5 {:<28} {} of {} SSE streams open, RSS {:.1} MiB ({:.1} KiB per stream)",
            target.label(),
            o.opened,
            o.streams,
            o.rss_open_mib().unwrap_or(0.0),
            o.kib_per_stream().unwrap_or(0.0)
        );
        open.push(o);
    }
    Ok(Streaming { downloads, sse, open })
}

/// Streams being opened at once by [`hold_open`].
pub(crate) const OPENING: usize = 32;

/// Opens `plan.open_streams` SSE streams through `target`, [`OPENING`] at a time (through the gateway, each with
/// its own mandate, minted beforehand), samples the target's resident set once every stream has
/// delivered its first event, and reads them all to their end (`plan.open_hold` later).
async fn hold_open(sys: &Systems, plan: &Plan, target: Target, minter: &Arc<Minter>) -> anyhow::Result<OpenStreams> {
    let addr = sys.address(target).context("the target runs")?;
    let pid = if target == Target::Gateway { sys.caracal.gateway.pid() } else { sys.pingora.child.pid() };
    let n = plan.open_streams;
    let headers: Vec<Vec<(&'static str, HeaderValue)>> = if target == Target::Gateway {
        let tokens = minter
            .mint_many(n, crate::scenarios::rate::MINT_CONCURRENCY)
            .await
            .map_err(|e| anyhow::anyhow!("pre-minting the stream mandates: {e:?}"))?;
        tokens.iter().map(|t| governed_headers(sys, t)).collect::<anyhow::Result<_>>()?
    } else {
        vec![Vec::new(); n]
    };
    let rss_before_kib = crate::procs::rss_kib(pid);
    let path = format!("/sse?n=2&interval_ms={}", plan.open_hold.as_millis());
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<(), String>>(n.max(1));
    let mut streams = tokio::task::JoinSet::new();
    // Streams accumulate as they would on a live gateway: at most OPENING at a time are being
    // opened (each an STS exchange through the gateway), the rest stay open meanwhile.
    let opening = Arc::new(tokio::sync::Semaphore::new(OPENING));
    for h in headers {
        let (tx, path) = (tx.clone(), path.clone());
        let permit = opening.clone().acquire_owned().await?;
        streams.spawn(async move {
            if let Err(e) = open_then_drain(addr, &path, &h, &tx, permit).await {
                let _ = tx.send(Err(e)).await;
            }
        });
    }
    drop(tx);
    let (mut opened, mut failed, mut failures) = (0, 0, Vec::new());
    // Every stream has delivered its first event by the time the last one was started, but for the
    // last OPENING; they have a hold's time to do so.
    let deadline = tokio::time::Instant::now() + plan.open_hold;
    while opened + failed < n {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(Ok(()))) => opened += 1,
            Ok(Some(Err(e))) => {
                failed += 1;
                if failures.len() < 5 {
                    failures.push(e);
                }
            }
            Ok(None) | Err(_) => break,
        }
    }
    let (rss_open_kib, sockets_open) = (crate::procs::rss_kib(pid), crate::procs::sockets(pid));
    while streams.join_next().await.is_some() {}
    Ok(OpenStreams { target, label: target.label(), streams: n, opened, rss_before_kib, rss_open_kib, sockets_open, failures, failed })
}

/// One held stream: reports `Ok` on `opened` once its first event arrived, then reads the rest.
/// `Err`: it failed before its first event (and reported nothing).
async fn open_then_drain(
    addr: std::net::SocketAddr,
    path: &str,
    headers: &[(&str, HeaderValue)],
    opened: &tokio::sync::mpsc::Sender<Result<(), String>>,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> Result<(), String> {
    let mut conn = Conn::new(addr);
    let resp = get(&mut conn, path, headers).await.map_err(|e| e.to_string())?;
    if resp.status() != 200 {
        return Err(format!("status {}", resp.status()));
    }
    let mut body = resp.into_body();
    let mut counter = EventCounter::default();
    while counter.events == 0 {
        let frame = body.frame().await.ok_or("ended before its first event")?.map_err(|e| e.to_string())?;
        if let Ok(data) = frame.into_data() {
            counter.feed(&data);
        }
    }
    drop(permit);
    let _ = opened.send(Ok(())).await;
    // The end of the stream is not measured; an error there changes nothing already sampled.
    while let Some(Ok(_)) = body.frame().await {}
    Ok(())
}

/// The headers one trial through `target` needs (a fresh mandate for the gateway).
async fn trial_headers(sys: &Systems, target: Target, minter: &Minter, sts: &mut Conn) -> anyhow::Result<Vec<(&'static str, HeaderValue)>> {
    Ok(match target {
        Target::Gateway | Target::Governed => governed_headers(sys, &minter.mint(sts).await?)?,
        Target::Envoy => {
            sys.envoy_bearers().and_then(|b| b.first().cloned()).map(|b| vec![(AUTHORIZATION.as_str(), b)]).unwrap_or_default()
        }
        Target::Direct | Target::Pingora | Target::Nginx => vec![],
        // S5 does not stream through the pool (S7 measures it).
        Target::PoolPingora | Target::PoolNginx | Target::PoolGateway => vec![],
    })
}

/// A governed request's headers: the mandate and the demo resource.
fn governed_headers(sys: &Systems, token: &str) -> anyhow::Result<Vec<(&'static str, HeaderValue)>> {
    Ok(vec![(AUTHORIZATION.as_str(), bearer(token)), (RESOURCE_HEADER, HeaderValue::from_str(&sys.demo.resource)?)])
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
    let started = Instant::now();
    let resp = get(&mut conn, path, headers).await?;
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

/// `GET path` with `headers` on `conn`; the response with its body still to read.
async fn get(conn: &mut Conn, path: &str, headers: &[(&str, HeaderValue)]) -> anyhow::Result<http::Response<hyper::body::Incoming>> {
    let mut req = conn.request(Method::GET, path);
    for (k, v) in headers {
        req = req.header(*k, v.clone());
    }
    Ok(conn.send(req.body(Full::default())?).await?)
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
