//! The per-zone chain: how a row is linked to its predecessor, and a verifier that walks rows in
//! `seq` order and says where the chain breaks.
//!
//! `chain_hmac(n)` = HMAC-SHA256(AUDIT_CHAIN_KEY, "caracal.audit.chain.v1\n" ‖ zone ‖ "\n" ‖ seq ‖
//! "\n" ‖ content_sha256(n) ‖ chain_hmac(n-1)), with 32 zero bytes before the first row. Linking
//! to the previous *HMAC* (not the previous content hash) and covering `zone` and `seq` means a
//! row cannot be moved, renumbered or re-hashed without the key, and the key belongs to the ledger
//! alone: producers sign frames with AUDIT_HMAC_KEY, which cannot forge a link.

use hmac::{KeyInit, Mac};
use serde::Serialize;
use sha2::Sha256;

use crate::canonical::Entry;

/// The link before a zone's first row.
pub const GENESIS: [u8; 32] = [0; 32];

/// `chain_hmac` of row `seq` of `zone`.
pub fn link(key: &[u8], zone: &str, seq: i64, content: &[u8; 32], prev: &[u8; 32]) -> [u8; 32] {
    let mut m = <Hmac as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(format!("caracal.audit.chain.v1\n{zone}\n{seq}\n").as_bytes());
    m.update(content);
    m.update(prev);
    m.finalize().into_bytes().into()
}

/// Authenticates an anchor row (retention or checkpoint), so a deleted prefix cannot be passed
/// off as a retention cut by whoever can write the table.
pub fn anchor_mac(key: &[u8], zone: &str, kind: &str, seq: i64, chain_hmac: &[u8]) -> [u8; 32] {
    let mut m = <Hmac as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(format!("caracal.audit.anchor.v1\n{zone}\n{kind}\n{seq}\n").as_bytes());
    m.update(chain_hmac);
    m.finalize().into_bytes().into()
}

type Hmac = hmac::Hmac<Sha256>;

/// A row as stored, with everything the verifier checks.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct StoredRow {
    pub zone_id: String,
    pub seq: i64,
    pub id: String,
    pub event_type: String,
    pub decision: String,
    pub request_id: String,
    pub session_id: Option<String>,
    pub occurred_at: chrono::DateTime<chrono::Utc>,
    pub ingested_at: chrono::DateTime<chrono::Utc>,
    pub event: String,
    pub content_sha256: Vec<u8>,
    pub chain_hmac: Vec<u8>,
}

/// What kind of damage a row shows (the names of seed 003's alerts).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakKind {
    /// The stored event does not hash to `content_sha256`, or a search column disagrees with it.
    ContentMismatch,
    /// Rows are missing: a gap in `seq`, an unanchored start or a truncated tail.
    ChainBreak,
    /// `chain_hmac` does not link the row to its predecessor.
    HmacMismatch,
}

impl BreakKind {
    pub const ALL: [Self; 3] = [Self::ContentMismatch, Self::ChainBreak, Self::HmacMismatch];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ContentMismatch => "content_mismatch",
            Self::ChainBreak => "chain_break",
            Self::HmacMismatch => "hmac_mismatch",
        }
    }
}

/// One finding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Break {
    pub zone_id: String,
    pub seq: i64,
    pub kind: BreakKind,
    pub detail: String,
}

/// Walks one zone's rows in `seq` order.
pub struct Verifier<'k> {
    key: &'k [u8],
    zone: String,
    /// The last row seen (or the anchor the walk started from): `(seq, chain_hmac)`.
    prev: (i64, [u8; 32]),
    pub checked: u64,
    pub breaks: Vec<Break>,
}

impl<'k> Verifier<'k> {
    /// Starts after `prev`: `(0, GENESIS)` for a chain verified from its first row, an anchor's
    /// `(seq, chain_hmac)`, or the row before a range.
    pub fn new(key: &'k [u8], zone: &str, prev: (i64, [u8; 32])) -> Self {
        Self { key, zone: zone.to_owned(), prev, checked: 0, breaks: Vec::new() }
    }

    /// The last row accepted as the chain's position: `(seq, chain_hmac)`.
    pub fn position(&self) -> (i64, [u8; 32]) {
        self.prev
    }

    /// Records a break found outside the walk (a truncated tail, an unusable anchor).
    pub fn report(&mut self, seq: i64, kind: BreakKind, detail: String) {
        self.breaks.push(Break { zone_id: self.zone.clone(), seq, kind, detail });
    }

    /// Checks the next row.
    pub fn check(&mut self, row: &StoredRow) {
        self.checked += 1;
        if let Some(problem) = content_problem(row) {
            self.report(row.seq, BreakKind::ContentMismatch, problem);
        }
        let stored: [u8; 32] = row.chain_hmac.as_slice().try_into().unwrap_or([0; 32]);
        let (prev_seq, prev_link) = self.prev;
        if row.seq != prev_seq + 1 {
            let detail = if prev_seq == 0 {
                format!("the chain starts at seq {} with no anchor for the rows before it", row.seq)
            } else {
                format!("seq jumps from {prev_seq} to {}: {} row(s) missing", row.seq, row.seq - prev_seq - 1)
            };
            self.report(row.seq, BreakKind::ChainBreak, detail);
        } else {
            let content: [u8; 32] = row.content_sha256.as_slice().try_into().unwrap_or([0; 32]);
            let expected = link(self.key, &self.zone, row.seq, &content, &prev_link);
            if !caracal_shared::sig::ct_eq(&expected, &stored) {
                self.report(row.seq, BreakKind::HmacMismatch, format!("chain_hmac does not link seq {} to seq {prev_seq}", row.seq));
            }
        }
        self.prev = (row.seq, stored);
    }
}

/// Why a row's content is not what was hashed, if it is not.
fn content_problem(row: &StoredRow) -> Option<String> {
    if caracal_shared::sig::sha256(row.event.as_bytes()).as_slice() != row.content_sha256.as_slice() {
        return Some("the stored event does not hash to content_sha256".into());
    }
    let e = match Entry::from_data(&row.event, row.occurred_at) {
        Ok(e) => e,
        Err(r) => return Some(format!("the stored event no longer parses: {r}")),
    };
    let columns = [
        ("id", e.id == row.id),
        ("zone_id", e.zone_id == row.zone_id),
        ("event_type", e.event_type == row.event_type),
        ("decision", e.decision == row.decision),
        ("request_id", e.request_id == row.request_id),
        ("session_id", e.session_id == row.session_id),
        ("occurred_at", e.occurred_at == row.occurred_at),
    ];
    columns.iter().find(|(_, same)| !same).map(|(name, _)| format!("column {name} differs from the hashed event"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn chain(n: i64) -> Vec<StoredRow> {
        let now = chrono::Utc::now();
        let mut prev = GENESIS;
        (1..=n)
            .map(|seq| {
                let data = format!(r#"{{"id":"e{seq}","zone_id":"z","event_type":"t","decision":"allow","request_id":"r{seq}"}}"#);
                let e = Entry::from_data(&data, now).unwrap();
                let content = e.content_sha256();
                let h = link(KEY, "z", seq, &content, &prev);
                prev = h;
                StoredRow {
                    zone_id: e.zone_id,
                    seq,
                    id: e.id,
                    event_type: e.event_type,
                    decision: e.decision,
                    request_id: e.request_id,
                    session_id: e.session_id,
                    occurred_at: e.occurred_at,
                    ingested_at: now,
                    event: e.canonical,
                    content_sha256: content.to_vec(),
                    chain_hmac: h.to_vec(),
                }
            })
            .collect()
    }

    fn verify(rows: &[StoredRow]) -> Vec<(i64, BreakKind)> {
        let mut v = Verifier::new(KEY, "z", (0, GENESIS));
        rows.iter().for_each(|r| v.check(r));
        v.breaks.iter().map(|b| (b.seq, b.kind)).collect()
    }

    #[test]
    fn an_intact_chain_verifies() {
        assert_eq!(verify(&chain(5)), []);
    }

    #[test]
    fn each_kind_of_damage_is_found_where_it_is() {
        let mut rows = chain(5);
        rows[1].event = rows[1].event.replace("allow", "deny");
        assert_eq!(verify(&rows), [(2, BreakKind::ContentMismatch)]);

        let mut rows = chain(5);
        rows[1].decision = "deny".into();
        assert_eq!(verify(&rows), [(2, BreakKind::ContentMismatch)], "a search column must agree with the event");

        // Rewritten with a fresh content hash: only the key could have re-linked it.
        let mut rows = chain(5);
        rows[2].event = rows[2].event.replace("allow", "deny");
        rows[2].decision = "deny".into();
        rows[2].content_sha256 = caracal_shared::sig::sha256(rows[2].event.as_bytes()).to_vec();
        assert_eq!(verify(&rows), [(3, BreakKind::HmacMismatch)]);

        let mut rows = chain(5);
        rows.remove(3);
        assert_eq!(verify(&rows), [(5, BreakKind::ChainBreak)]);

        let mut rows = chain(5);
        rows.remove(0);
        assert_eq!(verify(&rows), [(2, BreakKind::ChainBreak)], "a deleted first row without an anchor");

        // A row renumbered into a gap still fails its link: seq is under the HMAC.
        let mut rows = chain(5);
        rows.remove(3);
        rows[3].seq = 4;
        assert_eq!(verify(&rows), [(4, BreakKind::HmacMismatch)]);
    }

    #[test]
    fn a_walk_can_start_from_an_anchor() {
        let rows = chain(5);
        let anchor: [u8; 32] = rows[1].chain_hmac.as_slice().try_into().unwrap();
        let mut v = Verifier::new(KEY, "z", (2, anchor));
        rows[2..].iter().for_each(|r| v.check(r));
        assert!(v.breaks.is_empty(), "{:?}", v.breaks);
        assert_eq!(v.position().0, 5);
        let mut wrong = Verifier::new(KEY, "z", (2, GENESIS));
        rows[2..].iter().for_each(|r| wrong.check(r));
        assert_eq!(wrong.breaks.len(), 1);
        assert_ne!(anchor_mac(KEY, "z", "retention", 2, &anchor), anchor_mac(KEY, "z", "retention", 3, &anchor));
    }
}
