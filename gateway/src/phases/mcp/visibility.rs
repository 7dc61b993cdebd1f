//! The response side of list filtering (`docs/mcp.md` §3): arms a [`ListFilter`] for the answer
//! to an MCP listing, feeds it the body, and asks the STS which listed names stay visible.
//!
//! Pingora's body filters are synchronous, and the names are known only once the answer is in, so
//! the STS is asked from inside the filter: the worker thread hands its other tasks to the rest of
//! the runtime (`tokio::task::block_in_place`) for that one round trip, which only listings pay.
//! Without a multi-threaded runtime (Pingora's `work_stealing: false`) nothing can be decided and
//! nothing is shown.

use std::collections::HashSet;

use bytes::Bytes;
use caracal_shared::mcp::{ListKind, Listing};
use pingora::http::ResponseHeader;
use pingora::{Error, ErrorType, Result};

use super::intake::Intake;
use super::lists::{ListFilter, listings};
use crate::Deps;
use crate::ctx::{Forward, Subject};
use crate::phases::failure::STREAM_CUT;

/// `response_filter`: a filter when this answers a POST with listing requests; the body will
/// change, so its length goes.
pub fn filter_for(
    deps: &Deps,
    intake: Option<&Intake>,
    forward: Option<&Forward>,
    resp: &mut ResponseHeader,
) -> Result<Option<ListFilter>> {
    let Some(Intake::Read { body, .. }) = intake else { return Ok(None) };
    if !forward.is_some_and(|f| f.grant.directive.mcp) {
        return Ok(None);
    }
    let content_type = resp.headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let Some(filter) = ListFilter::new(listings(body), content_type, deps.cfg.mcp_max_list_bytes) else { return Ok(None) };
    if resp.headers.contains_key(http::header::CONTENT_LENGTH) {
        resp.remove_header(&http::header::CONTENT_LENGTH);
        resp.insert_header(http::header::TRANSFER_ENCODING, "chunked")?;
    }
    Ok(Some(filter))
}

/// `response_body_filter`: replaces `body` with what may be sent now; a listing that cannot be
/// held or read ends the response.
pub fn feed(
    deps: &Deps,
    filter: &mut ListFilter,
    body: &mut Option<Bytes>,
    eos: bool,
    forward: Option<&Forward>,
    subject: Option<&Subject>,
    request_id: &str,
) -> Result<()> {
    let mut decide = |kind: ListKind, names: Vec<String>| ask(deps, forward?, subject?, request_id, kind, names);
    match filter.feed(body.as_deref(), eos, &mut decide) {
        Ok(out) => {
            // An empty chunk would end a chunked body early: send nothing instead.
            *body = (!out.is_empty()).then_some(out);
            Ok(())
        }
        Err(cut) => {
            *body = None;
            tracing::warn!(request_id, ?cut, "an MCP listing could not be filtered: the response is cut");
            Error::e_explain(ErrorType::Custom(STREAM_CUT), "an MCP listing could not be filtered")
        }
    }
}

/// Asks the STS which names the request's resource mandate may use; `None` on any failure.
fn ask(deps: &Deps, forward: &Forward, subject: &Subject, request_id: &str, kind: ListKind, names: Vec<String>) -> Option<HashSet<String>> {
    let handle = tokio::runtime::Handle::try_current().ok()?;
    if handle.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
        tracing::error!(request_id, "MCP list filtering needs Pingora's work-stealing runtime: nothing is shown");
        return None;
    }
    let names: Vec<String> = names.into_iter().take(caracal_shared::mcp::MAX_LISTED).collect();
    let listing = Listing { kind, names };
    let asked = deps.sts.visible(&subject.zone_id, &subject.client_id, &forward.grant.mandate, request_id, &listing);
    match tokio::task::block_in_place(|| handle.block_on(asked)) {
        Ok(v) => Some(v.visible.into_iter().collect()),
        Err(e) => {
            tracing::error!(request_id, error = %e, "the STS did not decide an MCP listing: nothing is shown");
            None
        }
    }
}
