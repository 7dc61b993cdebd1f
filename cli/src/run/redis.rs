//! Redis on loopback in `<stack>/redis`, as `deploy/local/lib.sh` runs it: daemonized, no
//! persistence (the stack's durable state is Postgres).

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::error::RunError;
use crate::probe;
use crate::process::run;

pub(crate) struct Redis {
    dir: PathBuf,
    port: u16,
}

impl Redis {
    pub(crate) fn new(dir: PathBuf, port: u16) -> Self {
        Self { dir, port }
    }

    /// Starts `redis-server` unless one answers on the port, and waits for its `PING`.
    pub(crate) fn start(&self) -> Result<(), RunError> {
        if probe::redis_ping(self.port) {
            return Ok(());
        }
        std::fs::create_dir_all(&self.dir).map_err(RunError::file(&self.dir))?;
        run(Command::new("redis-server")
            .arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--daemonize", "yes", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--pidfile")
            .arg(self.dir.join("redis.pid"))
            .arg("--logfile")
            .arg(self.dir.join("redis.log")))?;
        let start = Instant::now();
        while !probe::redis_ping(self.port) {
            if start.elapsed() > Duration::from_secs(5) {
                return Err(RunError::NotReady { component: "redis".into(), secs: 5, log: self.dir.join("redis.log") });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// The pid of this stack's `redis-server` (its pid file names a live one).
    pub(crate) fn pid(&self) -> Option<u32> {
        crate::process::read_pid(&self.dir.join("redis.pid")).filter(|pid| crate::process::runs(*pid, "redis-server"))
    }

    pub(crate) fn ready(&self) -> bool {
        probe::redis_ping(self.port)
    }

    /// `SHUTDOWN NOSAVE`, then waits until the port is closed. Only a Redis this stack started
    /// (its pid file): another one on the port is not ours to stop.
    pub(crate) fn stop(&self) {
        if self.pid().is_none() {
            return;
        }
        probe::redis_shutdown(self.port);
        let start = Instant::now();
        while probe::port_open(self.port) && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}
