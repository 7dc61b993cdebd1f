//! nginx (Debian's package) as the industry-baseline plain proxy: two workers, upstream keep-alive,
//! no access log and no response buffering (the gateway streams too). S2n fronts the bench upstream;
//! S7n is a second instance whose `upstream` block lists the three pool endpoints (round robin,
//! nginx's defaults for failures: `max_fails=1 fail_timeout=10s`, `proxy_next_upstream error timeout`).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::procs::{Child, Spawn};

/// The configuration of the instance `name`: everything under `dir` (files named after the instance),
/// in the foreground, so the harness owns the process.
pub(crate) fn config(name: &str, listen: SocketAddr, upstreams: &[SocketAddr], dir: &Path) -> String {
    let d = dir.display();
    let servers: String = upstreams.iter().map(|u| format!("    server {u};\n")).collect();
    format!(
        "daemon off;
master_process on;
worker_processes 2;
pid {d}/{name}.pid;
error_log {d}/{name}-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {d}/{name}-tmp/body;
  proxy_temp_path {d}/{name}-tmp/proxy;
  fastcgi_temp_path {d}/{name}-tmp/fastcgi;
  uwsgi_temp_path {d}/{name}-tmp/uwsgi;
  scgi_temp_path {d}/{name}-tmp/scgi;
  upstream bench_upstream {{
{servers}    keepalive 64;
  }}
  server {{
    listen {listen} reuseport;
    keepalive_requests 1000000;
    location / {{
      proxy_pass http://bench_upstream;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
      proxy_buffering off;
      proxy_read_timeout 300s;
    }}
  }}
}}
"
    )
}

/// Starts the nginx instance `name` on `listen` in front of `upstreams`.
pub(crate) async fn start(nginx: &Path, name: &str, listen: SocketAddr, upstreams: &[SocketAddr], dir: &Path) -> anyhow::Result<Child> {
    let conf = dir.join(format!("{name}.conf"));
    std::fs::create_dir_all(dir.join(format!("{name}-tmp")))?;
    std::fs::write(&conf, config(name, listen, upstreams, dir))?;
    let args = [
        "-p".to_owned(),
        dir.display().to_string(),
        "-c".to_owned(),
        conf.display().to_string(),
        "-e".to_owned(),
        dir.join(format!("{name}-error.log")).display().to_string(),
    ];
    let mut child = Child::spawn(Spawn { name, program: nginx, args: &args, env: &[], dir })?;
    child.wait_ready(listen, "/", &[], Duration::from_secs(30)).await?;
    Ok(child)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_fronts_the_upstream_with_keepalive() {
        let c = config("nginx", "127.0.0.1:8001".parse().unwrap(), &["127.0.0.1:9001".parse().unwrap()], Path::new("/tmp/b"));
        assert!(c.contains("worker_processes 2;"));
        assert!(c.contains("server 127.0.0.1:9001;"));
        assert!(c.contains("keepalive 64;"));
        assert!(c.contains("listen 127.0.0.1:8001"));
        assert!(c.contains("pid /tmp/b/nginx.pid;"));
    }

    #[test]
    fn a_pool_instance_lists_every_server_and_keeps_its_own_files() {
        let ups: Vec<SocketAddr> = ["127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003"].iter().map(|a| a.parse().unwrap()).collect();
        let c = config("nginx-pool", "127.0.0.1:8002".parse().unwrap(), &ups, Path::new("/tmp/b"));
        let block = &c[c.find("upstream bench_upstream").unwrap()..c.find("keepalive 64;").unwrap()];
        assert_eq!(block.matches("server 127.0.0.1:900").count(), 3, "{block}");
        assert!(c.contains("pid /tmp/b/nginx-pool.pid;") && c.contains("/tmp/b/nginx-pool-tmp/proxy"));
    }
}
