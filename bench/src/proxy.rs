//! The plain proxy baseline (S2): Pingora 0.9, the same engine and thread count as the gateway, no
//! checks at all, so S3 − S2 is what the gateway's governance costs.

use std::net::SocketAddr;

use async_trait::async_trait;
use pingora::prelude::HttpPeer;
use pingora::proxy::{ProxyHttp, Session};
use pingora::server::Server;

/// Threads of the proxy service: the gateway runs with `GATEWAY_THREADS=2` in the bench.
const THREADS: usize = 2;

struct PassThrough {
    upstream: SocketAddr,
}

#[async_trait]
impl ProxyHttp for PassThrough {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> pingora::Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
    }
}

/// Serves `listen` → `upstream` until SIGINT/SIGTERM.
pub(crate) fn run(listen: SocketAddr, upstream: SocketAddr) -> anyhow::Result<()> {
    let mut server = Server::new(None)?;
    server.bootstrap();
    let mut proxy = pingora::proxy::http_proxy_service(&server.configuration, PassThrough { upstream });
    proxy.threads = Some(THREADS);
    proxy.add_tcp(&listen.to_string());
    server.add_service(proxy);
    eprintln!("pingora pass-through {listen} -> {upstream}");
    server.run_forever()
}
