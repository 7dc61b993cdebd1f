//! The endpoint sub-resource (`…/resources/{id}/endpoints[/{n}]`): one member at a time, under
//! the rules of the full-set `PATCH`.

use std::time::{Duration, Instant};

use caracal_e2e::Stack;
use caracal_e2e::upstream::Upstream;
use futures_util::future::join_all;
use serde_json::{Value, json};

use super::{calls, pool_resource};

/// `(url, weight, drain)` of each member of a sub-resource answer, checking that each is listed
/// with its index.
fn members(answer: &Value) -> Vec<(String, u64, bool)> {
    let set = answer["endpoints"].as_array().unwrap_or_else(|| panic!("an endpoint set: {answer}"));
    set.iter()
        .enumerate()
        .map(|(i, e)| {
            assert_eq!(e["index"], i, "{answer}");
            (e["url"].as_str().unwrap().to_owned(), e["weight"].as_u64().unwrap(), e["drain"].as_bool().unwrap())
        })
        .collect()
}

fn m(url: &str, weight: u64, drain: bool) -> (String, u64, bool) {
    (url.to_owned(), weight, drain)
}

#[tokio::test]
async fn endpoints_are_added_reweighted_drained_and_removed_one_at_a_time() {
    let s = Stack::start().await;
    let d = s.demo(true).await;
    let (a, b, c) = ("http://a.test:1/", "http://b.test:1/", "http://c.test:1/");
    let r = pool_resource(&s, &d, "https://members.e2e.test", json!([{"url": a}])).await;
    let resource = format!("/v1/zones/{}/resources/{}", d.zone_id, r["id"].as_str().unwrap());
    let eps = format!("{resource}/endpoints");
    let listed = s.admin_ok("GET", &eps, &d.admin, None, 200).await;
    assert_eq!(listed, json!({"endpoints": [{"index": 0, "url": a, "weight": 1, "drain": false}]}));

    let added = s.admin_ok("POST", &eps, &d.admin, Some(json!({"url": b, "weight": 3})), 201).await;
    assert_eq!(members(&added), [m(a, 1, false), m(b, 3, false)]);
    let added = s.admin_ok("POST", &eps, &d.admin, Some(json!({"url": c, "drain": true})), 201).await;
    assert_eq!(members(&added), [m(a, 1, false), m(b, 3, false), m(c, 1, true)]);
    let bad = s.admin("POST", &eps, &d.admin, Some(json!({"url": "ftp://x", "weight": 0}))).await;
    assert_eq!((bad.status, bad.error()), (400, "invalid_resource"), "{}", bad.text);
    let why = bad.body["error_description"].as_str().unwrap();
    assert!(why.contains("endpoints[3].url") && why.contains("endpoints[3].weight"), "every problem at once: {why}");
    let twice = s.admin("POST", &eps, &d.admin, Some(json!({"url": b}))).await;
    assert_eq!(twice.status, 400, "{}", twice.text);
    assert!(twice.text.contains("listed twice"), "{}", twice.text);
    let typo = s.admin("POST", &eps, &d.admin, Some(json!({"url": "http://d.test:1/", "wieght": 2}))).await;
    assert_eq!(typo.status, 400, "an unknown key is refused: {}", typo.text);

    let reweighted = s.admin_ok("PATCH", &format!("{eps}/1"), &d.admin, Some(json!({"weight": 5})), 200).await;
    assert_eq!(members(&reweighted), [m(a, 1, false), m(b, 5, false), m(c, 1, true)]);
    let undrained = s.admin_ok("PATCH", &format!("{eps}/2"), &d.admin, Some(json!({"drain": false})), 200).await;
    assert_eq!(members(&undrained)[2], m(c, 1, false));
    let drained = s.admin_ok("PATCH", &format!("{eps}/0"), &d.admin, Some(json!({"drain": true, "weight": 2})), 200).await;
    assert_eq!(members(&drained)[0], m(a, 2, true));
    let heavy = s.admin("PATCH", &format!("{eps}/0"), &d.admin, Some(json!({"weight": 5000}))).await;
    assert_eq!(heavy.status, 400, "{}", heavy.text);
    assert!(heavy.text.contains("endpoints[0].weight"), "{}", heavy.text);
    let whole = s.admin_ok("GET", &resource, &d.admin, None, 200).await;
    assert_eq!(whole["endpoints"], json!([{"url": a, "weight": 2, "drain": true}, {"url": b, "weight": 5}, {"url": c, "weight": 1}]));
    assert_eq!(whole["upstream_url"], a);

    for (method, path) in
        [("PATCH", format!("{eps}/3")), ("DELETE", format!("{eps}/3")), ("PATCH", format!("{eps}/x")), ("DELETE", format!("{eps}/-1"))]
    {
        let body = (method == "PATCH").then(|| json!({"weight": 1}));
        let missing = s.admin(method, &path, &d.admin, body).await;
        assert_eq!((missing.status, missing.error()), (404, "endpoint_not_found"), "{method} {path}: {}", missing.text);
    }
    let gone = s.admin("GET", &format!("/v1/zones/{}/resources/no-such/endpoints", d.zone_id), &d.admin, None).await;
    assert_eq!((gone.status, gone.error()), (404, "resource_not_found"));

    // Removing the first member moves upstream_url to the next one.
    let removed = s.admin_ok("DELETE", &format!("{eps}/0"), &d.admin, None, 200).await;
    assert_eq!(members(&removed), [m(b, 5, false), m(c, 1, false)]);
    assert_eq!(s.admin_ok("GET", &resource, &d.admin, None, 200).await["upstream_url"], b);
    s.admin_ok("PATCH", &format!("{eps}/0"), &d.admin, Some(json!({"drain": true})), 200).await;
    let last_live = s.admin("PATCH", &format!("{eps}/1"), &d.admin, Some(json!({"drain": true}))).await;
    assert_eq!(
        (last_live.status, last_live.error()),
        (400, "invalid_resource"),
        "the last serving endpoint cannot drain: {}",
        last_live.text
    );
    assert!(last_live.text.contains("at least one endpoint must not be draining"), "{}", last_live.text);
    let only_drained = s.admin("DELETE", &format!("{eps}/1"), &d.admin, None).await;
    assert_eq!(only_drained.status, 400, "removing the last serving endpoint leaves only draining ones: {}", only_drained.text);
    s.admin_ok("DELETE", &format!("{eps}/0"), &d.admin, None, 200).await;
    let last = s.admin("DELETE", &format!("{eps}/0"), &d.admin, None).await;
    assert_eq!((last.status, last.error()), (400, "invalid_resource"), "{}", last.text);
    assert!(last.text.contains("last endpoint"), "a clear reason: {}", last.text);
    assert_eq!(members(&s.admin_ok("GET", &eps, &d.admin, None, 200).await), [m(c, 1, false)]);

    // Each change is evidenced like any admin write.
    let db = sqlx::PgPool::connect(&s.database_url).await.unwrap();
    let start = Instant::now();
    loop {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM audit_events WHERE zone_id = $1 AND event_type = 'admin_action' \
             AND (event::jsonb)->'metadata_json'->>'method' = 'PATCH' \
             AND (event::jsonb)->'metadata_json'->>'route' = '/v1/zones/{zone_id}/resources/{id}/endpoints/{n}'",
        )
        .bind(&d.zone_id)
        .fetch_one(&db)
        .await
        .unwrap();
        if n >= 6 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "every endpoint PATCH is filed ({n} of 6)");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn concurrent_endpoint_edits_are_all_kept() {
    let s = Stack::start().await;
    let d = s.demo(true).await;
    let r = pool_resource(&s, &d, "https://busy.e2e.test", json!([{"url": "http://a.test:1/"}])).await;
    let eps = format!("/v1/zones/{}/resources/{}/endpoints", d.zone_id, r["id"].as_str().unwrap());
    let adds = (0..10).map(|i| {
        let (s, d, eps) = (&s, &d, &eps);
        async move { s.admin("POST", eps, &d.admin, Some(json!({"url": format!("http://m{i}.test:1/")}))).await }
    });
    let answers = join_all(adds).await;
    let statuses: Vec<u16> = answers.iter().map(|a| a.status).collect();
    assert!(statuses.iter().all(|st| *st == 201), "no edit is refused or lost: {statuses:?}");
    let set = members(&s.admin_ok("GET", &eps, &d.admin, None, 200).await);
    assert_eq!(set.len(), 11, "every concurrent addition is kept: {set:?}");
    // Concurrent re-weights of different members both land.
    let reweights = (1..=4).map(|i| {
        let (s, d, eps) = (&s, &d, &eps);
        async move { s.admin("PATCH", &format!("{eps}/{i}"), &d.admin, Some(json!({"weight": 10 + i}))).await }
    });
    assert!(join_all(reweights).await.iter().all(|a| a.status == 200));
    let set = members(&s.admin_ok("GET", &eps, &d.admin, None, 200).await);
    assert_eq!(set[1..=4].iter().map(|e| e.1).collect::<Vec<_>>(), [11, 12, 13, 14], "{set:?}");
}

#[tokio::test]
async fn a_provider_key_is_not_sent_to_an_endpoint_added_alone() {
    let s = Stack::start().await;
    let d = s.demo(true).await;
    let r = s
        .admin_ok(
            "POST",
            &format!("/v1/zones/{}/resources", d.zone_id),
            &d.admin,
            Some(json!({
                "identifier": "https://keyed-members.e2e.test",
                "endpoints": [{"url": "http://a.test:1/"}],
                "scopes": ["a"],
                "credential_mode": "provider_apikey",
                "credential": {"header": "X-Api-Key", "secret": "k-1"}
            })),
            201,
        )
        .await;
    let eps = format!("/v1/zones/{}/resources/{}/endpoints", d.zone_id, r["id"].as_str().unwrap());
    let evil = s.admin("POST", &eps, &d.admin, Some(json!({"url": "http://evil.test:1/"}))).await;
    assert_eq!((evil.status, evil.error()), (409, "credential_secret_required"), "{}", evil.text);
    let port = s.admin("POST", &eps, &d.admin, Some(json!({"url": "http://a.test:2/"}))).await;
    assert_eq!(port.status, 409, "another port is another destination: {}", port.text);
    // Another base path on a destination the key already goes to sends it nowhere new.
    let same = s.admin_ok("POST", &eps, &d.admin, Some(json!({"url": "http://A.test:1/v2", "weight": 2})), 201).await;
    assert_eq!(members(&same).len(), 2);
    s.admin_ok("PATCH", &format!("{eps}/1"), &d.admin, Some(json!({"weight": 4, "drain": true})), 200).await;
    s.admin_ok("DELETE", &format!("{eps}/1"), &d.admin, None, 200).await;
}

#[tokio::test]
async fn an_endpoint_drained_through_its_sub_resource_gets_no_new_requests() {
    let s = Stack::start().await;
    let d = s.demo(true).await;
    let (a, b) = (Upstream::start().await, Upstream::start().await);
    let r = pool_resource(
        &s,
        &d,
        "https://drained-one.e2e.test",
        json!([{"url": format!("{}/base", a.url())}, {"url": format!("{}/base", b.url())}]),
    )
    .await;
    let eps = format!("/v1/zones/{}/resources/{}/endpoints", d.zone_id, r["id"].as_str().unwrap());
    s.admin_ok("PATCH", &format!("{eps}/0"), &d.admin, Some(json!({"drain": true})), 200).await;
    let statuses = calls(&s, &d, "https://drained-one.e2e.test", 8).await;
    assert!(statuses.iter().all(|st| *st == 200), "{statuses:?}");
    assert!(a.requests().is_empty(), "the drained endpoint got nothing");
    assert_eq!(b.requests().len(), 8);

    // Back in, and the other one removed: everything goes to the first again.
    s.admin_ok("PATCH", &format!("{eps}/0"), &d.admin, Some(json!({"drain": false})), 200).await;
    s.admin_ok("DELETE", &format!("{eps}/1"), &d.admin, None, 200).await;
    let statuses = calls(&s, &d, "https://drained-one.e2e.test", 4).await;
    assert!(statuses.iter().all(|st| *st == 200), "{statuses:?}");
    assert_eq!((a.requests().len(), b.requests().len()), (4, 8), "the removed endpoint got nothing more");
}
