//! Egress policy: which addresses the gateway may dial (SSRF guard, seed 003).
//!
//! Every address a host resolves to is classified; if **any** is not permitted the upstream is
//! refused (a host that resolves to a public and a private address is treated as hostile), and
//! the proxy then dials exactly the checked address (resolve, then pin), so a DNS answer that
//! changes between check and connect (rebinding) never reaches a forbidden address.
//!
//! * Always refused: unspecified, link-local (incl. the 169.254.169.254 metadata service),
//!   other cloud metadata addresses, multicast, broadcast, reserved (240/4), Teredo, and any
//!   IPv4-mapped, IPv4-compatible, NAT64 or 6to4 address embedding one of those.
//! * Refused unless `ALLOW_PRIVATE_UPSTREAMS=true`: loopback, RFC 1918, CGNAT (100.64/10), ULA
//!   (fc00::/7), site-local, benchmarking and IETF-protocol ranges, and embedded forms of those.
//! * `UPSTREAM_HOST_ALLOWLIST`, when set, limits upstream host names to the listed ones (exact,
//!   case-insensitive).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

/// What an address is, for egress decisions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressClass {
    /// Globally routable.
    Public,
    /// Internal: allowed only with `ALLOW_PRIVATE_UPSTREAMS`.
    Private,
    /// Never dialed.
    Forbidden,
}

/// Extra metadata endpoints that are not link-local.
const METADATA_V4: &[Ipv4Addr] = &[Ipv4Addr::new(100, 100, 100, 200)];
/// AWS's IPv6 metadata endpoint (inside the ULA range, so it would otherwise be "private").
const METADATA_V6: &[Ipv6Addr] = &[Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254)];

/// Classifies an IPv4 address.
pub fn classify_v4(ip: Ipv4Addr) -> AddressClass {
    let o = ip.octets();
    if ip.is_unspecified() || o[0] == 0 || ip.is_link_local() || ip.is_multicast() || ip.is_broadcast() || o[0] >= 240 {
        return AddressClass::Forbidden;
    }
    if METADATA_V4.contains(&ip) {
        return AddressClass::Forbidden;
    }
    let cgnat = o[0] == 100 && (o[1] & 0xc0) == 64;
    let benchmarking = o[0] == 198 && (o[1] == 18 || o[1] == 19);
    let ietf = o[0] == 192 && o[1] == 0 && o[2] == 0;
    if ip.is_loopback() || ip.is_private() || cgnat || benchmarking || ietf {
        return AddressClass::Private;
    }
    AddressClass::Public
}

/// Classifies an IPv6 address, looking through every form that embeds an IPv4 address.
pub fn classify_v6(ip: Ipv6Addr) -> AddressClass {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    let s = ip.segments();
    if ip.is_unspecified() || ip.is_multicast() || METADATA_V6.contains(&ip) {
        return AddressClass::Forbidden;
    }
    if ip.is_loopback() {
        return AddressClass::Private;
    }
    let embedded = |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    // IPv4-compatible ::a.b.c.d (deprecated, still routed by some stacks).
    if s[..6] == [0, 0, 0, 0, 0, 0] {
        return classify_v4(embedded(s[6], s[7]));
    }
    // NAT64 well-known prefix 64:ff9b::/96 and local-use 64:ff9b:1::/48.
    if s[0] == 0x64 && s[1] == 0xff9b && (s[2..6] == [0, 0, 0, 0] || s[2] == 1) {
        return classify_v4(embedded(s[6], s[7]));
    }
    // 6to4 2002:AABB:CCDD::/48 embeds AA.BB.CC.DD.
    if s[0] == 0x2002 {
        return classify_v4(embedded(s[1], s[2]));
    }
    // Teredo 2001::/32 hides an obfuscated IPv4 address: never dial it.
    if s[0] == 0x2001 && s[1] == 0 {
        return AddressClass::Forbidden;
    }
    if (s[0] & 0xffc0) == 0xfe80 {
        return AddressClass::Forbidden; // link-local
    }
    if (s[0] & 0xffc0) == 0xfec0 || (s[0] & 0xfe00) == 0xfc00 {
        return AddressClass::Private; // site-local, unique local
    }
    AddressClass::Public
}

/// Classifies any address.
pub fn classify(ip: IpAddr) -> AddressClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

/// Resolves host names (a trait so tests can play a rebinding DNS server).
#[async_trait]
pub trait Resolve: Send + Sync {
    /// Every address `host` resolves to.
    async fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>>;
}

/// The system resolver.
pub struct SystemResolver;

#[async_trait]
impl Resolve for SystemResolver {
    async fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        Ok(tokio::net::lookup_host((host, port)).await?.collect())
    }
}

/// Longest wait for a DNS answer: a resolver that never answers must not hold requests for the
/// libc resolver's whole retry schedule.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// The egress policy with its resolver and a short cache of checked answers.
pub struct Egress {
    pub allow_private: bool,
    /// Lower-case host names; empty means any.
    pub allowlist: Vec<String>,
    resolver: Arc<dyn Resolve>,
    cache: moka::future::Cache<(String, u16), Arc<[SocketAddr]>>,
    resolve_timeout: Duration,
}

/// Why an upstream address was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EgressError {
    NotAllowlisted,
    Unresolvable,
    ForbiddenAddress(IpAddr),
    PrivateAddress(IpAddr),
}

impl Egress {
    /// A policy; checked answers are reused for `cache_ttl`.
    pub fn new(allow_private: bool, allowlist: Vec<String>, resolver: Arc<dyn Resolve>, cache_ttl: Duration) -> Self {
        let cache = moka::future::Cache::builder().max_capacity(10_000).time_to_live(cache_ttl).build();
        Self { allow_private, allowlist, resolver, cache, resolve_timeout: RESOLVE_TIMEOUT }
    }

    /// The same policy with another DNS deadline.
    pub fn with_resolve_timeout(mut self, timeout: Duration) -> Self {
        self.resolve_timeout = timeout;
        self
    }

    /// Whether an address may be dialed.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), EgressError> {
        match classify(ip) {
            AddressClass::Public => Ok(()),
            AddressClass::Private if self.allow_private => Ok(()),
            AddressClass::Private => Err(EgressError::PrivateAddress(ip)),
            AddressClass::Forbidden => Err(EgressError::ForbiddenAddress(ip)),
        }
    }

    /// The single address to dial for `host:port` (the first answer), after the allowlist and
    /// every resolved address passed.
    pub async fn pin(&self, host: &str, port: u16) -> Result<SocketAddr, EgressError> {
        Ok(self.pin_all(host, port).await?[0])
    }

    /// Every address `host:port` resolves to (deduplicated, in answer order, never empty), after
    /// the allowlist and every one of them passed: a pool spreads load over them.
    pub async fn pin_all(&self, host: &str, port: u16) -> Result<Arc<[SocketAddr]>, EgressError> {
        let host = host.to_ascii_lowercase();
        if !self.allowlist.is_empty() && !self.allowlist.contains(&host) {
            return Err(EgressError::NotAllowlisted);
        }
        if let Ok(ip) = host.parse::<IpAddr>() {
            self.check_ip(ip)?;
            return Ok(Arc::new([SocketAddr::new(ip, port)]));
        }
        let key = (host, port);
        // Single-flight: requests arriving while a host is resolved share the lookup; only a
        // checked answer is cached.
        self.cache
            .try_get_with_by_ref(&key, async {
                let answer = tokio::time::timeout(self.resolve_timeout, self.resolver.resolve(&key.0, port)).await;
                let addrs = answer.map_err(|_| EgressError::Unresolvable)?.map_err(|_| EgressError::Unresolvable)?;
                let mut checked: Vec<SocketAddr> = Vec::with_capacity(addrs.len());
                for a in addrs {
                    self.check_ip(a.ip())?;
                    if !checked.contains(&a) {
                        checked.push(a);
                    }
                }
                if checked.is_empty() {
                    return Err(EgressError::Unresolvable);
                }
                Ok(Arc::from(checked))
            })
            .await
            .map_err(|e: Arc<EgressError>| (*e).clone())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use AddressClass::*;

    #[test]
    fn address_table() {
        let table: &[(&str, AddressClass)] = &[
            ("93.184.216.34", Public),
            ("8.8.8.8", Public),
            ("1.1.1.1", Public),
            ("2606:4700:4700::1111", Public),
            ("2001:4860:4860::8888", Public),
            ("127.0.0.1", Private),
            ("127.255.255.254", Private),
            ("10.0.0.1", Private),
            ("10.255.255.255", Private),
            ("172.16.0.1", Private),
            ("172.31.255.255", Private),
            ("172.32.0.1", Public),
            ("192.168.1.1", Private),
            ("100.64.0.1", Private),
            ("100.127.255.254", Private),
            ("100.128.0.1", Public),
            ("198.18.0.1", Private),
            ("192.0.0.8", Private),
            ("::1", Private),
            ("fc00::1", Private),
            ("fd12:3456::1", Private),
            ("fec0::1", Private),
            ("::ffff:127.0.0.1", Private),
            ("::ffff:10.1.2.3", Private),
            ("::ffff:8.8.8.8", Public),
            ("::127.0.0.1", Private),
            ("64:ff9b::a00:1", Private),
            ("64:ff9b::808:808", Public),
            ("64:ff9b:1::c0a8:101", Private),
            ("2002:c0a8:0101::1", Private),
            ("2002:0808:0808::1", Public),
            ("0.0.0.0", Forbidden),
            ("0.1.2.3", Forbidden),
            ("169.254.169.254", Forbidden),
            ("169.254.0.1", Forbidden),
            ("100.100.100.200", Forbidden),
            ("224.0.0.1", Forbidden),
            ("239.255.255.250", Forbidden),
            ("255.255.255.255", Forbidden),
            ("240.0.0.1", Forbidden),
            ("::", Forbidden),
            ("fe80::1", Forbidden),
            ("ff02::1", Forbidden),
            ("fd00:ec2::254", Forbidden),
            ("::ffff:169.254.169.254", Forbidden),
            ("64:ff9b::a9fe:a9fe", Forbidden),
            ("2002:a9fe:a9fe::1", Forbidden),
            ("2001:0:4136:e378::1", Forbidden),
            ("::ffff:0.0.0.0", Forbidden),
        ];
        assert!(table.len() >= 40);
        for (ip, want) in table {
            assert_eq!(classify(ip.parse().unwrap()), *want, "{ip}");
        }
    }

    /// Answers from a script, one answer per call: a rebinding DNS server.
    struct Scripted(Mutex<Vec<Vec<&'static str>>>);

    #[async_trait]
    impl Resolve for Scripted {
        async fn resolve(&self, _host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
            let next = self.0.lock().unwrap().remove(0);
            Ok(next.into_iter().map(|ip| SocketAddr::new(ip.parse().unwrap(), port)).collect())
        }
    }

    fn egress(allow_private: bool, allowlist: &[&str], answers: Vec<Vec<&'static str>>) -> Egress {
        let r = Arc::new(Scripted(Mutex::new(answers)));
        Egress::new(allow_private, allowlist.iter().map(|s| (*s).to_owned()).collect(), r, Duration::from_secs(30))
    }

    #[tokio::test]
    async fn rebinding_cannot_reach_a_forbidden_address() {
        // First answer public, later answers private: the pinned public address is what is dialed.
        let e = egress(false, &[], vec![vec!["93.184.216.34"], vec!["127.0.0.1"]]);
        let first = e.pin("api.example", 443).await.unwrap();
        assert_eq!(first.ip().to_string(), "93.184.216.34");
        assert_eq!(e.pin("api.example", 443).await.unwrap(), first, "the checked answer is pinned, not re-resolved");
        // A mixed answer is refused outright.
        let mixed = egress(false, &[], vec![vec!["93.184.216.34", "169.254.169.254"]]);
        assert_eq!(mixed.pin("evil.example", 80).await, Err(EgressError::ForbiddenAddress("169.254.169.254".parse().unwrap())));
        let private = egress(false, &[], vec![vec!["10.0.0.5"]]);
        assert_eq!(private.pin("internal.example", 80).await, Err(EgressError::PrivateAddress("10.0.0.5".parse().unwrap())));
    }

    #[tokio::test]
    async fn allow_private_never_allows_metadata_and_the_allowlist_is_exact() {
        let e = egress(true, &[], vec![vec!["10.0.0.5"], vec!["169.254.169.254"]]);
        assert!(e.pin("internal.example", 80).await.is_ok());
        assert!(matches!(e.pin("metadata.example", 80).await, Err(EgressError::ForbiddenAddress(_))));
        assert!(e.pin("127.0.0.1", 80).await.is_ok(), "IP literals are checked without DNS");
        let listed = egress(false, &["api.example"], vec![vec!["93.184.216.34"]]);
        assert!(listed.pin("API.Example", 443).await.is_ok(), "case-insensitive");
        assert_eq!(listed.pin("other.example", 443).await, Err(EgressError::NotAllowlisted));
        assert_eq!(listed.pin("api.example.evil", 443).await, Err(EgressError::NotAllowlisted), "exact match only");
    }

    /// Never answers; counts the questions.
    struct Silent(std::sync::atomic::AtomicUsize);

    #[async_trait]
    impl Resolve for Silent {
        async fn resolve(&self, _host: &str, _port: u16) -> io::Result<Vec<SocketAddr>> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            std::future::pending().await
        }
    }

    #[tokio::test]
    async fn a_silent_resolver_is_bounded_and_asked_once_per_host() {
        let r = Arc::new(Silent(Default::default()));
        let e = Egress::new(false, vec![], r.clone(), Duration::from_secs(30)).with_resolve_timeout(Duration::from_millis(100));
        let started = std::time::Instant::now();
        let (a, b) = tokio::join!(e.pin("slow.example", 443), e.pin("slow.example", 443));
        assert_eq!((a, b), (Err(EgressError::Unresolvable), Err(EgressError::Unresolvable)));
        assert!(started.elapsed() < Duration::from_secs(1), "bounded: {:?}", started.elapsed());
        assert_eq!(r.0.load(std::sync::atomic::Ordering::SeqCst), 1, "concurrent requests share one lookup");
    }
}
