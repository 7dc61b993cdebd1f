//! Fetching a subject issuer's JWKS: a bounded client, because the URL is an admin's input and
//! the fetch runs inside the control plane's network (SSRF).
//!
//! HTTPS only, no redirects, a 5 s deadline, at most 256 KiB, and only public addresses unless the
//! host is listed in `SUBJECT_ISSUER_PRIVATE_HOSTS` (cloud metadata addresses never). The host is
//! checked after resolution, by the client's own resolver, so a name cannot be re-pointed between
//! the check and the connection. A fetched set is cached 10 minutes per issuer row and URL; a
//! failed fetch is never cached and a stale set is never served.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::jwk::JwkSet;

/// Largest JWKS document accepted.
pub const MAX_JWKS_BYTES: usize = 256 * 1024;
/// Deadline of one fetch, connection included.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a fetched set is used.
pub const CACHE_TTL: Duration = Duration::from_secs(600);
/// An unknown `kid` refetches the set at most this often per issuer (key rotation at the IdP).
pub const REFETCH_INTERVAL: Duration = Duration::from_secs(60);

/// Why a JWKS could not be had (logged; the client sees 503).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("jwks_url is not an https URL")]
    NotHttps,
    #[error("host {0} is not a public address and not in SUBJECT_ISSUER_PRIVATE_HOSTS")]
    PrivateHost(String),
    #[error("fetch failed: {0}")]
    Http(String),
    #[error("answered HTTP {0}")]
    Status(u16),
    #[error("document larger than {MAX_JWKS_BYTES} bytes")]
    TooLarge,
    #[error("not a JWKS document: {0}")]
    Malformed(String),
}

/// Cache key: zone, issuer row, URL (a changed URL is fetched afresh).
type Key = (String, String, String);

/// The JWKS client and its cache.
pub struct JwksFetcher {
    http: reqwest::Client,
    private_hosts: Arc<Vec<String>>,
    cache: moka::future::Cache<Key, Arc<JwkSet>>,
    refetched: moka::sync::Cache<Key, ()>,
}

impl JwksFetcher {
    /// Builds the client; `ca_pem` adds private CA roots to the public ones.
    pub fn new(private_hosts: Vec<String>, ca_pem: Option<&[u8]>) -> Result<Self, reqwest::Error> {
        let private_hosts = Arc::new(private_hosts);
        Ok(Self {
            http: guarded_client(&private_hosts, ca_pem, FETCH_TIMEOUT)?,
            private_hosts,
            cache: moka::future::Cache::builder().max_capacity(10_000).time_to_live(CACHE_TTL).build(),
            refetched: moka::sync::Cache::builder().max_capacity(10_000).time_to_live(REFETCH_INTERVAL).build(),
        })
    }

    /// The issuer row's key set, cached.
    pub async fn get(&self, zone_id: &str, row_id: &str, url: &str) -> Result<Arc<JwkSet>, Arc<FetchError>> {
        let key = (zone_id.to_owned(), row_id.to_owned(), url.to_owned());
        self.cache.try_get_with(key, async { self.fetch(url).await.map(Arc::new) }).await
    }

    /// Forgets the cached set so the next [`get`](Self::get) fetches it, at most once per
    /// [`REFETCH_INTERVAL`]; returns whether it did.
    pub async fn forget_for_refetch(&self, zone_id: &str, row_id: &str, url: &str) -> bool {
        let key = (zone_id.to_owned(), row_id.to_owned(), url.to_owned());
        if self.refetched.contains_key(&key) {
            return false;
        }
        self.refetched.insert(key.clone(), ());
        self.cache.invalidate(&key).await;
        true
    }

    async fn fetch(&self, raw: &str) -> Result<JwkSet, FetchError> {
        let url = url::Url::parse(raw).map_err(|_| FetchError::NotHttps)?;
        if url.scheme() != "https" {
            return Err(FetchError::NotHttps);
        }
        literal_host_allowed(&url, &self.private_hosts).map_err(FetchError::PrivateHost)?;
        let mut resp = self.http.get(url).header("accept", "application/json").send().await.map_err(|e| FetchError::Http(chain(&e)))?;
        if !resp.status().is_success() {
            return Err(FetchError::Status(resp.status().as_u16()));
        }
        if resp.content_length().is_some_and(|n| n > MAX_JWKS_BYTES as u64) {
            return Err(FetchError::TooLarge);
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| FetchError::Http(chain(&e)))? {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(FetchError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&body).map_err(|e| FetchError::Malformed(e.to_string()))
    }
}

/// An HTTPS client for URLs an admin typed (SSRF): no redirects, no proxy, TLS ≥ 1.2, `timeout`,
/// and only addresses [`allowed`] for the host, checked by the client's own resolver so a name
/// cannot be re-pointed between a check and the connection; `ca_pem` adds private CA roots.
pub(crate) fn guarded_client(
    private_hosts: &Arc<Vec<String>>,
    ca_pem: Option<&[u8]>,
    timeout: Duration,
) -> Result<reqwest::Client, reqwest::Error> {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(timeout)
        .https_only(true)
        .no_proxy()
        .tls_version_min(reqwest::tls::Version::TLS_1_2)
        .dns_resolver(Arc::new(GuardedResolver { private_hosts: private_hosts.clone() }));
    if let Some(pem) = ca_pem {
        builder = builder.tls_certs_merge(reqwest::Certificate::from_pem_bundle(pem)?);
    }
    builder.build()
}

/// An IP literal never reaches the resolver: checked here; `Err(host)` when it is not allowed.
pub(crate) fn literal_host_allowed(url: &url::Url, private_hosts: &[String]) -> Result<(), String> {
    let host = url.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
    match host.parse::<IpAddr>() {
        Ok(ip) if !allowed(&host, ip, private_hosts) => Err(host),
        _ => Ok(()),
    }
}

/// The error and its causes on one line (reqwest hides the interesting part in `source`).
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Resolves names, keeping only addresses the host may be reached at.
struct GuardedResolver {
    private_hosts: Arc<Vec<String>>,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let private_hosts = self.private_hosts.clone();
        let host = name.as_str().to_ascii_lowercase();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let kept: Vec<SocketAddr> = addrs.into_iter().filter(|a| allowed(&host, a.ip(), &private_hosts)).collect();
            if kept.is_empty() {
                return Err(Box::new(FetchError::PrivateHost(host)) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(kept.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Whether `host` may be reached at `ip`: any public address; a non-public one only for a listed
/// host; a cloud metadata address never.
fn allowed(host: &str, ip: IpAddr, private_hosts: &[String]) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    };
    if is_metadata(ip) || ip.is_unspecified() || ip.is_multicast() {
        return false;
    }
    is_public(ip) || private_hosts.iter().any(|h| h == host)
}

fn is_metadata(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V4(v4) if v4.octets() == [169, 254, 169, 254])
        || matches!(ip, IpAddr::V6(v6) if v6.segments() == [0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254])
}

fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_broadcast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1])) // CGNAT
                || (o[0] == 198 && (18..20).contains(&o[1]))) // benchmarking
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            !(v6.is_loopback()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80) // link local
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_unless_listed() {
        let none: Vec<String> = Vec::new();
        let listed = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.1.1",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(!allowed("idp.example", ip.parse().unwrap(), &none), "{ip}");
        }
        assert!(allowed("idp.example", "93.184.216.34".parse().unwrap(), &none));
        assert!(allowed("localhost", "127.0.0.1".parse().unwrap(), &listed));
        assert!(allowed("127.0.0.1", "127.0.0.1".parse().unwrap(), &listed));
        assert!(!allowed("idp.example", "127.0.0.1".parse().unwrap(), &listed), "only the listed host");
        assert!(!allowed("localhost", "169.254.169.254".parse().unwrap(), &listed), "metadata never");
    }
}
