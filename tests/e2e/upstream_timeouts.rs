//! Upstream deadlines: a silent upstream answers 504 within `UPSTREAM_RESPONSE_HEADER_TIMEOUT`, a
//! sized body that stalls is cut after `UPSTREAM_BODY_IDLE_TIMEOUT`, and an idle SSE stream trips
//! neither.

use std::time::{Duration, Instant};

use caracal_e2e::stack::Demo;
use caracal_e2e::{Stack, StackOptions};
use serde_json::json;

const RESOURCE: &str = "https://slow.e2e.test";

async fn stack(env: &[(&str, &str)]) -> (Stack, Demo, String) {
    let opts = StackOptions { gateway_env: env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(), ..Default::default() };
    let s = Stack::start_with(opts).await;
    let d = s.demo(true).await;
    s.add_resource(&d, RESOURCE, &format!("{}/base", s.upstream.url())).await;
    let session = s.session(&d).await;
    (s, d, session)
}

#[tokio::test]
async fn an_upstream_that_never_answers_is_refused_at_the_header_timeout() {
    let (s, d, session) = stack(&[("UPSTREAM_RESPONSE_HEADER_TIMEOUT", "1s")]).await;
    // A first request leaves a pooled connection, so the silent one runs on a reused connection
    // (whose failures Pingora would otherwise retry).
    let m = s.mandate_for(&d, &session, RESOURCE, "tools.read").await;
    assert_eq!(s.governed("GET", "/items/1", &m, RESOURCE).await.status, 200);
    let m = s.mandate_for(&d, &session, RESOURCE, "tools.read").await;
    let started = Instant::now();
    let a = tokio::time::timeout(Duration::from_secs(5), s.governed("GET", "/hang", &m, RESOURCE))
        .await
        .expect("the gateway answers instead of waiting for the upstream forever");
    let took = started.elapsed();
    assert_eq!(a.status, 504, "{}", a.text);
    assert_eq!(a.error(), "upstream_timeout");
    assert_eq!(a.body["error_description"], "upstream timeout");
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(3), "answered after {took:?}");
    assert_eq!(a.headers.get("connection").and_then(|v| v.to_str().ok()), Some("close"), "the connection is not reused after a failure");
    assert_eq!(s.gateway_metric("caracal_gateway_denials_upstream_errors_total").await, 1.0);
    let hung = s.upstream.carried().iter().filter(|c| c.path == "/base/hang").count();
    assert_eq!(hung, 1, "the timed-out request is not retried");
}

#[tokio::test]
async fn an_idle_sse_stream_outlives_both_timeouts() {
    let (s, d, session) = stack(&[("UPSTREAM_RESPONSE_HEADER_TIMEOUT", "1s"), ("UPSTREAM_BODY_IDLE_TIMEOUT", "1s")]).await;
    let m = s.mandate_for(&d, &session, RESOURCE, "tools.read").await;
    // One event at once, the next after 2.5 s of silence, then the stream ends.
    let resp = s
        .http
        .get(format!("{}/sse?every_ms=2500&count=2", s.gw_url))
        .bearer_auth(&m)
        .header("x-caracal-resource", RESOURCE)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let text = tokio::time::timeout(Duration::from_secs(6), resp.text()).await.expect("the stream ends").expect("a complete stream");
    assert!(text.contains("event 1"), "the event after the idle period arrives: {text}");
    assert_eq!(s.gateway_metric("caracal_gateway_denials_upstream_errors_total").await, 0.0);
}

#[tokio::test]
async fn a_sized_body_that_stalls_is_cut_at_the_body_idle_timeout() {
    let (s, d, session) = stack(&[("UPSTREAM_BODY_IDLE_TIMEOUT", "1s")]).await;
    let m = s.mandate_for(&d, &session, RESOURCE, "tools.read").await;
    let mut resp = s
        .http
        .get(format!("{}/stalled-body?bytes=65536&first=1024", s.gw_url))
        .bearer_auth(&m)
        .header("x-caracal-resource", RESOURCE)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let started = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        let mut got = 0;
        loop {
            match resp.chunk().await {
                Ok(Some(c)) => got += c.len(),
                Ok(None) => return Ok(got),
                Err(e) => return Err((got, e)),
            }
        }
    })
    .await
    .expect("the stalled body is cut");
    assert!(ended.is_err(), "the client sees a truncated body, not a complete one: {ended:?}");
    assert!(started.elapsed() < Duration::from_secs(3), "cut after {:?}", started.elapsed());
    s.wait_gateway_metric("caracal_gateway_denials_upstream_errors_total", 1.0, Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_resource_sets_its_own_response_header_deadline() {
    // The gateway would wait 30 s; the resource allows 700 ms.
    let (s, d, session) = stack(&[]).await;
    let path = format!("/v1/zones/{}/resources", d.zone_id);
    let bad = s
        .admin(
            "POST",
            &path,
            &d.admin,
            Some(json!({"identifier": "https://t.e2e.test", "upstream_url": "http://a:1", "scopes": ["a"],
                        "timeouts": {"connect_ms": 10, "response_header_ms": 4_000_000}})),
        )
        .await;
    assert_eq!(bad.status, 400, "{}", bad.text);
    for needle in ["timeouts.connect_ms", "timeouts.response_header_ms"] {
        assert!(bad.text.contains(needle), "every problem at once; missing {needle}: {}", bad.text);
    }
    let quick = "https://quick.e2e.test";
    let r = s
        .admin_ok(
            "POST",
            &path,
            &d.admin,
            Some(json!({"identifier": quick, "upstream_url": format!("{}/base", s.upstream.url()), "scopes": ["tools.read"],
                        "operations": [{"method": "GET", "path": "/**", "scope": "tools.read"}],
                        "timeouts": {"response_header_ms": 700}})),
            201,
        )
        .await;
    assert_eq!(r["timeouts"], json!({"response_header_ms": 700}));
    let m = s.mandate_for(&d, &session, quick, "tools.read").await;
    let started = Instant::now();
    let a = tokio::time::timeout(Duration::from_secs(10), s.governed("GET", "/hang", &m, quick))
        .await
        .expect("the resource's deadline answers, not the gateway's 30 s");
    let took = started.elapsed();
    assert_eq!(a.status, 504, "{}", a.text);
    assert_eq!(a.error(), "upstream_timeout");
    assert_eq!(a.body["error_description"], "upstream timeout");
    assert!(took >= Duration::from_millis(600) && took < Duration::from_secs(3), "answered after {took:?}");
    assert_eq!(s.gateway_metric("caracal_gateway_denials_upstream_errors_total").await, 1.0);
    // Another resource keeps the gateway's deadline.
    let m = s.mandate_for(&d, &session, RESOURCE, "tools.read").await;
    assert_eq!(s.governed("GET", "/items/1", &m, RESOURCE).await.status, 200);
}
