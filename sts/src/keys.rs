//! Zone signing keys: generation, sealing under `ZONE_KEK`, rotation, and the in-memory key sets the
//! mint path signs with.
//!
//! Keys are P-256. The PKCS#8 document is sealed with AES-256-GCM under the KEK, with the zone and
//! kid as associated data so a sealed row cannot be moved to another zone or key id. Decrypted keys
//! live only in memory, loaded once per zone (DESIGN §8).
//!
//! Rotation publishes before it signs: a new key gets `not_before = now + KEY_ACTIVATION_DELAY`, is
//! served in the JWKS at once, and signs only after verifiers that cache the JWKS for five minutes
//! have seen it (DESIGN §9). The JWKS serves the two newest keys; while a rotation is pending a
//! second one is refused, so the current signer is always one of the two published keys.

use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use caracal_shared::jwks::{Jwk, JwkSet};
use caracal_shared::jws::{SigningKey, VerifyingKey};
use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, Transaction};

use crate::error::StsError;

const SEAL_VERSION: u8 = 1;

/// The key-encryption key, with a short id that tells a wrong KEK from corrupted data.
pub struct Kek {
    key: LessSafeKey,
    id: String,
}

impl Kek {
    /// Wraps 32 key bytes.
    pub fn new(bytes: &[u8; 32]) -> Self {
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, bytes).expect("32-byte AES key"));
        let id = caracal_shared::sig::sha256_hex(bytes)[..16].to_owned();
        Self { key, id }
    }

    /// The KEK id stored beside each sealed value.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Seals `plaintext` bound to `aad`: `version ‖ nonce ‖ ciphertext ‖ tag`.
    pub fn seal(&self, aad: &str, plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).expect("system RNG failed");
        let mut buf = plaintext.to_vec();
        self.key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad.as_bytes()), &mut buf).expect("AES-GCM seal");
        let mut out = Vec::with_capacity(1 + NONCE_LEN + buf.len());
        out.push(SEAL_VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&buf);
        out
    }

    /// Opens a value sealed by [`Kek::seal`] with the same `aad`.
    pub fn open(&self, aad: &str, sealed: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < 1 + NONCE_LEN + 16 || sealed[0] != SEAL_VERSION {
            return None;
        }
        let nonce = Nonce::try_assume_unique_for_key(&sealed[1..1 + NONCE_LEN]).ok()?;
        let mut buf = sealed[1 + NONCE_LEN..].to_vec();
        let plain = self.key.open_in_place(nonce, Aad::from(aad.as_bytes()), &mut buf).ok()?;
        Some(plain.to_vec())
    }
}

fn seal_aad(zone_id: &str, kid: &str) -> String {
    format!("caracal/zone-signing-key/{zone_id}/{kid}")
}

/// One zone key, decrypted.
pub struct ZoneKey {
    pub seq: i64,
    pub not_before: DateTime<Utc>,
    pub signer: SigningKey,
    pub verifier: VerifyingKey,
}

/// A zone's published keys (newest first, at most two) and its JWKS body.
pub struct ZoneKeys {
    keys: Vec<ZoneKey>,
    jwks_json: bytes::Bytes,
}

impl ZoneKeys {
    /// The key that signs now: the newest whose `not_before` has passed.
    pub fn signer(&self, now: DateTime<Utc>) -> Option<&SigningKey> {
        self.keys.iter().find(|k| k.not_before <= now).map(|k| &k.signer)
    }

    /// A published key by id.
    pub fn verifier(&self, kid: &str) -> Option<&VerifyingKey> {
        self.keys.iter().find(|k| k.verifier.kid() == kid).map(|k| &k.verifier)
    }

    /// The JWKS document, serialized once.
    pub fn jwks_json(&self) -> bytes::Bytes {
        self.jwks_json.clone()
    }
}

/// Result of a rotation.
#[derive(Debug, serde::Serialize)]
pub struct Rotation {
    pub rotated: bool,
    pub zone_id: String,
    pub kid: String,
    /// When the new key starts signing.
    pub not_before: DateTime<Utc>,
}

/// Why a rotation was refused.
#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    #[error("a rotation is already pending until {0}")]
    Pending(DateTime<Utc>),
    #[error("zone not found")]
    ZoneNotFound,
    #[error(transparent)]
    Sts(#[from] StsError),
}

/// `(kid, seq, sealed_private, kek_id, not_before)`.
type KeyRow = (String, i64, Vec<u8>, String, DateTime<Utc>);

/// Loads, caches, creates and rotates zone keys.
pub struct KeyStore {
    db: PgPool,
    kek: Kek,
    activation_delay: Duration,
    cache: moka::future::Cache<String, Arc<ZoneKeys>>,
}

impl KeyStore {
    /// A store over `db`, sealing with `kek`.
    pub fn new(db: PgPool, kek: Kek, activation_delay: Duration) -> Self {
        // The TTL only bounds how long another instance's rotation stays unseen here; the
        // rotating instance invalidates its own entry at once.
        let cache = moka::future::Cache::builder().max_capacity(100_000).time_to_live(Duration::from_secs(60)).build();
        Self { db, kek, activation_delay, cache }
    }

    /// The zone's keys, loaded from Postgres once and kept in memory. `ZoneNotFound` if it has none.
    pub async fn zone(&self, zone_id: &str) -> Result<Arc<ZoneKeys>, StsError> {
        self.cache.try_get_with_by_ref(zone_id, self.load(zone_id)).await.map_err(|e: Arc<StsError>| match &*e {
            StsError::ZoneNotFound => StsError::ZoneNotFound,
            other => StsError::Unavailable(other.to_string()),
        })
    }

    /// The key-encryption key (also seals provider credentials).
    pub fn kek(&self) -> &Kek {
        &self.kek
    }

    /// Drops the cached keys of a zone (after a rotation).
    pub async fn invalidate(&self, zone_id: &str) {
        self.cache.invalidate(zone_id).await;
    }

    async fn load(&self, zone_id: &str) -> Result<Arc<ZoneKeys>, StsError> {
        let rows: Vec<KeyRow> = sqlx::query_as(
            "SELECT kid, seq, sealed_private, kek_id, not_before FROM signing_keys \
             WHERE zone_id = $1 ORDER BY seq DESC LIMIT 2",
        )
        .bind(zone_id)
        .fetch_all(&self.db)
        .await?;
        if rows.is_empty() {
            return Err(StsError::ZoneNotFound);
        }
        let mut keys = Vec::with_capacity(rows.len());
        for (kid, seq, sealed, kek_id, not_before) in rows {
            if kek_id != self.kek.id() {
                return Err(StsError::Internal(format!(
                    "signing key {kid} of zone {zone_id} is sealed under KEK {kek_id}, not the configured ZONE_KEK ({})",
                    self.kek.id()
                )));
            }
            let pkcs8 = self
                .kek
                .open(&seal_aad(zone_id, &kid), &sealed)
                .ok_or_else(|| StsError::Internal(format!("signing key {kid} of zone {zone_id} does not decrypt")))?;
            let signer = SigningKey::from_pkcs8(kid.clone(), &pkcs8)
                .map_err(|_| StsError::Internal(format!("signing key {kid} is not a P-256 PKCS#8 key")))?;
            let verifier = signer.verifying_key();
            keys.push(ZoneKey { seq, not_before, signer, verifier });
        }
        let set = JwkSet {
            keys: keys
                .iter()
                .map(|k| {
                    let (x, y) = k.signer.public_coordinates();
                    Jwk::from_coordinates(k.signer.kid(), &x, &y)
                })
                .collect(),
        };
        let jwks_json = bytes::Bytes::from(serde_json::to_vec(&set).expect("JWKS serializes"));
        Ok(Arc::new(ZoneKeys { keys, jwks_json }))
    }

    /// Creates a zone's first key, signing at once (nobody can have cached the zone's JWKS yet).
    pub async fn create_initial(&self, tx: &mut Transaction<'_, Postgres>, zone_id: &str) -> Result<String, StsError> {
        let kid = uuid::Uuid::now_v7().to_string();
        self.insert(tx, zone_id, &kid, 1, Utc::now()).await?;
        Ok(kid)
    }

    /// Adds a new key that starts signing after the activation delay, inside `tx` (the caller
    /// commits, with the outbox message announcing it, then calls [`KeyStore::invalidate`]).
    pub async fn rotate(&self, tx: &mut Transaction<'_, Postgres>, zone_id: &str) -> Result<Rotation, RotateError> {
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('caracal.signing_keys:' || $1))")
            .bind(zone_id)
            .execute(&mut **tx)
            .await
            .map_err(StsError::from)?;
        let zone_live: Option<(bool,)> = sqlx::query_as("SELECT archived_at IS NULL FROM zones WHERE id = $1")
            .bind(zone_id)
            .fetch_optional(&mut **tx)
            .await
            .map_err(StsError::from)?;
        if !matches!(zone_live, Some((true,))) {
            return Err(RotateError::ZoneNotFound);
        }
        let newest: Option<(i64, DateTime<Utc>)> =
            sqlx::query_as("SELECT seq, not_before FROM signing_keys WHERE zone_id = $1 ORDER BY seq DESC LIMIT 1")
                .bind(zone_id)
                .fetch_optional(&mut **tx)
                .await
                .map_err(StsError::from)?;
        let now = Utc::now();
        if let Some((_, nb)) = newest
            && nb > now
        {
            return Err(RotateError::Pending(nb));
        }
        let seq = newest.map_or(1, |(s, _)| s + 1);
        let not_before = now + chrono::Duration::from_std(self.activation_delay).unwrap_or_default();
        let kid = uuid::Uuid::now_v7().to_string();
        self.insert(tx, zone_id, &kid, seq, not_before).await?;
        Ok(Rotation { rotated: true, zone_id: zone_id.to_owned(), kid, not_before })
    }

    async fn insert(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        zone_id: &str,
        kid: &str,
        seq: i64,
        not_before: DateTime<Utc>,
    ) -> Result<(), StsError> {
        let (key, pkcs8) = SigningKey::generate(kid).map_err(|e| StsError::Internal(format!("key generation: {e}")))?;
        let (x, y) = key.public_coordinates();
        let sealed = self.kek.seal(&seal_aad(zone_id, kid), &pkcs8);
        sqlx::query(
            "INSERT INTO signing_keys (zone_id, kid, seq, public_x, public_y, sealed_private, kek_id, not_before) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(zone_id)
        .bind(kid)
        .bind(seq)
        .bind(&x[..])
        .bind(&y[..])
        .bind(&sealed)
        .bind(self.kek.id())
        .bind(not_before)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_round_trips_and_binds_associated_data() {
        let kek = Kek::new(&[7u8; 32]);
        let sealed = kek.seal("zone-a/k1", b"secret key");
        assert_eq!(kek.open("zone-a/k1", &sealed).unwrap(), b"secret key");
        assert!(kek.open("zone-b/k1", &sealed).is_none(), "a sealed key cannot move to another zone");
        assert!(Kek::new(&[8u8; 32]).open("zone-a/k1", &sealed).is_none(), "another KEK cannot open it");
        let mut flipped = sealed.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(kek.open("zone-a/k1", &flipped).is_none(), "tampering is detected");
        assert_ne!(kek.seal("zone-a/k1", b"secret key"), sealed, "nonces are fresh");
    }

    #[test]
    fn signer_is_newest_active_key() {
        let now = Utc::now();
        let mk = |seq: i64, nb: DateTime<Utc>| {
            let (signer, _) = SigningKey::generate(format!("k{seq}")).unwrap();
            let verifier = signer.verifying_key();
            ZoneKey { seq, not_before: nb, signer, verifier }
        };
        let keys = ZoneKeys {
            keys: vec![mk(2, now + chrono::Duration::seconds(300)), mk(1, now - chrono::Duration::seconds(10))],
            jwks_json: bytes::Bytes::new(),
        };
        assert_eq!(keys.signer(now).unwrap().kid(), "k1", "a pending key must not sign yet");
        assert_eq!(keys.signer(now + chrono::Duration::seconds(301)).unwrap().kid(), "k2");
        assert!(keys.verifier("k2").is_some(), "a pending key is already published");
        assert_eq!(keys.keys[0].seq, 2);
    }
}
