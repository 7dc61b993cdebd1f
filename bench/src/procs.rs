//! Systems under test as child processes, and what `/proc` says about them (CPU time, peak RSS).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context as _, bail};
use http::Method;
use http_body_util::Full;

use crate::client::Conn;

/// One child process, its output in `<dir>/<name>.log`; stopped on drop.
pub(crate) struct Child {
    pub(crate) name: String,
    child: Option<std::process::Child>,
    pid: u32,
    log: PathBuf,
    /// Peak RSS seen at the last [`Child::sample_rss`], kept because `/proc` forgets it at exit.
    peak_rss_kib: u64,
}

/// How to start a child.
pub(crate) struct Spawn<'a> {
    pub(crate) name: &'a str,
    pub(crate) program: &'a Path,
    pub(crate) args: &'a [String],
    pub(crate) env: &'a [(String, String)],
    pub(crate) dir: &'a Path,
}

impl Child {
    /// Starts the program with `PATH` and `env` only, so nothing from the harness' environment leaks in.
    pub(crate) fn spawn(s: Spawn<'_>) -> anyhow::Result<Self> {
        let log = s.dir.join(format!("{}.log", s.name));
        let file = std::fs::File::create(&log).with_context(|| format!("create {}", log.display()))?;
        let child = Command::new(s.program)
            .args(s.args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", std::env::var("CARACAL_BENCH_LOG").unwrap_or_else(|_| "warn".into()))
            .envs(s.env.iter().map(|(k, v)| (k, v)))
            .stdout(file.try_clone()?)
            .stderr(file)
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("start {} ({})", s.name, s.program.display()))?;
        let pid = child.id();
        Ok(Self { name: s.name.to_owned(), child: Some(child), pid, log, peak_rss_kib: 0 })
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// The last `n` lines of the log.
    pub(crate) fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Polls `GET path` (with `headers`) on `addr` until it answers 2xx; fails early if the process exits.
    pub(crate) async fn wait_ready(
        &mut self,
        addr: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!("{} exited with {status} before it was ready:\n{}", self.name, self.log_tail(30));
            }
            let mut conn = Conn::new(addr);
            let mut req = conn.request(Method::GET, path);
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            let req = req.body(Full::default()).context("readiness request")?;
            if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_secs(2), conn.drain(req)).await
                && s.is_success()
            {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("{} not ready on {addr}{path} after {timeout:?}:\n{}", self.name, self.log_tail(30));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// User + system CPU time of the process and all its descendants (nginx workers).
    pub(crate) fn cpu(&self) -> Duration {
        tree_cpu(self.pid)
    }

    /// Reads the peak RSS (`VmHWM`, summed over the process tree) and remembers the highest seen.
    pub(crate) fn sample_rss(&mut self) -> u64 {
        let now: u64 = tree(self.pid)
            .iter()
            .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/status")).ok())
            .filter_map(|s| vm_hwm_kib(&s))
            .sum();
        self.peak_rss_kib = self.peak_rss_kib.max(now);
        self.peak_rss_kib
    }

    /// SIGKILL, then reaps the process (the failover drill's crash); a no-op once stopped.
    pub(crate) fn kill(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        self.sample_rss();
        let _ = child.kill();
        let _ = child.wait();
    }

    /// SIGINT (an immediate stop for Pingora, nginx and the Caracal binaries), then SIGKILL after 5 s.
    pub(crate) fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        self.sample_rss();
        let _ = Command::new("kill").args(["-INT", &self.pid.to_string()]).status();
        for _ in 0..100 {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.stop();
    }
}

/// CPU time of `pid` and all its descendants (Postgres backends, nginx workers).
pub(crate) fn tree_cpu(pid: u32) -> Duration {
    tree(pid).iter().filter_map(|p| cpu_of(*p)).sum()
}

/// CPU time of one process (all its threads) from `/proc/<pid>/stat`.
pub(crate) fn cpu_of(pid: u32) -> Option<Duration> {
    let stat = parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)?;
    Some(Duration::from_secs_f64((stat.utime + stat.stime) as f64 / clock_ticks() as f64))
}

/// The fields of `/proc/<pid>/stat` the bench reads.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Stat {
    pub(crate) ppid: u32,
    /// Clock ticks in user mode.
    pub(crate) utime: u64,
    /// Clock ticks in kernel mode.
    pub(crate) stime: u64,
}

/// Parses `/proc/<pid>/stat`. The command name may hold spaces and parentheses, so fields are
/// counted from the last `)`: state is field 3, ppid 4, utime 14, stime 15.
pub(crate) fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_ascii_whitespace().collect();
    Some(Stat { ppid: f.get(1)?.parse().ok()?, utime: f.get(11)?.parse().ok()?, stime: f.get(12)?.parse().ok()? })
}

/// `VmHWM` (peak resident set) in KiB from `/proc/<pid>/status`.
pub(crate) fn vm_hwm_kib(status: &str) -> Option<u64> {
    status_kib(status, "VmHWM:")
}

/// A `… kB` field of `/proc/<pid>/status`.
fn status_kib(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|l| l.strip_prefix(field))?.split_ascii_whitespace().next()?.parse().ok()
}

/// How many sockets the process `pid` holds open now.
pub(crate) fn sockets(pid: u32) -> Option<usize> {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    Some(fds.flatten().filter(|e| std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy().starts_with("socket:"))).count())
}

/// The resident set now (`VmRSS`, KiB) of the process tree of `pid`.
pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    let sizes: Vec<u64> = tree(pid)
        .iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/status")).ok())
        .filter_map(|s| status_kib(&s, "VmRSS:"))
        .collect();
    (!sizes.is_empty()).then(|| sizes.iter().sum())
}

/// `pid` and every live descendant.
fn tree(pid: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(p) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
            if let Some(stat) = std::fs::read_to_string(entry.path().join("stat")).ok().and_then(|t| parse_stat(&t)) {
                children.entry(stat.ppid).or_default().push(p);
            }
        }
    }
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        out.extend(children.get(&out[i]).into_iter().flatten());
        i += 1;
    }
    out
}

/// `sysconf(_SC_CLK_TCK)` without `unsafe`: asked of `getconf` once (100 on every Linux we run on).
fn clock_ticks() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .filter(|t| *t > 0)
            .unwrap_or(100)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_after_an_awkward_command_name() {
        let text =
            "4242 (caracal (gw) x) S 17 4242 4242 0 -1 4194560 2100 0 0 0 731 260 0 0 20 0 3 0 9000 1000000 2000 18446744073709551615";
        assert_eq!(parse_stat(text), Some(Stat { ppid: 17, utime: 731, stime: 260 }));
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) S"), None);
    }

    #[test]
    fn peak_rss_from_status() {
        let status = "Name:\tcaracal-gateway\nVmPeak:\t  900000 kB\nVmHWM:\t   48212 kB\nVmRSS:\t   40000 kB\n";
        assert_eq!(vm_hwm_kib(status), Some(48_212));
        assert_eq!(vm_hwm_kib("Name:\tx\n"), None);
        assert_eq!(rss_kib(std::process::id()).map(|k| k > 0), Some(true), "this process is resident");
    }

    #[test]
    fn reads_our_own_process() {
        let me = std::process::id();
        assert!(cpu_of(me).is_some(), "this test process has a stat file");
        assert!(tree(me).contains(&me));
    }
}
