//! ES256 compact JWS: the one signature format mandates use.
//!
//! Written on aws-lc-rs directly rather than through `jsonwebtoken` because the mint path and the
//! gateway sign and verify on every request: `jsonwebtoken` re-parses the PKCS#8 key (a scalar
//! multiplication) on every signature and clones the public key on every verification, while here the
//! key pair and the parsed public key are built once. Signatures are JOSE `r‖s` (64 bytes), never
//! DER. The e2e tests verify our output with `jsonwebtoken` as an independent implementation.
//!
//! **Issuer tag.** Every governed request brings a gateway mandate back to the STS that issued it, in
//! the gateway's exchange, after the gateway verified its ES256 signature. Verifying it a second time
//! proves to the STS only what a MAC under a key it alone holds proves, at a fiftieth of the cost, so
//! every token carries one in its protected header: `ctag` = the first 16 bytes of HMAC-SHA256 over the
//! payload segment, keyed by HKDF of the signing key's PKCS#8 document with the `kid` as info (every
//! STS instance holding the key derives the same tag key; it rotates and retires with the key).
//! Verifiers that hold only the public key ignore the field, as RFC 7515 §4 has them do with any
//! header parameter they do not understand; the gateway still checks the signature. The STS accepts
//! the tag only from the gateway's signed exchange: a client presenting a mandate is held to the
//! signature, so a token whose claims are genuine but whose signature bytes are not is refused.

use aws_lc_rs::hkdf::{HKDF_SHA256, Salt};
use aws_lc_rs::hmac;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _, ParsedPublicKey};
use serde::Serialize;
use serde::de::DeserializeOwned;
use subtle::ConstantTimeEq as _;

use crate::b64;

/// Bytes of the issuer tag kept (128 bits).
pub const TAG_LEN: usize = 16;

/// HKDF salt of the issuer tag key (domain separation from every other use of the signing key).
const TAG_SALT: &[u8] = b"caracal/mandate-issuer-tag/v1";

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
    #[serde(borrow, default)]
    ctag: Option<std::borrow::Cow<'a, str>>,
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
    /// The issuer tag of the header, if it has one (module docs).
    pub tag: Option<[u8; TAG_LEN]>,
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
        let tag = match h.ctag {
            None => None,
            Some(t) => Some(b64::decode(t.as_bytes()).ok().and_then(|b| <[u8; TAG_LEN]>::try_from(b).ok()).ok_or(JwsError::BadHeader)?),
        };
        let kid = h.kid.into_owned();
        Ok(Self { signing_input, payload, signature, kid, tag })
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

/// A P-256 private key with its `kid`, its issuer tag key, and the start of the header it signs under.
pub struct SigningKey {
    kid: String,
    pair: EcdsaKeyPair,
    tag_key: hmac::Key,
    /// The header JSON up to the tag's value: `{"alg":"ES256","typ":"JWT","kid":…,"ctag":"`.
    header_head: String,
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
        let prk = Salt::new(HKDF_SHA256, TAG_SALT).extract(pkcs8);
        let tag_key = hmac::Key::from(prk.expand(&[kid.as_bytes()], hmac::HMAC_SHA256).map_err(|_| JwsError::BadKey)?);
        let kid_json = serde_json::to_string(&kid).map_err(|_| JwsError::BadKey)?;
        let header_head = format!(r#"{{"alg":"ES256","typ":"JWT","kid":{kid_json},"ctag":""#);
        Ok(Self { kid, pair, tag_key, header_head, rng: SystemRandom::new() })
    }

    /// Whether `token` carries this key's issuer tag over its payload: then this key's holder issued
    /// exactly these claims (module docs). `false` says nothing; verify the signature instead.
    pub fn tagged(&self, token: &Compact<'_>) -> bool {
        token.kid == self.kid && token.tag.is_some_and(|t| bool::from(self.tag(token.payload).ct_eq(&t)))
    }

    fn tag(&self, payload_b64: &str) -> [u8; TAG_LEN] {
        let mac = hmac::sign(&self.tag_key, payload_b64.as_bytes());
        mac.as_ref()[..TAG_LEN].try_into().expect("HMAC-SHA256 is 32 bytes")
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
        let payload = b64::encode(serde_json::to_vec(claims).map_err(|_| JwsError::BadClaims)?);
        let mut header = String::with_capacity(self.header_head.len() + 24);
        header.push_str(&self.header_head);
        header.push_str(&b64::encode(self.tag(&payload)));
        header.push_str("\"}");
        let header = b64::encode(header);
        let mut token = String::with_capacity(header.len() + payload.len() + 88);
        token.push_str(&header);
        token.push('.');
        token.push_str(&payload);
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
    fn issuer_tag_vouches_only_for_the_exact_payload_under_the_same_key() {
        let (key, pkcs8) = SigningKey::generate("k1").unwrap();
        let token = key.sign(&serde_json::json!({"a": 1})).unwrap();
        let c = Compact::parse(&token).unwrap();
        let header: serde_json::Value = serde_json::from_slice(&b64::decode(token.split('.').next().unwrap()).unwrap()).unwrap();
        assert_eq!((header["alg"].as_str(), header["typ"].as_str(), header["kid"].as_str()), (Some("ES256"), Some("JWT"), Some("k1")));
        assert!(key.tagged(&c));
        c.verify(&key.verifying_key()).unwrap();
        assert!(SigningKey::from_pkcs8("k1", &pkcs8).unwrap().tagged(&c), "another instance holding the key derives the same tag key");
        assert!(!SigningKey::from_pkcs8("k2", &pkcs8).unwrap().tagged(&c), "the kid is part of the derivation and must match");
        assert!(!SigningKey::generate("k1").unwrap().0.tagged(&c), "another key with the same kid");
        // The payload of another token under the first token's header (and so its tag): not vouched for.
        let other = key.sign(&serde_json::json!({"a": 2})).unwrap();
        let (h1, p2) = (token.split('.').next().unwrap(), other.split('.').nth(1).unwrap());
        let spliced = format!("{h1}.{p2}.{}", c.signature);
        assert!(!key.tagged(&Compact::parse(&spliced).unwrap()));
        // Untagged tokens (issued before tags existed) parse, and are never vouched for.
        let untagged = format!("{}.{}.{}", b64::encode(r#"{"alg":"ES256","kid":"k1"}"#), c.payload, c.signature);
        let u = Compact::parse(&untagged).unwrap();
        assert_eq!(u.tag, None);
        assert!(!key.tagged(&u));
        // A tag of the wrong length is a malformed header.
        let short = b64::encode(r#"{"alg":"ES256","kid":"k1","ctag":"AAAA"}"#);
        assert_eq!(Compact::parse(&format!("{short}.e30.c2ln")).unwrap_err(), JwsError::BadHeader);
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
