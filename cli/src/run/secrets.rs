//! The stack's keys: generated once into `secrets.env` (mode 0600) and kept, since the zone signing
//! keys in Postgres are sealed with its `ZONE_KEK`. A key missing from an older file is added.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use crate::error::RunError;
use crate::layout::{read_env_file, write_env_file};

/// Every key, with the number of random bytes it gets (hex encoded).
const KEYS: [(&str, usize); 6] = [
    ("ZONE_KEK", 32),
    ("STREAMS_HMAC_KEY", 32),
    ("GATEWAY_STS_HMAC_KEY", 32),
    ("AUDIT_HMAC_KEY", 32),
    ("AUDIT_CHAIN_KEY", 32),
    ("BOOTSTRAP_ADMIN_TOKEN", 32),
];

/// The keys of `path`, completed and written back when one was missing.
pub(crate) fn ensure(path: &Path) -> Result<BTreeMap<String, String>, RunError> {
    let mut pairs = read_env_file(path)?;
    let mut added = false;
    for (name, bytes) in KEYS {
        if !pairs.iter().any(|(k, _)| k == name) {
            pairs.push((name.to_owned(), random_hex(bytes)?));
            added = true;
        }
    }
    if added {
        write_env_file(path, &pairs)?;
    }
    Ok(pairs.into_iter().collect())
}

fn random_hex(bytes: usize) -> Result<String, RunError> {
    let path = Path::new("/dev/urandom");
    let mut buf = vec![0u8; bytes];
    std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut buf)).map_err(RunError::file(path))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}
