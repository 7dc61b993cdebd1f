//! A throwaway private CA and a server certificate it signs, made with the `openssl` CLI (installed
//! by `deploy/local/lib.sh`), for the TLS hops of a test stack: the control plane's listener, the
//! gateway's listener and a TLS-only `redis-server`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// PEM files of one test PKI: a CA and a leaf for `localhost` / `127.0.0.1`.
#[derive(Clone, Debug)]
pub struct TestPki {
    /// The CA certificate clients trust (`STS_CA_FILE`, `REDIS_CA_FILE`).
    pub ca: PathBuf,
    /// The server certificate (`TLS_CERT_FILE`, redis `--tls-cert-file`).
    pub cert: PathBuf,
    /// Its private key (`TLS_KEY_FILE`, redis `--tls-key-file`).
    pub key: PathBuf,
}

impl TestPki {
    /// Generates a P-256 CA and a leaf it signs into `dir` (a self-signed certificate is not a
    /// valid server certificate for rustls, so the leaf is a real CA-issued one).
    pub fn generate(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).expect("create pki dir");
        let p = |name: &str| dir.join(name);
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl must be installed");
            assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        let s = |path: PathBuf| path.display().to_string();
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
        let mut ca_args = vec!["req", "-x509"];
        ca_args.extend(ec);
        let (ca_key, ca, key, csr, cert) = (s(p("ca.key")), s(p("ca.pem")), s(p("key.pem")), s(p("leaf.csr")), s(p("cert.pem")));
        ca_args.extend(["-days", "1", "-subj", "/CN=caracal-e2e-ca", "-keyout", &ca_key, "-out", &ca]);
        openssl(&ca_args);
        let mut leaf_args = vec!["req"];
        leaf_args.extend(ec);
        leaf_args.extend(["-subj", "/CN=localhost", "-keyout", &key, "-out", &csr]);
        openssl(&leaf_args);
        std::fs::write(p("ext.cnf"), "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n")
            .expect("write ext.cnf");
        openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "ext.cnf",
            "-out",
            &cert,
        ]);
        Self { ca: p("ca.pem"), cert: p("cert.pem"), key: p("key.pem") }
    }

    /// The CA as a reqwest root.
    pub fn reqwest_root(&self) -> reqwest::Certificate {
        reqwest::Certificate::from_pem(&std::fs::read(&self.ca).expect("read CA")).expect("CA PEM")
    }

    /// An HTTP client that trusts only this CA.
    pub fn http_client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .tls_certs_only([self.reqwest_root()])
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .expect("TLS client")
    }
}

/// One `openssl s_client` handshake with `127.0.0.1:port` at protocol `flag` (`-tls1_2`,
/// `-tls1_1`, …). `SECLEVEL=0` lets OpenSSL 3 offer the old versions at all, so a refusal comes from
/// the server. Returns whether it succeeded and everything it printed.
pub fn s_client(port: u16, flag: &str) -> (bool, String) {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}"), flag, "-cipher", "DEFAULT@SECLEVEL=0"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl must be installed");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// Asserts the server on `port` completes a TLS 1.2 handshake and answers a TLS 1.1 or 1.0
/// ClientHello with an alert (BoringSSL sends `protocol_version`, rustls `handshake_failure`). The
/// client flags are the same but for the version, so the version is what is refused.
pub fn assert_tls_floor_is_1_2(port: u16) {
    let (ok, out) = s_client(port, "-tls1_2");
    assert!(ok && out.contains("TLSv1.2"), "a TLS 1.2 handshake completes: {out}");
    for flag in ["-tls1_1", "-tls1"] {
        let (ok, out) = s_client(port, flag);
        assert!(!ok, "the {flag} handshake fails: {out}");
        let alerted = out.contains("alert protocol version") || out.contains("alert handshake failure");
        assert!(out.contains("Cipher is (NONE)") && alerted, "{flag} is refused by the server with an alert: {out}");
    }
}
