//! Access tokens of `oauth2_client_credentials` credential providers (`docs/providers.md`): the
//! STS asks the provider's token endpoint (RFC 6749 §4.4), authenticated with the sealed client
//! secret or, for `private_key_jwt`, a client assertion signed with the sealed private key (RFC 7523
//! §2.2, a fresh one per request), keeps
//! the token until [`REFRESH_BEFORE`] its expiry, and hands it to the gateway in the directive —
//! neither the client secret nor the key leaves the STS. One fetch at a time per provider configuration (the
//! others wait for it); a failed fetch is never cached, and then the exchange is refused (502
//! `http_request_failed`): fail closed. Tokens and secrets are never logged.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::federation::jwks::{chain, guarded_client, literal_host_allowed};

/// A token is replaced this long before it expires (so it cannot expire on its way upstream).
pub const REFRESH_BEFORE: Duration = Duration::from_secs(30);
/// Deadline of one token request.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest token response read.
const MAX_BODY: usize = 64 * 1024;

/// The public configuration of a client-credentials provider.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientCredentials {
    /// The provider's token endpoint (https).
    pub token_url: String,
    pub client_id: String,
    /// `client_secret_basic` (default), `client_secret_post` or `private_key_jwt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_auth_method: Option<String>,
    /// The `kid` of the assertion's key (`private_key_jwt`), as the provider registered it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// `client_credentials` (the only one supported).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_type: Option<String>,
    /// Space-separated scopes to ask for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// RFC 8707 `resource` / `audience` to ask for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// Where the token goes upstream (default `Authorization: Bearer`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_hosts: Vec<String>,
}

impl ClientCredentials {
    /// The problems of a configuration, every one.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        match url::Url::parse(&self.token_url) {
            Ok(u) if u.scheme() == "https" && u.host().is_some() && u.username().is_empty() && u.fragment().is_none() => {}
            _ => p.push("token_url must be an absolute https URL without userinfo or fragment".to_owned()),
        }
        if self.client_id.is_empty() || self.client_id.len() > 512 {
            p.push("client_id must be 1..512 characters".into());
        }
        if !matches!(self.client_auth_method.as_deref().unwrap_or("client_secret_basic"), "client_secret_basic" | "client_secret_post")
            && !self.signs_assertions()
        {
            p.push("client_auth_method must be client_secret_basic, client_secret_post or private_key_jwt".into());
        }
        if self.key_id.as_ref().is_some_and(|k| k.is_empty() || k.len() > 256 || !k.bytes().all(|b| (0x21..=0x7e).contains(&b))) {
            p.push("key_id must be 1..256 visible ASCII characters".into());
        }
        if self.grant_type.as_deref().unwrap_or("client_credentials") != "client_credentials" {
            p.push("grant_type: only client_credentials is supported (jwt_bearer is not yet)".into());
        }
        p
    }

    /// Whether the client authenticates with a signed assertion (`private_key_jwt`).
    pub fn signs_assertions(&self) -> bool {
        self.client_auth_method.as_deref() == Some("private_key_jwt")
    }

    /// The sealed secret this configuration authenticates with: `private_key` or `client_secret`.
    pub fn secret_name(&self) -> &'static str {
        if self.signs_assertions() { "private_key" } else { "client_secret" }
    }
}

/// The signing key of `private_key_jwt` assertions: a PKCS#8 PEM EC P-256 key (ES256) or an RSA
/// key (RS256, PKCS#1 or PKCS#8). The error says which forms are accepted, never the key.
pub fn assertion_key(pem: &str) -> Result<(jsonwebtoken::EncodingKey, jsonwebtoken::Algorithm), String> {
    use jsonwebtoken::{Algorithm, EncodingKey};
    if let Ok(k) = EncodingKey::from_ec_pem(pem.as_bytes()) {
        return Ok((k, Algorithm::ES256));
    }
    if let Ok(k) = EncodingKey::from_rsa_pem(pem.as_bytes()) {
        return Ok((k, Algorithm::RS256));
    }
    Err("private_key must be a PEM EC P-256 key (PKCS#8) or an RSA key".into())
}

/// How long a client assertion is valid (one request).
const ASSERTION_LIFETIME: Duration = Duration::from_secs(60);

/// A `private_key_jwt` client assertion for `cfg` (RFC 7523 §3): issued by and about the client,
/// for the token endpoint, single use.
fn client_assertion(cfg: &ClientCredentials, pem: &str) -> Result<String, TokenError> {
    let (key, alg) = assertion_key(pem).map_err(TokenError::Key)?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
    let claims = serde_json::json!({
        "iss": cfg.client_id,
        "sub": cfg.client_id,
        "aud": cfg.token_url,
        "jti": uuid::Uuid::new_v4().to_string(),
        "iat": now,
        "exp": now + ASSERTION_LIFETIME.as_secs(),
    });
    let mut header = jsonwebtoken::Header::new(alg);
    header.kid.clone_from(&cfg.key_id);
    jsonwebtoken::encode(&header, &claims, &key).map_err(|e| TokenError::Key(e.to_string()))
}

/// `client_assertion_type` of RFC 7523 §2.2.
const JWT_BEARER_ASSERTION: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// Why a token could not be had (logged; the client sees 502 `http_request_failed`).
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("token_url host {0} is not a public address and not in PROVIDER_PRIVATE_HOSTS")]
    PrivateHost(String),
    #[error("token request failed: {0}")]
    Http(String),
    #[error("the token endpoint answered HTTP {0}")]
    Status(u16),
    #[error("not a token response: {0}")]
    Malformed(String),
    #[error("the client assertion could not be signed: {0}")]
    Key(String),
}

/// A token and when to stop using it.
#[derive(Clone)]
struct Held {
    token: Arc<str>,
    until: Instant,
}

/// The token client and its cache, keyed by zone, provider and a digest of its configuration and
/// sealed secret (a changed provider fetches afresh).
pub struct ProviderTokens {
    http: reqwest::Client,
    private_hosts: Arc<Vec<String>>,
    cache: moka::future::Cache<(String, String, [u8; 32]), Held>,
}

impl ProviderTokens {
    pub fn new(private_hosts: Vec<String>, ca_pem: Option<&[u8]>) -> Result<Self, reqwest::Error> {
        let private_hosts = Arc::new(private_hosts);
        Ok(Self {
            http: guarded_client(&private_hosts, ca_pem, FETCH_TIMEOUT)?,
            private_hosts,
            cache: moka::future::Cache::builder().max_capacity(10_000).time_to_live(Duration::from_secs(3600)).build(),
        })
    }

    /// A live token of the provider: the held one, or a new one. `secret` is the sealed secret
    /// the configuration names ([`ClientCredentials::secret_name`]).
    pub async fn token(
        &self,
        zone_id: &str,
        provider_id: &str,
        version: [u8; 32],
        cfg: &ClientCredentials,
        secret: &str,
    ) -> Result<Arc<str>, Arc<TokenError>> {
        let key = (zone_id.to_owned(), provider_id.to_owned(), version);
        if let Some(h) = self.cache.get(&key).await {
            if Instant::now() < h.until {
                return Ok(h.token);
            }
            self.cache.invalidate(&key).await;
        }
        let held = self.cache.try_get_with(key, async { self.fetch(cfg, secret).await }).await?;
        Ok(held.token)
    }

    async fn fetch(&self, cfg: &ClientCredentials, secret: &str) -> Result<Held, TokenError> {
        let url = url::Url::parse(&cfg.token_url).map_err(|e| TokenError::Http(e.to_string()))?;
        literal_host_allowed(&url, &self.private_hosts).map_err(TokenError::PrivateHost)?;
        let mut form = vec![("grant_type", "client_credentials")];
        if let Some(s) = &cfg.scope {
            form.push(("scope", s));
        }
        if let Some(a) = &cfg.audience {
            form.push(("resource", a));
        }
        let mut req = self.http.post(url).header("accept", "application/json");
        let assertion;
        if cfg.signs_assertions() {
            assertion = client_assertion(cfg, secret)?;
            form.push(("client_id", &cfg.client_id));
            form.push(("client_assertion_type", JWT_BEARER_ASSERTION));
            form.push(("client_assertion", &assertion));
        } else if cfg.client_auth_method.as_deref() == Some("client_secret_post") {
            form.push(("client_id", &cfg.client_id));
            form.push(("client_secret", secret));
        } else {
            // RFC 6749 §2.3.1: each part form-urlencoded before the Basic encoding.
            let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            req = req.basic_auth(enc(&cfg.client_id), Some(enc(secret)));
        }
        let started = Instant::now();
        let mut resp = req.form(&form).send().await.map_err(|e| TokenError::Http(chain(&e)))?;
        if !resp.status().is_success() {
            return Err(TokenError::Status(resp.status().as_u16()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| TokenError::Http(chain(&e)))? {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(TokenError::Malformed("answer too large".into()));
            }
            body.extend_from_slice(&chunk);
        }
        let answer: TokenAnswer = serde_json::from_slice(&body).map_err(|e| TokenError::Malformed(e.to_string()))?;
        if answer.access_token.is_empty() || !answer.access_token.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
            return Err(TokenError::Malformed("access_token is not a visible-ASCII string".into()));
        }
        // No `expires_in`: an hour, the common default; the held token is replaced early anyway.
        let lifetime = Duration::from_secs(answer.expires_in.unwrap_or(3600));
        Ok(Held { token: answer.access_token.into(), until: started + lifetime.saturating_sub(REFRESH_BEFORE) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configurations_are_checked_whole() {
        let ok = ClientCredentials { token_url: "https://idp.example/token".into(), client_id: "c".into(), ..Default::default() };
        assert!(ok.problems().is_empty());
        let bad = ClientCredentials {
            token_url: "http://idp.example/token".into(),
            client_id: String::new(),
            client_auth_method: Some("tls_client_auth".into()),
            grant_type: Some("jwt_bearer".into()),
            key_id: Some(String::new()),
            ..Default::default()
        };
        assert_eq!(bad.problems().len(), 5, "{:?}", bad.problems());
        let jwt = ClientCredentials { client_auth_method: Some("private_key_jwt".into()), ..ok };
        assert!(jwt.problems().is_empty());
        assert_eq!(jwt.secret_name(), "private_key");
    }

    /// A P-256 key in PKCS#8 PEM (generated for this test only).
    const EC_KEY: &str = "-----BEGIN PRIVATE KEY-----\n\
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgTZBaLQLVG6g5Uatn\n\
+cqAnmRPZyMAt8q15wGrxagmagChRANCAAThR/NDtwRh4aRrs6POzeZD+ZNkkGo5\n\
znhOWJRdvJYFVs3q3mh3KNxGf6jo2mkUIMfXjZ8LFLLviQnVgXp2juEy\n\
-----END PRIVATE KEY-----\n";

    #[test]
    fn assertions_are_signed_for_the_token_endpoint() {
        let cfg = ClientCredentials {
            token_url: "https://idp.example/token".into(),
            client_id: "svc".into(),
            client_auth_method: Some("private_key_jwt".into()),
            key_id: Some("k1".into()),
            ..Default::default()
        };
        let jwt = client_assertion(&cfg, EC_KEY).unwrap();
        let header = jsonwebtoken::decode_header(&jwt).unwrap();
        assert_eq!((header.alg, header.kid.as_deref()), (jsonwebtoken::Algorithm::ES256, Some("k1")));
        let claims = jsonwebtoken::dangerous::insecure_decode::<serde_json::Value>(&jwt).unwrap().claims;
        assert_eq!(
            (claims["iss"].as_str(), claims["sub"].as_str(), claims["aud"].as_str()),
            (Some("svc"), Some("svc"), Some("https://idp.example/token"))
        );
        assert_eq!(claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(), 60);
        assert_ne!(client_assertion(&cfg, EC_KEY).unwrap(), jwt, "a fresh jti each time");
        assert!(assertion_key("not a key").unwrap_err().contains("PEM"));
    }
}
