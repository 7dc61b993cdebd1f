//! Reading an MCP POST before the exchange (`docs/mcp.md` §1).
//!
//! The gateway learns that a resource is an MCP server only from the STS, after the exchange, but
//! the exchange must already carry what the POST asks for. So a POST that looks like MCP — a JSON
//! body and an `Accept` listing `text/event-stream`, as the transport requires of every client,
//! or an `Mcp-*` header — has its body read here, when its `Content-Length` is within
//! `MCP_MAX_BODY_BYTES`. The bytes read stay in Pingora's retry buffer, from which the first
//! attempt sends them upstream unchanged. A body that is not well-formed JSON-RPC is not refused
//! yet (the resource may be an ordinary HTTP API): its refusal is kept, and answered once the
//! resource is known to be MCP. The STS refuses a POST to an MCP resource that comes without the
//! facts (fail closed), so a client that hides its MCP-ness from these heuristics gets nothing.

use caracal_shared::mcp::Post;
use pingora::http::RequestHeader;
use pingora::proxy::Session;

use super::{Body, Refusal};

/// What the gateway made of a POST that looks like MCP.
#[derive(Debug)]
pub enum Intake {
    /// Well-formed: the messages, and the facts the exchange carries (JSON).
    Read { body: Body, post: Post, json: String },
    /// Read, and refused if the resource turns out to be MCP.
    Refused(Refusal),
    /// Not read: no `Content-Length` (a chunked body cannot be forwarded once read), or over the limit.
    Unread(Unread),
}

/// Why a body was not read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unread {
    NoLength,
    TooLarge,
}

impl Intake {
    /// The refusal an MCP resource answers this POST with, if any.
    pub fn refusal(&self, limit: usize) -> Option<Refusal> {
        match self {
            Self::Read { .. } => None,
            Self::Refused(r) => Some(r.clone()),
            Self::Unread(Unread::TooLarge) => {
                Some(Refusal::Status { status: 413, message: format!("an MCP request body is at most {limit} bytes here") })
            }
            Self::Unread(Unread::NoLength) => {
                Some(Refusal::Status { status: 411, message: "an MCP request needs a Content-Length".into() })
            }
        }
    }

    /// The POST's messages, when they were read.
    pub fn post(&self) -> Option<&Post> {
        match self {
            Self::Read { post, .. } => Some(post),
            _ => None,
        }
    }
}

/// Whether a request looks like an MCP POST (see the module docs).
pub fn looks_like(req: &RequestHeader) -> bool {
    if req.method != http::Method::POST {
        return false;
    }
    let h = &req.headers;
    let json = h
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json")));
    let streams = h
        .get_all(http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|a| a.to_ascii_lowercase().contains("text/event-stream"));
    let mcp_header = h.keys().any(|k| k.as_str().starts_with("mcp-"));
    json && (streams || mcp_header)
}

/// Reads the body of a POST that looks like MCP (`None` for any other request).
pub async fn take(session: &mut Session, limit: usize) -> pingora::Result<Option<Intake>> {
    let req = session.req_header();
    if !looks_like(req) {
        return Ok(None);
    }
    let length = req.headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<usize>().ok());
    let length = match length {
        None => return Ok(Some(Intake::Unread(Unread::NoLength))),
        Some(n) if n > limit => return Ok(Some(Intake::Unread(Unread::TooLarge))),
        Some(n) => n,
    };
    // Keeps what is read for the upstream: Pingora sends the retry buffer on the first attempt too.
    session.enable_retry_buffering();
    let mut bytes = Vec::with_capacity(length);
    while let Some(chunk) = session.read_request_body().await? {
        bytes.extend_from_slice(&chunk);
    }
    let headers = &session.req_header().headers;
    Ok(Some(match super::read(&bytes, limit).and_then(|body| super::check_headers(&body, headers).map(|()| body)) {
        Ok(body) => {
            let post = body.post(headers);
            let json = serde_json::to_string(&post).expect("the MCP facts serialize");
            Intake::Read { body, post, json }
        }
        Err(refusal) => Intake::Refused(refusal),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build(method, b"/mcp", None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    #[test]
    fn what_looks_like_mcp() {
        let conforming = [("content-type", "application/json"), ("accept", "application/json, text/event-stream")];
        assert!(looks_like(&req("POST", &conforming)));
        assert!(looks_like(&req("POST", &[("content-type", "application/json; charset=utf-8"), ("mcp-protocol-version", "2026-07-28")])));
        assert!(!looks_like(&req("GET", &conforming)), "GET streams have no body to read");
        assert!(!looks_like(&req("POST", &[("content-type", "application/json"), ("accept", "application/json")])), "a plain JSON API");
        assert!(!looks_like(&req("POST", &[("content-type", "text/plain"), ("accept", "text/event-stream")])));
    }

    #[test]
    fn unread_bodies_are_refused_by_an_mcp_resource() {
        match Intake::Unread(Unread::TooLarge).refusal(65536) {
            Some(Refusal::Status { status: 413, message }) => assert!(message.contains("65536")),
            other => panic!("{other:?}"),
        }
        assert!(matches!(Intake::Unread(Unread::NoLength).refusal(1), Some(Refusal::Status { status: 411, .. })));
    }
}
