//! Changes to what the STS caches per zone — an application's secret, a resource — reach every
//! control-plane instance as the change commits (announced on `caracal.catalog.invalidate`), not
//! when the other instances' cache entries expire (30 s).

use std::time::{Duration, Instant};

use caracal_e2e::Stack;
use caracal_e2e::stack::{ACCESS_TOKEN, Answer, GATEWAY_MANDATE, GRANT};

async fn within_a_second<F, Fut>(what: &str, mut probe: F, done: impl Fn(&Answer) -> bool)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Answer>,
{
    let start = Instant::now();
    loop {
        let a = probe().await;
        if done(&a) {
            eprintln!("{what}: {:?}", start.elapsed());
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(1), "{what} within a second; last answer {} {}", a.status, a.text);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_rotated_secret_and_an_archived_resource_take_effect_on_every_instance_at_once() {
    let s = Stack::start().await;
    let d = s.demo(true).await;
    let z = d.zone_id.clone();
    let (_cp2, cp2) = s.second_control_plane(&[]).await;
    let session_with = |secret: String| {
        let (s, cp2, z, app) = (&s, cp2.clone(), z.clone(), d.app_id.clone());
        async move { s.token_at(&cp2, &[("grant_type", GRANT), ("zone_id", &z), ("application_id", &app), ("client_secret", &secret)]).await }
    };
    assert_eq!(session_with(d.secret.clone()).await.status, 200, "the second instance caches the application");
    let rotated =
        s.admin_ok("POST", &format!("/v1/zones/{z}/applications/{}/rotate-secret", d.app_id), &d.admin, None, 200).await["client_secret"]
            .as_str()
            .unwrap()
            .to_owned();
    within_a_second(
        "the old secret is refused on the second instance",
        || session_with(d.secret.clone()),
        |a| a.status == 401 && a.error() == "access_denied",
    )
    .await;
    assert_eq!(session_with(rotated.clone()).await.status, 200, "the new secret works there");

    let mut rotated_demo = d.clone();
    rotated_demo.secret = rotated.clone();
    let session = s.session(&rotated_demo).await;
    let mint_at_2 = || {
        let (s, cp2, z, app, secret, session, resource) =
            (&s, cp2.clone(), z.clone(), d.app_id.clone(), rotated.clone(), session.clone(), d.resource.clone());
        async move {
            s.token_at(
                &cp2,
                &[
                    ("grant_type", GRANT),
                    ("zone_id", &z),
                    ("application_id", &app),
                    ("client_secret", &secret),
                    ("subject_token", &session),
                    ("subject_token_type", ACCESS_TOKEN),
                    ("requested_token_type", GATEWAY_MANDATE),
                    ("resource", &resource),
                    ("scope", "tools.read"),
                ],
            )
            .await
        }
    };
    assert_eq!(mint_at_2().await.status, 200, "the second instance caches the resource");
    let listed = s.admin_ok("GET", &format!("/v1/zones/{z}/resources"), &d.admin, None, 200).await;
    let rid = listed["items"].as_array().unwrap().iter().find(|r| r["identifier"] == d.resource.as_str()).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    s.admin_ok("DELETE", &format!("/v1/zones/{z}/resources/{rid}"), &d.admin, None, 204).await;
    within_a_second("the archived resource is refused on the second instance", mint_at_2, |a| {
        a.status == 403 && a.error() == "access_denied"
    })
    .await;
}
