//! The three processes `start` runs from the binary directory, each with its pid file and log.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use crate::error::RunError;
use crate::layout::Layout;
use crate::probe;
use crate::process;

/// Keys of `secrets.env` the gateway reads; the others (`ZONE_KEK`, the chain key, the bootstrap
/// token) are the control plane's alone.
const GATEWAY_SECRETS: [&str; 3] = ["GATEWAY_STS_HMAC_KEY", "STREAMS_HMAC_KEY", "AUDIT_HMAC_KEY"];

/// The admin client's credentials, which a shell running `caracal-admin` may have exported: never
/// handed to a service (the gateway would take `CARACAL_ADMIN_TOKEN` as its reload bearer).
const NOT_INHERITED: [&str; 4] =
    ["CARACAL_ADMIN_TOKEN", "CARACAL_ADMIN_TOKEN_FILE", "CARACAL_BOOTSTRAP_TOKEN", "CARACAL_BOOTSTRAP_TOKEN_FILE"];

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Service {
    ControlPlane,
    Gateway,
    Echo,
}

impl Service {
    /// In start order.
    pub(crate) const ALL: [Self; 3] = [Self::ControlPlane, Self::Gateway, Self::Echo];

    /// The name of its pid file, log and status line.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::ControlPlane => "control-plane",
            Self::Gateway => "gateway",
            Self::Echo => "echo",
        }
    }

    pub(crate) fn binary(self) -> &'static str {
        match self {
            Self::ControlPlane => "caracal-control-plane",
            Self::Gateway => "caracal-gateway",
            Self::Echo => "caracal-bench",
        }
    }

    /// SIGINT stops the services at once; the echo upstream stops on SIGTERM.
    fn stop_signal(self) -> &'static str {
        match self {
            Self::ControlPlane | Self::Gateway => "INT",
            Self::Echo => "TERM",
        }
    }

    /// Whether it answers: `/ready` for the services, an open port for the echo upstream.
    pub(crate) fn ready(self, port: u16) -> bool {
        match self {
            Self::ControlPlane | Self::Gateway => probe::http_ok(port, "/ready"),
            Self::Echo => probe::port_open(port),
        }
    }

    /// Its pid, when the pid file names a live process of this binary.
    pub(crate) fn pid(self, layout: &Layout) -> Option<u32> {
        process::read_pid(&layout.pid_file(self.name())).filter(|pid| process::runs(*pid, self.binary()))
    }

    /// Starts it on `port` with `env` and `args`, writing its pid file. A port already answering
    /// is refused first: the readiness wait would otherwise take another process's answers for ours.
    pub(crate) fn spawn(
        self,
        layout: &Layout,
        bin_dir: &Path,
        port: u16,
        args: &[String],
        env: &BTreeMap<String, String>,
    ) -> Result<Child, RunError> {
        if probe::port_open(port) {
            return Err(RunError::PortInUse { component: self.name().into(), port });
        }
        let child = process::spawn_detached(&bin_dir.join(self.binary()), args, env, &NOT_INHERITED, &layout.log_file(self.name()))?;
        let pid_file = layout.pid_file(self.name());
        std::fs::write(&pid_file, format!("{}\n", child.id())).map_err(RunError::file(&pid_file))?;
        Ok(child)
    }

    /// Waits until it is ready on `port`, failing early when it exits.
    pub(crate) fn wait_ready(self, child: &mut Child, port: u16, layout: &Layout, timeout: Duration) -> Result<(), RunError> {
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(RunError::Exited { component: self.name().into(), status, log: layout.log_file(self.name()) });
            }
            if self.ready(port) {
                return Ok(());
            }
            if start.elapsed() > timeout {
                return Err(RunError::NotReady {
                    component: self.name().into(),
                    secs: timeout.as_secs(),
                    log: layout.log_file(self.name()),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the process of its pid file, if that is still this binary; removes the pid file.
    pub(crate) fn stop(self, layout: &Layout) -> Result<(), RunError> {
        if let Some(pid) = self.pid(layout) {
            process::stop(pid, self.binary(), self.stop_signal(), Duration::from_secs(10))?;
        }
        let pid_file = layout.pid_file(self.name());
        match std::fs::remove_file(&pid_file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(RunError::File { path: pid_file, source: e }),
            _ => Ok(()),
        }
    }
}

/// The gateway's share of the stack's secrets.
pub(crate) fn gateway_secrets(secrets: &BTreeMap<String, String>) -> impl Iterator<Item = (String, String)> + '_ {
    secrets.iter().filter(|(k, _)| GATEWAY_SECRETS.contains(&k.as_str())).map(|(k, v)| (k.clone(), v.clone()))
}
