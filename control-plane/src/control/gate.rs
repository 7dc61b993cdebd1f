//! The gate: Control answers only while the operator's gate file exists.
//!
//! Checked on every request with one `stat`, so deleting the file closes Control at once and
//! creating it opens Control again, without a restart or a configuration reload. Denial: 503
//! `control_disabled`. First in the pipeline: a closed Control spends nothing else.

use std::path::Path;

use crate::control::Refusal;

/// `Ok` while the gate file exists.
pub async fn check(path: &Path) -> Result<(), Refusal> {
    match tokio::fs::metadata(path).await {
        Ok(_) => Ok(()),
        Err(_) => Err(Refusal::Disabled),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn open_only_while_the_file_exists() {
        let path = std::env::temp_dir().join(format!("caracal-gate-{}", uuid::Uuid::new_v4()));
        assert_eq!(check(&path).await, Err(Refusal::Disabled));
        std::fs::write(&path, b"").unwrap();
        assert_eq!(check(&path).await, Ok(()));
        std::fs::remove_file(&path).unwrap();
        assert_eq!(check(&path).await, Err(Refusal::Disabled));
    }
}
