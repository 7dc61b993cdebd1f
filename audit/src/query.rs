//! Searching a zone's ledger and rendering rows for the API and exports.
//!
//! A row is rendered as `{seq, ingested_at, content_sha256, chain_hmac, event}` where `event` is
//! the stored canonical text, byte for byte: an exported line can be re-hashed offline and must
//! give `content_sha256`.

use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::PgPool;

use crate::chain::StoredRow;
use crate::store::ROW_COLUMNS;

/// Search filters; all optional except the zone. Rows come in `seq` order after `after_seq`.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub zone_id: String,
    /// `occurred_at >= since`.
    pub since: Option<DateTime<Utc>>,
    /// `occurred_at < until`.
    pub until: Option<DateTime<Utc>>,
    pub event_type: Option<String>,
    pub decision: Option<String>,
    pub request_id: Option<String>,
    pub session_id: Option<String>,
    pub after_seq: i64,
}

/// One page of matching rows.
pub async fn page(db: &PgPool, f: &Filter, limit: i64) -> Result<Vec<StoredRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {ROW_COLUMNS} FROM audit_events WHERE zone_id = $1 AND seq > $2 \
           AND ($3::timestamptz IS NULL OR occurred_at >= $3) AND ($4::timestamptz IS NULL OR occurred_at < $4) \
           AND ($5::text IS NULL OR event_type = $5) AND ($6::text IS NULL OR decision = $6) \
           AND ($7::text IS NULL OR request_id = $7) AND ($8::text IS NULL OR session_id = $8) \
         ORDER BY seq LIMIT $9"
    )))
    .bind(&f.zone_id)
    .bind(f.after_seq)
    .bind(f.since)
    .bind(f.until)
    .bind(&f.event_type)
    .bind(&f.decision)
    .bind(&f.request_id)
    .bind(&f.session_id)
    .bind(limit)
    .fetch_all(db)
    .await
}

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// The JSON object of a row (one NDJSON line, one API item), with the event embedded verbatim.
pub fn json_line(row: &StoredRow, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"seq\":");
    out.extend_from_slice(row.seq.to_string().as_bytes());
    out.extend_from_slice(b",\"zone_id\":");
    out.extend_from_slice(serde_json::to_string(&row.zone_id).expect("string").as_bytes());
    out.extend_from_slice(b",\"ingested_at\":\"");
    out.extend_from_slice(time(row.ingested_at).as_bytes());
    out.extend_from_slice(b"\",\"content_sha256\":\"");
    out.extend_from_slice(hex::encode(&row.content_sha256).as_bytes());
    out.extend_from_slice(b"\",\"chain_hmac\":\"");
    out.extend_from_slice(hex::encode(&row.chain_hmac).as_bytes());
    out.extend_from_slice(b"\",\"event\":");
    out.extend_from_slice(row.event.as_bytes());
    out.push(b'}');
}

/// CSV header of an export.
pub const CSV_HEADER: [&str; 12] = [
    "seq",
    "zone_id",
    "id",
    "occurred_at",
    "ingested_at",
    "event_type",
    "decision",
    "request_id",
    "session_id",
    "content_sha256",
    "chain_hmac",
    "event",
];

/// Appends rows as CSV records (RFC 4180 quoting by the `csv` crate).
pub fn csv_rows(rows: &[StoredRow], header: bool) -> Vec<u8> {
    let mut w = csv::Writer::from_writer(Vec::with_capacity(rows.len() * 512));
    if header {
        w.write_record(CSV_HEADER).expect("writing to memory");
    }
    for r in rows {
        w.write_record([
            r.seq.to_string().as_str(),
            &r.zone_id,
            &r.id,
            &time(r.occurred_at),
            &time(r.ingested_at),
            &r.event_type,
            &r.decision,
            &r.request_id,
            r.session_id.as_deref().unwrap_or(""),
            &hex::encode(&r.content_sha256),
            &hex::encode(&r.chain_hmac),
            &r.event,
        ])
        .expect("writing to memory");
    }
    w.into_inner().expect("flushing to memory")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> StoredRow {
        let now = Utc::now();
        let e =
            crate::canonical::Entry::from_data(r#"{"id":"e1","zone_id":"z","event_type":"t","metadata_json":{"note":"a,\"b\"\nc"}}"#, now)
                .unwrap();
        StoredRow {
            zone_id: "z".into(),
            seq: 7,
            id: e.id.clone(),
            event_type: e.event_type.clone(),
            decision: String::new(),
            request_id: String::new(),
            session_id: None,
            occurred_at: e.occurred_at,
            ingested_at: now,
            content_sha256: e.content_sha256().to_vec(),
            event: e.canonical,
            chain_hmac: vec![1; 32],
        }
    }

    #[test]
    fn a_json_line_embeds_the_hashed_text_verbatim() {
        let r = row();
        let mut out = Vec::new();
        json_line(&r, &mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["seq"], 7);
        let embedded = std::str::from_utf8(&out).unwrap().split_once("\"event\":").unwrap().1.strip_suffix('}').unwrap();
        assert_eq!(hex::encode(caracal_shared::sig::sha256(embedded.as_bytes())), v["content_sha256"]);
    }

    #[test]
    fn csv_quotes_what_needs_quoting() {
        let r = row();
        let out = csv_rows(std::slice::from_ref(&r), true);
        let mut rd = csv::Reader::from_reader(out.as_slice());
        let rec = rd.records().next().unwrap().unwrap();
        assert_eq!(rec.len(), CSV_HEADER.len());
        assert_eq!(&rec[11], r.event, "the event survives quoting");
    }
}
