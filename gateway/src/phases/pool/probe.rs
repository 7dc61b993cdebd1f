//! Active health probes (docs/pools.md §4): each member of a pool whose resource asks for them
//! is probed on the resource's interval by the `pool probes` background service.
//!
//! A probe dials the member's **pinned, egress-checked address** — the one traffic dials, never a
//! fresh DNS answer — with the same TLS and SNI as traffic, on a new connection each time (a
//! kept-alive one would say nothing about accepting new connections). `http`: `GET <base
//! path><probe path>`, healthy on 2xx/3xx; `tcp`: the TCP (and TLS) handshake.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use caracal_shared::pool::{HealthProbe, ProbeKind};
use pingora::connectors::TransportConnector;
use pingora::http::RequestHeader;
use pingora::prelude::HttpPeer;
use pingora::protocols::http::v1::client::HttpSession;

use super::Pool;
use crate::phases::upstream::Target;

/// Probes one member; `true` when healthy.
pub async fn probe(connector: &TransportConnector, target: &Target, addr: SocketAddr, p: &HealthProbe) -> bool {
    let timeout = Duration::from_millis(p.timeout_ms.into());
    let (host, authority) = target.names();
    let mut peer = HttpPeer::new(addr, target.tls(), host.to_owned());
    peer.options.connection_timeout = Some(timeout);
    peer.options.total_connection_timeout = Some(timeout);
    let attempt = async {
        let stream = connector.new_stream(&peer).await.ok()?;
        if p.kind == ProbeKind::Tcp {
            return Some(true);
        }
        let path = target.probe_path(p.path.as_deref().unwrap_or("/"));
        let mut req = RequestHeader::build("GET", path.as_bytes(), Some(3)).ok()?;
        req.insert_header("host", authority).ok()?;
        req.insert_header("user-agent", "caracal-gateway-probe").ok()?;
        req.insert_header("connection", "close").ok()?;
        let mut session = HttpSession::new(stream);
        session.write_request_header(Box::new(req)).await.ok()?;
        session.read_response().await.ok()?;
        let status = session.resp_header()?.status.as_u16();
        Some((200..400).contains(&status))
    };
    tokio::time::timeout(timeout, attempt).await.ok().flatten().unwrap_or(false)
}

impl Pool {
    /// Whether a probe round is due now; claims it (the next one is an interval away).
    pub fn claim_probe_round(&self) -> bool {
        let Some(p) = &self.probe else { return false };
        let now = self.now_ms();
        let due = self.next_probe_ms.load(Ordering::Relaxed);
        now >= due && self.next_probe_ms.compare_exchange(due, now + u64::from(p.interval_ms), Ordering::Relaxed, Ordering::Relaxed).is_ok()
    }

    /// One probe round over every member, all at once.
    pub async fn probe_round(&self, connector: &TransportConnector) {
        let Some(p) = &self.probe else { return };
        let rounds = self.slots.iter().map(|s| async move {
            let ok = probe(connector, &s.target, s.addr, p).await;
            if let Some(healthy) = s.state.health.probed(ok, p) {
                tracing::warn!(resource = %self.label, endpoint = s.endpoint, healthy, "pool member health changed by probes");
            }
        });
        futures_util::future::join_all(rounds).await;
    }

    /// Sets every endpoint's `upstream_endpoint_healthy` gauge: its addresses taking requests
    /// (members of one endpoint are adjacent and share the gauge).
    pub fn refresh_gauges(&self) {
        let now = self.now_ms();
        for run in self.slots.chunk_by(|a, b| a.endpoint == b.endpoint) {
            run[0].metrics.healthy.set(run.iter().filter(|s| !s.drain && s.state.health.healthy(now)).count() as i64);
        }
    }
}
