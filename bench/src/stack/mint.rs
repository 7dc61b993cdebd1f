//! Minting mandates at the STS (`POST /oauth/2/token`), one at a time or in bulk.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method};
use http_body_util::Full;

use crate::client::{ClientError, Conn};
use crate::load::workload::{Outcome, bearer};
use crate::stack::Demo;

/// RFC 8693 grant type.
pub(crate) const GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// Subject token type of a session mandate.
pub(crate) const ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
/// `requested_token_type` of a gateway mint.
pub(crate) const GATEWAY_MANDATE: &str = "urn:caracal:token-type:gateway-mandate";
const TOKEN_PATH: &str = "/oauth/2/token";

/// Why a mint gave no token.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MintError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("STS answered {0}: {1}")]
    Refused(u16, String),
    #[error("STS answer has no access_token")]
    NoToken,
}

impl MintError {
    /// How a governed request (S4) that failed at its mint is counted.
    pub(crate) fn outcome(&self) -> Outcome {
        match self {
            Self::Client(_) => Outcome::Transport,
            Self::Refused(s, _) => Outcome::Status(*s),
            Self::NoToken => Outcome::Status(200),
        }
    }
}

/// One kind of mint, its form encoded once.
pub(crate) struct Minter {
    sts: SocketAddr,
    form: Bytes,
}

impl Minter {
    /// Session mandates for the demo application.
    pub(crate) fn session(sts: SocketAddr, d: &Demo) -> Self {
        Self::new(sts, &[("grant_type", GRANT), ("zone_id", &d.zone_id), ("application_id", &d.app_id), ("client_secret", &d.secret)])
    }

    /// Gateway mandates for the demo resource, from `session`.
    pub(crate) fn gateway(sts: SocketAddr, d: &Demo, session: &str) -> Self {
        Self::gateway_for(sts, d, session, &d.resource)
    }

    /// Gateway mandates for `resource` (one of the demo's), from `session`.
    pub(crate) fn gateway_for(sts: SocketAddr, d: &Demo, session: &str, resource: &str) -> Self {
        Self::new(
            sts,
            &[
                ("grant_type", GRANT),
                ("zone_id", &d.zone_id),
                ("application_id", &d.app_id),
                ("client_secret", &d.secret),
                ("subject_token", session),
                ("subject_token_type", ACCESS_TOKEN),
                ("requested_token_type", GATEWAY_MANDATE),
                ("resource", resource),
                ("scope", &d.scope),
            ],
        )
    }

    fn new(sts: SocketAddr, pairs: &[(&str, &str)]) -> Self {
        let form = form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish();
        Self { sts, form: Bytes::from(form) }
    }

    /// The STS address.
    pub(crate) fn sts(&self) -> SocketAddr {
        self.sts
    }

    /// Mints one mandate over `conn`.
    pub(crate) async fn mint(&self, conn: &mut Conn) -> Result<String, MintError> {
        let req = conn
            .request(Method::POST, TOKEN_PATH)
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Full::new(self.form.clone()))
            .expect("static request parts are valid");
        let (status, body) = conn.fetch(req).await?;
        if !status.is_success() {
            return Err(MintError::Refused(status.as_u16(), String::from_utf8_lossy(&body).into_owned()));
        }
        access_token(&body).map(str::to_owned).ok_or(MintError::NoToken)
    }

    /// Mints `n` mandates over `concurrency` connections.
    pub(crate) async fn mint_many(self: &Arc<Self>, n: usize, concurrency: usize) -> Result<Vec<String>, MintError> {
        mint_cycle(std::slice::from_ref(self), n, concurrency).await
    }
}

/// Mints `n` mandates over `concurrency` connections, the `i`-th from `minters[i % len]`, returned
/// in that order (so consuming them in order cycles through the minters' zones). All minters share
/// one STS.
pub(crate) async fn mint_cycle(minters: &[Arc<Minter>], n: usize, concurrency: usize) -> Result<Vec<String>, MintError> {
    let Some(first) = minters.first() else { return Ok(Vec::new()) };
    let minters: Arc<[Arc<Minter>]> = minters.into();
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (minters, next, sts) = (minters.clone(), next.clone(), first.sts);
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::new(sts);
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok::<_, MintError>(out);
                }
                out.push((i, minters[i % minters.len()].mint(&mut conn).await?));
            }
        }));
    }
    let mut all = Vec::with_capacity(n);
    for t in tasks {
        all.extend(t.await.expect("mint tasks do not panic")?);
    }
    all.sort_unstable_by_key(|(i, _)| *i);
    Ok(all.into_iter().map(|(_, t)| t).collect())
}

/// The `access_token` of a token answer, read without a JSON tree (the value is base64url and dots).
pub(crate) fn access_token(body: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(body).ok()?;
    let start = text.find("\"access_token\":\"")? + "\"access_token\":\"".len();
    let len = text[start..].find('"')?;
    Some(&text[start..start + len])
}

/// Pre-minted single-use mandates, handed out once each.
pub(crate) struct MandatePool {
    bearers: Vec<HeaderValue>,
    next: AtomicUsize,
}

impl MandatePool {
    /// A pool of `tokens`.
    pub(crate) fn new(tokens: &[String]) -> Self {
        Self { bearers: tokens.iter().map(|t| bearer(t)).collect(), next: AtomicUsize::new(0) }
    }

    /// The next unused mandate as an `Authorization` value.
    pub(crate) fn take(&self) -> Option<HeaderValue> {
        self.bearers.get(self.next.fetch_add(1, Ordering::Relaxed)).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_access_token() {
        let body = br#"{"access_token":"eyJh.eyJi.c2ln","issued_token_type":"urn:x","token_type":"Bearer"}"#;
        assert_eq!(access_token(body), Some("eyJh.eyJi.c2ln"));
        assert_eq!(access_token(br#"{"error":"invalid_client"}"#), None);
    }

    #[test]
    fn a_pool_hands_each_mandate_out_once() {
        let pool = MandatePool::new(&["a".into(), "b".into()]);
        assert_eq!(pool.take().unwrap(), "Bearer a");
        assert_eq!(pool.take().unwrap(), "Bearer b");
        assert!(pool.take().is_none());
        assert!(pool.take().is_none());
    }
}
