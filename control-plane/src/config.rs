//! Control-plane configuration (environment; secrets may come from `NAME_FILE`).
//!
//! Every variable is read and every problem reported at once; production refuses to start on any
//! hardening-checklist violation (seed 003).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use caracal_shared::config_env::{ConfigErrors, Mode, Reader, Source};
use caracal_sts::StsConfig;

/// What the control plane needs.
#[derive(Clone, Debug)]
pub struct ControlPlaneConfig {
    /// `CARACAL_MODE`.
    pub mode: Mode,
    /// `LISTEN_ADDR` (default `0.0.0.0:8080`).
    pub listen: SocketAddr,
    /// `DATABASE_URL`.
    pub database_url: Secret,
    /// `DATABASE_MAX_CONNECTIONS` (default 16).
    pub database_max_connections: u32,
    /// `REDIS_URL`.
    pub redis_url: Secret,
    /// `BOOTSTRAP_ADMIN_TOKEN`: authorizes `POST /v1/bootstrap` only. Unset ⇒ bootstrap disabled.
    pub bootstrap_admin_token: Option<Secret>,
    /// `STREAMS_HMAC_KEY`: signs every stream message (`_sig`).
    pub streams_hmac_key: Secret,
    /// `METRICS_BEARER`: bearer for `/metrics`; unset ⇒ open in dev, closed in production.
    pub metrics_bearer: Option<Secret>,
    /// `AUDIT_HMAC_KEY` (hex): signs the audit frames this process writes (Control). Required in
    /// production when Control is enabled.
    pub audit_hmac_key: Option<Secret>,
    /// The STS's own settings.
    pub sts: StsConfig,
    /// The optional Control endpoint; `None` unless `CARACAL_CONTROL_ENABLED=true`.
    pub control: Option<ControlConfig>,
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
        let database_url = r.required("DATABASE_URL").unwrap_or_default();
        if !database_url.is_empty() {
            if !(database_url.starts_with("postgres://") || database_url.starts_with("postgresql://")) {
                r.problem("DATABASE_URL", "must be a postgres:// URL");
            } else if production && !(database_url.contains("sslmode=require") || database_url.contains("sslmode=verify-")) {
                r.problem("DATABASE_URL", "must use sslmode=require or sslmode=verify-full in production");
            }
        }
        let database_max_connections = r.parse("DATABASE_MAX_CONNECTIONS", 16u32);
        if database_max_connections == 0 {
            r.problem("DATABASE_MAX_CONNECTIONS", "must be at least 1");
        }
        let redis_url = r.required("REDIS_URL").unwrap_or_default();
        if !(redis_url.is_empty() || redis_url.starts_with("redis://") || redis_url.starts_with("rediss://")) {
            r.problem("REDIS_URL", "must be a redis:// or rediss:// URL");
        }
        let bootstrap_admin_token = r.optional("BOOTSTRAP_ADMIN_TOKEN");
        if let Some(t) = &bootstrap_admin_token
            && t.len() < 32
        {
            r.problem("BOOTSTRAP_ADMIN_TOKEN", "must be at least 32 characters (openssl rand -base64 32)");
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
        let control = read_control(&mut r);
        if control.is_some() && production && audit_key.is_none() && !r.has_problems_for("AUDIT_HMAC_KEY") {
            r.problem("AUDIT_HMAC_KEY", "is required in production when Control is enabled (signed audit frames)");
        }
        let sts = StsConfig::read(&mut r, mode);
        r.finish()?;
        Ok(Self {
            mode,
            listen,
            database_url: Secret(database_url),
            database_max_connections,
            redis_url: Secret(redis_url),
            bootstrap_admin_token: bootstrap_admin_token.map(Secret),
            // Checked above: present whenever reading succeeded.
            streams_hmac_key: Secret(hex::encode(streams_key.unwrap_or_default())),
            metrics_bearer: metrics_bearer.map(Secret),
            audit_hmac_key: audit_key.map(|k| Secret(hex::encode(k))),
            control,
            sts: sts.expect("StsConfig is complete when the reader reported no problem"),
        })
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
        ])
    }

    #[test]
    fn dev_is_accepted() {
        let c = ControlPlaneConfig::from_source(&dev()).unwrap();
        assert_eq!(c.listen.port(), 8080);
        assert_eq!(c.streams_key().len(), 32);
        assert!(!format!("{c:?}").contains("127.0.0.1/db"), "secrets never print");
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

    #[test]
    fn control_in_production_needs_an_audit_key() {
        let mut env = dev();
        env.insert("CARACAL_MODE", "production");
        env.insert("CARACAL_CONTROL_ENABLED", "true");
        let errs = ControlPlaneConfig::from_source(&env).unwrap_err();
        assert!(errs.mentions("AUDIT_HMAC_KEY"), "{errs}");
        env.insert("CARACAL_CONTROL_ENABLED", "false");
        let errs = ControlPlaneConfig::from_source(&env).unwrap_err();
        assert!(!errs.mentions("AUDIT_HMAC_KEY"), "only Control needs it: {errs}");
    }
}
