//! Where the stack keeps its state: the same files `deploy/local/up.sh` used, so a stack started by
//! an older script is stopped and restarted in place.

use std::path::{Path, PathBuf};

use crate::args::StackArgs;
use crate::error::RunError;

/// The stack directory (absolute: Postgres is handed paths under it).
pub(crate) struct Layout {
    dir: PathBuf,
}

impl Layout {
    /// The directory of `args`, created when `create`.
    pub(crate) fn new(args: &StackArgs, create: bool) -> Result<Self, RunError> {
        let dir = &args.stack_dir;
        if create {
            std::fs::create_dir_all(dir).map_err(RunError::file(dir))?;
        }
        let dir = std::path::absolute(dir).map_err(RunError::file(dir))?;
        Ok(Self { dir })
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// `secrets.env`: keys generated once (the zone keys in Postgres are sealed with its ZONE_KEK).
    pub(crate) fn secrets(&self) -> PathBuf {
        self.dir.join("secrets.env")
    }

    /// `run.env`: the ports and binaries of the last `start`, for `stop` and `status`.
    pub(crate) fn state(&self) -> PathBuf {
        self.dir.join("run.env")
    }

    pub(crate) fn pid_file(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.pid"))
    }

    pub(crate) fn log_file(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.log"))
    }

    pub(crate) fn postgres(&self) -> PathBuf {
        self.dir.join("pg")
    }

    pub(crate) fn redis(&self) -> PathBuf {
        self.dir.join("redis")
    }

    pub(crate) fn audit_replay(&self) -> PathBuf {
        self.dir.join("audit-replay")
    }
}

/// `KEY=VALUE` lines (blank lines and `#` comments skipped), as `secrets.env` and `run.env` hold them.
pub(crate) fn read_env_file(path: &Path) -> Result<Vec<(String, String)>, RunError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(RunError::File { path: path.to_owned(), source: e }),
    };
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('=').map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned())))
        .collect())
}

/// Writes `KEY=VALUE` lines readable by the owner only (the file may hold secrets).
pub(crate) fn write_env_file(path: &Path, pairs: &[(String, String)]) -> Result<(), RunError> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path).map_err(RunError::file(path))?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(RunError::file(path))?;
    let text: String = pairs.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    f.write_all(text.as_bytes()).map_err(RunError::file(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_files_round_trip_and_skip_comments_and_blank_lines() {
        let path = std::env::temp_dir().join(format!("caracal-run-env-{}", std::process::id()));
        write_env_file(&path, &[("A".into(), "1".into()), ("B".into(), "x=y".into())]).unwrap();
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("\n# a comment\n\nnot a pair\n");
        std::fs::write(&path, text).unwrap();
        assert_eq!(read_env_file(&path).unwrap(), [("A".to_owned(), "1".to_owned()), ("B".to_owned(), "x=y".to_owned())]);
        std::fs::remove_file(&path).unwrap();
        assert!(read_env_file(&path).unwrap().is_empty(), "a missing file is an empty one");
    }
}
