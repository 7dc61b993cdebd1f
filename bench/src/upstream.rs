//! The bench upstream every scenario fronts: cheap on purpose, so the numbers measure the proxies.
//!
//! - any path: a small JSON body (≈ 90 bytes);
//! - `/bytes/N`: N bytes streamed in 64 KiB chunks of one static buffer (nothing allocated per request);
//! - `/sse?n=1000&interval_ms=0`: `n` Server-Sent Events, each written as its own chunk, with an
//!   optional pause between them (S6 keeps a stream open this way);
//! - `/__bench/stats`: what this process served (JSON, see [`Stats`]), read by the pool scenario (S7)
//!   for the per-endpoint split and by the failover drill for the time to recover. Requests for `/`
//!   (readiness checks, health probes) and for `/__bench/*` are not counted: they are not traffic.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

const CHUNK_BYTES: usize = 64 * 1024;
static CHUNK: [u8; CHUNK_BYTES] = [b'x'; CHUNK_BYTES];
const SMALL_JSON: &str = r#"{"ok":true,"service":"caracal-bench-upstream","items":[{"id":1,"name":"alpha"},{"id":2}]}"#;
/// The path of [`Stats`].
pub(crate) const STATS_PATH: &str = "/__bench/stats";
/// How long a restarted upstream keeps trying to bind its old port.
const BIND_RETRY: Duration = Duration::from_secs(5);

/// What this process served: one per process (the upstream serves one address).
static SERVED: AtomicU64 = AtomicU64::new(0);
/// Unix µs of the first counted request (0: none yet).
static FIRST_SERVED_US: AtomicU64 = AtomicU64::new(0);
/// Unix µs when the listener was bound.
static LISTENING_US: AtomicU64 = AtomicU64::new(0);

/// The answer of [`STATS_PATH`]. Times are this process's wall clock in Unix µs, so the harness
/// (same machine) can set them against its own kill and restart instants.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Stats {
    /// Requests served, excluding `/` and `/__bench/*`.
    pub(crate) served: u64,
    /// When the first counted request arrived.
    pub(crate) first_served_unix_us: Option<u64>,
    /// When the listener was bound.
    pub(crate) listening_unix_us: u64,
}

/// Now, in Unix µs.
pub(crate) fn unix_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// Serves on `addr` until killed.
pub(crate) async fn serve(addr: SocketAddr) -> anyhow::Result<()> {
    let listener = bind(addr).await?;
    LISTENING_US.store(unix_us(), Ordering::Relaxed);
    eprintln!("bench upstream listening on {addr}");
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        tokio::spawn(async move {
            // Errors here are clients going away mid-stream (S6 cuts, aborted downloads).
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service_fn(respond)).await;
        });
    }
}

/// Binds `addr`, retrying for a while: the failover drill restarts a killed upstream on its old port.
async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let deadline = tokio::time::Instant::now() + BIND_RETRY;
    loop {
        match tokio::net::TcpListener::bind(addr).await {
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            other => return other,
        }
    }
}

/// Whether a request for `path` is traffic (counted in [`Stats::served`]).
fn is_traffic(path: &str) -> bool {
    path != "/" && !path.starts_with("/__bench/")
}

fn count(path: &str) {
    if is_traffic(path) {
        SERVED.fetch_add(1, Ordering::Relaxed);
        if FIRST_SERVED_US.load(Ordering::Relaxed) == 0 {
            let _ = FIRST_SERVED_US.compare_exchange(0, unix_us(), Ordering::Relaxed, Ordering::Relaxed);
        }
    }
}

fn stats() -> Stats {
    let first = FIRST_SERVED_US.load(Ordering::Relaxed);
    Stats {
        served: SERVED.load(Ordering::Relaxed),
        first_served_unix_us: (first != 0).then_some(first),
        listening_unix_us: LISTENING_US.load(Ordering::Relaxed),
    }
}

async fn respond(req: Request<Incoming>) -> Result<Response<UpstreamBody>, Infallible> {
    let path = req.uri().path();
    count(path);
    let resp = if path == STATS_PATH {
        let body = serde_json::to_vec(&stats()).expect("stats serialize");
        Response::builder().header("content-type", "application/json").body(UpstreamBody::Small(Some(Bytes::from(body))))
    } else if let Some(n) = path.strip_prefix("/bytes/").and_then(|n| n.parse::<u64>().ok()) {
        Response::builder().header("content-type", "application/octet-stream").body(UpstreamBody::Repeat { remaining: n })
    } else if path == "/sse" {
        let (n, interval) = sse_params(req.uri().query().unwrap_or(""));
        Response::builder()
            .header("content-type", "text/event-stream")
            .header("cache-control", "no-cache")
            // nginx would otherwise buffer the stream.
            .header("x-accel-buffering", "no")
            .body(UpstreamBody::Events(sse(n, interval)))
    } else {
        Response::builder()
            .header("content-type", "application/json")
            .body(UpstreamBody::Small(Some(Bytes::from_static(SMALL_JSON.as_bytes()))))
    };
    Ok(resp.expect("static response parts are valid"))
}

/// `n` and `interval_ms` of an `/sse` query (defaults 1,000 and 0).
fn sse_params(query: &str) -> (u64, Duration) {
    let mut n = 1_000;
    let mut interval = 0;
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        match &*k {
            "n" => n = v.parse().unwrap_or(n),
            "interval_ms" => interval = v.parse().unwrap_or(interval),
            _ => {}
        }
    }
    (n, Duration::from_millis(interval))
}

/// Produces the events on a task, so a pause between events never blocks the connection.
fn sse(n: u64, interval: Duration) -> mpsc::Receiver<Bytes> {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        for i in 0..n {
            let event = format!("id: {i}\nevent: tick\ndata: {{\"seq\":{i},\"of\":{n}}}\n\n");
            if tx.send(Bytes::from(event)).await.is_err() {
                return; // client gone
            }
            if !interval.is_zero() {
                tokio::time::sleep(interval).await;
            }
        }
    });
    rx
}

/// The three response shapes.
pub(crate) enum UpstreamBody {
    Small(Option<Bytes>),
    Repeat { remaining: u64 },
    Events(mpsc::Receiver<Bytes>),
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Self::Small(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Self::Repeat { remaining } => {
                if *remaining == 0 {
                    return Poll::Ready(None);
                }
                let n = (*remaining).min(CHUNK_BYTES as u64) as usize;
                *remaining -= n as u64;
                Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&CHUNK[..n])))))
            }
            Self::Events(rx) => rx.poll_recv(cx).map(|e| e.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Small(b) => b.is_none(),
            Self::Repeat { remaining } => *remaining == 0,
            Self::Events(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Small(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Self::Repeat { remaining } => SizeHint::with_exact(*remaining),
            Self::Events(_) => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_query_defaults_and_overrides() {
        assert_eq!(sse_params(""), (1_000, Duration::ZERO));
        assert_eq!(sse_params("n=5&interval_ms=20"), (5, Duration::from_millis(20)));
        assert_eq!(sse_params("n=x&other=1"), (1_000, Duration::ZERO));
    }

    #[test]
    fn probes_and_harness_calls_are_not_traffic() {
        assert!(is_traffic("/v1/items/42"));
        assert!(is_traffic("/sse"));
        assert!(!is_traffic("/"), "readiness checks and health probes");
        assert!(!is_traffic(STATS_PATH));
    }

    #[test]
    fn stats_round_trip() {
        let s = Stats { served: 3, first_served_unix_us: Some(7), listening_unix_us: 5 };
        let back: Stats = serde_json::from_slice(&serde_json::to_vec(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }
}
