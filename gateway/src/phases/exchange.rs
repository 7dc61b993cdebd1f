//! The signed per-request exchange with the STS.
//!
//! `POST {STS_URL}/oauth/2/token` with the gateway mandate as `subject_token`, the resource, and the
//! request's method and path (the STS decides whether this operation is declared and scoped). The
//! request carries `X-Caracal-Gateway-Timestamp`, a single-use `X-Caracal-Gateway-Request` nonce and
//! `X-Caracal-Gateway-Signature` = HMAC(`GATEWAY_STS_HMAC_KEY`, `ts\nnonce\nPOST\npath\nsha256(body)`).
//!
//! A refusal from the STS (4xx) is relayed with its status, code and description
//! (`sts_refused`); a failure the STS reports itself (5xx with its error body, such as 503
//! `policy_eval_failed`) is relayed the same way but counted as `sts_exchange_errors`; a
//! transport failure or an answer outside the contract is `sts_unavailable` (502, 504 on
//! timeout), also `sts_exchange_errors`. [`health`] tells the circuits which of these concern one
//! zone and which the whole STS. The result is an [`ExchangeGrant`]: the resource mandate and the
//! upstream directive.

use caracal_shared::exchange::{GRANT_TYPE_TOKEN_EXCHANGE, TOKEN_TYPE_ACCESS_TOKEN, TokenResponse, UpstreamDirective};
use caracal_shared::mcp::{Listing, Visible};
use caracal_shared::{WireError, b64, request_id, sig};

use crate::deny::Denial;
use crate::phases::circuit::Health;
use crate::phases::replay::FreshJti;

/// Largest STS answer read.
const MAX_STS_BODY: usize = 64 * 1024;

/// What the STS granted for this request.
pub struct ExchangeGrant {
    /// The `use=resource` mandate to forward.
    pub mandate: String,
    /// Where and how to forward.
    pub directive: UpstreamDirective,
}

/// The STS client.
pub struct StsClient {
    http: reqwest::Client,
    /// `POST /oauth/2/token` (plus any base path of `STS_URL`). Parsed once: a clone per request is
    /// a copy, where a `&str` would be parsed again; its path is what the signature covers.
    token_url: reqwest::Url,
    /// `POST /oauth/2/mcp/visible` (`docs/mcp.md` §3).
    visible_url: reqwest::Url,
    key: Vec<u8>,
}

/// What the request being exchanged looks like.
pub struct ExchangeRequest<'a> {
    pub resource: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub request_id: &'a str,
    /// The request's `traceparent`, the gateway's span as parent (`crate::trace`).
    pub traceparent: &'a str,
    /// The MCP facts of a POST the gateway read (JSON of `caracal_shared::mcp::Post`).
    pub mcp: Option<&'a str>,
}

impl StsClient {
    /// A client for the STS at `sts_url` (validated by the configuration: an http(s) URL).
    pub fn new(http: reqwest::Client, sts_url: &str, key: Vec<u8>) -> Result<Self, url::ParseError> {
        let token_url = reqwest::Url::parse(&format!("{sts_url}/oauth/2/token"))?;
        let visible_url = reqwest::Url::parse(&format!("{sts_url}/oauth/2/mcp/visible"))?;
        Ok(Self { http, token_url, visible_url, key })
    }

    /// A signed form POST to the STS (see the module docs for the signature, which covers `url`'s path).
    async fn signed(
        &self,
        url: &reqwest::Url,
        body: String,
        request_id: &str,
        traceparent: Option<&str>,
    ) -> reqwest::Result<reqwest::Response> {
        let ts = chrono::Utc::now().timestamp().to_string();
        let nonce = b64::random_hex(32);
        let signature = sig::gateway_signature(&self.key, &ts, &nonce, "POST", url.path(), body.as_bytes());
        let mut post = self.http.post(url.clone());
        if let Some(t) = traceparent {
            post = post.header("traceparent", t);
        }
        post.header(http::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(http::header::ACCEPT, "application/json")
            .header(request_id::HEADER, request_id)
            .header(sig::GATEWAY_TIMESTAMP_HEADER, ts)
            .header(sig::GATEWAY_NONCE_HEADER, nonce)
            .header(sig::GATEWAY_SIGNATURE_HEADER, signature)
            .body(body)
            .send()
            .await
    }

    /// Which names of an MCP listing the resource mandate `mandate` (issued for that listing) may
    /// use. Any failure is an error: the caller then shows nothing.
    pub async fn visible(
        &self,
        zone_id: &str,
        client_id: &str,
        mandate: &str,
        request_id: &str,
        listing: &Listing,
    ) -> Result<Visible, String> {
        let list = serde_json::to_string(listing).map_err(|e| e.to_string())?;
        let body = form_urlencoded::Serializer::new(String::with_capacity(mandate.len() + list.len() + 256))
            .append_pair("application_id", client_id)
            .append_pair("gateway_request_id", request_id)
            .append_pair("grant_type", GRANT_TYPE_TOKEN_EXCHANGE)
            .append_pair("mcp_list", &list)
            .append_pair("subject_token", mandate)
            .append_pair("subject_token_type", TOKEN_TYPE_ACCESS_TOKEN)
            .append_pair("zone_id", zone_id)
            .finish();
        let resp = self.signed(&self.visible_url, body, request_id, None).await.map_err(|e| without_url(e).to_string())?;
        let status = resp.status().as_u16();
        let body = read_capped(resp).await.map_err(|_| "unreadable answer".to_owned())?;
        if status != 200 {
            return Err(format!("status {status}: {}", String::from_utf8_lossy(&body[..body.len().min(200)])));
        }
        serde_json::from_slice(&body).map_err(|e| e.to_string())
    }

    /// The form body, keys in sorted order.
    fn form(m: &FreshJti<'_>, req: &ExchangeRequest<'_>) -> String {
        let c = &m.0.claims;
        let mut form = form_urlencoded::Serializer::new(String::with_capacity(m.0.token.len() + 512));
        form.append_pair("application_id", &c.client_id)
            .append_pair("gateway_request_id", req.request_id)
            .append_pair("grant_type", GRANT_TYPE_TOKEN_EXCHANGE);
        if let Some(mcp) = req.mcp {
            form.append_pair("mcp", mcp);
        }
        form.append_pair("request_method", req.method)
            .append_pair("request_path", req.path)
            .append_pair("resource", req.resource)
            .append_pair("subject_token", m.0.token)
            .append_pair("subject_token_type", TOKEN_TYPE_ACCESS_TOKEN)
            .append_pair("zone_id", &c.zone_id)
            .finish()
    }

    /// Exchanges the gateway mandate for a resource mandate and the upstream directive.
    pub async fn exchange(&self, m: &FreshJti<'_>, req: &ExchangeRequest<'_>) -> Result<ExchangeGrant, Denial> {
        let body = Self::form(m, req);
        let sent = self.signed(&self.token_url, body, req.request_id, Some(req.traceparent)).await;
        let resp = match sent {
            Ok(r) => r,
            Err(e) if e.is_timeout() => return Err(Denial::StsUnavailable { status: 504, description: "sts timeout" }),
            Err(e) => {
                tracing::error!(request_id = req.request_id, error = %without_url(e), "STS exchange failed");
                return Err(Denial::StsUnavailable { status: 502, description: "sts unavailable" });
            }
        };
        let status = resp.status().as_u16();
        let json = resp.headers().get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|ct| ct.contains("json"));
        let body = match read_capped(resp).await {
            Ok(b) => b,
            Err(timeout) => {
                let status = if timeout { 504 } else { 502 };
                return Err(Denial::StsUnavailable { status, description: "sts response unreadable" });
            }
        };
        if status != 200 {
            return Err(match serde_json::from_slice::<WireError>(&body) {
                Ok(w) if json && !w.error.is_empty() && (400..500).contains(&status) => {
                    Denial::StsRefused { status, code: w.error, description: w.error_description, scope: w.scope }
                }
                Ok(w) if json && !w.error.is_empty() && (500..600).contains(&status) => {
                    Denial::StsFailed { status, code: w.error, description: w.error_description }
                }
                _ => Denial::StsUnavailable { status: if status >= 500 { status } else { 502 }, description: "sts unavailable" },
            });
        }
        let parsed: TokenResponse = serde_json::from_slice(&body)
            .ok()
            .filter(|t: &TokenResponse| json && !t.access_token.is_empty())
            .ok_or(Denial::StsUnavailable { status: 502, description: "sts response invalid" })?;
        let directive =
            parsed.upstreams.and_then(|mut u| u.remove(req.resource)).filter(|d| !d.url.is_empty()).ok_or(Denial::NoUpstream)?;
        Ok(ExchangeGrant { mandate: parsed.access_token, directive })
    }
}

/// What an exchange's outcome says about the STS (see [`super::circuit`]): the STS's own 5xx and
/// timeouts concern the zone whose exchange it was; transport failures and answers outside the
/// contract concern every zone.
pub fn health(outcome: &Result<ExchangeGrant, Denial>) -> Health {
    match outcome {
        // A resource's credential provider failing is that provider's outage, not the STS's.
        Err(Denial::StsFailed { code, .. }) if code == caracal_shared::ErrorCode::HttpRequestFailed.as_str() => Health::Healthy,
        Err(Denial::StsFailed { .. } | Denial::StsUnavailable { status: 504, .. }) => Health::ZoneFailing,
        Err(Denial::StsUnavailable { .. }) => Health::StsDown,
        _ => Health::Healthy,
    }
}

/// Reads at most [`MAX_STS_BODY`] bytes; `Err(true)` on timeout.
async fn read_capped(mut resp: reqwest::Response) -> Result<Vec<u8>, bool> {
    let mut out = Vec::with_capacity(resp.content_length().map_or(2048, |n| (n as usize).min(MAX_STS_BODY)));
    while let Some(chunk) = resp.chunk().await.map_err(|e| e.is_timeout())? {
        if out.len() + chunk.len() > MAX_STS_BODY {
            return Err(false);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// The error without the URL (a reqwest error prints it; keep logs free of internal addresses).
fn without_url(e: reqwest::Error) -> reqwest::Error {
    e.without_url()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(status: u16) -> Result<ExchangeGrant, Denial> {
        Err(Denial::StsFailed { status, code: "policy_eval_failed".into(), description: "x".into() })
    }

    #[test]
    fn the_sts_reporting_a_failure_or_timing_out_concerns_the_zone() {
        assert_eq!(health(&failed(503)), Health::ZoneFailing);
        assert_eq!(health(&failed(500)), Health::ZoneFailing);
        assert_eq!(health(&Err(Denial::StsUnavailable { status: 504, description: "sts timeout" })), Health::ZoneFailing);
    }

    #[test]
    fn an_unreachable_sts_or_an_answer_outside_the_contract_concerns_every_zone() {
        assert_eq!(health(&Err(Denial::StsUnavailable { status: 502, description: "sts unavailable" })), Health::StsDown);
        assert_eq!(health(&Err(Denial::StsUnavailable { status: 503, description: "sts unavailable" })), Health::StsDown);
    }

    #[test]
    fn refusals_and_grants_are_a_healthy_sts() {
        let refused = Err(Denial::StsRefused { status: 403, code: "access_denied".into(), description: "no".into(), scope: None });
        assert_eq!(health(&refused), Health::Healthy);
        let limited = Err(Denial::StsRefused { status: 429, code: "rate_limited".into(), description: "slow down".into(), scope: None });
        assert_eq!(health(&limited), Health::Healthy, "a rate limit is the STS protecting itself, not failing");
        assert_eq!(health(&Err(Denial::NoUpstream)), Health::Healthy);
        let provider_down = Err(Denial::StsFailed { status: 502, code: "http_request_failed".into(), description: "x".into() });
        assert_eq!(health(&provider_down), Health::Healthy, "a credential provider's outage does not open the zone's circuit");
    }
}
