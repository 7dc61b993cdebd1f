//! The consumer of `caracal.audit.events` (group `audit-ingestor`).
//!
//! Per frame: no `data` ⇒ dead letter `missing_data_field`; `sig` not HMAC(AUDIT_HMAC_KEY, data)
//! ⇒ `hmac_verify_failed`; data the ledger cannot file ⇒ the [`Rejection`] reason; the same id
//! filed before with other content ⇒ `tamper_on_replay`. Everything else is filed in one
//! transaction per batch and acknowledged only after the commit (a redelivery is a benign
//! duplicate). A dead letter is acknowledged only after its `XADD` succeeded.
//!
//! When Postgres is unavailable the batch is retried with backoff until it commits: audit events
//! never go to the dead-letter stream for an outage, and nothing newer is read meanwhile. On
//! start the consumer first re-reads its own pending entries (a crash between commit and ack);
//! entries of consumers that died are claimed after `claim_idle`. At most every [`TRIM_EVERY`]
//! the consumer trims what every group acknowledged ([`crate::trim`]); producers never trim.
//!
//! [`Rejection`]: crate::canonical::Rejection

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use caracal_shared::audit::Frame;
use caracal_shared::redis_primary::Dedicated;
use caracal_shared::sig;
use redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};
use tokio::sync::watch;

use crate::canonical::Entry;
use crate::metrics::AuditMetrics;
use crate::status::Status;
use crate::store::{Ledger, Outcome, Pending};

/// Consumer group of every ledger instance.
pub const GROUP: &str = "audit-ingestor";
/// How often the lag gauges are refreshed.
const STATS_EVERY: Duration = Duration::from_secs(5);
/// Least time between two trims of the stream (each costs `XINFO GROUPS`, `XPENDING`, `XTRIM`).
pub const TRIM_EVERY: Duration = Duration::from_secs(1);

/// Where and how to consume.
#[derive(Clone, Debug)]
pub struct IngestConfig {
    pub stream: String,
    pub consumer: String,
    /// Entries per read (and per transaction).
    pub batch: usize,
    /// Pending entries idle this long are claimed from the consumer that holds them.
    pub claim_idle: Duration,
    /// `BLOCK` of a read; bounds how long a shutdown waits.
    pub block: Duration,
    /// After a read that did not fill a batch, wait this long before the next one, so that
    /// under a steady trickle the ledger commits a few large batches rather than many small ones.
    pub linger: Duration,
}

impl IngestConfig {
    /// Dead letters go here.
    pub fn dlq(&self) -> String {
        format!("{}.dlq", self.stream)
    }
}

/// The consumer.
pub struct Ingestor {
    pub cfg: IngestConfig,
    /// Asked for the primary at every (re)connect, so the ledger follows a failover.
    pub primary: caracal_shared::redis_primary::Primary,
    pub ledger: Ledger,
    /// Verifies producers' `sig`.
    pub frame_key: Vec<u8>,
    /// Signs dead letters (`_sig`, like every operational message).
    pub streams_key: Vec<u8>,
    pub metrics: Arc<AuditMetrics>,
    pub status: Arc<Status>,
}

/// A read entry, classified.
struct Item {
    stream_id: String,
    fields: HashMap<String, String>,
    verdict: Result<Pending, String>,
}

impl Ingestor {
    /// Runs until `shutdown` flips; reconnects with backoff on Redis errors.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let r = tokio::select! {
                r = self.session(shutdown.clone()) => r,
                _ = shutdown.changed() => return,
            };
            match r {
                Ok(()) => return,
                Err(e) => {
                    self.metrics.read_errors.inc();
                    self.status.set_ingest_healthy(false);
                    tracing::warn!(error = %e, "audit consumer lost Redis; reconnecting");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = shutdown.changed() => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    async fn session(&self, stop: watch::Receiver<bool>) -> redis::RedisResult<()> {
        // A read blocks for `block`; the response timeout must outlast it.
        let mut conn = self.primary.dedicated(Duration::from_secs(2), self.cfg.block + Duration::from_secs(2)).await?;
        let created: redis::RedisResult<String> =
            redis::cmd("XGROUP").arg("CREATE").arg(&self.cfg.stream).arg(GROUP).arg("0").arg("MKSTREAM").query_async(&mut conn).await;
        match created {
            Err(e) if e.code() != Some("BUSYGROUP") => return Err(e),
            _ => {}
        }
        // Our own pending entries first: read (maybe filed) before a crash, never acknowledged.
        while self.read(&mut conn, "0", &stop).await? > 0 {}
        self.status.set_ingest_healthy(true);
        let mut last_claim = Instant::now();
        let mut last_stats = Instant::now() - STATS_EVERY;
        let mut last_trim = Instant::now() - TRIM_EVERY;
        while !*stop.borrow() {
            if last_trim.elapsed() >= TRIM_EVERY {
                let n = crate::trim::trim_acknowledged(&mut conn, &self.cfg.stream).await?;
                self.metrics.trimmed.inc_by(n);
                last_trim = Instant::now();
            }
            if last_stats.elapsed() >= STATS_EVERY {
                self.stats(&mut conn).await?;
                last_stats = Instant::now();
            }
            let n = self.read(&mut conn, ">", &stop).await?;
            if n > 0 && n < self.cfg.batch {
                tokio::time::sleep(self.cfg.linger).await;
            }
            if last_claim.elapsed() >= self.cfg.claim_idle {
                self.reclaim(&mut conn, &stop).await?;
                last_claim = Instant::now();
            }
        }
        Ok(())
    }

    /// Refreshes the lag, pending, stream-length and dead-letter gauges.
    async fn stats(&self, conn: &mut Dedicated) -> redis::RedisResult<()> {
        // The dead-letter stream is another key (another slot in a Redis Cluster): its own query.
        let (groups, len): (redis::streams::StreamInfoGroupsReply, i64) =
            redis::pipe().cmd("XINFO").arg("GROUPS").arg(&self.cfg.stream).cmd("XLEN").arg(&self.cfg.stream).query_async(conn).await?;
        let dlq: i64 = redis::cmd("XLEN").arg(self.cfg.dlq()).query_async(conn).await?;
        self.metrics.stream_length.set(len);
        if let Some(g) = groups.groups.iter().find(|g| g.name == GROUP) {
            self.metrics.consumer_lag.set(g.lag.unwrap_or(0) as i64);
            self.metrics.consumer_pending.set(g.pending as i64);
        }
        self.metrics.dead_letter_backlog.set(dlq);
        Ok(())
    }

    /// One `XREADGROUP` from `from` (`>` new, `0` our pending); returns how many were read.
    async fn read(&self, conn: &mut Dedicated, from: &str, stop: &watch::Receiver<bool>) -> redis::RedisResult<usize> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP").arg(GROUP).arg(&self.cfg.consumer).arg("COUNT").arg(self.cfg.batch);
        if from == ">" {
            cmd.arg("BLOCK").arg(self.cfg.block.as_millis() as u64);
        }
        let reply: Option<StreamReadReply> = cmd.arg("STREAMS").arg(&self.cfg.stream).arg(from).query_async(conn).await?;
        let entries: Vec<StreamId> = reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids).collect();
        let n = entries.len();
        if n > 0 {
            self.process(conn, entries, stop).await?;
        }
        Ok(n)
    }

    /// Claims entries idle longer than `claim_idle` from any consumer and files them.
    async fn reclaim(&self, conn: &mut Dedicated, stop: &watch::Receiver<bool>) -> redis::RedisResult<()> {
        let mut start = "0-0".to_owned();
        loop {
            let reply: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
                .arg(&self.cfg.stream)
                .arg(GROUP)
                .arg(&self.cfg.consumer)
                .arg(self.cfg.claim_idle.as_millis() as u64)
                .arg(&start)
                .arg("COUNT")
                .arg(self.cfg.batch)
                .query_async(conn)
                .await?;
            if !reply.claimed.is_empty() {
                self.metrics.reclaimed.inc_by(reply.claimed.len() as u64);
                self.process(conn, reply.claimed, stop).await?;
            }
            if reply.next_stream_id == "0-0" {
                return Ok(());
            }
            start = reply.next_stream_id;
        }
    }

    async fn process(&self, conn: &mut Dedicated, entries: Vec<StreamId>, stop: &watch::Receiver<bool>) -> redis::RedisResult<()> {
        let started = Instant::now();
        let now = chrono::Utc::now();
        let items: Vec<Item> = entries.into_iter().map(|e| self.classify(e, now)).collect();
        let pending: Vec<Pending> = items.iter().filter_map(|i| i.verdict.as_ref().ok().cloned()).collect();
        let Some(outcomes) = self.file(&pending, stop).await else { return Ok(()) };
        let mut outcomes = outcomes.into_iter();
        let mut acks = Vec::with_capacity(items.len());
        for item in &items {
            let reason = match &item.verdict {
                Err(reason) => Some(reason.clone()),
                Ok(_) => match outcomes.next().expect("one outcome per filed event") {
                    Ok(Outcome::Inserted { .. }) => {
                        self.metrics.ingested.inc();
                        None
                    }
                    Ok(Outcome::Duplicate) => {
                        self.metrics.duplicates.inc();
                        None
                    }
                    Ok(Outcome::Conflict { stored, incoming }) => {
                        tracing::error!(event_id = %item.fields.get("id").map_or("", String::as_str), stored, incoming,
                            "audit event replayed with different content; dead-lettered");
                        Some(format!("tamper_on_replay:stored={stored},incoming={incoming}"))
                    }
                    Err(permanent) => Some(permanent),
                },
            };
            if let Some(reason) = reason {
                self.dead_letter(conn, item, &reason).await?;
            }
            acks.push(item.stream_id.as_str());
        }
        let _: i64 = redis::cmd("XACK").arg(&self.cfg.stream).arg(GROUP).arg(&acks).query_async(conn).await?;
        self.metrics.batch_seconds.observe(started.elapsed().as_secs_f64());
        Ok(())
    }

    fn classify(&self, entry: StreamId, now: chrono::DateTime<chrono::Utc>) -> Item {
        let fields: HashMap<String, String> =
            entry.map.into_iter().filter_map(|(k, v)| redis::from_redis_value::<String>(v).ok().map(|v| (k, v))).collect();
        let verdict = match fields.get("data").filter(|d| !d.is_empty()) {
            None => Err("missing_data_field".to_owned()),
            Some(data) => {
                let sig = fields.get("sig").map(String::as_str);
                if !Frame::verify_parts(&self.frame_key, data, sig) {
                    self.metrics.hmac_failures.inc();
                    Err("hmac_verify_failed".to_owned())
                } else {
                    let producer_sig = sig.map(str::to_owned);
                    Entry::from_data(data, now).map(|entry| Pending { entry, producer_sig }).map_err(|r| r.to_string())
                }
            }
        };
        Item { stream_id: entry.id, fields, verdict }
    }

    /// Files `pending`: one outcome per event, `Err(reason)` for an event Postgres refuses outright.
    /// `None` when shutting down before the batch could be committed (it stays pending).
    async fn file(&self, pending: &[Pending], stop: &watch::Receiver<bool>) -> Option<Vec<Result<Outcome, String>>> {
        if pending.is_empty() {
            return Some(Vec::new());
        }
        let mut backoff = Duration::from_millis(50);
        loop {
            match self.ledger.append(pending).await {
                Ok(outcomes) => {
                    self.status.set_store_failing(false);
                    return Some(outcomes.into_iter().map(Ok).collect());
                }
                Err(e) if e.transient => {
                    self.metrics.store_retries.inc();
                    self.status.set_store_failing(true);
                    tracing::warn!(error = %e, events = pending.len(), "audit batch not filed; retrying");
                }
                // A data error: file one by one so only the offending event is dead-lettered.
                Err(e) if pending.len() > 1 => {
                    tracing::warn!(error = %e, "audit batch refused; filing its events one by one");
                    let mut out = Vec::with_capacity(pending.len());
                    for p in pending {
                        out.push(Box::pin(self.file(std::slice::from_ref(p), stop)).await?.pop().expect("one outcome"));
                    }
                    return Some(out);
                }
                Err(e) => return Some(vec![Err(format!("pg_permanent_error:{e}"))]),
            }
            if *stop.borrow() {
                return None;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// Copies the entry to the dead-letter stream, signed, with the reason.
    async fn dead_letter(&self, conn: &mut Dedicated, item: &Item, reason: &str) -> redis::RedisResult<()> {
        let dlq = self.cfg.dlq();
        let received = chrono::Utc::now().timestamp_millis().to_string();
        let mut fields: Vec<(String, String)> =
            vec![("reason".into(), reason.to_owned()), ("src_stream_id".into(), item.stream_id.clone()), ("received_at".into(), received)];
        let mut originals: Vec<_> = item.fields.iter().map(|(k, v)| (format!("src_{k}"), v.clone())).collect();
        originals.sort();
        fields.extend(originals);
        let signature = sig::stream_signature(&self.streams_key, &dlq, fields.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let mut cmd = redis::cmd("XADD");
        cmd.arg(&dlq).arg("MAXLEN").arg("~").arg(1_000_000).arg("*");
        for (k, v) in &fields {
            cmd.arg(k).arg(v);
        }
        cmd.arg("_sig").arg(signature);
        let _: String = self.primary.durability().write(conn, &cmd).await?;
        let class = reason.split(':').next().unwrap_or(reason);
        self.metrics.dead_letters.with_label_values(&[class]).inc();
        tracing::warn!(stream_id = %item.stream_id, reason, "audit frame dead-lettered");
        Ok(())
    }
}
