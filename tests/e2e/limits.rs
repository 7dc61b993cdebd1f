//! STS rate limits and lockouts, in Redis, failing closed.

use caracal_e2e::stack::GRANT;
use caracal_e2e::{Stack, StackOptions};

fn cp(env: &[(&str, &str)]) -> StackOptions {
    StackOptions { control_plane_env: env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(), ..Default::default() }
}

#[tokio::test]
async fn mints_are_limited_per_client() {
    let s = Stack::start_with(cp(&[("STS_MINT_RATE_LIMIT_PER_MIN", "5")])).await;
    let d = s.demo(true).await;
    let other = s
        .admin_ok("POST", &format!("/v1/zones/{}/applications", d.zone_id), &d.admin, Some(serde_json::json!({"name": "other"})), 201)
        .await;
    let form = |app: &str, secret: &str| {
        vec![
            ("grant_type", GRANT.to_owned()),
            ("zone_id", d.zone_id.clone()),
            ("application_id", app.to_owned()),
            ("client_secret", secret.to_owned()),
        ]
    };
    let mine = form(&d.app_id, &d.secret);
    let mine: Vec<(&str, &str)> = mine.iter().map(|(k, v)| (*k, v.as_str())).collect();
    for i in 0..5 {
        assert_eq!(s.token(&mine).await.status, 200, "mint {i} is within the limit");
    }
    let over = s.token(&mine).await;
    assert_eq!(over.status, 429, "{}", over.text);
    assert_eq!(over.error(), "provider_rate_limited");
    let retry: u64 = over.headers.get("retry-after").expect("Retry-After").to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry));
    let theirs = form(other["id"].as_str().unwrap(), other["client_secret"].as_str().unwrap());
    let theirs: Vec<(&str, &str)> = theirs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(s.token(&theirs).await.status, 200, "another client has its own budget");
}

#[tokio::test]
async fn repeated_bad_credentials_lock_the_client_out() {
    let s = Stack::start_with(cp(&[("STS_AUTH_FAILURE_LIMIT", "3"), ("STS_AUTH_LOCKOUT", "2s")])).await;
    let d = s.demo(true).await;
    let bad =
        [("grant_type", GRANT), ("zone_id", d.zone_id.as_str()), ("application_id", d.app_id.as_str()), ("client_secret", "cs_wrong")];
    for _ in 0..3 {
        let a = s.token(&bad).await;
        assert_eq!(a.status, 401);
        assert_eq!(a.error(), "access_denied");
    }
    let locked = s.token(&bad).await;
    assert_eq!(locked.status, 429, "{}", locked.text);
    assert_eq!(locked.body["error_description"], "authentication rate limit exceeded");
    let good = [
        ("grant_type", GRANT),
        ("zone_id", d.zone_id.as_str()),
        ("application_id", d.app_id.as_str()),
        ("client_secret", d.secret.as_str()),
    ];
    // Secrets carry 256 bits: the lockout slows nobody who could guess one, so it must not stop
    // the right one either (anyone who knows the client id could lock the application out).
    assert_eq!(s.token(&good).await.status, 200, "the right secret authenticates during a lockout");
    let still = s.token(&bad).await;
    assert_eq!(still.status, 429, "bad secrets stay refused while locked");
    assert!(still.headers.contains_key("retry-after"), "{:?}", still.headers);
}

#[tokio::test]
async fn without_redis_nothing_is_minted() {
    let mut s = Stack::start().await;
    let d = s.demo(true).await;
    s.redis.stop();
    let a = s.token(&[("grant_type", GRANT), ("zone_id", &d.zone_id), ("application_id", &d.app_id), ("client_secret", &d.secret)]).await;
    assert_eq!(a.status, 503, "{}", a.text);
    assert_eq!(a.error(), "sts_unavailable");
}
