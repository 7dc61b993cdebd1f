//! From a producer's `data` string to what the ledger files: the event's canonical JSON
//! (RFC 8785, so the content hash never depends on a database's JSON printer) and the columns it
//! is searched by.
//!
//! Normalisation before canonicalisation: NUL characters are removed from every string (Postgres
//! `text` cannot hold them), and `occurred_at` becomes UTC with microseconds (empty means "now",
//! as the wire contract says). Fields the ledger does not know are kept: they are evidence too.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value};

/// Largest `data` accepted; larger frames are dead-lettered.
pub const MAX_EVENT_BYTES: usize = 64 * 1024;

/// One event, ready to be chained.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub id: String,
    /// Empty for evidence that belongs to no zone (a request refused before its zone was known).
    pub zone_id: String,
    pub event_type: String,
    pub decision: String,
    pub request_id: String,
    /// `metadata_json.session_id`, else `metadata_json.agent_session_id`.
    pub session_id: Option<String>,
    pub occurred_at: DateTime<Utc>,
    /// RFC 8785 text; `content_sha256` is over these bytes.
    pub canonical: String,
}

/// Why a frame's `data` cannot be filed (the dead-letter reason).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("json_parse_error:{0}")]
    NotJson(String),
    #[error("json_parse_error:not an object")]
    NotAnObject,
    #[error("missing_field:{0}")]
    Missing(&'static str),
    #[error("invalid_field:{0}:{1}")]
    Invalid(&'static str, &'static str),
    #[error("too_large:{0} bytes")]
    TooLarge(usize),
}

impl Entry {
    /// Parses, checks and canonicalises `data`; `now` stands in for an empty `occurred_at`.
    pub fn from_data(data: &str, now: DateTime<Utc>) -> Result<Self, Rejection> {
        if data.len() > MAX_EVENT_BYTES {
            return Err(Rejection::TooLarge(data.len()));
        }
        let value: Value = serde_json::from_str(data).map_err(|e| Rejection::NotJson(e.to_string()))?;
        // JSON can only carry a NUL as the escape `\u0000`: rebuild the tree only when one is there.
        let value = if data.contains("\\u0000") { strip_nul(value) } else { value };
        let Value::Object(mut event) = value else { return Err(Rejection::NotAnObject) };

        let id = text(&event, "id")?.ok_or(Rejection::Missing("id"))?;
        if !caracal_shared::mandate::is_valid_id(&id) {
            return Err(Rejection::Invalid("id", "not 1-128 of [A-Za-z0-9._:-]"));
        }
        let zone_id = text(&event, "zone_id")?.ok_or(Rejection::Missing("zone_id"))?;
        if !zone_id.is_empty() && !caracal_shared::mandate::is_valid_id(&zone_id) {
            return Err(Rejection::Invalid("zone_id", "not 1-128 of [A-Za-z0-9._:-]"));
        }
        let event_type = text(&event, "event_type")?.ok_or(Rejection::Missing("event_type"))?;
        if event_type.is_empty() || event_type.len() > 64 {
            return Err(Rejection::Invalid("event_type", "empty or longer than 64"));
        }
        let decision = text(&event, "decision")?.unwrap_or_default();
        let request_id = text(&event, "request_id")?.unwrap_or_default();
        if decision.len() > 64 || request_id.len() > 256 {
            return Err(Rejection::Invalid("decision/request_id", "too long"));
        }
        let occurred_at = match text(&event, "occurred_at")?.as_deref() {
            None | Some("") => now,
            Some(raw) => {
                DateTime::parse_from_rfc3339(raw).map_err(|_| Rejection::Invalid("occurred_at", "not RFC 3339"))?.with_timezone(&Utc)
            }
        };
        // Microseconds: what a timestamptz keeps, so the column and the hashed text agree.
        let occurred_at = DateTime::from_timestamp_micros(occurred_at.timestamp_micros()).expect("in range");
        event.insert("occurred_at".into(), occurred_at.to_rfc3339_opts(SecondsFormat::Micros, true).into());
        let session_id = ["session_id", "agent_session_id"]
            .iter()
            .find_map(|k| event.get("metadata_json").and_then(|m| m.get(*k)).and_then(Value::as_str).filter(|s| !s.is_empty()))
            .map(str::to_owned);
        let canonical = serde_json_canonicalizer::to_string(&event).map_err(|e| Rejection::NotJson(e.to_string()))?;
        Ok(Self { id, zone_id, event_type, decision, request_id, session_id, occurred_at, canonical })
    }

    /// SHA-256 of the canonical text.
    pub fn content_sha256(&self) -> [u8; 32] {
        caracal_shared::sig::sha256(self.canonical.as_bytes())
    }
}

/// A string field: `Ok(None)` when absent or null, an error when present with another type.
fn text(event: &Map<String, Value>, name: &'static str) -> Result<Option<String>, Rejection> {
    match event.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(Rejection::Invalid(name, "not a string")),
    }
}

fn strip_nul(v: Value) -> Value {
    match v {
        Value::String(s) if s.contains('\0') => Value::String(s.replace('\0', "")),
        Value::Array(a) => Value::Array(a.into_iter().map(strip_nul).collect()),
        Value::Object(o) => Value::Object(o.into_iter().map(|(k, v)| (k.replace('\0', ""), strip_nul(v))).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-23T10:00:00.123456789Z").unwrap().with_timezone(&Utc)
    }

    #[test]
    fn canonical_form_is_independent_of_key_order_spacing_and_number_spelling() {
        let a = r#"{"zone_id":"z1","id":"e1","event_type":"t","metadata_json":{"b":1.0,"a":[1e2,"x"]},"occurred_at":"2026-11-23T11:00:00.5+01:00"}"#;
        let b = r#"{ "metadata_json": {"a": [100, "x"], "b": 1}, "event_type": "t", "id": "e1", "zone_id": "z1", "occurred_at": "2026-11-23T10:00:00.500000Z" }"#;
        let (a, b) = (Entry::from_data(a, now()).unwrap(), Entry::from_data(b, now()).unwrap());
        assert_eq!(a.canonical, b.canonical);
        assert_eq!(
            a.canonical,
            r#"{"event_type":"t","id":"e1","metadata_json":{"a":[100,"x"],"b":1},"occurred_at":"2026-11-23T10:00:00.500000Z","zone_id":"z1"}"#
        );
        assert_eq!(a.content_sha256(), b.content_sha256());
        // Canonicalising the canonical text changes nothing: the sweeps rely on it.
        assert_eq!(Entry::from_data(&a.canonical, now()).unwrap(), a);
    }

    #[test]
    fn empty_time_means_now_nul_is_removed_and_columns_are_extracted() {
        let e = Entry::from_data(
            r#"{"id":"e1","zone_id":"","event_type":"t","decision":"deny","request_id":"r\u0000","occurred_at":"","metadata_json":{"agent_session_id":"as1"}}"#,
            now(),
        )
        .unwrap();
        assert_eq!(e.occurred_at.timestamp_micros(), now().timestamp_micros());
        assert!(e.canonical.contains(r#""occurred_at":"2026-11-23T10:00:00.123456Z""#), "{}", e.canonical);
        assert_eq!((e.decision.as_str(), e.request_id.as_str(), e.zone_id.as_str()), ("deny", "r", ""));
        assert_eq!(e.session_id.as_deref(), Some("as1"));
        assert!(!e.canonical.contains('\0') && !e.canonical.contains("\\u0000"));
    }

    #[test]
    fn refuses_what_cannot_be_filed_with_a_reason() {
        let cases = [
            ("not json", "json_parse_error:"),
            ("[1]", "json_parse_error:not an object"),
            (r#"{"zone_id":"z","event_type":"t"}"#, "missing_field:id"),
            (r#"{"id":"e","event_type":"t"}"#, "missing_field:zone_id"),
            (r#"{"id":"e","zone_id":"z"}"#, "missing_field:event_type"),
            (r#"{"id":"e f","zone_id":"z","event_type":"t"}"#, "invalid_field:id"),
            (r#"{"id":"e","zone_id":"z/..","event_type":"t"}"#, "invalid_field:zone_id"),
            (r#"{"id":"e","zone_id":"z","event_type":7}"#, "invalid_field:event_type"),
            (r#"{"id":"e","zone_id":"z","event_type":"t","occurred_at":"yesterday"}"#, "invalid_field:occurred_at"),
        ];
        for (data, reason) in cases {
            let got = Entry::from_data(data, now()).unwrap_err().to_string();
            assert!(got.starts_with(reason), "{data}: {got}");
        }
        let big = format!(r#"{{"id":"e","zone_id":"z","event_type":"t","pad":"{}"}}"#, "x".repeat(MAX_EVENT_BYTES));
        assert!(Entry::from_data(&big, now()).unwrap_err().to_string().starts_with("too_large"));
    }
}
