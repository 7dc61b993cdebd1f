//! base64url without padding, the only base64 flavour JOSE uses.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Encodes `bytes` as base64url without padding.
pub fn encode(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes base64url without padding; padding or other alphabets are rejected.
pub fn decode(text: impl AsRef<[u8]>) -> Result<Vec<u8>, base64::DecodeError> {
    URL_SAFE_NO_PAD.decode(text)
}

/// Fills a buffer with `n` random bytes and returns them base64url-encoded, prefixed.
///
/// Used for bearer secrets (admin tokens, client secrets): 32 bytes give 256 bits of entropy, which
/// is why a plain SHA-256 digest is enough to store them.
pub fn random_secret(prefix: &str, n: usize) -> String {
    let mut buf = vec![0u8; n];
    aws_lc_rs::rand::fill(&mut buf).expect("system RNG failed");
    format!("{prefix}{}", encode(buf))
}

/// `n` random bytes, lowercase hex (nonces).
pub fn random_hex(n: usize) -> String {
    let mut buf = vec![0u8; n];
    aws_lc_rs::rand::fill(&mut buf).expect("system RNG failed");
    hex::encode(buf)
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trip_has_no_padding() {
        let e = super::encode(b"ab");
        assert_eq!(e, "YWI");
        assert_eq!(super::decode(&e).unwrap(), b"ab");
        assert!(super::decode("YWI=").is_err(), "padding must be rejected");
    }

    #[test]
    fn random_secret_carries_prefix_and_256_bits() {
        let s = super::random_secret("cat_", 32);
        assert!(s.starts_with("cat_"));
        assert_eq!(super::decode(&s[4..]).unwrap().len(), 32);
        assert_ne!(s, super::random_secret("cat_", 32));
    }
}
