//! Child processes that outlive `caracal run start`, and stopping them by pid file without ever
//! signalling a process that is not the one we started.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::RunError;

/// Starts `program` in its own process group (a Ctrl-C in the terminal that ran `start` does not
/// reach it), output appended to `log`, with `env` on top of ours minus `remove`.
pub(crate) fn spawn_detached(
    program: &Path,
    args: &[String],
    env: &BTreeMap<String, String>,
    remove: &[&str],
    log: &Path,
) -> Result<Child, RunError> {
    let out = std::fs::OpenOptions::new().create(true).append(true).open(log).map_err(RunError::file(log))?;
    let err = out.try_clone().map_err(RunError::file(log))?;
    let mut cmd = Command::new(program);
    cmd.args(args).envs(env).stdin(Stdio::null()).stdout(out).stderr(err).process_group(0);
    for name in remove {
        cmd.env_remove(name);
    }
    cmd.spawn().map_err(|source| RunError::Spawn { program: program.display().to_string(), source })
}

/// Runs a command to completion; its output on failure.
pub(crate) fn run(cmd: &mut Command) -> Result<String, RunError> {
    let program = format!("{:?}", cmd.get_program());
    let out = cmd.stdin(Stdio::null()).output().map_err(|source| RunError::Spawn { program: program.clone(), source })?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if out.status.success() { Ok(text) } else { Err(RunError::Command { program, status: out.status, output: text.trim().to_owned() }) }
}

/// The pid in `path`, if the file exists and holds one.
pub(crate) fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.lines().next()?.trim().parse().ok()
}

/// Whether `pid` is a live process (not a zombie) running `binary`: the file name of its argv\[0\]
/// (up to a space: redis-server rewrites its command line into a title).
pub(crate) fn runs(pid: u32, binary: &str) -> bool {
    let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
        .unwrap_or(false);
    let argv0 = std::fs::read(format!("/proc/{pid}/cmdline")).ok().and_then(|c| {
        let first = c.split(|b| *b == 0).next()?.to_vec();
        String::from_utf8(first).ok().and_then(|a| a.split(' ').next().map(str::to_owned))
    });
    alive && argv0.is_some_and(|a| Path::new(&a).file_name().is_some_and(|f| f == binary))
}

/// Sends `signal` (`INT`, `TERM`, `KILL`) with `kill(1)`.
pub(crate) fn signal(pid: u32, signal: &str) -> Result<(), RunError> {
    run(Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string())).map(drop)
}

/// Signals `pid` and waits for it to be gone; after `grace`, kills it.
pub(crate) fn stop(pid: u32, binary: &str, sig: &str, grace: Duration) -> Result<(), RunError> {
    signal(pid, sig)?;
    let start = Instant::now();
    while runs(pid, binary) {
        if start.elapsed() > grace {
            signal(pid, "KILL")?;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pid_counts_as_ours_only_while_it_runs_the_named_binary() {
        let me = std::process::id();
        let exe = std::env::current_exe().unwrap();
        let name = exe.file_name().unwrap().to_str().unwrap();
        assert!(runs(me, name));
        assert!(!runs(me, "caracal-gateway"), "a reused pid of another program is left alone");
        assert!(!runs(u32::MAX, name), "no such process");
    }
}
