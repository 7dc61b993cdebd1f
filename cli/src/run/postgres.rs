//! PostgreSQL on loopback in `<stack>/pg`, as `deploy/local/lib.sh` runs it: `initdb` on first use,
//! `pg_ctl` to start and stop, trust authentication for `postgres` on 127.0.0.1 only.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::RunError;
use crate::process::run;

/// Where Debian's postgresql package puts initdb and pg_ctl.
pub(crate) const DEFAULT_BIN_DIR: &str = "/usr/lib/postgresql/15/bin";

/// The database the control plane and gateway use.
pub(crate) const DATABASE: &str = "caracal";

pub(crate) struct Postgres {
    bin_dir: PathBuf,
    dir: PathBuf,
    port: u16,
}

impl Postgres {
    pub(crate) fn new(bin_dir: &Path, dir: PathBuf, port: u16) -> Self {
        Self { bin_dir: bin_dir.to_owned(), dir, port }
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// A PostgreSQL tool; as root it runs as `postgres`, since initdb and the server refuse root.
    fn tool(&self, name: &str) -> Command {
        let program = self.bin_dir.join(name);
        if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        }
    }

    /// Initializes the cluster on first use and starts it (nothing to do when it runs).
    pub(crate) fn start(&self) -> Result<(), RunError> {
        std::fs::create_dir_all(&self.dir).map_err(RunError::file(&self.dir))?;
        if is_root() {
            run(Command::new("chown").arg("postgres:postgres").arg(&self.dir))?;
        }
        let data = self.data();
        if !data.join("PG_VERSION").exists() {
            run(self.tool("initdb").arg("-D").arg(&data).args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"]))?;
        }
        if self.running() {
            return Ok(());
        }
        // pg_ctl hands -o to a shell: the socket directory is quoted.
        let options = format!("-p {} -k '{}' -c listen_addresses=127.0.0.1 -c max_connections=300", self.port, self.dir.display());
        let log = self.dir.join("postgres.log");
        run(self.tool("pg_ctl").arg("-D").arg(&data).arg("-l").arg(&log).args(["-w", "start", "-o", &options]))?;
        Ok(())
    }

    /// Creates the `caracal` database when missing.
    pub(crate) fn ensure_database(&self) -> Result<(), RunError> {
        let exists = run(self.psql().arg("-tAc").arg(format!("SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'")))?;
        if exists.trim() != "1" {
            run(self.psql().arg("-qc").arg(format!("CREATE DATABASE {DATABASE}")))?;
        }
        Ok(())
    }

    fn psql(&self) -> Command {
        let mut c = self.tool("psql");
        c.args(["-h", "127.0.0.1", "-U", "postgres", "-p"]).arg(self.port.to_string());
        c
    }

    pub(crate) fn running(&self) -> bool {
        self.data().join("PG_VERSION").exists() && run(self.tool("pg_ctl").arg("-D").arg(self.data()).arg("status")).is_ok()
    }

    /// The postmaster's pid (first line of `postmaster.pid`).
    pub(crate) fn pid(&self) -> Option<u32> {
        crate::process::read_pid(&self.data().join("postmaster.pid"))
    }

    /// A fast shutdown, waiting for it; nothing to do when it is not running.
    pub(crate) fn stop(&self) -> Result<(), RunError> {
        if !self.running() {
            return Ok(());
        }
        run(self.tool("pg_ctl").arg("-D").arg(self.data()).args(["-m", "fast", "-w", "stop"])).map(drop)
    }

    pub(crate) fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{DATABASE}", self.port)
    }
}

/// Whether we run with effective uid 0 (from `/proc/self/status`, no libc call).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("Uid:").and_then(|ids| ids.split_whitespace().nth(1).map(|e| e == "0"))))
        .unwrap_or(false)
}
