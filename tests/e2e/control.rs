//! Control (`POST /v1/control/invoke`, seed 000 "Control boundary"): off unless enabled and
//! gated by a file, a fresh session mandate for the Control audience per invoke, limits that fail
//! closed, an allowlisted catalog dispatched to the admin API, and evidence before any change.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use caracal_e2e::Stack;
use caracal_e2e::stack::{Answer, Demo, GRANT};
use caracal_shared::audit::{AuditEvent, Frame};
use serde_json::{Value, json};

/// The default `CONTROL_AUDIENCE`, registered as a resource in the zone.
const AUDIENCE: &str = "caracal-control";

/// Every scope the catalog can ask for.
fn all_scopes() -> String {
    let commands = [
        "app",
        "resource",
        "identity-provider",
        "subject-issuer",
        "policy",
        "policy-set",
        "authority-record",
        "audit",
        "zone",
        "session",
        "delegation",
        "keys",
        "catalog",
    ];
    let mut out = Vec::new();
    for c in commands {
        for v in ["read", "write", "delete"] {
            out.push(format!("control:{c}:{v}"));
        }
    }
    out.join(" ")
}

struct Ctl {
    s: Stack,
    d: Demo,
    gate: PathBuf,
}

/// A stack whose control plane has Control enabled (gate file present), dispatching with a
/// zone-scoped admin token, and whose zone has the Control resource.
async fn control_stack(extra: &[(&str, &str)]) -> Ctl {
    let s = Stack::start().await;
    let d = s.demo(true).await;
    enable(s, d, extra).await
}

async fn enable(mut s: Stack, d: Demo, extra: &[(&str, &str)]) -> Ctl {
    let api = s
        .admin_ok("POST", "/v1/admin-tokens", &d.admin, Some(json!({"name": "control", "scope": "zone", "zone_id": d.zone_id})), 201)
        .await;
    let gate = s.dir.join("control.enabled");
    std::fs::write(&gate, b"").unwrap();
    let gate_str = gate.display().to_string();
    let mut env = vec![
        ("CARACAL_CONTROL_ENABLED", "true"),
        ("CONTROL_GATE_FILE", gate_str.as_str()),
        ("CONTROL_API_TOKEN", api["token"].as_str().unwrap()),
    ];
    env.extend_from_slice(extra);
    s.restart_control_plane_with(&env).await;
    s.admin_ok(
        "POST",
        &format!("/v1/zones/{}/resources", d.zone_id),
        &d.admin,
        Some(json!({
            "identifier": AUDIENCE,
            "upstream_url": "http://127.0.0.1:9/unused",
            "scopes": all_scopes().split(' ').collect::<Vec<_>>(),
            "credential_mode": "none",
        })),
        201,
    )
    .await;
    Ctl { s, d, gate }
}

impl Ctl {
    /// Mints a control token (a session mandate for the audience) with `scope`.
    async fn token_with(&self, scope: &str, ttl: Option<&str>) -> String {
        let d = &self.d;
        let mut form = vec![("grant_type", GRANT), ("zone_id", &d.zone_id), ("application_id", &d.app_id), ("client_secret", &d.secret)];
        form.extend([("resource", AUDIENCE), ("scope", scope)]);
        if let Some(t) = ttl {
            form.push(("ttl_seconds", t));
        }
        let a = self.s.token(&form).await;
        assert_eq!(a.status, 200, "control token mint: {}", a.text);
        a.body["access_token"].as_str().unwrap().to_owned()
    }

    async fn token(&self) -> String {
        self.token_with(&all_scopes(), None).await
    }

    async fn invoke(&self, bearer: Option<&str>, body: Value) -> Answer {
        let mut req = self.s.http.post(format!("{}/v1/control/invoke", self.s.cp_url)).json(&body);
        if let Some(b) = bearer {
            req = req.bearer_auth(b);
        }
        Answer::read(req.send().await.unwrap()).await
    }

    /// Invokes with a fresh full-scope token.
    async fn run(&self, body: Value) -> Answer {
        let t = self.token().await;
        self.invoke(Some(&t), body).await
    }

    async fn metric(&self, code: &str, outcome: &str) -> f64 {
        self.s.control_plane_metric(&format!("caracal_control_invocations_total{{code=\"{code}\",outcome=\"{outcome}\"}}")).await
    }
}

async fn expect_401(c: &Ctl, bearer: Option<&str>, what: &str, count: &mut f64) {
    let a = c.invoke(bearer, list()).await;
    assert_refused(&a, 401, "unauthorized", what);
    *count += 1.0;
}

fn code(a: &Answer) -> &str {
    a.body["error"]["code"].as_str().unwrap_or("")
}

fn assert_refused(a: &Answer, status: u16, expected: &str, what: &str) {
    assert_eq!((a.status, code(a)), (status, expected), "{what}: {}", a.text);
    assert_eq!(a.body["ok"], false, "{what}: the envelope says ok:false");
}

fn list() -> Value {
    json!({"command": "resource", "subcommand": "list"})
}

#[tokio::test]
async fn control_is_absent_unless_enabled_and_follows_its_gate_file() {
    let s = Stack::start().await;
    let d = s.demo(true).await;
    let absent = Answer::read(s.http.post(format!("{}/v1/control/invoke", s.cp_url)).json(&list()).send().await.unwrap()).await;
    assert_eq!(absent.status, 404, "not mounted unless CARACAL_CONTROL_ENABLED=true: {}", absent.text);

    let c = enable(s, d, &[]).await;
    std::fs::remove_file(&c.gate).unwrap();
    let closed = c.run(list()).await;
    assert_refused(&closed, 503, "control_disabled", "gate file missing");
    assert_eq!(c.metric("control_disabled", "deny").await, 1.0);

    std::fs::write(&c.gate, b"").unwrap();
    let open = c.run(list()).await;
    assert_eq!(open.status, 200, "creating the gate file opens Control without a restart: {}", open.text);
    assert_eq!(open.body["ok"], true);

    std::fs::remove_file(&c.gate).unwrap();
    assert_refused(&c.run(list()).await, 503, "control_disabled", "deleting it closes Control again");
}

#[tokio::test]
async fn control_refuses_bearers_that_are_not_fresh_control_mandates() {
    let c = control_stack(&[]).await;
    let (s, d) = (&c.s, &c.d);
    let mut refused = 0.0;
    for (bearer, what) in
        [(None, "missing bearer"), (Some("not-a-jwt"), "garbage bearer"), (Some("eyJhbGciOiJIUzI1NiJ9.e30.c2ln"), "HS256 bearer")]
    {
        expect_401(&c, bearer, what, &mut refused).await;
    }

    let plain_session = s.session(d).await;
    expect_401(&c, Some(&plain_session), "a session mandate without the Control audience in target", &mut refused).await;
    let other_resource = c.token_for_resource(&d.resource, "tools.read").await;
    expect_401(&c, Some(&other_resource), "a session mandate for another resource", &mut refused).await;

    let control_session = c.token().await;
    let gateway = s.mint_gateway_for(d, &control_session, AUDIENCE, "control:resource:read").await;
    assert_eq!(gateway.status, 200, "{}", gateway.text);
    expect_401(&c, Some(gateway.body["access_token"].as_str().unwrap()), "a gateway mandate (token confusion)", &mut refused).await;

    let signed = c.token().await;
    let (h, p, sig) = split(&signed);
    let mut claims: Value = serde_json::from_slice(&b64(p)).unwrap();
    claims["scope"] = "control:keys:write".into();
    let tampered = format!("{h}.{}.{sig}", enc(&claims));
    expect_401(&c, Some(&tampered), "claims changed after signing", &mut refused).await;

    let foreign = other_zone_session(s, d).await;
    let (fh, _, fsig) = split(&foreign);
    let mine = c.token().await;
    let (_, mp, _) = split(&mine);
    expect_401(&c, Some(&format!("{fh}.{mp}.{fsig}")), "signed with another zone's key", &mut refused).await;

    let short = c.token_with(&all_scopes(), Some("1")).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let expired = c.invoke(Some(&short), list()).await;
    assert_refused(&expired, 401, "unauthorized", "expired token");
    assert_eq!(expired.body["error"]["reason"], "token expired");
    refused += 1.0;

    let revoked = c.token().await;
    let sid = claims_of(&revoked)["sid"].as_str().unwrap().to_owned();
    s.admin_ok("POST", &format!("/v1/zones/{}/authority-records/{sid}/revoke", d.zone_id), &d.admin, None, 200).await;
    let a = c.invoke(Some(&revoked), list()).await;
    assert_refused(&a, 401, "unauthorized", "revoked session");
    refused += 1.0;

    assert_eq!(c.metric("unauthorized", "deny").await, refused, "every refusal is counted");
    assert_eq!(c.run(list()).await.status, 200, "a fresh control token still works");
}

#[tokio::test]
async fn control_tokens_are_single_use() {
    let c = control_stack(&[]).await;
    let t = c.token().await;
    assert_eq!(c.invoke(Some(&t), list()).await.status, 200);
    let again = c.invoke(Some(&t), list()).await;
    assert_refused(&again, 401, "token_replay", "the same token twice");
    assert!(again.body["error"]["remediation"].is_string());
    assert_eq!(c.metric("token_replay", "deny").await, 1.0);
}

#[tokio::test]
async fn control_enforces_scopes_the_catalog_and_flag_limits() {
    let c = control_stack(&[]).await;
    let read_only = c.token_with("control:resource:read", None).await;
    let create = json!({"command": "resource", "subcommand": "create", "flags": {"identifier": "https://denied.test", "upstream_url": "http://127.0.0.1:9", "scopes": ["a"]}});
    let denied = c.invoke(Some(&read_only), create).await;
    assert_refused(&denied, 403, "denied", "a read-only token cannot create");
    assert!(denied.body["error"]["reason"].as_str().unwrap().contains("control:resource:write"), "{}", denied.text);
    assert_eq!(c.metric("denied", "deny").await, 1.0);

    for (body, what) in [
        (json!({"command": "sh", "subcommand": "-c", "flags": {"0": "id"}}), "a shell"),
        (json!({"command": "bash", "subcommand": "-lc"}), "another shell"),
        (json!({"command": "resource", "subcommand": "exec"}), "an unknown subcommand"),
        (json!({"command": "zone", "subcommand": "delete"}), "an unknown command"),
    ] {
        assert_refused(&c.run(body).await, 501, "unsupported", what);
    }
    assert_eq!(c.metric("unsupported", "deny").await, 4.0);

    let many: serde_json::Map<String, Value> = (0..33).map(|i| (format!("f{i}"), json!(i))).collect();
    for (flags, what) in [
        (json!({"spec": {"nested": true}}), "a nested object"),
        (Value::Object(many), "33 flags"),
        (json!({"list": [[1]]}), "a nested array"),
        (json!({"id": "../../admin-tokens"}), "a path-traversing id"),
        (json!({}), "a missing id"),
    ] {
        let a = c.run(json!({"command": "resource", "subcommand": "get", "flags": flags})).await;
        assert_refused(&a, 400, "invalid", what);
    }
    let other_zone = c.run(json!({"command": "resource", "subcommand": "list", "flags": {"zone_id": "another-zone"}})).await;
    assert_refused(&other_zone, 409, "zone_mismatch", "a zone_id flag naming another zone");
    let missing = c.run(json!({"command": "resource", "subcommand": "get", "flags": {"id": "no-such-resource"}})).await;
    assert_refused(&missing, 404, "not_found", "the admin API's 404");
    let huge = c.run(json!({"command": "resource", "subcommand": "list", "flags": {"x": "y".repeat(300 * 1024)}})).await;
    assert_refused(&huge, 413, "payload_too_large", "a body over 256 KiB");
    assert_eq!(c.metric("invalid", "deny").await, 5.0);
    assert_eq!(c.metric("zone_mismatch", "deny").await, 1.0);
    assert_eq!(c.metric("payload_too_large", "deny").await, 1.0);
    assert_eq!(c.metric("not_found", "failed").await, 1.0, "the admin API's refusals count as failed dispatches");
}

#[tokio::test]
async fn control_rate_limits_per_subject_and_per_address() {
    let c = control_stack(&[("CONTROL_RATE_CAPACITY", "3"), ("CONTROL_INVOKE_IP_RATE_LIMIT_PER_MIN", "5")]).await;
    let mut tokens = Vec::new();
    for _ in 0..4 {
        tokens.push(c.token().await);
    }
    // The per-address counter is per wall-clock minute: keep the six calls inside one.
    let sec = chrono::Utc::now().timestamp() % 60;
    if sec > 50 {
        tokio::time::sleep(Duration::from_secs((61 - sec) as u64)).await;
    }
    for t in &tokens[..3] {
        assert_eq!(c.invoke(Some(t), list()).await.status, 200, "within the subject's bucket");
    }
    let over = c.invoke(Some(&tokens[3]), list()).await;
    assert_refused(&over, 429, "rate_limited", "fourth invoke of a bucket of three");
    let retry: u64 = over.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=20).contains(&retry), "one token per 20 s: {retry}");
    assert_refused(&c.invoke(Some("garbage"), list()).await, 401, "unauthorized", "fifth call of the minute reaches auth");
    assert_refused(&c.invoke(Some("garbage"), list()).await, 429, "rate_limited", "sixth call is limited before auth");
    assert_eq!(c.metric("rate_limited", "deny").await, 2.0);
}

#[tokio::test]
async fn control_fails_closed_without_redis() {
    let mut c = control_stack(&[]).await;
    let t = c.token().await;
    c.s.redis.stop();
    let create = json!({"command": "resource", "subcommand": "create", "flags": {"identifier": "https://no-redis.test", "upstream_url": "http://127.0.0.1:9", "scopes": ["a"]}});
    let a = c.invoke(Some(&t), create).await;
    assert!(matches!(a.status, 429 | 401), "Redis down must refuse (limits, replay), got {}: {}", a.status, a.text);
    assert_eq!(a.body["ok"], false);
    assert_eq!(c.metric(code(&a), "deny").await, 1.0);
    c.s.redis.restart();
    let items = c.s.admin_ok("GET", &format!("/v1/zones/{}/resources", c.d.zone_id), &c.d.admin, None, 200).await;
    assert!(!items.to_string().contains("no-redis.test"), "nothing was created");
}

#[tokio::test]
async fn control_dispatches_to_the_admin_api_and_leaves_signed_evidence() {
    let c = control_stack(&[]).await;
    let (s, d) = (&c.s, &c.d);
    let listed = c.run(list()).await;
    assert_eq!(listed.status, 200, "{}", listed.text);
    let identifiers: Vec<&str> =
        listed.body["result"]["items"].as_array().unwrap().iter().filter_map(|r| r["identifier"].as_str()).collect();
    assert!(identifiers.contains(&d.resource.as_str()), "{identifiers:?}");

    let upstream_secret = "http://127.0.0.1:9/flag-value-never-audited";
    let t = c.token().await;
    let created = c
        .invoke(
            Some(&t),
            json!({
                "command": "resource", "subcommand": "create", "authorized_by": "ana@example.com",
                "flags": {"identifier": "https://made-by-control.test", "upstream_url": upstream_secret, "scopes": ["x.read"], "credential_mode": "none"},
            }),
        )
        .await;
    assert_eq!(created.status, 200, "{}", created.text);
    let id = created.body["result"]["id"].as_str().unwrap();
    let row = s.admin_ok("GET", &format!("/v1/zones/{}/resources/{id}", d.zone_id), &d.admin, None, 200).await;
    assert_eq!(row["identifier"], "https://made-by-control.test", "the admin API really has it");

    assert_refused(&c.invoke(Some(&t), list()).await, 401, "token_replay", "a deny to find in the ledger");
    assert_eq!(c.metric("ok", "ok").await, 2.0);

    let key = hex::decode(&s.audit_key).unwrap();
    let events = wait_for_frames(&s.redis.url(), 3).await;
    for f in &events {
        assert!(f.verify(&key), "every Control frame is signed with AUDIT_HMAC_KEY");
        assert!(!f.data.contains(&t), "no token in evidence");
        assert!(!f.data.contains(upstream_secret), "no flag value in evidence");
    }
    let parsed: Vec<AuditEvent> = events.iter().map(|f| serde_json::from_str(&f.data).unwrap()).collect();
    let jti = claims_of(&t)["jti"].as_str().unwrap().to_owned();
    let allow = parsed
        .iter()
        .find(|e| e.decision == "allow" && e.metadata_json["subcommand"] == "create")
        .expect("the create's allow is on the stream");
    assert_eq!((allow.event_type.as_str(), allow.zone_id.as_str()), ("control.invoke", d.zone_id.as_str()));
    assert_eq!(allow.metadata_json["command"], "resource");
    assert_eq!(allow.metadata_json["subject"], d.app_id.as_str());
    assert_eq!(allow.metadata_json["client_id"], d.app_id.as_str());
    assert_eq!(allow.metadata_json["jti"], jti.as_str());
    assert_eq!(allow.metadata_json["authorized_by"], "ana@example.com");
    let deny = parsed.iter().find(|e| e.decision == "deny").expect("the replay's deny is on the stream");
    assert_eq!(deny.metadata_json["code"], "token_replay");
    assert_eq!(deny.metadata_json["jti"], jti.as_str());
}

#[tokio::test]
async fn control_records_the_allow_before_anything_changes() {
    let c = control_stack(&[]).await;
    let (s, d) = (&c.s, &c.d);
    // Both places evidence can go refuse it: the stream key has the wrong type, and the outbox
    // refuses audit rows.
    let mut redis = redis::Client::open(s.redis.url()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("SET").arg("caracal.audit.events").arg("not a stream").query_async(&mut redis).await.unwrap();
    let mut db = <sqlx::PgConnection as sqlx::Connection>::connect(&s.database_url).await.unwrap();
    for sql in [
        "CREATE FUNCTION refuse_audit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
           IF NEW.stream = 'caracal.audit.events' THEN RAISE EXCEPTION 'audit refused by the test'; END IF; RETURN NEW; END $$",
        "CREATE TRIGGER refuse_audit BEFORE INSERT ON outbox FOR EACH ROW EXECUTE FUNCTION refuse_audit()",
    ] {
        sqlx::query(sql).execute(&mut db).await.unwrap();
    }
    let create = |host: &str| json!({"command": "resource", "subcommand": "create", "flags": {"identifier": format!("https://{host}"), "upstream_url": "http://127.0.0.1:9", "scopes": ["a"]}});
    let a = c.run(create("unaudited.test")).await;
    assert_refused(&a, 500, "audit_unavailable", "no evidence, no change");
    let items = s.admin_ok("GET", &format!("/v1/zones/{}/resources", d.zone_id), &d.admin, None, 200).await;
    assert!(!items.to_string().contains("unaudited.test"), "the resource was not created");
    assert_eq!(s.control_plane_metric("caracal_control_audit_failures_total{decision=\"allow\"}").await, 1.0);
    assert_eq!(c.metric("audit_unavailable", "deny").await, 1.0);

    // With the outbox back, evidence waits there while the stream refuses it.
    sqlx::query("DROP TRIGGER refuse_audit ON outbox").execute(&mut db).await.unwrap();
    let b = c.run(create("outboxed.test")).await;
    assert_eq!(b.status, 200, "{}", b.text);
    let (queued,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM outbox WHERE stream = 'caracal.audit.events' AND fields->>'data' LIKE '%\"allow\"%'")
            .fetch_one(&mut db)
            .await
            .unwrap();
    assert!(queued >= 1, "the allow is in the outbox");
}

#[tokio::test]
async fn control_edits_a_pool_one_endpoint_at_a_time() {
    let c = control_stack(&[]).await;
    let (s, d) = (&c.s, &c.d);
    let r = s
        .admin_ok(
            "POST",
            &format!("/v1/zones/{}/resources", d.zone_id),
            &d.admin,
            Some(json!({"identifier": "https://pool-by-control.test", "endpoints": [{"url": "http://a.test:1/"}], "scopes": ["x.read"]})),
            201,
        )
        .await;
    let id = r["id"].as_str().unwrap();
    let run = |sub: &'static str, flags: Value| c.run(json!({"command": "resource", "subcommand": sub, "flags": flags}));
    let added = run("endpoint-add", json!({"id": id, "url": "http://b.test:2/", "weight": 3})).await;
    assert_eq!(added.status, 200, "{}", added.text);
    let drained = run("endpoint-patch", json!({"id": id, "n": 1, "drain": true})).await;
    assert_eq!(drained.status, 200, "{}", drained.text);
    let listed = run("endpoints", json!({"id": id})).await;
    assert_eq!(listed.status, 200, "{}", listed.text);
    assert_eq!(
        listed.body["result"]["endpoints"],
        json!([{"index": 0, "url": "http://a.test:1/", "weight": 1, "drain": false}, {"index": 1, "url": "http://b.test:2/", "weight": 3, "drain": true}])
    );
    let removed = run("endpoint-remove", json!({"id": id, "n": 1})).await;
    assert_eq!(removed.status, 200, "{}", removed.text);
    let row = s.admin_ok("GET", &format!("/v1/zones/{}/resources/{id}", d.zone_id), &d.admin, None, 200).await;
    assert_eq!(row["endpoints"], json!([{"url": "http://a.test:1/", "weight": 1}]), "the admin API really has it");
    let last = run("endpoint-remove", json!({"id": id, "n": 0})).await;
    assert_refused(&last, 400, "invalid", "the last endpoint stays");
}

#[tokio::test]
async fn control_catalog_routes_all_exist() {
    let c = control_stack(&[]).await;
    let described = c.run(json!({"command": "catalog", "subcommand": "describe"})).await;
    assert_eq!(described.status, 200, "{}", described.text);
    let ops = described.body["result"]["commands"].as_array().unwrap().clone();
    assert!(ops.len() > 20, "{}", described.text);
    for op in ops.iter().filter(|o| o["route"].is_string()) {
        let flags: serde_json::Map<String, Value> =
            op["path_flags"].as_array().unwrap().iter().map(|p| (p.as_str().unwrap().to_owned(), json!("no-such-id"))).collect();
        let a = c.run(json!({"command": op["command"], "subcommand": op["subcommand"], "flags": flags})).await;
        assert!(
            a.status < 500,
            "{} {} must reach a real admin route (an absent route is 502 upstream): {} {}",
            op["command"],
            op["subcommand"],
            a.status,
            a.text
        );
        assert_ne!(code(&a), "unsupported", "{op}");
    }
}

/// The management surface through Control (issue 14 item 5): documents travel as JSON text in a
/// flat flag, and a control key cannot widen its own authority — no `control:` traits given, no
/// control key changed, rotated or archived, the Control resource not reshaped — while an
/// administrator still can.
#[tokio::test]
async fn control_covers_the_management_surface_and_keeps_control_keys_out_of_reach() {
    let c = control_stack(&[]).await;
    let (s, d) = (&c.s, &c.d);
    let z = &d.zone_id;
    let run =
        |command: &'static str, sub: &'static str, flags: Value| c.run(json!({"command": command, "subcommand": sub, "flags": flags}));
    let ok = |a: &Answer, what: &str| {
        assert_eq!(a.status, 200, "{what}: {}", a.text);
        a.body["result"].clone()
    };

    let provider = ok(
        &run(
            "identity-provider",
            "create",
            json!({"name": "via-control", "kind": "api_key", "config_json": r#"{"header": "X-Api-Key", "api_key": "secret-from-control"}"#}),
        )
        .await,
        "provider create with config_json as JSON text",
    );
    assert_eq!(provider["secret_config_keys"], json!(["api_key"]), "{provider}");
    assert!(!provider.to_string().contains("secret-from-control"), "{provider}");
    let pid = provider["id"].as_str().unwrap();
    let listed = ok(&run("identity-provider", "list", json!({})).await, "provider list");
    assert!(listed.to_string().contains(pid), "{listed}");
    let resource = ok(
        &run(
            "resource",
            "create",
            json!({"identifier": "https://provided.test", "upstream_url": "http://127.0.0.1:9/", "scopes": ["x.read"],
                   "credential_provider_id": pid, "operations": r#"[{"method": "GET", "path": "/x", "scope": "x.read"}]"#}),
        )
        .await,
        "resource create with operations as JSON text",
    );
    assert_eq!((resource["credential_provider_id"].as_str(), resource["operations"][0]["path"].as_str()), (Some(pid), Some("/x")));
    assert_refused(
        &run("identity-provider", "create", json!({"kind": "api_key", "config_json": "{oops"})).await,
        400,
        "invalid",
        "a document flag that is not JSON",
    );

    let policy =
        ok(&run("policy", "create", json!({"name": "from-control", "content": caracal_e2e::stack::ALLOW_POLICY})).await, "policy create");
    assert!(policy["id"].is_string(), "{policy}");
    let valid = ok(&run("policy", "validate", json!({"content": "package other"})).await, "validate");
    assert_eq!(valid["valid"], false, "validate finds a policy outside the contract: {valid}");
    let set = &d.policy_set_id;
    let version = s
        .admin_ok(
            "POST",
            &format!("/v1/zones/{z}/policy-sets/{set}/versions"),
            &d.admin,
            Some(json!({"rego": caracal_e2e::stack::DENY_POLICY})),
            201,
        )
        .await;
    let input = json!({"principal": {"type": "Application", "id": d.app_id, "zone_id": z, "traits": []},
                       "resource": {"identifier": d.resource, "scopes": ["tools.read"]}, "action": {"id": "TokenExchange", "use": "gateway"},
                       "context": {"requested_scopes": ["tools.read"]}});
    let simulated = ok(
        &run("policy-set", "simulate", json!({"id": set, "version_id": version["version_id"], "input": input.to_string()})).await,
        "simulate with input as JSON text",
    );
    assert_eq!(simulated["result"]["decision"], "deny", "{simulated}");
    let status = ok(&run("policy-set", "activation-status", json!({"id": set})).await, "activation status");
    assert_eq!(status["active"], true, "the demo set stays active: {status}");
    let dcr = ok(&run("zone", "dcr-status", json!({})).await, "dcr status");
    assert_eq!(dcr["dcr_enabled"], false, "{dcr}");
    // What Control changed is evidenced as any admin change, marked as Control's (filed by the
    // ledger shortly after).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let admin_audit = ok(&run("audit", "admin", json!({})).await, "admin audit");
        let filed = admin_audit["items"].as_array().unwrap().iter().any(|i| {
            let m = &i["event"]["metadata_json"];
            m["route"] == "/v1/zones/{zone_id}/providers" && m["via"] == "control" && m["status"] == 201
        });
        if filed {
            break;
        }
        assert!(Instant::now() < deadline, "the provider created through Control is in the admin audit: {admin_audit}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    ok(&run("session", "list", json!({})).await, "session list");

    // A control key cannot widen its own authority through Control.
    let key = s
        .admin_ok("POST", &format!("/v1/zones/{z}/applications"), &d.admin, Some(json!({"name": "ck", "traits": ["control:invoke"]})), 201)
        .await;
    let key_id = key["id"].as_str().unwrap();
    let plain = ok(&run("app", "create", json!({"name": "plain"})).await, "a plain application");
    let plain_id = plain["id"].as_str().unwrap();
    let refusals = [
        ("app", "create", json!({"name": "escalate", "traits": ["control:invoke"]}), "control_trait_forbidden"),
        ("app", "patch", json!({"id": plain_id, "traits": ["control:scope:control:keys:write"]}), "control_trait_forbidden"),
        ("app", "patch", json!({"id": key_id, "name": "renamed"}), "control_key_protected"),
        ("app", "rotate-secret", json!({"id": key_id}), "control_key_protected"),
        ("app", "delete", json!({"id": key_id}), "control_key_protected"),
    ];
    for (command, sub, flags, expected) in refusals {
        let a = run(command, sub, flags.clone()).await;
        assert_refused(&a, 403, "denied", &format!("{command} {sub} {flags}"));
        assert!(a.text.contains(expected), "{command} {sub}: {expected} expected: {}", a.text);
    }
    let control_resource = s.admin_ok("GET", &format!("/v1/zones/{z}/resources"), &d.admin, None, 200).await["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["identifier"] == AUDIENCE)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for (sub, flags) in [
        ("patch", json!({"id": control_resource, "scopes": ["control:keys:write"]})),
        ("endpoint-add", json!({"id": control_resource, "url": "http://127.0.0.1:10/"})),
        ("delete", json!({"id": control_resource})),
    ] {
        let a = run("resource", sub, flags).await;
        assert_refused(&a, 403, "denied", &format!("resource {sub} on the Control resource"));
        assert!(a.text.contains("protected_resource"), "{}", a.text);
    }
    let renamed = ok(&run("app", "rotate-secret", json!({"id": plain_id})).await, "a plain application's secret rotates");
    assert!(renamed["client_secret"].is_string());
    let row = s.admin_ok("GET", &format!("/v1/zones/{z}/applications/{key_id}"), &d.admin, None, 200).await;
    assert_eq!((row["name"].as_str(), row["archived_at"].is_null()), (Some("ck"), true), "the control key is untouched");
    // The administrator still can.
    s.admin_ok("PATCH", &format!("/v1/zones/{z}/applications/{plain_id}"), &d.admin, Some(json!({"traits": ["control:invoke"]})), 200)
        .await;
    s.admin_ok("PATCH", &format!("/v1/zones/{z}/applications/{key_id}"), &d.admin, Some(json!({"name": "renamed"})), 200).await;
}

// --- helpers ---

impl Ctl {
    /// A session mandate for another resource, with `scope`.
    async fn token_for_resource(&self, resource: &str, scope: &str) -> String {
        let d = &self.d;
        let a = self
            .s
            .token(&[
                ("grant_type", GRANT),
                ("zone_id", &d.zone_id),
                ("application_id", &d.app_id),
                ("client_secret", &d.secret),
                ("resource", resource),
                ("scope", scope),
            ])
            .await;
        assert_eq!(a.status, 200, "{}", a.text);
        a.body["access_token"].as_str().unwrap().to_owned()
    }
}

/// A session mandate of an application in a second zone (signed with that zone's key).
async fn other_zone_session(s: &Stack, d: &Demo) -> String {
    let z = s.admin_ok("POST", "/v1/zones", &d.admin, Some(json!({"name": "elsewhere"})), 201).await;
    let z = z["id"].as_str().unwrap();
    let app = s.admin_ok("POST", &format!("/v1/zones/{z}/applications"), &d.admin, Some(json!({"name": "other"})), 201).await;
    let set = s.admin_ok("POST", &format!("/v1/zones/{z}/policy-sets"), &d.admin, Some(json!({"name": "main"})), 201).await;
    let other = Demo {
        zone_id: z.to_owned(),
        app_id: app["id"].as_str().unwrap().to_owned(),
        secret: app["client_secret"].as_str().unwrap().to_owned(),
        resource: d.resource.clone(),
        policy_set_id: set["id"].as_str().unwrap().to_owned(),
        admin: d.admin.clone(),
    };
    s.activate_policy(&other, caracal_e2e::stack::ALLOW_POLICY).await;
    s.session(&other).await
}

fn split(token: &str) -> (&str, &str, &str) {
    let mut it = token.split('.');
    (it.next().unwrap(), it.next().unwrap(), it.next().unwrap())
}

fn b64(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s).unwrap()
}

fn enc(v: &Value) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

fn claims_of(token: &str) -> Value {
    serde_json::from_slice(&b64(split(token).1)).unwrap()
}

/// Control frames on `caracal.audit.events`, waiting until at least `n` are there.
async fn wait_for_frames(redis_url: &str, n: usize) -> Vec<Frame> {
    let mut conn = redis::Client::open(redis_url).unwrap().get_multiplexed_async_connection().await.unwrap();
    let start = Instant::now();
    loop {
        let reply: redis::streams::StreamRangeReply =
            redis::cmd("XRANGE").arg("caracal.audit.events").arg("-").arg("+").query_async(&mut conn).await.unwrap();
        let frames: Vec<Frame> = reply
            .ids
            .into_iter()
            .map(|e| {
                let get = |k: &str| e.map.get(k).map(|v| redis::from_redis_value::<String>(v.clone()).unwrap());
                Frame { id: get("id").unwrap(), data: get("data").unwrap(), sig: get("sig") }
            })
            .filter(|f| f.data.contains("\"control.invoke\""))
            .collect();
        if frames.len() >= n || start.elapsed() > Duration::from_secs(5) {
            return frames;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Invokes refused before the token is verified file no evidence (nothing in `_global`): they
/// are counted. Refusals of a verified caller are still filed, in its zone.
#[tokio::test]
async fn control_files_no_evidence_for_callers_it_could_not_authenticate() {
    let c = control_stack(&[]).await;
    let (s, d) = (&c.s, &c.d);
    for bearer in [None, Some("not.a.token"), Some("cat_bogus")] {
        for _ in 0..5 {
            assert_refused(&c.invoke(bearer, list()).await, 401, "unauthorized", "no verified token");
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await; // background deny deliveries, if any, are out
    let t = c.token().await;
    assert_eq!(c.invoke(Some(&t), list()).await.status, 200);
    assert_refused(&c.invoke(Some(&t), list()).await, 401, "token_replay", "a verified caller's refusal");
    let db = sqlx::PgPool::connect(&s.database_url).await.unwrap();
    let start = Instant::now();
    loop {
        let filed: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_events WHERE zone_id = $1 AND event_type = 'control.invoke'")
            .bind(&d.zone_id)
            .fetch_one(&db)
            .await
            .unwrap();
        if filed == 2 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "the verified caller's allow and deny are filed ({filed} of 2)");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let global: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_events WHERE zone_id = '_global' AND event_type = 'control.invoke'")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(global, 0, "unauthenticated invokes wrote no rows");
    assert_eq!(s.control_plane_metric("caracal_unauthenticated_requests_total{surface=\"control\"}").await, 15.0);
}

/// The published `ControlClient` (`caracalai-admin`) mints without a `zone_id`, as the original
/// allowed a control key (an application with the trait `control:invoke`) to: the STS derives the
/// zone from the application. Any other zone-less mint is `invalid_client`, like a wrong secret.
#[tokio::test]
async fn the_published_control_client_mints_without_a_zone_and_invokes() {
    let c = control_stack(&[]).await;
    let (s, d) = (&c.s, &c.d);
    let key = s
        .admin_ok(
            "POST",
            &format!("/v1/zones/{}/applications", d.zone_id),
            &d.admin,
            Some(json!({"name": "control-key", "traits": ["control:invoke"]})),
            201,
        )
        .await;
    let (key_id, key_secret) = (key["id"].as_str().unwrap(), key["client_secret"].as_str().unwrap());
    let zoneless = |app: &str, secret: &str| {
        vec![
            ("grant_type".to_owned(), GRANT.to_owned()),
            ("application_id".to_owned(), app.to_owned()),
            ("client_secret".to_owned(), secret.to_owned()),
            ("resource".to_owned(), AUDIENCE.to_owned()),
            ("scope".to_owned(), "control:resource:read".to_owned()),
        ]
    };
    let mint = |form: Vec<(String, String)>| async move {
        Answer::read(s.http.post(format!("{}/oauth/2/token", s.cp_url)).form(&form).send().await.unwrap()).await
    };
    let ok = mint(zoneless(key_id, key_secret)).await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    let claims = jsonwebtoken::dangerous::insecure_decode::<Value>(ok.body["access_token"].as_str().unwrap()).unwrap().claims;
    assert_eq!(claims["zone_id"], d.zone_id.as_str(), "the zone is the control key's");
    for (app, secret, what) in
        [(key_id, "cs_wrong", "a wrong secret"), (d.app_id.as_str(), d.secret.as_str(), "an application without control:invoke")]
    {
        let a = mint(zoneless(app, secret)).await;
        assert_eq!((a.status, a.error()), (401, "access_denied"), "{what}: {}", a.text);
    }

    let python = std::env::var("CARACAL_SDK_PYTHON").expect("CARACAL_SDK_PYTHON (deploy/local/test.sh installs the published clients)");
    let script = r#"
import json, os
from caracalai_admin import ControlClient
c = ControlClient(sts_url=os.environ["CP"], control_url=os.environ["CP"], audience=os.environ["AUD"],
                  application_id=os.environ["APP"], client_secret=os.environ["SECRET"])
print(json.dumps(c.invoke("resource", "list", {}, ["control:resource:read"])))
"#;
    let out = tokio::process::Command::new(&python)
        .args(["-c", script])
        .env("CP", &s.cp_url)
        .env("AUD", AUDIENCE)
        .env("APP", key_id)
        .env("SECRET", key_secret)
        .output()
        .await
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the published ControlClient failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains(&d.resource), "the zone's resources, listed through Control: {stdout}");
}
