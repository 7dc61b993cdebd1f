//! The invoke body `{command, subcommand, flags{}, authorized_by?}` and its limits.
//!
//! Read up to 256 KiB (else 413 `payload_too_large`). Flags are flat: at most 32 keys of at most
//! 64 characters (`[A-Za-z0-9_.-]`), each a string (≤ 131072 characters), number, boolean, null, or
//! an array of at most 64 such scalars. Anything else is 400 `invalid`. Flag values are never
//! logged or audited.

use axum::body::Body;
use axum::http::{HeaderMap, header};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::control::Refusal;

/// Largest accepted body.
pub const MAX_BODY_BYTES: usize = 256 * 1024;
/// Most flags per invoke.
pub const MAX_FLAGS: usize = 32;
/// Longest flag name.
pub const MAX_FLAG_KEY: usize = 64;
/// Longest string value, in characters.
pub const MAX_FLAG_STRING: usize = 131_072;
/// Most items of an array value.
pub const MAX_FLAG_ARRAY: usize = 64;

/// A parsed invoke body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvokeBody {
    pub command: String,
    pub subcommand: String,
    #[serde(default)]
    pub flags: Option<Map<String, Value>>,
    /// Who approved this change, for the record (`^[\p{L}\p{N} @._+:'-]{1,256}$`).
    #[serde(default)]
    pub authorized_by: Option<String>,
    /// Accepted for compatibility with the original's clients; Operator co-authoring does not
    /// exist here.
    #[serde(default)]
    pub co_author_operator: Option<bool>,
}

/// Reads the body, refusing more than [`MAX_BODY_BYTES`] before reading it when the length is
/// announced.
pub async fn read(headers: &HeaderMap, body: Body) -> Result<axum::body::Bytes, Refusal> {
    let announced = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(Refusal::TooLarge(MAX_BODY_BYTES));
    }
    axum::body::to_bytes(body, MAX_BODY_BYTES).await.map_err(|_| Refusal::TooLarge(MAX_BODY_BYTES))
}

/// Parses the JSON body.
pub fn parse(raw: &[u8]) -> Result<InvokeBody, Refusal> {
    let body: InvokeBody = serde_json::from_slice(raw).map_err(|e| Refusal::Invalid(format!("body: {e}")))?;
    if let Some(who) = &body.authorized_by {
        let ok = |c: char| c.is_alphanumeric() || " @._+:'-".contains(c);
        if who.is_empty() || who.chars().count() > 256 || !who.chars().all(ok) {
            return Err(Refusal::Invalid("authorized_by must be 1..256 letters, digits or ` @._+:'-`".into()));
        }
    }
    Ok(body)
}

/// Checks the flags against the limits; returns them unchanged.
pub fn validate_flags(flags: Option<Map<String, Value>>) -> Result<Map<String, Value>, Refusal> {
    let flags = flags.unwrap_or_default();
    if flags.len() > MAX_FLAGS {
        return Err(Refusal::Invalid(format!("at most {MAX_FLAGS} flags")));
    }
    for (k, v) in &flags {
        let key_ok = !k.is_empty() && k.len() <= MAX_FLAG_KEY && k.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
        if !key_ok {
            return Err(Refusal::Invalid(format!("flag names are 1..{MAX_FLAG_KEY} characters of [A-Za-z0-9_.-]")));
        }
        let ok = match v {
            Value::Array(items) => items.len() <= MAX_FLAG_ARRAY && items.iter().all(|i| scalar(i) && !i.is_null()),
            other => scalar(other),
        };
        if !ok {
            return Err(Refusal::Invalid(format!(
                "flag {k}: values are scalars (strings ≤ {MAX_FLAG_STRING} characters) or arrays of ≤ {MAX_FLAG_ARRAY} scalars"
            )));
        }
    }
    Ok(flags)
}

fn scalar(v: &Value) -> bool {
    match v {
        Value::String(s) => s.len() <= MAX_FLAG_STRING || s.chars().count() <= MAX_FLAG_STRING,
        Value::Null | Value::Bool(_) | Value::Number(_) => true,
        Value::Array(_) | Value::Object(_) => false,
    }
}

/// A command or subcommand as it may appear in logs and evidence: catalog-like names only, so
/// arbitrary caller input never reaches the ledger.
pub fn label(s: &str) -> &str {
    let ok = !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok { s } else { "<invalid>" }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn flags(v: Value) -> Result<Map<String, Value>, Refusal> {
        validate_flags(v.as_object().cloned())
    }

    #[test]
    fn flat_flags_within_limits_pass() {
        let f = flags(json!({"id": "r1", "limit": 5, "dry": true, "x": null, "scopes": ["a", "b"]})).unwrap();
        assert_eq!(f.len(), 5);
        assert!(validate_flags(None).unwrap().is_empty());
        assert!(flags(json!({"s": "x".repeat(MAX_FLAG_STRING)})).is_ok());
    }

    #[test]
    fn nested_oversized_and_odd_flags_are_invalid() {
        let many: Map<String, Value> = (0..=MAX_FLAGS).map(|i| (format!("k{i}"), json!(1))).collect();
        let cases = [
            json!({"spec": {"a": 1}}),
            json!({"list": [[1]]}),
            json!({"list": [{"a": 1}]}),
            json!({"list": [null]}),
            json!({"list": vec![1; MAX_FLAG_ARRAY + 1]}),
            json!({"s": "x".repeat(MAX_FLAG_STRING + 1)}),
            json!({"k".repeat(MAX_FLAG_KEY + 1): 1}),
            json!({"": 1}),
            json!({"a b": 1}),
            json!({"a&b=c": 1}),
            Value::Object(many),
        ];
        for c in cases {
            assert!(matches!(flags(c.clone()), Err(Refusal::Invalid(_))), "{c} must be invalid");
        }
    }

    #[test]
    fn body_shape_is_strict() {
        assert!(parse(br#"{"command":"resource","subcommand":"list"}"#).is_ok());
        assert!(parse(br#"{"command":"resource","subcommand":"list","flags":null,"authorized_by":"Ana O'Neil"}"#).is_ok());
        for bad in [
            &br#"{"command":"resource"}"#[..],
            br#"{"command":"resource","subcommand":"list","shell":"rm -rf /"}"#,
            br#"{"command":"resource","subcommand":"list","authorized_by":"a;b"}"#,
            br#"{"command":"resource","subcommand":"list","flags":[1]}"#,
            b"not json",
        ] {
            assert!(matches!(parse(bad), Err(Refusal::Invalid(_))), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn labels_keep_only_catalog_like_names() {
        assert_eq!(label("policy-set"), "policy-set");
        assert_eq!(label("-c"), "-c");
        assert_eq!(label("rm -rf /"), "<invalid>");
        assert_eq!(label(&"a".repeat(65)), "<invalid>");
    }
}
