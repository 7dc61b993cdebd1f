//! nginx (Debian's package) as the industry-baseline plain proxy: two workers, upstream keep-alive,
//! no access log and no response buffering (the gateway streams too).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::procs::{Child, Spawn};

/// The configuration: everything under `dir`, in the foreground, so the harness owns the process.
pub(crate) fn config(listen: SocketAddr, upstream: SocketAddr, dir: &Path) -> String {
    let d = dir.display();
    format!(
        "daemon off;
master_process on;
worker_processes 2;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {d}/nginx-tmp/body;
  proxy_temp_path {d}/nginx-tmp/proxy;
  fastcgi_temp_path {d}/nginx-tmp/fastcgi;
  uwsgi_temp_path {d}/nginx-tmp/uwsgi;
  scgi_temp_path {d}/nginx-tmp/scgi;
  upstream bench_upstream {{
    server {upstream};
    keepalive 64;
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

/// Starts nginx on `listen` in front of `upstream`.
pub(crate) async fn start(nginx: &Path, listen: SocketAddr, upstream: SocketAddr, dir: &Path) -> anyhow::Result<Child> {
    let conf = dir.join("nginx.conf");
    std::fs::create_dir_all(dir.join("nginx-tmp"))?;
    std::fs::write(&conf, config(listen, upstream, dir))?;
    let args = [
        "-p".to_owned(),
        dir.display().to_string(),
        "-c".to_owned(),
        conf.display().to_string(),
        "-e".to_owned(),
        dir.join("nginx-error.log").display().to_string(),
    ];
    let mut child = Child::spawn(Spawn { name: "nginx", program: nginx, args: &args, env: &[], dir })?;
    child.wait_ready(listen, "/", &[], Duration::from_secs(30)).await?;
    Ok(child)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_fronts_the_upstream_with_keepalive() {
        let c = config("127.0.0.1:8001".parse().unwrap(), "127.0.0.1:9001".parse().unwrap(), Path::new("/tmp/b"));
        assert!(c.contains("worker_processes 2;"));
        assert!(c.contains("server 127.0.0.1:9001;"));
        assert!(c.contains("keepalive 64;"));
        assert!(c.contains("listen 127.0.0.1:8001"));
        assert!(c.contains("pid /tmp/b/nginx.pid;"));
    }
}
