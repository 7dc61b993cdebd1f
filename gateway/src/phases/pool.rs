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

pub mod health;
pub mod metrics;
pub mod probe;

use std::collections::BTreeSet;
use std::net::{Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use caracal_shared::exchange::UpstreamDirective;
use caracal_shared::pool::{Connections, Endpoint, HashKey, HealthProbe, LoadBalancing, Policy, Retry};
use pingora_load_balancing::discovery::Static;
use pingora_load_balancing::selection::{Consistent, Random, RoundRobin};
use pingora_load_balancing::{Backend, Backends, LoadBalancer};

use self::health::{MemberHealth, Outcome};
use self::metrics::{MemberMetrics, UpstreamMetrics};
use crate::deny::Denial;
use crate::phases::egress::Egress;
use crate::phases::upstream::{self, SafePeer, Target};

/// Upper bound on selector steps (the crate's iterators are bounded by it).
const MAX_ITERATIONS: usize = 256;
/// Most members (addresses) in a pool: the members a request tried are a 64-bit set.
const MAX_MEMBERS: usize = 64;
/// Most addresses of one endpoint's name that get a member.
const MAX_ADDRESSES: usize = 8;

/// Retry budget, in tenths of a retry: every request adds [`RETRY_DEPOSIT`], every retry costs
/// [`RETRY_COST`], so retries stay under 20 % of requests; [`RETRY_TOKENS_START`] lets a pool
/// that just started retry, [`RETRY_TOKENS_MAX`] bounds a burst.
const RETRY_DEPOSIT: u32 = 2;
const RETRY_COST: u32 = 10;
const RETRY_TOKENS_START: u32 = 100;
const RETRY_TOKENS_MAX: u32 = 1_000;

/// One member of a built pool: checked, pinned, with its counters.
pub struct Slot {
    /// The balancer's (never dialed) identity of the member.
    identity: SocketAddr,
    pub target: Target,
    /// The pinned, egress-checked address: what traffic and probes dial.
    pub addr: SocketAddr,
    /// Index in the resource's endpoint set (the metrics' `endpoint` label).
    pub endpoint: usize,
    /// Draining: never picked; kept so the hash ring keeps its shape.
    drain: bool,
    /// Requests in flight and health, shared with the rebuilds of this pool.
    pub state: Arc<MemberState>,
    pub metrics: MemberMetrics,
}

/// What a member's pool rebuild must not forget (every `DNS_CACHE_TTL`, and at each change of the
/// set): its requests in flight (the cap stays exact) and its health (a dead member stays ejected).
/// Keyed by resource, endpoint URL and address.
#[derive(Default)]
pub struct MemberState {
    in_flight: AtomicUsize,
    pub health: MemberHealth,
}

/// How long a member's state outlives its last pool.
const MEMBER_STATE_IDLE: Duration = Duration::from_secs(600);

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
    pub slots: Box<[Slot]>,
    max_in_flight: Option<usize>,
    /// Active probes, when the resource asks for them.
    pub probe: Option<HealthProbe>,
    retry_tokens: AtomicU32,
    retries: prometheus::IntCounter,
    epoch: Instant,
    /// When this pool was built (`/ready` shows the newest pool of a resource).
    pub built: Instant,
    /// When the next probe round is due (ms since `epoch`).
    pub next_probe_ms: AtomicU64,
    /// The `resource` label.
    pub label: String,
}

/// What a request offers as a consistent-hash key.
pub struct RequestKey<'a> {
    pub headers: &'a http::HeaderMap,
    pub path: &'a str,
    pub sid: &'a str,
    pub root_sid: &'a str,
    /// Used when the configured key is absent, so keyless requests still spread.
    pub request_id: &'a str,
}

/// What identifies a pool: the resource and everything that shapes its members and state
/// (full equality, never a hash alone: a collision must not send one resource's credential to
/// another's endpoints).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub resource: String,
    endpoints: Vec<Endpoint>,
    lb: LoadBalancing,
    probe: Option<HealthProbe>,
    connections: Connections,
}

/// The pools in use.
pub struct Pools {
    cache: moka::future::Cache<PoolKey, Arc<Pool>>,
    members: moka::sync::Cache<(String, String, SocketAddr), Arc<MemberState>>,
    metrics: Arc<UpstreamMetrics>,
    /// Health times are milliseconds since this instant, for every pool.
    epoch: Instant,
}

/// A request's route through its pool: the member it holds (counted in flight until the route
/// is dropped with the request context), the members tried, and each attempt for the audit.
pub struct Route {
    pool: Arc<Pool>,
    slot: usize,
    /// Members tried, as a bit set over slots (at most [`MAX_MEMBERS`]).
    tried: u64,
    retry: Retry,
    /// The consistent-hash key, kept for a retry (hash pools only).
    key: Option<Box<[u8]>>,
    /// When the current attempt started.
    started: Instant,
    /// Whether the current attempt's outcome was recorded.
    recorded: bool,
    /// Earlier attempts: (endpoint index, outcome).
    earlier: Vec<(usize, Outcome)>,
    /// The current attempt's outcome, once known.
    last: Option<Outcome>,
}

impl Drop for Route {
    fn drop(&mut self) {
        self.pool.slots[self.slot].state.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Pools {
    /// Pools kept for `ttl` (the egress cache's).
    pub fn new(ttl: Duration, metrics: Arc<UpstreamMetrics>) -> Self {
        Self {
            cache: moka::future::Cache::builder().max_capacity(10_000).time_to_live(ttl).build(),
            members: moka::sync::Cache::builder().max_capacity(100_000).time_to_idle(MEMBER_STATE_IDLE.max(ttl * 2)).build(),
            metrics,
            epoch: Instant::now(),
        }
    }

    /// The peer for this request: a member picked by the directive's policy, pinned and checked,
    /// and the request's route. The pool's identity is moved out of the directive (nothing reads
    /// it later), so a lookup copies no endpoint.
    pub async fn route(
        &self,
        d: &mut UpstreamDirective,
        resource: &str,
        key: &RequestKey<'_>,
        egress: &Egress,
    ) -> Result<(SafePeer, Route), Denial> {
        let credential = upstream::credential(d)?;
        let endpoints = match std::mem::take(&mut d.endpoints) {
            set if set.is_empty() => d.endpoint_set(),
            set => set,
        };
        let id = PoolKey {
            resource: resource.to_owned(),
            endpoints,
            lb: std::mem::take(&mut d.load_balancing),
            probe: d.health.take(),
            connections: d.connections,
        };
        let build = Pool::build(&id, egress, self);
        let pool = self.cache.try_get_with_by_ref(&id, build).await.map_err(|e: Arc<Denial>| (*e).clone())?;
        pool.deposit();
        let hash = pool.hash_bytes(key);
        let slot = pool.pick(hash, 0)?;
        let s = &pool.slots[slot];
        let peer = s.target.peer(s.addr, d, credential);
        let key = match &pool.selector {
            Selector::Hash(_) => Some(hash.into()),
            _ => None,
        };
        let route = Route {
            pool,
            slot,
            tried: 1 << slot,
            retry: d.retry,
            key,
            started: Instant::now(),
            recorded: false,
            earlier: Vec::new(),
            last: None,
        };
        Ok((peer, route))
    }

    /// The pools cached now (for probes and `/ready`).
    pub fn all(&self) -> Vec<Arc<Pool>> {
        self.cache.iter().map(|(_, p)| p).collect()
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
    /// Checks and pins every endpoint; endpoints the policy refuses are left out, and one whose
    /// name has several (all permitted) addresses becomes one member per address.
    async fn build(id: &PoolKey, egress: &Egress, pools: &Pools) -> Result<Arc<Self>, Denial> {
        let metrics = &pools.metrics;
        let label = metrics.resource_label(&id.resource);
        let per_endpoint = (MAX_MEMBERS / id.endpoints.len().max(1)).clamp(1, MAX_ADDRESSES);
        let mut pinned = Vec::with_capacity(id.endpoints.len());
        for (endpoint, e) in id.endpoints.iter().enumerate() {
            let checked = match Target::parse(&e.url) {
                Ok(target) => target.pin_all(egress).await.map(|addrs| (target, addrs)),
                Err(d) => Err(d),
            };
            match checked {
                Ok((target, addrs)) => pinned.push((endpoint, e, target, addrs)),
                Err(_) => {
                    metrics.members_refused.inc();
                    tracing::warn!(endpoint = %e.url, "pool member left out: refused by the upstream checks or the egress policy");
                }
            }
        }
        let shape: Vec<(u32, usize)> = pinned.iter().map(|(_, e, _, addrs)| (e.weight, addrs.len().min(per_endpoint))).collect();
        let mut weights = member_weights(&shape, id.lb.policy).into_iter();
        let mut set = BTreeSet::new();
        let mut slots = Vec::new();
        for (endpoint, e, target, addrs) in pinned {
            let m = metrics.member(&label, endpoint);
            let several = addrs.len() > 1;
            for addr in addrs.iter().take(per_endpoint) {
                // One address: the endpoint's own identity, as before DNS spreading existed.
                let identity = if several { identity(&format!("{}#{addr}", e.url)) } else { identity(&e.url) };
                let weight = weights.next().unwrap_or(1);
                set.insert(Backend { addr: pingora::protocols::l4::socket::SocketAddr::Inet(identity), weight, ext: Default::default() });
                slots.push(Slot {
                    identity,
                    target: target.clone(),
                    addr: *addr,
                    endpoint,
                    drain: e.drain,
                    state: pools.members.get_with((id.resource.clone(), e.url.clone(), *addr), Default::default),
                    metrics: m.clone(),
                });
            }
        }
        if set.is_empty() {
            return Err(Denial::UpstreamNotAddressable);
        }
        let selector = match id.lb.policy {
            Policy::RoundRobin => Selector::RoundRobin(balancer(set).await?),
            Policy::LeastOutstanding => Selector::LeastOutstanding(balancer(set).await?),
            Policy::ConsistentHash => Selector::Hash(balancer(set).await?),
        };
        let pool = Arc::new(Self {
            selector,
            hash_key: id.lb.hash_key.clone(),
            slots: slots.into(),
            max_in_flight: id.connections.max_in_flight.map(|n| n as usize),
            probe: id.probe.clone(),
            retry_tokens: AtomicU32::new(RETRY_TOKENS_START),
            retries: metrics.retries(&label),
            epoch: pools.epoch,
            built: Instant::now(),
            next_probe_ms: AtomicU64::new(0),
            label,
        });
        pool.refresh_gauges();
        Ok(pool)
    }

    /// Milliseconds since the pool was built.
    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// The slot of a balancer backend.
    fn slot_of(&self, b: &Backend) -> Option<usize> {
        let addr = b.addr.as_inet()?;
        self.slots.iter().position(|s| s.identity == *addr)
    }

    /// Whether a member is under its concurrency cap.
    fn under_cap(&self, slot: usize) -> bool {
        self.max_in_flight.is_none_or(|cap| self.slots[slot].state.in_flight.load(Ordering::Relaxed) < cap)
    }

    /// Whether a member is open to this request: not draining, not tried, healthy.
    fn open_to(&self, slot: usize, tried: u64) -> bool {
        let s = &self.slots[slot];
        !s.drain && tried & (1 << slot) == 0 && s.state.health.available(|| self.now_ms())
    }

    /// Whether a member may take this request: open to it and under its cap.
    fn takes(&self, slot: usize, tried: u64) -> bool {
        self.open_to(slot, tried) && self.under_cap(slot)
    }

    /// The bytes a consistent hash is taken over (empty for other policies).
    fn hash_bytes<'k>(&self, key: &RequestKey<'k>) -> &'k [u8] {
        if !matches!(self.selector, Selector::Hash(_)) {
            return b"";
        }
        let k = match &self.hash_key {
            Some(HashKey::Header(name)) => key.headers.get(name.as_str()).map(|v| v.as_bytes()),
            Some(HashKey::Sid) => Some(key.sid.as_bytes()).filter(|s| !s.is_empty()),
            Some(HashKey::RootSid) => Some(key.root_sid.as_bytes()).filter(|s| !s.is_empty()),
            Some(HashKey::Path) => Some(key.path.as_bytes()),
            None => None,
        };
        k.unwrap_or(key.request_id.as_bytes())
    }

    /// The member for a request, taken (counted in flight): never a draining, tried, unhealthy
    /// or capped one. None left ⇒ 503: `upstream_overloaded` when only the caps stood in the way,
    /// else `upstream_unavailable` (every member down: fail closed, never "panic mode").
    fn pick(&self, hash: &[u8], tried: u64) -> Result<usize, Denial> {
        let accept = |b: &Backend, ready: bool| ready && self.slot_of(b).is_some_and(|i| self.takes(i, tried));
        let backend = match &self.selector {
            Selector::RoundRobin(lb) => lb.select_with(b"", MAX_ITERATIONS, accept),
            Selector::Hash(lb) => lb.select_with(hash, MAX_ITERATIONS, accept),
            Selector::LeastOutstanding(lb) => lb.select_with(b"", MAX_ITERATIONS, accept).map(|a| {
                // Fewer in flight per unit of weight wins: compare a/wa with b/wb without division.
                let load = |x: &Backend| self.slot_of(x).map_or(usize::MAX, |i| self.slots[i].state.in_flight.load(Ordering::Relaxed));
                match lb.select_with(b"", MAX_ITERATIONS, accept) {
                    Some(b) if load(&b).saturating_mul(a.weight) < load(&a).saturating_mul(b.weight) => b,
                    _ => a,
                }
            }),
        };
        let Some(slot) = backend.and_then(|b| self.slot_of(&b)) else {
            // Someone open to it, so only the caps stood in the way.
            let capped = (0..self.slots.len()).any(|i| self.open_to(i, tried));
            return Err(if capped { Denial::UpstreamOverloaded } else { Denial::UpstreamUnavailable });
        };
        let before = self.slots[slot].state.in_flight.fetch_add(1, Ordering::Relaxed);
        if self.max_in_flight.is_some_and(|cap| before >= cap) {
            // Lost a race for the last place under the cap.
            self.slots[slot].state.in_flight.fetch_sub(1, Ordering::Relaxed);
            return Err(Denial::UpstreamOverloaded);
        }
        Ok(slot)
    }

    /// A request's share of the retry budget.
    fn deposit(&self) {
        if self.retry_tokens.load(Ordering::Relaxed) < RETRY_TOKENS_MAX {
            self.retry_tokens.fetch_add(RETRY_DEPOSIT, Ordering::Relaxed);
        }
    }

    /// Spends one retry from the budget, if there is one.
    fn withdraw(&self) -> bool {
        self.retry_tokens.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| t.checked_sub(RETRY_COST)).is_ok()
    }

    /// Records an outcome for a member: metrics and passive health.
    fn record(&self, slot: usize, outcome: Outcome) {
        let s = &self.slots[slot];
        s.metrics.count(outcome);
        if s.state.health.record(outcome, self.now_ms()) {
            s.metrics.ejections.inc();
            self.refresh_gauges();
            tracing::warn!(resource = %self.label, endpoint = s.endpoint, ?outcome, "pool member ejected");
        }
    }

    /// Members taking requests now, and all members (for `/ready`).
    pub fn health_counts(&self) -> (usize, usize) {
        let now = self.now_ms();
        (self.slots.iter().filter(|s| !s.drain && s.state.health.healthy(now)).count(), self.slots.len())
    }
}

impl Route {
    /// The endpoint index of the current attempt.
    pub fn endpoint(&self) -> usize {
        self.pool.slots[self.slot].endpoint
    }

    /// Records the current attempt's outcome once (metrics, passive health, the audit list); an
    /// answer also times the member's response.
    pub fn record(&mut self, outcome: Outcome) {
        if std::mem::replace(&mut self.recorded, true) {
            return;
        }
        if let Outcome::Answered(_) = outcome {
            self.pool.slots[self.slot].metrics.response_seconds.observe(self.started.elapsed().as_secs_f64());
        }
        self.pool.record(self.slot, outcome);
        self.last = Some(outcome);
    }

    /// Moves the request to another member for a retry with the same resource mandate: within
    /// the resource's attempts and the pool's retry budget, never a member already tried. The
    /// peer to dial, or `None` (the failure stands).
    pub fn retry(&mut self, current: &SafePeer) -> Option<SafePeer> {
        if self.earlier.len() + 1 >= usize::from(self.retry.attempts) {
            return None;
        }
        let next = self.pool.pick(self.key.as_deref().unwrap_or_default(), self.tried).ok()?;
        if !self.pool.withdraw() {
            self.pool.slots[next].state.in_flight.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        self.pool.retries.inc();
        let last = self.last.take().unwrap_or(Outcome::Failed);
        self.earlier.push((self.endpoint(), last));
        self.pool.slots[self.slot].state.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.slot = next;
        self.tried |= 1 << next;
        self.started = Instant::now();
        self.recorded = false;
        let s = &self.pool.slots[next];
        Some(s.target.retarget(current.clone(), s.addr))
    }

    /// Pingora sends the request again to the same member (its kept-alive connection had gone
    /// stale): a new attempt, nothing recorded against the member.
    pub fn again(&mut self) {
        self.started = Instant::now();
        self.recorded = false;
    }

    /// Whether the current attempt's member answered.
    pub fn answered(&self) -> bool {
        matches!(self.last, Some(Outcome::Answered(_))) && self.recorded
    }

    /// Whether the resource opted in to retrying a 502/503 answer.
    pub fn retries_unavailable(&self) -> bool {
        self.retry.on_unavailable
    }

    /// Every attempt, for the audit event: `[{endpoint, outcome}]`.
    pub fn attempts(&self) -> serde_json::Value {
        let one = |endpoint: usize, o: Option<Outcome>| {
            let outcome: serde_json::Value = match o {
                Some(Outcome::Answered(s)) => s.into(),
                Some(Outcome::ConnectFailed) => "connect_failed".into(),
                Some(Outcome::Failed) => "failed".into(),
                None => serde_json::Value::Null,
            };
            serde_json::json!({"endpoint": endpoint, "outcome": outcome})
        };
        let mut all: Vec<_> = self.earlier.iter().map(|(e, o)| one(*e, Some(*o))).collect();
        all.push(one(self.endpoint(), self.last));
        all.into()
    }
}

/// Most weight units a hash ring gets: Ketama places 160 points per unit, so 32 members of weight
/// 1000 would build a ring of five million points on the request path.
const MAX_RING_WEIGHT: usize = 64;
/// Most weight units in all for round robin (its schedule holds one entry per unit).
const MAX_SCHEDULE: usize = 100_000;

/// Balancer weights, one per member: an endpoint of weight `w` with `k` addresses gives each
/// address `w·L/k` (L the least common multiple of the address counts), so endpoints keep their
/// shares; then reduced by the common divisor, and bounded (hash ring: the largest at
/// [`MAX_RING_WEIGHT`]; round robin: the sum at [`MAX_SCHEDULE`]), proportions kept to within a unit.
fn member_weights(endpoints: &[(u32, usize)], policy: Policy) -> Vec<usize> {
    fn gcd(a: usize, b: usize) -> usize {
        if b == 0 { a } else { gcd(b, a % b) }
    }
    let l = endpoints.iter().fold(1, |l, (_, k)| l / gcd(l, (*k).max(1)) * (*k).max(1));
    let raw: Vec<usize> =
        endpoints.iter().flat_map(|(w, k)| std::iter::repeat_n((*w).max(1) as usize * (l / (*k).max(1)), (*k).max(1))).collect();
    let g = raw.iter().copied().fold(0, gcd).max(1);
    let reduced: Vec<usize> = raw.iter().map(|x| x / g).collect();
    let (max, sum) = (reduced.iter().copied().max().unwrap_or(1), reduced.iter().sum::<usize>());
    let scale = |x: usize, num: usize, den: usize| (x * num).div_ceil(den).max(1);
    match policy {
        Policy::ConsistentHash if max > MAX_RING_WEIGHT => reduced.iter().map(|x| scale(*x, MAX_RING_WEIGHT, max)).collect(),
        Policy::RoundRobin | Policy::LeastOutstanding if sum > MAX_SCHEDULE => {
            reduced.iter().map(|x| scale(*x, MAX_SCHEDULE, sum)).collect()
        }
        _ => reduced,
    }
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

    /// `bad.example` resolves to the metadata address, `multi.example` to three loopback
    /// addresses (one twice), everything else to 127.0.0.1.
    struct Names;

    #[async_trait]
    impl Resolve for Names {
        async fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
            let ips: &[&str] = match host {
                "bad.example" => &["169.254.169.254"],
                "multi.example" => &["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.2"],
                _ => &["127.0.0.1"],
            };
            Ok(ips.iter().map(|ip| SocketAddr::new(ip.parse().unwrap(), port)).collect())
        }
    }

    fn egress() -> Egress {
        Egress::new(true, vec![], Arc::new(Names), Duration::from_secs(30))
    }

    fn pools() -> Pools {
        Pools::new(Duration::from_secs(30), Arc::new(UpstreamMetrics::new(&prometheus::Registry::new(), 8).unwrap()))
    }

    impl Pools {
        async fn peer(&self, d: &mut UpstreamDirective, key: &RequestKey<'_>) -> Result<(SafePeer, Route), Denial> {
            self.route(d, "r1", key, &egress()).await
        }
    }

    fn directive(endpoints: &[(&str, u32)], lb: LoadBalancing) -> UpstreamDirective {
        UpstreamDirective {
            url: endpoints[0].0.into(),
            auth_mode: "none".into(),
            endpoints: endpoints.iter().map(|(u, w)| Endpoint { url: (*u).into(), weight: *w, drain: false }).collect(),
            load_balancing: lb,
            retry: Retry { attempts: 3, on_unavailable: false },
            ..Default::default()
        }
    }

    fn key<'a>(headers: &'a http::HeaderMap, id: &'a str) -> RequestKey<'a> {
        RequestKey { headers, path: "/p", sid: "", root_sid: "", request_id: id }
    }

    #[tokio::test]
    async fn weights_are_followed_and_a_refused_member_is_never_picked() {
        let pools = pools();
        let d = directive(
            &[("http://a.example:1/a", 3), ("http://b.example:2/b", 1), ("http://bad.example:3/", 5), ("ftp://x/", 1)],
            LoadBalancing::default(),
        );
        let h = http::HeaderMap::new();
        let mut seen: HashMap<String, usize> = HashMap::new();
        for i in 0..400 {
            let (p, _hold) = pools.peer(&mut d.clone(), &key(&h, &i.to_string())).await.unwrap();
            *seen.entry(p.base_path.clone()).or_default() += 1;
            assert_ne!(p.addr.ip().to_string(), "169.254.169.254");
        }
        assert_eq!(seen.get("/a"), Some(&300), "{seen:?}");
        assert_eq!(seen.get("/b"), Some(&100), "{seen:?}");
        assert_eq!(pools.metrics.members_refused.get(), 2, "the metadata member and the ftp member, once: the pool is cached");
    }

    #[tokio::test]
    async fn a_pool_with_no_usable_member_refuses() {
        let pools = pools();
        let d = directive(&[("http://bad.example/", 1), ("https://127.0.0.1/", 1)], LoadBalancing::default());
        let h = http::HeaderMap::new();
        assert!(matches!(pools.peer(&mut d.clone(), &key(&h, "r")).await, Err(Denial::UpstreamNotAddressable)));
    }

    #[tokio::test]
    async fn consistent_hash_keeps_a_key_on_one_member() {
        let pools = pools();
        let lb = LoadBalancing { policy: Policy::ConsistentHash, hash_key: Some(HashKey::Header("mcp-session-id".into())) };
        let d = directive(&[("http://a.example/a", 1), ("http://b.example/b", 1), ("http://c.example/c", 1)], lb);
        let mut members = BTreeSet::new();
        for session in ["s1", "s2", "s3", "s4", "s5", "s6"] {
            let mut h = http::HeaderMap::new();
            h.insert("mcp-session-id", session.parse().unwrap());
            let first = pools.peer(&mut d.clone(), &key(&h, "x")).await.unwrap().0.base_path;
            for i in 0..5 {
                let again = pools.peer(&mut d.clone(), &key(&h, &i.to_string())).await.unwrap().0.base_path;
                assert_eq!(again, first, "{session} stays");
            }
            members.insert(first);
        }
        assert!(members.len() > 1, "sessions spread: {members:?}");
    }

    #[tokio::test]
    async fn least_outstanding_avoids_the_busy_member_and_holds_are_released() {
        let pools = pools();
        let lb = LoadBalancing { policy: Policy::LeastOutstanding, hash_key: None };
        let d = directive(&[("http://a.example/a", 1), ("http://b.example/b", 1)], lb);
        let h = http::HeaderMap::new();
        // Requests that never finish pile up: two choices keep the members close to even.
        let mut held = Vec::new();
        for i in 0..200 {
            held.push(pools.peer(&mut d.clone(), &key(&h, &i.to_string())).await.unwrap());
        }
        let on_a = held.iter().filter(|(p, _)| p.base_path == "/a").count();
        assert!(on_a.abs_diff(100) <= 10, "balanced by load: {on_a} of 200 on a");
        let pool = held[0].1.pool.clone();
        drop(held);
        assert!(pool.slots.iter().all(|s| s.state.in_flight.load(Ordering::Relaxed) == 0), "every hold released");
    }

    #[tokio::test]
    async fn a_draining_member_is_never_picked_by_any_policy() {
        let pools = pools();
        let h = http::HeaderMap::new();
        for policy in [Policy::RoundRobin, Policy::LeastOutstanding, Policy::ConsistentHash] {
            let hash_key = (policy == Policy::ConsistentHash).then_some(HashKey::Path);
            let mut d = directive(&[("http://a.example/a", 5), ("http://b.example/b", 1)], LoadBalancing { policy, hash_key });
            d.endpoints[0].drain = true;
            for i in 0..50 {
                let (p, _) = pools.peer(&mut d.clone(), &key(&h, &i.to_string())).await.unwrap();
                assert_eq!(p.base_path, "/b", "{policy:?}");
            }
        }
    }

    #[tokio::test]
    async fn a_retry_moves_to_an_untried_member_with_the_same_credential_within_the_attempts() {
        let pools = pools();
        let mut d = directive(&[("http://a.example/a", 1), ("http://b.example/b", 1), ("http://c.example/c", 1)], LoadBalancing::default());
        d.auth_mode = "caracal_jwt".into();
        let h = http::HeaderMap::new();
        let (first, mut route) = pools.peer(&mut d.clone(), &key(&h, "r")).await.unwrap();
        route.record(Outcome::ConnectFailed);
        let second = route.retry(&first).expect("a second member");
        assert_ne!(second.base_path, first.base_path);
        assert_eq!(second.credential, first.credential, "the same credential: no second exchange");
        route.record(Outcome::ConnectFailed);
        let third = route.retry(&second).expect("the third member");
        assert!(third.base_path != first.base_path && third.base_path != second.base_path);
        route.record(Outcome::Answered(200));
        assert!(route.retry(&third).is_none(), "three attempts at most");
        let attempts = route.attempts();
        assert_eq!(attempts.as_array().unwrap().len(), 3, "{attempts}");
        assert_eq!(attempts[0]["outcome"], "connect_failed");
        assert_eq!(attempts[2]["outcome"], 200);
        let pool = route.pool.clone();
        drop(route);
        assert!(pool.slots.iter().all(|s| s.state.in_flight.load(Ordering::Relaxed) == 0), "holds follow the retries and are released");
    }

    #[tokio::test]
    async fn an_ejected_member_gets_no_requests_and_all_down_is_refused_503() {
        let pools = pools();
        let d = directive(&[("http://a.example/a", 1), ("http://b.example/b", 1)], LoadBalancing::default());
        let h = http::HeaderMap::new();
        let (p, mut route) = pools.peer(&mut d.clone(), &key(&h, "r")).await.unwrap();
        route.record(Outcome::ConnectFailed);
        let pool = route.pool.clone();
        drop(route);
        for i in 0..20 {
            let (q, _) = pools.peer(&mut d.clone(), &key(&h, &i.to_string())).await.unwrap();
            assert_ne!(q.base_path, p.base_path, "the ejected member is passed over");
        }
        for s in pool.slots.iter() {
            s.state.health.record(Outcome::ConnectFailed, pool.now_ms());
        }
        assert!(matches!(pools.peer(&mut d.clone(), &key(&h, "x")).await, Err(Denial::UpstreamUnavailable)), "fail closed");
        assert_eq!(pool.health_counts(), (0, 2));
    }

    #[tokio::test]
    async fn health_and_holds_outlive_a_rebuild_of_the_pool() {
        let pools = pools();
        let mut d = directive(&[("http://a.example/a", 1), ("http://b.example/b", 1)], LoadBalancing::default());
        d.connections.max_in_flight = Some(1);
        let h = http::HeaderMap::new();
        let (p, mut route) = pools.peer(&mut d.clone(), &key(&h, "r")).await.unwrap();
        route.record(Outcome::ConnectFailed);
        let (q, held) = pools.peer(&mut d.clone(), &key(&h, "s")).await.unwrap();
        assert_ne!(p.base_path, q.base_path);
        // DNS refresh, or a drain or weight change: a new pool over the same members.
        pools.cache.invalidate_all();
        let mut changed = d.clone();
        changed.endpoints[1].weight = 5;
        let again = pools.peer(&mut changed.clone(), &key(&h, "t")).await;
        assert!(matches!(again, Err(Denial::UpstreamOverloaded)), "one member still ejected, the other still at its cap");
        drop(held);
        let (r, _) = pools.peer(&mut changed, &key(&h, "u")).await.unwrap();
        assert_eq!(r.base_path, q.base_path, "the ejected member stays ejected in the new pool");
    }

    #[tokio::test]
    async fn members_at_their_cap_are_skipped_and_a_full_pool_sheds_503() {
        let pools = pools();
        let mut d = directive(&[("http://a.example/a", 1), ("http://b.example/b", 1)], LoadBalancing::default());
        d.connections.max_in_flight = Some(2);
        let h = http::HeaderMap::new();
        let mut held = Vec::new();
        for i in 0..4 {
            held.push(pools.peer(&mut d.clone(), &key(&h, &i.to_string())).await.unwrap());
        }
        assert_eq!(held.iter().filter(|(p, _)| p.base_path == "/a").count(), 2, "two each");
        assert!(matches!(pools.peer(&mut d.clone(), &key(&h, "x")).await, Err(Denial::UpstreamOverloaded)));
        held.pop();
        assert!(pools.peer(&mut d.clone(), &key(&h, "y")).await.is_ok(), "a place freed");
    }

    #[tokio::test]
    async fn the_retry_budget_bounds_retries() {
        let pools = pools();
        let d = directive(&[("http://a.example/a", 1), ("http://b.example/b", 1)], LoadBalancing::default());
        let h = http::HeaderMap::new();
        let mut retried = 0;
        for i in 0..100 {
            let (p, mut route) = pools.peer(&mut d.clone(), &key(&h, &i.to_string())).await.unwrap();
            // Nothing is recorded: both members stay healthy, only the budget can say no.
            retried += usize::from(route.retry(&p).is_some());
        }
        // 10 to start with, plus 0.2 per request.
        assert!((25..=35).contains(&retried), "{retried} retries for 100 requests");
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
    fn member_weights_keep_endpoint_shares_and_are_bounded() {
        let ones = |ws: &[u32]| ws.iter().map(|w| (*w, 1)).collect::<Vec<_>>();
        assert_eq!(member_weights(&ones(&[300, 200, 100]), Policy::RoundRobin), [3, 2, 1]);
        assert_eq!(member_weights(&ones(&[1000, 999, 1]), Policy::RoundRobin), [1000, 999, 1], "round robin keeps exact weights");
        assert_eq!(member_weights(&ones(&[1000, 500, 1]), Policy::ConsistentHash), [64, 32, 1]);
        assert_eq!(member_weights(&ones(&[7, 5]), Policy::ConsistentHash), [7, 5]);
        // A name with three addresses shares its endpoint's weight among them.
        assert_eq!(member_weights(&[(1, 3), (1, 1)], Policy::RoundRobin), [1, 1, 1, 3]);
        assert_eq!(member_weights(&[(2, 2), (3, 3)], Policy::RoundRobin), [1, 1, 1, 1, 1]);
        let big = member_weights(&[(1000, 7), (999, 8), (1, 5)], Policy::RoundRobin);
        assert!(big.iter().sum::<usize>() <= MAX_SCHEDULE + big.len(), "bounded schedule: {}", big.iter().sum::<usize>());
    }

    #[tokio::test]
    async fn a_name_with_several_addresses_spreads_over_them_and_keeps_the_endpoint_shares() {
        let pools = pools();
        let d = directive(&[("http://multi.example:8080/m", 1), ("http://a.example:8080/a", 1)], LoadBalancing::default());
        let h = http::HeaderMap::new();
        let mut seen: HashMap<String, usize> = HashMap::new();
        for i in 0..600 {
            let (p, _) = pools.peer(&mut d.clone(), &key(&h, &i.to_string())).await.unwrap();
            *seen.entry(format!("{}{}", p.addr, p.base_path)).or_default() += 1;
        }
        assert_eq!(seen.get("127.0.0.1:8080/a"), Some(&300), "the one-address endpoint keeps its half: {seen:?}");
        for ip in ["127.0.0.2", "127.0.0.3", "127.0.0.4"] {
            assert_eq!(seen.get(&format!("{ip}:8080/m")), Some(&100), "each address a third of the other half: {seen:?}");
        }
    }

    #[tokio::test]
    async fn a_plain_upstream_whose_name_has_several_addresses_becomes_a_pool() {
        let plain = UpstreamDirective { url: "http://multi.example/m".into(), auth_mode: "none".into(), ..Default::default() };
        assert!(matches!(upstream::resolve(&plain, &egress()).await, Ok(upstream::Resolved::Several)));
        let one = UpstreamDirective { url: "http://a.example/a".into(), auth_mode: "none".into(), ..Default::default() };
        assert!(matches!(upstream::resolve(&one, &egress()).await, Ok(upstream::Resolved::One(_))));
        // The pool path takes the plain directive as a set of one.
        let (p, _) = pools().peer(&mut plain.clone(), &key(&http::HeaderMap::new(), "r")).await.unwrap();
        assert!(["127.0.0.2", "127.0.0.3", "127.0.0.4"].contains(&p.addr.ip().to_string().as_str()));
    }
}
