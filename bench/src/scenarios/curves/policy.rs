//! C3: per-request cost as the zone's active policy grows, 1 → 1,000, in two shapes:
//!
//! * rules: the bench's allow policy plus `k − 1` rules that each allow another resource (the
//!   engine evaluates every rule's body; one matches);
//! * entries: one allow rule that looks the request's resource up in an object of `k − 1` entries
//!   (the resources it refuses), the way a grant table is written.
//!
//! Each policy is activated through the admin API and loaded by the STS before its point; the allow
//! policy is active again afterwards.

use std::fmt::Write as _;

use super::{Curve, Point};
use crate::run::Plan;
use crate::scenarios::Systems;
use crate::scenarios::rate::{MINT_CONCURRENCY, Minters};
use crate::stack::ALLOW_POLICY;

/// How a policy grows.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Shape {
    Rules,
    Entries,
}

fn sizes(plan: &Plan) -> Vec<u64> {
    if plan.smoke { vec![1, 10] } else { vec![1, 10, 100, 1_000] }
}

pub(crate) async fn run(sys: &Systems, plan: &Plan, shape: Shape) -> anyhow::Result<Curve> {
    let minters = Minters::new(sys).await?;
    let mut points: Vec<Point> = Vec::new();
    let result = async {
        for k in sizes(plan) {
            let rego = policy_of(shape, k as usize);
            sys.caracal.activate_policy(&sys.demo, &rego).await?;
            let tokens = minters.fixed.mint_many(super::mandates_needed(plan), MINT_CONCURRENCY).await?;
            let point = super::measure(sys, plan, k, format!("{:.1} KiB of Rego", rego.len() as f64 / 1024.0), &tokens).await?;
            eprintln!("bench: C3 {shape:?} {k}: S3 p50 {:.2} / p99 {:.2} ms", point.s3.run.latency.p50_ms, point.s3.run.latency.p99_ms);
            points.push(point);
        }
        anyhow::Ok(())
    }
    .await;
    sys.caracal.activate_policy(&sys.demo, ALLOW_POLICY).await?;
    result?;
    Ok(match shape {
        Shape::Rules => Curve {
            id: "C3",
            title: "rules in the zone's active policy",
            unit: "rules",
            method: "The allow policy plus rules that each allow another resource (every body evaluated, one matches), activated \
                     through the admin API and loaded by the STS before the point.",
            points,
        },
        Shape::Entries => Curve {
            id: "C3e",
            title: "entries of an object the policy looks the resource up in",
            unit: "entries",
            method: "One allow rule: `not refused[input.resource.identifier]`, `refused` an object of that many entries in the \
                     policy's source (a grant table), activated through the admin API and loaded by the STS before the point.",
            points,
        },
    })
}

/// The bench's allow policy grown to `k` in `shape`.
pub(crate) fn policy_of(shape: Shape, k: usize) -> String {
    let at = ALLOW_POLICY.find("result := {\"decision\": \"allow\"").expect("the allow policy has an allow rule");
    let (head, allow) = ALLOW_POLICY.split_at(at);
    let mut rego = head.to_owned();
    match shape {
        Shape::Rules => {
            for i in 1..k {
                let _ = write!(
                    rego,
                    "result := {{\"decision\": \"allow\", \"evaluation_status\": \"complete\", \"determining_policies\": [\"r{i}\"], \"diagnostics\": []}} if {{\n\
                     \tinput.resource.identifier == \"https://r{i}.bench.local\"\n}}\n\n"
                );
            }
            rego.push_str(allow);
        }
        Shape::Entries => {
            // One entry a line: the engine refuses lines over 1,024 columns.
            rego.push_str("refused := {");
            for i in 1..k {
                let _ = write!(rego, "\n\t\"https://r{i}.bench.local\": true,");
            }
            rego.push_str("\n\t\"https://refused.bench.local\": true,\n}\n\n");
            let cond = "input.principal.type == \"Application\"\n";
            rego.push_str(&allow.replacen(cond, &format!("{cond}\tnot refused[input.resource.identifier]\n"), 1));
        }
    }
    rego
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_of_k_rules_has_k_result_rules_and_one_default() {
        for k in [1, 10, 1_000] {
            let rego = policy_of(Shape::Rules, k);
            assert_eq!(rego.matches("\nresult := ").count(), k, "{k} rules");
            assert_eq!(rego.matches("default result").count(), 1);
            assert!(rego.len() < caracal_sts::policy::MAX_SOURCE_BYTES, "fits the upload limit");
        }
    }

    #[test]
    fn a_policy_of_k_entries_has_one_allow_rule_and_k_entries() {
        for k in [1, 10, 1_000] {
            let rego = policy_of(Shape::Entries, k);
            assert_eq!(rego.matches("\nresult := ").count(), 1);
            assert_eq!(rego.matches(".bench.local\": true,").count(), k, "{k} entries");
            assert!(rego.contains("\tnot refused[input.resource.identifier]\n"), "the allow rule looks the resource up");
        }
    }

    /// Both shapes compile and allow the bench's request (and a session mint), as the STS will.
    #[test]
    fn both_shapes_compile_and_allow_the_bench_request() {
        let resource = serde_json::json!({"principal": {"type": "Application"}, "resource": {"identifier": crate::stack::RESOURCE}});
        let session = serde_json::json!({"principal": {"type": "Application"}, "resource": null});
        let refused = serde_json::json!({"principal": {"type": "Application"}, "resource": {"identifier": "https://r1.bench.local"}});
        for shape in [Shape::Rules, Shape::Entries] {
            let compiled = caracal_sts::policy::compile(&policy_of(shape, 10)).expect("compiles");
            let p = caracal_sts::policy::ActivePolicy::new("set", "v", compiled);
            for input in [&resource, &session] {
                assert!(caracal_sts::policy::evaluate(Some(&p), input).unwrap().allow, "{shape:?} allows {input}");
            }
            if matches!(shape, Shape::Entries) {
                assert!(!caracal_sts::policy::evaluate(Some(&p), &refused).unwrap().allow, "the table refuses r1");
            }
        }
    }
}
