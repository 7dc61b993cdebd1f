//! Step-up: allows that require a human approval before anything is minted (docs/policy.md).
//!
//! A policy asks for one with an allowing decision whose diagnostics carry
//! `{"step_up_required": {"type": "human_approval", "tiers": [{"tier", "approver", "ttl_seconds"}]}}`
//! (a single declaration may stand in for `tiers`). The declarations of every allowing decision of a
//! request merge into one [`Requirement`]: tiers joined, the most specific approver, the shortest
//! lifetime. The request is then bound to a [`binding`] hash, held in Postgres ([`holds`]) and
//! answered 401 `interaction_required` until an operator approves that exact request.
//!
//! Only operators decide approvals here: a declaration demanding the subject's own approval needs a
//! user session, which this STS does not federate yet, so it is refused rather than downgraded.

pub mod holds;

use std::time::Duration;

use serde_json::Value;

use crate::error::StsError;

/// Who may decide an approval.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Approver {
    /// An operator (admin token for the zone).
    Operator,
    /// Anyone entitled to decide: today, an operator.
    Any,
    /// The federated user the request acts for, with their own session mandate; nobody else.
    Subject,
}

impl Approver {
    /// The stored value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Operator => "operator",
            Self::Any => "any",
            Self::Subject => "subject",
        }
    }

    /// Default and largest hold lifetime of the class.
    fn ttl_bounds(self) -> (Duration, Duration) {
        match self {
            Self::Operator => (Duration::from_secs(4 * 3600), Duration::from_secs(7 * 86400)),
            Self::Any | Self::Subject => (Duration::from_secs(15 * 60), Duration::from_secs(86400)),
        }
    }
}

/// Shortest hold lifetime, whatever a policy declares.
pub const MIN_TTL: Duration = Duration::from_secs(60);

/// The merged step-up demand of one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requirement {
    /// Distinct tier labels, sorted, joined by `,`.
    pub tier: String,
    pub approver: Approver,
    /// How long the hold may wait for a decision and then for its mint.
    pub ttl: Duration,
}

fn malformed(why: &str) -> StsError {
    StsError::AccessDenied(format!("malformed step-up declaration (malformed_approval_data): {why}"))
}

/// Merges the step-up declarations found in the diagnostics of the allowing decisions; `None` when
/// no decision asks for one. A malformed declaration denies (the policy meant to ask for something).
pub fn requirement<'a>(diagnostics: impl IntoIterator<Item = &'a Value>) -> Result<Option<Requirement>, StsError> {
    let mut tiers: Vec<String> = Vec::new();
    let (mut operator, mut subject, mut any_decl) = (false, false, false);
    let mut ttl: Option<u64> = None;
    for d in diagnostics.into_iter().filter_map(|d| d.get("step_up_required")) {
        if d.get("type").and_then(Value::as_str) != Some("human_approval") {
            return Err(malformed("type must be \"human_approval\""));
        }
        let decls: Vec<&Value> = match d.get("tiers") {
            Some(Value::Array(list)) if !list.is_empty() => list.iter().collect(),
            Some(_) => return Err(malformed("tiers must be a non-empty array")),
            None => vec![d],
        };
        for decl in decls {
            let tier = decl.get("tier").and_then(Value::as_str).ok_or_else(|| malformed("tier is required"))?;
            if tier.is_empty() || tier.len() > 64 || !tier.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')) {
                return Err(malformed("tier must be 1..64 of [A-Za-z0-9_.-]"));
            }
            tiers.push(tier.to_owned());
            match decl.get("approver").map(Value::as_str) {
                None | Some(Some("operator")) => operator = true,
                Some(Some("subject")) => subject = true,
                Some(Some("any")) => any_decl = true,
                Some(_) => return Err(malformed("approver must be operator, subject or any")),
            }
            match decl.get("ttl_seconds") {
                None | Some(Value::Null) => {}
                Some(v) => {
                    let secs = v.as_u64().filter(|s| *s > 0).ok_or_else(|| malformed("ttl_seconds must be a positive integer"))?;
                    ttl = Some(ttl.map_or(secs, |t| t.min(secs)));
                }
            }
        }
    }
    if tiers.is_empty() {
        return Ok(None);
    }
    if operator && subject {
        return Err(StsError::AccessDenied("approval requires separate operator and subject decisions".into()));
    }
    let approver = match (subject, operator || !any_decl) {
        (true, _) => Approver::Subject,
        (false, true) => Approver::Operator,
        (false, false) => Approver::Any,
    };
    let (default, max) = approver.ttl_bounds();
    let ttl = ttl.map_or(default, Duration::from_secs).clamp(MIN_TTL, max);
    tiers.sort_unstable();
    tiers.dedup();
    Ok(Some(Requirement { tier: tiers.join(","), approver, ttl }))
}

/// What an approval is bound to: exactly the request that was held.
#[derive(Clone, Copy, Debug)]
pub struct Subject<'a> {
    pub zone_id: &'a str,
    pub application_id: &'a str,
    pub principal: &'a str,
    pub authority_record_id: Option<&'a str>,
    pub agent_session_id: Option<&'a str>,
    pub delegation_edge_id: Option<&'a str>,
    pub resources: &'a [String],
    pub scopes: &'a [String],
    pub policy_version_id: Option<&'a str>,
}

/// Hex SHA-256 over NUL-separated labelled sections, so no value can spill into another field.
/// Resources are trimmed, lower-cased, deduplicated and sorted; scopes deduplicated and sorted.
/// A policy change between hold and retry changes the binding, so an approval given under one
/// policy never authorizes a mint under another.
pub fn binding(s: &Subject<'_>) -> String {
    let mut resources: Vec<String> = s.resources.iter().map(|r| r.trim().to_ascii_lowercase()).collect();
    resources.sort_unstable();
    resources.dedup();
    let mut scopes: Vec<&str> = s.scopes.iter().map(|x| x.trim()).collect();
    scopes.sort_unstable();
    scopes.dedup();
    let sections: [(&str, &str); 10] = [
        ("zone", s.zone_id),
        ("resources", &resources.join("\n")),
        ("scopes", &scopes.join("\n")),
        ("principal", s.principal),
        ("authority_record", s.authority_record_id.unwrap_or("")),
        ("session", s.agent_session_id.unwrap_or("")),
        ("delegation", s.delegation_edge_id.unwrap_or("")),
        ("application", s.application_id),
        ("policy_set_version", s.policy_version_id.unwrap_or("")),
        ("contract", crate::policy::INPUT_SCHEMA_VERSION),
    ];
    let mut buf = Vec::with_capacity(256);
    for (label, value) in sections {
        buf.extend_from_slice(label.as_bytes());
        buf.push(0);
        buf.extend_from_slice(value.as_bytes());
        buf.push(0);
    }
    caracal_shared::sig::sha256_hex(&buf)
}

/// Whether an approval carried by a presented mandate (`approved`, consumed by an earlier mint)
/// also authorizes this request: the same application and policy version, a lineage it was given
/// for, every requested resource and scope within what was approved, and every tier demanded now
/// among the tiers approved then. Anything else needs a fresh approval; `Err` names the mismatch.
pub fn covers(approved: &holds::Approved, s: &Subject<'_>, demanded: &Requirement) -> Result<(), &'static str> {
    if approved.application_id != s.application_id {
        return Err("approved for another application");
    }
    if approved.policy_version_id.as_deref() != s.policy_version_id {
        return Err("approved under another policy version");
    }
    let same_or_unbound = |held: &Option<String>, now: Option<&str>| held.as_deref().is_none_or(|h| Some(h) == now);
    if !same_or_unbound(&approved.authority_record_id, s.authority_record_id)
        || !same_or_unbound(&approved.agent_session_id, s.agent_session_id)
        || !same_or_unbound(&approved.delegation_edge_id, s.delegation_edge_id)
    {
        return Err("approved for another session or delegation");
    }
    let norm = |r: &str| r.trim().to_ascii_lowercase();
    if !s.resources.iter().all(|r| approved.resources.iter().any(|a| norm(a) == norm(r))) {
        return Err("a resource was not approved");
    }
    if !s.scopes.iter().all(|x| approved.scopes.iter().any(|a| a.trim() == x.trim())) {
        return Err("a scope was not approved");
    }
    if !demanded.tier.split(',').all(|t| approved.tier.split(',').any(|a| a == t)) {
        return Err("a demanded tier was not approved");
    }
    Ok(())
}

/// The body of a 401 `interaction_required` (besides `error`, `error_description`, `requestId`).
#[derive(Clone, Debug, serde::Serialize)]
pub struct Challenge {
    pub approval_id: String,
    pub approval_type: &'static str,
    pub state: String,
    pub tier: String,
    pub binding: String,
    pub approval_expires_at: String,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn req(diags: Value) -> Result<Option<Requirement>, StsError> {
        requirement(diags.as_array().unwrap())
    }

    #[test]
    fn merges_declarations_strictly() {
        assert_eq!(req(json!([{"reason": "ok"}])).unwrap(), None);
        let r = req(json!([
            {"step_up_required": {"type": "human_approval", "tiers": [{"tier": "finance", "approver": "any", "ttl_seconds": 900}]}},
            {"step_up_required": {"type": "human_approval", "tier": "audit", "approver": "operator", "ttl_seconds": 600}},
            {"step_up_required": {"type": "human_approval", "tier": "finance"}},
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(r, Requirement { tier: "audit,finance".into(), approver: Approver::Operator, ttl: Duration::from_secs(600) });
        let any = req(json!([{"step_up_required": {"type": "human_approval", "tier": "t", "approver": "any"}}])).unwrap().unwrap();
        assert_eq!((any.approver, any.ttl), (Approver::Any, Duration::from_secs(900)));
        let own = req(json!([{"step_up_required": {"type": "human_approval", "tier": "t", "approver": "subject"}}])).unwrap().unwrap();
        assert_eq!(own.approver, Approver::Subject, "reserved for the user the request acts for");
        let clamped = req(json!([{"step_up_required": {"type": "human_approval", "tier": "t", "ttl_seconds": 1}}])).unwrap().unwrap();
        assert_eq!(clamped.ttl, MIN_TTL);
        let capped = req(json!([{"step_up_required": {"type": "human_approval", "tier": "t", "approver": "any", "ttl_seconds": 999_999}}]))
            .unwrap()
            .unwrap();
        assert_eq!(capped.ttl, Duration::from_secs(86400));
    }

    #[test]
    fn refuses_what_it_cannot_honour() {
        let cases = [
            json!([{"step_up_required": {"type": "mfa", "tier": "t"}}]),
            json!([{"step_up_required": {"type": "human_approval"}}]),
            json!([{"step_up_required": {"type": "human_approval", "tiers": []}}]),
            json!([{"step_up_required": {"type": "human_approval", "tier": "a b"}}]),
            json!([{"step_up_required": {"type": "human_approval", "tier": "t", "approver": "root"}}]),
            json!([{"step_up_required": {"type": "human_approval", "tier": "t", "ttl_seconds": -5}}]),
            json!([
                {"step_up_required": {"type": "human_approval", "tier": "t", "approver": "subject"}},
                {"step_up_required": {"type": "human_approval", "tier": "u", "approver": "operator"}},
            ]),
        ];
        for c in cases {
            assert!(matches!(req(c.clone()), Err(StsError::AccessDenied(_))), "{c}");
        }
    }

    #[test]
    fn an_inherited_approval_covers_only_what_was_approved() {
        let resources = ["https://api".to_owned()];
        let scopes = ["write".to_owned()];
        let approved = holds::Approved {
            application_id: "app".into(),
            authority_record_id: None,
            agent_session_id: None,
            delegation_edge_id: None,
            resources: vec!["https://API".into(), "https://other".into()],
            scopes: vec!["read".into(), "write".into()],
            policy_version_id: Some("v1".into()),
            tier: "audit,writes".into(),
        };
        let s = Subject {
            zone_id: "z",
            application_id: "app",
            principal: "app",
            authority_record_id: Some("root"),
            agent_session_id: None,
            delegation_edge_id: None,
            resources: &resources,
            scopes: &scopes,
            policy_version_id: Some("v1"),
        };
        let demanded = Requirement { tier: "writes".into(), approver: Approver::Operator, ttl: MIN_TTL };
        assert_eq!(covers(&approved, &s, &demanded), Ok(()));
        let admin = ["admin".to_owned()];
        let elsewhere = ["https://elsewhere".to_owned()];
        let cases: [(Subject<'_>, &str); 4] = [
            (Subject { application_id: "other", ..s }, "another application"),
            (Subject { policy_version_id: Some("v2"), ..s }, "another policy version"),
            (Subject { scopes: &admin, ..s }, "a scope"),
            (Subject { resources: &elsewhere, ..s }, "a resource"),
        ];
        for (subject, why) in cases {
            assert!(covers(&approved, &subject, &demanded).unwrap_err().contains(why), "{why}");
        }
        let finance = Requirement { tier: "finance".into(), ..demanded.clone() };
        assert!(covers(&approved, &s, &finance).unwrap_err().contains("tier"));
        let bound = holds::Approved { authority_record_id: Some("another-root".into()), ..approved.clone() };
        assert!(covers(&bound, &s, &demanded).unwrap_err().contains("session"));
    }

    #[test]
    fn binding_covers_every_section() {
        let resources = ["https://api".to_owned(), "billing".to_owned()];
        let scopes = ["read".to_owned(), "write".to_owned()];
        let base = Subject {
            zone_id: "z",
            application_id: "app",
            principal: "app",
            authority_record_id: Some("s1"),
            agent_session_id: None,
            delegation_edge_id: None,
            resources: &resources,
            scopes: &scopes,
            policy_version_id: Some("v1"),
        };
        let h = binding(&base);
        assert_eq!(h.len(), 64);
        let reordered = ["BILLING ".to_owned(), "https://api".to_owned()];
        assert_eq!(binding(&Subject { resources: &reordered, ..base }), h, "resource order and case do not matter");
        let other_scopes = ["read".to_owned()];
        for changed in [
            Subject { scopes: &other_scopes, ..base },
            Subject { policy_version_id: Some("v2"), ..base },
            Subject { authority_record_id: None, ..base },
            Subject { delegation_edge_id: Some("e"), ..base },
            Subject { zone_id: "z2", ..base },
            // A value cannot masquerade as another section.
            Subject { principal: "app\0authority_record", authority_record_id: None, ..base },
        ] {
            assert_ne!(binding(&changed), h, "{changed:?}");
        }
    }
}
