//! JSON Web Key Sets for zone signing keys.
//!
//! Every published JWK has `kid`, `kty=EC`, `crv=P-256`, `alg=ES256`, `use=sig` and 32-byte `x`/`y`
//! (DESIGN §9). When reading a set, keys that do not meet these rules are skipped, not fatal.

use serde::{Deserialize, Serialize};

use crate::b64;
use crate::jws::VerifyingKey;

/// One public key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    pub kty: String,
    pub crv: String,
    pub kid: String,
    pub alg: String,
    #[serde(rename = "use", default, skip_serializing_if = "Option::is_none")]
    pub key_use: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_ops: Option<Vec<String>>,
    pub x: String,
    pub y: String,
}

impl Jwk {
    /// A signing key's public half as published.
    pub fn from_coordinates(kid: impl Into<String>, x: &[u8; 32], y: &[u8; 32]) -> Self {
        Self {
            kty: "EC".into(),
            crv: "P-256".into(),
            kid: kid.into(),
            alg: "ES256".into(),
            key_use: Some("sig".into()),
            key_ops: None,
            x: b64::encode(x),
            y: b64::encode(y),
        }
    }

    /// Parses the key if it is a usable ES256 verification key.
    pub fn to_verifying_key(&self) -> Option<VerifyingKey> {
        let usable = self.kty == "EC"
            && self.crv == "P-256"
            && self.alg == "ES256"
            && !self.kid.is_empty()
            && self.key_use.as_deref().is_none_or(|u| u == "sig")
            && self.key_ops.as_ref().is_none_or(|ops| ops.iter().any(|o| o == "verify"));
        if !usable {
            return None;
        }
        let x = b64::decode(&self.x).ok()?;
        let y = b64::decode(&self.y).ok()?;
        VerifyingKey::from_coordinates(self.kid.clone(), &x, &y).ok()
    }
}

/// A key set, newest key first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JwkSet {
    pub keys: Vec<Jwk>,
}

impl JwkSet {
    /// The usable keys of the set; invalid ones are skipped.
    pub fn verifying_keys(&self) -> Vec<VerifyingKey> {
        self.keys.iter().filter_map(Jwk::to_verifying_key).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jws::{Compact, SigningKey};

    #[test]
    fn published_key_verifies_tokens_of_its_signer() {
        let (key, _) = SigningKey::generate("k1").unwrap();
        let (x, y) = key.public_coordinates();
        let set = JwkSet { keys: vec![Jwk::from_coordinates("k1", &x, &y)] };
        let json = serde_json::to_value(&set).unwrap();
        assert_eq!(json["keys"][0]["use"], "sig");
        assert_eq!(json["keys"][0]["x"].as_str().unwrap().len(), 43, "32 bytes, base64url, no padding");
        let parsed: JwkSet = serde_json::from_value(json).unwrap();
        let keys = parsed.verifying_keys();
        assert_eq!(keys.len(), 1);
        let token = key.sign(&serde_json::json!({})).unwrap();
        Compact::parse(&token).unwrap().verify(&keys[0]).unwrap();
    }

    #[test]
    fn unusable_keys_are_skipped() {
        let (key, _) = SigningKey::generate("k1").unwrap();
        let (x, y) = key.public_coordinates();
        let good = Jwk::from_coordinates("k1", &x, &y);
        let mut enc = good.clone();
        enc.key_use = Some("enc".into());
        let mut rs = good.clone();
        rs.alg = "RS256".into();
        let mut short = good.clone();
        short.x = b64::encode([1u8; 31]);
        let mut no_verify = good.clone();
        no_verify.key_ops = Some(vec!["sign".into()]);
        let set = JwkSet { keys: vec![enc, rs, short, no_verify, good] };
        assert_eq!(set.verifying_keys().len(), 1);
    }
}
