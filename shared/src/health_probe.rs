//! `<binary> health`: a container's HEALTHCHECK without curl or a shell in the image. Asks the
//! process's own `/health` on loopback, at the port of `LISTEN_ADDR`, and exits 0 when it answers
//! 200, 1 otherwise (the reason on stderr).
//!
//! Over TLS the certificate is not verified: the probe sends nothing secret and talks to its own
//! process on loopback, whose certificate names the public host, not 127.0.0.1.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

/// [`probe`] on a runtime of its own, for a binary not yet inside one.
pub fn run(default_listen: &str) -> i32 {
    match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r.block_on(probe(default_listen)),
        Err(e) => {
            eprintln!("health: {e}");
            1
        }
    }
}

/// Probes `/health` of the listener `LISTEN_ADDR` (else `default_listen`) names; the exit code.
pub async fn probe(default_listen: &str) -> i32 {
    let listen = std::env::var("LISTEN_ADDR").ok().filter(|v| !v.is_empty()).unwrap_or_else(|| default_listen.to_owned());
    let tls = std::env::var("TLS_CERT_FILE").is_ok_and(|v| !v.is_empty());
    let Some(target) = loopback_of(&listen) else {
        eprintln!("health: LISTEN_ADDR {listen:?} is not host:port");
        return 1;
    };
    let url = format!("{}://{target}/health", if tls { "https" } else { "http" });
    let answer = async {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(3)).tls_danger_accept_invalid_certs(true).build()?;
        client.get(&url).send().await.map(|r| r.status())
    }
    .await;
    match answer {
        Ok(s) if s.is_success() => 0,
        Ok(s) => {
            eprintln!("health: {url} answered {s}");
            1
        }
        Err(e) => {
            eprintln!("health: {url}: {}", e.without_url());
            1
        }
    }
}

/// The address to reach a listener on from the same host: a wildcard becomes loopback.
fn loopback_of(listen: &str) -> Option<SocketAddr> {
    let addr: SocketAddr = listen.parse().ok()?;
    let ip = match addr.ip() {
        IpAddr::V4(v) if v.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v) if v.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    Some(SocketAddr::new(ip, addr.port()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wildcard_listener_is_probed_on_loopback() {
        assert_eq!(loopback_of("0.0.0.0:8081"), Some("127.0.0.1:8081".parse().unwrap()));
        assert_eq!(loopback_of("[::]:8080"), Some("[::1]:8080".parse().unwrap()));
        assert_eq!(loopback_of("10.0.0.5:443"), Some("10.0.0.5:443".parse().unwrap()));
        assert_eq!(loopback_of("localhost:80"), None);
    }
}
