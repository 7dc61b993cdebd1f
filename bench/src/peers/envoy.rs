//! Envoy with `jwt_authn`: the incumbent way to put JWT checks in front of an upstream (S2j).
//!
//! Tokens are ES256, signed by a key the harness generates, and verified against a local JWKS file:
//! the same signature work per request as the gateway's verification, without replay protection,
//! revocation or an STS exchange.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use caracal_shared::jwks::Jwk;
use caracal_shared::jws::SigningKey;
use serde_json::{Value, json};

use crate::procs::{Child, Spawn};

/// Issuer and audience of the Envoy tokens.
pub(crate) const ISSUER: &str = "https://bench.issuer";
const AUDIENCE: &str = "https://bench.local";

/// A key and its JWKS document.
pub(crate) struct Keys {
    key: SigningKey,
    pub(crate) jwks: Value,
}

impl Keys {
    /// A fresh ES256 key.
    pub(crate) fn generate() -> anyhow::Result<Self> {
        let (key, _) = SigningKey::generate("bench-envoy-1")?;
        let (x, y) = key.public_coordinates();
        let jwks = json!({"keys": [Jwk::from_coordinates(key.kid(), &x, &y)]});
        Ok(Self { key, jwks })
    }

    /// `n` distinct tokens valid for an hour.
    pub(crate) fn tokens(&self, n: usize) -> anyhow::Result<Vec<String>> {
        let now = chrono::Utc::now().timestamp();
        (0..n)
            .map(|i| {
                let claims = json!({"iss": ISSUER, "aud": [AUDIENCE], "sub": "bench-agent", "iat": now, "exp": now + 3600, "jti": format!("envoy-{i}")});
                Ok(self.key.sign(&claims)?)
            })
            .collect()
    }
}

/// Envoy's bootstrap (JSON, which Envoy reads as YAML): one listener, `jwt_authn` then the router.
pub(crate) fn config(listen: SocketAddr, upstream: SocketAddr, jwks_file: &Path) -> Value {
    let addr = |a: SocketAddr| json!({"socket_address": {"address": a.ip().to_string(), "port_value": a.port()}});
    json!({
        "static_resources": {
            "listeners": [{
                "name": "bench",
                "address": addr(listen),
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "bench",
                        "codec_type": "HTTP1",
                        "route_config": {"virtual_hosts": [{
                            "name": "all",
                            "domains": ["*"],
                            // timeout 0: no 15 s cap on the streaming scenarios
                            "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "upstream", "timeout": "0s"}}]
                        }]},
                        "http_filters": [
                            {
                                "name": "envoy.filters.http.jwt_authn",
                                "typed_config": {
                                    "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
                                    "providers": {"caracal": {
                                        "issuer": ISSUER,
                                        "audiences": [AUDIENCE],
                                        "local_jwks": {"filename": jwks_file.display().to_string()},
                                        "forward": false
                                    }},
                                    "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "caracal"}}]
                                }
                            },
                            {"name": "envoy.filters.http.router", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}
                        ]
                    }
                }]}]
            }],
            "clusters": [{
                "name": "upstream",
                "type": "STATIC",
                "connect_timeout": "1s",
                "load_assignment": {"cluster_name": "upstream", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": addr(upstream)}}]}]}
            }]
        }
    })
}

/// Starts Envoy (two worker threads) with a JWKS for `keys`; checks a token is accepted.
pub(crate) async fn start(
    envoy: &Path,
    listen: SocketAddr,
    upstream: SocketAddr,
    keys: &Keys,
    token: &str,
    dir: &Path,
) -> anyhow::Result<Child> {
    let jwks_file = dir.join("envoy-jwks.json");
    std::fs::write(&jwks_file, keys.jwks.to_string())?;
    let conf = dir.join("envoy.json");
    std::fs::write(&conf, serde_json::to_string_pretty(&config(listen, upstream, &jwks_file))?)?;
    let args: Vec<String> = ["-c", &conf.display().to_string(), "--concurrency", "2", "--disable-hot-restart", "-l", "warning"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    let mut child = Child::spawn(Spawn { name: "envoy", program: envoy, args: &args, env: &[], dir })?;
    let auth = format!("Bearer {token}");
    child.wait_ready(listen, "/", &[("authorization", &auth)], Duration::from_secs(60)).await?;
    Ok(child)
}

#[cfg(test)]
mod tests {
    use caracal_shared::jws::Compact;

    use super::*;

    #[test]
    fn tokens_verify_against_the_published_key() {
        let keys = Keys::generate().unwrap();
        let token = &keys.tokens(2).unwrap()[1];
        let jwk: Jwk = serde_json::from_value(keys.jwks["keys"][0].clone()).unwrap();
        Compact::parse(token).unwrap().verify(&jwk.to_verifying_key().unwrap()).unwrap();
        let claims: Value = Compact::parse(token).unwrap().claims().unwrap();
        assert_eq!(claims["iss"], ISSUER);
    }

    #[test]
    fn config_wires_jwt_authn_before_the_router() {
        let c = config("127.0.0.1:1".parse().unwrap(), "127.0.0.1:2".parse().unwrap(), Path::new("/j.json"));
        let hcm = &c["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
        assert_eq!(hcm["http_filters"][0]["name"], "envoy.filters.http.jwt_authn");
        assert_eq!(hcm["http_filters"][1]["name"], "envoy.filters.http.router");
        assert_eq!(hcm["http_filters"][0]["typed_config"]["providers"]["caracal"]["local_jwks"]["filename"], "/j.json");
    }
}
