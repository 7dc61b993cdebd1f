//! Upstream: from the STS directive to an address the proxy may dial.
//!
//! The directive's URL must be http or https, carry a host and no userinfo (https never to a bare
//! IP); its host is resolved under the egress policy ([`super::egress`]) and the proxy dials
//! exactly the checked address (resolve, then pin), with the original host as `Host` and SNI.
//!
//! Credential modes (gateway.md §8): `none`; `caracal_jwt` (the resource mandate, by default as
//! `Authorization: Bearer`); `provider_apikey` (the provider's key from the STS, in a header —
//! optionally after a scheme — or in a query parameter that overrides any client value), with the
//! resource mandate as `X-Caracal-Identity` only when the resource opts in. The credential header
//! may never be a routing, framing, tracing or forwarding header. Refusals are 502
//! `internal_error` "upstream not addressable" (`upstream_errors`).

use std::net::SocketAddr;
use std::time::Duration;

use caracal_shared::exchange::UpstreamDirective;
use pingora::prelude::HttpPeer;

use crate::deny::Denial;
use crate::phases::egress::Egress;

/// How the upstream credential is injected.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// Nothing is injected.
    None,
    /// `<header>: <scheme> <resource mandate>`.
    CaracalJwt { header: http::HeaderName, scheme: String },
    /// `<header>: [<scheme> ]<provider key>` (the value is marked sensitive).
    ProviderHeader { header: http::HeaderName, value: http::HeaderValue },
    /// `?<param>=<provider key>`, replacing any value the client or the upstream URL set.
    ProviderQuery { param: String, key: String },
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::None => f.write_str("None"),
            Self::CaracalJwt { header, .. } => write!(f, "CaracalJwt({header})"),
            Self::ProviderHeader { header, .. } => write!(f, "ProviderHeader({header}, <redacted>)"),
            Self::ProviderQuery { param, .. } => write!(f, "ProviderQuery({param}, <redacted>)"),
        }
    }
}

/// A checked, resolved upstream.
#[derive(Clone, Debug)]
pub struct SafePeer {
    /// The address to dial.
    pub addr: SocketAddr,
    /// Whether to speak TLS.
    pub tls: bool,
    /// Host name for SNI.
    pub host: String,
    /// `Host` header value (with a non-default port).
    pub authority: String,
    /// The upstream URL's path, without a trailing `/`.
    pub base_path: String,
    /// The upstream URL's query, if any.
    pub base_query: Option<String>,
    /// The credential to inject.
    pub credential: Credential,
    /// Send the resource mandate as `X-Caracal-Identity` (provider modes, opt-in).
    pub forward_identity: bool,
    /// The resource's own deadlines (absent ⇒ the gateway's).
    pub timeouts: caracal_shared::pool::Timeouts,
    /// Speak HTTP/2 (ALPN over TLS, prior knowledge in cleartext).
    pub http2: bool,
}

/// `upstream_peer`: the checked address as Pingora's peer. Connect deadlines only: the wait for
/// the response header and a silent body are bounded by the request's watch
/// ([`super::watch`]), because Pingora's `read_timeout` would also cut an idle SSE stream.
pub fn http_peer(peer: Option<&SafePeer>, connect_timeout: Duration) -> pingora::Result<Box<HttpPeer>> {
    let Some(p) = peer else {
        return pingora::Error::e_explain(pingora::ErrorType::InternalError, "upstream_peer without a granted request");
    };
    let connect_timeout = p.timeouts.connect_ms.map_or(connect_timeout, |ms| Duration::from_millis(ms.into()));
    let mut peer = HttpPeer::new(p.addr, p.tls, p.host.clone());
    // One slow address must not hold the whole deadline: a single attempt gets at most 5 s.
    peer.options.connection_timeout = Some(connect_timeout.min(Duration::from_secs(5)));
    peer.options.total_connection_timeout = Some(connect_timeout);
    if p.http2 {
        // Cleartext has no ALPN to fall back with: h2c by prior knowledge.
        peer.options.set_http_version(2, if p.tls { 1 } else { 2 });
    }
    Ok(Box::new(peer))
}

/// The credential header, if it is one the gateway may write.
fn credential_header(d: &UpstreamDirective) -> Result<http::HeaderName, Denial> {
    let name = d.auth_header.as_deref().unwrap_or("authorization");
    if !caracal_shared::exchange::is_writable_credential_header(name) {
        return Err(Denial::UpstreamNotAddressable);
    }
    http::HeaderName::from_bytes(name.as_bytes()).map_err(|_| Denial::UpstreamNotAddressable)
}

/// The credential a directive asks for, checked.
pub fn credential(d: &UpstreamDirective) -> Result<Credential, Denial> {
    match d.auth_mode.as_str() {
        "none" => Ok(Credential::None),
        "caracal_jwt" => {
            Ok(Credential::CaracalJwt { header: credential_header(d)?, scheme: d.auth_scheme.clone().unwrap_or_else(|| "Bearer".into()) })
        }
        "provider_apikey" => {
            let key = d.provider_token.clone().filter(|k| !k.is_empty()).ok_or(Denial::UpstreamNotAddressable)?;
            match d.auth_location.as_deref().unwrap_or("header") {
                "header" => {
                    let text = match &d.auth_scheme {
                        Some(scheme) => format!("{scheme} {key}"),
                        None => key,
                    };
                    let mut value = http::HeaderValue::from_str(&text).map_err(|_| Denial::UpstreamNotAddressable)?;
                    value.set_sensitive(true);
                    Ok(Credential::ProviderHeader { header: credential_header(d)?, value })
                }
                "query" => {
                    let param = d.query_param_name.clone().filter(|p| !p.trim().is_empty()).ok_or(Denial::UpstreamNotAddressable)?;
                    Ok(Credential::ProviderQuery { param, key })
                }
                _ => Err(Denial::UpstreamNotAddressable),
            }
        }
        _ => Err(Denial::UpstreamNotAddressable),
    }
}

/// An upstream URL, checked: where to connect and what to send, before its host is pinned.
#[derive(Clone, Debug)]
pub struct Target {
    tls: bool,
    /// Host name (brackets removed), for the egress policy and SNI.
    host: String,
    port: u16,
    authority: String,
    base_path: String,
    base_query: Option<String>,
}

impl Target {
    /// Checks an upstream URL: http or https, a host, no userinfo, and no TLS to a bare IP.
    pub fn parse(raw: &str) -> Result<Self, Denial> {
        let url = url::Url::parse(raw).map_err(|_| Denial::UpstreamNotAddressable)?;
        let tls = match url.scheme() {
            "http" => false,
            "https" => true,
            _ => return Err(Denial::UpstreamNotAddressable),
        };
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Denial::UpstreamNotAddressable);
        }
        let host = url.host_str().filter(|h| !h.is_empty()).ok_or(Denial::UpstreamNotAddressable)?;
        let port = url.port_or_known_default().ok_or(Denial::UpstreamNotAddressable)?;
        let lookup_host = host.trim_start_matches('[').trim_end_matches(']');
        // TLS to a bare IP would go out without SNI and without a name to verify: refuse it.
        if tls && lookup_host.parse::<std::net::IpAddr>().is_ok() {
            return Err(Denial::UpstreamNotAddressable);
        }
        let authority = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_owned(),
        };
        Ok(Self {
            tls,
            host: lookup_host.to_owned(),
            port,
            authority,
            base_path: url.path().trim_end_matches('/').to_owned(),
            base_query: url.query().map(str::to_owned),
        })
    }

    /// Every address to dial: the host resolved under the egress policy and pinned.
    pub async fn pin_all(&self, egress: &Egress) -> Result<std::sync::Arc<[SocketAddr]>, Denial> {
        egress.pin_all(&self.host, self.port).await.map_err(|e| {
            tracing::warn!(upstream_host = %self.host, reason = ?e, "upstream refused by the egress policy");
            Denial::UpstreamNotAddressable
        })
    }

    /// The peer for a pinned address.
    pub fn peer(&self, addr: SocketAddr, d: &UpstreamDirective, credential: Credential) -> SafePeer {
        let settings = SafePeer {
            addr,
            tls: false,
            host: String::new(),
            authority: String::new(),
            base_path: String::new(),
            base_query: None,
            forward_identity: d.forward_caracal_identity && d.auth_mode == "provider_apikey",
            credential,
            timeouts: d.timeouts,
            http2: d.connections.http2,
        };
        self.retarget(settings, addr)
    }

    /// `peer`'s credential and settings, at this target's `addr`, host and base path (also a
    /// retry moving to another pool member).
    pub fn retarget(&self, peer: SafePeer, addr: SocketAddr) -> SafePeer {
        SafePeer {
            addr,
            tls: self.tls,
            host: self.host.clone(),
            authority: self.authority.clone(),
            base_path: self.base_path.clone(),
            base_query: self.base_query.clone(),
            ..peer
        }
    }

    /// Whether the target speaks TLS.
    pub fn tls(&self) -> bool {
        self.tls
    }

    /// Host name (SNI) and `Host` header value.
    pub fn names(&self) -> (&str, &str) {
        (&self.host, &self.authority)
    }

    /// The probe's request path: the base path joined with `path`.
    pub fn probe_path(&self, path: &str) -> String {
        format!("{}{}", self.base_path, if path.starts_with('/') { path.to_owned() } else { format!("/{path}") })
    }
}

/// A plain directive's upstream, resolved under the egress policy.
#[allow(clippy::large_enum_variant, reason = "returned once per request and moved into the context; boxing would allocate")]
pub enum Resolved {
    /// One address: dialed as is.
    One(SafePeer),
    /// A name with several addresses: spread over them as a pool of one endpoint.
    Several,
}

/// Checks the directive, resolves its host under the egress policy and pins the address.
pub async fn resolve(d: &UpstreamDirective, egress: &Egress) -> Result<Resolved, Denial> {
    let target = Target::parse(&d.url)?;
    let credential = credential(d)?;
    match &*target.pin_all(egress).await? {
        [addr] => Ok(Resolved::One(target.peer(*addr, d, credential))),
        _ => Ok(Resolved::Several),
    }
}

impl SafePeer {
    /// The watch's deadlines: the resource's own, else the gateway's.
    pub fn deadlines(&self, gateway: crate::phases::watch::Deadlines) -> crate::phases::watch::Deadlines {
        let ms = |v: Option<u32>, default: Duration| v.map_or(default, |ms| Duration::from_millis(ms.into()));
        crate::phases::watch::Deadlines {
            header: ms(self.timeouts.response_header_ms, gateway.header),
            body_idle: ms(self.timeouts.body_idle_ms, gateway.body_idle),
        }
    }

    /// The upstream request target: the upstream's base path joined with the inbound path, and
    /// the upstream's query followed by the inbound query. A parameter the upstream URL sets wins
    /// wholesale: the client's pairs with that name (compared decoded) are dropped, since many
    /// frameworks read the last of repeated parameters and the client's would override the
    /// operator's.
    pub fn request_target(&self, inbound_path: &str, inbound_query: Option<&str>) -> String {
        let mut target = String::with_capacity(self.base_path.len() + inbound_path.len() + 32);
        target.push_str(&self.base_path);
        if inbound_path.is_empty() || !inbound_path.starts_with('/') {
            target.push('/');
        }
        target.push_str(inbound_path);
        let base = self.base_query.as_deref().filter(|q| !q.is_empty());
        let inbound = inbound_query.filter(|q| !q.is_empty());
        match (base, inbound) {
            (None, None) => {}
            (Some(q), None) | (None, Some(q)) => {
                target.push('?');
                target.push_str(q);
            }
            (Some(b), Some(i)) => {
                let fixed: Vec<_> = form_urlencoded::parse(b.as_bytes()).map(|(k, _)| k).collect();
                target.push('?');
                target.push_str(b);
                for pair in i.split('&').filter(|p| !p.is_empty()) {
                    let name = pair.split('=').next().unwrap_or(pair);
                    let decoded = form_urlencoded::parse(name.as_bytes()).next().map(|(k, _)| k).unwrap_or_default();
                    if !fixed.contains(&decoded) {
                        target.push('&');
                        target.push_str(pair);
                    }
                }
            }
        }
        target
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn directive(url: &str, mode: &str) -> UpstreamDirective {
        UpstreamDirective { url: url.into(), auth_mode: mode.into(), ..Default::default() }
    }

    async fn resolve(d: &UpstreamDirective, egress: &Egress) -> Result<SafePeer, Denial> {
        match super::resolve(d, egress).await? {
            Resolved::One(p) => Ok(p),
            Resolved::Several => panic!("one address expected"),
        }
    }

    fn open() -> Egress {
        Egress::new(true, vec![], std::sync::Arc::new(crate::phases::egress::SystemResolver), std::time::Duration::from_secs(1))
    }

    #[tokio::test]
    async fn the_peer_is_the_pinned_address_with_connect_deadlines_only() {
        let p = resolve(&directive("https://localhost:9443/base", "none"), &open()).await.unwrap();
        let peer = http_peer(Some(&p), Duration::from_secs(30)).unwrap();
        assert_eq!(peer._address.to_string(), p.addr.to_string());
        assert_eq!(peer.sni, "localhost");
        assert_eq!(peer.options.connection_timeout, Some(Duration::from_secs(5)), "one attempt is capped");
        assert_eq!(peer.options.total_connection_timeout, Some(Duration::from_secs(30)));
        assert_eq!(peer.options.read_timeout, None, "reads are bounded by the watch, which spares idle streams");
        assert!(http_peer(None, Duration::from_secs(1)).is_err());
    }

    #[tokio::test]
    async fn resolves_and_joins_paths() {
        let p = resolve(&directive("http://127.0.0.1:9000/base/?k=1", "caracal_jwt"), &open()).await.unwrap();
        assert_eq!(p.addr, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(p.authority, "127.0.0.1:9000");
        assert_eq!(p.request_target("/items/1", Some("q=2")), "/base/items/1?k=1&q=2");
        assert_eq!(p.request_target("/items/1", Some("k=evil&q=2&%6B=x&k")), "/base/items/1?k=1&q=2", "the upstream's k wins");
        assert_eq!(p.request_target("/items/1", None), "/base/items/1?k=1");
        assert_eq!(p.request_target("/items/1", Some("")), "/base/items/1?k=1");
        let root = resolve(&directive("http://127.0.0.1", "none"), &open()).await.unwrap();
        assert_eq!(root.addr.port(), 80);
        assert_eq!(root.request_target("/", None), "/");
        assert_eq!(root.credential, Credential::None);
    }

    #[tokio::test]
    async fn refuses_unusable_directives() {
        for (url, mode) in [
            ("ftp://127.0.0.1/", "none"),
            ("http://user:pw@127.0.0.1/", "none"),
            ("not a url", "none"),
            ("http://127.0.0.1/", "provider_magic"),
            ("https://127.0.0.1/", "none"),
            ("https://[::1]:8443/", "none"),
        ] {
            assert!(matches!(resolve(&directive(url, mode), &open()).await, Err(Denial::UpstreamNotAddressable)), "{url} {mode}");
        }
        let mut d = directive("http://127.0.0.1/", "caracal_jwt");
        d.auth_header = Some("X-Forwarded-For".into());
        assert!(resolve(&d, &open()).await.is_err(), "the credential may not be written to a reserved header");
        let closed =
            Egress::new(false, vec![], std::sync::Arc::new(crate::phases::egress::SystemResolver), std::time::Duration::from_secs(1));
        assert!(resolve(&directive("http://127.0.0.1:9000/", "none"), &closed).await.is_err(), "loopback needs ALLOW_PRIVATE_UPSTREAMS");
        assert!(resolve(&directive("http://localhost:9000/", "none"), &closed).await.is_err(), "so does a name resolving to it");
    }
}
