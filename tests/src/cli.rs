//! The operator CLIs (`caracal-admin`, `caracal`) run as an operator runs them: the built binary
//! with its arguments, its exit code and its output.

use serde_json::Value;

use crate::Stack;
use crate::procs::binary;

/// What a CLI run left: exit code, stdout, stderr.
#[derive(Debug)]
pub struct CliRun {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl CliRun {
    /// stdout as JSON (panics with both streams when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }

    /// stdout and stderr together (to check what an operator sees).
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    /// Panics with the output unless the exit code is `code`.
    pub fn expect(self, code: i32) -> Self {
        assert_eq!(self.code, code, "exit code: {self:?}");
        self
    }
}

/// Runs a workspace binary with `args` and exactly `env` (plus PATH: no CARACAL_* of the test's own).
pub async fn run_cli(name: &str, args: &[&str], env: &[(&str, &str)]) -> CliRun {
    let out = tokio::process::Command::new(binary(name))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap_or_else(|e| panic!("run {name}: {e}"));
    CliRun {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

impl Stack {
    /// `caracal-admin --url <this control plane> <args>` with `env`.
    pub async fn caracal_admin(&self, args: &[&str], env: &[(&str, &str)]) -> CliRun {
        let mut all = vec!["--url", self.cp_url.as_str()];
        all.extend_from_slice(args);
        run_cli("caracal-admin", &all, env).await
    }
}
