//! OAuth discovery for MCP clients (MCP authorization 2025-11-25, "Authorization Server
//! Discovery"): the RFC 9728 protected-resource metadata the gateway serves itself, and the
//! `WWW-Authenticate` challenge on every 401 that points to it.
//!
//! * `GET /.well-known/oauth-protected-resource[/<path>]` answers, without a token, a document for
//!   the protected URL `<public origin><path>` (RFC 9728 §3: the well-known segment is inserted
//!   between the host and the path; §3.3: `resource` equals the URL it was built from), naming the
//!   STS (`ISSUER_URL`) as the only authorization server. Served even with `X-Caracal-Resource`: the
//!   gateway, not the upstream, is the resource server whose tokens count.
//! * A 401 carries `Bearer realm="caracal-gateway", resource_metadata="…"` and, when a token was
//!   presented and refused, `error="…"` (RFC 6750 §3.1).
//!
//! The public origin is `GATEWAY_PUBLIC_URL` when set; otherwise the listener's scheme and the
//! request's authority, which must look like `host[:port]` (no quote, space, comma … can reach a
//! header): a request naming no plausible authority gets a challenge without `resource_metadata`,
//! and the document answers 400 `invalid_request` (metric `bad_host`). The path is percent-encoded
//! where it would not be a safe URL character, so nothing in it ends the quoted string either.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::net::Ipv6Addr;

use bytes::Bytes;
use pingora::http::RequestHeader;
use pingora::proxy::Session;

use crate::Deps;
use crate::config::GatewayConfig;
use crate::deny::{self, Denial, respond_json};

/// The RFC 9728 well-known prefix.
pub const WELL_KNOWN: &str = "/.well-known/oauth-protected-resource";

/// The challenge's realm (what every gateway 401 said before discovery existed).
const REALM: &str = "caracal-gateway";

/// How long clients and caches may keep a document (it changes only with the configuration).
const CACHE_CONTROL: &str = "public, max-age=300";

/// The gateway's public origin (`scheme://authority`, no trailing `/`) for this request:
/// `GATEWAY_PUBLIC_URL` when set, else the listener's scheme and the request's authority;
/// `None` when the request names no plausible authority.
pub fn origin(cfg: &GatewayConfig, req: &RequestHeader) -> Option<String> {
    if let Some(configured) = &cfg.public_url {
        return Some(configured.clone());
    }
    let scheme = if cfg.tls.is_some() { "https" } else { "http" };
    Some(format!("{scheme}://{}", plausible_authority(request_authority(req)?)?))
}

/// The authority the client addressed: HTTP/2's `:authority` (in the URI), else the one `Host`
/// header (Pingora keeps only the path of an HTTP/1.1 absolute-form target, after checking that
/// its authority agrees with `Host`).
fn request_authority(req: &RequestHeader) -> Option<&str> {
    if let Some(authority) = req.uri.authority() {
        return Some(authority.as_str());
    }
    let mut hosts = req.headers.get_all(http::header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(host), None) => host.to_str().ok(),
        _ => None,
    }
}

/// `raw` lowercased if it is a plausible `host[:port]` (a DNS name, an IPv4 address or a bracketed
/// IPv6 address; a port of 1–65535), else `None`.
pub fn plausible_authority(raw: &str) -> Option<String> {
    let (host, port) = split_port(raw)?;
    let host_ok = match host.strip_prefix('[') {
        Some(v6) => v6.strip_suffix(']').is_some_and(|a| a.parse::<Ipv6Addr>().is_ok()),
        None => is_dns_name(host),
    };
    let port_ok = port.is_none_or(|p| p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok_and(|n| n > 0));
    (host_ok && port_ok).then(|| raw.to_ascii_lowercase())
}

/// `host[:port]` split at the port's colon (a bracketed IPv6 address keeps its own).
fn split_port(raw: &str) -> Option<(&str, Option<&str>)> {
    if raw.starts_with('[') {
        let end = raw.find(']')? + 1;
        let (host, rest) = raw.split_at(end);
        return match rest.strip_prefix(':') {
            Some(port) => Some((host, Some(port))),
            None => rest.is_empty().then_some((host, None)),
        };
    }
    Some(match raw.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (raw, None),
    })
}

/// A DNS name or IPv4 address: letters, digits, `-`, `_`, `.`; starting with a letter or digit; no
/// empty label; at most 253 bytes.
fn is_dns_name(host: &str) -> bool {
    (1..=253).contains(&host.len())
        && host.as_bytes()[0].is_ascii_alphanumeric()
        && !host.contains("..")
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// `path` with every byte that is not an RFC 3986 path character percent-encoded (a `%` stays
/// only as the start of an escape).
pub fn safe_path(path: &str) -> Cow<'_, str> {
    let b = path.as_bytes();
    let keep = |i: usize| match b[i] {
        c if c.is_ascii_alphanumeric() => true,
        b'-' | b'.' | b'_' | b'~' | b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'=' | b':' | b'@' | b'/' => {
            true
        }
        b'%' => i + 2 < b.len() && b[i + 1].is_ascii_hexdigit() && b[i + 2].is_ascii_hexdigit(),
        _ => false,
    };
    if (0..b.len()).all(keep) {
        return Cow::Borrowed(path);
    }
    let mut out = String::with_capacity(b.len() + 16);
    for (i, &byte) in b.iter().enumerate() {
        if keep(i) {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    Cow::Owned(out)
}

/// The protected path a well-known request is about (`""` for the root form), or `None` when the
/// path is not under [`WELL_KNOWN`].
pub fn protected_path(request_path: &str) -> Option<&str> {
    let rest = request_path.strip_prefix(WELL_KNOWN)?;
    (rest.is_empty() || rest.starts_with('/')).then_some(rest)
}

/// Where the metadata of `<origin><path>` lives (RFC 9728 §3.1; the root path maps to the root form).
pub fn metadata_url(origin: &str, path: &str) -> String {
    let path = safe_path(path);
    let path = if path == "/" { "" } else { &path };
    format!("{origin}{WELL_KNOWN}{path}")
}

/// The RFC 9728 document for `<origin><path>` (the path made [`safe_path`], as in the challenge).
pub fn document(origin: &str, path: &str, issuer: &str) -> serde_json::Value {
    serde_json::json!({
        "resource": format!("{origin}{}", safe_path(path)),
        "authorization_servers": [issuer],
        "bearer_methods_supported": ["header"],
        "resource_name": "Caracal gateway",
    })
}

/// The `WWW-Authenticate` value of a 401 for a request to `path`.
pub fn challenge(origin: Option<&str>, path: &str, error: Option<&str>) -> String {
    let mut c = format!("Bearer realm=\"{REALM}\"");
    if let Some(origin) = origin {
        let _ = write!(c, ", resource_metadata=\"{}\"", metadata_url(origin, path));
    }
    if let Some(error) = error {
        let _ = write!(c, ", error=\"{error}\"");
    }
    c
}

/// Serves the metadata document if the request is for it; `Ok(true)` if it was answered.
pub async fn serve(deps: &Deps, session: &mut Session, request_id: &str) -> pingora::Result<bool> {
    let req = session.req_header();
    let Some(path) = protected_path(req.uri.path()) else {
        return Ok(false);
    };
    let Some(origin) = origin(&deps.cfg, req) else {
        deps.metrics.deny(&Denial::BadHost);
        deny::respond(session, &Denial::BadHost, request_id, &deps.cfg).await?;
        return Ok(true);
    };
    let body = document(&origin, path, &deps.cfg.issuer).to_string();
    respond_json(session, 200, request_id, Bytes::from(body), &[("cache-control", CACHE_CONTROL)]).await?;
    Ok(true)
}

#[cfg(test)]
mod tests;
