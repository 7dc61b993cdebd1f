//! The allowlist: every `command subcommand` Control can run, and the admin API route it becomes.
//!
//! A static table, so what Control can do is reviewable in one place and nothing outside it is
//! reachable (there is no fallback, no pass-through path, and no process is ever started). Each
//! entry names the HTTP method, the route template (`{zone}` is always the token's zone; other
//! `{name}` segments come from the flag of that name) and the verb of the scope the caller needs:
//! `control:<command>:<verb>`. Unknown pairs are 501 `unsupported`.

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
}

impl Operation {
    /// The scope the caller's token must carry.
    pub fn scope(&self) -> String {
        format!("control:{}:{}", self.command, self.verb.as_str())
    }
}

const fn op(command: &'static str, subcommand: &'static str, verb: Verb, method: Method, route: &'static str) -> Operation {
    Operation { command, subcommand, verb, target: Target::Admin { method, route } }
}

use Method::{Delete as DEL, Get as GET, Patch as PATCH, Post as POST};
use Verb::{Delete, Read, Write};

/// Everything Control can do.
pub static CATALOG: &[Operation] = &[
    op("app", "list", Read, GET, "/v1/zones/{zone}/applications"),
    op("app", "get", Read, GET, "/v1/zones/{zone}/applications/{id}"),
    op("app", "create", Write, POST, "/v1/zones/{zone}/applications"),
    op("app", "delete", Delete, DEL, "/v1/zones/{zone}/applications/{id}"),
    op("resource", "list", Read, GET, "/v1/zones/{zone}/resources"),
    op("resource", "get", Read, GET, "/v1/zones/{zone}/resources/{id}"),
    op("resource", "create", Write, POST, "/v1/zones/{zone}/resources"),
    op("resource", "patch", Write, PATCH, "/v1/zones/{zone}/resources/{id}"),
    op("resource", "delete", Delete, DEL, "/v1/zones/{zone}/resources/{id}"),
    // A resource's upstream pool, one endpoint at a time (docs/pools.md §1): flat flags.
    op("resource", "endpoints", Read, GET, "/v1/zones/{zone}/resources/{id}/endpoints"),
    op("resource", "endpoint-add", Write, POST, "/v1/zones/{zone}/resources/{id}/endpoints"),
    op("resource", "endpoint-patch", Write, PATCH, "/v1/zones/{zone}/resources/{id}/endpoints/{n}"),
    op("resource", "endpoint-remove", Delete, DEL, "/v1/zones/{zone}/resources/{id}/endpoints/{n}"),
    op("policy-set", "list", Read, GET, "/v1/zones/{zone}/policy-sets"),
    op("policy-set", "get", Read, GET, "/v1/zones/{zone}/policy-sets/{id}"),
    op("policy-set", "create", Write, POST, "/v1/zones/{zone}/policy-sets"),
    op("policy-set", "versions", Read, GET, "/v1/zones/{zone}/policy-sets/{id}/versions"),
    op("policy-set", "version", Write, POST, "/v1/zones/{zone}/policy-sets/{id}/versions"),
    op("policy-set", "activate", Write, POST, "/v1/zones/{zone}/policy-sets/{id}/activate"),
    op("policy-set", "delete", Delete, DEL, "/v1/zones/{zone}/policy-sets/{id}"),
    op("authority-record", "list", Read, GET, "/v1/zones/{zone}/authority-records"),
    op("authority-record", "revoke", Delete, POST, "/v1/zones/{zone}/authority-records/{id}/revoke"),
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
    Operation { command: "catalog", subcommand: "describe", verb: Read, target: Target::Describe },
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
            assert!(route.starts_with("/v1/zones/{zone}/") || route.starts_with("/zones/{zone}/"), "{route} leaves the zone");
            for p in placeholders(route).skip(1) {
                assert!(matches!(p, "id" | "sid" | "n"), "{route}: unexpected placeholder {p}");
            }
            if o.verb == Verb::Read {
                assert_eq!(method, Method::Get, "{route}: reads never change anything");
            }
        }
    }
}
