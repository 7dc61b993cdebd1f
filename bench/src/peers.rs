//! The baselines the gateway is measured against, each started as a child fronting the bench upstream
//! (or, for the pool scenario S7, the three pool endpoints): the plain Pingora pass-through (ours),
//! nginx and Envoy with `jwt_authn`.

pub(crate) mod envoy;
pub(crate) mod nginx;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::procs::{Child, Spawn};

/// `caracal-bench proxy LISTEN UPSTREAM...` from this very binary, as `name`.
pub(crate) async fn start_pingora(name: &str, listen: SocketAddr, upstreams: &[SocketAddr], dir: &Path) -> anyhow::Result<Child> {
    let me = std::env::current_exe()?;
    let args: Vec<String> = ["proxy".to_owned(), listen.to_string()].into_iter().chain(upstreams.iter().map(ToString::to_string)).collect();
    let mut child = Child::spawn(Spawn { name, program: &me, args: &args, env: &[], dir })?;
    child.wait_ready(listen, "/", &[], Duration::from_secs(30)).await?;
    Ok(child)
}

/// `caracal-bench upstream ADDR` from this very binary, as `name`; ready when it answers its stats.
pub(crate) async fn start_upstream(name: &str, addr: SocketAddr, dir: &Path) -> anyhow::Result<Child> {
    let me = std::env::current_exe()?;
    let args = ["upstream".to_owned(), addr.to_string()];
    let mut child = Child::spawn(Spawn { name, program: &me, args: &args, env: &[], dir })?;
    child.wait_ready(addr, crate::upstream::STATS_PATH, &[], Duration::from_secs(30)).await?;
    Ok(child)
}

/// The version a `--version`-style command prints (nginx writes it to stderr; Envoy prefixes its path).
pub(crate) fn version_line(program: &Path, arg: &str) -> Option<String> {
    let out = std::process::Command::new(program).arg(arg).output().ok()?;
    let text = if out.stdout.iter().all(u8::is_ascii_whitespace) { out.stderr } else { out.stdout };
    String::from_utf8_lossy(&text).lines().map(str::trim).find(|l| !l.is_empty()).map(version_of)
}

/// `nginx/1.22.1`, `9e55…/1.40.0/Clean/RELEASE/BoringSSL`: the text after the last "version: ".
fn version_of(line: &str) -> String {
    line.rsplit_once("version: ").map_or(line, |(_, v)| v).trim().to_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn version_text() {
        assert_eq!(super::version_of("nginx version: nginx/1.22.1"), "nginx/1.22.1");
        assert_eq!(super::version_of("/x/_bin/envoy  version: abc/1.40.0/Clean/RELEASE/BoringSSL"), "abc/1.40.0/Clean/RELEASE/BoringSSL");
        assert_eq!(super::version_of("1.2"), "1.2");
    }
}
