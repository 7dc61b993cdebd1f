//! A Redis stream consumer that never silently drops a message.
//!
//! Every consumer of an operational stream (`caracal.sessions.revoke`, …) behaves the same way
//! (DESIGN §5): it reads in a consumer group, checks each message's `_sig` against
//! `STREAMS_HMAC_KEY`, hands the batch to a [`Handler`], and acknowledges a message only once it
//! was handled. A message with a bad signature, or one the handler rejects outright, goes to
//! `<stream>.dead` with the reason; one the handler fails on is retried and dead-lettered after
//! [`MAX_FAILURES`] attempts. Pending messages of crashed consumers (and our own) are reclaimed
//! with `XAUTOCLAIM`. A dead letter is signed like any other message and acknowledged only after
//! the `XADD` succeeded, so a Redis failure leaves the message pending, never lost.
//!
//! Every [`BACKLOG_EVERY`] the consumer also reports what it has left behind (the runbook's
//! alerts, seed 003): the depth of `<stream>.dead`, and its lag in seconds — the age of the
//! oldest message its group has not finished (not yet delivered, or delivered and not
//! acknowledged), 0 when it is caught up.

use std::collections::HashMap;
use std::time::Duration;

use redis::streams::{StreamAutoClaimReply, StreamId, StreamInfoGroupsReply, StreamPendingReply, StreamRangeReply, StreamReadReply};

use crate::redis_primary::{Dedicated, Primary};
use crate::sig;

/// Failures before a message is dead-lettered.
pub const MAX_FAILURES: i64 = 5;
/// How long a message stays pending before another consumer may claim it.
const CLAIM_IDLE_MS: u64 = 30_000;
/// How often the backlog gauges are refreshed (three small commands each time).
const BACKLOG_EVERY: Duration = Duration::from_secs(5);

/// One message: its stream id and its fields as strings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub id: String,
    pub fields: HashMap<String, String>,
}

impl Message {
    /// A field, if present and non-empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str).filter(|v| !v.is_empty())
    }

    /// The millisecond timestamp encoded in the stream id.
    pub fn id_ms(&self) -> Option<i64> {
        self.id.split('-').next()?.parse().ok()
    }
}

/// Why a message could not be handled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// It can never succeed (malformed): dead-letter it now.
    Permanent(String),
    /// It may succeed later: leave it pending, retry, dead-letter after [`MAX_FAILURES`].
    Transient(String),
}

/// Counters a consumer reports (registered by the binary that owns it).
#[derive(Clone)]
pub struct ConsumerMetrics {
    /// Messages handled and acknowledged.
    pub handled: prometheus::IntCounter,
    /// Messages whose `_sig` did not verify.
    pub invalid_signatures: prometheus::IntCounter,
    /// Messages moved to `<stream>.dead`.
    pub dead_letters: prometheus::IntCounter,
    /// Pending messages reclaimed from idle consumers.
    pub reclaimed: prometheus::IntCounter,
    /// Read errors (Redis unavailable).
    pub read_errors: prometheus::IntCounter,
    /// Entries on `<stream>.dead`.
    pub dead_letter_backlog: prometheus::IntGauge,
    /// Age of the oldest message the group has not finished, seconds; 0 when caught up.
    pub lag_seconds: prometheus::Gauge,
}

/// What a consumer does with verified messages.
pub trait Handler: Send + Sync {
    /// Handles a batch; one result per message, in order.
    fn handle(&self, batch: &[Message]) -> Vec<Result<(), Failure>>;
    /// Called after every successful read (even an empty one): the stream is reachable.
    fn read_succeeded(&self) {}
}

/// The consumer's identity and inputs.
pub struct Consumer<H> {
    /// Asked for the primary at every (re)connect, so a consumer follows a failover.
    pub primary: Primary,
    pub stream: String,
    pub group: String,
    pub consumer: String,
    pub key: Vec<u8>,
    pub handler: H,
    pub metrics: ConsumerMetrics,
    /// `BLOCK` of each read; bounds how long a shutdown waits.
    pub block: Duration,
    /// Where a new group starts: `$` (only new messages) or `0` (the whole retained stream).
    pub start_id: &'static str,
}

impl<H: Handler> Consumer<H> {
    /// Runs until `shutdown` flips to true; reconnects with backoff on any Redis error.
    pub async fn run(&self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut backoff = Duration::from_millis(100);
        let stop = shutdown.clone();
        loop {
            let session = async {
                // A read blocks for `block`; the response timeout must outlast it.
                let mut conn = self.primary.dedicated(Duration::from_secs(2), self.block + Duration::from_secs(2)).await?;
                self.ensure_group(&mut conn).await?;
                self.reclaim(&mut conn).await?;
                let mut last_reclaim = tokio::time::Instant::now();
                let mut last_backlog: Option<tokio::time::Instant> = None;
                loop {
                    if last_backlog.is_none_or(|t| t.elapsed() >= BACKLOG_EVERY) {
                        self.backlog(&mut conn).await?;
                        last_backlog = Some(tokio::time::Instant::now());
                    }
                    self.read_once(&mut conn).await?;
                    if last_reclaim.elapsed() > Duration::from_millis(CLAIM_IDLE_MS) {
                        self.reclaim(&mut conn).await?;
                        last_reclaim = tokio::time::Instant::now();
                    }
                    if *stop.borrow() {
                        return Ok::<(), redis::RedisError>(());
                    }
                }
            };
            tokio::select! {
                r = session => match r {
                    Ok(()) => return,
                    Err(e) => {
                        self.metrics.read_errors.inc();
                        tracing::warn!(stream = %self.stream, error = %e, "stream consumer lost Redis; reconnecting");
                    }
                },
                _ = shutdown.changed() => return,
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = shutdown.changed() => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    /// Removes the group (a consumer whose group is per process calls this on a clean exit).
    pub async fn destroy_group(&self) -> redis::RedisResult<()> {
        let mut conn = self.primary.dedicated(Duration::from_secs(2), Duration::from_secs(2)).await?;
        let _: i64 = redis::cmd("XGROUP").arg("DESTROY").arg(&self.stream).arg(&self.group).query_async(&mut conn).await?;
        Ok(())
    }

    async fn ensure_group(&self, conn: &mut Dedicated) -> redis::RedisResult<()> {
        let created: redis::RedisResult<String> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&self.stream)
            .arg(&self.group)
            .arg(self.start_id)
            .arg("MKSTREAM")
            .query_async(conn)
            .await;
        match created {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Claims messages pending longer than the idle threshold (crashed consumers, our own
    /// earlier failures) and processes them.
    async fn reclaim(&self, conn: &mut Dedicated) -> redis::RedisResult<()> {
        let mut start = "0-0".to_owned();
        loop {
            let reply: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
                .arg(&self.stream)
                .arg(&self.group)
                .arg(&self.consumer)
                .arg(CLAIM_IDLE_MS)
                .arg(&start)
                .arg("COUNT")
                .arg(100)
                .query_async(conn)
                .await?;
            if !reply.claimed.is_empty() {
                self.metrics.reclaimed.inc_by(reply.claimed.len() as u64);
                self.process(conn, reply.claimed).await?;
            }
            if reply.next_stream_id == "0-0" {
                return Ok(());
            }
            start = reply.next_stream_id;
        }
    }

    /// Refreshes the backlog gauges (module docs).
    async fn backlog(&self, conn: &mut Dedicated) -> redis::RedisResult<()> {
        // The dead-letter stream is another key (another slot in a Redis Cluster): its own query.
        let dead: i64 = redis::cmd("XLEN").arg(format!("{}.dead", self.stream)).query_async(conn).await?;
        self.metrics.dead_letter_backlog.set(dead);
        let groups: StreamInfoGroupsReply = redis::cmd("XINFO").arg("GROUPS").arg(&self.stream).query_async(conn).await?;
        let Some(group) = groups.groups.iter().find(|g| g.name == self.group) else {
            return Ok(());
        };
        let mut oldest: Option<i64> = None;
        let mut note = |id: &str| {
            if let Some(ms) = id.split('-').next().and_then(|ms| ms.parse::<i64>().ok()) {
                oldest = Some(oldest.map_or(ms, |o| o.min(ms)));
            }
        };
        if group.pending > 0
            && let StreamPendingReply::Data(d) = redis::cmd("XPENDING").arg(&self.stream).arg(&self.group).query_async(conn).await?
        {
            note(&d.start_id);
        }
        // `lag` is unknown (None) after deletions inside the group's range: look instead.
        if group.lag != Some(0) {
            let next: StreamRangeReply = redis::cmd("XRANGE")
                .arg(&self.stream)
                .arg(format!("({}", group.last_delivered_id))
                .arg("+")
                .arg("COUNT")
                .arg(1)
                .query_async(conn)
                .await?;
            if let Some(first) = next.ids.first() {
                note(&first.id);
            }
        }
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        self.metrics.lag_seconds.set(oldest.map_or(0.0, |ms| (now - ms).max(0) as f64 / 1000.0));
        Ok(())
    }

    async fn read_once(&self, conn: &mut Dedicated) -> redis::RedisResult<()> {
        let reply: Option<StreamReadReply> = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(&self.group)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(100)
            .arg("BLOCK")
            .arg(self.block.as_millis() as u64)
            .arg("STREAMS")
            .arg(&self.stream)
            .arg(">")
            .query_async(conn)
            .await?;
        self.handler.read_succeeded();
        let entries: Vec<StreamId> = reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids).collect();
        if entries.is_empty() { Ok(()) } else { self.process(conn, entries).await }
    }

    async fn process(&self, conn: &mut Dedicated, entries: Vec<StreamId>) -> redis::RedisResult<()> {
        let mut verified = Vec::with_capacity(entries.len());
        for entry in entries {
            let msg = to_message(entry);
            let pairs: Vec<(&str, &str)> = msg.fields.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            if sig::verify_stream_signature(&self.key, &self.stream, &pairs) {
                verified.push(msg);
            } else {
                self.metrics.invalid_signatures.inc();
                tracing::warn!(stream = %self.stream, id = %msg.id, "stream message with an invalid _sig; dead-lettering");
                self.dead_letter(conn, &msg, "invalid_signature").await?;
            }
        }
        if verified.is_empty() {
            return Ok(());
        }
        let results = self.handler.handle(&verified);
        for (msg, result) in verified.iter().zip(results) {
            match result {
                Ok(()) => {
                    self.ack(conn, &msg.id).await?;
                    self.metrics.handled.inc();
                }
                Err(Failure::Permanent(reason)) => self.dead_letter(conn, msg, &reason).await?,
                Err(Failure::Transient(reason)) => {
                    let key = format!("stream-failure:{}:{}:{}", self.stream, self.group, msg.id);
                    let (n,): (i64,) = redis::pipe().atomic().incr(&key, 1).expire(&key, 86_400).ignore().query_async(conn).await?;
                    tracing::warn!(stream = %self.stream, id = %msg.id, attempt = n, reason, "stream message failed");
                    if n >= MAX_FAILURES {
                        self.dead_letter(conn, msg, &reason).await?;
                        let _: i64 = redis::cmd("DEL").arg(&key).query_async(conn).await?;
                    }
                }
            }
        }
        Ok(())
    }

    async fn ack(&self, conn: &mut Dedicated, id: &str) -> redis::RedisResult<()> {
        let _: i64 = redis::cmd("XACK").arg(&self.stream).arg(&self.group).arg(id).query_async(conn).await?;
        Ok(())
    }

    /// Copies the message to `<stream>.dead` (signed), then acknowledges it.
    async fn dead_letter(&self, conn: &mut Dedicated, msg: &Message, reason: &str) -> redis::RedisResult<()> {
        let dead = format!("{}.dead", self.stream);
        let values = serde_json::to_string(&msg.fields).unwrap_or_default();
        let fields = [("original_id", msg.id.as_str()), ("error", reason), ("group", self.group.as_str()), ("values", values.as_str())];
        let signature = sig::stream_signature(&self.key, &dead, fields);
        let mut cmd = redis::cmd("XADD");
        cmd.arg(&dead).arg("MAXLEN").arg("~").arg(100_000).arg("*");
        for (k, v) in fields {
            cmd.arg(k).arg(v);
        }
        cmd.arg("_sig").arg(signature);
        let _: String = self.primary.durability().write(conn, &cmd).await?;
        self.ack(conn, &msg.id).await?;
        self.metrics.dead_letters.inc();
        Ok(())
    }
}

fn to_message(entry: StreamId) -> Message {
    let fields = entry.map.into_iter().filter_map(|(k, v)| redis::from_redis_value::<String>(v).ok().map(|v| (k, v))).collect();
    Message { id: entry.id, fields }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_helpers() {
        let m = Message { id: "1700000000123-4".into(), fields: HashMap::from([("a".into(), "x".into()), ("e".into(), String::new())]) };
        assert_eq!(m.get("a"), Some("x"));
        assert_eq!(m.get("e"), None, "empty counts as absent");
        assert_eq!(m.id_ms(), Some(1_700_000_000_123));
    }
}
