//! MCP sessions belong to the principal that opened them (`docs/mcp.md` §5; revisions before
//! 2026-07-28, which has no sessions).
//!
//! The server assigns `Mcp-Session-Id` on its answer to `initialize`; the gateway binds that id to
//! the root session of the mandate the answer was for (Redis, `caracal:mcp-session:<zone>:<hash of
//! resource and id>`, `MCP_SESSION_TTL`, renewed by each use). A later request to the resource that
//! presents the id must descend from the same root: one from another root, or an id the gateway
//! never saw issued, is answered 404 — the transport's "unknown session", on which a client starts
//! a new one — so a leaked or guessed session id is worth nothing to another principal. A `DELETE`
//! the server accepted ends the binding. Redis failing refuses the request (503), and an answer
//! whose session cannot be bound is not delivered.

use caracal_shared::redis_primary::Conn;
use caracal_shared::sig;

use crate::Deps;
use crate::deny::Denial;

/// The header.
pub const HEADER: &str = "mcp-session-id";

/// Longest session id kept (the transport allows any visible ASCII).
const MAX_ID: usize = 1024;

/// Who may use sessions of this request's resource: the key prefix and the root session.
#[derive(Debug)]
pub struct Owner {
    zone_id: String,
    resource: String,
    root_sid: String,
}

impl Owner {
    pub fn new(zone_id: &str, resource: &str, root_sid: &str) -> Self {
        Self { zone_id: zone_id.to_owned(), resource: resource.to_owned(), root_sid: root_sid.to_owned() }
    }

    fn key(&self, session_id: &str) -> String {
        let digest = sig::sha256_hex(format!("{}\n{session_id}", self.resource).as_bytes());
        format!("caracal:mcp-session:{}:{digest}", self.zone_id)
    }
}

/// An `Mcp-Session-Id` that is not visible ASCII of at most 1 KiB.
#[derive(Debug, PartialEq, Eq)]
pub struct MalformedSessionId;

/// The session id a request or answer carries, if it is one the transport allows.
pub fn session_id(headers: &http::HeaderMap) -> Result<Option<&str>, MalformedSessionId> {
    match headers.get(HEADER) {
        None => Ok(None),
        Some(v) => match v.to_str() {
            Ok(s) if !s.is_empty() && s.len() <= MAX_ID && s.bytes().all(|b| (0x21..=0x7e).contains(&b)) => Ok(Some(s)),
            _ => Err(MalformedSessionId),
        },
    }
}

async fn connection(deps: &Deps) -> Result<Conn, Denial> {
    deps.jti.connection().await.map_err(|e| {
        tracing::error!(error = %e, "MCP session store unavailable; denying");
        Denial::McpSessionUnavailable
    })
}

/// A request presenting a session id: it must be bound to this root session (renewing the binding).
pub async fn check(deps: &Deps, owner: &Owner, session_id: &str, request_id: &str) -> Result<(), Denial> {
    let mut conn = connection(deps).await?;
    let bound: Option<String> = redis::cmd("GETEX")
        .arg(owner.key(session_id))
        .arg("EX")
        .arg(deps.cfg.mcp_session_ttl.as_secs().max(1))
        .query_async(&mut conn)
        .await
        .map_err(|e| {
            tracing::error!(request_id, error = %e, "MCP session store failed; denying");
            Denial::McpSessionUnavailable
        })?;
    match bound {
        Some(root) if root == owner.root_sid => Ok(()),
        Some(_) => {
            tracing::warn!(request_id, "an MCP session id was presented under another root session; refused");
            Err(Denial::McpSessionUnknown)
        }
        None => Err(Denial::McpSessionUnknown),
    }
}

/// An answer assigning a session id: binds it to the root session, unless another root holds it.
pub async fn bind(deps: &Deps, owner: &Owner, session_id: &str, request_id: &str) -> pingora::Result<()> {
    let fail = |why: String| {
        tracing::error!(request_id, error = %why, "an MCP session could not be bound; the answer is not delivered");
        pingora::Error::explain(pingora::ErrorType::HTTPStatus(503), "MCP session binding failed")
    };
    let mut conn = connection(deps).await.map_err(|_| fail("store unavailable".into()))?;
    let key = owner.key(session_id);
    let ttl = deps.cfg.mcp_session_ttl.as_secs().max(1);
    let set: Option<String> = redis::cmd("SET")
        .arg(&key)
        .arg(&owner.root_sid)
        .arg("NX")
        .arg("EX")
        .arg(ttl)
        .query_async(&mut conn)
        .await
        .map_err(|e| fail(e.to_string()))?;
    if set.is_some() {
        return Ok(());
    }
    let held: Option<String> = redis::cmd("GET").arg(&key).query_async(&mut conn).await.map_err(|e| fail(e.to_string()))?;
    if held.as_deref() == Some(owner.root_sid.as_str()) { Ok(()) } else { Err(fail("the id is bound to another root session".into())) }
}

/// A `DELETE` the server accepted: the session is over.
pub async fn end(deps: &Deps, owner: &Owner, session_id: &str, request_id: &str) {
    let result = async {
        let mut conn = deps.jti.connection().await?;
        redis::cmd("DEL").arg(owner.key(session_id)).query_async::<i64>(&mut conn).await
    }
    .await;
    if let Err(e) = result {
        // The binding expires with MCP_SESSION_TTL; the server has ended the session anyway.
        tracing::warn!(request_id, error = %e, "an ended MCP session's binding could not be removed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_hide_the_id_and_separate_resources_and_zones() {
        let a = Owner::new("z", "mcp://a", "root");
        let k = a.key("s3cr3t-session");
        assert!(k.starts_with("caracal:mcp-session:z:") && !k.contains("s3cr3t"), "{k}");
        assert_ne!(k, Owner::new("z", "mcp://b", "root").key("s3cr3t-session"));
        assert_ne!(k, Owner::new("y", "mcp://a", "root").key("s3cr3t-session"));
        assert_eq!(k, Owner::new("z", "mcp://a", "other-root").key("s3cr3t-session"), "the root is the value, not the key");
    }

    #[test]
    fn session_ids_are_visible_ascii() {
        let h = |v: &str| {
            let mut m = http::HeaderMap::new();
            m.insert(HEADER, http::HeaderValue::from_str(v).unwrap());
            m
        };
        assert_eq!(session_id(&h("abc-123")), Ok(Some("abc-123")));
        assert_eq!(session_id(&http::HeaderMap::new()), Ok(None));
        assert!(session_id(&h("a b")).is_err());
        assert!(session_id(&h(&"x".repeat(MAX_ID + 1))).is_err());
    }
}
