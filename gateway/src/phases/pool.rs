//! Upstream pools (docs/pools.md): a resource with several endpoints gets one endpoint per
//! request, picked by `pingora-load-balancing`.
//!
//! A pool is built once per endpoint set and policy and kept for the egress cache's TTL (so its
//! pinned addresses are refreshed on the DNS schedule). Building checks every member like a single
//! upstream and pins its host under the egress policy; a member that fails is **left out of the
//! balancer**, so it can never be selected or dialed. A pool with no member left refuses the
//! request like a single unusable upstream (502 "upstream not addressable").
//!
//! `least_outstanding` is power of two choices: two members drawn by the crate's weighted random
//! selector, the one with fewer requests in flight (relative to its weight) wins. Every pool pick
//! holds an [`InFlight`] guard until the request's context is dropped.
//!
//! Backends are identified by a synthetic address in the IPv6 discard prefix `100::/64` derived
//! from the endpoint URL: the crate identifies a backend by address and weight, so two endpoints on
//! one address would merge, and a URL-derived identity keeps the hash ring stable when DNS answers
//! change. That address is never dialed: the checked, pinned target rides in `Backend::ext`.

use std::collections::BTreeSet;
use std::net::{Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use caracal_shared::exchange::UpstreamDirective;
use caracal_shared::pool::{Endpoint, HashKey, LoadBalancing, Policy};
use pingora_load_balancing::discovery::Static;
use pingora_load_balancing::selection::{Consistent, Random, RoundRobin};
use pingora_load_balancing::{Backend, Backends, LoadBalancer};

use crate::deny::Denial;
use crate::phases::egress::Egress;
use crate::phases::upstream::{self, SafePeer, Target};

/// Upper bound on selector steps (the crate's iterators are bounded by it).
const MAX_ITERATIONS: usize = 256;

/// A member as the balancer carries it: checked and pinned.
#[derive(Clone)]
struct Member {
    target: Target,
    addr: SocketAddr,
    /// Position in the pool's in-flight counters.
    slot: usize,
    /// Draining: never picked; kept so the hash ring keeps its shape.
    drain: bool,
}

/// The balancer of one policy.
enum Selector {
    /// Weighted round robin.
    RoundRobin(LoadBalancer<RoundRobin>),
    /// Ketama over the request key.
    Hash(LoadBalancer<Consistent>),
    /// Two weighted random draws, the less loaded wins.
    LeastOutstanding(LoadBalancer<Random>),
}

/// One resource's pool, ready to pick.
pub struct Pool {
    selector: Selector,
    hash_key: Option<HashKey>,
    /// Requests in flight per member slot.
    in_flight: Box<[AtomicUsize]>,
}

/// A request's hold on its member: counted in flight until dropped (with the request context).
pub struct InFlight {
    pool: Arc<Pool>,
    slot: usize,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.pool.in_flight[self.slot].fetch_sub(1, Ordering::Relaxed);
    }
}

impl InFlight {
    fn take(pool: Arc<Pool>, slot: usize) -> Self {
        pool.in_flight[slot].fetch_add(1, Ordering::Relaxed);
        Self { pool, slot }
    }
}

/// What a request offers as a consistent-hash key.
pub struct RequestKey<'a> {
    pub headers: &'a http::HeaderMap,
    pub path: &'a str,
    pub sid: &'a str,
    /// Used when the configured key is absent, so keyless requests still spread.
    pub request_id: &'a str,
}

/// The pools in use, by endpoint set and policy (full equality, never a hash alone: a collision
/// must not send one resource's credential to another's endpoints).
pub struct Pools {
    cache: moka::future::Cache<(Vec<Endpoint>, LoadBalancing), Arc<Pool>>,
}

impl Pools {
    /// Pools kept for `ttl` (the egress cache's).
    pub fn new(ttl: Duration) -> Self {
        Self { cache: moka::future::Cache::builder().max_capacity(10_000).time_to_live(ttl).build() }
    }

    /// The peer for this request: a member picked by the directive's policy, pinned and checked,
    /// and the request's hold on it. The pool's identity is moved out of the directive (nothing
    /// reads it later), so a lookup copies no endpoint.
    pub async fn peer(
        &self,
        d: &mut UpstreamDirective,
        key: &RequestKey<'_>,
        egress: &Egress,
        refused: &prometheus::IntCounter,
    ) -> Result<(SafePeer, InFlight), Denial> {
        let credential = upstream::credential(d)?;
        let endpoints = match std::mem::take(&mut d.endpoints) {
            set if set.is_empty() => d.endpoint_set(),
            set => set,
        };
        let id = (endpoints, std::mem::take(&mut d.load_balancing));
        let pool =
            self.cache.try_get_with_by_ref(&id, Pool::build(&id.0, &id.1, egress, refused)).await.map_err(|e: Arc<Denial>| (*e).clone())?;
        let member = pool.pick(key).ok_or(Denial::UpstreamNotAddressable)?;
        let hold = InFlight::take(pool, member.slot);
        Ok((member.target.peer(member.addr, d, credential), hold))
    }
}

/// A synthetic, never-dialed identity for an endpoint (see the module docs). SHA-256 rather than
/// std's hasher, whose algorithm may change between builds: every gateway replica, old or new,
/// must place a member at the same points of the hash ring.
fn identity(url: &str) -> SocketAddr {
    use sha2::Digest;
    let d = sha2::Sha256::digest(url.as_bytes());
    let seg = |i: usize| u16::from_be_bytes([d[2 * i], d[2 * i + 1]]);
    SocketAddr::new(Ipv6Addr::new(0x100, 0, 0, 0, seg(0), seg(1), seg(2), seg(3)).into(), 0)
}

impl Pool {
    /// Checks and pins every member; members the policy refuses are left out.
    async fn build(
        endpoints: &[Endpoint],
        lb: &LoadBalancing,
        egress: &Egress,
        refused: &prometheus::IntCounter,
    ) -> Result<Arc<Self>, Denial> {
        let mut set = BTreeSet::new();
        let weights = ring_weights(endpoints, lb.policy);
        for (e, weight) in endpoints.iter().zip(weights) {
            let slot = set.len();
            let member = match Target::parse(&e.url) {
                Ok(target) => target.pin(egress).await.map(|addr| Member { target, addr, slot, drain: e.drain }),
                Err(d) => Err(d),
            };
            let Ok(member) = member else {
                refused.inc();
                tracing::warn!(endpoint = %e.url, "pool member left out: refused by the upstream checks or the egress policy");
                continue;
            };
            let mut backend =
                Backend { addr: pingora::protocols::l4::socket::SocketAddr::Inet(identity(&e.url)), weight, ext: Default::default() };
            backend.ext.insert(member);
            set.insert(backend);
        }
        if set.is_empty() {
            return Err(Denial::UpstreamNotAddressable);
        }
        let in_flight = (0..set.len()).map(|_| AtomicUsize::new(0)).collect();
        let selector = match lb.policy {
            Policy::RoundRobin => Selector::RoundRobin(balancer(set).await?),
            Policy::LeastOutstanding => Selector::LeastOutstanding(balancer(set).await?),
            Policy::ConsistentHash => Selector::Hash(balancer(set).await?),
        };
        Ok(Arc::new(Self { selector, hash_key: lb.hash_key.clone(), in_flight }))
    }

    /// The member for a request.
    fn pick(&self, key: &RequestKey<'_>) -> Option<Member> {
        // A draining member is passed over: the selector moves on to the next one.
        let accept = |b: &Backend, ready: bool| ready && b.ext.get::<Member>().is_some_and(|m| !m.drain);
        let backend = match &self.selector {
            Selector::RoundRobin(lb) => lb.select_with(b"", MAX_ITERATIONS, accept),
            Selector::Hash(lb) => {
                let k = match &self.hash_key {
                    Some(HashKey::Header(name)) => key.headers.get(name.as_str()).map(|v| v.as_bytes()),
                    Some(HashKey::Sid) => Some(key.sid.as_bytes()).filter(|s| !s.is_empty()),
                    Some(HashKey::Path) => Some(key.path.as_bytes()),
                    None => None,
                };
                lb.select_with(k.unwrap_or(key.request_id.as_bytes()), MAX_ITERATIONS, accept)
            }
            Selector::LeastOutstanding(lb) => {
                let a = lb.select_with(b"", MAX_ITERATIONS, accept)?;
                let b = lb.select_with(b"", MAX_ITERATIONS, accept)?;
                // Fewer in flight per unit of weight wins: compare a/wa with b/wb without division.
                let load = |x: &Backend| x.ext.get::<Member>().map_or(usize::MAX, |m| self.in_flight[m.slot].load(Ordering::Relaxed));
                Some(if load(&b).saturating_mul(a.weight) < load(&a).saturating_mul(b.weight) { b } else { a })
            }
        }?;
        backend.ext.get::<Member>().cloned()
    }
}

/// Most weight units a hash ring gets: Ketama places 160 points per unit, so 32 members of weight
/// 1000 would build a ring of five million points on the request path.
const MAX_RING_WEIGHT: u32 = 64;

/// Balancer weights: the endpoints' own, reduced by their common divisor; for a hash ring also
/// scaled so the largest is at most [`MAX_RING_WEIGHT`] (proportions kept to within a unit).
fn ring_weights(endpoints: &[Endpoint], policy: Policy) -> Vec<usize> {
    fn gcd(a: u32, b: u32) -> u32 {
        if b == 0 { a } else { gcd(b, a % b) }
    }
    let w: Vec<u32> = endpoints.iter().map(|e| e.weight.max(1)).collect();
    let g = w.iter().copied().fold(0, gcd).max(1);
    let max = w.iter().copied().max().unwrap_or(1) / g;
    w.iter()
        .map(|x| {
            let x = x / g;
            let x = if policy == Policy::ConsistentHash && max > MAX_RING_WEIGHT { (x * MAX_RING_WEIGHT).div_ceil(max) } else { x };
            x.max(1) as usize
        })
        .collect()
}

/// A balancer over a fixed member set.
async fn balancer<S>(set: BTreeSet<Backend>) -> Result<LoadBalancer<S>, Denial>
where
    S: pingora_load_balancing::selection::BackendSelection + 'static,
    S::Iter: pingora_load_balancing::selection::BackendIter,
{
    let lb = LoadBalancer::from_backends(Backends::new(Static::new(set)));
    lb.update().await.map_err(|_| Denial::UpstreamNotAddressable)?;
    Ok(lb)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::io;

    use async_trait::async_trait;

    use super::*;
    use crate::phases::egress::Resolve;

    /// `bad.example` resolves to the metadata address, everything else to loopback.
    struct Names;

    #[async_trait]
    impl Resolve for Names {
        async fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
            let ip = if host == "bad.example" { "169.254.169.254" } else { "127.0.0.1" };
            Ok(vec![SocketAddr::new(ip.parse().unwrap(), port)])
        }
    }

    fn egress() -> Egress {
        Egress::new(true, vec![], Arc::new(Names), Duration::from_secs(30))
    }

    fn directive(endpoints: &[(&str, u32)], lb: LoadBalancing) -> UpstreamDirective {
        UpstreamDirective {
            url: endpoints[0].0.into(),
            auth_mode: "none".into(),
            endpoints: endpoints.iter().map(|(u, w)| Endpoint { url: (*u).into(), weight: *w, drain: false }).collect(),
            load_balancing: lb,
            ..Default::default()
        }
    }

    fn key<'a>(headers: &'a http::HeaderMap, id: &'a str) -> RequestKey<'a> {
        RequestKey { headers, path: "/p", sid: "", request_id: id }
    }

    #[tokio::test]
    async fn weights_are_followed_and_a_refused_member_is_never_picked() {
        let pools = Pools::new(Duration::from_secs(30));
        let refused = prometheus::IntCounter::new("t", "t").unwrap();
        let d = directive(
            &[("http://a.example:1/a", 3), ("http://b.example:2/b", 1), ("http://bad.example:3/", 5), ("ftp://x/", 1)],
            LoadBalancing::default(),
        );
        let h = http::HeaderMap::new();
        let mut seen: HashMap<String, usize> = HashMap::new();
        for i in 0..400 {
            let (p, _hold) = pools.peer(&mut d.clone(), &key(&h, &i.to_string()), &egress(), &refused).await.unwrap();
            *seen.entry(p.base_path.clone()).or_default() += 1;
            assert_ne!(p.addr.ip().to_string(), "169.254.169.254");
        }
        assert_eq!(seen.get("/a"), Some(&300), "{seen:?}");
        assert_eq!(seen.get("/b"), Some(&100), "{seen:?}");
        assert_eq!(refused.get(), 2, "the metadata member and the ftp member, once: the pool is cached");
    }

    #[tokio::test]
    async fn a_pool_with_no_usable_member_refuses() {
        let pools = Pools::new(Duration::from_secs(30));
        let refused = prometheus::IntCounter::new("t", "t").unwrap();
        let d = directive(&[("http://bad.example/", 1), ("https://127.0.0.1/", 1)], LoadBalancing::default());
        let h = http::HeaderMap::new();
        assert!(matches!(pools.peer(&mut d.clone(), &key(&h, "r"), &egress(), &refused).await, Err(Denial::UpstreamNotAddressable)));
    }

    #[tokio::test]
    async fn consistent_hash_keeps_a_key_on_one_member() {
        let pools = Pools::new(Duration::from_secs(30));
        let refused = prometheus::IntCounter::new("t", "t").unwrap();
        let lb = LoadBalancing { policy: Policy::ConsistentHash, hash_key: Some(HashKey::Header("mcp-session-id".into())) };
        let d = directive(&[("http://a.example/a", 1), ("http://b.example/b", 1), ("http://c.example/c", 1)], lb);
        let mut members = BTreeSet::new();
        for session in ["s1", "s2", "s3", "s4", "s5", "s6"] {
            let mut h = http::HeaderMap::new();
            h.insert("mcp-session-id", session.parse().unwrap());
            let first = pools.peer(&mut d.clone(), &key(&h, "x"), &egress(), &refused).await.unwrap().0.base_path;
            for i in 0..5 {
                let again = pools.peer(&mut d.clone(), &key(&h, &i.to_string()), &egress(), &refused).await.unwrap().0.base_path;
                assert_eq!(again, first, "{session} stays");
            }
            members.insert(first);
        }
        assert!(members.len() > 1, "sessions spread: {members:?}");
    }

    #[tokio::test]
    async fn least_outstanding_avoids_the_busy_member_and_holds_are_released() {
        let pools = Pools::new(Duration::from_secs(30));
        let refused = prometheus::IntCounter::new("t", "t").unwrap();
        let lb = LoadBalancing { policy: Policy::LeastOutstanding, hash_key: None };
        let d = directive(&[("http://a.example/a", 1), ("http://b.example/b", 1)], lb);
        let h = http::HeaderMap::new();
        // Requests that never finish pile up: two choices keep the members close to even.
        let mut held = Vec::new();
        for i in 0..200 {
            held.push(pools.peer(&mut d.clone(), &key(&h, &i.to_string()), &egress(), &refused).await.unwrap());
        }
        let on_a = held.iter().filter(|(p, _)| p.base_path == "/a").count();
        assert!(on_a.abs_diff(100) <= 10, "balanced by load: {on_a} of 200 on a");
        let pool = held[0].1.pool.clone();
        drop(held);
        assert!(pool.in_flight.iter().all(|c| c.load(Ordering::Relaxed) == 0), "every hold released");
    }

    #[tokio::test]
    async fn a_draining_member_is_never_picked_by_any_policy() {
        let pools = Pools::new(Duration::from_secs(30));
        let refused = prometheus::IntCounter::new("t", "t").unwrap();
        let h = http::HeaderMap::new();
        for policy in [Policy::RoundRobin, Policy::LeastOutstanding, Policy::ConsistentHash] {
            let hash_key = (policy == Policy::ConsistentHash).then_some(HashKey::Path);
            let mut d = directive(&[("http://a.example/a", 5), ("http://b.example/b", 1)], LoadBalancing { policy, hash_key });
            d.endpoints[0].drain = true;
            for i in 0..50 {
                let (p, _) = pools.peer(&mut d.clone(), &key(&h, &i.to_string()), &egress(), &refused).await.unwrap();
                assert_eq!(p.base_path, "/b", "{policy:?}");
            }
        }
    }

    #[test]
    fn identities_are_stable_discard_prefix_addresses() {
        let a = identity("http://a.example/x");
        assert_eq!(a, identity("http://a.example/x"));
        assert_ne!(a, identity("http://a.example/y"));
        let std::net::IpAddr::V6(ip) = a.ip() else { panic!("{a}") };
        assert_eq!(ip.segments()[..4], [0x100, 0, 0, 0], "in the discard prefix 100::/64: {a}");
    }

    #[test]
    fn ring_weights_are_reduced_and_bounded() {
        let set = |ws: &[u32]| ws.iter().map(|w| Endpoint { url: String::new(), weight: *w, drain: false }).collect::<Vec<_>>();
        assert_eq!(ring_weights(&set(&[300, 200, 100]), Policy::RoundRobin), [3, 2, 1]);
        assert_eq!(ring_weights(&set(&[1000, 999, 1]), Policy::RoundRobin), [1000, 999, 1], "round robin keeps exact weights");
        assert_eq!(ring_weights(&set(&[1000, 500, 1]), Policy::ConsistentHash), [64, 32, 1]);
        assert_eq!(ring_weights(&set(&[7, 5]), Policy::ConsistentHash), [7, 5]);
    }
}
