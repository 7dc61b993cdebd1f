//! **Resource exchange** — the gateway's signed per-request exchange with a gateway mandate as
//! `subject_token` ⇒ `use=resource`, `aud=[resource]`, plus the upstream directive.
//!
//! Narrowing (each rule in [`authorize`]): exactly one resource, targeted by the mandate; the
//! application still live (its traits go into the policy input like on every other flow); scopes
//! = the mandate's ∩ the resource's. On an **enforced** resource the request must be a declared
//! operation (method and path pattern) whose scope the mandate holds, and its path must be plain:
//! no `;` path parameters, backslashes or percent-encoded separators, dots, `%` or control
//! characters — each is read differently by some upstream (Tomcat's `..;`, `%2F` decoded after
//! routing), so such a path could reach an operation other than the one matched here.
//! Lifetime: `RESOURCE_MANDATE_TTL_SECONDS`, never past the gateway mandate's expiry. Delegated
//! authority is re-resolved against the live graph, so a suspended session stops its mandates
//! before any announcement. A step-up demand is settled only by an approval the mandate carries
//! and that covers this request; the gateway cannot hold a request for a human.

use std::collections::BTreeMap;

use caracal_shared::exchange::TokenResponse;
use caracal_shared::mandate::{Claims, Use};
use caracal_shared::mcp::{Kind, Message, Post};
use serde_json::json;

use super::grant::input;
use super::sign::{response, seconds_left};
use crate::Sts;
use crate::error::StsError;
use crate::form::TokenForm;
use crate::operations;
use crate::step_up;
use crate::store::Resource;

impl Sts {
    pub(super) async fn resource_exchange(&self, form: &TokenForm, subject: &str, request_id: &str) -> Result<TokenResponse, StsError> {
        let zone_id = form.zone_id.as_str();
        let mandate = self.verify_subject(zone_id, subject, Use::Gateway).await?;
        if form.application_id.as_deref() != Some(mandate.client_id.as_str()) {
            return Err(StsError::InvalidSubjectToken("application_id does not match the mandate"));
        }
        let [identifier] = form.resources.as_slice() else {
            return Err(StsError::InvalidRequest("the gateway exchange names exactly one resource".into()));
        };
        let (Some(method), Some(path)) = (form.request_method.as_deref(), form.request_path.as_deref()) else {
            return Err(StsError::InvalidRequest("request_method and request_path are required".into()));
        };
        if !mandate.targets(identifier) {
            return Err(StsError::AccessDenied("the mandate does not target this resource".into()));
        }
        self.require_live_anchors(zone_id, mandate.anchors())?;
        if let (Some(session), Some(edge)) = (&mandate.agent_session_id, &mandate.delegation_edge_id) {
            crate::delegation::resolve(&self.db, zone_id, &mandate.client_id, session, edge).await?;
        }
        let resource = self
            .catalog
            .resource(zone_id, identifier)
            .await?
            .ok_or_else(|| StsError::AccessDenied("policy denied (resource_not_found)".into()))?;
        // An archived application's mandates stop here even before its sessions' revocation lands.
        let app = self.catalog.application(zone_id, &mandate.client_id).await?.filter(|a| a.live()).ok_or(StsError::SessionInactive)?;
        let scopes = authorize(&resource, &mandate, method, path)?;
        let mcp = mcp_post(&resource, method, form.mcp.as_ref())?;
        if let Some(post) = mcp {
            authorize_mcp(&resource, &scopes, post)?;
        }
        let keys = self.keys.zone(zone_id).await?;
        let action = json!({"id": "TokenExchange", "use": "resource", "method": method.to_ascii_uppercase(), "path": path});
        // An MCP POST is decided message by message (every element of a batch, never only the
        // first): each evaluation sees its own `context.mcp`, and any denial refuses the POST.
        let contexts: Vec<Option<serde_json::Value>> = match mcp {
            Some(post) => post.messages.iter().map(|m| Some(mcp_context(post, m))).collect(),
            None => vec![None],
        };
        let mut granted: Option<super::grant::Grant> = None;
        for context in contexts {
            let g = self
                .grant(zone_id, std::slice::from_ref(identifier), |r| {
                    let mut v = input(&app, zone_id, r, action.clone(), Some(&mandate), &scopes, request_id);
                    if let Some(c) = &context {
                        v["context"]["mcp"] = c.clone();
                    }
                    Ok(v)
                })
                .await?;
            match &mut granted {
                None => granted = Some(g),
                Some(first) if first.step_up.is_none() => first.step_up = g.step_up,
                Some(_) => {}
            }
        }
        let granted = granted.expect("at least one evaluation");
        if let Some(demanded) = &granted.step_up {
            let subject = step_up::Subject {
                principal: &mandate.sub,
                authority_record_id: Some(&mandate.root_sid),
                agent_session_id: mandate.agent_session_id.as_deref(),
                delegation_edge_id: mandate.delegation_edge_id.as_deref(),
                ..granted.subject(zone_id, &mandate.client_id, std::slice::from_ref(identifier), &scopes)
            };
            let covered = match mandate.approval_id.as_deref() {
                Some(id) => self.inherited_covers(id, &subject, demanded).await?,
                None => false,
            };
            if !covered {
                return Err(StsError::AccessDenied(
                    "step-up required: obtain an approval covering this request when minting the gateway mandate".into(),
                ));
            }
        }
        let ttl = self.cfg.resource_ttl.as_secs().min(seconds_left(mandate.exp).max(1));
        // Resource mandates inherit the presented mandate's root and delegation, and narrow its scope.
        let claims = Claims {
            aud: vec![resource.identifier.clone()],
            scope: scopes.join(" "),
            root_sid: mandate.root_sid.clone(),
            target: vec![resource.identifier.clone()],
            agent_session_id: mandate.agent_session_id.clone(),
            delegation_edge_id: mandate.delegation_edge_id.clone(),
            delegation_path: mandate.delegation_path.clone(),
            delegation_chain: mandate.delegation_chain.clone(),
            hop_count: mandate.hop_count,
            delegation_graph_epoch: mandate.delegation_graph_epoch,
            approval_id: mandate.approval_id.clone(),
            mcp_calls: mcp.map(Post::calls).unwrap_or_default(),
            ..self.fresh_claims(zone_id, &mandate.sub, &mandate.client_id, Use::Resource, mandate.sub_type, ttl)
        };
        let token = self.sign(&keys, &claims)?;
        let directive = self.directive(zone_id, &resource).await?;
        self.metrics.exchanges.with_label_values(&[Use::Resource.as_str()]).inc();
        let upstreams = BTreeMap::from([(resource.identifier.clone(), directive)]);
        Ok(response(token, ttl, &claims.scope, vec![resource.identifier.clone()], Some(upstreams), granted.policy_version_id.clone()))
    }
}

/// The scopes the resource mandate carries (the mandate's ∩ the resource's), once an enforced
/// resource has matched the request to a declared operation whose scope the mandate holds.
fn authorize(resource: &Resource, mandate: &Claims, method: &str, path: &str) -> Result<Vec<String>, StsError> {
    let scopes: Vec<String> = mandate.scopes().filter(|s| resource.scopes.iter().any(|r| r == s)).map(str::to_owned).collect();
    if !resource.enforced() {
        return Ok(scopes);
    }
    if let Some(why) = operations::ambiguity(path) {
        return Err(StsError::OperationNotPermitted(format!(
            "the path is ambiguous ({why}); an enforced resource accepts only plain paths"
        )));
    }
    let op = resource.operations.iter().find(|op| op.matches(method, path)).ok_or_else(|| {
        StsError::OperationNotPermitted(format!("{} {path} is not a declared operation of this resource", method.to_ascii_uppercase()))
    })?;
    if !scopes.contains(&op.scope) {
        return Err(StsError::OperationNotPermitted(format!("the mandate lacks the scope {:?} this operation requires", op.scope)));
    }
    Ok(scopes)
}

/// The MCP facts this exchange is decided on: a POST to an MCP resource must carry them (a client
/// that hides its MCP-ness from the gateway gets nothing); other requests to it (`GET` streams,
/// `DELETE` of a session) are decided by their method and path. An HTTP resource ignores them.
fn mcp_post<'a>(resource: &Resource, method: &str, post: Option<&'a Post>) -> Result<Option<&'a Post>, StsError> {
    match (resource.mcp(), post) {
        (false, _) => Ok(None),
        (true, Some(post)) => Ok(Some(post)),
        (true, None) if method.eq_ignore_ascii_case("POST") => Err(StsError::McpBodyRequired),
        (true, None) => Ok(None),
    }
}

/// On an enforced MCP resource every request of the POST must be a declared MCP operation whose
/// scope the mandate holds; notifications and responses ask for nothing and go to the policy alone.
fn authorize_mcp(resource: &Resource, scopes: &[String], post: &Post) -> Result<(), StsError> {
    if !resource.enforced() {
        return Ok(());
    }
    for m in post.messages.iter().filter(|m| m.kind == Kind::Request) {
        let method = m.method.as_deref().unwrap_or_default();
        let target = m.name.as_deref().or(m.uri.as_deref());
        let declared: Vec<_> = resource.mcp_operations.iter().filter(|op| op.matches(method, target)).collect();
        if declared.is_empty() {
            return Err(StsError::OperationNotPermitted(match target {
                Some(t) => format!("{method} {t:?} is not a declared MCP operation of this resource"),
                None => format!("{method} is not a declared MCP operation of this resource"),
            }));
        }
        if !declared.iter().any(|op| scopes.contains(&op.scope)) {
            let scope = declared[0].scope.clone();
            return Err(StsError::McpScopeInsufficient {
                description: format!("the mandate lacks the scope {scope:?} this MCP operation requires"),
                scope,
            });
        }
    }
    Ok(())
}

/// `input.context.mcp` for one message (`docs/policy.md`).
fn mcp_context(post: &Post, m: &Message) -> serde_json::Value {
    json!({
        "kind": m.kind,
        "method": m.method,
        "name": m.name,
        "uri": m.uri,
        "args_sha256": m.args_sha256,
        "protocol_version": post.protocol_version,
        "session_id": post.session_id,
        "batch": post.batch,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exchange::sign::tests::claims;
    use crate::operations::Operation;

    fn resource(enforcement: &str) -> Resource {
        let op = |method: &str, path: &str, scope: &str| Operation { method: method.into(), path: path.into(), scope: scope.into() };
        Resource {
            scopes: vec!["read".into(), "write".into(), "admin".into()],
            operations: sqlx::types::Json(vec![
                op("GET", "/items/*", "read"),
                op("POST", "/items", "write"),
                op("GET", "/admin/**", "admin"),
            ]),
            operation_enforcement: enforcement.into(),
            ..Resource::plain("http://up")
        }
    }

    #[test]
    fn declared_operations_and_their_scopes() {
        let m = claims(Use::Gateway); // scope "read write"
        let r = resource("enforced");
        assert_eq!(authorize(&r, &m, "GET", "/items/1").unwrap(), vec!["read", "write"]);
        assert!(authorize(&r, &m, "POST", "/items").is_ok());
        assert!(matches!(authorize(&r, &m, "DELETE", "/items/1"), Err(StsError::OperationNotPermitted(_))), "undeclared method");
        assert!(matches!(authorize(&r, &m, "GET", "/admin/users"), Err(StsError::OperationNotPermitted(_))), "scope not held");
        assert!(authorize(&resource("audit"), &m, "DELETE", "/anything").is_ok(), "only enforced resources check operations");
    }

    fn mcp_resource(enforcement: &str) -> Resource {
        use crate::operations::McpOperation;
        let op = |m: &str, name: Option<&str>, scope: &str| McpOperation {
            mcp_method: m.into(),
            name: name.map(Into::into),
            scope: scope.into(),
        };
        Resource {
            protocol: "mcp".into(),
            mcp_operations: sqlx::types::Json(vec![
                op("tools/list", None, "read"),
                op("tools/call", Some("read_*"), "read"),
                op("tools/call", Some("delete_*"), "admin"),
            ]),
            ..resource(enforcement)
        }
    }

    fn post(messages: Vec<Message>) -> Post {
        Post { protocol_version: Some("2025-11-25".into()), session_id: None, batch: messages.len() > 1, messages }
    }

    fn request(method: &str, name: Option<&str>) -> Message {
        Message { kind: Kind::Request, method: Some(method.into()), name: name.map(Into::into), uri: None, args_sha256: None }
    }

    #[test]
    fn a_post_to_an_mcp_resource_needs_the_mcp_facts() {
        let r = mcp_resource("enforced");
        assert!(matches!(mcp_post(&r, "POST", None), Err(StsError::McpBodyRequired)), "fail closed");
        assert!(matches!(mcp_post(&r, "GET", None), Ok(None)), "a GET stream is decided by method and path");
        let p = post(vec![request("tools/list", None)]);
        assert!(mcp_post(&r, "POST", Some(&p)).unwrap().is_some());
        assert!(mcp_post(&resource("enforced"), "POST", Some(&p)).unwrap().is_none(), "an HTTP resource ignores them");
    }

    #[test]
    fn declared_mcp_operations_and_their_scopes() {
        let scopes = vec!["read".to_owned(), "write".to_owned()];
        let r = mcp_resource("enforced");
        assert!(authorize_mcp(&r, &scopes, &post(vec![request("tools/call", Some("read_file"))])).is_ok());
        let undeclared = authorize_mcp(&r, &scopes, &post(vec![request("tools/call", Some("write_file"))]));
        assert!(matches!(undeclared, Err(StsError::OperationNotPermitted(ref d)) if d.contains("write_file")), "{undeclared:?}");
        let scoped = authorize_mcp(&r, &scopes, &post(vec![request("tools/call", Some("delete_repo"))]));
        assert!(matches!(scoped, Err(StsError::McpScopeInsufficient { ref scope, .. }) if scope == "admin"), "{scoped:?}");
        let batch = post(vec![request("tools/list", None), request("tools/call", Some("delete_repo"))]);
        assert!(authorize_mcp(&r, &scopes, &batch).is_err(), "one undeclared element refuses the batch");
        let note = Message { kind: Kind::Notification, ..request("notifications/initialized", None) };
        assert!(authorize_mcp(&r, &scopes, &post(vec![note])).is_ok(), "a notification goes to the policy alone");
        assert!(authorize_mcp(&mcp_resource("audit"), &scopes, &post(vec![request("tools/call", Some("x"))])).is_ok());
    }

    #[test]
    fn an_enforced_resource_refuses_paths_upstreams_read_differently() {
        let m = claims(Use::Gateway);
        let r = resource("enforced");
        for path in [
            "/items/..;/admin/users",
            "/items/x;jsessionid=1",
            "/items/a%2F..%2Fadmin",
            "/items/a%2f..%2fadmin",
            "/items/a%5C..%5Cadmin",
            "/items/a\\..\\admin",
            "/items/%2e%2e",
            "/items/%252F",
            "/items/a%00",
        ] {
            let err = authorize(&r, &m, "GET", path).unwrap_err();
            assert!(matches!(err, StsError::OperationNotPermitted(ref d) if d.contains("ambiguous")), "{path}: {err}");
        }
        assert!(authorize(&r, &m, "GET", "/items/caf%C3%A9").is_ok(), "ordinary escapes stay allowed");
    }
}
