//! List filtering (`docs/mcp.md` §3): the response to a `tools/list`, `prompts/list`,
//! `resources/list` or `resources/templates/list` request shows only what its mandate may use, so
//! an agent never sees a tool it cannot call.
//!
//! Only responses to such requests are touched; every other response streams as before. A JSON
//! answer is held whole; an SSE answer is held one event at a time, and only until the event that
//! answers a pending listing has passed — priming, progress and server-request events go through
//! as they are, with their `id:`, `event:` and `retry:` lines. The listed names are decided by the
//! STS (`POST /oauth/2/mcp/visible`, the zone's policy as for a call); `nextCursor` is kept, since a
//! page may come back short, and a 2026-07-28 result becomes `cacheScope: "private"` (a filtered
//! list belongs to one authorization context). Fail closed: an answer over `MCP_MAX_LIST_BYTES`,
//! or one that cannot be read, is cut; a listing the STS could not decide shows nothing.

use std::collections::HashSet;

use bytes::Bytes;
use caracal_shared::mcp::ListKind;
use serde_json::Value;

use super::{Body, Message};

/// Decides which of the names of a listing stay visible; `None` when that cannot be decided.
pub type Decide<'a> = dyn FnMut(ListKind, Vec<String>) -> Option<HashSet<String>> + 'a;

/// Why a listing response is cut.
#[derive(Debug, PartialEq, Eq)]
pub enum Cut {
    TooLarge,
    Unreadable,
}

/// The filter over one response.
#[derive(Debug)]
pub struct ListFilter {
    /// Listing requests not answered yet: their ids and kinds.
    pending: Vec<(Value, ListKind)>,
    sse: bool,
    /// What is held: the whole JSON answer, or the SSE event in progress.
    held: Vec<u8>,
    limit: usize,
}

/// The listing requests of a POST.
pub fn listings(body: &Body) -> Vec<(Value, ListKind)> {
    body.messages
        .iter()
        .filter_map(|m| match m {
            Message::Request { id, method, .. } => ListKind::of(method).map(|k| (id.clone(), k)),
            _ => None,
        })
        .collect()
}

impl ListFilter {
    /// A filter for a response with `content_type` to a POST with these listing requests; `None`
    /// when there is nothing to filter (no listing, or a body that is neither JSON nor SSE).
    pub fn new(pending: Vec<(Value, ListKind)>, content_type: Option<&str>, limit: usize) -> Option<Self> {
        if pending.is_empty() {
            return None;
        }
        let media = content_type.and_then(|c| c.split(';').next()).map(|m| m.trim().to_ascii_lowercase())?;
        let sse = match media.as_str() {
            "application/json" => false,
            "text/event-stream" => true,
            _ => return None,
        };
        Some(Self { pending, sse, held: Vec::new(), limit })
    }

    /// Takes the next chunk of the body; returns what may be sent now.
    pub fn feed(&mut self, chunk: Option<&[u8]>, eos: bool, decide: &mut Decide<'_>) -> Result<Bytes, Cut> {
        let chunk = chunk.unwrap_or_default();
        if self.sse && self.pending.is_empty() && self.held.is_empty() {
            return Ok(Bytes::copy_from_slice(chunk));
        }
        if self.held.len() + chunk.len() > self.limit {
            return Err(Cut::TooLarge);
        }
        self.held.extend_from_slice(chunk);
        if !self.sse {
            if !eos {
                return Ok(Bytes::new());
            }
            let mut v: Value = serde_json::from_slice(&self.held).map_err(|_| Cut::Unreadable)?;
            self.filter_value(&mut v, decide);
            return Ok(Bytes::from(v.to_string()));
        }
        let mut out = Vec::with_capacity(self.held.len());
        while let Some(end) = event_end(&self.held) {
            let event: Vec<u8> = self.held.drain(..end).collect();
            self.filter_event(&event, &mut out, decide);
            if self.pending.is_empty() {
                // Answered: the rest of the stream passes as it comes.
                out.append(&mut self.held);
                break;
            }
        }
        // An event cut short by the end of the stream is dropped, as a client would drop it.
        if eos {
            self.held.clear();
        }
        Ok(Bytes::from(out))
    }

    /// Filters the event if it answers a pending listing; writes it to `out`.
    fn filter_event(&mut self, event: &[u8], out: &mut Vec<u8>, decide: &mut Decide<'_>) {
        let text = String::from_utf8_lossy(event);
        let lines: Vec<&str> = text.split_inclusive('\n').flat_map(|l| l.split_inclusive('\r')).collect();
        let field = |l: &str| l.trim_end_matches(['\r', '\n']).to_owned();
        let data: Vec<String> = lines
            .iter()
            .map(|l| field(l))
            .filter_map(|l| l.strip_prefix("data:").map(|d| d.strip_prefix(' ').unwrap_or(d).to_owned()))
            .collect();
        let parsed = (!data.is_empty()).then(|| serde_json::from_str::<Value>(&data.join("\n")).ok()).flatten();
        let Some(mut v) = parsed.filter(|v| self.answers_pending(v)) else {
            out.extend_from_slice(event);
            return;
        };
        self.filter_value(&mut v, decide);
        let mut wrote_data = false;
        for l in lines.iter().map(|l| field(l)).filter(|l| !l.is_empty()) {
            if l.starts_with("data:") {
                if !wrote_data {
                    out.extend_from_slice(format!("data: {v}\n").as_bytes());
                    wrote_data = true;
                }
            } else {
                out.extend_from_slice(l.as_bytes());
                out.push(b'\n');
            }
        }
        out.push(b'\n');
    }

    /// Whether a message (or batch) answers a pending listing.
    fn answers_pending(&self, v: &Value) -> bool {
        let one = |m: &Value| m.get("id").is_some_and(|id| self.pending.iter().any(|(p, _)| p == id));
        match v {
            Value::Array(items) => items.iter().any(one),
            other => one(other),
        }
    }

    /// Filters every answer to a pending listing in `v` (a message or a batch of them).
    fn filter_value(&mut self, v: &mut Value, decide: &mut Decide<'_>) {
        match v {
            Value::Array(items) => items.iter_mut().for_each(|m| self.filter_message(m, decide)),
            other => self.filter_message(other, decide),
        }
    }

    fn filter_message(&mut self, m: &mut Value, decide: &mut Decide<'_>) {
        let Some(at) = m.get("id").and_then(|id| self.pending.iter().position(|(p, _)| p == id)) else { return };
        let (_, kind) = self.pending.swap_remove(at);
        let (key, name_key) = kind.keys();
        let Some(result) = m.get_mut("result").and_then(Value::as_object_mut) else { return };
        if let Some(items) = result.get_mut(key).and_then(Value::as_array_mut) {
            let name = |item: &Value| item.get(name_key).and_then(Value::as_str).map(str::to_owned);
            let names: Vec<String> = items.iter().filter_map(name).collect();
            let visible = if names.is_empty() { Some(HashSet::new()) } else { decide(kind, names) }.unwrap_or_default();
            items.retain(|item| name(item).is_some_and(|n| visible.contains(&n)));
        }
        if result.contains_key("cacheScope") {
            result.insert("cacheScope".into(), Value::from("private"));
        }
    }
}

/// Where the first complete SSE event of `buf` ends (after its blank line), if one is complete.
fn event_end(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    let mut line_start = true;
    while i < buf.len() {
        let nl = match buf[i] {
            b'\r' if buf.get(i + 1) == Some(&b'\n') => 2,
            b'\r' | b'\n' => 1,
            _ => {
                line_start = false;
                i += 1;
                continue;
            }
        };
        if line_start {
            return Some(i + nl);
        }
        line_start = true;
        i += nl;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::super::read;
    use super::*;
    use serde_json::json;

    fn filter(body: &str, ct: &str) -> ListFilter {
        ListFilter::new(listings(&read(body.as_bytes(), 4096).unwrap()), Some(ct), 1 << 20).unwrap()
    }

    fn allow_read(calls: &mut Vec<(ListKind, Vec<String>)>) -> impl FnMut(ListKind, Vec<String>) -> Option<HashSet<String>> + '_ {
        move |k, names| {
            calls.push((k, names.clone()));
            Some(names.into_iter().filter(|n| n.starts_with("read_") || n == "docs://readme").collect())
        }
    }

    const TOOLS: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;

    #[test]
    fn a_json_listing_shows_only_what_may_be_used() {
        let mut f = filter(TOOLS, "application/json");
        let answer = json!({"jsonrpc": "2.0", "id": 1, "result": {
            "tools": [{"name": "read_file"}, {"name": "delete_repo"}, {"title": "nameless"}],
            "nextCursor": "c2", "cacheScope": "public", "ttlMs": 1000}});
        let raw = answer.to_string();
        let mut calls = vec![];
        let mut decide = allow_read(&mut calls);
        assert!(f.feed(Some(&raw.as_bytes()[..10]), false, &mut decide).unwrap().is_empty(), "held until complete");
        let out = f.feed(Some(&raw.as_bytes()[10..]), true, &mut decide).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["result"]["tools"], json!([{"name": "read_file"}]));
        assert_eq!(v["result"]["nextCursor"], "c2");
        assert_eq!(v["result"]["cacheScope"], "private");
        assert_eq!(v["result"]["ttlMs"], 1000);
        drop(decide);
        assert_eq!(calls, [(ListKind::Tools, vec!["read_file".to_owned(), "delete_repo".to_owned()])]);
    }

    #[test]
    fn an_sse_listing_is_filtered_and_other_events_pass_as_they_are() {
        let mut f = filter(TOOLS, "text/event-stream");
        let stream = concat!(
            "id: p0\ndata: \n\n",
            ": keep-alive\n\n",
            "event: message\nid: e1\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{}}\n\n",
            "event: message\r\nid: e2\r\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\r\ndata: \"result\":{\"tools\":[{\"name\":\"delete_repo\"},{\"name\":\"read_x\"}]}}\r\n\r\n",
            "event: message\ndata: {\"after\":true}\n\n",
        );
        let mut calls = vec![];
        let mut decide = allow_read(&mut calls);
        // Byte by byte: events are recognised across any split.
        let mut out = Vec::new();
        for (i, b) in stream.as_bytes().iter().enumerate() {
            out.extend_from_slice(&f.feed(Some(std::slice::from_ref(b)), i + 1 == stream.len(), &mut decide).unwrap());
        }
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("id: p0\ndata: \n\n: keep-alive\n\nevent: message\nid: e1\n"), "{text}");
        assert!(text.contains("event: message\nid: e2\ndata: {"), "{text}");
        assert!(!text.contains("delete_repo"), "{text}");
        assert!(text.contains("read_x"));
        assert!(text.ends_with("event: message\ndata: {\"after\":true}\n\n"), "the rest passes unchanged: {text}");
        drop(decide);
        assert_eq!(calls.len(), 1);
    }

    #[test]
    fn fail_closed_and_batches() {
        let mut f = ListFilter::new(vec![(json!(1), ListKind::Tools)], Some("application/json"), 16).unwrap();
        assert_eq!(f.feed(Some(&[b'x'; 17]), false, &mut |_, _| None), Err(Cut::TooLarge));
        let mut f = filter(TOOLS, "application/json");
        assert_eq!(f.feed(Some(b"not json"), true, &mut |_, _| None), Err(Cut::Unreadable));
        let mut f = filter(TOOLS, "application/json");
        let out = f.feed(Some(br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"read_a"}]}}"#), true, &mut |_, _| None).unwrap();
        assert_eq!(serde_json::from_slice::<Value>(&out).unwrap()["result"]["tools"], json!([]), "undecided: nothing shown");
        let batch = r#"[{"jsonrpc":"2.0","id":1,"method":"prompts/list"},{"jsonrpc":"2.0","id":2,"method":"resources/list"}]"#;
        let mut f = filter(batch, "application/json");
        let answer = json!([
            {"jsonrpc": "2.0", "id": 2, "result": {"resources": [{"uri": "docs://readme"}, {"uri": "docs://secret"}]}},
            {"jsonrpc": "2.0", "id": 1, "result": {"prompts": [{"name": "read_me"}, {"name": "secret_prompt"}]}}
        ]);
        let mut calls = vec![];
        let out = f.feed(Some(answer.to_string().as_bytes()), true, &mut allow_read(&mut calls)).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v[0]["result"]["resources"], json!([{"uri": "docs://readme"}]));
        assert_eq!(v[1]["result"]["prompts"], json!([{"name": "read_me"}]));
        assert!(ListFilter::new(vec![], Some("application/json"), 1).is_none());
        assert!(ListFilter::new(vec![(json!(1), ListKind::Tools)], Some("text/plain"), 1).is_none());
    }
}
