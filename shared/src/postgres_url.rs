//! Postgres connection URLs (`DATABASE_URL`, `AUDIT_DATABASE_URL`), checked the way the driver
//! reads them.
//!
//! The URL is parsed by sqlx's own [`PgConnectOptions`] parser, so the TLS mode checked here is the
//! one the connection will use (`sslmode` or its alias `ssl-mode`, `PGSSLMODE` when the URL has
//! none) — a substring match would pass `?application_name=sslmode=require` or miss `ssl-mode`.
//! Production refuses a network connection without `sslmode=require`, `verify-ca` or
//! `verify-full` (seed 003: session tokens, policies and audit records cross this link); a Unix
//! socket (`?host=/run/postgresql`) never leaves the host and is accepted. A private CA is named
//! with `sslrootcert=/path/ca.pem` in the URL. Messages never repeat the URL (it may hold a
//! password).

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgSslMode};

use crate::config_env::Reader;

/// Why a Postgres URL is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PostgresUrlError {
    /// Not a `postgres://` / `postgresql://` URL.
    #[error("must be a postgres:// or postgresql:// URL")]
    Scheme,
    /// The driver cannot parse it.
    #[error("cannot be parsed: {0}")]
    Parse(String),
    /// A network connection without TLS, in production.
    #[error("must use TLS in production: add sslmode=require, sslmode=verify-ca or sslmode=verify-full (now {0})")]
    Plaintext(&'static str),
}

/// Parses `url` as the driver will, and in production requires TLS on a network connection.
pub fn check(url: &str, production: bool) -> Result<PgConnectOptions, PostgresUrlError> {
    let parsed = url::Url::parse(url).map_err(|e| PostgresUrlError::Parse(e.to_string()))?;
    if !matches!(parsed.scheme(), "postgres" | "postgresql") {
        return Err(PostgresUrlError::Scheme);
    }
    let options = PgConnectOptions::from_str(url).map_err(|e| PostgresUrlError::Parse(e.to_string()))?;
    let mode = options.get_ssl_mode();
    let encrypted = matches!(mode, PgSslMode::Require | PgSslMode::VerifyCa | PgSslMode::VerifyFull);
    if production && !encrypted && options.get_socket().is_none() {
        return Err(PostgresUrlError::Plaintext(mode_name(mode)));
    }
    Ok(options)
}

fn mode_name(mode: PgSslMode) -> &'static str {
    match mode {
        PgSslMode::Disable => "sslmode=disable",
        PgSslMode::Allow => "sslmode=allow",
        PgSslMode::Prefer => "sslmode=prefer, the default",
        PgSslMode::Require => "sslmode=require",
        PgSslMode::VerifyCa => "sslmode=verify-ca",
        PgSslMode::VerifyFull => "sslmode=verify-full",
    }
}

impl Reader<'_> {
    /// The Postgres URL in `name` (or `NAME_FILE`), checked by [`check`]; problems are recorded
    /// and the URL is still returned so callers can tell "unset" from "wrong".
    pub fn postgres_url(&mut self, name: &str, production: bool) -> Option<String> {
        let url = self.optional(name)?;
        if let Err(e) = check(&url, production) {
            self.problem(name, e.to_string());
        }
        Some(url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn production_requires_tls_read_as_the_driver_reads_it() {
        for ok in [
            "postgres://u:p@db.internal/caracal?sslmode=require",
            "postgresql://u@db.internal:5433/caracal?sslmode=verify-full&sslrootcert=/etc/caracal/pg-ca.pem",
            "postgres://u@db.internal/caracal?ssl-mode=verify-ca",
            "postgres:///caracal?host=/run/postgresql",
        ] {
            assert!(check(ok, true).is_ok(), "{ok}: {:?}", check(ok, true).err());
        }
        for plaintext in [
            "postgres://u@db.internal/caracal",
            "postgres://u@db.internal/caracal?sslmode=prefer",
            "postgres://u@db.internal/caracal?sslmode=disable",
            // A substring check would have let these through.
            "postgres://u@db.internal/caracal?application_name=sslmode=require",
            "postgres://u@db.internal/sslmode=verify-full",
        ] {
            assert!(matches!(check(plaintext, true), Err(PostgresUrlError::Plaintext(_))), "{plaintext}");
            assert!(check(plaintext, false).is_ok(), "dev accepts {plaintext}");
        }
    }

    #[test]
    fn malformed_urls_are_named_without_their_secrets() {
        assert_eq!(check("mysql://u@db/x", false).unwrap_err(), PostgresUrlError::Scheme);
        for bad in ["postgres://u:hunter2@db.internal:port/caracal", "postgres://u:hunter2@db/x?sslmode=sometimes", "not a url hunter2"] {
            let e = check(bad, false).unwrap_err();
            assert!(matches!(e, PostgresUrlError::Parse(_)), "{bad}: {e}");
            assert!(!e.to_string().contains("hunter2"), "{e}");
        }
    }
}
