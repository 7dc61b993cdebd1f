//! Why a lifecycle step failed.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub(crate) enum RunError {
    #[error("{}: {source}", .path.display())]
    File { path: PathBuf, source: std::io::Error },
    #[error("cannot run {program}: {source}")]
    Spawn { program: String, source: std::io::Error },
    #[error("{program} failed ({status}){}", if .output.is_empty() { String::new() } else { format!(": {output}") })]
    Command { program: String, status: std::process::ExitStatus, output: String },
    #[error("{component} exited before it was ready ({status}); see {}", .log.display())]
    Exited { component: String, status: std::process::ExitStatus, log: PathBuf },
    #[error("{component}: port {port} is taken by another process")]
    PortInUse { component: String, port: u16 },
    #[error("{component} not ready after {secs} s; see {}", .log.display())]
    NotReady { component: String, secs: u64, log: PathBuf },
}

impl RunError {
    pub(crate) fn file(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Self + '_ {
        move |source| Self::File { path: path.to_owned(), source }
    }
}
