//! The Caracal side of the bench: `caracal-control-plane` and `caracal-gateway` as children, a zone
//! seeded with one application, an allow-all policy and three resources: one in front of the bench
//! upstream (S3–S6), a pool of the three pool endpoints (S7g) and the same pool with health probes and
//! retries for the failover drill.

pub(crate) mod mint;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};
use http::Method;
use serde::Serialize;
use serde_json::{Value, json};

use crate::client::{self, Conn};
use crate::procs::{Child, Spawn};

/// The policy the bench activates: allows every exchange of an application (as in the e2e tests), so
/// a mint pays for a real policy evaluation without the bench measuring a policy's own logic.
pub(crate) const ALLOW_POLICY: &str = r#"package caracal.authz

import rego.v1

default result := {"decision": "deny", "evaluation_status": "complete", "determining_policies": [], "diagnostics": [{"reason": "no_rule_matched"}]}

result := {"decision": "allow", "evaluation_status": "complete", "determining_policies": ["bench-allow"], "diagnostics": []} if {
	input.principal.type == "Application"
}
"#;

/// The resource every bench zone puts in front of the bench upstream, and its scope.
pub(crate) const RESOURCE: &str = "https://bench.local";
pub(crate) const SCOPE: &str = "bench.read";

/// Where to find and how to wire the binaries.
pub(crate) struct StackConfig<'a> {
    pub(crate) bin_dir: &'a Path,
    pub(crate) database_url: &'a str,
    pub(crate) redis_url: &'a str,
    pub(crate) dir: &'a Path,
    pub(crate) cp: SocketAddr,
    /// A second control plane on the same database and Redis: another STS instance, which learns
    /// of revocations only through `caracal.sessions.revoke` (S6(c)).
    pub(crate) cp2: SocketAddr,
    pub(crate) gw: SocketAddr,
}

/// The Caracal processes.
pub(crate) struct Caracal {
    pub(crate) control_plane: Child,
    pub(crate) control_plane_2: Child,
    pub(crate) gateway: Child,
    pub(crate) cp: SocketAddr,
    pub(crate) cp2: SocketAddr,
    pub(crate) gw: SocketAddr,
    bootstrap_token: String,
    redis_url: String,
    /// Whether this control plane files the audit stream (`BENCH_AUDIT_LEDGER` is not `off`).
    ledger: bool,
    bin_dir: std::path::PathBuf,
    /// The gateway's `CARACAL_ADMIN_TOKEN` (its revocation reload endpoint).
    gateway_admin_token: String,
    cp_env: Vec<(String, String)>,
    gw_env: Vec<(String, String)>,
}

/// A control plane and a gateway of their own ([`Caracal::start_pair`]).
pub(crate) struct Pair {
    /// The control plane and the gateway, stopped when the pair is dropped.
    pub(crate) processes: [Child; 2],
    pub(crate) cp: SocketAddr,
    pub(crate) gw: SocketAddr,
}

/// The seeded zone.
#[derive(Clone, Debug)]
pub(crate) struct Demo {
    pub(crate) zone_id: String,
    pub(crate) app_id: String,
    pub(crate) secret: String,
    /// The zone's policy set (its allow policy is the active version).
    pub(crate) policy_set: String,
    pub(crate) admin: String,
    pub(crate) resource: String,
    pub(crate) scope: String,
    /// S7g: the three pool endpoints, weights 1/1/1, round robin.
    pub(crate) pool_resource: String,
    /// The failover drill's resource: the same three endpoints, with health probes and retries when
    /// this control plane takes them.
    pub(crate) drill_resource: String,
    pub(crate) drill_settings: DrillSettings,
}

/// What the drill's resource was created with.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct DrillSettings {
    /// Whether the control plane took `health` and `retry`.
    pub(crate) health_and_retry: bool,
    /// The settings, or why they are missing.
    pub(crate) note: String,
}

/// The drill's health probe: every 500 ms, two failures eject, one success re-admits.
pub(crate) fn drill_health() -> Value {
    json!({"kind": "http", "path": "/", "interval_ms": 500, "timeout_ms": 200, "healthy_threshold": 1, "unhealthy_threshold": 2})
}

/// The drill's retry setting.
pub(crate) fn drill_retry() -> Value {
    json!({"attempts": 3})
}

/// Whether an admin answer refused the body because `health` or `retry` is not a known field (a
/// control plane that predates them), rather than for a bad value.
pub(crate) fn refused_as_unknown(status: u16, body: &str) -> bool {
    status == 400 && (body.contains("unknown field `health`") || body.contains("unknown field `retry`"))
}

impl Caracal {
    /// Starts the control planes, waits for them, then the gateway.
    pub(crate) async fn start(c: &StackConfig<'_>) -> anyhow::Result<Self> {
        let hex = || caracal_shared::b64::random_hex(32);
        let issuer = format!("http://{}", c.cp);
        let bootstrap_token = format!("bench-{}", hex());
        let gateway_key = hex();
        let streams_key = hex();
        let audit_key = hex();
        let chain_key = hex();
        let gateway_admin_token = hex();
        // `BENCH_AUDIT_LEDGER=off` measures the serving path with the ledger in another process
        // (events then only pile up in the stream); the default files them in this control plane.
        let ledger_on = !std::env::var("BENCH_AUDIT_LEDGER").is_ok_and(|v| v == "off");
        let ledger = if ledger_on { "true" } else { "false" };
        let cp_env = pairs(&[
            ("CARACAL_MODE", "dev"),
            ("LISTEN_ADDR", &c.cp.to_string()),
            ("DATABASE_URL", c.database_url),
            ("REDIS_URL", c.redis_url),
            ("ISSUER_URL", &issuer),
            ("ZONE_KEK", &hex()),
            ("STREAMS_HMAC_KEY", &streams_key),
            ("GATEWAY_STS_HMAC_KEY", &gateway_key),
            ("BOOTSTRAP_ADMIN_TOKEN", &bootstrap_token),
            ("KEY_ACTIVATION_DELAY_SECONDS", "0"),
            // Pre-minted mandates must outlive the run (the gateway refuses those expiring within 35 s).
            ("GATEWAY_MANDATE_TTL_SECONDS", "900"),
            // One application mints for the whole run: lift its per-client limit out of the way.
            ("STS_MINT_RATE_LIMIT_PER_MIN", "100000000"),
            ("SESSION_TTL_SECONDS", "3600"),
            // The ledger runs as in production: it files every frame the gateway and the STS sign.
            ("AUDIT_HMAC_KEY", &audit_key),
            ("AUDIT_CHAIN_KEY", &chain_key),
            ("AUDIT_LEDGER_ENABLED", ledger),
        ])
        .into_iter()
        .chain(extra_env("BENCH_CONTROL_PLANE_ENV"))
        .collect::<Vec<_>>();
        let program = c.bin_dir.join("caracal-control-plane");
        let mut control_plane = Child::spawn(Spawn { name: "control-plane", program: &program, args: &[], env: &cp_env, dir: c.dir })?;
        control_plane.wait_ready(c.cp, "/ready", &[], Duration::from_secs(90)).await?;
        let cp2_env: Vec<(String, String)> =
            // Its own address, and no Unix socket: one control plane serves the gateway's `STS_SOCKET`.
            cp_env
                .iter()
                .filter(|(k, _)| k != "LISTEN_SOCKET")
                .map(|(k, v)| (k.clone(), if k == "LISTEN_ADDR" { c.cp2.to_string() } else { v.clone() }))
                .collect();
        let mut control_plane_2 = Child::spawn(Spawn { name: "control-plane-2", program: &program, args: &[], env: &cp2_env, dir: c.dir })?;
        control_plane_2.wait_ready(c.cp2, "/ready", &[], Duration::from_secs(90)).await?;

        let gw_env = pairs(&[
            ("CARACAL_MODE", "dev"),
            ("LISTEN_ADDR", &c.gw.to_string()),
            ("STS_URL", &issuer),
            ("REDIS_URL", c.redis_url),
            ("GATEWAY_STS_HMAC_KEY", &gateway_key),
            ("GATEWAY_THREADS", "2"),
            // The revocation view as in production: signed stream consumer plus Postgres snapshot.
            ("DATABASE_URL", c.database_url),
            ("STREAMS_HMAC_KEY", &streams_key),
            // Every upstream of the bench listens on loopback, which the egress policy refuses by default.
            ("ALLOW_PRIVATE_UPSTREAMS", "true"),
            ("AUDIT_HMAC_KEY", &audit_key),
            ("CARACAL_ADMIN_TOKEN", &gateway_admin_token),
            // C2 warms 10,000 zones' keys in one pass; the default budget for zones without known keys
            // (100, then 20 a second) would take eight minutes. The demo zone's traffic never spends it.
            ("JWKS_COLD_FETCH_BURST", "20000"),
        ])
        .into_iter()
        .chain(extra_env("BENCH_GATEWAY_ENV"))
        .collect::<Vec<_>>();
        let program = c.bin_dir.join("caracal-gateway");
        let mut gateway = Child::spawn(Spawn { name: "gateway", program: &program, args: &[], env: &gw_env, dir: c.dir })?;
        gateway.wait_ready(c.gw, "/ready", &[], Duration::from_secs(60)).await?;
        Ok(Self {
            control_plane,
            control_plane_2,
            gateway,
            cp: c.cp,
            cp2: c.cp2,
            gw: c.gw,
            bootstrap_token,
            redis_url: c.redis_url.to_owned(),
            ledger: ledger_on,
            bin_dir: c.bin_dir.to_owned(),
            gateway_admin_token,
            cp_env,
            gw_env,
        })
    }

    /// A setting of the control plane's environment.
    pub(crate) fn cp_setting(&self, name: &str) -> Option<&str> {
        self.cp_env.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// `POST /internal/revocations/reload` on the gateway: the live revocations it loaded.
    pub(crate) async fn reload_gateway_revocations(&self) -> anyhow::Result<u64> {
        let mut conn = Conn::new(self.gw);
        let req = client::json(&conn, Method::POST, "/internal/revocations/reload", Some(&self.gateway_admin_token), None);
        let (status, body) = conn.fetch(req).await?;
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        match v["revocations"].as_u64() {
            Some(n) if status.is_success() => Ok(n),
            _ => bail!("gateway revocation reload: {status} {}", String::from_utf8_lossy(&body)),
        }
    }

    /// One sample of the gateway's `/metrics` (dev mode: no bearer), by its full name.
    pub(crate) async fn gateway_metric(&self, name: &str) -> anyhow::Result<Option<f64>> {
        metric(self.gw, name).await
    }

    /// The Redis every process here was started with.
    pub(crate) fn redis_url(&self) -> &str {
        &self.redis_url
    }

    /// Another control plane and gateway on the same database and keys, as `name-cp` and `name-gw`,
    /// with `env` added to both (over the bench's own settings). The control plane is its own
    /// issuer and the gateway's STS; the gateway spools audit frames in its own directory.
    pub(crate) async fn start_pair(&self, name: &str, env: &[(String, String)], dir: &Path) -> anyhow::Result<Pair> {
        let (control_plane, cp) = self.start_control_plane(&format!("{name}-cp"), env, dir).await?;
        let gw = crate::run::free_addr()?;
        let spool = dir.join(format!("{name}-audit-replay")).display().to_string();
        let own = [("LISTEN_ADDR", gw.to_string()), ("STS_URL", format!("http://{cp}")), ("AUDIT_REPLAY_DIR", spool)];
        let gw_env = overlay(&self.gw_env, &own, env);
        let program = self.bin_dir.join("caracal-gateway");
        let mut gateway = Child::spawn(Spawn { name: &format!("{name}-gw"), program: &program, args: &[], env: &gw_env, dir })?;
        gateway.wait_ready(gw, "/ready", &[], Duration::from_secs(60)).await?;
        Ok(Pair { processes: [control_plane, gateway], cp, gw })
    }

    /// Another control plane on the same database and keys, its own issuer, with `env` over the
    /// bench's settings; ready when this returns.
    pub(crate) async fn start_control_plane(
        &self,
        name: &str,
        env: &[(String, String)],
        dir: &Path,
    ) -> anyhow::Result<(Child, SocketAddr)> {
        let cp = crate::run::free_addr()?;
        let cp_env = overlay(&self.cp_env, &[("LISTEN_ADDR", cp.to_string()), ("ISSUER_URL", format!("http://{cp}"))], env);
        let program = self.bin_dir.join("caracal-control-plane");
        let mut control_plane = Child::spawn(Spawn { name, program: &program, args: &[], env: &cp_env, dir })?;
        control_plane.wait_ready(cp, "/ready", &[], Duration::from_secs(90)).await?;
        Ok((control_plane, cp))
    }

    /// Waits until the audit ledger has filed everything on `caracal.audit.events` (`XINFO GROUPS`:
    /// no lag, nothing pending), at most `limit`; how long it took. A bulk pre-mint leaves
    /// thousands of events behind it, and a timed window that opened while the ledger caught up
    /// would measure the catching up.
    /// With the ledger off (`BENCH_AUDIT_LEDGER=off`) nothing here files the stream: no wait.
    pub(crate) async fn ledger_drained(&self, limit: std::time::Duration) -> anyhow::Result<std::time::Duration> {
        if !self.ledger {
            return Ok(std::time::Duration::ZERO);
        }
        audit_drained(&self.redis_url, limit).await
    }

    /// Bootstrap, zone, application, resources (→ `upstream`, → the `pool`), allow policy.
    pub(crate) async fn seed(&self, upstream: SocketAddr, pool: &[SocketAddr]) -> anyhow::Result<Demo> {
        let admin =
            self.api(Method::POST, "/v1/bootstrap", &self.bootstrap_token, None, 201).await?["token"].as_str().context("token")?.to_owned();
        let mut conn = Conn::new(self.cp);
        let Tenant { zone_id: z, app_id, secret, policy_set } = seed_zone(&mut conn, &admin, "bench", upstream).await?;
        let scope = SCOPE.to_owned();
        let endpoints: Vec<Value> = pool.iter().map(|a| json!({"url": format!("http://{a}"), "weight": 1})).collect();
        let pool_body = |identifier: &str| {
            json!({
                "identifier": identifier,
                "endpoints": endpoints,
                "load_balancing": {"policy": "round_robin"},
                "scopes": [scope],
                "operations": [{"method": "GET", "path": "/**", "scope": scope}],
            })
        };
        let pool_resource = "https://bench-pool.local".to_owned();
        self.api(Method::POST, &format!("/v1/zones/{z}/resources"), &admin, Some(pool_body(&pool_resource)), 201).await?;
        let drill_resource = "https://bench-drill.local".to_owned();
        let drill_settings = self.create_drill_resource(&z, &admin, pool_body(&drill_resource)).await?;
        Ok(Demo {
            zone_id: z,
            app_id,
            secret,
            policy_set,
            admin,
            resource: RESOURCE.to_owned(),
            scope,
            pool_resource,
            drill_resource,
            drill_settings,
        })
    }

    /// Creates the drill's resource with `health` and `retry`; a control plane that does not know
    /// those fields yet refuses them, and then the resource is created without (and the report says so).
    async fn create_drill_resource(&self, z: &str, admin: &str, mut body: Value) -> anyhow::Result<DrillSettings> {
        let path = format!("/v1/zones/{z}/resources");
        let plain = body.clone();
        body["health"] = drill_health();
        body["retry"] = drill_retry();
        let (status, answer) = self.api_raw(Method::POST, &path, admin, Some(&body)).await?;
        if status == 201 {
            let note = format!("health {}, retry {}", drill_health(), drill_retry());
            return Ok(DrillSettings { health_and_retry: true, note });
        }
        if !refused_as_unknown(status, &answer) {
            bail!("POST {path} (drill resource): expected 201, got {status}: {answer}");
        }
        self.api(Method::POST, &path, admin, Some(plain), 201).await?;
        Ok(DrillSettings {
            health_and_retry: false,
            note: format!(
                "health/retry not supported by this build (control plane: {status} {}); pool without them",
                refusal_summary(&answer)
            ),
        })
    }

    /// One governed request end to end (session, gateway mandate, gateway → upstream), so a broken
    /// setup fails the run here instead of turning every S3/S4/S7g request into an error.
    pub(crate) async fn check_governed(&self, d: &Demo, resource: &str) -> anyhow::Result<()> {
        let mut sts = Conn::new(self.cp);
        let session = mint::Minter::session(self.cp, d).mint(&mut sts).await?;
        let mandate = mint::Minter::gateway_for(self.cp, d, &session, resource).mint(&mut sts).await?;
        let mut gw = Conn::new(self.gw);
        let req = gw
            .request(Method::GET, "/v1/items/42")
            .header(http::header::AUTHORIZATION, format!("Bearer {mandate}"))
            .header(crate::load::workload::RESOURCE_HEADER, resource)
            .body(http_body_util::Full::default())?;
        let (status, body) = gw.fetch(req).await?;
        if !status.is_success() {
            bail!(
                "a governed request for {resource} through the gateway got {status}: {}\ngateway log:\n{}",
                String::from_utf8_lossy(&body),
                self.gateway.log_tail(10)
            );
        }
        Ok(())
    }

    /// Revokes the session whose mandate is `session` (its `sid` is the authority record id).
    pub(crate) async fn revoke(&self, d: &Demo, sid: &str) -> anyhow::Result<()> {
        self.api(Method::POST, &format!("/v1/zones/{}/authority-records/{sid}/revoke", d.zone_id), &d.admin, None, 200).await.map(drop)
    }

    /// One admin API call on a connection of its own, expecting `status`.
    async fn api(&self, method: Method, path: &str, bearer: &str, body: Option<Value>, status: u16) -> anyhow::Result<Value> {
        call(&mut Conn::new(self.cp), method, path, bearer, body, status).await
    }

    /// Activates `rego` as the demo zone's policy, and waits until this control plane's STS has
    /// loaded it (the gateway's exchanges go to this one).
    pub(crate) async fn activate_policy(&self, d: &Demo, rego: &str) -> anyhow::Result<()> {
        let (z, set) = (&d.zone_id, &d.policy_set);
        let mut conn = Conn::new(self.cp);
        let version =
            call(&mut conn, Method::POST, &format!("/v1/zones/{z}/policy-sets/{set}/versions"), &d.admin, Some(json!({"rego": rego})), 201)
                .await?;
        let id = version["id"].as_str().context("policy version id")?.to_owned();
        call(&mut conn, Method::POST, &format!("/v1/zones/{z}/policy-sets/{set}/activate"), &d.admin, Some(json!({"version_id": id})), 202)
            .await?;
        let status = format!("/v1/zones/{z}/policy-sets/{set}/activation-status?version_id={id}");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while call(&mut conn, Method::GET, &status, &d.admin, None, 200).await?["loaded"] != json!(true) {
            anyhow::ensure!(tokio::time::Instant::now() < deadline, "policy version {id} not loaded within 30 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Rotates the demo zone's signing key (the bench's control planes sign with a new key at once).
    pub(crate) async fn rotate_key(&self, d: &Demo) -> anyhow::Result<()> {
        self.api(Method::POST, &format!("/v1/zones/{}/keys/rotate", d.zone_id), &d.admin, None, 200).await.map(drop)
    }

    /// One admin API call: its status and body, whatever they are.
    async fn api_raw(&self, method: Method, path: &str, bearer: &str, body: Option<&Value>) -> anyhow::Result<(u16, String)> {
        let mut conn = Conn::new(self.cp);
        let req = client::json(&conn, method, path, Some(bearer), body);
        let (got, body) = conn.fetch(req).await?;
        Ok((got.as_u16(), String::from_utf8_lossy(&body).into_owned()))
    }
}

/// What the bench creates in a zone besides its resources.
pub(crate) struct Tenant {
    pub(crate) zone_id: String,
    pub(crate) app_id: String,
    pub(crate) secret: String,
    pub(crate) policy_set: String,
}

/// A zone named `name` with an application, [`RESOURCE`] in front of `upstream`, and
/// [`ALLOW_POLICY`] active; six admin calls over `conn`.
pub(crate) async fn seed_zone(conn: &mut Conn, admin: &str, name: &str, upstream: SocketAddr) -> anyhow::Result<Tenant> {
    let zone = call(conn, Method::POST, "/v1/zones", admin, Some(json!({"name": name})), 201).await?;
    let z = zone["id"].as_str().context("zone id")?.to_owned();
    let app = call(conn, Method::POST, &format!("/v1/zones/{z}/applications"), admin, Some(json!({"name": "bench-agent"})), 201).await?;
    let body = json!({
        "identifier": RESOURCE,
        "upstream_url": format!("http://{upstream}"),
        "scopes": [SCOPE],
        "operations": [{"method": "GET", "path": "/**", "scope": SCOPE}],
    });
    call(conn, Method::POST, &format!("/v1/zones/{z}/resources"), admin, Some(body), 201).await?;
    let set = call(conn, Method::POST, &format!("/v1/zones/{z}/policy-sets"), admin, Some(json!({"name": "bench"})), 201).await?;
    let set = set["id"].as_str().context("policy set id")?.to_owned();
    let version =
        call(conn, Method::POST, &format!("/v1/zones/{z}/policy-sets/{set}/versions"), admin, Some(json!({"rego": ALLOW_POLICY})), 201)
            .await?;
    let body = json!({"version_id": version["id"]});
    call(conn, Method::POST, &format!("/v1/zones/{z}/policy-sets/{set}/activate"), admin, Some(body), 202).await?;
    Ok(Tenant {
        zone_id: z,
        app_id: app["id"].as_str().context("application id")?.to_owned(),
        secret: app["client_secret"].as_str().context("client secret")?.to_owned(),
        policy_set: set,
    })
}

/// The value of the unlabelled metric `name` on `addr`'s `/metrics`, if it is there.
pub(crate) async fn metric(addr: SocketAddr, name: &str) -> anyhow::Result<Option<f64>> {
    let mut conn = Conn::new(addr);
    let req = client::json(&conn, Method::GET, "/metrics", None, None);
    let (_, body) = conn.fetch(req).await?;
    let text = String::from_utf8_lossy(&body);
    Ok(text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok()))
}

/// Waits until the ledger has filed everything on `caracal.audit.events` of `redis_url`, at most
/// `limit` ([`Caracal::ledger_drained`]); how long it took.
pub(crate) async fn audit_drained(redis_url: &str, limit: std::time::Duration) -> anyhow::Result<std::time::Duration> {
    let started = std::time::Instant::now();
    loop {
        let backlog = audit_backlog(redis_url).await?;
        if backlog == Some(0) {
            return Ok(started.elapsed());
        }
        anyhow::ensure!(started.elapsed() < limit, "the audit ledger did not catch up within {limit:?}: {backlog:?} events left");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Events on `caracal.audit.events` of `redis_url` the ledger has not filed yet (`XINFO GROUPS`:
/// its group's lag plus pending); `None` before the group exists.
pub(crate) async fn audit_backlog(redis_url: &str) -> anyhow::Result<Option<u64>> {
    let out = tokio::process::Command::new("redis-cli")
        .args(["-u", redis_url, "XINFO", "GROUPS", "caracal.audit.events"])
        .output()
        .await
        .context("redis-cli (Debian: redis-tools)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| {
        let mut lines = text.lines();
        lines.by_ref().find(|l| l.trim() == name);
        lines.next().and_then(|v| v.trim().parse::<u64>().ok())
    };
    Ok(field("lag").zip(field("pending")).map(|(l, p)| l + p))
}

/// `base` without its Unix-socket settings (the copies listen on TCP), then `own`, then `env`: a
/// later setting wins.
fn overlay(base: &[(String, String)], own: &[(&str, String)], env: &[(String, String)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = base.iter().filter(|(k, _)| k != "LISTEN_SOCKET" && k != "STS_SOCKET").cloned().collect();
    v.extend(own.iter().map(|(k, val)| ((*k).to_owned(), val.clone())));
    v.extend(env.iter().cloned());
    v
}

/// One admin API call over `conn`, expecting `status`.
async fn call(conn: &mut Conn, method: Method, path: &str, bearer: &str, body: Option<Value>, status: u16) -> anyhow::Result<Value> {
    let req = client::json(conn, method.clone(), path, Some(bearer), body.as_ref());
    let (got, text) = conn.fetch(req).await?;
    if got.as_u16() != status {
        bail!("{method} {path}: expected {status}, got {got}: {}", String::from_utf8_lossy(&text));
    }
    Ok(serde_json::from_slice(&text).unwrap_or(Value::Null))
}

/// The `sid` claim of a mandate, read without verification (the harness minted it itself).
pub(crate) fn sid_of(mandate: &str) -> anyhow::Result<String> {
    let payload = mandate.split('.').nth(1).context("mandate has no payload")?;
    let claims: Value = serde_json::from_slice(&caracal_shared::b64::decode(payload)?)?;
    Ok(claims["sid"].as_str().context("mandate has no sid")?.to_owned())
}

/// `K=V,K=V` from the environment variable `name`: settings an experiment adds to (or overrides in)
/// a process's environment, e.g. `BENCH_GATEWAY_ENV=STS_TIMEOUT=2s`. Later wins.
fn extra_env(name: &str) -> Vec<(String, String)> {
    let raw = std::env::var(name).unwrap_or_default();
    raw.split(',').filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned())).collect()
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

/// `invalid_body: unknown field `health`` from an admin error answer (the full text lists every field).
fn refusal_summary(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let code = v["error"].as_str().unwrap_or("error");
    let unknown = body.find("unknown field `").and_then(|i| {
        let rest = &body[i..];
        let end = rest["unknown field `".len()..].find('`')? + "unknown field `".len() + 1;
        Some(&rest[..end])
    });
    match unknown {
        Some(u) => format!("{code}: {u}"),
        None => code.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_unknown_health_or_retry_field_falls_back() {
        let unknown = r#"{"error":"invalid_body","error_description":"Failed to deserialize the JSON body into the target type: unknown field `health`, expected one of `name`, `identifier`"}"#;
        assert!(refused_as_unknown(400, unknown));
        assert!(refused_as_unknown(400, "unknown field `retry`, expected one of `name`"));
        assert!(!refused_as_unknown(400, r#"{"error":"invalid_resource","error_description":"health.interval_ms must be 100..60000"}"#));
        assert!(!refused_as_unknown(409, unknown));
        assert_eq!(refusal_summary(unknown), "invalid_body: unknown field `health`");
        assert_eq!(refusal_summary("not json"), "error");
    }

    #[test]
    fn the_drill_settings_are_the_issues() {
        assert_eq!(drill_health()["unhealthy_threshold"], 2);
        assert_eq!(drill_health()["interval_ms"], 500);
        assert_eq!(drill_retry(), json!({"attempts": 3}));
    }
}
