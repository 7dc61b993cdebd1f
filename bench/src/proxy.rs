//! The plain proxy baseline (S2): Pingora 0.9, the same engine and thread count as the gateway, no
//! checks at all, so S3 − S2 is what the gateway's governance costs. Given several upstreams (S7p) it
//! spreads requests over them with `pingora-load-balancing`'s round robin, the selector the gateway's
//! pools use, without health checks.

use std::net::SocketAddr;

use async_trait::async_trait;
use pingora::prelude::HttpPeer;
use pingora::proxy::{ProxyHttp, Session};
use pingora::server::Server;
use pingora_load_balancing::LoadBalancer;
use pingora_load_balancing::selection::RoundRobin;

/// Threads of the proxy service: the gateway runs with `GATEWAY_THREADS=2` in the bench.
const THREADS: usize = 2;
/// Selector steps before giving up (every member is always eligible here).
const MAX_ITERATIONS: usize = 256;

/// Where requests go.
enum Upstreams {
    /// One fixed upstream (S2): no selection at all.
    One(SocketAddr),
    /// Weighted round robin over equal weights (S7p).
    RoundRobin(LoadBalancer<RoundRobin>),
}

struct PassThrough {
    upstreams: Upstreams,
}

#[async_trait]
impl ProxyHttp for PassThrough {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> pingora::Result<Box<HttpPeer>> {
        let addr = match &self.upstreams {
            Upstreams::One(addr) => *addr,
            Upstreams::RoundRobin(lb) => lb
                .select(b"", MAX_ITERATIONS)
                .and_then(|b| b.addr.as_inet().copied())
                .ok_or_else(|| pingora::Error::explain(pingora::ErrorType::ConnectNoRoute, "no upstream selected"))?,
        };
        Ok(Box::new(HttpPeer::new(addr, false, String::new())))
    }
}

/// Serves `listen` → `upstreams` (one: fixed; several: round robin) until SIGINT/SIGTERM.
pub(crate) fn run(listen: SocketAddr, upstreams: Vec<SocketAddr>) -> anyhow::Result<()> {
    let shown = upstreams.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
    let upstreams = match upstreams[..] {
        [one] => Upstreams::One(one),
        _ => Upstreams::RoundRobin(LoadBalancer::try_from_iter(upstreams)?),
    };
    let mut server = Server::new(None)?;
    server.bootstrap();
    let mut proxy = pingora::proxy::http_proxy_service(&server.configuration, PassThrough { upstreams });
    proxy.threads = Some(THREADS);
    proxy.add_tcp(&listen.to_string());
    server.add_service(proxy);
    eprintln!("pingora pass-through {listen} -> {shown}");
    server.run_forever()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_visits_every_upstream_in_turn() {
        let addrs: Vec<SocketAddr> = ["127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003"].iter().map(|a| a.parse().unwrap()).collect();
        let lb = LoadBalancer::<RoundRobin>::try_from_iter(addrs.clone()).unwrap();
        let mut counts = std::collections::HashMap::new();
        for _ in 0..300 {
            let b = lb.select(b"", MAX_ITERATIONS).unwrap();
            *counts.entry(*b.addr.as_inet().unwrap()).or_insert(0) += 1;
        }
        assert_eq!(addrs.iter().map(|a| counts[a]).collect::<Vec<_>>(), vec![100, 100, 100]);
    }
}
