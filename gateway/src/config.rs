//! Gateway configuration, read from the environment (names as in seeds 003 and 004).
//!
//! Every variable is read, every problem collected, and production refuses to start with the full
//! list (hardening checklist, seed 003). Secrets may come from `NAME_FILE`.

use std::net::SocketAddr;
use std::time::Duration;

use caracal_shared::config_env::{ConfigErrors, Mode, Reader, Source};
use caracal_shared::redis_target::RedisTarget;

/// Everything the gateway needs to run.
#[derive(Clone)]
pub struct GatewayConfig {
    /// `CARACAL_MODE`: `dev` or `production` (default).
    pub mode: Mode,
    /// `LISTEN_ADDR`: where the proxy listens (default `0.0.0.0:8081`).
    pub listen: SocketAddr,
    /// `STS_URL`: base URL of the STS (token exchange and JWKS), without a trailing `/`.
    pub sts_url: String,
    /// `STS_SOCKET`: the Unix socket of a control plane on this host (its `LISTEN_SOCKET`). When
    /// set, every request to the STS (exchange, MCP visibility, JWKS, health) goes over it, as
    /// plain HTTP to [`GatewayConfig::sts_base`]; `STS_URL` still names the issuer and host.
    pub sts_socket: Option<std::path::PathBuf>,
    /// Where requests to the STS are addressed: `STS_URL`, or with `STS_SOCKET` its `http://`
    /// form (the socket carries no TLS: its file permissions decide who may connect).
    pub sts_base: String,
    /// `ISSUER_URL`: the `iss` every accepted mandate carries, byte for byte (default `STS_URL`).
    pub issuer: String,
    /// `STS_CA_FILE`: PEM CA certificates the STS's certificate must chain to (a private CA). When
    /// set, they are the only roots trusted for the STS (exchange, JWKS, health); unset, the
    /// system's roots.
    pub sts_ca_pem: Option<Vec<u8>>,
    /// `GATEWAY_STS_HMAC_KEY`: signs the per-request exchange. Required in every mode: without it
    /// no exchange can succeed, so starting would only hide the misconfiguration.
    pub sts_hmac_key: Vec<u8>,
    /// `REDIS_URL` and `REDIS_CA_FILE`: JTI single-use markers, the revocation stream, audit
    /// frames (see `caracal_shared::redis_target`).
    pub redis: RedisTarget,
    /// `STS_HTTP2`: speak HTTP/2 to the STS (prior knowledge on http://). Default false: measured
    /// on loopback, pooled HTTP/1.1 connections cost less per exchange (bench issue note).
    pub sts_http2: bool,
    /// `STS_TIMEOUT`: exchange and JWKS fetch deadline (default 5 s).
    pub sts_timeout: Duration,
    /// `UPSTREAM_TIMEOUT`: connect deadline toward the upstream (default 30 s; one attempt at
    /// most 5 s of it).
    pub upstream_timeout: Duration,
    /// `UPSTREAM_RESPONSE_HEADER_TIMEOUT`: longest wait for the response header after the
    /// request's last byte (default `UPSTREAM_TIMEOUT`, the original's meaning of that setting).
    pub upstream_header_timeout: Duration,
    /// `UPSTREAM_BODY_IDLE_TIMEOUT`: longest silence within a body of declared length (default
    /// 60 s). Open streams (SSE, chunked, unsized) have no idle limit: revocation ends them.
    pub upstream_body_idle_timeout: Duration,
    /// `MAX_REQUEST_BYTES`: largest request body (default 10 MiB).
    pub max_request_bytes: u64,
    /// `PREFLIGHT_SECONDS`: a mandate expiring sooner than this is refused (default 35 s), so it
    /// cannot expire between the gateway's checks and the upstream's.
    pub preflight: Duration,
    /// `JTI_FAIL_OPEN`: dev only; when Redis fails, allow instead of deny.
    pub jti_fail_open: bool,
    /// `JWKS_CACHE_TTL`: how long a zone's keys are trusted before refetch (default 5 min).
    pub jwks_ttl: Duration,
    /// `JWKS_REFETCH_COOLDOWN`: least time between refetches a zone's unknown `kid` may trigger
    /// (default 30 s): an attacker cannot turn bad tokens into a fetch per request.
    pub jwks_cooldown: Duration,
    /// `JWKS_COLD_FETCH_BURST` (100) and `JWKS_COLD_FETCH_RATE` (20 per second): the global budget
    /// of JWKS fetches for zones without known keys (zone ids in unverified tokens are the
    /// caller's choice). Size the burst for the zones a restarted gateway must warm at once.
    pub jwks_cold_burst: u32,
    pub jwks_cold_per_second: u32,
    /// `METRICS_BEARER`: bearer required on `/metrics`; unset ⇒ open in dev, closed in production.
    pub metrics_bearer: Option<String>,
    /// `TLS_CERT_FILE` / `TLS_KEY_FILE`: serve TLS (BoringSSL, TLS ≥ 1.2). Required in production.
    pub tls: Option<(String, String)>,
    /// `GATEWAY_THREADS`: proxy worker threads (default: available cores).
    pub threads: usize,
    /// `LISTEN_READ_BUFFER_BYTES` (16 KiB; 0 = unbuffered, at most 1 MiB): the read buffer of each
    /// client connection. Pingora's default is 64 KiB, zeroed when the connection is accepted and
    /// held while it is open: most of a held SSE stream's memory. Reads as large as the buffer (a
    /// TLS record, a body chunk) bypass it, so 16 KiB costs no extra system calls for those.
    pub listen_read_buffer: usize,
    /// `DATABASE_URL`: Postgres, read for the periodic revocation snapshot. Required in
    /// production, with TLS (`sslmode=require|verify-ca|verify-full`); in dev, unset means the
    /// view is fed by the stream alone.
    pub database_url: Option<String>,
    /// `STREAMS_HMAC_KEY`: verifies `_sig` of `caracal.sessions.revoke` messages. Required in
    /// production; in dev, unset means no stream consumer (snapshot only).
    pub streams_key: Option<Vec<u8>>,
    /// `REVOCATION_SNAPSHOT_INTERVAL`: period of the Postgres snapshot (default 30 s).
    pub snapshot_interval: Duration,
    /// `REVOCATION_MAX_STALENESS`: a view older than this answers 503 (default 70 s).
    pub revocation_max_staleness: Duration,
    /// `GATEWAY_PUBLIC_URL`: the origin clients reach the gateway at (`https://host[:port]`), named in
    /// OAuth discovery (`crate::discovery`); unset, each request's scheme and `Host` are used.
    pub public_url: Option<String>,
    /// `CARACAL_ADMIN_TOKEN`: authorizes `POST /internal/revocations/reload` (unset: 404).
    pub admin_token: Option<String>,
    /// `ALLOW_PRIVATE_UPSTREAMS`: permit loopback, private, CGNAT and ULA upstreams (metadata,
    /// link-local and multicast stay refused). Default false.
    pub allow_private_upstreams: bool,
    /// `UPSTREAM_HOST_ALLOWLIST`: comma-separated host names upstreams must use (empty: any).
    /// Production refuses `ALLOW_PRIVATE_UPSTREAMS=true` without one; an empty list is warned
    /// about at start.
    pub upstream_allowlist: Vec<String>,
    /// `DNS_CACHE_TTL`: how long a checked DNS answer is reused (default 30 s).
    pub dns_cache_ttl: Duration,
    /// `POOL_METRICS_MAX_RESOURCES` (256): resources with their own label in the per-endpoint
    /// upstream metrics; later ones share `resource="other"` (bounded cardinality).
    pub pool_metrics_max_resources: usize,
    /// `MCP_MAX_BODY_BYTES` (64 KiB, also the most): the largest MCP POST body the gateway reads
    /// before the exchange (`docs/mcp.md` §1). Pingora forwards a body read before the upstream is
    /// chosen from its 64 KiB retry buffer, so a larger one could not be forwarded; an MCP resource
    /// refuses larger POSTs (413).
    pub mcp_max_body_bytes: usize,
    /// `MCP_DENIAL_STATUS` (200, or 400 / 403): the HTTP status of a JSON-RPC error answering an
    /// MCP operation the policy refused. 200 is what every client turns into an error of that one
    /// call; `mcp` 1.x and the TypeScript client end the whole session on a 4xx.
    pub mcp_denial_status: u16,
    /// `MCP_MAX_LIST_BYTES` (4 MiB): the largest answer to an MCP listing the gateway holds to
    /// filter it (`docs/mcp.md` §3); a larger one is cut.
    pub mcp_max_list_bytes: usize,
    /// `MCP_SESSION_TTL` (24 h): how long an MCP session id stays bound to the root session that
    /// opened it without being used (`docs/mcp.md` §5); each use renews it.
    pub mcp_session_ttl: Duration,
    /// `STS_CIRCUIT_FAILURES` (5), `STS_CIRCUIT_WINDOW` (10 s), `STS_CIRCUIT_OPEN` (10 s): the
    /// STS circuit breaker.
    pub circuit_failures: u32,
    pub circuit_window: Duration,
    pub circuit_open: Duration,
    /// `AUDIT_HMAC_KEY`: signs audit frames. Required in production.
    pub audit_key: Option<Vec<u8>>,
    /// `AUDIT_REPLAY_DIR`: where audit frames wait while Redis is down
    /// (default `/var/lib/caracal/audit-replay`).
    pub audit_replay_dir: String,
    /// `SHUTDOWN_GRACE_SECONDS`: after SIGTERM (or SIGQUIT during an upgrade) the gateway stops
    /// accepting and keeps serving in-flight requests and streams this long (default 30; a
    /// `grace_period_seconds` in the Pingora YAML wins).
    pub shutdown_grace: Duration,
    /// `SERVER_TIMING` (false): a `Server-Timing` header on forwarded responses with the time of
    /// each phase (verify, replay, sts, upstream, gateway). Off by default: it tells clients how
    /// long the gateway's checks and the upstream took.
    pub server_timing: bool,
    /// `ACCESS_LOG_SAMPLE` (0): the share of forwarded requests logged at info with their phase
    /// timings (0 to 1); denials are always logged at info. At edge rates a line per request
    /// costs more than the checks, so the default logs forwarded requests at debug only.
    pub access_log_sample: f64,
    /// OpenTelemetry trace export (`OTEL_EXPORTER_OTLP_*`, off when unset; `caracal_shared::otel`).
    pub otel: Option<caracal_shared::otel::OtelConfig>,
    /// `GATEWAY_INSTANCE_ID`: names this gateway's consumer group, so every gateway process sees
    /// every revocation (default `<hostname>:<listen port>:<pid>`).
    pub instance_id: String,
}

impl std::fmt::Debug for GatewayConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayConfig")
            .field("mode", &self.mode)
            .field("listen", &self.listen)
            .field("sts_url", &self.sts_url)
            .field("sts_socket", &self.sts_socket)
            .field("issuer", &self.issuer)
            .field("max_request_bytes", &self.max_request_bytes)
            .field("threads", &self.threads)
            .field("listen_read_buffer", &self.listen_read_buffer)
            .finish_non_exhaustive()
    }
}

impl GatewayConfig {
    /// Reads and validates the configuration; every problem is reported at once.
    pub fn from_source(src: &dyn Source) -> Result<Self, ConfigErrors> {
        let mut r = Reader::new(src);
        let mode = r.mode();
        let production = mode == Mode::Production;

        let listen_raw = r.string("LISTEN_ADDR", "0.0.0.0:8081");
        let listen = listen_raw.parse().unwrap_or_else(|_| {
            r.problem("LISTEN_ADDR", format!("expected host:port, got {listen_raw:?}"));
            SocketAddr::from(([0, 0, 0, 0], 8081))
        });

        let sts_url = r.required("STS_URL").map(|s| s.trim_end_matches('/').to_owned()).unwrap_or_default();
        if !sts_url.is_empty() {
            match url::Url::parse(&sts_url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
                    if production && u.scheme() != "https" {
                        r.problem("STS_URL", "must be https in production (tokens cross this link)");
                    }
                }
                _ => r.problem("STS_URL", "must be an absolute http(s) URL"),
            }
        }
        let sts_socket = r.optional("STS_SOCKET").map(std::path::PathBuf::from);
        if sts_socket.as_ref().is_some_and(|p| !p.is_absolute()) {
            r.problem("STS_SOCKET", "must be an absolute path (the control plane's LISTEN_SOCKET)");
        }
        let sts_base = match (&sts_socket, url::Url::parse(&sts_url)) {
            (Some(_), Ok(u)) => {
                format!("http://{}{}", &u[url::Position::BeforeHost..url::Position::AfterPort], u.path().trim_end_matches('/'))
            }
            _ => sts_url.clone(),
        };
        let issuer = r.optional("ISSUER_URL").map(|s| s.trim_end_matches('/').to_owned()).unwrap_or_else(|| sts_url.clone());
        let sts_ca_pem = r.ca_file("STS_CA_FILE");
        if (sts_ca_pem.is_some() || r.has_problems_for("STS_CA_FILE")) && !sts_url.is_empty() && !sts_url.starts_with("https://") {
            r.problem("STS_CA_FILE", "is only used with an https:// STS_URL");
        }

        let sts_hmac_key = r.hex_key("GATEWAY_STS_HMAC_KEY", 32);
        if sts_hmac_key.is_none() && !r.has_problems_for("GATEWAY_STS_HMAC_KEY") {
            r.problem("GATEWAY_STS_HMAC_KEY", "is required: the STS refuses unsigned gateway exchanges (openssl rand -hex 32)");
        }
        let redis = RedisTarget::read(&mut r, production);

        let sts_timeout = r.duration("STS_TIMEOUT", Duration::from_secs(5));
        let sts_http2 = r.bool("STS_HTTP2", false);
        let upstream_timeout = r.duration("UPSTREAM_TIMEOUT", Duration::from_secs(30));
        let upstream_header_timeout = r.duration("UPSTREAM_RESPONSE_HEADER_TIMEOUT", upstream_timeout);
        let upstream_body_idle_timeout = r.duration("UPSTREAM_BODY_IDLE_TIMEOUT", Duration::from_secs(60));
        let max_request_bytes = r.parse("MAX_REQUEST_BYTES", 10 * 1024 * 1024u64);
        if max_request_bytes == 0 {
            r.problem("MAX_REQUEST_BYTES", "must be greater than 0");
        }
        let preflight = Duration::from_secs(r.parse("PREFLIGHT_SECONDS", 35u64));
        let jti_fail_open = r.bool("JTI_FAIL_OPEN", false);
        if jti_fail_open && production {
            r.problem("JTI_FAIL_OPEN", "must not be true in production: replay protection would switch off when Redis fails");
        }
        for name in ["INSECURE_HTTP", "INSECURE_STS"] {
            if r.bool(name, false) && production {
                r.problem(name, "must not be true in production");
            }
        }
        let jwks_ttl = r.duration("JWKS_CACHE_TTL", Duration::from_secs(300));
        let jwks_cooldown = r.duration("JWKS_REFETCH_COOLDOWN", Duration::from_secs(30));
        let jwks_cold_burst = r.parse("JWKS_COLD_FETCH_BURST", 100u32);
        let jwks_cold_per_second = r.parse("JWKS_COLD_FETCH_RATE", 20u32);
        for (name, v) in [("JWKS_COLD_FETCH_BURST", jwks_cold_burst), ("JWKS_COLD_FETCH_RATE", jwks_cold_per_second)] {
            if v == 0 {
                r.problem(name, "must be at least 1");
            }
        }
        let metrics_bearer = r.optional("METRICS_BEARER");
        if let Some(b) = &metrics_bearer
            && b.len() < 16
        {
            r.problem("METRICS_BEARER", "must be at least 16 characters");
        }
        let database_url = r.postgres_url("DATABASE_URL", production);
        if production && database_url.is_none() && !r.has_problems_for("DATABASE_URL") {
            r.problem("DATABASE_URL", "is required in production (revocation snapshot)");
        }
        let streams_key = r.hex_key("STREAMS_HMAC_KEY", 32);
        if production && streams_key.is_none() && !r.has_problems_for("STREAMS_HMAC_KEY") {
            r.problem("STREAMS_HMAC_KEY", "is required in production (signed revocation stream)");
        }
        let snapshot_interval = r.duration("REVOCATION_SNAPSHOT_INTERVAL", Duration::from_secs(30));
        let revocation_max_staleness = r.duration("REVOCATION_MAX_STALENESS", Duration::from_secs(70));
        if revocation_max_staleness < snapshot_interval {
            r.problem("REVOCATION_MAX_STALENESS", "must be at least REVOCATION_SNAPSHOT_INTERVAL");
        }
        let public_url = public_url(&mut r, production);
        let admin_token = r.optional("CARACAL_ADMIN_TOKEN");
        if let Some(t) = &admin_token
            && t.len() < 32
        {
            r.problem("CARACAL_ADMIN_TOKEN", "must be at least 32 characters");
        }
        let allow_private_upstreams = r.bool("ALLOW_PRIVATE_UPSTREAMS", false);
        let upstream_allowlist: Vec<String> = r
            .optional("UPSTREAM_HOST_ALLOWLIST")
            .map(|l| l.split(',').map(|h| h.trim().to_ascii_lowercase()).filter(|h| !h.is_empty()).collect())
            .unwrap_or_default();
        if production && allow_private_upstreams && upstream_allowlist.is_empty() {
            r.problem(
                "ALLOW_PRIVATE_UPSTREAMS",
                "true in production needs UPSTREAM_HOST_ALLOWLIST: otherwise every private address, and any host name resolving to one, is reachable (SSRF)",
            );
        }
        let dns_cache_ttl = r.duration("DNS_CACHE_TTL", Duration::from_secs(30));
        let pool_metrics_max_resources = r.parse("POOL_METRICS_MAX_RESOURCES", 256usize);
        if pool_metrics_max_resources > 10_000 {
            r.problem("POOL_METRICS_MAX_RESOURCES", "must be at most 10000 (each resource adds label sets per endpoint)");
        }
        let mcp_max_body_bytes = r.parse("MCP_MAX_BODY_BYTES", crate::phases::mcp::MAX_READABLE_BODY);
        if !(1..=crate::phases::mcp::MAX_READABLE_BODY).contains(&mcp_max_body_bytes) {
            r.problem("MCP_MAX_BODY_BYTES", "must be 1..65536 (a body read before the exchange is forwarded from Pingora's 64 KiB buffer)");
        }
        let mcp_max_list_bytes = r.parse("MCP_MAX_LIST_BYTES", 4 * 1024 * 1024usize);
        if mcp_max_list_bytes < 1024 {
            r.problem("MCP_MAX_LIST_BYTES", "must be at least 1024");
        }
        let mcp_session_ttl = r.duration("MCP_SESSION_TTL", Duration::from_secs(24 * 3600));
        let mcp_denial_status = r.parse("MCP_DENIAL_STATUS", 200u16);
        if !matches!(mcp_denial_status, 200 | 400 | 403) {
            r.problem("MCP_DENIAL_STATUS", "must be 200, 400 or 403");
        }
        let audit_key = r.hex_key("AUDIT_HMAC_KEY", 32);
        if production && audit_key.is_none() && !r.has_problems_for("AUDIT_HMAC_KEY") {
            r.problem("AUDIT_HMAC_KEY", "is required in production (signed audit frames)");
        }
        if audit_key.is_some() && audit_key == streams_key {
            r.problem("AUDIT_HMAC_KEY", "must differ from STREAMS_HMAC_KEY");
        }
        let audit_replay_dir = r.string("AUDIT_REPLAY_DIR", "/var/lib/caracal/audit-replay");
        let shutdown_grace = Duration::from_secs(r.parse("SHUTDOWN_GRACE_SECONDS", 30u64));
        let server_timing = r.bool("SERVER_TIMING", false);
        let otel = caracal_shared::otel::OtelConfig::read(&mut r, mode, "caracal-gateway");
        let access_log_sample = r.parse("ACCESS_LOG_SAMPLE", 0f64);
        if !(0.0..=1.0).contains(&access_log_sample) {
            r.problem("ACCESS_LOG_SAMPLE", "must be between 0 and 1 (the share of forwarded requests logged at info)");
        }
        let circuit_failures = r.parse("STS_CIRCUIT_FAILURES", 5u32);
        if circuit_failures == 0 {
            r.problem("STS_CIRCUIT_FAILURES", "must be at least 1");
        }
        let circuit_window = r.duration("STS_CIRCUIT_WINDOW", Duration::from_secs(10));
        let circuit_open = r.duration("STS_CIRCUIT_OPEN", Duration::from_secs(10));
        let host = caracal_shared::config_env::hostname("gateway");
        let instance_id = r.string("GATEWAY_INSTANCE_ID", &format!("{host}:{}:{}", listen.port(), std::process::id()));
        let tls = match (r.optional("TLS_CERT_FILE"), r.optional("TLS_KEY_FILE")) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => {
                if production {
                    r.problem("TLS_CERT_FILE", "TLS_CERT_FILE and TLS_KEY_FILE are required in production");
                }
                None
            }
            _ => {
                r.problem("TLS_CERT_FILE", "set both TLS_CERT_FILE and TLS_KEY_FILE, or neither");
                None
            }
        };
        let threads = r.parse("GATEWAY_THREADS", caracal_shared::config_env::available_cores());
        if threads == 0 {
            r.problem("GATEWAY_THREADS", "must be at least 1");
        }
        let listen_read_buffer = r.parse("LISTEN_READ_BUFFER_BYTES", 16 * 1024usize);
        if listen_read_buffer > 1024 * 1024 {
            r.problem("LISTEN_READ_BUFFER_BYTES", "must be at most 1048576 (1 MiB)");
        }
        r.finish()?;
        Ok(Self {
            mode,
            listen,
            sts_url,
            sts_socket,
            sts_base,
            issuer,
            sts_ca_pem,
            sts_hmac_key: sts_hmac_key.unwrap_or_default(),
            redis,
            sts_timeout,
            sts_http2,
            mcp_max_body_bytes,
            mcp_denial_status,
            mcp_max_list_bytes,
            mcp_session_ttl,
            upstream_timeout,
            upstream_header_timeout,
            upstream_body_idle_timeout,
            max_request_bytes,
            preflight,
            jti_fail_open,
            jwks_ttl,
            jwks_cooldown,
            jwks_cold_burst,
            jwks_cold_per_second,
            metrics_bearer,
            tls,
            threads,
            listen_read_buffer,
            database_url,
            streams_key,
            snapshot_interval,
            revocation_max_staleness,
            public_url,
            admin_token,
            allow_private_upstreams,
            upstream_allowlist,
            dns_cache_ttl,
            pool_metrics_max_resources,
            circuit_failures,
            circuit_window,
            circuit_open,
            audit_key,
            audit_replay_dir,
            shutdown_grace,
            server_timing,
            access_log_sample,
            otel,
            instance_id,
        })
    }
}

/// `GATEWAY_PUBLIC_URL`, normalized to its origin.
fn public_url(r: &mut Reader<'_>, production: bool) -> Option<String> {
    let raw = r.optional("GATEWAY_PUBLIC_URL")?;
    match url::Url::parse(&raw) {
        Ok(u)
            if matches!(u.scheme(), "http" | "https")
                && u.host().is_some()
                && u.username().is_empty()
                && u.password().is_none()
                && u.path() == "/"
                && u.query().is_none()
                && u.fragment().is_none() =>
        {
            if production && u.scheme() != "https" {
                r.problem("GATEWAY_PUBLIC_URL", "must be https in production (clients send their tokens there)");
            }
            Some(u.origin().ascii_serialization())
        }
        _ => {
            r.problem("GATEWAY_PUBLIC_URL", "must be an origin, http(s)://host[:port], without path, query, userinfo or fragment");
            None
        }
    }
}

impl GatewayConfig {
    /// What is allowed but weakens the deployment, said once at start (seed 003).
    pub fn warnings(&self) -> Vec<&'static str> {
        let mut w = Vec::new();
        if self.upstream_allowlist.is_empty() {
            w.push("UPSTREAM_HOST_ALLOWLIST is empty: any upstream host that resolves to an allowed address is reachable; list the hosts your resources use");
        }
        if self.mode == Mode::Production && !self.redis.is_tls() {
            w.push("REDIS_URL is plaintext redis://: JTI markers, stream entries and the AUTH password cross the network in clear unless Redis is on this host; prefer rediss://");
        }
        w.extend(self.redis.failover_warning());
        if self.audit_key.is_none() {
            w.push("AUDIT_HMAC_KEY is unset (dev): audit frames are unsigned and a ledger dead-letters them");
        }
        if self.tls.is_none() {
            w.push("serving plaintext HTTP (dev): set TLS_CERT_FILE and TLS_KEY_FILE before real traffic");
        }
        w
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn dev() -> HashMap<&'static str, &'static str> {
        HashMap::from([
            ("CARACAL_MODE", "dev"),
            ("STS_URL", "http://127.0.0.1:8080/"),
            ("REDIS_URL", "redis://127.0.0.1:6379"),
            ("GATEWAY_STS_HMAC_KEY", "ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12"),
        ])
    }

    #[test]
    fn dev_defaults() {
        let c = GatewayConfig::from_source(&dev()).unwrap();
        assert_eq!(c.sts_url, "http://127.0.0.1:8080", "trailing slash trimmed");
        assert_eq!(c.issuer, c.sts_url, "issuer defaults to the STS URL");
        assert_eq!(c.max_request_bytes, 10 * 1024 * 1024);
        assert_eq!(c.preflight, Duration::from_secs(35));
        assert_eq!(c.listen.port(), 8081);
        assert_eq!(c.listen_read_buffer, 16 * 1024);
        assert_eq!(c.upstream_header_timeout, c.upstream_timeout, "the header wait defaults to UPSTREAM_TIMEOUT");
        assert_eq!(c.upstream_body_idle_timeout, Duration::from_secs(60));
    }

    #[test]
    fn a_co_located_sts_is_reached_over_its_socket_in_plain_http() {
        assert_eq!(GatewayConfig::from_source(&dev()).unwrap().sts_base, "http://127.0.0.1:8080", "no socket: STS_URL itself");
        let mut env = dev();
        env.insert("STS_URL", "https://sts.internal:8443/base/");
        env.insert("STS_SOCKET", "/run/caracal/sts.sock");
        let c = GatewayConfig::from_source(&env).unwrap();
        assert_eq!(c.sts_socket.as_deref(), Some(std::path::Path::new("/run/caracal/sts.sock")));
        assert_eq!(c.sts_base, "http://sts.internal:8443/base");
        assert_eq!(c.issuer, "https://sts.internal:8443/base", "the issuer is still STS_URL");
        env.insert("STS_SOCKET", "run/sts.sock");
        let err = GatewayConfig::from_source(&env).unwrap_err().to_string();
        assert!(err.contains("STS_SOCKET"), "{err}");
    }

    #[test]
    fn production_reports_every_violation_at_once() {
        let mut env = dev();
        env.insert("CARACAL_MODE", "production");
        env.insert("JTI_FAIL_OPEN", "true");
        env.insert("INSECURE_STS", "true");
        env.insert("INSECURE_HTTP", "yes");
        env.remove("GATEWAY_STS_HMAC_KEY");
        let errs = GatewayConfig::from_source(&env).unwrap_err();
        for name in [
            "STS_URL",
            "JTI_FAIL_OPEN",
            "INSECURE_STS",
            "INSECURE_HTTP",
            "GATEWAY_STS_HMAC_KEY",
            "TLS_CERT_FILE",
            "DATABASE_URL",
            "STREAMS_HMAC_KEY",
        ] {
            assert!(errs.mentions(name), "{name} missing from: {errs}");
        }
    }

    /// A production configuration that passes every other check.
    fn production() -> HashMap<&'static str, &'static str> {
        HashMap::from([
            ("CARACAL_MODE", "production"),
            ("STS_URL", "https://sts.example"),
            ("GATEWAY_STS_HMAC_KEY", "ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12"),
            ("STREAMS_HMAC_KEY", "0102030405060708091011121314151617181920212223242526272829303132"),
            ("AUDIT_HMAC_KEY", "1112131415161718192021222324252627282930313233343536373839404142"),
            ("METRICS_BEARER", "metrics-bearer-0123456789"),
            ("TLS_CERT_FILE", "/etc/caracal/cert.pem"),
            ("TLS_KEY_FILE", "/etc/caracal/key.pem"),
            ("DATABASE_URL", "postgres://gateway@db.internal/caracal?sslmode=verify-full"),
            ("REDIS_URL", "rediss://gateway:redis-password@redis.internal:6380"),
            ("UPSTREAM_HOST_ALLOWLIST", "mcp.internal"),
        ])
    }

    /// Plaintext Postgres, passwordless Redis, private upstreams without an allowlist and an
    /// unusable STS CA are all reported in one go; each fixed, the gateway starts.
    #[test]
    fn production_refuses_plaintext_and_open_hops_all_at_once() {
        let mut env = production();
        env.insert("DATABASE_URL", "postgresql://gateway@db.internal/caracal?application_name=sslmode=require");
        env.insert("REDIS_URL", "redis://redis.internal:6379");
        env.insert("REDIS_CA_FILE", "/nonexistent/redis-ca.pem");
        env.insert("STS_CA_FILE", "/nonexistent/sts-ca.pem");
        env.insert("ALLOW_PRIVATE_UPSTREAMS", "true");
        env.remove("UPSTREAM_HOST_ALLOWLIST");
        let errs = GatewayConfig::from_source(&env).unwrap_err();
        for name in ["DATABASE_URL", "REDIS_URL", "REDIS_CA_FILE", "STS_CA_FILE", "ALLOW_PRIVATE_UPSTREAMS"] {
            assert!(errs.mentions(name), "{name} missing from: {errs}");
        }
        assert!(errs.to_string().contains("UPSTREAM_HOST_ALLOWLIST") && errs.to_string().contains("sslmode"), "fixes named: {errs}");

        let mut env = production();
        env.insert("ALLOW_PRIVATE_UPSTREAMS", "true");
        let c = GatewayConfig::from_source(&env).unwrap_or_else(|e| panic!("fixed: {e}"));
        assert!(c.allow_private_upstreams && c.redis.is_tls() && c.sts_ca_pem.is_none());
        assert!(c.warnings().is_empty(), "{:?}", c.warnings());
    }

    #[test]
    fn an_empty_allowlist_and_plaintext_redis_are_warned_about() {
        let mut env = production();
        env.remove("UPSTREAM_HOST_ALLOWLIST");
        env.insert("REDIS_URL", "redis://:pw@127.0.0.1:6379");
        let c = GatewayConfig::from_source(&env).unwrap();
        let w = c.warnings().join("\n");
        assert!(w.contains("UPSTREAM_HOST_ALLOWLIST is empty") && w.contains("rediss://"), "{w}");
        assert!(!format!("{c:?}").contains("pw@"), "the Redis URL never prints");
    }

    #[test]
    fn the_sts_ca_must_be_pem_and_only_for_https() {
        let dir = std::env::temp_dir().join(format!("caracal-gw-ca-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let not_pem = dir.join("ca.pem");
        std::fs::write(&not_pem, "no certificate here").unwrap();
        let mut env = dev();
        env.insert("STS_CA_FILE", not_pem.to_str().unwrap());
        let errs = GatewayConfig::from_source(&env).unwrap_err();
        assert!(errs.mentions("STS_CA_FILE") && errs.to_string().contains("https://"), "{errs}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_public_url_is_an_origin() {
        let mut env = dev();
        env.insert("GATEWAY_PUBLIC_URL", "https://MCP.Example:443/");
        assert_eq!(GatewayConfig::from_source(&env).unwrap().public_url.as_deref(), Some("https://mcp.example"), "normalized");
        env.insert("GATEWAY_PUBLIC_URL", "http://[::1]:8081");
        assert_eq!(GatewayConfig::from_source(&env).unwrap().public_url.as_deref(), Some("http://[::1]:8081"));
        assert_eq!(GatewayConfig::from_source(&dev()).unwrap().public_url, None);
        for bad in [
            "gw.example",
            "ftp://gw.example",
            "https://gw.example/mcp",
            "https://u:p@gw.example",
            "https://gw.example/?q",
            "https://gw.example/#f",
        ] {
            env.insert("GATEWAY_PUBLIC_URL", bad);
            let errs = GatewayConfig::from_source(&env).expect_err(bad);
            assert!(errs.mentions("GATEWAY_PUBLIC_URL"), "{bad}: {errs}");
        }
        let mut env = production();
        env.insert("GATEWAY_PUBLIC_URL", "http://gw.example");
        let errs = GatewayConfig::from_source(&env).unwrap_err();
        assert!(errs.mentions("GATEWAY_PUBLIC_URL") && errs.to_string().contains("https"), "{errs}");
    }

    #[test]
    fn bad_values_are_named() {
        let mut env = dev();
        env.insert("MAX_REQUEST_BYTES", "0");
        env.insert("STS_TIMEOUT", "soon");
        env.insert("REDIS_URL", "http://x");
        env.insert("TLS_KEY_FILE", "/k.pem");
        env.insert("UPSTREAM_RESPONSE_HEADER_TIMEOUT", "0s");
        env.insert("LISTEN_READ_BUFFER_BYTES", "2000000");
        let errs = GatewayConfig::from_source(&env).unwrap_err();
        for name in [
            "MAX_REQUEST_BYTES",
            "STS_TIMEOUT",
            "REDIS_URL",
            "TLS_CERT_FILE",
            "UPSTREAM_RESPONSE_HEADER_TIMEOUT",
            "LISTEN_READ_BUFFER_BYTES",
        ] {
            assert!(errs.mentions(name), "{name} missing from: {errs}");
        }
    }
}
