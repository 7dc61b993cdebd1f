//! ES256 compact JWS: the one signature format mandates use.
//!
//! Written on aws-lc-rs directly rather than through `jsonwebtoken` because the mint path and the
//! gateway sign and verify on every request: `jsonwebtoken` re-parses the PKCS#8 key (a scalar
//! multiplication) on every signature and clones the public key on every verification, while here the
//! key pair and the parsed public key are built once. Signatures are JOSE `r‖s` (64 bytes), never
//! DER. The e2e tests verify our output with `jsonwebtoken` as an independent implementation.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _, ParsedPublicKey};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::b64;

/// Why a compact token could not be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwsError {
    #[error("not a compact JWS (three base64url parts)")]
    Malformed,
    #[error("header is not an ES256 JWT header with a kid")]
    BadHeader,
    #[error("claims are not valid JSON of the expected shape")]
    BadClaims,
    #[error("signature does not verify")]
    BadSignature,
    #[error("key material rejected")]
    BadKey,
}

/// The protected header fields we read.
#[derive(Debug, serde::Deserialize)]
struct Header<'a> {
    alg: &'a str,
    #[serde(borrow)]
    kid: std::borrow::Cow<'a, str>,
}

/// A compact token split into its parts, with the header checked. Nothing is verified yet.
#[derive(Debug)]
pub struct Compact<'a> {
    /// `header.payload`, the bytes the signature covers.
    pub signing_input: &'a str,
    /// The base64url payload.
    pub payload: &'a str,
    /// The base64url signature.
    pub signature: &'a str,
    /// The `kid` of the header.
    pub kid: String,
}

impl<'a> Compact<'a> {
    /// Splits `token` and checks the header is `alg=ES256` with a non-empty `kid`.
    pub fn parse(token: &'a str) -> Result<Self, JwsError> {
        let (signing_input, signature) = token.rsplit_once('.').ok_or(JwsError::Malformed)?;
        let (header, payload) = signing_input.split_once('.').ok_or(JwsError::Malformed)?;
        if header.is_empty() || payload.is_empty() || signature.is_empty() || payload.contains('.') {
            return Err(JwsError::Malformed);
        }
        let header_json = b64::decode(header).map_err(|_| JwsError::Malformed)?;
        let h: Header<'_> = serde_json::from_slice(&header_json).map_err(|_| JwsError::BadHeader)?;
        if h.alg != "ES256" || h.kid.is_empty() {
            return Err(JwsError::BadHeader);
        }
        let kid = h.kid.into_owned();
        Ok(Self { signing_input, payload, signature, kid })
    }

    /// Decodes the claims without verifying them: callers check claims before paying for a
    /// signature check, and must verify before trusting anything they read.
    pub fn claims<T: DeserializeOwned>(&self) -> Result<T, JwsError> {
        let json = b64::decode(self.payload).map_err(|_| JwsError::Malformed)?;
        serde_json::from_slice(&json).map_err(|_| JwsError::BadClaims)
    }

    /// Verifies the signature with `key`.
    pub fn verify(&self, key: &VerifyingKey) -> Result<(), JwsError> {
        let sig = b64::decode(self.signature).map_err(|_| JwsError::BadSignature)?;
        if sig.len() != 64 {
            return Err(JwsError::BadSignature);
        }
        key.key.verify_sig(self.signing_input.as_bytes(), &sig).map_err(|_| JwsError::BadSignature)
    }
}

/// A parsed P-256 public key, ready to verify many signatures.
#[derive(Clone)]
pub struct VerifyingKey {
    kid: String,
    key: ParsedPublicKey,
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyingKey").field("kid", &self.kid).finish()
    }
}

impl VerifyingKey {
    /// Builds a key from its affine coordinates (32 bytes each).
    pub fn from_coordinates(kid: impl Into<String>, x: &[u8], y: &[u8]) -> Result<Self, JwsError> {
        if x.len() != 32 || y.len() != 32 {
            return Err(JwsError::BadKey);
        }
        let mut point = Vec::with_capacity(65);
        point.push(0x04);
        point.extend_from_slice(x);
        point.extend_from_slice(y);
        let key = ParsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point).map_err(|_| JwsError::BadKey)?;
        Ok(Self { kid: kid.into(), key })
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }
}

/// A P-256 private key with its `kid`, and the encoded header it signs under.
pub struct SigningKey {
    kid: String,
    pair: EcdsaKeyPair,
    header_b64: String,
    rng: SystemRandom,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").field("kid", &self.kid).finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Generates a new key and returns it with its PKCS#8 document (to seal and store).
    pub fn generate(kid: impl Into<String>) -> Result<(Self, Vec<u8>), JwsError> {
        let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new()).map_err(|_| JwsError::BadKey)?;
        let pkcs8 = doc.as_ref().to_vec();
        Ok((Self::from_pkcs8(kid, &pkcs8)?, pkcs8))
    }

    /// Loads a key from a PKCS#8 document.
    pub fn from_pkcs8(kid: impl Into<String>, pkcs8: &[u8]) -> Result<Self, JwsError> {
        let kid = kid.into();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8).map_err(|_| JwsError::BadKey)?;
        let header = serde_json::json!({"alg": "ES256", "typ": "JWT", "kid": kid});
        let header_b64 = b64::encode(header.to_string());
        Ok(Self { kid, pair, header_b64, rng: SystemRandom::new() })
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key's affine coordinates `(x, y)`, 32 bytes each.
    pub fn public_coordinates(&self) -> ([u8; 32], [u8; 32]) {
        let point = self.pair.public_key().as_ref();
        debug_assert_eq!(point.len(), 65, "uncompressed P-256 point");
        let mut x = [0u8; 32];
        let mut y = [0u8; 32];
        x.copy_from_slice(&point[1..33]);
        y.copy_from_slice(&point[33..65]);
        (x, y)
    }

    /// The matching verifying key.
    pub fn verifying_key(&self) -> VerifyingKey {
        let (x, y) = self.public_coordinates();
        VerifyingKey::from_coordinates(self.kid.clone(), &x, &y).expect("own public key parses")
    }

    /// Serializes `claims` and signs them: `header.payload.signature`.
    pub fn sign<T: Serialize>(&self, claims: &T) -> Result<String, JwsError> {
        let payload = serde_json::to_vec(claims).map_err(|_| JwsError::BadClaims)?;
        let mut token = String::with_capacity(self.header_b64.len() + payload.len() * 4 / 3 + 92);
        token.push_str(&self.header_b64);
        token.push('.');
        token.push_str(&b64::encode(&payload));
        let sig = self.pair.sign(&self.rng, token.as_bytes()).map_err(|_| JwsError::BadKey)?;
        token.push('.');
        token.push_str(&b64::encode(sig.as_ref()));
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_and_verifies_round_trip() {
        let (key, pkcs8) = SigningKey::generate("k1").unwrap();
        let token = key.sign(&serde_json::json!({"a": 1})).unwrap();
        let c = Compact::parse(&token).unwrap();
        assert_eq!(c.kid, "k1");
        c.verify(&key.verifying_key()).unwrap();
        let v: serde_json::Value = c.claims().unwrap();
        assert_eq!(v["a"], 1);
        // Reloading from PKCS#8 gives the same public key.
        let again = SigningKey::from_pkcs8("k1", &pkcs8).unwrap();
        assert_eq!(again.public_coordinates(), key.public_coordinates());
        assert_eq!(b64::decode(c.signature).unwrap().len(), 64, "JOSE r||s, not DER");
    }

    #[test]
    fn tampered_payload_or_signature_fails() {
        let (key, _) = SigningKey::generate("k1").unwrap();
        let token = key.sign(&serde_json::json!({"a": 1})).unwrap();
        let (head, sig) = token.rsplit_once('.').unwrap();
        let mut flipped = sig.as_bytes().to_vec();
        flipped[5] = if flipped[5] == b'A' { b'B' } else { b'A' };
        let bad_sig = format!("{head}.{}", String::from_utf8(flipped).unwrap());
        assert_eq!(Compact::parse(&bad_sig).unwrap().verify(&key.verifying_key()), Err(JwsError::BadSignature));
        let other = key.sign(&serde_json::json!({"a": 2})).unwrap();
        let spliced = format!("{}.{}", other.rsplit_once('.').unwrap().0, sig);
        assert_eq!(Compact::parse(&spliced).unwrap().verify(&key.verifying_key()), Err(JwsError::BadSignature));
        let (other_key, _) = SigningKey::generate("k1").unwrap();
        assert!(Compact::parse(&token).unwrap().verify(&other_key.verifying_key()).is_err());
    }

    #[test]
    fn rejects_malformed_and_non_es256() {
        assert_eq!(Compact::parse("a.b").unwrap_err(), JwsError::Malformed);
        assert_eq!(Compact::parse("a.b.c.d").unwrap_err(), JwsError::Malformed);
        assert_eq!(Compact::parse("..").unwrap_err(), JwsError::Malformed);
        let hs = b64::encode(r#"{"alg":"HS256","kid":"k"}"#);
        assert_eq!(Compact::parse(&format!("{hs}.e30.c2ln")).unwrap_err(), JwsError::BadHeader);
        let none = b64::encode(r#"{"alg":"none","kid":"k"}"#);
        assert_eq!(Compact::parse(&format!("{none}.e30.c2ln")).unwrap_err(), JwsError::BadHeader);
        let nokid = b64::encode(r#"{"alg":"ES256"}"#);
        assert_eq!(Compact::parse(&format!("{nokid}.e30.c2ln")).unwrap_err(), JwsError::BadHeader);
    }

    #[test]
    fn off_curve_points_are_rejected() {
        assert!(VerifyingKey::from_coordinates("k", &[1u8; 32], &[2u8; 32]).is_err());
        assert!(VerifyingKey::from_coordinates("k", &[1u8; 31], &[2u8; 32]).is_err());
    }
}
