//! The real binaries, started as child processes with their logs in a scratch dir.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where the workspace binaries are.
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CARACAL_BIN_DIR") {
        return PathBuf::from(d);
    }
    // target/<profile>/deps/e2e-<hash> → target/<profile>
    let exe = std::env::current_exe().expect("current exe");
    exe.parent().and_then(Path::parent).expect("test binary lives in target/<profile>/deps").to_path_buf()
}

/// Path of a workspace binary; panics with a hint if it was not built.
pub fn binary(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(p.exists(), "{} not found: run `cargo build --bins` before the e2e tests (the README's test command does)", p.display());
    p
}

/// A running binary, killed on drop.
pub struct Proc {
    pub name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    /// Starts `name` with exactly `env` (plus PATH), logging to `dir/<name>.log`.
    pub fn start(name: &str, env: &BTreeMap<String, String>, dir: &Path) -> Self {
        Self::start_with_args(name, &[], env, dir, name)
    }

    /// [`Proc::start`] with arguments and a log file name of its own.
    pub fn start_with_args(name: &str, args: &[String], env: &BTreeMap<String, String>, dir: &Path, log_name: &str) -> Self {
        let log = dir.join(format!("{log_name}.log"));
        let file = std::fs::File::create(&log).expect("create log file");
        let child = Command::new(binary(name))
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", std::env::var("CARACAL_TEST_LOG").unwrap_or_else(|_| "info".into()))
            .envs(env)
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        Self { name: name.to_owned(), child: Some(child), log }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Sends a signal (`INT`, `TERM`, `QUIT`, …) with `kill`.
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill").arg(format!("-{sig}")).arg(self.pid().to_string()).status().expect("run kill");
        assert!(status.success(), "kill -{sig} {}", self.pid());
    }

    /// The last `n` lines of the log (for assertion messages).
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// The whole log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the process has exited (and its status).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// Waits for exit up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some(s) = self.exited() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Polls `GET url` until it answers 200, or panics with the log.
    pub async fn wait_ready(&mut self, url: &str, timeout: Duration) {
        self.wait_ready_with(&reqwest::Client::new(), url, timeout).await
    }

    /// [`Proc::wait_ready`] with a client of the caller's (e.g. one that trusts a test CA).
    pub async fn wait_ready_with(&mut self, http: &reqwest::Client, url: &str, timeout: Duration) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.exited() {
                panic!("{} exited with {status} before becoming ready:\n{}", self.name, self.log_tail(40));
            }
            if let Ok(r) = http.get(url).timeout(Duration::from_secs(2)).send().await
                && r.status() == 200
            {
                return;
            }
            if start.elapsed() > timeout {
                panic!("{} not ready at {url} after {timeout:?}:\n{}", self.name, self.log_tail(40));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills the process now.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}
