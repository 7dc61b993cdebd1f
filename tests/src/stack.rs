//! A whole Caracal stack for one test: database, Redis, control plane, gateway, upstream.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use crate::infra::{self, Redis, RedisOptions, free_port};
use crate::pki::TestPki;
use crate::procs::Proc;
use crate::redis_ha::{RedisCluster, RedisHa};
use crate::upstream::Upstream;

/// Grant type of every exchange.
pub const GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// Subject token type of mandates.
pub const ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
/// `requested_token_type` of a gateway mint (a session mandate exchanged for a gateway mandate).
pub const GATEWAY_MANDATE: &str = "urn:caracal:token-type:gateway-mandate";

/// A policy that allows every exchange for a resource the zone knows (and session mints).
pub const ALLOW_POLICY: &str = include_str!("../../docs/policies/allow-applications.rego");

/// A policy that denies everything with a reason.
pub const DENY_POLICY: &str = include_str!("../../docs/policies/freeze-zone.rego");

/// Least privilege by application trait (see `docs/policy.md`).
pub const TRAITS_POLICY: &str = include_str!("../../docs/policies/agent-labels.rego");

/// MCP tools by name (see `docs/mcp.md`).
pub const MCP_POLICY: &str = include_str!("../../docs/policies/mcp-tools.rego");

/// The gateway's `CARACAL_ADMIN_TOKEN` in every stack.
pub const GATEWAY_ADMIN_TOKEN: &str = "gateway-admin-token-for-e2e-tests-0123456789";

/// Extra settings for a stack.
#[derive(Default, Clone)]
pub struct StackOptions {
    /// Extra or overriding env for the gateway.
    pub gateway_env: Vec<(String, String)>,
    /// Extra or overriding env for the control plane.
    pub control_plane_env: Vec<(String, String)>,
    /// Arguments for the gateway (e.g. `-c pingora.yaml`).
    pub gateway_args: Vec<String>,
    /// The control plane serves TLS with this PKI's certificate (`TLS_CERT_FILE`/`TLS_KEY_FILE`);
    /// the gateway reaches it at `https://127.0.0.1:<port>` trusting the CA (`STS_CA_FILE`).
    pub control_plane_tls: Option<TestPki>,
    /// How the stack's `redis-server` is reached (TLS only, passwords); both services get its URL
    /// and, for TLS, `REDIS_CA_FILE`.
    pub redis: RedisOptions,
    /// The stack's Redis is a primary with two replicas behind three Sentinels, and both services
    /// find it through them ([`RedisHa`]).
    pub redis_ha: bool,
    /// The stack's Redis is the first node of a six-node Redis Cluster ([`RedisCluster`]).
    pub redis_cluster: bool,
}

/// Everything one test needs, torn down on drop.
pub struct Stack {
    pub dir: PathBuf,
    pub database_url: String,
    /// The stack's Redis (with [`StackOptions::redis_ha`], the first primary).
    pub redis: Redis,
    /// Its replicas and Sentinels, with [`StackOptions::redis_ha`].
    pub redis_ha: Option<RedisHa>,
    /// The other cluster nodes, with [`StackOptions::redis_cluster`].
    pub redis_cluster: Option<RedisCluster>,
    pub control_plane: Proc,
    pub gateway: Proc,
    pub upstream: Upstream,
    pub cp_url: String,
    pub gw_url: String,
    pub issuer: String,
    pub streams_key: String,
    pub gateway_key: String,
    pub audit_key: String,
    pub bootstrap_token: String,
    /// A client for the stack (trusting the test CA when the control plane serves TLS).
    pub http: reqwest::Client,
    /// The control plane's TLS PKI, when it serves TLS.
    pub pki: Option<TestPki>,
    /// The control plane's environment (to start another process with changes).
    pub cp_env: BTreeMap<String, String>,
    /// The gateway's environment (to start a second process, e.g. for an upgrade).
    pub gw_env: BTreeMap<String, String>,
}

/// A zone set up with one application, one resource and an active allow policy.
#[derive(Clone, Debug)]
pub struct Demo {
    pub zone_id: String,
    pub app_id: String,
    pub secret: String,
    pub resource: String,
    pub policy_set_id: String,
    pub admin: String,
}

/// The `sid` of a mandate (read without verifying it: the tests' own tokens).
pub fn sid_of(mandate: &str) -> String {
    jsonwebtoken::dangerous::insecure_decode::<Value>(mandate).unwrap().claims["sid"].as_str().unwrap().to_owned()
}

/// An HTTP answer: status, headers and body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Answer {
    /// Reads a response whole.
    pub async fn read(r: reqwest::Response) -> Self {
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Self { status, headers, body, text }
    }

    /// `body["error"]` as a string.
    pub fn error(&self) -> &str {
        self.body["error"].as_str().unwrap_or("")
    }
}

fn http_client(pki: Option<&TestPki>) -> reqwest::Client {
    match pki {
        Some(pki) => pki.http_client(),
        None => reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap(),
    }
}

fn random_hex(n: usize) -> String {
    (0..n).map(|_| format!("{:02x}", uuid::Uuid::new_v4().as_bytes()[0])).collect::<String>()
}

impl Stack {
    /// Starts everything with default settings.
    pub async fn start() -> Self {
        Self::start_with(StackOptions::default()).await
    }

    /// Starts everything.
    pub async fn start_with(opts: StackOptions) -> Self {
        let dir = infra::scratch_dir("stack");
        let database_url = infra::fresh_database().await;
        let redis = Redis::start_with(RedisOptions { cluster: opts.redis_cluster, ..opts.redis.clone() });
        let redis_ha = opts.redis_ha.then(|| RedisHa::start(&redis));
        let redis_cluster = opts.redis_cluster.then(|| RedisCluster::start(&redis));
        let upstream = Upstream::start().await;
        let (cp_port, gw_port) = (free_port(), free_port());
        let pki = opts.control_plane_tls.clone();
        let cp_scheme = if pki.is_some() { "https" } else { "http" };
        let cp_url = format!("{cp_scheme}://127.0.0.1:{cp_port}");
        let http = http_client(pki.as_ref());
        let gw_url = format!("http://127.0.0.1:{gw_port}");
        let streams_key = random_hex(32);
        let gateway_key = random_hex(32);
        let audit_key = random_hex(32);
        let bootstrap_token = format!("boot-{}", random_hex(24));

        let mut cp_env: BTreeMap<String, String> = [
            ("CARACAL_MODE", "dev".to_owned()),
            ("LISTEN_ADDR", format!("127.0.0.1:{cp_port}")),
            ("DATABASE_URL", database_url.clone()),
            ("REDIS_URL", redis.url()),
            ("ISSUER_URL", cp_url.clone()),
            ("ZONE_KEK", random_hex(32)),
            ("STREAMS_HMAC_KEY", streams_key.clone()),
            ("GATEWAY_STS_HMAC_KEY", gateway_key.clone()),
            ("BOOTSTRAP_ADMIN_TOKEN", bootstrap_token.clone()),
            ("KEY_ACTIVATION_DELAY_SECONDS", "0".to_owned()),
            // Same key as the gateway: both sign frames for one ledger.
            ("AUDIT_HMAC_KEY", audit_key.clone()),
            ("AUDIT_CHAIN_KEY", random_hex(32)),
            // Route-table tests refuse hundreds of bad bearers from one address; the budget has
            // its own test (admin_auth.rs).
            ("ADMIN_AUTH_FAIL_LIMIT_PER_MIN", "100000".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let mut common_env = Vec::new();
        if let Some(tls) = &opts.redis.tls {
            common_env.push(("REDIS_CA_FILE".to_owned(), tls.ca.display().to_string()));
        }
        common_env.extend(redis_ha.iter().flat_map(RedisHa::env));
        common_env.extend(redis_cluster.iter().flat_map(|c| c.env(&redis)));
        if let Some(pki) = &pki {
            cp_env.insert("TLS_CERT_FILE".into(), pki.cert.display().to_string());
            cp_env.insert("TLS_KEY_FILE".into(), pki.key.display().to_string());
        }
        cp_env.extend(common_env.clone());
        cp_env.extend(opts.control_plane_env);
        let mut control_plane = Proc::start("caracal-control-plane", &cp_env, &dir);
        control_plane.wait_ready_with(&http, &format!("{cp_url}/ready"), Duration::from_secs(60)).await;

        let mut gw_env: BTreeMap<String, String> = [
            ("CARACAL_MODE", "dev".to_owned()),
            ("LISTEN_ADDR", format!("127.0.0.1:{gw_port}")),
            ("STS_URL", cp_url.clone()),
            ("REDIS_URL", redis.url()),
            ("GATEWAY_STS_HMAC_KEY", gateway_key.clone()),
            ("GATEWAY_THREADS", "2".to_owned()),
            ("DATABASE_URL", database_url.clone()),
            ("STREAMS_HMAC_KEY", streams_key.clone()),
            ("CARACAL_ADMIN_TOKEN", GATEWAY_ADMIN_TOKEN.to_owned()),
            // The recording upstream listens on loopback.
            ("ALLOW_PRIVATE_UPSTREAMS", "true".to_owned()),
            ("AUDIT_HMAC_KEY", audit_key.clone()),
            ("AUDIT_REPLAY_DIR", dir.join("audit-replay").display().to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        if let Some(pki) = &pki {
            gw_env.insert("STS_CA_FILE".into(), pki.ca.display().to_string());
        }
        gw_env.extend(common_env);
        gw_env.extend(opts.gateway_env);
        let mut gateway = Proc::start_with_args("caracal-gateway", &opts.gateway_args, &gw_env, &dir, "caracal-gateway");
        gateway.wait_ready(&format!("{gw_url}/ready"), Duration::from_secs(60)).await;

        Self {
            dir,
            database_url,
            redis,
            redis_ha,
            redis_cluster,
            control_plane,
            gateway,
            upstream,
            issuer: cp_url.clone(),
            cp_url,
            gw_url,
            streams_key,
            gateway_key,
            audit_key,
            bootstrap_token,
            http,
            pki,
            cp_env,
            gw_env,
        }
    }

    /// A second control plane on the same database and Redis (another instance behind a load
    /// balancer); returns it and its URL. `env` overrides settings.
    pub async fn second_control_plane(&self, env: &[(&str, &str)]) -> (Proc, String) {
        let port = free_port();
        let mut cp_env = self.cp_env.clone();
        cp_env.insert("LISTEN_ADDR".into(), format!("127.0.0.1:{port}"));
        for (k, v) in env {
            cp_env.insert((*k).to_owned(), (*v).to_owned());
        }
        let scheme = if self.pki.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://127.0.0.1:{port}");
        let mut p = Proc::start_with_args("caracal-control-plane", &[], &cp_env, &self.dir, "control-plane-2");
        p.wait_ready_with(&self.http, &format!("{url}/ready"), Duration::from_secs(60)).await;
        (p, url)
    }

    /// Revokes the session of the session mandate `session` (its authority record, by `sid`); the
    /// admin API's answer.
    pub async fn revoke_session(&self, d: &Demo, session: &str) -> Value {
        let sid = sid_of(session);
        self.admin_ok("POST", &format!("/v1/zones/{}/authority-records/{sid}/revoke", d.zone_id), &d.admin, None, 200).await
    }

    /// A second gateway on the same control plane, Redis and database (another instance behind a
    /// load balancer, its own audit spool), once it serves; returns it and its URL. `env` overrides
    /// settings.
    pub async fn second_gateway(&self, env: &[(&str, &str)]) -> (Proc, String) {
        let port = free_port();
        let mut gw_env = self.gw_env.clone();
        gw_env.insert("LISTEN_ADDR".into(), format!("127.0.0.1:{port}"));
        gw_env.insert("AUDIT_REPLAY_DIR".into(), self.dir.join(format!("audit-replay-{port}")).display().to_string());
        gw_env.extend(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        let url = format!("http://127.0.0.1:{port}");
        let mut p = Proc::start_with_args("caracal-gateway", &[], &gw_env, &self.dir, &format!("caracal-gateway-{port}"));
        // Serving (`/health`), not necessarily ready: a test may give it an STS it cannot reach.
        p.wait_ready(&format!("{url}/health"), Duration::from_secs(60)).await;
        (p, url)
    }

    /// `POST /oauth/2/token` with `form` on another control plane.
    pub async fn token_at(&self, base: &str, form: &[(&str, &str)]) -> Answer {
        Answer::read(self.http.post(format!("{base}/oauth/2/token")).form(form).send().await.unwrap()).await
    }

    /// Kills the control plane (STS down).
    pub fn stop_control_plane(&mut self) {
        self.control_plane.kill();
    }

    /// Starts the control plane again with the same settings.
    pub async fn restart_control_plane(&mut self) {
        self.control_plane.kill();
        self.control_plane = Proc::start("caracal-control-plane", &self.cp_env, &self.dir);
        // Pooled keep-alive connections point at the dead process: start with a fresh pool.
        self.http = http_client(self.pki.as_ref());
        self.control_plane.wait_ready_with(&self.http, &format!("{}/ready", self.cp_url), Duration::from_secs(60)).await;
    }

    /// Restarts the control plane with `env` added to (or overriding) its settings, which later
    /// restarts keep.
    pub async fn restart_control_plane_with(&mut self, env: &[(&str, &str)]) {
        for (k, v) in env {
            self.cp_env.insert((*k).to_owned(), (*v).to_owned());
        }
        self.restart_control_plane().await;
    }

    /// `POST /v1/bootstrap`; returns the first global admin token.
    pub async fn bootstrap(&self) -> String {
        let a =
            Answer::read(self.http.post(format!("{}/v1/bootstrap", self.cp_url)).bearer_auth(&self.bootstrap_token).send().await.unwrap())
                .await;
        assert_eq!(a.status, 201, "bootstrap: {}", a.text);
        a.body["token"].as_str().expect("token in bootstrap answer").to_owned()
    }

    /// An admin API call with a JSON body (or none).
    pub async fn admin(&self, method: &str, path: &str, token: &str, body: Option<Value>) -> Answer {
        let mut req = self.http.request(method.parse().unwrap(), format!("{}{path}", self.cp_url)).bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        Answer::read(req.send().await.unwrap()).await
    }

    /// Same as [`Stack::admin`] but asserts the status.
    pub async fn admin_ok(&self, method: &str, path: &str, token: &str, body: Option<Value>, status: u16) -> Value {
        let a = self.admin(method, path, token, body).await;
        assert_eq!(a.status, status, "{method} {path}: {}", a.text);
        a.body
    }

    /// A new admin token scoped to `zone_id`, created with `admin` (a global token).
    pub async fn zone_token(&self, admin: &str, zone_id: &str) -> String {
        let t = self
            .admin_ok("POST", "/v1/admin-tokens", admin, Some(json!({"name": "zone-token", "scope": "zone", "zone_id": zone_id})), 201)
            .await;
        t["token"].as_str().expect("the token is shown once").to_owned()
    }

    /// Creates a policy version from `rego` in `set` and activates it.
    pub async fn activate_policy(&self, d: &Demo, rego: &str) -> String {
        let z = &d.zone_id;
        let v = self
            .admin_ok(
                "POST",
                &format!("/v1/zones/{z}/policy-sets/{}/versions", d.policy_set_id),
                &d.admin,
                Some(json!({"rego": rego})),
                201,
            )
            .await;
        let version_id = v["id"].as_str().unwrap().to_owned();
        self.admin_ok(
            "POST",
            &format!("/v1/zones/{z}/policy-sets/{}/activate", d.policy_set_id),
            &d.admin,
            Some(json!({"version_id": version_id})),
            202,
        )
        .await;
        version_id
    }

    /// Bootstrap, zone, application, resource (upstream = the recording upstream), policy set; the
    /// allow policy is activated when `activate` is true.
    pub async fn demo(&self, activate: bool) -> Demo {
        let admin = self.bootstrap().await;
        let d = self.zone_for(admin, "e2e").await;
        if activate {
            self.activate_policy(&d, ALLOW_POLICY).await;
        }
        d
    }

    /// Another zone under the demo's global admin token, set up like [`Stack::demo`], with `rego`
    /// active.
    pub async fn another_zone(&self, d: &Demo, name: &str, rego: &str) -> Demo {
        let other = self.zone_for(d.admin.clone(), name).await;
        self.activate_policy(&other, rego).await;
        other
    }

    async fn zone_for(&self, admin: String, name: &str) -> Demo {
        let zone = self.admin_ok("POST", "/v1/zones", &admin, Some(json!({"name": name})), 201).await;
        let z = zone["id"].as_str().unwrap().to_owned();
        let app = self.admin_ok("POST", &format!("/v1/zones/{z}/applications"), &admin, Some(json!({"name": "agent"})), 201).await;
        let resource = "https://api.e2e.test/tools".to_owned();
        self.admin_ok(
            "POST",
            &format!("/v1/zones/{z}/resources"),
            &admin,
            Some(json!({
                "identifier": resource,
                "upstream_url": format!("{}/base", self.upstream.url()),
                "scopes": ["tools.read", "tools.write"],
                "operations": [
                    {"method": "GET", "path": "/items/**", "scope": "tools.read"},
                    {"method": "GET", "path": "/sse", "scope": "tools.read"},
                    {"method": "GET", "path": "/slow-body", "scope": "tools.read"},
                    {"method": "POST", "path": "/items", "scope": "tools.write"}
                ]
            })),
            201,
        )
        .await;
        let set = self.admin_ok("POST", &format!("/v1/zones/{z}/policy-sets"), &admin, Some(json!({"name": "main"})), 201).await;
        Demo {
            zone_id: z,
            app_id: app["id"].as_str().unwrap().to_owned(),
            secret: app["client_secret"].as_str().unwrap().to_owned(),
            resource,
            policy_set_id: set["id"].as_str().unwrap().to_owned(),
            admin,
        }
    }

    /// `POST /oauth/2/token` with `form`.
    pub async fn token(&self, form: &[(&str, &str)]) -> Answer {
        Answer::read(self.http.post(format!("{}/oauth/2/token", self.cp_url)).form(form).send().await.unwrap()).await
    }

    /// A session mandate for the demo application.
    pub async fn session(&self, d: &Demo) -> String {
        let a = self
            .token(&[("grant_type", GRANT), ("zone_id", &d.zone_id), ("application_id", &d.app_id), ("client_secret", &d.secret)])
            .await;
        assert_eq!(a.status, 200, "session mint: {}", a.text);
        a.body["access_token"].as_str().unwrap().to_owned()
    }

    /// Mints a gateway mandate for the demo resource from a session mandate (raw answer).
    pub async fn mint_gateway(&self, d: &Demo, session: &str, scope: &str) -> Answer {
        self.mint_gateway_for(d, session, &d.resource, scope).await
    }

    /// Mints a gateway mandate for `resource` from a session mandate (raw answer).
    pub async fn mint_gateway_for(&self, d: &Demo, session: &str, resource: &str, scope: &str) -> Answer {
        self.mint_gateway_with(d, session, resource, scope, &[]).await
    }

    /// [`Stack::mint_gateway_for`] with more form fields (e.g. `approval_id`).
    pub async fn mint_gateway_with(&self, d: &Demo, session: &str, resource: &str, scope: &str, extra: &[(&str, &str)]) -> Answer {
        let mut form = vec![
            ("grant_type", GRANT),
            ("zone_id", d.zone_id.as_str()),
            ("application_id", d.app_id.as_str()),
            ("client_secret", d.secret.as_str()),
            ("subject_token", session),
            ("subject_token_type", ACCESS_TOKEN),
            ("requested_token_type", GATEWAY_MANDATE),
            ("resource", resource),
            ("scope", scope),
        ];
        form.extend_from_slice(extra);
        self.token(&form).await
    }

    /// Adds a resource `identifier` → `upstream_url` (GET anything, scope `tools.read`).
    pub async fn add_resource(&self, d: &Demo, identifier: &str, upstream_url: &str) {
        self.admin_ok(
            "POST",
            &format!("/v1/zones/{}/resources", d.zone_id),
            &d.admin,
            Some(json!({
                "identifier": identifier,
                "upstream_url": upstream_url,
                "scopes": ["tools.read"],
                "operations": [{"method": "GET", "path": "/**", "scope": "tools.read"}]
            })),
            201,
        )
        .await;
    }

    /// A gateway mandate for `resource` with `scope`.
    pub async fn mandate_for(&self, d: &Demo, session: &str, resource: &str, scope: &str) -> String {
        let a = self.mint_gateway_for(d, session, resource, scope).await;
        assert_eq!(a.status, 200, "gateway mint for {resource}: {}", a.text);
        a.body["access_token"].as_str().unwrap().to_owned()
    }

    /// A gateway mandate for the demo resource with `scope`.
    pub async fn gateway_mandate(&self, d: &Demo, session: &str, scope: &str) -> String {
        self.mandate_for(d, session, &d.resource, scope).await
    }

    /// The exchange the gateway makes for a request (`GET /items/1` on `resource` with `mandate`),
    /// signed with the gateway's key, sent straight to the STS: what only the gateway can ask.
    pub async fn gateway_exchange(&self, d: &Demo, mandate: &str, resource: &str) -> Answer {
        let request_id = format!("e2e-{}", caracal_shared::b64::random_hex(8));
        // Keys in the gateway's (sorted) order; none of these values needs escaping.
        let body = format!(
            "application_id={}&gateway_request_id={request_id}&grant_type={GRANT}&request_method=GET&request_path=/items/1\
             &resource={resource}&subject_token={mandate}&subject_token_type={ACCESS_TOKEN}&zone_id={}",
            d.app_id, d.zone_id
        );
        let (ts, nonce) = (chrono::Utc::now().timestamp().to_string(), caracal_shared::b64::random_hex(32));
        let key = hex::decode(&self.gateway_key).unwrap();
        let signature = caracal_shared::sig::gateway_signature(&key, &ts, &nonce, "POST", "/oauth/2/token", body.as_bytes());
        let resp = self
            .http
            .post(format!("{}/oauth/2/token", self.cp_url))
            .header("content-type", "application/x-www-form-urlencoded")
            .header(caracal_shared::request_id::HEADER, &request_id)
            .header(caracal_shared::sig::GATEWAY_TIMESTAMP_HEADER, ts)
            .header(caracal_shared::sig::GATEWAY_NONCE_HEADER, nonce)
            .header(caracal_shared::sig::GATEWAY_SIGNATURE_HEADER, signature)
            .body(body)
            .send()
            .await
            .unwrap();
        Answer::read(resp).await
    }

    /// A request through the gateway.
    pub async fn call(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
        self.call_at(&self.gw_url, method, path, headers).await
    }

    /// A request through the gateway at `base` (e.g. [`Stack::second_gateway`]).
    pub async fn call_at(&self, base: &str, method: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
        let mut req = self.http.request(method.parse().unwrap(), format!("{base}{path}"));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        Answer::read(req.send().await.unwrap()).await
    }

    /// A governed call: bearer + resource header.
    pub async fn governed(&self, method: &str, path: &str, mandate: &str, resource: &str) -> Answer {
        self.governed_at(&self.gw_url, method, path, mandate, resource).await
    }

    /// [`Stack::governed`] through the gateway at `base`.
    pub async fn governed_at(&self, base: &str, method: &str, path: &str, mandate: &str, resource: &str) -> Answer {
        self.call_at(base, method, path, &[("authorization", &format!("Bearer {mandate}")), ("x-caracal-resource", resource)]).await
    }

    /// A request written byte for byte on a fresh connection (HTTP clients normalize paths such
    /// as `/a/%2e%2e/b` before sending, which would hide what the gateway must refuse).
    pub async fn raw(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
        self.raw_with_body(method, path, headers, b"").await
    }

    /// [`Stack::raw`] followed by `body` bytes as given (e.g. pre-encoded chunks).
    pub async fn raw_with_body(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = self.gw_url.trim_start_matches("http://");
        let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut req = format!("{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        conn.write_all(req.as_bytes()).await.unwrap();
        // The gateway may answer and close before reading everything; that is fine.
        let _ = conn.write_all(body).await;
        let mut raw = Vec::new();
        conn.read_to_end(&mut raw).await.unwrap();
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let mut hm = reqwest::header::HeaderMap::new();
        for line in head.lines().skip(1) {
            if let Some((k, v)) = line.split_once(':')
                && let (Ok(k), Ok(v)) = (reqwest::header::HeaderName::from_bytes(k.trim().as_bytes()), v.trim().parse())
            {
                hm.append(k, v);
            }
        }
        Answer { status, headers: hm, body: serde_json::from_str(body).unwrap_or(Value::Null), text: body.to_owned() }
    }

    /// The value of a gateway metric (0 when absent).
    pub async fn gateway_metric(&self, name: &str) -> f64 {
        self.gateway_metric_at(&self.gw_url, name).await
    }

    /// [`Stack::gateway_metric`] of the gateway at `base`.
    pub async fn gateway_metric_at(&self, base: &str, name: &str) -> f64 {
        metric(&self.http, &format!("{base}/metrics"), name).await
    }

    /// Waits until a gateway metric reaches `at_least`; how long that took.
    pub async fn wait_gateway_metric(&self, name: &str, at_least: f64, within: std::time::Duration) -> std::time::Duration {
        let start = std::time::Instant::now();
        loop {
            if self.gateway_metric(name).await >= at_least {
                return start.elapsed();
            }
            assert!(start.elapsed() < within, "{name} did not reach {at_least} within {within:?}:\n{}", self.gateway.log_tail(20));
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    /// Waits until a gateway metric equals `value`; how long that took.
    pub async fn wait_gateway_metric_eq(&self, name: &str, value: f64, within: std::time::Duration) -> std::time::Duration {
        let start = std::time::Instant::now();
        loop {
            if self.gateway_metric(name).await == value {
                return start.elapsed();
            }
            assert!(start.elapsed() < within, "{name} did not become {value} within {within:?}:\n{}", self.gateway.log_tail(20));
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// The value of a control-plane metric sample (full sample name incl. labels).
    pub async fn control_plane_metric(&self, sample: &str) -> f64 {
        metric(&self.http, &format!("{}/metrics", self.cp_url), sample).await
    }

    /// The zone's JWKS.
    pub async fn jwks(&self, zone_id: &str) -> Value {
        let r = self.http.get(format!("{}/.well-known/jwks.json?zone_id={zone_id}", self.cp_url)).send().await.unwrap();
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }
}

async fn metric(http: &reqwest::Client, url: &str, sample: &str) -> f64 {
    let text = http.get(url).send().await.unwrap().text().await.unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(sample).and_then(|rest| rest.strip_prefix(' ')).map(|v| v.trim().parse::<f64>().unwrap()))
        .unwrap_or(0.0)
}

impl Drop for Stack {
    /// Stops the binaries and drops the test's database, so repeated runs do not pile up state.
    fn drop(&mut self) {
        self.gateway.kill();
        self.control_plane.kill();
        let (admin, url) = (crate::infra::postgres_admin_url(), self.database_url.clone());
        let Some(name) = url.rsplit('/').next().map(str::to_owned) else { return };
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            rt.block_on(async {
                let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin).await.ok()?;
                sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))).execute(&mut conn).await.ok()
            })
        })
        .join();
    }
}
