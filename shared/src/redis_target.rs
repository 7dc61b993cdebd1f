//! Where Redis is and how it is trusted: `REDIS_URL` and `REDIS_CA_FILE`, read the same way by
//! both binaries.
//!
//! - Credentials ride in the URL, as the redis crate reads them: `redis://:PASSWORD@host` for
//!   `requirepass`, `redis://USER:PASSWORD@host` for an ACL user. Production refuses a URL without
//!   a password (seed 003: "Use Redis AUTH passwords"): anyone who reaches an open Redis can forge
//!   JTI markers or drop stream entries.
//! - `rediss://` speaks TLS (rustls, TLS ≥ 1.2), verifying the server's certificate and host name
//!   against the system roots, or only against the PEM CAs in `REDIS_CA_FILE` when it is set (a
//!   private CA). The redis crate's `#insecure` fragment is refused: it would switch verification
//!   off, and this build cannot honour it anyway.
//! - Plaintext `redis://` is accepted in production (Redis on the host or a private network), and
//!   the binaries say so at start ([`RedisTarget::is_tls`]).
//!
//! Messages and `Debug` never show the URL's password.

use redis::IntoConnectionInfo as _;

use crate::config_env::Reader;

/// A checked Redis endpoint.
#[derive(Clone)]
pub struct RedisTarget {
    url: String,
    ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTarget").field("tls", &self.is_tls()).field("private_ca", &self.ca_pem.is_some()).finish_non_exhaustive()
    }
}

impl RedisTarget {
    /// Reads `REDIS_URL` (required, or `REDIS_URL_FILE`) and `REDIS_CA_FILE`; every problem goes
    /// to `r`.
    pub fn read(r: &mut Reader<'_>, production: bool) -> Self {
        let url = r.required("REDIS_URL").unwrap_or_default();
        let ca_pem = r.ca_file("REDIS_CA_FILE");
        let target = Self { url, ca_pem };
        if target.url.is_empty() {
            return target;
        }
        match check(&target.url, production) {
            Err(problem) => r.problem("REDIS_URL", problem),
            Ok(tls) => {
                if !tls && (target.ca_pem.is_some() || r.has_problems_for("REDIS_CA_FILE")) {
                    r.problem("REDIS_CA_FILE", "is only used with a rediss:// REDIS_URL");
                }
            }
        }
        target
    }

    /// Whether the connection is TLS (`rediss://`).
    pub fn is_tls(&self) -> bool {
        self.url.starts_with("rediss://")
    }

    /// A client for this endpoint (connections open later, on first use).
    pub fn client(&self) -> redis::RedisResult<redis::Client> {
        match &self.ca_pem {
            None => redis::Client::open(self.url.as_str()),
            Some(ca) => {
                redis::Client::build_with_tls(self.url.as_str(), redis::TlsCertificates { client_tls: None, root_cert: Some(ca.clone()) })
            }
        }
    }
}

/// Checks `url`; `Ok(is_tls)` or the problem (never quoting the URL).
fn check(url: &str, production: bool) -> Result<bool, String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("cannot be parsed: {e}"))?;
    let tls = match parsed.scheme() {
        "redis" => false,
        "rediss" => true,
        _ => return Err("must be a redis:// or rediss:// URL".into()),
    };
    if parsed.fragment().is_some() {
        return Err("must not carry a #fragment (#insecure would switch certificate checks off; use REDIS_CA_FILE for a private CA)".into());
    }
    let info = url.into_connection_info().map_err(|e| format!("cannot be parsed: {e}"))?;
    let has_password = info.redis_settings().password().is_some_and(|p| !p.is_empty());
    if production && !has_password {
        return Err(
            "must carry a password in production: redis://:PASSWORD@host (requirepass) or redis://USER:PASSWORD@host (ACL user)".into()
        );
    }
    Ok(tls)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::config_env::Reader;

    fn read(pairs: &[(&str, &str)], production: bool) -> (RedisTarget, Result<(), crate::config_env::ConfigErrors>) {
        let src: HashMap<String, String> = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let mut r = Reader::new(&src);
        let t = RedisTarget::read(&mut r, production);
        (t, r.finish())
    }

    #[test]
    fn production_needs_a_password_in_the_url() {
        for ok in ["redis://:pw@127.0.0.1:6379", "rediss://caracal:pw@redis.internal:6380/0", "redis://u:p%40ss@h"] {
            let (t, res) = read(&[("REDIS_URL", ok)], true);
            assert!(res.is_ok(), "{ok}: {res:?}");
            assert_eq!(t.is_tls(), ok.starts_with("rediss"));
            t.client().expect("a client is built");
        }
        for bare in ["redis://127.0.0.1:6379", "rediss://caracal@redis.internal", "redis://:@h"] {
            let (_, res) = read(&[("REDIS_URL", bare)], true);
            assert!(res.unwrap_err().mentions("REDIS_URL"), "{bare}");
            assert!(read(&[("REDIS_URL", bare)], false).1.is_ok(), "dev accepts {bare}");
        }
    }

    #[test]
    fn bad_urls_and_misplaced_cas_are_named_without_the_password() {
        for bad in ["http://:hunter2@h", "rediss://:hunter2@h#insecure", "redis://:hunter2@h:port", "redis://:hunter2@h/notadb"] {
            let (_, res) = read(&[("REDIS_URL", bad)], false);
            let errs = res.unwrap_err();
            assert!(errs.mentions("REDIS_URL"), "{bad}: {errs}");
            assert!(!errs.to_string().contains("hunter2"), "{errs}");
        }
        let (_, res) = read(&[("REDIS_URL", "redis://h"), ("REDIS_CA_FILE", "/nonexistent/ca.pem")], false);
        let errs = res.unwrap_err();
        assert!(errs.mentions("REDIS_CA_FILE") && errs.to_string().contains("rediss://"), "{errs}");
        let (t, res) = read(&[("REDIS_URL", "rediss://:secret@h")], false);
        assert!(res.is_ok());
        assert!(!format!("{t:?}").contains("secret"), "Debug hides the URL");
    }
}
