//! STS configuration (read by the control plane, which hosts the STS).

use std::time::Duration;

use caracal_shared::config_env::{Mode, Reader};

/// What the STS needs to issue mandates.
#[derive(Clone)]
pub struct StsConfig {
    /// `ISSUER_URL`: the `iss` of every mandate, byte for byte, and the JWKS base URL.
    pub issuer: String,
    /// `ZONE_KEK`: 32 bytes sealing zone signing keys at rest.
    pub zone_kek: [u8; 32],
    /// `GATEWAY_STS_HMAC_KEY`: authenticates the gateway's per-request exchange. Without it no
    /// gateway exchange can succeed.
    pub gateway_hmac_key: Option<Vec<u8>>,
    /// Default and maximum lifetime of a session mandate (`SESSION_TTL_SECONDS`, cap 3600).
    pub session_ttl: Duration,
    /// Default lifetime of a gateway mandate (`GATEWAY_MANDATE_TTL_SECONDS`, cap 900). Must exceed
    /// the gateway's 35 s pre-flight window.
    pub gateway_ttl: Duration,
    /// Lifetime of a resource mandate (`RESOURCE_MANDATE_TTL_SECONDS`, cap 900).
    pub resource_ttl: Duration,
    /// How long a rotated key is published before it signs (`KEY_ACTIVATION_DELAY_SECONDS`):
    /// verifiers cache the JWKS for 5 minutes and do not refetch on an unknown kid.
    pub key_activation_delay: Duration,
    /// Allowed clock skew for gateway exchange timestamps and token `iat`.
    pub clock_skew: Duration,
    /// `REVOCATION_MAX_STALENESS`: when the revoked-session view has not been reloaded for this
    /// long, every exchange is refused (default 30 s).
    pub revocation_max_staleness: Duration,
    /// `REVOCATION_RELOAD_INTERVAL`: period of the Postgres backstop reload of revocations
    /// (default 2 s; the stream delivers them sooner).
    pub revocation_reload: Duration,
    /// `STS_MINT_RATE_LIMIT_PER_MIN`: mints per client per minute (default 60 000).
    pub mints_per_minute: u64,
    /// `STS_AUTH_FAILURE_LIMIT`: bad credentials per client per minute before a lockout (10).
    pub auth_failure_limit: u64,
    /// `STS_AUTH_LOCKOUT`: how long a lockout lasts (default 5 min).
    pub auth_lockout: Duration,
    /// `POLICY_EVAL_TIMEOUT`: longest a policy evaluation is awaited (default 250 ms); past it the
    /// exchange answers 503 `policy_eval_failed` and the zone is quarantined for a few seconds.
    pub policy_eval_timeout: Duration,
    /// `SUBJECT_ISSUER_PRIVATE_HOSTS`: hosts (comma-separated, exact names or IP literals) whose
    /// JWKS may be fetched from a loopback, private or link-local address. Empty by default: a
    /// subject issuer's JWKS is fetched from public addresses only (SSRF guard).
    pub subject_issuer_private_hosts: Vec<String>,
    /// `SUBJECT_ISSUER_CA_FILE`: PEM CA certificates trusted for JWKS fetches in addition to the
    /// public roots (an IdP behind a private CA).
    pub subject_issuer_ca: Option<Vec<u8>>,
    /// `PROVIDER_PRIVATE_HOSTS` / `PROVIDER_CA_FILE`: the same, for the token endpoints of
    /// `oauth2_client_credentials` credential providers (`docs/providers.md`).
    pub provider_private_hosts: Vec<String>,
    pub provider_ca: Option<Vec<u8>>,
}

impl std::fmt::Debug for StsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StsConfig")
            .field("issuer", &self.issuer)
            .field("gateway_hmac_key", &self.gateway_hmac_key.as_ref().map(|_| "<set>"))
            .field("session_ttl", &self.session_ttl)
            .field("gateway_ttl", &self.gateway_ttl)
            .field("resource_ttl", &self.resource_ttl)
            .field("key_activation_delay", &self.key_activation_delay)
            .finish_non_exhaustive()
    }
}

/// Maximum session mandate lifetime.
pub const SESSION_TTL_CAP: u64 = 3600;
/// Maximum gateway and resource mandate lifetime.
pub const DERIVED_TTL_CAP: u64 = 900;

impl StsConfig {
    /// Reads the STS variables; problems are recorded in `r`.
    pub fn read(r: &mut Reader<'_>, mode: Mode) -> Option<Self> {
        let issuer = r.required("ISSUER_URL").map(|s| s.trim_end_matches('/').to_owned());
        if let Some(iss) = &issuer {
            match url::Url::parse(iss) {
                Ok(u)
                    if matches!(u.scheme(), "http" | "https")
                        && u.host().is_some()
                        && u.username().is_empty()
                        && u.query().is_none()
                        && u.fragment().is_none() =>
                {
                    if mode == Mode::Production && u.scheme() != "https" {
                        r.problem("ISSUER_URL", "must be https in production");
                    }
                }
                _ => r.problem("ISSUER_URL", "must be an absolute http(s) URL without userinfo, query or fragment"),
            }
        }
        let kek = r.hex_key("ZONE_KEK", 32);
        match &kek {
            Some(k) if k.len() != 32 => r.problem("ZONE_KEK", "must be exactly 32 bytes (64 hex chars)"),
            None if !r.has_problems_for("ZONE_KEK") => r.problem("ZONE_KEK", "is required (64 hex chars: openssl rand -hex 32)"),
            _ => {}
        }
        let gateway_hmac_key = r.hex_key("GATEWAY_STS_HMAC_KEY", 32);
        if gateway_hmac_key.is_none() && mode == Mode::Production && !r.has_problems_for("GATEWAY_STS_HMAC_KEY") {
            r.problem("GATEWAY_STS_HMAC_KEY", "is required in production");
        }
        let session_ttl = ttl(r, "SESSION_TTL_SECONDS", 900, SESSION_TTL_CAP);
        let gateway_ttl = ttl(r, "GATEWAY_MANDATE_TTL_SECONDS", 120, DERIVED_TTL_CAP);
        if gateway_ttl <= Duration::from_secs(35) {
            r.problem("GATEWAY_MANDATE_TTL_SECONDS", "must exceed the gateway's 35 s pre-flight window");
        }
        let resource_ttl = ttl(r, "RESOURCE_MANDATE_TTL_SECONDS", 300, DERIVED_TTL_CAP);
        let key_activation_delay = Duration::from_secs(r.parse("KEY_ACTIVATION_DELAY_SECONDS", 300u64));
        let clock_skew = Duration::from_secs(r.parse("STS_CLOCK_SKEW_SECONDS", 60u64));
        let revocation_max_staleness = r.duration("REVOCATION_MAX_STALENESS", Duration::from_secs(30));
        let revocation_reload = r.duration("REVOCATION_RELOAD_INTERVAL", Duration::from_secs(2));
        let mints_per_minute = r.parse("STS_MINT_RATE_LIMIT_PER_MIN", 60_000u64);
        let auth_failure_limit = r.parse("STS_AUTH_FAILURE_LIMIT", 10u64);
        let auth_lockout = r.duration("STS_AUTH_LOCKOUT", Duration::from_secs(300));
        let policy_eval_timeout = r.duration("POLICY_EVAL_TIMEOUT", Duration::from_millis(250));
        if policy_eval_timeout.is_zero() || policy_eval_timeout > Duration::from_secs(10) {
            r.problem("POLICY_EVAL_TIMEOUT", "must be between 1 ms and 10 s");
        }
        if mints_per_minute == 0 || auth_failure_limit == 0 {
            r.problem("STS_MINT_RATE_LIMIT_PER_MIN", "STS_MINT_RATE_LIMIT_PER_MIN and STS_AUTH_FAILURE_LIMIT must be at least 1");
        }
        let subject_issuer_private_hosts = r
            .optional("SUBJECT_ISSUER_PRIVATE_HOSTS")
            .map(|v| v.split(',').map(|h| h.trim().to_ascii_lowercase()).filter(|h| !h.is_empty()).collect())
            .unwrap_or_default();
        let subject_issuer_ca = r.ca_file("SUBJECT_ISSUER_CA_FILE");
        let provider_private_hosts = r
            .optional("PROVIDER_PRIVATE_HOSTS")
            .map(|v| v.split(',').map(|h| h.trim().to_ascii_lowercase()).filter(|h| !h.is_empty()).collect())
            .unwrap_or_default();
        let provider_ca = r.ca_file("PROVIDER_CA_FILE");
        let zone_kek: [u8; 32] = kek.filter(|k| k.len() == 32)?.try_into().ok()?;
        Some(Self {
            issuer: issuer?,
            zone_kek,
            gateway_hmac_key,
            session_ttl,
            gateway_ttl,
            resource_ttl,
            key_activation_delay,
            clock_skew,
            revocation_max_staleness,
            revocation_reload,
            mints_per_minute,
            auth_failure_limit,
            auth_lockout,
            policy_eval_timeout,
            subject_issuer_private_hosts,
            subject_issuer_ca,
            provider_private_hosts,
            provider_ca,
        })
    }
}

fn ttl(r: &mut Reader<'_>, name: &str, default: u64, cap: u64) -> Duration {
    let s = r.parse(name, default);
    if s == 0 || s > cap {
        r.problem(name, format!("must be between 1 and {cap}"));
    }
    Duration::from_secs(s.clamp(1, cap))
}
