//! Two gateways on one control plane, one Redis and one Postgres (two instances behind a load
//! balancer): a mandate is spent once across both, and a revocation reaches both.

use std::time::{Duration, Instant};

use caracal_e2e::Stack;

#[tokio::test]
async fn two_gateways_spend_each_mandate_once_and_both_honour_a_revocation() {
    let s = Stack::start().await;
    let d = s.demo(true).await;
    let (_second, gw2) = s.second_gateway(&[]).await;
    let session = s.session(&d).await;
    const RACES: usize = 40;
    let mut mandates = Vec::new();
    for _ in 0..RACES {
        mandates.push(s.gateway_mandate(&d, &session, "tools.read").await);
    }
    // Each mandate is presented to both gateways at the same moment; all races run at once.
    let races = futures_util::future::join_all(mandates.iter().map(|m| async {
        tokio::join!(s.governed("GET", "/items/1", m, &d.resource), s.governed_at(&gw2, "GET", "/items/1", m, &d.resource))
    }))
    .await;
    let mut won = [0, 0];
    for (first, second) in &races {
        let refused = match (first.status, second.status) {
            (200, _) if second.status != 200 => {
                won[0] += 1;
                second
            }
            (_, 200) if first.status != 200 => {
                won[1] += 1;
                first
            }
            _ => panic!("exactly one gateway accepts a mandate: {} / {}", first.text, second.text),
        };
        assert_eq!((refused.status, refused.error()), (401, "invalid_token"), "{}", refused.text);
        assert_eq!(refused.body["error_description"], "token replay detected");
    }
    eprintln!("races won: first gateway {}, second {}", won[0], won[1]);
    assert_eq!(s.upstream.requests().len(), RACES, "each mandate reached the upstream once");
    let replay = "caracal_gateway_denials_jti_replay_total";
    assert_eq!(s.gateway_metric(replay).await + s.gateway_metric_at(&gw2, replay).await, RACES as f64);

    // A revocation reaches both gateways, and each denies in memory, before asking the STS.
    let held = [s.gateway_mandate(&d, &session, "tools.read").await, s.gateway_mandate(&d, &session, "tools.read").await];
    s.revoke_session(&d, &session).await;
    let revoked_at = Instant::now();
    for (base, m) in [(s.gw_url.as_str(), &held[0]), (gw2.as_str(), &held[1])] {
        while s.gateway_metric_at(base, "caracal_gateway_revocations_active").await < 1.0 {
            assert!(revoked_at.elapsed() < Duration::from_secs(2), "the revocation did not reach {base} within 2 s");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let a = s.governed_at(base, "GET", "/items/1", m, &d.resource).await;
        assert_eq!((a.status, a.error()), (401, "invalid_token"), "{base}: {}", a.text);
        assert_eq!(a.body["error_description"], "session revoked");
        assert_eq!(s.gateway_metric_at(base, "caracal_gateway_denials_revoked_total").await, 1.0);
        assert_eq!(s.gateway_metric_at(base, "caracal_gateway_denials_sts_refused_total").await, 0.0);
    }
    eprintln!("the revocation reached both gateways within {:?}", revoked_at.elapsed());
    assert_eq!(s.upstream.requests().len(), RACES);
}
