//! `start`, `stop` and `status` of the whole stack, in the order `deploy/local/up.sh` used:
//! Postgres, Redis, the control plane (ready before the gateway, which fetches keys from it), the
//! gateway and the echo upstream.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::args::{StackArgs, StartArgs};
use crate::error::RunError;
use crate::layout::{Layout, read_env_file, write_env_file};
use crate::postgres::Postgres;
use crate::redis::Redis;
use crate::secrets;
use crate::services::{self, Service};

/// Every port of the stack.
struct Ports {
    control_plane: u16,
    gateway: u16,
    echo: u16,
    postgres: u16,
    redis: u16,
}

impl Ports {
    /// A port given on the command line (or its env) wins, then the one `start` recorded, then the default.
    fn resolve(args: &StackArgs, recorded: &BTreeMap<String, String>) -> Self {
        let pick = |given: Option<u16>, key: &str, default: u16| {
            given.or_else(|| recorded.get(key).and_then(|v| v.parse().ok())).unwrap_or(default)
        };
        Self {
            control_plane: pick(args.cp_port, "CP_PORT", 8080),
            gateway: pick(args.gw_port, "GW_PORT", 8081),
            echo: pick(args.echo_port, "ECHO_PORT", 9000),
            postgres: pick(args.pg_port, "PG_PORT", 25432),
            redis: pick(args.redis_port, "REDIS_PORT", 26379),
        }
    }

    fn of(&self, s: Service) -> u16 {
        match s {
            Service::ControlPlane => self.control_plane,
            Service::Gateway => self.gateway,
            Service::Echo => self.echo,
        }
    }
}

fn recorded(layout: &Layout) -> Result<BTreeMap<String, String>, RunError> {
    Ok(read_env_file(&layout.state())?.into_iter().collect())
}

pub(crate) fn start(args: &StartArgs) -> Result<ExitCode, RunError> {
    let layout = Layout::new(&args.stack, true)?;
    let ports = Ports::resolve(&args.stack, &recorded(&layout)?);
    let bin_dir = match &args.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe().ok().and_then(|e| e.parent().map(PathBuf::from)).unwrap_or_default(),
    };
    let secrets = secrets::ensure(&layout.secrets())?;
    // Recorded first, so `stop` finds what this start may leave half running.
    write_env_file(
        &layout.state(),
        &[
            ("CP_PORT".into(), ports.control_plane.to_string()),
            ("GW_PORT".into(), ports.gateway.to_string()),
            ("ECHO_PORT".into(), ports.echo.to_string()),
            ("PG_PORT".into(), ports.postgres.to_string()),
            ("REDIS_PORT".into(), ports.redis.to_string()),
            ("PG_BIN_DIR".into(), args.pg_bin_dir.display().to_string()),
            ("BIN_DIR".into(), bin_dir.display().to_string()),
        ],
    )?;

    note(&format!("starting PostgreSQL (:{}) and Redis (:{})", ports.postgres, ports.redis));
    let pg = Postgres::new(&args.pg_bin_dir, layout.postgres(), ports.postgres);
    pg.start()?;
    pg.ensure_database()?;
    let redis = Redis::new(layout.redis(), ports.redis);
    redis.start()?;

    // A restart replaces the services (new binaries, new settings); the data stays.
    for s in Service::ALL {
        s.stop(&layout)?;
    }
    note(&format!(
        "starting caracal-control-plane (:{}), caracal-gateway (:{}), echo upstream (:{})",
        ports.control_plane, ports.gateway, ports.echo
    ));
    let timeout = Duration::from_secs(args.ready_timeout);
    let cp_url = format!("http://127.0.0.1:{}", ports.control_plane);
    let mut cp_env = dev_env(ports.control_plane, &pg, &redis);
    cp_env.insert("ISSUER_URL".into(), cp_url.clone());
    cp_env.extend(secrets.clone());
    let mut cp = Service::ControlPlane.spawn(&layout, &bin_dir, ports.control_plane, &[], &cp_env)?;
    Service::ControlPlane.wait_ready(&mut cp, ports.control_plane, &layout, timeout)?;

    let mut gw_env = dev_env(ports.gateway, &pg, &redis);
    gw_env.insert("STS_URL".into(), cp_url);
    // The echo upstream is on loopback, which the gateway refuses unless told otherwise.
    gw_env.insert("ALLOW_PRIVATE_UPSTREAMS".into(), "true".into());
    gw_env.insert("AUDIT_REPLAY_DIR".into(), layout.audit_replay().display().to_string());
    gw_env.extend(services::gateway_secrets(&secrets));
    let mut gw = Service::Gateway.spawn(&layout, &bin_dir, ports.gateway, &[], &gw_env)?;
    let echo_args = ["echo".to_owned(), format!("127.0.0.1:{}", ports.echo)];
    let mut echo = Service::Echo.spawn(&layout, &bin_dir, ports.echo, &echo_args, &BTreeMap::new())?;
    Service::Gateway.wait_ready(&mut gw, ports.gateway, &layout, timeout)?;
    Service::Echo.wait_ready(&mut echo, ports.echo, &layout, timeout)?;
    print_status(&layout, &ports, &pg, &redis);
    Ok(ExitCode::SUCCESS)
}

/// What both services share: dev mode on loopback, the stack's Postgres and Redis.
fn dev_env(port: u16, pg: &Postgres, redis: &Redis) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("CARACAL_MODE".into(), "dev".into()),
        ("LISTEN_ADDR".into(), format!("127.0.0.1:{port}")),
        ("DATABASE_URL".into(), pg.url()),
        ("REDIS_URL".into(), redis.url()),
    ])
}

pub(crate) fn stop(args: &StackArgs) -> Result<ExitCode, RunError> {
    let layout = Layout::new(args, false)?;
    let recorded = recorded(&layout)?;
    let ports = Ports::resolve(args, &recorded);
    // The gateway first: it stops taking requests before the STS it depends on goes.
    for s in [Service::Gateway, Service::ControlPlane, Service::Echo] {
        s.stop(&layout)?;
    }
    Redis::new(layout.redis(), ports.redis).stop();
    pg_of(&layout, &recorded, &ports).stop()?;
    note("stopped");
    Ok(ExitCode::SUCCESS)
}

fn pg_of(layout: &Layout, recorded: &BTreeMap<String, String>, ports: &Ports) -> Postgres {
    let bin = recorded.get("PG_BIN_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(crate::postgres::DEFAULT_BIN_DIR));
    Postgres::new(&bin, layout.postgres(), ports.postgres)
}

pub(crate) fn status(args: &StackArgs) -> Result<ExitCode, RunError> {
    let layout = Layout::new(args, false)?;
    let recorded = recorded(&layout)?;
    let ports = Ports::resolve(args, &recorded);
    let pg = pg_of(&layout, &recorded, &ports);
    let redis = Redis::new(layout.redis(), ports.redis);
    let all_ready = print_status(&layout, &ports, &pg, &redis);
    Ok(if all_ready { ExitCode::SUCCESS } else { ExitCode::from(3) })
}

/// One line per component; whether every one is ready.
fn print_status(layout: &Layout, ports: &Ports, pg: &Postgres, redis: &Redis) -> bool {
    let mut rows = vec![
        ("postgres", pg.pid().filter(|_| pg.running()), ports.postgres, crate::probe::port_open(ports.postgres)),
        ("redis", redis.pid(), ports.redis, redis.ready()),
    ];
    for s in Service::ALL {
        let pid = s.pid(layout);
        rows.push((s.name(), pid, ports.of(s), pid.is_some() && s.ready(ports.of(s))));
    }
    println!("{:<14} {:>8} {:>6}  READY", "COMPONENT", "PID", "PORT");
    for (name, pid, port, ready) in &rows {
        let pid = pid.map_or("-".to_owned(), |p| p.to_string());
        println!("{name:<14} {pid:>8} {port:>6}  {}", if *ready { "yes" } else { "no" });
    }
    println!("state and logs: {}", layout.dir().display());
    rows.iter().all(|r| r.3)
}

/// A progress line on stderr, in the scripts' style (bold on a terminal, as `deploy/local/lib.sh` writes it).
fn note(text: &str) {
    use std::io::IsTerminal;
    if std::io::stderr().is_terminal() {
        eprintln!("\x1b[1m==> {text}\x1b[0m");
    } else {
        eprintln!("==> {text}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_port_beats_the_recorded_one_which_beats_the_default() {
        let args = StackArgs {
            stack_dir: ".local/stack".into(),
            cp_port: Some(1),
            gw_port: None,
            echo_port: None,
            pg_port: None,
            redis_port: None,
        };
        let recorded = BTreeMap::from([("CP_PORT".to_owned(), "2".to_owned()), ("GW_PORT".to_owned(), "3".to_owned())]);
        let p = Ports::resolve(&args, &recorded);
        assert_eq!((p.control_plane, p.gateway, p.echo, p.postgres, p.redis), (1, 3, 9000, 25432, 26379));
    }
}
