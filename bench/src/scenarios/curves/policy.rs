//! C3: per-request cost as the zone's active policy grows, 1 → 1,000 rules. The policy at size `k`
//! is the bench's allow policy plus `k − 1` rules that each name another resource (so the engine
//! evaluates every rule's body and one matches), activated through the admin API and loaded by the
//! STS before the point. The allow policy is active again afterwards.

use std::fmt::Write as _;

use super::{Curve, Point};
use crate::run::Plan;
use crate::scenarios::Systems;
use crate::scenarios::rate::{MINT_CONCURRENCY, Minters};
use crate::stack::ALLOW_POLICY;

fn sizes(plan: &Plan) -> Vec<u64> {
    if plan.smoke { vec![1, 10] } else { vec![1, 10, 100, 1_000] }
}

pub(crate) async fn run(sys: &Systems, plan: &Plan) -> anyhow::Result<Curve> {
    let minters = Minters::new(sys).await?;
    let mut points: Vec<Point> = Vec::new();
    let result = async {
        for k in sizes(plan) {
            let rego = policy_of(k as usize);
            sys.caracal.activate_policy(&sys.demo, &rego).await?;
            let tokens = minters.fixed.mint_many(super::mandates_needed(plan), MINT_CONCURRENCY).await?;
            let point = super::measure(sys, plan, k, format!("{:.1} KiB of Rego", rego.len() as f64 / 1024.0), &tokens).await?;
            eprintln!("bench: C3 {k} policy rules: S3 p50 {:.2} / p99 {:.2} ms", point.s3.run.latency.p50_ms, point.s3.run.latency.p99_ms);
            points.push(point);
        }
        anyhow::Ok(())
    }
    .await;
    sys.caracal.activate_policy(&sys.demo, ALLOW_POLICY).await?;
    result?;
    Ok(Curve {
        id: "C3",
        title: "rules in the zone's active policy",
        unit: "rules",
        method: "The allow policy plus rules that each allow another resource (every body evaluated, one matches), activated \
                 through the admin API and loaded by the STS before the point.",
        points,
    })
}

/// The allow policy with `k − 1` rules ahead of its allow rule that do not match the bench's requests.
pub(crate) fn policy_of(k: usize) -> String {
    let (head, allow) =
        ALLOW_POLICY.split_at(ALLOW_POLICY.find("result := {\"decision\": \"allow\"").expect("the allow policy has an allow rule"));
    let mut rego = head.to_owned();
    for i in 1..k {
        let _ = write!(
            rego,
            "result := {{\"decision\": \"allow\", \"evaluation_status\": \"complete\", \"determining_policies\": [\"r{i}\"], \"diagnostics\": []}} if {{\n\
             \tinput.resource.identifier == \"https://r{i}.bench.local\"\n}}\n\n"
        );
    }
    rego.push_str(allow);
    rego
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_of_k_rules_has_k_result_rules_and_one_default() {
        for k in [1, 10, 1_000] {
            let rego = policy_of(k);
            assert_eq!(rego.matches("\nresult := ").count(), k, "{k} rules");
            assert_eq!(rego.matches("default result").count(), 1);
            assert!(rego.ends_with(ALLOW_POLICY.split_at(ALLOW_POLICY.find("result := {\"decision\": \"allow\"").unwrap()).1));
        }
        assert!(policy_of(1_000).len() < caracal_sts::policy::MAX_SOURCE_BYTES, "fits the upload limit");
    }
}
