//! The Caracal side of the bench: `caracal-control-plane` and `caracal-gateway` as children, a zone
//! seeded with one application, one resource in front of the bench upstream and an allow-all policy.

pub(crate) mod mint;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};
use http::Method;
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
}

/// The seeded zone.
#[derive(Clone, Debug)]
pub(crate) struct Demo {
    pub(crate) zone_id: String,
    pub(crate) app_id: String,
    pub(crate) secret: String,
    pub(crate) admin: String,
    pub(crate) resource: String,
    pub(crate) scope: String,
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
        // `BENCH_AUDIT_LEDGER=off` measures the serving path with the ledger in another process
        // (events then only pile up in the stream); the default files them in this control plane.
        let ledger = if std::env::var("BENCH_AUDIT_LEDGER").is_ok_and(|v| v == "off") { "false" } else { "true" };
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
        ]);
        let program = c.bin_dir.join("caracal-control-plane");
        let mut control_plane = Child::spawn(Spawn { name: "control-plane", program: &program, args: &[], env: &cp_env, dir: c.dir })?;
        control_plane.wait_ready(c.cp, "/ready", &[], Duration::from_secs(90)).await?;
        let cp2_env: Vec<(String, String)> =
            cp_env.iter().map(|(k, v)| (k.clone(), if k == "LISTEN_ADDR" { c.cp2.to_string() } else { v.clone() })).collect();
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
        ]);
        let program = c.bin_dir.join("caracal-gateway");
        let mut gateway = Child::spawn(Spawn { name: "gateway", program: &program, args: &[], env: &gw_env, dir: c.dir })?;
        gateway.wait_ready(c.gw, "/ready", &[], Duration::from_secs(60)).await?;
        Ok(Self { control_plane, control_plane_2, gateway, cp: c.cp, cp2: c.cp2, gw: c.gw, bootstrap_token })
    }

    /// Bootstrap, zone, application, resource → `upstream`, allow policy.
    pub(crate) async fn seed(&self, upstream: SocketAddr) -> anyhow::Result<Demo> {
        let admin =
            self.api(Method::POST, "/v1/bootstrap", &self.bootstrap_token, None, 201).await?["token"].as_str().context("token")?.to_owned();
        let zone = self.api(Method::POST, "/v1/zones", &admin, Some(json!({"name": "bench"})), 201).await?;
        let z = zone["id"].as_str().context("zone id")?.to_owned();
        let app = self.api(Method::POST, &format!("/v1/zones/{z}/applications"), &admin, Some(json!({"name": "bench-agent"})), 201).await?;
        let resource = "https://bench.local".to_owned();
        let scope = "bench.read".to_owned();
        let body = json!({
            "identifier": resource,
            "upstream_url": format!("http://{upstream}"),
            "scopes": [scope],
            "operations": [{"method": "GET", "path": "/**", "scope": scope}],
        });
        self.api(Method::POST, &format!("/v1/zones/{z}/resources"), &admin, Some(body), 201).await?;
        let set = self.api(Method::POST, &format!("/v1/zones/{z}/policy-sets"), &admin, Some(json!({"name": "bench"})), 201).await?;
        let set = set["id"].as_str().context("policy set id")?;
        let version = self
            .api(Method::POST, &format!("/v1/zones/{z}/policy-sets/{set}/versions"), &admin, Some(json!({"rego": ALLOW_POLICY})), 201)
            .await?;
        let body = json!({"version_id": version["id"]});
        self.api(Method::POST, &format!("/v1/zones/{z}/policy-sets/{set}/activate"), &admin, Some(body), 202).await?;
        Ok(Demo {
            zone_id: z,
            app_id: app["id"].as_str().context("application id")?.to_owned(),
            secret: app["client_secret"].as_str().context("client secret")?.to_owned(),
            admin,
            resource,
            scope,
        })
    }

    /// One governed request end to end (session, gateway mandate, gateway → upstream), so a broken
    /// setup fails the run here instead of turning every S3/S4 request into an error.
    pub(crate) async fn check_governed(&self, d: &Demo) -> anyhow::Result<()> {
        let mut sts = Conn::new(self.cp);
        let session = mint::Minter::session(self.cp, d).mint(&mut sts).await?;
        let mandate = mint::Minter::gateway(self.cp, d, &session).mint(&mut sts).await?;
        let mut gw = Conn::new(self.gw);
        let req = gw
            .request(Method::GET, "/v1/items/42")
            .header(http::header::AUTHORIZATION, format!("Bearer {mandate}"))
            .header(crate::load::workload::RESOURCE_HEADER, d.resource.as_str())
            .body(http_body_util::Full::default())?;
        let (status, body) = gw.fetch(req).await?;
        if !status.is_success() {
            bail!(
                "a governed request through the gateway got {status}: {}\ngateway log:\n{}",
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

    /// One admin API call, expecting `status`.
    async fn api(&self, method: Method, path: &str, bearer: &str, body: Option<Value>, status: u16) -> anyhow::Result<Value> {
        let mut conn = Conn::new(self.cp);
        let req = client::json(&conn, method.clone(), path, Some(bearer), body.as_ref());
        let (got, body) = conn.fetch(req).await?;
        if got.as_u16() != status {
            bail!("{method} {path}: expected {status}, got {got}: {}", String::from_utf8_lossy(&body));
        }
        Ok(serde_json::from_slice(&body).unwrap_or(Value::Null))
    }
}

/// The `sid` claim of a mandate, read without verification (the harness minted it itself).
pub(crate) fn sid_of(mandate: &str) -> anyhow::Result<String> {
    let payload = mandate.split('.').nth(1).context("mandate has no payload")?;
    let claims: Value = serde_json::from_slice(&caracal_shared::b64::decode(payload)?)?;
    Ok(claims["sid"].as_str().context("mandate has no sid")?.to_owned())
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}
