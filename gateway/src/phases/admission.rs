//! Admission: cheap checks on the request itself, before any key, Redis or STS work.
//!
//! Guards: bearer present and ≤ 4 KiB (`missing_auth`, `bad_bearer`); `X-Caracal-Resource` present and
//! no client-supplied `X-Caracal-Client-ID` (`bad_routing`, 400 `invalid_token`); no path traversal
//! (`path_traversal`, 400); `Content-Length` within `MAX_REQUEST_BYTES` (413 `payload_too_large`),
//! checked before a token is burned or the STS is asked.

use pingora::http::RequestHeader;

use crate::deny::Denial;

/// Largest bearer accepted.
pub const MAX_BEARER_BYTES: usize = 4096;
/// The routing header naming the resource.
pub const RESOURCE_HEADER: &str = "x-caracal-resource";
/// Refused from clients: identity comes from the mandate.
pub const CLIENT_ID_HEADER: &str = "x-caracal-client-id";

/// The bearer token of `Authorization: Bearer <token>` (scheme case-insensitive).
pub fn bearer(req: &RequestHeader) -> Result<&str, Denial> {
    let value = req.headers.get(http::header::AUTHORIZATION).ok_or(Denial::MissingBearer)?;
    let value = value.to_str().map_err(|_| Denial::MalformedBearer)?;
    let (scheme, token) = value.split_once(' ').ok_or(Denial::MissingBearer)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Denial::MissingBearer);
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(Denial::MissingBearer);
    }
    if token.len() > MAX_BEARER_BYTES {
        return Err(Denial::BearerTooLarge);
    }
    Ok(token)
}

/// The resource named by `X-Caracal-Resource`; refuses a client-supplied client id.
pub fn resource(req: &RequestHeader) -> Result<&str, Denial> {
    if req.headers.get(CLIENT_ID_HEADER).is_some_and(|v| !v.is_empty()) {
        return Err(Denial::ClientIdHeader);
    }
    let r = req.headers.get(RESOURCE_HEADER).and_then(|v| v.to_str().ok()).map(str::trim).unwrap_or("");
    if r.is_empty() || r.len() > 512 {
        return Err(Denial::MissingResource);
    }
    Ok(r)
}

/// Refuses a declared body larger than the limit (a chunked body is counted as it streams).
pub fn content_length(req: &RequestHeader, max: u64) -> Result<(), Denial> {
    match req.headers.get(http::header::CONTENT_LENGTH) {
        None => Ok(()),
        Some(v) => match v.to_str().ok().and_then(|s| s.trim().parse::<u64>().ok()) {
            Some(n) if n <= max => Ok(()),
            Some(_) => Err(Denial::PayloadTooLarge),
            // Pingora refuses unparseable framing itself; be explicit anyway.
            None => Err(Denial::PayloadTooLarge),
        },
    }
}

/// Counts `len` more request body bytes; over `max` the request fails with 413 (mapped to
/// `payload_too_large` by [`super::failure`]).
pub fn body_chunk(seen: &mut u64, len: usize, max: u64) -> pingora::Result<()> {
    *seen += len as u64;
    if *seen > max {
        return pingora::Error::e_explain(pingora::ErrorType::HTTPStatus(413), "request body over MAX_REQUEST_BYTES");
    }
    Ok(())
}

/// Refuses path traversal in every form an upstream might normalise: the path is
/// percent-decoded until stable (so `%252e%252e` is caught), and after any round an undecodable
/// escape, a backslash or NUL (`..\\`, `%5C..%5C`: Windows servers and some frameworks read `\\`
/// as `/`), a `.`/`..` segment — also with path parameters, `..;x` and `.;`, which Tomcat and
/// Spring strip before resolving dot segments — or an overlong UTF-8 form (`%c0%ae` is `.` to a
/// lax decoder) is refused.
pub fn path_traversal(path: &str) -> Result<(), Denial> {
    let mut current = path.as_bytes().to_vec();
    // Eight rounds cover any encoding depth a real client sends; deeper nesting is refused.
    for _ in 0..8 {
        if current.iter().any(|b| matches!(b, b'\\' | 0)) || has_dot_segment(&current) || has_overlong_utf8(&current) {
            return Err(Denial::PathTraversal);
        }
        if !current.contains(&b'%') {
            return Ok(());
        }
        current = strict_percent_decode(&current).ok_or(Denial::PathTraversal)?;
    }
    Err(Denial::PathTraversal)
}

/// A `.` or `..` segment, ignoring `;` path parameters (`/..;jsessionid=x/` is `/../` to Tomcat).
fn has_dot_segment(path: &[u8]) -> bool {
    path.split(|b| *b == b'/').any(|seg| {
        let name = seg.split(|b| *b == b';').next().unwrap_or(seg);
        name == b"." || name == b".."
    })
}

/// Lead bytes that only an overlong (invalid) UTF-8 sequence starts with: `C0`/`C1`, `E0 80..9F`,
/// `F0 80..8F`. Real UTF-8 never contains them; lax decoders turn them into `.`, `/` or `\\`.
fn has_overlong_utf8(path: &[u8]) -> bool {
    path.windows(2).any(|w| matches!(w, [0xC0 | 0xC1, _] | [0xE0, 0x80..=0x9F] | [0xF0, 0x80..=0x8F]))
        || path.last().is_some_and(|b| matches!(b, 0xC0 | 0xC1))
}

/// Percent-decoding that refuses a `%` not followed by two hex digits.
fn strict_percent_decode(input: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'%' {
            let hi = (*input.get(i + 1)? as char).to_digit(16)?;
            let lo = (*input.get(i + 2)? as char).to_digit(16)?;
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(input[i]);
            i += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/x", None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    #[test]
    fn bearer_rules() {
        assert_eq!(bearer(&req(&[])), Err(Denial::MissingBearer));
        assert_eq!(bearer(&req(&[("authorization", "Basic abc")])), Err(Denial::MissingBearer));
        assert_eq!(bearer(&req(&[("authorization", "Bearer ")])), Err(Denial::MissingBearer));
        assert_eq!(bearer(&req(&[("authorization", "bearer  abc ")])), Ok("abc"));
        let big = format!("Bearer {}", "a".repeat(MAX_BEARER_BYTES + 1));
        assert_eq!(bearer(&req(&[("authorization", &big)])), Err(Denial::BearerTooLarge));
        let max = format!("Bearer {}", "a".repeat(MAX_BEARER_BYTES));
        assert!(bearer(&req(&[("authorization", &max)])).is_ok());
    }

    #[test]
    fn routing_headers() {
        assert_eq!(resource(&req(&[])), Err(Denial::MissingResource));
        assert_eq!(resource(&req(&[("x-caracal-resource", "  ")])), Err(Denial::MissingResource));
        assert_eq!(resource(&req(&[("x-caracal-resource", "api://a")])), Ok("api://a"));
        assert_eq!(resource(&req(&[("x-caracal-resource", "api://a"), ("x-caracal-client-id", "spoof")])), Err(Denial::ClientIdHeader));
    }

    #[test]
    fn content_length_limit() {
        assert!(content_length(&req(&[]), 10).is_ok());
        assert!(content_length(&req(&[("content-length", "10")]), 10).is_ok());
        assert_eq!(content_length(&req(&[("content-length", "11")]), 10), Err(Denial::PayloadTooLarge));
    }

    #[test]
    fn a_streamed_body_is_counted_against_the_limit() {
        let mut seen = 0;
        assert!(body_chunk(&mut seen, 6, 10).is_ok());
        assert!(body_chunk(&mut seen, 4, 10).is_ok(), "exactly the limit passes");
        let e = body_chunk(&mut seen, 1, 10).unwrap_err();
        assert_eq!(e.etype(), &pingora::ErrorType::HTTPStatus(413));
    }

    #[test]
    fn traversal_table() {
        let refused = [
            "/a/../b",
            "/..",
            "/a/./b",
            "/a/%2e%2e/b",
            "/a/%2E%2E/b",
            "/a/%252e%252e/b",
            "/a/%25252e%25252e/b",
            "/a/.%2e/b",
            "/a/%2e./b",
            "/a/%5c..%5csecret",
            "/a/%255c..%255csecret",
            "/a\\..\\b",
            "/a/%zz",
            "/a/%2",
            "/a/%25zz",
            "/a/%00",
            "/a/%2e",
            "/a/%2f..%2fb",
            "/a/..%2fb",
            "/a/%c0%ae%c0%ae/x/../y",
            // Path parameters hide dot segments from a plain segment compare (Tomcat, Spring).
            "/a/..;/b",
            "/a/..;x=1/b",
            "/..;x/",
            "/a/.;/b",
            "/a/..;",
            "/a/%2e%2e;/b",
            "/a/%2E%2E;jsessionid=1/b",
            "/a/..%3b/b",
            "/a/..%253b/b",
            "/a/;/../b",
            // Backslashes, raw, encoded and mixed.
            "/a/..\\b",
            "/a\\..\\b",
            "/a/%5C..%5Cb",
            "/a/%5c..\\b",
            "/a/..%5cb",
            "/a/%255C..%255Cb",
            // Overlong UTF-8 forms of `.` and `/`.
            "/a/%c0%ae%c0%ae/b",
            "/a/%e0%80%ae/b",
            "/a/%c0%af",
            "/a/%C1%9C",
            "/a/%f0%80%80%ae",
        ];
        for p in refused {
            assert_eq!(path_traversal(p), Err(Denial::PathTraversal), "{p} must be refused");
        }
        let accepted = [
            "/",
            "/.env",
            "/foo..bar",
            "/a/b.c/d",
            "/v1/items/%20x",
            "/a/...",
            "/a/b%2Fc",
            "/a/b;v=1",
            "/a/;jsessionid=1/b",
            "/a/..x;y",
            "/a/caf%C3%A9",
            "/a/%E2%82%AC",
        ];
        for p in accepted {
            assert_eq!(path_traversal(p), Ok(()), "{p} must pass");
        }
    }
}
