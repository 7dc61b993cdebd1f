//! Assembles the gateway: dependencies, the Pingora server and its proxy service.

use std::sync::Arc;

use pingora::listeners::ListenerConfig;
use pingora::listeners::tls::TlsSettings;
use pingora::protocols::l4::stream::L4BufferSettings;
use pingora::server::Server;
use pingora::server::configuration::Opt;

use caracal_shared::revocation::RevocationView;
use pingora::services::background::background_service;
use tokio::sync::{Mutex, mpsc};

use crate::audit::AuditSink;
use crate::audit::shipper::Shipper;
use crate::audit::spool::Spool;
use crate::background::pool_probes::PoolProbes;
use crate::background::revocation_snapshot::{ReloadRequest, RevocationSnapshot, SnapshotMetrics};
use crate::background::revocation_stream::{ApplyRevocations, RevocationStream};
use crate::background::sts_readiness::StsReadiness;
use crate::background::upstream_watch::WatchSweeper;
use crate::config::GatewayConfig;
use crate::jwks::{JwksCache, JwksMetrics, JwksSettings};
use crate::metrics::Metrics;
use crate::phases::circuit::{self, Circuits};
use crate::phases::egress::{Egress, SystemResolver};
use crate::phases::exchange::StsClient;
use crate::phases::pool::Pools;
use crate::phases::replay::JtiStore;
use crate::phases::watch::{Deadlines, Watcher};
use crate::proxy::Gateway;

/// Everything the request path shares, built once.
pub struct Deps {
    pub cfg: GatewayConfig,
    /// Revoked anchors, fed by the stream consumer and the snapshot.
    pub revocations: Arc<RevocationView>,
    /// Asks the snapshot service for an immediate reload (absent without `DATABASE_URL`).
    pub reload: Option<mpsc::Sender<ReloadRequest>>,
    pub metrics: Metrics,
    pub jwks: JwksCache,
    pub jti: JtiStore,
    pub sts: StsClient,
    /// Plain client for health probes.
    pub http: reqwest::Client,
    /// Which upstream addresses may be dialed.
    pub egress: Egress,
    /// Upstream pools in use (docs/pools.md).
    pub pools: Pools,
    /// The STS circuit breakers (global and per zone).
    pub circuits: Circuits,
    /// Where audit events go.
    pub audit: AuditSink,
    /// Deadlines and revocation cuts of forwarded requests' upstream sockets.
    pub watcher: Arc<Watcher>,
    /// Resources the STS said are MCP servers (`phases::mcp::known`).
    pub known_mcp: crate::phases::mcp::known::KnownMcp,
    /// Trace export, when an OTLP endpoint is configured (`phases::spans`).
    pub otel: Option<caracal_shared::otel::Exporter>,
}

impl Deps {
    /// Builds the dependencies; nothing connects yet (connections open on the serving runtime).
    pub fn new(cfg: GatewayConfig, reload: Option<mpsc::Sender<ReloadRequest>>) -> anyhow::Result<(Self, Shipper)> {
        let metrics = Metrics::new(cfg.pool_metrics_max_resources)?;
        let revocations = RevocationView::new(cfg.revocation_max_staleness, cfg.database_url.is_some(), cfg.streams_key.is_some());
        // One pooled client for the STS: keep-alive, no redirects (a redirect from the STS is an
        // answer outside the contract, never something to follow with a token in the body).
        let mut builder = reqwest::Client::builder()
            .timeout(cfg.sts_timeout)
            .connect_timeout(cfg.sts_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(256)
            .tcp_nodelay(true)
            .user_agent("caracal-gateway");
        if cfg.sts_http2 {
            builder = builder.http2_prior_knowledge().http2_adaptive_window(true);
        }
        builder = builder.tls_version_min(reqwest::tls::Version::TLS_1_2);
        if let Some(path) = &cfg.sts_socket {
            builder = builder.unix_socket(path.as_path());
        } else if let Some(pem) = &cfg.sts_ca_pem {
            // A private CA is the STS's only trust anchor: a public certificate for its host name
            // would not do.
            builder = builder.tls_certs_only(reqwest::Certificate::from_pem_bundle(pem)?);
        }
        let http = builder.build()?;
        let jwks_settings = JwksSettings {
            ttl: cfg.jwks_ttl,
            cooldown: cfg.jwks_cooldown,
            cold_burst: cfg.jwks_cold_burst,
            cold_per_second: cfg.jwks_cold_per_second,
        };
        let jwks_metrics = JwksMetrics { fetches: metrics.jwks_fetches.clone(), cold_refused: metrics.jwks_cold_refused.clone() };
        let jwks = JwksCache::new(http.clone(), &cfg.sts_base, &jwks_settings, jwks_metrics);
        let redis = cfg.redis.primary()?;
        let jti = JtiStore::new(redis.clone(), cfg.jti_fail_open, metrics.redis_seconds.clone());
        let sts = StsClient::new(http.clone(), &cfg.sts_base, cfg.sts_hmac_key.clone()).map_err(|e| anyhow::anyhow!("STS_URL: {e}"))?;
        let egress = Egress::new(cfg.allow_private_upstreams, cfg.upstream_allowlist.clone(), Arc::new(SystemResolver), cfg.dns_cache_ttl);
        let circuit_settings = circuit::Settings { failures: cfg.circuit_failures, window: cfg.circuit_window, open: cfg.circuit_open };
        let circuits = Circuits::new(circuit_settings, metrics.sts_circuit_opened.clone());
        let spool =
            Arc::new(Spool::open(&cfg.audit_replay_dir).map_err(|e| anyhow::anyhow!("AUDIT_REPLAY_DIR {}: {e}", cfg.audit_replay_dir))?);
        let (audit, rx, lost) = AuditSink::new(spool.clone(), cfg.audit_key.clone(), metrics.audit.clone());
        let shipper =
            Shipper { primary: redis, rx: Mutex::new(rx), spool, key: cfg.audit_key.clone(), metrics: metrics.audit.clone(), lost };
        let limits = Deadlines { header: cfg.upstream_header_timeout, body_idle: cfg.upstream_body_idle_timeout };
        let watcher = Watcher::new(limits, revocations.clone());
        let pools = Pools::new(cfg.dns_cache_ttl, metrics.upstream.clone());
        let known_mcp = Default::default();
        let otel = match &cfg.otel {
            Some(o) => Some(caracal_shared::otel::Exporter::start(o, "caracal-gateway").map_err(|e| anyhow::anyhow!("trace export: {e}"))?),
            None => None,
        };
        let deps =
            Self { cfg, revocations, reload, metrics, jwks, jti, sts, http, egress, pools, circuits, audit, watcher, known_mcp, otel };
        Ok((deps, shipper))
    }
}

/// Builds the Pingora server with the proxy service listening as configured.
pub fn build(cfg: GatewayConfig, opt: Opt) -> anyhow::Result<Server> {
    let mut server = Server::new(Some(opt))?;
    if let Some(conf) = Arc::get_mut(&mut server.configuration) {
        // Pingora's default grace is five minutes; ours is the configured drain time.
        conf.grace_period_seconds.get_or_insert(cfg.shutdown_grace.as_secs());
        conf.graceful_shutdown_timeout_seconds.get_or_insert(5);
    }
    server.bootstrap();
    let listen = cfg.listen.to_string();
    let threads = cfg.threads;
    let tls = cfg.tls.clone();
    let (reload_tx, reload_rx) = mpsc::channel(8);
    let database_url = cfg.database_url.clone();
    let (deps, shipper) = Deps::new(cfg, database_url.as_ref().map(|_| reload_tx))?;
    let deps = Arc::new(deps);
    server.add_service(background_service("audit shipper", shipper));
    server.add_service(background_service("upstream watch", WatchSweeper(deps.watcher.clone())));
    server.add_service(background_service("pool probes", PoolProbes(deps.clone())));
    server.add_service(background_service("sts readiness", StsReadiness(deps.clone())));
    let mut readiness = Vec::new();
    if let Some(url) = database_url {
        let snapshot = RevocationSnapshot {
            database_url: url,
            view: deps.revocations.clone(),
            interval: deps.cfg.snapshot_interval,
            reloads: Mutex::new(reload_rx),
            metrics: SnapshotMetrics {
                reloads: deps.metrics.revocation_reloads.clone(),
                reload_errors: deps.metrics.revocation_reload_errors.clone(),
            },
            watermark: std::sync::Mutex::new(None),
        };
        readiness.push(server.add_service(background_service("revocation snapshot", snapshot)));
    }
    if let Some(key) = deps.cfg.streams_key.clone() {
        let handler =
            ApplyRevocations { view: deps.revocations.clone(), propagation_seconds: deps.metrics.revocation_propagation_seconds.clone() };
        let stream =
            RevocationStream::new(deps.cfg.redis.primary()?, &deps.cfg.instance_id, key, handler, deps.metrics.revocation_stream.clone());
        readiness.push(server.add_service(background_service("revocation stream", stream)));
    }
    let listener = ListenerConfig::tcp(&listen).l4_buffer(L4BufferSettings::default().read(deps.cfg.listen_read_buffer));
    let mut proxy = pingora::proxy::http_proxy_service(&server.configuration, Gateway { deps });
    proxy.threads = Some(threads);
    match tls {
        Some((cert, key)) => {
            let mut settings = TlsSettings::intermediate(&cert, &key)?;
            // The intermediate profile still admits TLS 1.0/1.1 in this BoringSSL build: pin 1.2.
            settings.set_min_proto_version(Some(pingora::tls::ssl::SslVersion::TLS1_2))?;
            settings.enable_h2();
            proxy.add_listener(listener.tls(settings));
        }
        None => proxy.add_listener(listener),
    }
    // The proxy starts accepting once the revocation view has loaded (or the sources timed out).
    let proxy = server.add_service(proxy);
    proxy.add_dependencies(readiness.iter());
    Ok(server)
}
