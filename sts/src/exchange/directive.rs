//! How the gateway must reach and authenticate to a resource's upstream: the directive the
//! resource exchange returns beside the resource mandate. A provider key is opened here, from its
//! seal under `ZONE_KEK` bound to the zone and resource, and leaves the STS only in the directive.

use base64::Engine;
use caracal_shared::exchange::UpstreamDirective;

use crate::Sts;
use crate::error::StsError;
use crate::store::Resource;

impl Sts {
    /// How the gateway must reach and authenticate to the resource's upstream.
    pub(super) async fn directive(&self, zone_id: &str, r: &Resource) -> Result<UpstreamDirective, StsError> {
        let p = &r.credential_placement.0;
        let mut d = upstream(r);
        match r.credential_mode.as_str() {
            "caracal_jwt" => {
                d.auth_header = Some("Authorization".into());
                d.auth_scheme = Some("Bearer".into());
            }
            "provider_apikey" => {
                let (Some(sealed), Some(kek_id)) = (&r.credential_secret, &r.credential_kek_id) else {
                    return Err(StsError::Internal(format!("resource {} has no provider key", r.id)));
                };
                let kek = self.keys.kek();
                if kek_id != kek.id() {
                    return Err(StsError::Internal(format!("provider key of resource {} is sealed under another ZONE_KEK", r.id)));
                }
                let key = kek
                    .open(&crate::store::provider_secret_aad(zone_id, &r.id), sealed)
                    .and_then(|k| String::from_utf8(k).ok())
                    .ok_or_else(|| StsError::Internal(format!("provider key of resource {} does not decrypt", r.id)))?;
                d.auth_location = Some(p.location.clone().unwrap_or_else(|| "header".into()));
                d.auth_header = p.header.clone();
                d.auth_scheme = p.scheme.clone();
                d.query_param_name = p.query_param.clone();
                d.provider_token = Some(key);
                d.forward_caracal_identity = p.forward_caracal_identity;
            }
            "provider" => self.provider_credential(zone_id, r, &mut d).await?,
            _ => {}
        }
        Ok(d)
    }

    /// `credential_mode = provider`: what the referenced provider yields (`docs/providers.md`).
    /// Fails closed: a provider gone, of an unknown kind, whose key does not open, or not allowed
    /// for one of the resource's upstream hosts answers no directive at all.
    async fn provider_credential(&self, zone_id: &str, r: &Resource, d: &mut UpstreamDirective) -> Result<(), StsError> {
        let missing = || StsError::Internal(format!("resource {} names a provider that is not live", r.id));
        let (Some(provider_id), Some(kind)) = (&r.credential_provider_id, &r.provider_kind) else { return Err(missing()) };
        let raw = r.provider_config.as_ref().map(|c| c.0.clone()).unwrap_or_default();
        let malformed = |e: serde_json::Error| StsError::Internal(format!("provider {provider_id} config: {e}"));
        let secrets = || -> Result<std::collections::BTreeMap<String, String>, StsError> {
            let (Some(sealed), Some(kek_id)) = (&r.provider_secret, &r.provider_kek_id) else { return Err(missing()) };
            let kek = self.keys.kek();
            if kek_id != kek.id() {
                return Err(StsError::Internal(format!("provider {provider_id} is sealed under another ZONE_KEK")));
            }
            kek.open(&crate::store::provider_config_aad(zone_id, provider_id), sealed)
                .and_then(|p| serde_json::from_slice(&p).ok())
                .ok_or_else(|| StsError::Internal(format!("provider {provider_id} does not decrypt")))
        };
        let endpoints = caracal_shared::pool::endpoints_or_single(&r.endpoints.0, &r.upstream_url);
        let hosts_ok = |allowed: &[String]| caracal_shared::pool::endpoint_outside(allowed, &endpoints).is_none();
        let not_allowed = || StsError::AccessDenied("the resource's credential provider is not allowed for its upstream host".into());
        match kind.as_str() {
            "none" => d.auth_mode = "none".into(),
            "oauth2_client_credentials" => {
                // A changed configuration or secret is another token.
                let version =
                    caracal_shared::sig::sha256(&[r.provider_secret.as_deref().unwrap_or_default(), raw.to_string().as_bytes()].concat());
                let cfg: crate::provider_tokens::ClientCredentials = serde_json::from_value(raw).map_err(malformed)?;
                if !hosts_ok(&cfg.allowed_hosts) {
                    return Err(not_allowed());
                }
                let secret = secrets()?.remove(cfg.secret_name()).ok_or_else(missing)?;
                let token = self.provider_tokens.token(zone_id, provider_id, version, &cfg, &secret).await.map_err(|e| {
                    tracing::warn!(zone_id, provider_id, error = %e, "credential provider token request failed");
                    StsError::ProviderUnavailable(e.to_string())
                })?;
                d.auth_mode = "provider_apikey".into();
                d.auth_location = Some("header".into());
                d.auth_header = Some(cfg.header.clone().unwrap_or_else(|| "Authorization".into()));
                d.auth_scheme = Some(cfg.scheme.clone().unwrap_or_else(|| "Bearer".into()));
                d.provider_token = Some(token.to_string());
            }
            "bearer_token" | "http_basic" => {
                let cfg: crate::store::StaticCredential = serde_json::from_value(raw).map_err(malformed)?;
                if !hosts_ok(&cfg.allowed_hosts) {
                    return Err(not_allowed());
                }
                let mut secrets = secrets()?;
                let (scheme, credential) = if kind == "bearer_token" {
                    (cfg.scheme.clone().unwrap_or_else(|| "Bearer".into()), secrets.remove("token").ok_or_else(missing)?)
                } else {
                    let password = secrets.remove("password").ok_or_else(missing)?;
                    let user = cfg.username.clone().ok_or_else(missing)?;
                    ("Basic".into(), base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
                };
                d.auth_mode = "provider_apikey".into();
                d.auth_location = Some("header".into());
                d.auth_header = Some(cfg.header.clone().unwrap_or_else(|| "Authorization".into()));
                d.auth_scheme = Some(scheme);
                d.provider_token = Some(credential);
            }
            "api_key" => {
                let config: crate::store::ProviderConfig = serde_json::from_value(raw).map_err(malformed)?;
                if !hosts_ok(&config.allowed_hosts) {
                    return Err(not_allowed());
                }
                let key = secrets()?.remove("api_key").ok_or_else(missing)?;
                let p = config.placement();
                d.auth_mode = "provider_apikey".into();
                d.auth_location = Some(p.location.unwrap_or_else(|| "header".into()));
                d.auth_header = p.header;
                d.auth_scheme = p.scheme;
                d.query_param_name = p.query_param;
                d.provider_token = Some(key);
                d.forward_caracal_identity = p.forward_caracal_identity;
            }
            other => return Err(StsError::Internal(format!("provider {provider_id} is of kind {other}, which the STS cannot use"))),
        }
        Ok(())
    }
}

/// Where the gateway sends the resource's requests. A plain resource — one endpoint, the default
/// policy, no probe, default retries and connections — is sent as before (`url` alone), so its
/// directive is byte-identical to one from an STS that predates pools. Any pool setting sends the
/// set and every setting, which is what moves the gateway onto its pool path.
fn upstream(r: &Resource) -> UpstreamDirective {
    let mut d = UpstreamDirective { url: r.upstream_url.clone(), auth_mode: r.credential_mode.clone(), mcp: r.mcp(), ..Default::default() };
    d.timeouts = r.timeouts.0;
    let set = caracal_shared::pool::endpoints_or_single(&r.endpoints.0, &r.upstream_url);
    let upkeep = r.health.is_some() || !r.retry.0.is_default() || !r.connections.0.is_default();
    if set.len() > 1 || set[0].url != r.upstream_url || !r.load_balancing.0.is_default() || upkeep {
        // A gateway that predates pools dials `url` alone: never a draining member.
        d.url = set.iter().find(|e| !e.drain).unwrap_or(&set[0]).url.clone();
        d.endpoints = set;
        d.load_balancing = r.load_balancing.0.clone();
        d.health = r.health.as_ref().map(|h| h.0.clone());
        d.retry = r.retry.0;
        d.connections = r.connections.0;
    }
    d
}

#[cfg(test)]
mod tests {
    use caracal_shared::pool::{Connections, Endpoint, HealthProbe, Retry};
    use sqlx::types::Json;

    use super::upstream;
    use crate::store::Resource;

    #[test]
    fn a_plain_resource_keeps_its_directive_and_any_pool_setting_sends_the_pool() {
        let plain = Resource::plain("http://up/v1");
        let json = |r: &Resource| serde_json::to_value(upstream(r)).unwrap();
        assert_eq!(json(&plain), serde_json::json!({"url": "http://up/v1", "auth_mode": "none"}), "unchanged for a plain resource");
        let defaults = Resource {
            retry: Json(Retry::default()),
            connections: Json(Connections::default()),
            endpoints: Json(vec![Endpoint::single("http://up/v1")]),
            ..Resource::plain("http://up/v1")
        };
        assert_eq!(json(&defaults), json(&plain), "settings at their defaults change nothing");

        let one = serde_json::json!([{"url": "http://up/v1", "weight": 1}]);
        let probed = Resource { health: Some(Json(HealthProbe::default())), ..Resource::plain("http://up/v1") };
        let d = json(&probed);
        assert_eq!((&d["endpoints"], d["health"]["interval_ms"].as_u64()), (&one, Some(5000)), "{d}");
        assert_eq!(d.get("retry"), None, "default retries are not sent");
        let retried = Resource { retry: Json(Retry { attempts: 3, on_unavailable: false }), ..Resource::plain("http://up/v1") };
        let d = json(&retried);
        assert_eq!((&d["endpoints"], &d["retry"]), (&one, &serde_json::json!({"attempts": 3})), "{d}");
        let capped =
            Resource { connections: Json(Connections { max_in_flight: Some(4), http2: false }), ..Resource::plain("http://up/v1") };
        let d = json(&capped);
        assert_eq!((&d["endpoints"], &d["connections"]), (&one, &serde_json::json!({"max_in_flight": 4})), "{d}");
        assert_eq!(d.get("health"), None);
    }
}
