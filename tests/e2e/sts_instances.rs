//! Several control-plane instances: a revocation, a policy activation or a key rotation made on one
//! reaches the others through the signed streams, not only through their periodic reloads.

use std::time::{Duration, Instant};

use caracal_e2e::Stack;
use caracal_e2e::stack::{ACCESS_TOKEN, DENY_POLICY, GATEWAY_MANDATE, GRANT};

#[tokio::test]
async fn revocations_and_policy_changes_reach_every_instance_through_the_streams() {
    let s = Stack::start().await;
    let d = s.demo(true).await;
    // The second instance reloads revocations from Postgres only every minute and caches
    // policies for 30 s: anything faster came through the streams.
    let (_cp2, cp2) = s.second_control_plane(&[("REVOCATION_RELOAD_INTERVAL", "60s")]).await;
    let session = s.session(&d).await;
    let mint_at_2 = || async {
        s.token_at(
            &cp2,
            &[
                ("grant_type", GRANT),
                ("zone_id", &d.zone_id),
                ("application_id", &d.app_id),
                ("client_secret", &d.secret),
                ("subject_token", &session),
                ("subject_token_type", ACCESS_TOKEN),
                ("requested_token_type", GATEWAY_MANDATE),
                ("resource", &d.resource),
                ("scope", "tools.read"),
            ],
        )
        .await
    };
    assert_eq!(mint_at_2().await.status, 200, "the second instance mints for a live session");

    s.revoke_session(&d, &session).await;
    let start = Instant::now();
    loop {
        let a = mint_at_2().await;
        if a.status == 401 {
            assert_eq!(a.error(), "invalid_token");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(1), "the revocation reached the other instance within a second");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!("revocation reached the second STS instance in {:?}", start.elapsed());

    // A policy activated on one instance is enforced by the other at once.
    let session2 = s.session(&d).await;
    let first = s
        .token_at(&cp2, &[("grant_type", GRANT), ("zone_id", &d.zone_id), ("application_id", &d.app_id), ("client_secret", &d.secret)])
        .await;
    assert_eq!(first.status, 200, "warms the second instance's policy cache");
    s.activate_policy(&d, DENY_POLICY).await;
    let start = Instant::now();
    loop {
        let a = s
            .token_at(
                &cp2,
                &[
                    ("grant_type", GRANT),
                    ("zone_id", &d.zone_id),
                    ("application_id", &d.app_id),
                    ("client_secret", &d.secret),
                    ("subject_token", &session2),
                    ("subject_token_type", ACCESS_TOKEN),
                    ("requested_token_type", GATEWAY_MANDATE),
                    ("resource", &d.resource),
                    ("scope", "tools.read"),
                ],
            )
            .await;
        if a.status == 403 {
            assert!(a.body["error_description"].as_str().unwrap().contains("frozen_by_test"), "{}", a.text);
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(2), "the activation reached the other instance: {}", a.text);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
