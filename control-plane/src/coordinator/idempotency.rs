//! `Idempotency-Key` on the Coordinator's creates (`POST …/agents`, `POST …/delegations`).
//!
//! A key (1..255 bytes of UTF-8, no control characters, no surrounding whitespace, one header) is
//! scoped by zone, calling application and operation (the table the created row lives in). The
//! row keeps the SHA-256 of the request body as parsed (serde's field order, object keys sorted),
//! so: same key + same request ⇒ the stored object again, 201 with `Idempotency-Replayed: true`;
//! same key + another request ⇒ 409 `idempotency_key_conflict`; the object no longer live ⇒ 409
//! `idempotency_result_inactive`. The lookup and the insert run under the zone's graph lock, so
//! two concurrent requests with one key serialize: the second one replays.

use axum::Json;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::error::{ApiError, ApiResult};

/// Longest key, in bytes (the published SDK's limit).
pub const MAX_KEY_BYTES: usize = 255;

/// A request's idempotency key and the digest of what it asked.
#[derive(Debug, Clone)]
pub struct Key {
    pub key: String,
    pub request_sha256: Vec<u8>,
}

fn invalid(why: &str) -> ApiError {
    ApiError::bad_request("idempotency_key_invalid", format!("Idempotency-Key {why}"))
}

/// Reads the `Idempotency-Key` header (none ⇒ `None`) and digests `request`.
pub fn read(headers: &HeaderMap, request: &impl Serialize) -> ApiResult<Option<Key>> {
    let mut values = headers.get_all("idempotency-key").iter();
    let Some(value) = values.next() else { return Ok(None) };
    if values.next().is_some() {
        return Err(ApiError::bad_request("idempotency_key_multiple", "send one Idempotency-Key header"));
    }
    let key = std::str::from_utf8(value.as_bytes()).map_err(|_| invalid("must be UTF-8"))?;
    check_key(key)?;
    let body = serde_json::to_vec(request).map_err(ApiError::internal)?;
    Ok(Some(Key { key: key.to_owned(), request_sha256: caracal_shared::sig::sha256(&body).to_vec() }))
}

fn check_key(key: &str) -> ApiResult<()> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(invalid(&format!("must be 1..{MAX_KEY_BYTES} bytes")));
    }
    if key.trim() != key || key.chars().any(char::is_control) {
        return Err(invalid("must have no control characters and no surrounding whitespace"));
    }
    Ok(())
}

/// Whether a stored object may be replayed for `key`: the same request (rows stored before the
/// digest was kept match any), and still live.
pub fn check_replay(stored_sha256: Option<&[u8]>, key: &Key, live: bool) -> ApiResult<()> {
    if stored_sha256.is_some_and(|s| s != key.request_sha256.as_slice()) {
        return Err(ApiError::conflict("idempotency_key_conflict", "this Idempotency-Key was used for another request"));
    }
    if !live {
        return Err(ApiError::conflict("idempotency_result_inactive", "the object this Idempotency-Key created is no longer live"));
    }
    Ok(())
}

/// The stored object again: 201 with `Idempotency-Replayed: true`.
pub fn replayed(body: impl Serialize) -> Response {
    let mut resp = (StatusCode::CREATED, Json(body)).into_response();
    resp.headers_mut().insert("idempotency-replayed", HeaderValue::from_static("true"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&[u8]]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("idempotency-key", HeaderValue::from_bytes(v).unwrap());
        }
        h
    }

    #[test]
    fn keys_up_to_255_bytes_without_control_characters() {
        let long = "k".repeat(255);
        assert!(read(&headers(&[long.as_bytes()]), &1).unwrap().is_some());
        let too_long = "k".repeat(256);
        assert_eq!(read(&headers(&[too_long.as_bytes()]), &1).unwrap_err().code, "idempotency_key_invalid");
        assert_eq!(read(&headers(&[b"a\tb"]), &1).unwrap_err().code, "idempotency_key_invalid");
        assert_eq!(read(&headers(&[b" a"]), &1).unwrap_err().code, "idempotency_key_invalid");
        assert_eq!(read(&headers(&[b"a", b"b"]), &1).unwrap_err().code, "idempotency_key_multiple");
        assert!(read(&HeaderMap::new(), &1).unwrap().is_none());
        let utf8 = "clé-ü".as_bytes();
        assert_eq!(read(&headers(&[utf8]), &1).unwrap().unwrap().key, "clé-ü");
    }

    #[test]
    fn replays_need_the_same_request_and_a_live_object() {
        let k = read(&headers(&[b"k"]), &serde_json::json!({"b": 1, "a": 2})).unwrap().unwrap();
        let same = read(&headers(&[b"k"]), &serde_json::json!({"a": 2, "b": 1})).unwrap().unwrap();
        assert_eq!(k.request_sha256, same.request_sha256, "object key order does not matter");
        assert!(check_replay(Some(&k.request_sha256), &same, true).is_ok());
        assert!(check_replay(None, &same, true).is_ok());
        let other = read(&headers(&[b"k"]), &serde_json::json!({"a": 3})).unwrap().unwrap();
        assert_eq!(check_replay(Some(&k.request_sha256), &other, true).unwrap_err().code, "idempotency_key_conflict");
        assert_eq!(check_replay(Some(&k.request_sha256), &same, false).unwrap_err().code, "idempotency_result_inactive");
    }
}
