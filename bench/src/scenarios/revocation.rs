//! S6: how fast a revocation takes effect, measured from the moment the revoke call returns.
//!
//! (a) a request with a gateway mandate minted *before* the revocation is sent right away; the time
//! until its denial arrives is the figure. (b) an SSE stream opened through the gateway before the
//! revocation is watched for `cut_wait`; if the first trials see no cut, later trials skip (b) so a
//! gateway without stream cutting does not stretch the run by trials × wait. (c) at the same time, a
//! second control plane (another STS instance, which hears of the revocation only through
//! `caracal.sessions.revoke`) is asked to mint from the revoked session until it refuses.

use std::collections::BTreeMap;
use std::time::Duration;

use http::header::AUTHORIZATION;
use http::{HeaderValue, Method};
use http_body_util::{BodyExt, Full};
use serde::Serialize;
use tokio::time::Instant;

use crate::client::Conn;
use crate::hist::quantile;
use crate::load::workload::{RESOURCE_HEADER, bearer};
use crate::run::Plan;
use crate::scenarios::Systems;
use crate::scenarios::rate::PATH;
use crate::scenarios::streaming::EventCounter;
use crate::stack::mint::{MintError, Minter};
use crate::stack::sid_of;

/// Mandates minted before each revocation for (a): the first denial usually comes on the first.
const PREMINTED: usize = 3;
/// Trials that watch a stream before (b) is given up as "not cut".
const CUT_PROBES: usize = 3;
/// A stream that outlives any wait: 20 ms between events.
const LONG_SSE: &str = "/sse?n=1000000&interval_ms=20";
/// How long (c) keeps asking before it counts the instance as never refusing.
pub(crate) const REFUSAL_WAIT: Duration = Duration::from_secs(5);

/// What S6 measured.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Revocation {
    pub(crate) trials: usize,
    /// (a) revoke returned → denial received, ms.
    pub(crate) denied_p50_ms: Option<f64>,
    pub(crate) denied_p99_ms: Option<f64>,
    pub(crate) denied_max_ms: Option<f64>,
    /// Trials where every pre-minted mandate was still let through.
    pub(crate) not_denied: usize,
    /// Statuses of the denials.
    pub(crate) denial_statuses: BTreeMap<u16, u64>,
    /// (b) streams watched, and how many were cut within `cut_wait_s`.
    pub(crate) streams_watched: usize,
    pub(crate) streams_cut: usize,
    pub(crate) cut_wait_s: f64,
    pub(crate) cut_p50_ms: Option<f64>,
    pub(crate) cut_p99_ms: Option<f64>,
    /// (c) revoke returned → the other STS instance refuses to mint, ms.
    pub(crate) other_sts_p50_ms: Option<f64>,
    pub(crate) other_sts_p99_ms: Option<f64>,
    pub(crate) other_sts_max_ms: Option<f64>,
    /// Trials where the other instance still minted after [`REFUSAL_WAIT`].
    pub(crate) other_sts_not_refused: usize,
    pub(crate) failures: Vec<String>,
}

/// Runs the trials.
pub(crate) async fn run(sys: &Systems, plan: &Plan) -> anyhow::Result<Revocation> {
    let mut out = Revocation { trials: plan.revocation_trials, cut_wait_s: plan.cut_wait.as_secs_f64(), ..Default::default() };
    let (mut denied, mut cut, mut refused) = (Vec::new(), Vec::new(), Vec::new());
    let mut sts = Conn::new(sys.caracal.cp);
    let mut sts2 = Conn::new(sys.caracal.cp2);
    let mut gw = Conn::new(sys.caracal.gw);
    let resource = HeaderValue::from_str(&sys.demo.resource)?;
    for i in 0..plan.revocation_trials {
        let session = Minter::session(sys.caracal.cp, &sys.demo).mint(&mut sts).await?;
        let minter = Minter::gateway(sys.caracal.cp, &sys.demo, &session);
        let other = Minter::gateway(sys.caracal.cp2, &sys.demo, &session);
        // The other instance has verified the session before the revocation (its memo is warm).
        other.mint(&mut sts2).await?;
        let mut mandates = Vec::with_capacity(PREMINTED);
        for _ in 0..PREMINTED {
            mandates.push(minter.mint(&mut sts).await?);
        }
        let watch = i < CUT_PROBES || !cut.is_empty();
        let stream = if watch { Some(open_stream(sys, &minter, &mut sts, &resource).await?) } else { None };

        sys.caracal.revoke(&sys.demo, &sid_of(&session)?).await?;
        let t0 = Instant::now();
        let (denial, refusal) = tokio::join!(until_denied(&mut gw, &mandates, &resource, t0), until_refused(&other, &mut sts2, t0));
        let denial = denial.unwrap_or_else(|e| {
            out.failures.push(format!("trial {i}: {e}"));
            None
        });
        match refusal {
            Ok(Some(d)) => refused.push(d.as_secs_f64() * 1e3),
            Ok(None) => out.other_sts_not_refused += 1,
            Err(e) => out.failures.push(format!("trial {i}: other STS: {e}")),
        }
        match denial {
            Some((d, status)) => {
                denied.push(d.as_secs_f64() * 1e3);
                *out.denial_statuses.entry(status).or_default() += 1;
            }
            None => out.not_denied += 1,
        }
        if let Some(task) = stream {
            out.streams_watched += 1;
            match tokio::time::timeout_at(t0 + plan.cut_wait, task).await {
                Ok(Ok(end)) if end >= t0 => cut.push((end - t0).as_secs_f64() * 1e3),
                Ok(Ok(_)) => out.failures.push(format!("trial {i}: the stream ended before the revocation")),
                Ok(Err(e)) => out.failures.push(format!("trial {i}: stream task: {e}")),
                Err(_) => {} // not cut within the wait; dropping the handle leaves the task to end with the connection
            }
        }
    }
    denied.sort_by(f64::total_cmp);
    cut.sort_by(f64::total_cmp);
    out.denied_p50_ms = quantile(&denied, 0.5);
    out.denied_p99_ms = quantile(&denied, 0.99);
    out.denied_max_ms = denied.last().copied();
    out.streams_cut = cut.len();
    out.cut_p50_ms = quantile(&cut, 0.5);
    out.cut_p99_ms = quantile(&cut, 0.99);
    refused.sort_by(f64::total_cmp);
    out.other_sts_p50_ms = quantile(&refused, 0.5);
    out.other_sts_p99_ms = quantile(&refused, 0.99);
    out.other_sts_max_ms = refused.last().copied();
    eprintln!(
        "bench: S6 {} trials: denied p50 {:.2} ms, p99 {:.2} ms; streams cut {}/{} within {:?}; other STS refuses p50 {:.2} ms, p99 {:.2} ms",
        out.trials,
        out.denied_p50_ms.unwrap_or(f64::NAN),
        out.denied_p99_ms.unwrap_or(f64::NAN),
        out.streams_cut,
        out.streams_watched,
        plan.cut_wait,
        out.other_sts_p50_ms.unwrap_or(f64::NAN),
        out.other_sts_p99_ms.unwrap_or(f64::NAN),
    );
    Ok(out)
}

/// Sends `mandates` through the gateway one after another until one is refused: when (from `t0`)
/// and with which status; `None` when every one passed.
pub(crate) async fn until_denied(
    gw: &mut Conn,
    mandates: &[String],
    resource: &HeaderValue,
    t0: Instant,
) -> anyhow::Result<Option<(Duration, u16)>> {
    for m in mandates {
        match through_gateway(gw, m, resource).await? {
            s if s.is_success() => continue,
            s => return Ok(Some((t0.elapsed(), s.as_u16()))),
        }
    }
    Ok(None)
}

/// One S3 request with `mandate` for `resource` over `gw`: the gateway's status.
pub(crate) async fn through_gateway(gw: &mut Conn, mandate: &str, resource: &HeaderValue) -> anyhow::Result<http::StatusCode> {
    let req = gw
        .request(Method::GET, PATH)
        .header(AUTHORIZATION, bearer(mandate))
        .header(RESOURCE_HEADER, resource.clone())
        .body(Full::default())?;
    Ok(gw.drain(req).await?)
}

/// Mints at `minter`'s STS until it refuses (401: session revoked); `None` if it still mints after
/// [`REFUSAL_WAIT`]. Any other refusal is an error of the run, not a measurement.
async fn until_refused(minter: &Minter, conn: &mut Conn, t0: Instant) -> anyhow::Result<Option<Duration>> {
    loop {
        match minter.mint(conn).await {
            Ok(_) => {}
            Err(MintError::Refused(401, _)) => return Ok(Some(t0.elapsed())),
            Err(e) => return Err(e.into()),
        }
        if t0.elapsed() > REFUSAL_WAIT {
            return Ok(None);
        }
        // Leave the cores to the revocation being measured.
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

/// Opens a long SSE stream through the gateway, waits for its first event, then reads it on a task
/// that returns when the stream ends (cut, reset or finished). Aborting the task drops the connection.
async fn open_stream(sys: &Systems, minter: &Minter, sts: &mut Conn, resource: &HeaderValue) -> anyhow::Result<StreamTask> {
    let mandate = minter.mint(sts).await?;
    let mut conn = Conn::new(sys.caracal.gw);
    let req = conn
        .request(Method::GET, LONG_SSE)
        .header(AUTHORIZATION, bearer(&mandate))
        .header(RESOURCE_HEADER, resource.clone())
        .body(Full::default())?;
    let resp = conn.send(req).await?;
    anyhow::ensure!(resp.status().is_success(), "S6 stream refused with {}", resp.status());
    let mut body = resp.into_body();
    let mut counter = EventCounter::default();
    while counter.events == 0 {
        match tokio::time::timeout(Duration::from_secs(5), body.frame()).await {
            Ok(Some(Ok(f))) => counter.feed(f.data_ref().map_or(&[][..], |d| &d[..])),
            _ => anyhow::bail!("S6 stream gave no first event"),
        }
    }
    Ok(StreamTask(tokio::spawn(async move {
        let _conn = conn; // the connection lives as long as the reader
        while let Some(Ok(_)) = body.frame().await {}
        Instant::now()
    })))
}

/// A stream being read; resolves to when it ended, aborts (closing the stream) on drop.
struct StreamTask(tokio::task::JoinHandle<Instant>);

impl Drop for StreamTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl std::future::Future for StreamTask {
    type Output = Result<Instant, tokio::task::JoinError>;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx)
    }
}
