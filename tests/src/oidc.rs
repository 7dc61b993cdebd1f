//! A real OpenID provider for the subject-federation tests: panva's `oidc-provider` (pinned in
//! `tests/oidc/package.json`) run by `node` from `tests/oidc/provider.mjs`, serving HTTPS with a
//! test PKI. `deploy/local/test.sh` installs it once into `.local/oidc-provider` and exports
//! `CARACAL_OIDC_PROVIDER_DIR`; without it the federation tests fail (they are part of the suite).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

use crate::infra::free_port;
use crate::pki::TestPki;

/// The client whose id_tokens the zone accepts (the registered audience).
pub const CLIENT_ID: &str = "caracal-e2e";
/// The secret of every client of the provider.
pub const CLIENT_SECRET: &str = "e2e-oidc-client-secret";

/// A running provider, killed on drop.
pub struct OpenIdProvider {
    /// `https://localhost:<port>`, the `iss` of its id_tokens.
    pub issuer: String,
    /// Its JWKS document.
    pub jwks_url: String,
    /// The private key (PKCS#8 PEM, EC P-256) of `upstream-api-jwt`, the client that authenticates
    /// with `private_key_jwt`; the provider knows its public half.
    pub jwt_client_key: std::path::PathBuf,
    child: tokio::process::Child,
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("scratch paths are UTF-8")
}

impl OpenIdProvider {
    /// Starts the provider with `pki`'s certificate and waits until it listens.
    pub async fn start(pki: &TestPki, log_dir: &Path) -> Self {
        let dir = std::env::var("CARACAL_OIDC_PROVIDER_DIR")
            .expect("CARACAL_OIDC_PROVIDER_DIR is unset: run the suite with deploy/local/test.sh, which installs oidc-provider");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("oidc").join("provider.mjs");
        let jwt_client_key = log_dir.join("jwt-client.key");
        let jwt_client_public = log_dir.join("jwt-client.pub");
        for args in [
            vec!["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", path_str(&jwt_client_key)],
            vec!["pkey", "-in", path_str(&jwt_client_key), "-pubout", "-out", path_str(&jwt_client_public)],
        ] {
            let out = std::process::Command::new("openssl").args(&args).output().expect("openssl must be installed");
            assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        // A start that hangs (seen once in CI: no ready line within 90 s, the cause unrecorded) is
        // killed and tried again on a new port, with what it logged kept for the report.
        let mut attempts = Vec::new();
        let (child, first) = loop {
            let log_path = log_dir.join(format!("oidc-provider-{}.log", attempts.len() + 1));
            let log = std::fs::File::create(&log_path).expect("create the oidc-provider log");
            let mut child = tokio::process::Command::new("node")
                .arg(&script)
                .env("OIDC_PROVIDER_DIR", &dir)
                .env("PORT", free_port().to_string())
                .env("TLS_CERT_FILE", &pki.cert)
                .env("TLS_KEY_FILE", &pki.key)
                .env("CLIENT_SECRET", CLIENT_SECRET)
                .env("JWT_CLIENT_PUBLIC_KEY_FILE", &jwt_client_public)
                .stdout(Stdio::piped())
                .stderr(log)
                .kill_on_drop(true)
                .spawn()
                .expect("node must be installed (deploy/local/lib.sh)");
            let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
            // Importing oidc-provider and generating its RSA key takes seconds on a loaded 2-core runner.
            let outcome = match tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await {
                Ok(Ok(Some(line))) => Ok(line),
                Ok(Ok(None)) => Err("exited"),
                Ok(Err(_)) => Err("stdout unreadable"),
                Err(_) => Err("no ready line within 30 s"),
            };
            match outcome {
                Ok(line) => break (child, line),
                Err(why) => {
                    let _ = child.kill().await;
                    let logged = std::fs::read_to_string(&log_path).unwrap_or_default();
                    let tail: String = logged.lines().rev().take(20).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
                    eprintln!("oidc-provider attempt {}: {why}; it logged:\n{tail}", attempts.len() + 1);
                    attempts.push(format!("{why} ({})", log_path.display()));
                    assert!(attempts.len() < 3, "oidc-provider did not start: {attempts:?}");
                }
            }
        };
        let ready: serde_json::Value = serde_json::from_str(&first).expect("oidc-provider ready line");
        let issuer = ready["issuer"].as_str().expect("issuer").to_owned();
        Self { jwks_url: format!("{issuer}/jwks"), issuer, jwt_client_key, child }
    }

    /// Stops the provider (an outage).
    pub async fn stop(&mut self) {
        let _ = self.child.kill().await;
    }
}
