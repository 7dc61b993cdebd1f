//! Ledger writes and the reads the sweeps and the API share.
//!
//! Writes go through a pool whose connections run as `caracal_audit_writer` (INSERT and SELECT
//! only). A batch is one transaction: each zone's head is locked with a transaction-scoped
//! advisory lock (zones in sorted order, so two writers never deadlock), new rows get the next
//! `seq` values and their links, and `(zone_id, seq)` being the primary key means a fork is
//! refused by the database even if the lock were bypassed.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres, Transaction};

use crate::canonical::Entry;
use crate::chain::{self, GENESIS, StoredRow};

/// Role every ledger write runs as.
pub const WRITER_ROLE: &str = "caracal_audit_writer";

/// Columns of [`StoredRow`], in its order.
pub const ROW_COLUMNS: &str =
    "zone_id, seq, id, event_type, decision, request_id, session_id, occurred_at, ingested_at, event, content_sha256, chain_hmac";

/// An event to file, with the producer's signature kept as evidence of where it came from.
#[derive(Clone, Debug)]
pub struct Pending {
    pub entry: Entry,
    pub producer_sig: Option<String>,
}

/// What became of one event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Inserted {
        seq: i64,
    },
    /// Already filed with the same content (a redelivery).
    Duplicate,
    /// Already filed with *different* content under the same id.
    Conflict {
        stored: String,
        incoming: String,
    },
}

/// A store failure: `transient` ones are retried with the same batch, the others isolate the
/// event that caused them.
#[derive(Debug, thiserror::Error)]
#[error("{source}")]
pub struct StoreError {
    pub transient: bool,
    #[source]
    pub source: sqlx::Error,
}

impl From<sqlx::Error> for StoreError {
    fn from(source: sqlx::Error) -> Self {
        Self { transient: is_transient(&source), source }
    }
}

/// Connection loss, shutdown, serialization and resource errors may succeed later; a data error
/// (an event Postgres cannot hold) never will.
fn is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            // 23505: another writer filed the same id first; the retry sees it as a duplicate.
            matches!(&*code, "40001" | "40P01" | "23505" | "55P03") || ["08", "53", "57"].iter().any(|c| code.starts_with(c))
        }
        _ => true,
    }
}

/// The ledger's handle.
#[derive(Clone)]
pub struct Ledger {
    writer: PgPool,
    key: Arc<[u8]>,
}

impl Ledger {
    /// A small pool for ledger writes, every connection switched to [`WRITER_ROLE`].
    pub async fn connect(options: PgConnectOptions, chain_key: &[u8]) -> Result<Self, sqlx::Error> {
        let writer = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(5))
            .after_connect(|conn, _| {
                Box::pin(async move {
                    sqlx::query(sqlx::AssertSqlSafe(format!("SET ROLE {WRITER_ROLE}"))).execute(&mut *conn).await?;
                    // Every query of this pool has an index path (ids, `(zone_id, seq)`). While the table
                    // is young its statistics lag its growth (autoanalyze runs once a minute), and the
                    // planner then read all of `audit_events` for each batch's duplicate probe: 30 ms a
                    // batch at 100,000 rows (pg_stat_statements, bench S3), most of a core at 1,000
                    // governed req/s. Off, a sequential scan is only taken where no index serves.
                    sqlx::query("SET enable_seqscan = off").execute(&mut *conn).await?;
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        Ok(Self { writer, key: chain_key.into() })
    }

    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// The writer pool (sweeps write checkpoints through it).
    pub fn writer(&self) -> &PgPool {
        &self.writer
    }

    /// Files a batch in one transaction; one outcome per event, in order.
    pub async fn append(&self, batch: &[Pending]) -> Result<Vec<Outcome>, StoreError> {
        let mut outcomes: Vec<Option<Outcome>> = vec![None; batch.len()];
        let mut tx = self.writer.begin().await?;
        let ids: Vec<&str> = batch.iter().map(|p| p.entry.id.as_str()).collect();
        let stored: HashMap<String, Vec<u8>> = sqlx::query_as("SELECT id, content_sha256 FROM audit_events WHERE id = ANY($1)")
            .bind(&ids)
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .collect();
        let hashes: Vec<[u8; 32]> = batch.iter().map(|p| p.entry.content_sha256()).collect();
        // Zone → indexes of the events it files; a repeated id within the batch counts once.
        let mut zones: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        let mut first: HashMap<&str, usize> = HashMap::new();
        for (i, p) in batch.iter().enumerate() {
            let incoming = hashes[i];
            let earlier = stored.get(&p.entry.id).map(Vec::as_slice).or_else(|| first.get(p.entry.id.as_str()).map(|&j| &hashes[j][..]));
            match earlier {
                Some(s) if s == incoming => outcomes[i] = Some(Outcome::Duplicate),
                Some(s) => outcomes[i] = Some(Outcome::Conflict { stored: hex::encode(s), incoming: hex::encode(incoming) }),
                None => {
                    first.insert(&p.entry.id, i);
                    zones.entry(p.entry.zone_id.as_str()).or_default().push(i);
                }
            }
        }
        for (zone, members) in zones {
            let (mut seq, mut prev) = lock_head(&mut tx, zone).await?;
            let mut cols = Columns::default();
            for i in members {
                seq += 1;
                let content = hashes[i];
                prev = chain::link(&self.key, zone, seq, &content, &prev);
                cols.push(&batch[i], seq, content, prev);
                outcomes[i] = Some(Outcome::Inserted { seq });
            }
            cols.insert(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(outcomes.into_iter().map(|o| o.expect("every event has an outcome")).collect())
    }
}

/// Serializes writers of `zone` until the transaction ends; returns its head `(seq, chain_hmac)`.
pub async fn lock_head(tx: &mut Transaction<'_, Postgres>, zone: &str) -> Result<(i64, [u8; 32]), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('caracal.audit:' || $1, 0))").bind(zone).execute(&mut **tx).await?;
    head(tx, zone).await
}

/// A zone's last row, else its retention anchor, else the genesis position.
pub async fn head(db: &mut sqlx::PgConnection, zone: &str) -> Result<(i64, [u8; 32]), sqlx::Error> {
    let last: Option<(i64, Vec<u8>)> =
        sqlx::query_as("SELECT seq, chain_hmac FROM audit_events WHERE zone_id = $1 ORDER BY seq DESC LIMIT 1")
            .bind(zone)
            .fetch_optional(&mut *db)
            .await?;
    let last = match last {
        Some(l) => Some(l),
        None => {
            sqlx::query_as("SELECT seq, chain_hmac FROM audit_anchors WHERE zone_id = $1 AND kind = 'retention' ORDER BY seq DESC LIMIT 1")
                .bind(zone)
                .fetch_optional(&mut *db)
                .await?
        }
    };
    Ok(last.map_or((0, GENESIS), |(s, h)| (s, h.try_into().unwrap_or(GENESIS))))
}

#[derive(Default)]
struct Columns {
    zone: Vec<String>,
    seq: Vec<i64>,
    id: Vec<String>,
    event_type: Vec<String>,
    decision: Vec<String>,
    request_id: Vec<String>,
    session_id: Vec<Option<String>>,
    occurred_at: Vec<chrono::DateTime<chrono::Utc>>,
    event: Vec<String>,
    content: Vec<Vec<u8>>,
    link: Vec<Vec<u8>>,
    sig: Vec<Option<String>>,
}

impl Columns {
    fn push(&mut self, p: &Pending, seq: i64, content: [u8; 32], link: [u8; 32]) {
        let e = &p.entry;
        self.zone.push(e.zone_id.clone());
        self.seq.push(seq);
        self.id.push(e.id.clone());
        self.event_type.push(e.event_type.clone());
        self.decision.push(e.decision.clone());
        self.request_id.push(e.request_id.clone());
        self.session_id.push(e.session_id.clone());
        self.occurred_at.push(e.occurred_at);
        self.event.push(e.canonical.clone());
        self.content.push(content.to_vec());
        self.link.push(link.to_vec());
        self.sig.push(p.producer_sig.clone());
    }

    /// One statement for the whole zone's share of the batch.
    async fn insert(self, tx: &mut Transaction<'_, Postgres>) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO audit_events (zone_id, seq, id, event_type, decision, request_id, session_id, occurred_at, event, \
             content_sha256, chain_hmac, producer_sig) \
             SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], \
             $8::timestamptz[], $9::text[], $10::bytea[], $11::bytea[], $12::text[])",
        )
        .bind(self.zone)
        .bind(self.seq)
        .bind(self.id)
        .bind(self.event_type)
        .bind(self.decision)
        .bind(self.request_id)
        .bind(self.session_id)
        .bind(self.occurred_at)
        .bind(self.event)
        .bind(self.content)
        .bind(self.link)
        .bind(self.sig)
        .execute(&mut **tx)
        .await
        .map(drop)
    }
}

/// Rows of `zone` with `seq` in `(after, upto]`, at most `limit`, in order.
pub async fn rows_after(db: &mut sqlx::PgConnection, zone: &str, after: i64, upto: i64, limit: i64) -> Result<Vec<StoredRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {ROW_COLUMNS} FROM audit_events WHERE zone_id = $1 AND seq > $2 AND seq <= $3 ORDER BY seq LIMIT $4"
    )))
    .bind(zone)
    .bind(after)
    .bind(upto)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Every zone with a chain (rows or anchors), by a skip scan of the primary keys.
pub async fn zones(db: &PgPool) -> Result<Vec<String>, sqlx::Error> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "WITH RECURSIVE z(zone_id) AS ( \
           SELECT min(zone_id) FROM audit_events \
           UNION ALL SELECT (SELECT min(zone_id) FROM audit_events WHERE zone_id > z.zone_id) FROM z WHERE z.zone_id IS NOT NULL) \
         SELECT zone_id FROM z WHERE zone_id IS NOT NULL \
         UNION SELECT DISTINCT zone_id FROM audit_anchors",
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|(z,)| z).collect())
}

/// An anchor, with whether its MAC verifies under the chain key.
#[derive(Clone, Debug)]
pub struct Anchor {
    pub seq: i64,
    pub chain_hmac: [u8; 32],
    pub authentic: bool,
}

/// The newest anchor of `kind` for `zone`.
pub async fn latest_anchor(db: &mut sqlx::PgConnection, key: &[u8], zone: &str, kind: &str) -> Result<Option<Anchor>, sqlx::Error> {
    let row: Option<(i64, Vec<u8>, Vec<u8>)> =
        sqlx::query_as("SELECT seq, chain_hmac, anchor_mac FROM audit_anchors WHERE zone_id = $1 AND kind = $2 ORDER BY seq DESC LIMIT 1")
            .bind(zone)
            .bind(kind)
            .fetch_optional(db)
            .await?;
    Ok(row.map(|(seq, h, mac)| Anchor {
        seq,
        authentic: caracal_shared::sig::ct_eq(&chain::anchor_mac(key, zone, kind, seq, &h), &mac),
        chain_hmac: h.try_into().unwrap_or(GENESIS),
    }))
}

/// Records an anchor (inside the caller's transaction).
pub async fn insert_anchor(
    tx: &mut Transaction<'_, Postgres>,
    key: &[u8],
    zone: &str,
    kind: &str,
    seq: i64,
    link: &[u8; 32],
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO audit_anchors (zone_id, kind, seq, chain_hmac, anchor_mac) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING")
        .bind(zone)
        .bind(kind)
        .bind(seq)
        .bind(&link[..])
        .bind(&chain::anchor_mac(key, zone, kind, seq, link)[..])
        .execute(&mut **tx)
        .await
        .map(drop)
}
