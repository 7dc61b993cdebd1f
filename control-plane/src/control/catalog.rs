//! The allowlist: every `command subcommand` Control can run, and the admin API route it becomes.
//!
//! A static table, so what Control can do is reviewable in one place and nothing outside it is
//! reachable (there is no fallback, no pass-through path, and no process is ever started). Each
//! entry names the HTTP method, the route template (`{zone}` is always the token's zone; other
//! `{name}` segments come from the flag of that name) and the verb of the scope the caller needs:
//! `control:<command>:<verb>`. Unknown pairs are 501 `unsupported`.
//!
//! Flags are flat scalars ([`crate::control::body`]); a field whose value is a document (a
//! provider's `config_json`, a resource's `operations`, a simulation's `input`) is sent as JSON text
//! in the flag the operation names in [`Operation::json_flags`], and decoded before dispatch.

use serde::Serialize;

use crate::control::Refusal;

/// The verb part of the scope an operation needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verb {
    Read,
    Write,
    Delete,
}

impl Verb {
    fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Delete => "delete",
        }
    }
}

/// HTTP methods the catalog uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    Get,
    Post,
    Patch,
    Delete,
}

impl Method {
    /// As an `http` method.
    pub fn http(self) -> axum::http::Method {
        match self {
            Self::Get => axum::http::Method::GET,
            Self::Post => axum::http::Method::POST,
            Self::Patch => axum::http::Method::PATCH,
            Self::Delete => axum::http::Method::DELETE,
        }
    }

    /// Whether leftover flags travel as a JSON body (else as the query string).
    pub fn has_body(self) -> bool {
        matches!(self, Self::Post | Self::Patch)
    }
}

/// Where an operation is carried out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Target {
    /// A route of this control plane's admin API or Coordinator.
    Admin { method: Method, route: &'static str },
    /// Answered by Control itself: the catalog.
    Describe,
}

/// One allowed operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Operation {
    pub command: &'static str,
    pub subcommand: &'static str,
    pub verb: Verb,
    pub target: Target,
    /// Flags that carry a JSON document as text.
    pub json_flags: &'static [&'static str],
}

impl Operation {
    /// The scope the caller's token must carry.
    pub fn scope(&self) -> String {
        format!("control:{}:{}", self.command, self.verb.as_str())
    }
}

const fn op(command: &'static str, subcommand: &'static str, verb: Verb, method: Method, route: &'static str) -> Operation {
    Operation { command, subcommand, verb, target: Target::Admin { method, route }, json_flags: &[] }
}

impl Operation {
    const fn json(self, json_flags: &'static [&'static str]) -> Self {
        Self { json_flags, ..self }
    }
}

/// The fields of a resource definition that are documents, not scalars.
const RESOURCE_DOCUMENTS: &[&str] =
    &["endpoints", "load_balancing", "timeouts", "health", "retry", "connections", "operations", "mcp_operations", "credential"];

use Method::{Delete as DEL, Get as GET, Patch as PATCH, Post as POST};
use Verb::{Delete, Read, Write};

/// Everything Control can do.
pub static CATALOG: &[Operation] = &[
    op("app", "list", Read, GET, "/v1/zones/{zone}/applications"),
    op("app", "get", Read, GET, "/v1/zones/{zone}/applications/{id}"),
    // No `control:` traits through Control, and control keys are not touched (docs/control.md).
    op("app", "create", Write, POST, "/v1/zones/{zone}/applications"),
    op("app", "patch", Write, PATCH, "/v1/zones/{zone}/applications/{id}"),
    op("app", "rotate-secret", Write, POST, "/v1/zones/{zone}/applications/{id}/rotate-secret"),
    op("app", "dcr", Write, POST, "/v1/zones/{zone}/applications/dcr"),
    op("app", "delete", Delete, DEL, "/v1/zones/{zone}/applications/{id}"),
    op("resource", "list", Read, GET, "/v1/zones/{zone}/resources"),
    op("resource", "get", Read, GET, "/v1/zones/{zone}/resources/{id}"),
    op("resource", "create", Write, POST, "/v1/zones/{zone}/resources").json(RESOURCE_DOCUMENTS),
    op("resource", "patch", Write, PATCH, "/v1/zones/{zone}/resources/{id}").json(RESOURCE_DOCUMENTS),
    op("resource", "delete", Delete, DEL, "/v1/zones/{zone}/resources/{id}"),
    // A resource's upstream pool, one endpoint at a time (docs/pools.md §1): flat flags.
    op("resource", "endpoints", Read, GET, "/v1/zones/{zone}/resources/{id}/endpoints"),
    op("resource", "endpoint-add", Write, POST, "/v1/zones/{zone}/resources/{id}/endpoints"),
    op("resource", "endpoint-patch", Write, PATCH, "/v1/zones/{zone}/resources/{id}/endpoints/{n}"),
    op("resource", "endpoint-remove", Delete, DEL, "/v1/zones/{zone}/resources/{id}/endpoints/{n}"),
    // The original's name for credential providers (docs/providers.md).
    op("identity-provider", "list", Read, GET, "/v1/zones/{zone}/providers"),
    op("identity-provider", "get", Read, GET, "/v1/zones/{zone}/providers/{id}"),
    op("identity-provider", "create", Write, POST, "/v1/zones/{zone}/providers").json(&["config_json"]),
    op("identity-provider", "patch", Write, PATCH, "/v1/zones/{zone}/providers/{id}").json(&["config_json"]),
    op("identity-provider", "delete", Delete, DEL, "/v1/zones/{zone}/providers/{id}"),
    op("subject-issuer", "list", Read, GET, "/v1/zones/{zone}/subject-issuers"),
    op("subject-issuer", "get", Read, GET, "/v1/zones/{zone}/subject-issuers/{id}"),
    op("subject-issuer", "create", Write, POST, "/v1/zones/{zone}/subject-issuers"),
    op("subject-issuer", "delete", Delete, DEL, "/v1/zones/{zone}/subject-issuers/{id}"),
    op("policy", "list", Read, GET, "/v1/zones/{zone}/policies"),
    op("policy", "get", Read, GET, "/v1/zones/{zone}/policies/{id}"),
    op("policy", "create", Write, POST, "/v1/zones/{zone}/policies"),
    op("policy", "version", Write, POST, "/v1/zones/{zone}/policies/{id}/versions"),
    // Compiles and dry-runs the content; reads no zone data and stores nothing.
    op("policy", "validate", Read, POST, "/v1/policies/validate"),
    op("policy", "delete", Delete, DEL, "/v1/zones/{zone}/policies/{id}"),
    op("policy-set", "list", Read, GET, "/v1/zones/{zone}/policy-sets"),
    op("policy-set", "get", Read, GET, "/v1/zones/{zone}/policy-sets/{id}"),
    op("policy-set", "create", Write, POST, "/v1/zones/{zone}/policy-sets"),
    op("policy-set", "versions", Read, GET, "/v1/zones/{zone}/policy-sets/{id}/versions"),
    op("policy-set", "version-get", Read, GET, "/v1/zones/{zone}/policy-sets/{id}/versions/{version_id}"),
    op("policy-set", "version", Write, POST, "/v1/zones/{zone}/policy-sets/{id}/versions").json(&["manifest"]),
    op("policy-set", "activate", Write, POST, "/v1/zones/{zone}/policy-sets/{id}/activate"),
    op("policy-set", "activation-status", Read, GET, "/v1/zones/{zone}/policy-sets/{id}/activation-status"),
    // Evaluates without activating anything.
    op("policy-set", "simulate", Read, POST, "/v1/zones/{zone}/policy-sets/{id}/simulate").json(&["input"]),
    op("policy-set", "delete", Delete, DEL, "/v1/zones/{zone}/policy-sets/{id}"),
    op("authority-record", "list", Read, GET, "/v1/zones/{zone}/authority-records"),
    op("authority-record", "revoke", Delete, POST, "/v1/zones/{zone}/authority-records/{id}/revoke"),
    op("audit", "tail", Read, GET, "/v1/zones/{zone}/audit"),
    op("audit", "admin", Read, GET, "/v1/zones/{zone}/admin-audit"),
    op("audit", "by-request", Read, GET, "/v1/zones/{zone}/audit/by-request/{request_id}"),
    op("audit", "explain", Read, GET, "/v1/zones/{zone}/audit/by-request/{request_id}/explain"),
    op("audit", "verify", Read, GET, "/v1/zones/{zone}/audit/verify"),
    op("zone", "get", Read, GET, "/v1/zones/{zone}"),
    op("zone", "dcr-status", Read, GET, "/v1/zones/{zone}/dcr-status"),
    op("session", "list", Read, GET, "/v1/zones/{zone}/sessions"),
    op("session", "get", Read, GET, "/zones/{zone}/agents/{id}"),
    op("session", "suspend", Write, POST, "/zones/{zone}/agents/{id}/suspend"),
    op("session", "resume", Write, POST, "/zones/{zone}/agents/{id}/resume"),
    op("session", "terminate", Delete, DEL, "/zones/{zone}/agents/{id}"),
    op("delegation", "get", Read, GET, "/zones/{zone}/delegations/{id}"),
    op("delegation", "inbound", Read, GET, "/zones/{zone}/delegations/inbound/{sid}"),
    op("delegation", "revoke", Delete, POST, "/zones/{zone}/delegations/{id}/revoke"),
    op("keys", "rotate", Write, POST, "/v1/zones/{zone}/keys/rotate"),
    // Read only: deciding a step-up is a human's act, never an automation's.
    op("approval", "list", Read, GET, "/v1/zones/{zone}/approvals"),
    op("approval", "get", Read, GET, "/v1/zones/{zone}/approvals/{id}"),
    Operation { command: "catalog", subcommand: "describe", verb: Read, target: Target::Describe, json_flags: &[] },
];

/// The operation for `command subcommand`, compared exactly (no case folding, no prefixes).
pub fn lookup(command: &str, subcommand: &str) -> Result<&'static Operation, Refusal> {
    CATALOG.iter().find(|o| o.command == command && o.subcommand == subcommand).ok_or_else(|| {
        if CATALOG.iter().any(|o| o.command == command) {
            Refusal::Unsupported(format!("subcommand {subcommand:?} is not supported for {command:?}"))
        } else {
            Refusal::Unsupported(format!("command {command:?} is not supported"))
        }
    })
}

/// The `{name}` placeholders of a route template, in order.
pub fn placeholders(route: &str) -> impl Iterator<Item = &str> {
    route.split('/').filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_is_exact() {
        let op = lookup("resource", "create").unwrap();
        assert_eq!(op.scope(), "control:resource:write");
        assert_eq!(lookup("session", "terminate").unwrap().scope(), "control:session:delete");
        assert_eq!(lookup("policy-set", "simulate").unwrap().scope(), "control:policy-set:read");
        assert_eq!(lookup("identity-provider", "create").unwrap().json_flags, ["config_json"]);
        for (c, s) in
            [("sh", "-c"), ("Resource", "create"), ("resource", "create "), ("resource", "exec"), ("", ""), ("resource/..", "list")]
        {
            assert!(matches!(lookup(c, s), Err(Refusal::Unsupported(_))), "{c:?} {s:?} must be unsupported");
        }
    }

    #[test]
    fn every_entry_is_unique_zone_confined_and_well_formed() {
        for (i, o) in CATALOG.iter().enumerate() {
            assert!(
                !CATALOG[..i].iter().any(|p| p.command == o.command && p.subcommand == o.subcommand),
                "{} {} listed twice",
                o.command,
                o.subcommand
            );
            let Target::Admin { method, route } = o.target else { continue };
            let zone_free = route == "/v1/policies/validate";
            assert!(
                zone_free || route == "/v1/zones/{zone}" || route.starts_with("/v1/zones/{zone}/") || route.starts_with("/zones/{zone}/"),
                "{route} leaves the zone"
            );
            for p in placeholders(route).skip(usize::from(!zone_free)) {
                assert!(matches!(p, "id" | "sid" | "n" | "version_id" | "request_id"), "{route}: unexpected placeholder {p}");
            }
            // The two evaluations (simulate, validate) change nothing but take a document.
            let evaluates = matches!(o.subcommand, "simulate" | "validate");
            if o.verb == Verb::Read && !evaluates {
                assert_eq!(method, Method::Get, "{route}: reads never change anything");
            }
            for f in o.json_flags {
                assert!(method.has_body(), "{route}: a document flag {f} needs a body");
            }
        }
    }
}
