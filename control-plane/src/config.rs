//! Control-plane configuration (environment; secrets may come from `NAME_FILE`).
//!
//! Every variable is read and every problem reported at once; production refuses to start on any
//! hardening-checklist violation (seed 003).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use caracal_shared::config_env::{ConfigErrors, Mode, Reader, Source};
use caracal_shared::redis_target::RedisTarget;
use caracal_sts::StsConfig;

/// Most async worker threads (`CONTROL_PLANE_THREADS`).
pub const MAX_THREADS: usize = 1024;

/// What the control plane needs.
#[derive(Clone, Debug)]
pub struct ControlPlaneConfig {
    /// `CARACAL_MODE`.
    pub mode: Mode,
    /// `LISTEN_ADDR` (default `0.0.0.0:8080`).
    pub listen: SocketAddr,
    /// `LISTEN_SOCKET`: also serve on this Unix socket (plain HTTP, mode 0660: the file's owner
    /// and group decide who connects), for a gateway on the same host (its `STS_SOCKET`).
    pub listen_socket: Option<std::path::PathBuf>,
    /// `TLS_CERT_FILE` / `TLS_KEY_FILE`: serve TLS ≥ 1.2 (h2 and HTTP/1.1 by ALPN). Production
    /// requires them unless `TLS_TERMINATED_BY_PROXY=true`.
    pub tls: Option<ServerTls>,
    /// `TLS_TERMINATED_BY_PROXY`: the operator states that a load balancer or proxy in front of
    /// this listener terminates TLS, so a plaintext listener is acceptable in production.
    pub tls_terminated_by_proxy: bool,
    /// `DATABASE_URL` (TLS required in production, see `caracal_shared::postgres_url`).
    pub database_url: Secret,
    /// `DATABASE_MAX_CONNECTIONS` (default 16).
    pub database_max_connections: u32,
    /// `CONTROL_PLANE_THREADS`: async worker threads (default: available cores). On a host shared
    /// with a gateway, fewer workers wake less often for work another could have done: less CPU per
    /// request, fewer requests at saturation (measured in issue 15, `docs/operations.md`).
    pub threads: usize,
    /// `REDIS_URL` and `REDIS_CA_FILE` (see `caracal_shared::redis_target`).
    pub redis: RedisTarget,
    /// `BOOTSTRAP_ADMIN_TOKEN`: authorizes `POST /v1/bootstrap` only. Unset ⇒ bootstrap disabled.
    pub bootstrap_admin_token: Option<Secret>,
    /// `ADMIN_AUTH_FAIL_LIMIT_PER_MIN` (60, the original's): failed admin or bootstrap
    /// authentications per client address per minute; past it every admin authentication from
    /// that address answers 429 until the minute ends.
    pub admin_auth_fail_limit: u32,
    /// OpenTelemetry trace export (`OTEL_EXPORTER_OTLP_*`, off when unset; `caracal_shared::otel`).
    pub otel: Option<caracal_shared::otel::OtelConfig>,
    /// `STREAMS_HMAC_KEY`: signs every stream message (`_sig`).
    pub streams_hmac_key: Secret,
    /// `METRICS_BEARER`: bearer for `/metrics`; unset ⇒ open in dev, closed in production.
    pub metrics_bearer: Option<Secret>,
    /// `AUDIT_HMAC_KEY` (hex): signs every audit frame this process writes (token exchanges, admin
    /// and Coordinator actions, Control) and verifies producers' frames in the ledger. Required in
    /// every mode: a ledger files only signed frames, so unsigned evidence would be dead-lettered.
    pub audit_hmac_key: Option<Secret>,
    /// `AGENT_SESSION_MAX_SECONDS` (default 604800 = 7 days): longest life of a service agent
    /// session, however long it keeps heartbeating (a task session lives its own `ttl_seconds`,
    /// at most a day).
    pub agent_session_max_seconds: i64,
    /// The STS's own settings.
    pub sts: StsConfig,
    /// The optional Control endpoint; `None` unless `CARACAL_CONTROL_ENABLED=true`.
    pub control: Option<ControlConfig>,
    /// The audit ledger; `None` when `AUDIT_LEDGER_ENABLED=false` (another process files events).
    pub ledger: Option<LedgerConfig>,
}

/// Settings of the audit ledger this process runs (issue 6, `docs/audit.md`).
#[derive(Clone, Debug)]
pub struct LedgerConfig {
    /// `AUDIT_CHAIN_KEY` (hex, ≥ 32 bytes): links the chain. Held by the ledger alone; must differ
    /// from every producer-held key.
    pub chain_key: Secret,
    /// `AUDIT_DATABASE_URL`: a login role granted `caracal_audit_writer`; default `DATABASE_URL`
    /// (the ledger switches to the writer role either way). TLS required in production.
    pub database_url: Option<Secret>,
    /// `AUDIT_RETENTION_DAYS` (365; 0 keeps everything).
    pub retention_days: u32,
    /// `AUDIT_RETENTION_INTERVAL` (6h).
    pub retention_every: Duration,
    /// `AUDIT_SWEEP_INTERVAL` (1h): incremental tamper sweeps.
    pub sweep_every: Duration,
    /// `AUDIT_FULL_SWEEP_INTERVAL` (24h); a full sweep also runs at start.
    pub full_sweep_every: Duration,
    /// `AUDIT_CLAIM_IDLE` (30s): pending entries idle this long are taken from their consumer.
    pub claim_idle: Duration,
    /// `AUDIT_CONSUMER_NAME` (default `audit-<hostname>`): stable across restarts, so a restarted
    /// ledger re-reads what it had read but not acknowledged.
    pub consumer_name: String,
    /// `AUDIT_BATCH` (500): entries per read and per transaction.
    pub batch: usize,
    /// `AUDIT_INGEST_LINGER` (25ms): pause after a read that did not fill a batch (fewer, larger
    /// transactions under load; the evidence is that much later in the ledger, never lost).
    pub linger: Duration,
    /// `AUDIT_READY_ON_TAMPER` (`fail` | `report`, default `fail`): whether tampering found by a
    /// sweep makes `/ready` fail or is only reported there.
    pub fail_ready_on_tamper: bool,
}

/// Settings of `POST /v1/control/invoke` (seed 000, "Control boundary").
#[derive(Clone, Debug)]
pub struct ControlConfig {
    /// `CONTROL_GATE_FILE`: the endpoint answers 503 `control_disabled` while this path is absent
    /// (checked per request, so an operator closes Control by deleting a file, without a restart).
    pub gate_file: PathBuf,
    /// `CONTROL_AUDIENCE` (default `caracal-control`): the resource identifier a control token's
    /// `target` must contain.
    pub audience: String,
    /// `CONTROL_API_TOKEN`: the admin token dispatch presents to the admin API.
    pub api_token: Secret,
    /// `CONTROL_RATE_CAPACITY` (60): per-subject bucket size.
    pub rate_capacity: u32,
    /// `CONTROL_RATE_WINDOW_SEC` (60): time for an empty bucket to refill.
    pub rate_window: Duration,
    /// `CONTROL_INVOKE_IP_RATE_LIMIT_PER_MIN` (120): invokes per client address per minute.
    pub ip_limit_per_min: u32,
    /// `CONTROL_REPLAY_TTL_SEC` (3600): longest a used `jti` is remembered (never past `exp`).
    pub replay_ttl: Duration,
}

/// The certificate and key the control plane serves TLS with (PEM files, read at start).
#[derive(Clone, Debug)]
pub struct ServerTls {
    /// `TLS_CERT_FILE`: the chain, leaf first.
    pub cert_file: PathBuf,
    /// `TLS_KEY_FILE`: its private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

/// A secret value that never prints.
#[derive(Clone)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Secret {
    /// The value.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// What `caracal-control-plane migrate` needs: the database and the mode that says how it must be
/// reached (a migrations job holds no signing or HMAC keys).
#[derive(Debug)]
pub struct MigrateConfig {
    /// `DATABASE_URL`, with the same `sslmode` rule as serving.
    pub database_url: Secret,
}

impl MigrateConfig {
    /// Reads and validates; every problem at once.
    pub fn from_source(src: &dyn Source) -> Result<Self, ConfigErrors> {
        let mut r = Reader::new(src);
        let production = r.mode() == Mode::Production;
        let database_url = r.postgres_url("DATABASE_URL", production);
        if database_url.is_none() && !r.has_problems_for("DATABASE_URL") {
            r.problem("DATABASE_URL", "is required");
        }
        r.finish()?;
        Ok(Self { database_url: Secret(database_url.unwrap_or_default()) })
    }
}

impl ControlPlaneConfig {
    /// Reads and validates; every problem at once.
    pub fn from_source(src: &dyn Source) -> Result<Self, ConfigErrors> {
        let mut r = Reader::new(src);
        let mode = r.mode();
        let production = mode == Mode::Production;
        let listen_raw = r.string("LISTEN_ADDR", "0.0.0.0:8080");
        let listen = listen_raw.parse().unwrap_or_else(|_| {
            r.problem("LISTEN_ADDR", format!("expected host:port, got {listen_raw:?}"));
            SocketAddr::from(([0, 0, 0, 0], 8080))
        });
        let listen_socket = r.optional("LISTEN_SOCKET").map(std::path::PathBuf::from);
        if listen_socket.as_ref().is_some_and(|p| !p.is_absolute()) {
            r.problem("LISTEN_SOCKET", "must be an absolute path");
        }
        let (tls, tls_terminated_by_proxy) = read_listener_tls(&mut r, production);
        let database_url = r.postgres_url("DATABASE_URL", production);
        if database_url.is_none() && !r.has_problems_for("DATABASE_URL") {
            r.problem("DATABASE_URL", "is required");
        }
        let database_max_connections = r.parse("DATABASE_MAX_CONNECTIONS", 16u32);
        if database_max_connections == 0 {
            r.problem("DATABASE_MAX_CONNECTIONS", "must be at least 1");
        }
        let threads = r.parse("CONTROL_PLANE_THREADS", caracal_shared::config_env::available_cores());
        if !(1..=MAX_THREADS).contains(&threads) {
            r.problem("CONTROL_PLANE_THREADS", format!("must be between 1 and {MAX_THREADS}"));
        }
        let redis = RedisTarget::read(&mut r, production);
        let bootstrap_admin_token = r.optional("BOOTSTRAP_ADMIN_TOKEN");
        if let Some(t) = &bootstrap_admin_token
            && t.len() < 32
        {
            r.problem("BOOTSTRAP_ADMIN_TOKEN", "must be at least 32 characters (openssl rand -base64 32)");
        }
        let otel = caracal_shared::otel::OtelConfig::read(&mut r, mode, "caracal-control-plane");
        let admin_auth_fail_limit = r.parse("ADMIN_AUTH_FAIL_LIMIT_PER_MIN", 60u32);
        if admin_auth_fail_limit == 0 {
            r.problem("ADMIN_AUTH_FAIL_LIMIT_PER_MIN", "must be at least 1");
        }
        let streams_key = r.hex_key("STREAMS_HMAC_KEY", 32);
        if streams_key.is_none() && !r.has_problems_for("STREAMS_HMAC_KEY") {
            r.problem("STREAMS_HMAC_KEY", "is required: every stream message is signed (openssl rand -hex 32)");
        }
        let metrics_bearer = r.optional("METRICS_BEARER");
        if let Some(b) = &metrics_bearer
            && b.len() < 16
        {
            r.problem("METRICS_BEARER", "must be at least 16 characters");
        }
        for name in ["INSECURE_HTTP", "INSECURE_STS"] {
            if r.bool(name, false) && production {
                r.problem(name, "must not be true in production");
            }
        }
        let audit_key = r.hex_key("AUDIT_HMAC_KEY", 32);
        if audit_key.is_some() && audit_key == streams_key {
            r.problem("AUDIT_HMAC_KEY", "must differ from STREAMS_HMAC_KEY");
        }
        // Every topology produces evidence (each token exchange is audited), and every ledger
        // dead-letters an unsigned frame: without the key the evidence would be lost, in any mode.
        if audit_key.is_none() && !r.has_problems_for("AUDIT_HMAC_KEY") {
            r.problem("AUDIT_HMAC_KEY", "is required: every audit frame this process writes is signed with it (openssl rand -hex 32)");
        }
        let agent_session_max_seconds = r.parse("AGENT_SESSION_MAX_SECONDS", 604_800i64);
        if !(3600..=31_536_000).contains(&agent_session_max_seconds) {
            r.problem("AGENT_SESSION_MAX_SECONDS", "must be 3600..31536000 (an hour to a year)");
        }
        let control = read_control(&mut r);
        let ledger = read_ledger(&mut r, audit_key.as_deref(), streams_key.as_deref(), production);
        let sts = StsConfig::read(&mut r, mode);
        r.finish()?;
        Ok(Self {
            mode,
            listen,
            listen_socket,
            tls,
            tls_terminated_by_proxy,
            database_url: Secret(database_url.unwrap_or_default()),
            database_max_connections,
            threads,
            redis,
            bootstrap_admin_token: bootstrap_admin_token.map(Secret),
            admin_auth_fail_limit,
            otel,
            // Checked above: present whenever reading succeeded.
            streams_hmac_key: Secret(hex::encode(streams_key.unwrap_or_default())),
            metrics_bearer: metrics_bearer.map(Secret),
            audit_hmac_key: audit_key.map(|k| Secret(hex::encode(k))),
            agent_session_max_seconds,
            control,
            ledger,
            sts: sts.expect("StsConfig is complete when the reader reported no problem"),
        })
    }

    /// What is allowed but weakens the deployment, said once at start.
    pub fn warnings(&self) -> Vec<&'static str> {
        let mut w = Vec::new();
        if self.tls.is_none() && !self.tls_terminated_by_proxy {
            w.push("serving plaintext HTTP (dev): set TLS_CERT_FILE and TLS_KEY_FILE before real traffic");
        }
        if self.mode == Mode::Production && !self.redis.is_tls() {
            w.push("REDIS_URL is plaintext redis://: stream entries and the AUTH password cross the network in clear unless Redis is on this host; prefer rediss://");
        }
        w.extend(self.redis.failover_warning());
        w
    }

    /// The decoded streams key.
    pub fn streams_key(&self) -> Vec<u8> {
        hex::decode(self.streams_hmac_key.expose()).unwrap_or_default()
    }

    /// The decoded audit key, if configured.
    pub fn audit_key(&self) -> Option<Vec<u8>> {
        self.audit_hmac_key.as_ref().and_then(|k| hex::decode(k.expose()).ok())
    }
}

/// `TLS_CERT_FILE` / `TLS_KEY_FILE` (both or neither, loadable) and `TLS_TERMINATED_BY_PROXY`;
/// production refuses a plaintext listener nobody said was behind TLS.
fn read_listener_tls(r: &mut Reader<'_>, production: bool) -> (Option<ServerTls>, bool) {
    let terminated_by_proxy = r.bool("TLS_TERMINATED_BY_PROXY", false);
    let tls = match (r.optional("TLS_CERT_FILE"), r.optional("TLS_KEY_FILE")) {
        (Some(cert), Some(key)) => Some(ServerTls { cert_file: cert.into(), key_file: key.into() }),
        (None, None) => None,
        _ => {
            r.problem("TLS_CERT_FILE", "set both TLS_CERT_FILE and TLS_KEY_FILE, or neither");
            None
        }
    };
    if let Some(t) = &tls
        && let Err(e) = crate::tls::server_config(&t.cert_file, &t.key_file)
    {
        let name = if matches!(e, crate::tls::TlsSetupError::Key { .. }) { "TLS_KEY_FILE" } else { "TLS_CERT_FILE" };
        r.problem(name, e.to_string());
    }
    if production && tls.is_none() && !terminated_by_proxy && !r.has_problems_for("TLS_CERT_FILE") {
        r.problem(
            "TLS_CERT_FILE",
            "production refuses a plaintext listener: set TLS_CERT_FILE and TLS_KEY_FILE, or TLS_TERMINATED_BY_PROXY=true when a load balancer in front of it terminates TLS",
        );
    }
    (tls, terminated_by_proxy)
}

/// The ledger settings unless `AUDIT_LEDGER_ENABLED=false`; problems go to `r`.
fn read_ledger(r: &mut Reader<'_>, audit_key: Option<&[u8]>, streams_key: Option<&[u8]>, production: bool) -> Option<LedgerConfig> {
    if !r.bool("AUDIT_LEDGER_ENABLED", true) {
        return None;
    }
    let chain_key = r.hex_key("AUDIT_CHAIN_KEY", 32);
    match &chain_key {
        None if !r.has_problems_for("AUDIT_CHAIN_KEY") => {
            r.problem("AUDIT_CHAIN_KEY", "is required: it links the audit chain (openssl rand -hex 32)")
        }
        Some(k) if Some(k.as_slice()) == audit_key || Some(k.as_slice()) == streams_key => {
            r.problem("AUDIT_CHAIN_KEY", "must differ from AUDIT_HMAC_KEY and STREAMS_HMAC_KEY: producers hold those")
        }
        _ => {}
    }
    let database_url = r.postgres_url("AUDIT_DATABASE_URL", production);
    let batch = r.parse("AUDIT_BATCH", 500usize);
    if !(1..=10_000).contains(&batch) {
        r.problem("AUDIT_BATCH", "must be between 1 and 10000");
    }
    let fail_ready_on_tamper = match r.string("AUDIT_READY_ON_TAMPER", "fail").as_str() {
        "fail" => true,
        "report" => false,
        other => {
            r.problem("AUDIT_READY_ON_TAMPER", format!("expected fail or report, got {other:?}"));
            true
        }
    };
    let host = caracal_shared::config_env::hostname("local");
    Some(LedgerConfig {
        chain_key: Secret(hex::encode(chain_key.unwrap_or_default())),
        database_url: database_url.map(Secret),
        retention_days: r.parse("AUDIT_RETENTION_DAYS", 365u32),
        retention_every: r.duration("AUDIT_RETENTION_INTERVAL", Duration::from_secs(6 * 3600)),
        sweep_every: r.duration("AUDIT_SWEEP_INTERVAL", Duration::from_secs(3600)),
        full_sweep_every: r.duration("AUDIT_FULL_SWEEP_INTERVAL", Duration::from_secs(24 * 3600)),
        claim_idle: r.duration("AUDIT_CLAIM_IDLE", Duration::from_secs(30)),
        consumer_name: r.string("AUDIT_CONSUMER_NAME", &format!("audit-{host}")),
        batch,
        linger: r.duration("AUDIT_INGEST_LINGER", Duration::from_millis(25)),
        fail_ready_on_tamper,
    })
}

impl LedgerConfig {
    /// The decoded chain key.
    pub fn chain_key(&self) -> Vec<u8> {
        hex::decode(self.chain_key.expose()).unwrap_or_default()
    }
}

/// The Control settings when `CARACAL_CONTROL_ENABLED=true`; problems go to `r`.
fn read_control(r: &mut Reader<'_>) -> Option<ControlConfig> {
    if !r.bool("CARACAL_CONTROL_ENABLED", false) {
        return None;
    }
    let gate_file = r.required("CONTROL_GATE_FILE").unwrap_or_default();
    let audience = r.string("CONTROL_AUDIENCE", "caracal-control");
    if audience.is_empty() || audience.len() > 512 || audience.chars().any(|c| c.is_whitespace() || c.is_control()) {
        r.problem("CONTROL_AUDIENCE", "must be 1..512 characters without whitespace");
    }
    let api_token = r.required("CONTROL_API_TOKEN").unwrap_or_default();
    if !api_token.is_empty() && api_token.len() < 32 {
        r.problem("CONTROL_API_TOKEN", "must be an admin API token (cat_…), at least 32 characters");
    }
    let rate_capacity = r.parse("CONTROL_RATE_CAPACITY", 60u32);
    if rate_capacity == 0 {
        r.problem("CONTROL_RATE_CAPACITY", "must be at least 1");
    }
    let rate_window = r.seconds("CONTROL_RATE_WINDOW_SEC", 60);
    let ip_limit_per_min = r.parse("CONTROL_INVOKE_IP_RATE_LIMIT_PER_MIN", 120u32);
    if ip_limit_per_min == 0 {
        r.problem("CONTROL_INVOKE_IP_RATE_LIMIT_PER_MIN", "must be at least 1");
    }
    let replay_ttl = r.seconds("CONTROL_REPLAY_TTL_SEC", 3600);
    Some(ControlConfig {
        gate_file: PathBuf::from(gate_file),
        audience,
        api_token: Secret(api_token),
        rate_capacity,
        rate_window,
        ip_limit_per_min,
        replay_ttl,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn dev() -> HashMap<&'static str, &'static str> {
        HashMap::from([
            ("CARACAL_MODE", "dev"),
            ("DATABASE_URL", "postgres://u@127.0.0.1/db"),
            ("REDIS_URL", "redis://127.0.0.1"),
            ("STREAMS_HMAC_KEY", "0102030405060708091011121314151617181920212223242526272829303132"),
            ("ZONE_KEK", "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90"),
            ("ISSUER_URL", "http://127.0.0.1:8080"),
            ("AUDIT_HMAC_KEY", "1112131415161718192021222324252627282930313233343536373839404142"),
            ("AUDIT_CHAIN_KEY", "5152535455565758596061626364656667686970717273747576777879808182"),
        ])
    }

    /// A production configuration that passes every other check (TLS set per test).
    fn production() -> HashMap<&'static str, &'static str> {
        let mut env = dev();
        env.insert("CARACAL_MODE", "production");
        env.insert("ISSUER_URL", "https://sts.example");
        env.insert("GATEWAY_STS_HMAC_KEY", "2122232425262728293031323334353637383940414243444546474849505152");
        env.insert("METRICS_BEARER", "metrics-bearer-0123456789");
        env
    }

    #[test]
    fn dev_is_accepted() {
        let c = ControlPlaneConfig::from_source(&dev()).unwrap();
        assert_eq!(c.listen.port(), 8080);
        assert_eq!(c.streams_key().len(), 32);
        assert!(!format!("{c:?}").contains("127.0.0.1/db"), "secrets never print");
        assert_eq!(c.threads, caracal_shared::config_env::available_cores(), "one worker per core by default");
    }

    #[test]
    fn worker_threads_are_bounded() {
        let mut env = dev();
        env.insert("CONTROL_PLANE_THREADS", "1");
        assert_eq!(ControlPlaneConfig::from_source(&env).unwrap().threads, 1);
        for bad in ["0", "1025", "two"] {
            env.insert("CONTROL_PLANE_THREADS", bad);
            let errs = ControlPlaneConfig::from_source(&env).unwrap_err();
            assert!(errs.mentions("CONTROL_PLANE_THREADS"), "{bad}: {errs}");
        }
    }

    #[test]
    fn production_lists_every_violation() {
        let mut env = dev();
        env.insert("CARACAL_MODE", "production");
        env.insert("ZONE_KEK", "0000000000000000000000000000000000000000000000000000000000000000");
        env.insert("BOOTSTRAP_ADMIN_TOKEN", "short");
        env.insert("INSECURE_HTTP", "true");
        env.remove("STREAMS_HMAC_KEY");
        let errs = ControlPlaneConfig::from_source(&env).unwrap_err();
        for name in
            ["ZONE_KEK", "BOOTSTRAP_ADMIN_TOKEN", "INSECURE_HTTP", "STREAMS_HMAC_KEY", "DATABASE_URL", "ISSUER_URL", "GATEWAY_STS_HMAC_KEY"]
        {
            assert!(errs.mentions(name), "{name} missing: {errs}");
        }
    }

    #[test]
    fn control_is_off_by_default_and_complete_when_on() {
        assert!(ControlPlaneConfig::from_source(&dev()).unwrap().control.is_none());
        let mut env = dev();
        env.insert("CARACAL_CONTROL_ENABLED", "true");
        env.insert("CONTROL_RATE_CAPACITY", "0");
        let errs = ControlPlaneConfig::from_source(&env).unwrap_err();
        for name in ["CONTROL_GATE_FILE", "CONTROL_API_TOKEN", "CONTROL_RATE_CAPACITY"] {
            assert!(errs.mentions(name), "{name} missing: {errs}");
        }
        env.insert("CONTROL_RATE_CAPACITY", "5");
        env.insert("CONTROL_GATE_FILE", "/run/caracal/control.enabled");
        env.insert("CONTROL_API_TOKEN", "cat_0123456789abcdef0123456789abcdef0123456789a");
        let c = ControlPlaneConfig::from_source(&env).unwrap();
        let control = c.control.as_ref().expect("enabled");
        assert_eq!((control.audience.as_str(), control.rate_capacity, control.ip_limit_per_min), ("caracal-control", 5, 120));
        assert_eq!(control.replay_ttl, Duration::from_secs(3600));
        assert!(!format!("{c:?}").contains("cat_0123"), "the dispatch token never prints");
    }

    /// Every topology produces evidence, and a ledger files only signed frames: the split-ledger
    /// topology (`AUDIT_LEDGER_ENABLED=false`) needs the key as much as the others, in every mode.
    #[test]
    fn every_topology_signs_its_evidence() {
        for mode in ["dev", "production"] {
            for (ledger, control) in [("false", "false"), ("false", "true"), ("true", "false")] {
                let mut env = dev();
                env.insert("CARACAL_MODE", mode);
                env.insert("CARACAL_CONTROL_ENABLED", control);
                env.insert("AUDIT_LEDGER_ENABLED", ledger);
                env.remove("AUDIT_HMAC_KEY");
                let errs = ControlPlaneConfig::from_source(&env).unwrap_err();
                assert!(errs.mentions("AUDIT_HMAC_KEY"), "{mode}, ledger {ledger}, control {control}: {errs}");
                assert_eq!(errs.0.iter().filter(|e| e.name == "AUDIT_HMAC_KEY").count(), 1, "said once: {errs}");
            }
        }
    }

    /// A production deployment whose every hop is plaintext or unauthenticated hears about all of
    /// them in one report; the same deployment with each hop fixed starts.
    #[test]
    fn production_refuses_plaintext_hops_all_at_once() {
        let mut env = production();
        env.insert("DATABASE_URL", "postgres://caracal@db.internal/caracal?application_name=sslmode=require");
        env.insert("AUDIT_DATABASE_URL", "postgres://audit@db.internal/caracal?sslmode=prefer");
        env.insert("REDIS_URL", "rediss://redis.internal:6380");
        let errs = ControlPlaneConfig::from_source(&env).unwrap_err();
        for name in ["TLS_CERT_FILE", "DATABASE_URL", "AUDIT_DATABASE_URL", "REDIS_URL"] {
            assert!(errs.mentions(name), "{name} missing: {errs}");
        }
        assert_eq!(errs.0.len(), 4, "nothing else: {errs}");
        assert!(errs.to_string().contains("TLS_TERMINATED_BY_PROXY"), "the way out is named: {errs}");

        env.insert("TLS_TERMINATED_BY_PROXY", "true");
        env.insert("DATABASE_URL", "postgres://caracal@db.internal/caracal?sslmode=verify-full&sslrootcert=/etc/caracal/pg-ca.pem");
        env.insert("AUDIT_DATABASE_URL", "postgresql://audit@db.internal/caracal?sslmode=require");
        env.insert("REDIS_URL", "rediss://caracal:redis-password@redis.internal:6380");
        let c = ControlPlaneConfig::from_source(&env).unwrap_or_else(|e| panic!("fixed: {e}"));
        assert!(c.tls.is_none() && c.tls_terminated_by_proxy && c.redis.is_tls());
        assert!(c.warnings().is_empty(), "{:?}", c.warnings());
        assert!(!format!("{c:?}").contains("redis-password"), "the Redis password never prints");
    }

    #[test]
    fn postgres_urls_are_parsed_and_their_errors_named() {
        let mut env = dev();
        env.insert("DATABASE_URL", "postgres://u:hunter2@db.internal:port/caracal");
        env.insert("AUDIT_DATABASE_URL", "mysql://audit@db/caracal");
        let errs = ControlPlaneConfig::from_source(&env).unwrap_err();
        assert!(errs.mentions("DATABASE_URL") && errs.mentions("AUDIT_DATABASE_URL"), "{errs}");
        assert!(!errs.to_string().contains("hunter2"), "{errs}");
    }

    #[test]
    fn the_listener_certificate_is_checked_at_start() {
        let mut env = dev();
        env.insert("TLS_KEY_FILE", "/etc/caracal/key.pem");
        let errs = ControlPlaneConfig::from_source(&env).unwrap_err();
        assert!(errs.mentions("TLS_CERT_FILE"), "half a pair: {errs}");
        env.insert("TLS_CERT_FILE", "/nonexistent/cert.pem");
        let errs = ControlPlaneConfig::from_source(&env).unwrap_err();
        assert!(errs.mentions("TLS_CERT_FILE") && errs.to_string().contains("/nonexistent/cert.pem"), "unreadable: {errs}");
        let dir = std::env::temp_dir().join(format!("caracal-cp-tls-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let not_pem = dir.join("cert.pem");
        std::fs::write(&not_pem, "not a certificate").unwrap();
        env.insert("TLS_CERT_FILE", not_pem.to_str().unwrap());
        let errs = ControlPlaneConfig::from_source(&env).unwrap_err();
        assert!(errs.mentions("TLS_CERT_FILE") && errs.to_string().contains("no PEM certificate"), "{errs}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_ledger_needs_its_own_keys() {
        let c = ControlPlaneConfig::from_source(&dev()).unwrap();
        let ledger = c.ledger.as_ref().expect("on by default");
        assert_eq!((ledger.retention_days, ledger.batch, ledger.fail_ready_on_tamper), (365, 500, true));
        assert!(!format!("{c:?}").contains("5152535455"), "the chain key never prints");
        let mut env = dev();
        env.remove("AUDIT_HMAC_KEY");
        env.insert("AUDIT_CHAIN_KEY", "0102030405060708091011121314151617181920212223242526272829303132");
        env.insert("AUDIT_READY_ON_TAMPER", "ignore");
        let errs = ControlPlaneConfig::from_source(&env).unwrap_err();
        for name in ["AUDIT_HMAC_KEY", "AUDIT_CHAIN_KEY", "AUDIT_READY_ON_TAMPER"] {
            assert!(errs.mentions(name), "{name} missing: {errs}");
        }
        assert!(errs.to_string().contains("must differ"), "a chain key equal to the streams key is refused: {errs}");
    }
}
