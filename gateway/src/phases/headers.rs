//! Header hygiene in both directions.
//!
//! Toward the upstream: Pingora already drops hop-by-hop fields; here the inbound `Authorization`,
//! `Proxy-Authorization`, every `X-Caracal-*` and `X-Forwarded-*`, `Forwarded`, `X-Real-Ip`, the
//! method and URL override headers ([`OVERRIDE_HEADERS`]) and the `caracal.*` entries of
//! `baggage` are removed, the credential is injected, and `Host`, `X-Request-Id`, `traceparent`
//! and `X-Forwarded-For`/`-Proto` are set by the gateway alone. Names are compared with `_` read
//! as `-`: CGI-style servers (PHP, WSGI) map `X_Http_Method_Override` and
//! `X-Http-Method-Override` to the same variable.
//!
//! Hop-by-hop fields are removed here too (Pingora forwards them): `Connection` and every field it
//! names, `Keep-Alive`, `Proxy-Connection`, `TE`, `Trailer`, and above all `Upgrade` and
//! `HTTP2-Settings` — an upstream that switched protocols (h2c, WebSocket) would carry any
//! request or message on the tunnel after one checked operation. Framing (`Content-Length`,
//! `Transfer-Encoding`) and `Host` stay with Pingora even when `Connection` names them.
//!
//! Override headers are stripped rather than refused: the STS checked the operation on the
//! request line, and the upstream then acts on exactly that; a refusal would break clients whose
//! libraries always send them and protect nothing more.
//! Toward the client: server banners, `X-Caracal-Identity` and absolute `Location`s are removed.

use pingora::http::{RequestHeader, ResponseHeader};

use crate::ctx::RequestCtx;
use crate::phases::upstream::{Credential, SafePeer};

const STRIPPED_PREFIXES: &[&str] = &["x-caracal-", "x-forwarded-"];
const STRIPPED_REQUEST: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "forwarded",
    "x-real-ip",
    // Hop-by-hop (RFC 9110 §7.6.1) and protocol switches.
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "http2-settings",
];
/// Never removed because `Connection` names them: framing and routing belong to Pingora.
const KEPT_WHEN_LISTED: &[&str] = &["host", "content-length", "transfer-encoding"];
/// Headers a framework or proxy behind the gateway may take as the request's real method or path
/// (or, for Next.js, as "already past the middleware"): each would let a request do what its
/// declared operation does not allow.
pub const OVERRIDE_HEADERS: &[&str] = &[
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-original-method",
    "x-envoy-original-method",
    "x-original-url",
    "x-original-uri",
    "x-rewrite-url",
    "x-override-url",
    "x-envoy-original-path",
    "x-middleware-subrequest",
];

/// `name` (lowercase) equals `pattern` or starts with it, reading `_` as `-`.
fn matches_dashed(name: &str, pattern: &str, prefix: bool) -> bool {
    let (n, p) = (name.as_bytes(), pattern.as_bytes());
    if n.len() < p.len() || (!prefix && n.len() != p.len()) {
        return false;
    }
    n.iter().zip(p).all(|(a, b)| a == b || (*a == b'_' && *b == b'-'))
}

/// Whether an inbound request header must not reach the upstream.
fn stripped_inbound(name: &str) -> bool {
    STRIPPED_REQUEST.iter().chain(OVERRIDE_HEADERS).any(|p| matches_dashed(name, p, false))
        || STRIPPED_PREFIXES.iter().any(|p| matches_dashed(name, p, true))
}
const STRIPPED_RESPONSE: &[&str] = &["server", "x-powered-by", "x-aspnet-version", "x-aspnetmvc-version", "x-caracal-identity", "refresh"];

/// Everything the upstream request needs from the gateway.
pub struct Outbound<'a> {
    pub peer: &'a SafePeer,
    pub mandate: &'a str,
    pub request_id: &'a str,
    pub client_ip: Option<String>,
    pub tls_downstream: bool,
    /// `traceparent` with the gateway's span as parent, and the inbound `tracestate` when it
    /// belonged to a valid inbound `traceparent` (`crate::trace`).
    pub traceparent: String,
    pub tracestate: Option<&'a str>,
}

/// `upstream_request_filter`: the granted request's [`Outbound`] applied to `req`.
pub fn upstream_request_for(
    session: &pingora::proxy::Session,
    req: &mut RequestHeader,
    ctx: &mut RequestCtx,
    tls_downstream: bool,
) -> pingora::Result<()> {
    // Each attempt (a retry calls this again) restarts the upstream's clock.
    if ctx.timings.on {
        ctx.timings.upstream_sent = Some(std::time::Instant::now());
    }
    let Some(fwd) = &ctx.forward else {
        return pingora::Error::e_explain(pingora::ErrorType::InternalError, "upstream request without a granted request");
    };
    let client_ip = session.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip().to_string());
    let trace = ctx.trace.as_ref();
    let out = Outbound {
        peer: &fwd.peer,
        mandate: &fwd.grant.mandate,
        request_id: &ctx.request_id,
        client_ip,
        tls_downstream,
        traceparent: trace.map(crate::trace::Trace::traceparent).unwrap_or_default(),
        tracestate: trace.and_then(|t| t.tracestate.as_deref()),
    };
    upstream_request(req, &out)
}

/// Rewrites the request sent upstream.
pub fn upstream_request(req: &mut RequestHeader, out: &Outbound<'_>) -> pingora::Result<()> {
    let listed: Vec<String> = req
        .headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty() && !KEPT_WHEN_LISTED.contains(&t.as_str()))
        .collect();
    let doomed: Vec<http::HeaderName> =
        req.headers.keys().filter(|n| stripped_inbound(n.as_str()) || listed.iter().any(|t| t == n.as_str())).cloned().collect();
    for name in doomed {
        req.remove_header(&name);
    }
    filter_baggage(req)?;

    let mut target = out.peer.request_target(req.uri.path(), req.uri.query());
    if let Credential::ProviderQuery { param, key } = &out.peer.credential {
        target = with_query_param(&target, param, key);
    }
    let uri: http::Uri = target.parse().map_err(|e| pingora::Error::because(pingora::ErrorType::InvalidHTTPHeader, "upstream uri", e))?;
    req.set_uri(uri);
    req.insert_header(http::header::HOST, &out.peer.authority)?;

    match &out.peer.credential {
        Credential::CaracalJwt { header, scheme } => {
            req.remove_header(header);
            req.insert_header(header.clone(), format!("{scheme} {}", out.mandate))?;
        }
        Credential::ProviderHeader { header, value } => {
            req.remove_header(header);
            req.insert_header(header.clone(), value.clone())?;
        }
        Credential::ProviderQuery { .. } | Credential::None => {}
    }
    if out.peer.forward_identity {
        req.insert_header("x-caracal-identity", out.mandate)?;
    }
    req.insert_header(caracal_shared::request_id::HEADER, out.request_id)?;
    // The trace continues through the gateway's own span (`crate::trace`).
    req.remove_header("tracestate");
    if !out.traceparent.is_empty() {
        req.insert_header("traceparent", out.traceparent.as_str())?;
    }
    if let Some(state) = out.tracestate {
        req.insert_header("tracestate", state)?;
    }
    if let Some(ip) = &out.client_ip {
        req.insert_header("x-forwarded-for", ip)?;
    }
    req.insert_header("x-forwarded-proto", if out.tls_downstream { "https" } else { "http" })?;
    Ok(())
}

/// `target` with every `param=` pair removed from its query and `param=<value>` appended: the
/// provider key overrides whatever the client or the upstream URL put there.
fn with_query_param(target: &str, param: &str, value: &str) -> String {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut out = form_urlencoded::Serializer::new(String::with_capacity(query.len() + value.len() + 16));
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        if k != param {
            out.append_pair(&k, &v);
        }
    }
    out.append_pair(param, value);
    format!("{path}?{}", out.finish())
}

/// Drops `caracal.*` baggage members; removes the header when nothing is left.
fn filter_baggage(req: &mut RequestHeader) -> pingora::Result<()> {
    let Some(value) = req.headers.get("baggage").and_then(|v| v.to_str().ok()) else {
        if req.headers.contains_key("baggage") {
            req.remove_header("baggage");
        }
        return Ok(());
    };
    let kept: Vec<&str> = value.split(',').map(str::trim).filter(|m| !m.is_empty() && !m.starts_with("caracal.")).collect();
    if kept.is_empty() {
        req.remove_header("baggage");
    } else {
        let joined = kept.join(",");
        req.insert_header("baggage", joined)?;
    }
    Ok(())
}

/// Cleans the response sent to the client.
pub fn downstream_response(resp: &mut ResponseHeader, request_id: &str, mandate_expires_in: i64) -> pingora::Result<()> {
    for name in STRIPPED_RESPONSE {
        resp.remove_header(*name);
    }
    for name in ["location", "content-location"] {
        let absolute = resp.headers.get(name).is_some_and(|v| v.to_str().map_or(true, |s| !is_relative_reference(s)));
        if absolute {
            resp.remove_header(name);
        }
    }
    resp.insert_header(caracal_shared::request_id::HEADER, request_id)?;
    resp.insert_header("x-caracal-token-expires-in", mandate_expires_in.max(0).to_string())?;
    Ok(())
}

/// An unambiguous relative reference (`/path`, `path/rel`, `?query`, `#fragment`): one that every
/// browser resolves against the gateway's own origin. Refused, because a browser reads them as
/// another host or scheme: a scheme (`https:/evil`, `javascript:`), an authority (`//evil`), a
/// backslash anywhere (`/\\evil`, `\\\\evil`, `\\/evil`: `\\` is `/` to a browser), any byte outside
/// visible ASCII (leading whitespace and control characters are dropped by URL parsers; a valid
/// Location is percent-encoded), and any of these once percent-decoded (`/%5Cevil`, `/%2F/evil`),
/// since some clients and frameworks decode before they resolve.
fn is_relative_reference(s: &str) -> bool {
    let raw = s.as_bytes();
    if raw.is_empty() || !raw.iter().all(|b| (0x21..=0x7e).contains(b)) || !relative_form(raw) {
        return false;
    }
    let mut current = raw.to_vec();
    // A few rounds cover any real double encoding; each must still be relative.
    for _ in 0..4 {
        let next = lenient_percent_decode(&current);
        if next == current {
            return true;
        }
        // URL parsers drop leading C0 controls and spaces before they look for a scheme.
        let start = next.iter().position(|b| *b > 0x20).unwrap_or(next.len());
        if !relative_form(&next[start..]) {
            return false;
        }
        current = next;
    }
    false
}

/// No backslash, no leading `//`, no scheme (a `:` before the first `/`, `?` or `#`).
fn relative_form(b: &[u8]) -> bool {
    let first = b.split(|c| matches!(c, b'/' | b'?' | b'#')).next().unwrap_or(b);
    !b.contains(&b'\\') && !b.starts_with(b"//") && !first.contains(&b':')
}

/// Decodes every `%XX` with two hex digits; anything else is kept as it is.
fn lenient_percent_decode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        let hex = |j: usize| input.get(j).and_then(|b| (*b as char).to_digit(16));
        match (input[i], hex(i + 1), hex(i + 2)) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_provider_query_key_overrides_client_and_upstream_values() {
        assert_eq!(with_query_param("/a?x=1&api_key=client&y=2", "api_key", "s3cr=t"), "/a?x=1&y=2&api_key=s3cr%3Dt");
        assert_eq!(with_query_param("/a", "key", "k"), "/a?key=k");
    }

    #[test]
    fn relative_references() {
        for ok in ["/v2/resource", "?page=2", "#top", "next", "a/b:c", "/files/my%20doc.pdf", "/a%2Fb", "/caf%C3%A9", "/100%"] {
            assert!(is_relative_reference(ok), "{ok}");
        }
    }

    #[test]
    fn references_a_browser_reads_as_another_origin() {
        for bad in [
            "",
            "http://internal/",
            "//evil.example/x",
            "https:/x",
            "https:evil.example",
            "HTTPS://evil.example",
            "javascript:alert(1)",
            "\\\\evil",
            "/\\evil.example",
            "\\/evil.example",
            "/x\\..\\y",
            " //evil.example",
            "\t//evil.example",
            "\u{1}//evil.example",
            "/\t/evil.example",
            "/%5Cevil.example",
            "/%5cevil.example",
            "/%2F/evil.example",
            "%2F%2Fevil.example",
            "%09//evil.example",
            "/%255Cevil.example",
            "javascript%3Aalert(1)",
            "/caf\u{e9}",
        ] {
            assert!(!is_relative_reference(bad), "{bad:?}");
        }
    }

    #[test]
    fn dashed_matching_reads_underscores_as_dashes() {
        assert!(stripped_inbound("x-http-method-override"));
        assert!(stripped_inbound("x_http_method_override"));
        assert!(stripped_inbound("x_forwarded_prefix"));
        assert!(stripped_inbound("x-forwarded-prefix"));
        assert!(!stripped_inbound("x-http-method-overrider"), "exact names are exact");
        assert!(!stripped_inbound("x-http"));
        assert!(!stripped_inbound("x-original"));
        assert!(!stripped_inbound("content-type"));
    }

    #[test]
    fn request_hygiene() {
        let peer = SafePeer {
            http2: false,
            addr: "127.0.0.1:9".parse().unwrap(),
            tls: false,
            host: "up.example".into(),
            authority: "up.example:9".into(),
            base_path: "/base".into(),
            base_query: None,
            credential: Credential::CaracalJwt { header: http::header::AUTHORIZATION, scheme: "Bearer".into() },
            forward_identity: false,
            timeouts: Default::default(),
        };
        let mut req = RequestHeader::build("POST", b"/items?q=1", None).unwrap();
        for (k, v) in [
            ("authorization", "Bearer inbound"),
            ("x-caracal-resource", "api://r"),
            ("X-Caracal-Anything", "1"),
            ("x-forwarded-for", "6.6.6.6"),
            ("forwarded", "for=6.6.6.6"),
            ("x-real-ip", "6.6.6.6"),
            ("proxy-authorization", "Basic x"),
            ("baggage", "caracal.zone=z, user=alice"),
            ("x-keep", "yes"),
            ("x-keep_this", "yes"),
            ("x-http-method-override", "DELETE"),
            ("X_HTTP_METHOD_OVERRIDE", "DELETE"),
            ("x-original-url", "/admin"),
            ("x_rewrite_url", "/admin"),
            ("x-middleware-subrequest", "middleware"),
            ("x_forwarded_host", "evil"),
            ("x_caracal_client_id", "spoof"),
            ("x_real_ip", "6.6.6.6"),
            ("connection", "Upgrade, HTTP2-Settings, X-Listed, content-length"),
            ("upgrade", "h2c"),
            ("http2-settings", "AAMAAABkAARAAAAAAAIAAAAA"),
            ("x-listed", "hop"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("content-length", "0"),
        ] {
            req.append_header(k.to_string(), v).unwrap();
        }
        let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned();
        let out = Outbound {
            peer: &peer,
            mandate: "RES",
            request_id: "rid",
            client_ip: Some("10.0.0.1".into()),
            tls_downstream: false,
            traceparent: traceparent.clone(),
            tracestate: None,
        };
        upstream_request(&mut req, &out).unwrap();
        let h = |n: &str| req.headers.get(n).map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(h("authorization").as_deref(), Some("Bearer RES"));
        assert_eq!(h("x-caracal-resource"), None);
        assert_eq!(h("x-caracal-anything"), None);
        assert_eq!(h("forwarded"), None);
        assert_eq!(h("x-real-ip"), None);
        assert_eq!(h("proxy-authorization"), None);
        assert_eq!(h("x-forwarded-for").as_deref(), Some("10.0.0.1"), "replaced, never appended");
        assert_eq!(h("baggage").as_deref(), Some("user=alice"));
        assert_eq!(h("x-keep").as_deref(), Some("yes"));
        assert_eq!(h("x-keep_this").as_deref(), Some("yes"));
        for gone in ["x-http-method-override", "x_http_method_override", "x-original-url", "x_rewrite_url", "x-middleware-subrequest"] {
            assert_eq!(h(gone), None, "{gone} overrides the checked operation");
        }
        for gone in ["x_forwarded_host", "x_caracal_client_id", "x_real_ip"] {
            assert_eq!(h(gone), None, "{gone} is the dashed header to a CGI-style server");
        }
        for gone in ["connection", "upgrade", "http2-settings", "x-listed", "keep-alive", "te"] {
            assert_eq!(h(gone), None, "{gone} is hop-by-hop");
        }
        assert_eq!(h("content-length").as_deref(), Some("0"), "framing stays with Pingora even when listed");
        assert_eq!(h("host").as_deref(), Some("up.example:9"));
        assert_eq!(h("x-request-id").as_deref(), Some("rid"));
        assert_eq!(h("traceparent"), Some(traceparent), "the gateway's span, never the client's");
        assert_eq!(h("tracestate"), None);
        assert_eq!(req.uri.to_string(), "/base/items?q=1");
    }
}
