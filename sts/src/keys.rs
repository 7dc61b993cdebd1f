//! Zone signing keys: generation, sealing under `ZONE_KEK`, rotation, and the in-memory key sets the
//! mint path signs with.
//!
//! Keys are P-256. The PKCS#8 document is sealed with AES-256-GCM under the KEK, with the zone and
//! kid as associated data so a sealed row cannot be moved to another zone or key id. Decrypted keys
//! live only in memory, loaded once per zone (DESIGN §8).
//!
//! Rotation publishes before it signs: a new key gets `not_before = now + KEY_ACTIVATION_DELAY`, is
//! served in the JWKS at once, and signs only after verifiers that cache the JWKS for five minutes
//! have seen it (DESIGN §9). While a rotation is pending a second one is refused.
//!
//! Which keys are published (JWKS) and accepted (subject tokens): every key that is pending, signs
//! now, or stopped signing less than [`RETIRED_KEY_GRACE`] ago — the longest mandate lifetime plus
//! a margin — so however quickly keys are rotated, no key is dropped while a mandate it signed can
//! still be valid. To keep the set small a rotation is refused once [`MAX_PUBLISHED_KEYS`] are
//! published; the oldest leaves the set as its mandates expire.
//!
//! Only live zones have keys: an archived zone's key set is "not found" (404 at the JWKS, no mint),
//! like an unknown zone's, and unknown ids are answered from the [`ZoneDirectory`] without a query.

use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use caracal_shared::jwks::{Jwk, JwkSet};
use caracal_shared::jws::{SigningKey, VerifyingKey};
use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, Transaction};

use crate::error::StsError;
use crate::zone_directory::ZoneDirectory;

const SEAL_VERSION: u8 = 1;

/// How long a key that stopped signing stays published: the longest mandate lifetime
/// (`SESSION_TTL_CAP`) plus five minutes for clock skew and for instances whose cached key set
/// still signed with it briefly after the switch.
pub const RETIRED_KEY_GRACE: Duration = Duration::from_secs(crate::config::SESSION_TTL_CAP + 300);

/// Most keys a zone publishes at once; a rotation beyond is refused until the oldest retires.
pub const MAX_PUBLISHED_KEYS: i64 = 8;

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

/// A zone's published keys (newest first) and its JWKS body.
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
    pub fn key(&self, kid: &str) -> Option<&ZoneKey> {
        self.keys.iter().find(|k| k.verifier.kid() == kid)
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
    /// [`MAX_PUBLISHED_KEYS`] are published; the oldest retires at the given time.
    #[error("too many published keys until {0}")]
    TooManyKeys(DateTime<Utc>),
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
    directory: Arc<ZoneDirectory>,
    /// Key-set loads from Postgres, by outcome (`found`, `not_found`, `error`).
    loads: prometheus::IntCounterVec,
}

impl KeyStore {
    /// A store over `db`, sealing with `kek`, answering unknown zones from `directory`; registers
    /// its metrics in `registry`.
    pub fn new(
        db: PgPool,
        kek: Kek,
        activation_delay: Duration,
        directory: Arc<ZoneDirectory>,
        registry: &prometheus::Registry,
    ) -> Result<Self, prometheus::Error> {
        // The TTL only bounds how long another instance's rotation stays unseen here if its
        // `caracal.keys.invalidate` message were lost; the rotating instance invalidates at once.
        let cache = moka::future::Cache::builder().max_capacity(100_000).time_to_live(Duration::from_secs(60)).build();
        let loads = prometheus::IntCounterVec::new(
            prometheus::Opts::new("caracal_sts_zone_key_loads_total", "Zone key sets loaded from Postgres, by outcome."),
            &["outcome"],
        )?;
        registry.register(Box::new(loads.clone()))?;
        Ok(Self { db, kek, activation_delay, cache, directory, loads })
    }

    /// The keys of a live zone, loaded from Postgres once and kept in memory. `ZoneNotFound` for
    /// an unknown or archived zone (an unknown id costs no key query: see [`ZoneDirectory`]).
    pub async fn zone(&self, zone_id: &str) -> Result<Arc<ZoneKeys>, StsError> {
        if let Some(keys) = self.cache.get(zone_id).await {
            return Ok(keys);
        }
        if !self.directory.is_live(zone_id).await? {
            return Err(StsError::ZoneNotFound);
        }
        self.cache.try_get_with_by_ref(zone_id, self.load(zone_id)).await.map_err(|e: Arc<StsError>| match &*e {
            StsError::ZoneNotFound => {
                self.directory.remove(zone_id);
                StsError::ZoneNotFound
            }
            other => StsError::Unavailable(other.to_string()),
        })
    }

    /// The key-encryption key (also seals provider credentials).
    pub fn kek(&self) -> &Kek {
        &self.kek
    }

    /// Forgets what this instance knows of a zone's keys and existence (after a rotation, a
    /// zone's creation or archive, here or announced on `caracal.keys.invalidate`).
    pub async fn invalidate(&self, zone_id: &str) {
        self.cache.invalidate(zone_id).await;
        self.directory.mark_stale();
    }

    async fn load(&self, zone_id: &str) -> Result<Arc<ZoneKeys>, StsError> {
        let rows = self.published_rows(zone_id).await;
        let outcome = match &rows {
            Ok(r) if r.is_empty() => "not_found",
            Ok(_) => "found",
            Err(_) => "error",
        };
        self.loads.with_label_values(&[outcome]).inc();
        let rows = rows?;
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

    /// The published keys of a live zone, newest first (module docs: pending, signing, or retired
    /// less than [`RETIRED_KEY_GRACE`] ago).
    async fn published_rows(&self, zone_id: &str) -> Result<Vec<KeyRow>, sqlx::Error> {
        sqlx::query_as(
            "SELECT k.kid, k.seq, k.sealed_private, k.kek_id, k.not_before \
             FROM signing_keys k JOIN zones z ON z.id = k.zone_id AND z.archived_at IS NULL \
             WHERE k.zone_id = $1 AND k.seq >= COALESCE( \
                 (SELECT max(o.seq) FROM signing_keys o WHERE o.zone_id = $1 AND o.not_before <= $2), 0) \
             ORDER BY k.seq DESC LIMIT $3",
        )
        .bind(zone_id)
        .bind(retired_before(Utc::now()))
        .bind(MAX_PUBLISHED_KEYS)
        .fetch_all(&self.db)
        .await
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
        // Published now: the keys from the one that signed at the grace cut-off on. When the set
        // is full, the oldest published key's successor started signing at `retires`; the oldest
        // leaves the set a grace period after that.
        let (published, retires): (i64, Option<DateTime<Utc>>) = sqlx::query_as(
            "WITH p AS (SELECT seq, not_before FROM signing_keys WHERE zone_id = $1 AND seq >= COALESCE( \
                 (SELECT max(o.seq) FROM signing_keys o WHERE o.zone_id = $1 AND o.not_before <= $2), 0)) \
             SELECT count(*), (SELECT not_before FROM p ORDER BY seq LIMIT 1 OFFSET 1) FROM p",
        )
        .bind(zone_id)
        .bind(retired_before(now))
        .fetch_one(&mut **tx)
        .await
        .map_err(StsError::from)?;
        if published >= MAX_PUBLISHED_KEYS {
            let grace = chrono::Duration::from_std(RETIRED_KEY_GRACE).unwrap_or_default();
            return Err(RotateError::TooManyKeys(retires.unwrap_or(now) + grace));
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

/// Keys whose successor started signing at or before this instant are no longer needed.
fn retired_before(now: DateTime<Utc>) -> DateTime<Utc> {
    now - chrono::Duration::from_std(RETIRED_KEY_GRACE).unwrap_or_default()
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
        assert!(keys.key("k2").is_some(), "a pending key is already published");
        assert_eq!(keys.keys[0].seq, 2);
    }
}
