//! Upstream pools (docs/pools.md): a resource with several endpoints, through the real binaries.

use caracal_e2e::Stack;
use caracal_e2e::stack::Demo;
use caracal_e2e::upstream::Upstream;
use serde_json::{Value, json};

mod endpoints;

async fn pool_resource(s: &Stack, d: &Demo, identifier: &str, endpoints: Value) -> Value {
    s.admin_ok(
        "POST",
        &format!("/v1/zones/{}/resources", d.zone_id),
        &d.admin,
        Some(json!({
            "identifier": identifier,
            "endpoints": endpoints,
            "scopes": ["tools.read"],
            "operations": [{"method": "GET", "path": "/**", "scope": "tools.read"}]
        })),
        201,
    )
    .await
}

/// `n` governed GETs to `resource`, each with its own single-use mandate; every status.
async fn calls(s: &Stack, d: &Demo, resource: &str, n: usize) -> Vec<u16> {
    let session = s.session(d).await;
    let mut statuses = Vec::with_capacity(n);
    for i in 0..n {
        let m = s.mandate_for(d, &session, resource, "tools.read").await;
        statuses.push(s.governed("GET", &format!("/items/{i}"), &m, resource).await.status);
    }
    statuses
}

#[tokio::test]
async fn the_admin_api_takes_endpoints_and_reports_every_pool_problem_at_once() {
    let s = Stack::start().await;
    let d = s.demo(true).await;
    let path = format!("/v1/zones/{}/resources", d.zone_id);
    let bad = s
        .admin(
            "POST",
            &path,
            &d.admin,
            Some(json!({
                "identifier": "https://bad-pool.e2e.test",
                "upstream_url": "http://elsewhere:1",
                "endpoints": [{"url": "ftp://x", "weight": 0}, {"url": "http://a:1", "weight": 5000}, {"url": "http://a:1"}],
                "load_balancing": {"policy": "consistent_hash", "hash_key": "cookie"},
                "scopes": ["a"]
            })),
        )
        .await;
    assert_eq!(bad.status, 400, "{}", bad.text);
    assert_eq!(bad.error(), "invalid_resource");
    let why = bad.body["error_description"].as_str().unwrap();
    for needle in [
        "endpoints[0].url",
        "endpoints[0].weight",
        "endpoints[1].weight",
        "endpoints[2].url is listed twice",
        "upstream_url must equal",
        "hash_key",
    ] {
        assert!(why.contains(needle), "every problem at once; missing {needle}: {why}");
    }
    let policy = s
        .admin(
            "POST",
            &path,
            &d.admin,
            Some(json!({"identifier": "https://p.e2e.test", "upstream_url": "http://a:1", "load_balancing": {"policy": "random"}, "scopes": ["a"]})),
        )
        .await;
    assert_eq!(policy.status, 400);
    assert!(policy.text.contains("load_balancing.policy"), "{}", policy.text);

    // A pool: upstream_url is the first endpoint; a set of one stays a plain resource.
    let pool =
        pool_resource(&s, &d, "https://pool.e2e.test", json!([{"url": "http://a.test:1/x", "weight": 3}, {"url": "http://b.test:2/x"}]))
            .await;
    assert_eq!(pool["upstream_url"], "http://a.test:1/x");
    assert_eq!(pool["endpoints"], json!([{"url": "http://a.test:1/x", "weight": 3}, {"url": "http://b.test:2/x", "weight": 1}]));
    assert_eq!(pool["load_balancing"], json!({"policy": "round_robin"}));
    let id = pool["id"].as_str().unwrap();
    let one = s.admin_ok("PATCH", &format!("{path}/{id}"), &d.admin, Some(json!({"upstream_url": "http://c.test:3/"})), 200).await;
    assert_eq!(one["endpoints"], json!([{"url": "http://c.test:3/", "weight": 1}]), "upstream_url alone is a set of one");
    let hashed = s
        .admin_ok(
            "PATCH",
            &format!("{path}/{id}"),
            &d.admin,
            Some(json!({"load_balancing": {"policy": "consistent_hash", "hash_key": "header:Mcp-Session-Id"}})),
            200,
        )
        .await;
    assert_eq!(hashed["load_balancing"], json!({"policy": "consistent_hash", "hash_key": "header:mcp-session-id"}));
    assert_eq!(hashed["upstream_url"], "http://c.test:3/", "untouched fields stay");
}

#[tokio::test]
async fn a_provider_key_is_not_spread_to_a_new_pool_member_without_a_new_secret() {
    let s = Stack::start().await;
    let d = s.demo(true).await;
    let path = format!("/v1/zones/{}/resources", d.zone_id);
    let r = s
        .admin_ok(
            "POST",
            &path,
            &d.admin,
            Some(json!({
                "identifier": "https://keyed-pool.e2e.test",
                "endpoints": [{"url": "http://a.test:1/"}, {"url": "http://b.test:1/"}],
                "scopes": ["a"],
                "credential_mode": "provider_apikey",
                "credential": {"header": "X-Api-Key", "secret": "k-1"}
            })),
            201,
        )
        .await;
    let id = r["id"].as_str().unwrap();
    let grow = s
        .admin(
            "PATCH",
            &format!("{path}/{id}"),
            &d.admin,
            Some(json!({"endpoints": [{"url": "http://a.test:1/"}, {"url": "http://evil.test:1/"}]})),
        )
        .await;
    assert_eq!(grow.status, 409, "{}", grow.text);
    assert_eq!(grow.error(), "credential_secret_required");
    // Removing and re-weighting members sends the key nowhere new.
    let shrink =
        s.admin("PATCH", &format!("{path}/{id}"), &d.admin, Some(json!({"endpoints": [{"url": "http://b.test:1/v2", "weight": 7}]}))).await;
    assert_eq!(shrink.status, 200, "{}", shrink.text);
}

#[tokio::test]
async fn weights_are_respected_across_three_endpoints() {
    let s = Stack::start().await;
    let d = s.demo(true).await;
    let ups = [Upstream::start().await, Upstream::start().await, Upstream::start().await];
    let endpoints: Vec<Value> = ups.iter().zip([3, 2, 1]).map(|(u, w)| json!({"url": format!("{}/base", u.url()), "weight": w})).collect();
    pool_resource(&s, &d, "https://weighted.e2e.test", Value::Array(endpoints)).await;
    let n = 120;
    let statuses = calls(&s, &d, "https://weighted.e2e.test", n).await;
    assert!(statuses.iter().all(|st| *st == 200), "{statuses:?}");
    let counts: Vec<usize> = ups.iter().map(|u| u.requests().len()).collect();
    assert_eq!(counts.iter().sum::<usize>(), n, "{counts:?}");
    for (count, weight) in counts.iter().zip([3, 2, 1]) {
        let want = n * weight / 6;
        assert!(count.abs_diff(want) <= n / 10, "weight {weight}: {count} of {n}, want {want} ± {}: {counts:?}", n / 10);
    }
    assert!(ups.iter().all(|u| u.requests().iter().all(|r| r.path.starts_with("/base/items/"))), "each member's base path is used");
}

#[tokio::test]
async fn a_pool_member_on_a_forbidden_address_is_never_dialed() {
    let s = Stack::start().await;
    let d = s.demo(true).await;
    let good = Upstream::start().await;
    // Reachable if dialed: a connection to 0.0.0.0 lands on the local host's listener.
    let trap = Upstream::start().await;
    pool_resource(
        &s,
        &d,
        "https://trapped.e2e.test",
        json!([
            {"url": format!("http://0.0.0.0:{}/base", trap.addr.port()), "weight": 5},
            {"url": "http://169.254.169.254/latest/", "weight": 5},
            {"url": format!("{}/base", good.url()), "weight": 1}
        ]),
    )
    .await;
    let statuses = calls(&s, &d, "https://trapped.e2e.test", 12).await;
    assert!(statuses.iter().all(|st| *st == 200), "the checked member serves everything: {statuses:?}");
    assert_eq!(good.requests().len(), 12);
    assert!(trap.requests().is_empty() && trap.carried().is_empty(), "the forbidden member was never dialed");
    assert!(s.gateway_metric("caracal_gateway_upstream_pool_members_refused_total").await >= 2.0);

    // A pool with no permitted member is refused like a single forbidden upstream.
    pool_resource(&s, &d, "https://all-forbidden.e2e.test", json!([{"url": "http://169.254.169.254/"}, {"url": "http://0.0.0.0:9/"}]))
        .await;
    let session = s.session(&d).await;
    let m = s.mandate_for(&d, &session, "https://all-forbidden.e2e.test", "tools.read").await;
    let a = s.governed("GET", "/x", &m, "https://all-forbidden.e2e.test").await;
    assert_eq!(a.status, 502, "{}", a.text);
    assert_eq!(a.error(), "internal_error");
    assert_eq!(a.body["error_description"], "upstream not addressable");
    assert_eq!(s.gateway_metric("caracal_gateway_denials_upstream_errors_total").await, 1.0);
}

#[tokio::test]
async fn a_pool_member_whose_name_resolves_to_a_refused_address_is_never_dialed() {
    // Without ALLOW_PRIVATE_UPSTREAMS, `localhost` resolves to an address the policy refuses.
    let opts = caracal_e2e::StackOptions { gateway_env: vec![("ALLOW_PRIVATE_UPSTREAMS".into(), "false".into())], ..Default::default() };
    let s = Stack::start_with(opts).await;
    let d = s.demo(true).await;
    let trap = Upstream::start().await;
    let port = trap.addr.port();
    pool_resource(
        &s,
        &d,
        "https://named-pool.e2e.test",
        json!([{"url": format!("http://localhost:{port}/base")}, {"url": format!("http://LOCALHOST:{port}/other")}]),
    )
    .await;
    let statuses = calls(&s, &d, "https://named-pool.e2e.test", 3).await;
    assert_eq!(statuses, [502, 502, 502]);
    assert!(trap.requests().is_empty() && trap.carried().is_empty(), "no member was dialed");
    assert_eq!(s.gateway_metric("caracal_gateway_denials_upstream_errors_total").await, 3.0);
    assert!(s.gateway_metric("caracal_gateway_upstream_pool_members_refused_total").await >= 2.0);
}

#[tokio::test]
async fn consistent_hash_keeps_each_mcp_session_on_one_endpoint() {
    let s = Stack::start().await;
    let d = s.demo(true).await;
    let ups = [Upstream::start().await, Upstream::start().await, Upstream::start().await];
    let r = pool_resource(
        &s,
        &d,
        "https://sticky.e2e.test",
        Value::Array(ups.iter().map(|u| json!({"url": format!("{}/base", u.url())})).collect()),
    )
    .await;
    s.admin_ok(
        "PATCH",
        &format!("/v1/zones/{}/resources/{}", d.zone_id, r["id"].as_str().unwrap()),
        &d.admin,
        Some(json!({"load_balancing": {"policy": "consistent_hash", "hash_key": "header:Mcp-Session-Id"}})),
        200,
    )
    .await;
    let session = s.session(&d).await;
    let sessions: Vec<String> = (0..8).map(|i| format!("mcp-session-{i}")).collect();
    for round in 0..4 {
        for sid in &sessions {
            let m = s.mandate_for(&d, &session, "https://sticky.e2e.test", "tools.read").await;
            let a = s
                .call(
                    "GET",
                    &format!("/items/{round}"),
                    &[
                        ("authorization", &format!("Bearer {m}")),
                        ("x-caracal-resource", "https://sticky.e2e.test"),
                        ("mcp-session-id", sid),
                    ],
                )
                .await;
            assert_eq!(a.status, 200, "{}", a.text);
        }
    }
    let mut used = 0;
    for sid in &sessions {
        let homes: Vec<usize> =
            ups.iter().map(|u| u.requests().iter().filter(|r| r.header("mcp-session-id") == Some(sid.as_str())).count()).collect();
        assert_eq!(homes.iter().filter(|c| **c > 0).count(), 1, "{sid} stays on one endpoint: {homes:?}");
        assert_eq!(homes.iter().sum::<usize>(), 4);
    }
    for u in &ups {
        used += usize::from(!u.requests().is_empty());
    }
    assert!(used >= 2, "sessions spread over the pool");
}

#[tokio::test]
async fn a_drained_endpoint_gets_no_new_requests() {
    let s = Stack::start().await;
    let d = s.demo(true).await;
    let (a, b) = (Upstream::start().await, Upstream::start().await);
    let (ua, ub) = (format!("{}/base", a.url()), format!("{}/base", b.url()));
    let r = pool_resource(&s, &d, "https://drained.e2e.test", json!([{"url": ua}, {"url": ub}])).await;
    let path = format!("/v1/zones/{}/resources/{}", d.zone_id, r["id"].as_str().unwrap());
    let all = s.admin("PATCH", &path, &d.admin, Some(json!({"endpoints": [{"url": ua, "drain": true}, {"url": ub, "drain": true}]}))).await;
    assert_eq!(all.status, 400, "draining every endpoint would leave none: {}", all.text);
    let drained = s.admin_ok("PATCH", &path, &d.admin, Some(json!({"endpoints": [{"url": ua, "drain": true}, {"url": ub}]})), 200).await;
    assert_eq!(drained["endpoints"][0]["drain"], true);
    let statuses = calls(&s, &d, "https://drained.e2e.test", 8).await;
    assert!(statuses.iter().all(|st| *st == 200), "{statuses:?}");
    assert!(a.requests().is_empty(), "the drained endpoint got nothing");
    assert_eq!(b.requests().len(), 8);
}

/// How many requests of MCP session `sid` each upstream received.
fn counts(ups: &[Upstream], sid: &str) -> Vec<usize> {
    ups.iter().map(|u| u.requests().iter().filter(|r| r.header("mcp-session-id") == Some(sid)).count()).collect()
}

/// The one upstream whose count for a session grew between two snapshots.
fn served_by(before: &[usize], now: &[usize]) -> usize {
    let grew: Vec<usize> = (0..now.len()).filter(|i| now[*i] > before[*i]).collect();
    assert_eq!(grew.len(), 1, "one endpoint served the request: {before:?} → {now:?}");
    grew[0]
}

#[tokio::test]
async fn when_an_endpoint_leaves_only_its_sessions_move() {
    let s = Stack::start().await;
    let d = s.demo(true).await;
    let ups = [Upstream::start().await, Upstream::start().await, Upstream::start().await];
    let urls: Vec<String> = ups.iter().map(|u| format!("{}/base", u.url())).collect();
    let r = s
        .admin_ok(
            "POST",
            &format!("/v1/zones/{}/resources", d.zone_id),
            &d.admin,
            Some(json!({
                "identifier": "https://ring.e2e.test",
                "endpoints": urls.iter().map(|u| json!({"url": u})).collect::<Vec<_>>(),
                "load_balancing": {"policy": "consistent_hash", "hash_key": "header:Mcp-Session-Id"},
                "scopes": ["tools.read"],
                "operations": [{"method": "GET", "path": "/**", "scope": "tools.read"}]
            })),
            201,
        )
        .await;
    let session = s.session(&d).await;
    let sessions: Vec<String> = (0..18).map(|i| format!("ring-session-{i}")).collect();
    let send = |sid: String| {
        let (s, d, session) = (&s, &d, &session);
        async move {
            let m = s.mandate_for(d, session, "https://ring.e2e.test", "tools.read").await;
            let h =
                [("authorization", format!("Bearer {m}")), ("x-caracal-resource", "https://ring.e2e.test".into()), ("mcp-session-id", sid)];
            let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
            assert_eq!(s.call("GET", "/items/1", &h).await.status, 200);
        }
    };
    for sid in &sessions {
        send(sid.clone()).await;
    }
    let first: Vec<Vec<usize>> = sessions.iter().map(|sid| counts(&ups, sid)).collect();
    let before: Vec<usize> = first.iter().map(|c| served_by(&[0, 0, 0], c)).collect();
    assert!((0..3).all(|i| before.contains(&i)), "every endpoint has sessions: {before:?}");
    // Endpoint 2 leaves the set.
    s.admin_ok(
        "PATCH",
        &format!("/v1/zones/{}/resources/{}", d.zone_id, r["id"].as_str().unwrap()),
        &d.admin,
        Some(json!({"endpoints": [{"url": urls[0]}, {"url": urls[1]}]})),
        200,
    )
    .await;
    for sid in &sessions {
        send(sid.clone()).await;
    }
    for (i, sid) in sessions.iter().enumerate() {
        let home = served_by(&first[i], &counts(&ups, sid));
        assert_ne!(home, 2, "{sid}: the removed endpoint gets nothing more");
        if before[i] != 2 {
            assert_eq!(home, before[i], "{sid} was not on the leaving endpoint and stays");
        }
    }
    assert_eq!(ups[2].requests().len(), before.iter().filter(|h| **h == 2).count(), "the removed endpoint got nothing more");
}

#[tokio::test]
async fn the_admin_api_takes_health_retry_and_connections_and_reports_every_problem_at_once() {
    let s = Stack::start().await;
    let d = s.demo(true).await;
    let path = format!("/v1/zones/{}/resources", d.zone_id);
    let resource = |extra: Value| {
        let mut body = json!({"identifier": "https://tuned.e2e.test", "upstream_url": "http://a.test:1/", "scopes": ["a"]});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        body
    };
    let bad = s
        .admin(
            "POST",
            &path,
            &d.admin,
            Some(resource(json!({
                "health": {"kind": "udp", "path": "no-slash", "interval_ms": 10, "timeout_ms": 20,
                           "healthy_threshold": 0, "unhealthy_threshold": 300},
                "retry": {"attempts": 9},
                "connections": {"max_in_flight": 0}
            }))),
        )
        .await;
    assert_eq!(bad.status, 400, "{}", bad.text);
    assert_eq!(bad.error(), "invalid_resource");
    let why = bad.body["error_description"].as_str().unwrap();
    for needle in [
        "health.kind",
        "health.interval_ms",
        "health.timeout_ms",
        "health.healthy_threshold",
        "health.unhealthy_threshold",
        "health.path",
        "retry.attempts",
        "connections.max_in_flight",
    ] {
        assert!(why.contains(needle), "every problem at once; missing {needle}: {why}");
    }
    for typo in [json!({"health": {"intervall_ms": 1000}}), json!({"retry": {"budget": 1}}), json!({"connections": {"h2": true}})] {
        let a = s.admin("POST", &path, &d.admin, Some(resource(typo.clone()))).await;
        assert_eq!(a.status, 400, "an unknown key is refused, not ignored: {typo} → {}", a.text);
    }

    // A plain resource shows the defaults: no probe, two attempts, no cap.
    let plain = s.admin_ok("POST", &path, &d.admin, Some(resource(json!({}))), 201).await;
    let plain_id = plain["id"].as_str().unwrap();
    assert_eq!(plain["health"], Value::Null);
    assert_eq!(plain["retry"], json!({"attempts": 2}));
    assert_eq!(plain["connections"], json!({}));

    let tuned = s
        .admin_ok(
            "POST",
            &path,
            &d.admin,
            Some(json!({
                "identifier": "https://tuned-2.e2e.test", "upstream_url": "http://a.test:1/", "scopes": ["a"],
                "health": {"path": "/healthz", "interval_ms": 2000},
                "retry": {"attempts": 3, "on_unavailable": true},
                "connections": {"max_in_flight": 64, "http2": true}
            })),
            201,
        )
        .await;
    let id = tuned["id"].as_str().unwrap();
    let health = json!({"kind": "http", "path": "/healthz", "interval_ms": 2000, "timeout_ms": 1000,
                        "healthy_threshold": 2, "unhealthy_threshold": 3});
    assert_eq!(tuned["health"], health, "unsent probe settings take their defaults");
    assert_eq!(tuned["retry"], json!({"attempts": 3, "on_unavailable": true}));
    assert_eq!(tuned["connections"], json!({"max_in_flight": 64, "http2": true}));
    let read = s.admin_ok("GET", &format!("{path}/{id}"), &d.admin, None, 200).await;
    assert_eq!((&read["health"], &read["retry"], &read["connections"]), (&tuned["health"], &tuned["retry"], &tuned["connections"]));
    let listed = s.admin_ok("GET", &path, &d.admin, None, 200).await;
    let item = listed["items"].as_array().unwrap().iter().find(|i| i["id"] == id).unwrap().clone();
    assert_eq!(item["health"], health);

    // PATCH: a field left out stays, null removes the probe / restores the defaults, and a bad
    // value is refused with the others.
    let patched = s.admin_ok("PATCH", &format!("{path}/{id}"), &d.admin, Some(json!({"retry": {"attempts": 1}})), 200).await;
    assert_eq!(patched["retry"], json!({"attempts": 1}));
    assert_eq!(patched["health"], health, "untouched settings stay");
    let refused = s
        .admin(
            "PATCH",
            &format!("{path}/{id}"),
            &d.admin,
            Some(json!({"health": {"kind": "tcp", "path": "/x"}, "connections": {"max_in_flight": -1}})),
        )
        .await;
    assert_eq!(refused.status, 400, "{}", refused.text);
    assert!(refused.text.contains("health.path applies to http probes only") && refused.text.contains("connections.max_in_flight"));
    let cleared = s
        .admin_ok("PATCH", &format!("{path}/{id}"), &d.admin, Some(json!({"health": null, "retry": null, "connections": null})), 200)
        .await;
    assert_eq!((&cleared["health"], &cleared["retry"], &cleared["connections"]), (&Value::Null, &json!({"attempts": 2}), &json!({})));
    let tcp = s.admin_ok("PATCH", &format!("{path}/{plain_id}"), &d.admin, Some(json!({"health": {"kind": "tcp"}})), 200).await;
    assert_eq!(tcp["health"]["kind"], "tcp");
    assert_eq!(tcp["health"].get("path"), None, "a tcp probe has no path");
}

/// The directive the STS gives the gateway for `resource` (`upstreams[resource]`), asked for by
/// signing the exchange the way the gateway does: the gateway keeps the directive to itself.
async fn directive(s: &Stack, d: &Demo, resource: &str) -> Value {
    let session = s.session(d).await;
    let mandate = s.mandate_for(d, &session, resource, "tools.read").await;
    let a = s.gateway_exchange(d, &mandate, resource).await;
    assert_eq!(a.status, 200, "signed exchange for {resource}: {}", a.text);
    a.body["upstreams"][resource].clone()
}

#[tokio::test]
async fn any_pool_setting_puts_the_pool_in_the_directive_and_a_plain_directive_is_unchanged() {
    let s = Stack::start().await;
    let d = s.demo(true).await;
    let add = |identifier: &'static str, extra: Value| {
        let (s, d) = (&s, &d);
        async move {
            let mut body = json!({
                "identifier": identifier, "upstream_url": "http://a.test:1/base", "scopes": ["tools.read"],
                "operations": [{"method": "GET", "path": "/**", "scope": "tools.read"}]
            });
            body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            s.admin_ok("POST", &format!("/v1/zones/{}/resources", d.zone_id), &d.admin, Some(body), 201).await
        }
    };
    add("https://plain.e2e.test", json!({"retry": {"attempts": 2}, "connections": {}})).await;
    let plain = directive(&s, &d, "https://plain.e2e.test").await;
    let mut keys: Vec<&str> = plain.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["auth_header", "auth_mode", "auth_scheme", "url"], "default settings leave the directive as it was: {plain}");

    let one = json!([{"url": "http://a.test:1/base", "weight": 1}]);
    add("https://probed.e2e.test", json!({"health": {"kind": "tcp", "interval_ms": 1000}})).await;
    let probed = directive(&s, &d, "https://probed.e2e.test").await;
    assert_eq!(probed["endpoints"], one, "a probe switches the gateway to its pool path: {probed}");
    assert_eq!(
        probed["health"],
        json!({"kind": "tcp", "interval_ms": 1000, "timeout_ms": 1000, "healthy_threshold": 2, "unhealthy_threshold": 3})
    );
    assert_eq!(probed.get("retry"), None, "default retries are not sent");

    add("https://retried.e2e.test", json!({"retry": {"attempts": 3, "on_unavailable": true}})).await;
    let retried = directive(&s, &d, "https://retried.e2e.test").await;
    assert_eq!((&retried["endpoints"], &retried["retry"]), (&one, &json!({"attempts": 3, "on_unavailable": true})), "{retried}");
    assert_eq!(retried.get("health"), None);

    add("https://capped.e2e.test", json!({"connections": {"max_in_flight": 8}})).await;
    let capped = directive(&s, &d, "https://capped.e2e.test").await;
    assert_eq!((&capped["endpoints"], &capped["connections"]), (&one, &json!({"max_in_flight": 8})), "{capped}");

    // A pool carries its settings too.
    add(
        "https://pooled.e2e.test",
        json!({"upstream_url": null, "endpoints": [{"url": "http://a.test:1/"}, {"url": "http://b.test:1/"}], "connections": {"http2": true}}),
    )
    .await;
    let pooled = directive(&s, &d, "https://pooled.e2e.test").await;
    assert_eq!(pooled["endpoints"].as_array().map(Vec::len), Some(2));
    assert_eq!(pooled["connections"], json!({"http2": true}));
}
