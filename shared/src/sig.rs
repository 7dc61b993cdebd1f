//! HMAC signatures shared by producers and consumers.
//!
//! * Stream messages carry `_sig` = hex HMAC-SHA256(`STREAMS_HMAC_KEY`, `<stream>\n` + sorted
//!   `key=value\n` lines, `_sig` excluded) — DESIGN §5, §9.
//! * A gateway→STS exchange carries `X-Caracal-Gateway-Signature` = hex
//!   HMAC-SHA256(`GATEWAY_STS_HMAC_KEY`, `ts\nnonce\nMETHOD\npath\nhex(sha256(body))`).
//! * Audit frames carry `sig` = hex HMAC-SHA256(`AUDIT_HMAC_KEY`, data).
//!
//! All comparisons are constant time.

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// Header names of the signed gateway exchange.
pub const GATEWAY_TIMESTAMP_HEADER: &str = "x-caracal-gateway-timestamp";
/// Nonce header (32 random bytes, hex), single use at the STS.
pub const GATEWAY_NONCE_HEADER: &str = "x-caracal-gateway-request";
/// Signature header.
pub const GATEWAY_SIGNATURE_HEADER: &str = "x-caracal-gateway-signature";

fn mac(key: &[u8]) -> HmacSha256 {
    <HmacSha256 as KeyInit>::new_from_slice(key).expect("HMAC accepts keys of any length")
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A token's fingerprint for logs: the first 8 bytes of its SHA-256, hex. Never log the token.
pub fn fingerprint(token: &str) -> String {
    hex::encode(&Sha256::digest(token.as_bytes())[..8])
}

/// Raw SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Lowercase hex HMAC-SHA256.
pub fn hmac_hex(key: &[u8], data: &[u8]) -> String {
    let mut m = mac(key);
    m.update(data);
    hex::encode(m.finalize().into_bytes())
}

/// Constant-time check of a hex HMAC-SHA256 over `data`.
pub fn hmac_hex_verify(key: &[u8], data: &[u8], expected_hex: &str) -> bool {
    let Ok(expected) = hex::decode(expected_hex) else { return false };
    let mut m = mac(key);
    m.update(data);
    m.verify_slice(&expected).is_ok()
}

/// Constant-time equality of two byte strings (length leaks, content does not).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// The canonical bytes a stream message's `_sig` covers.
pub fn stream_canonical<'a>(stream: &str, fields: impl IntoIterator<Item = (&'a str, &'a str)>) -> Vec<u8> {
    let mut sorted: Vec<(&str, &str)> = fields.into_iter().filter(|(k, _)| *k != "_sig").collect();
    sorted.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut out = Vec::with_capacity(64 + sorted.iter().map(|(k, v)| k.len() + v.len() + 2).sum::<usize>());
    out.extend_from_slice(stream.as_bytes());
    out.push(b'\n');
    for (k, v) in sorted {
        out.extend_from_slice(k.as_bytes());
        out.push(b'=');
        out.extend_from_slice(v.as_bytes());
        out.push(b'\n');
    }
    out
}

/// The `_sig` of a stream message.
pub fn stream_signature<'a>(key: &[u8], stream: &str, fields: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    hmac_hex(key, &stream_canonical(stream, fields))
}

/// Checks the `_sig` field of a stream message; a missing or non-hex `_sig` fails.
pub fn verify_stream_signature<'a>(key: &[u8], stream: &str, fields: &[(&'a str, &'a str)]) -> bool {
    let Some((_, sig)) = fields.iter().find(|(k, _)| *k == "_sig") else { return false };
    hmac_hex_verify(key, &stream_canonical(stream, fields.iter().copied()), sig)
}

/// The string a gateway exchange signature covers.
pub fn gateway_canonical(timestamp: &str, nonce: &str, method: &str, path: &str, body: &[u8]) -> String {
    format!("{timestamp}\n{nonce}\n{}\n{path}\n{}", method.to_ascii_uppercase(), sha256_hex(body))
}

/// Signs a gateway→STS request.
pub fn gateway_signature(key: &[u8], timestamp: &str, nonce: &str, method: &str, path: &str, body: &[u8]) -> String {
    hmac_hex(key, gateway_canonical(timestamp, nonce, method, path, body).as_bytes())
}

/// Verifies a gateway→STS request signature (the caller checks timestamp skew and nonce reuse).
pub fn verify_gateway_signature(key: &[u8], timestamp: &str, nonce: &str, method: &str, path: &str, body: &[u8], signature: &str) -> bool {
    hmac_hex_verify(key, gateway_canonical(timestamp, nonce, method, path, body).as_bytes(), signature)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Vector from the original's interoperability fixtures.
    #[test]
    fn stream_signature_matches_reference_vector() {
        let key = hex::decode("0123456789abcdef".repeat(4)).unwrap();
        let fields = [("amount", "100"), ("action", "transfer")];
        assert_eq!(stream_canonical("audit:events", fields), b"audit:events\naction=transfer\namount=100\n");
        let sig = stream_signature(&key, "audit:events", fields);
        assert_eq!(sig, "c06ccc579e026c31a97a04f203981b236a3c88041712e9b46242e8762da23d75");
        let with_sig = [("action", "transfer"), ("_sig", sig.as_str()), ("amount", "100")];
        assert!(verify_stream_signature(&key, "audit:events", &with_sig));
        let tampered = [("action", "transfer"), ("_sig", sig.as_str()), ("amount", "101")];
        assert!(!verify_stream_signature(&key, "audit:events", &tampered));
        assert!(!verify_stream_signature(&key, "other", &with_sig), "the stream name is covered");
        assert!(!verify_stream_signature(&key, "audit:events", &fields), "a missing _sig fails");
    }

    /// Vector from the original's gateway signing tests.
    #[test]
    fn gateway_signature_matches_reference_vector() {
        let key = b"gateway-signing-key-with-entropy";
        let body = br#"{"grant_id":"grant_123","scope":"read write"}"#;
        let sig = gateway_signature(key, "1700000000", "req-123", "post", "/oauth/token", body);
        assert_eq!(sig, "4d299b9ededc03aae1467f1d85502ee7c9399d05c9a46123a31d4a768d2e0925");
        assert!(verify_gateway_signature(key, "1700000000", "req-123", "POST", "/oauth/token", body, &sig));
        assert!(!verify_gateway_signature(key, "1700000000", "req-123", "POST", "/oauth/2/token", body, &sig));
        assert!(!verify_gateway_signature(key, "1700000001", "req-123", "POST", "/oauth/token", body, &sig));
        assert!(!verify_gateway_signature(key, "1700000000", "req-123", "POST", "/oauth/token", b"{}", &sig));
        assert!(!verify_gateway_signature(key, "1700000000", "req-123", "POST", "/oauth/token", body, "zz"));
    }

    #[test]
    fn ct_eq_compares_content_and_length() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
    }
}
