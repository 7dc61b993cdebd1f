//! The command line: `caracal run start|stop|status` and nothing else.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Caracal's runtime CLI: starts, stops and shows the local stack. Product management (zones,
/// applications, policies, tokens…) is `caracal-admin`'s.
#[derive(Parser)]
#[command(name = "caracal", version, propagate_version = true)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// The local stack's lifecycle.
    #[command(subcommand)]
    Run(RunCmd),
}

#[derive(Subcommand)]
pub(crate) enum RunCmd {
    /// Start Postgres, Redis, the control plane, the gateway and the echo upstream; wait until ready.
    Start(StartArgs),
    /// Stop everything `start` started (the stack directory's state is kept).
    Stop(StackArgs),
    /// Each component with its pid, port and readiness (exit 3 unless all are ready).
    Status(StackArgs),
}

#[derive(Args)]
pub(crate) struct StartArgs {
    #[command(flatten)]
    pub(crate) stack: StackArgs,
    /// Directory of caracal-control-plane, caracal-gateway and caracal-bench (default: this binary's).
    #[arg(long, env = "CARACAL_BIN_DIR")]
    pub(crate) bin_dir: Option<PathBuf>,
    /// Directory of PostgreSQL's initdb and pg_ctl.
    #[arg(long, env = "PG_BIN_DIR", default_value = crate::postgres::DEFAULT_BIN_DIR)]
    pub(crate) pg_bin_dir: PathBuf,
    /// Longest wait for each service's /ready, in seconds.
    #[arg(long, default_value_t = 60)]
    pub(crate) ready_timeout: u64,
}

/// The stack directory and ports. `stop` and `status` use the ports `start` recorded, unless given.
#[derive(Args)]
pub(crate) struct StackArgs {
    /// State, pid files and logs.
    #[arg(long, env = "CARACAL_STACK_DIR", default_value = ".local/stack")]
    pub(crate) stack_dir: PathBuf,
    /// Control plane (STS + admin API) port [default: 8080].
    #[arg(long, env = "CP_PORT")]
    pub(crate) cp_port: Option<u16>,
    /// Gateway port [default: 8081].
    #[arg(long, env = "GW_PORT")]
    pub(crate) gw_port: Option<u16>,
    /// Echo upstream port [default: 9000].
    #[arg(long, env = "ECHO_PORT")]
    pub(crate) echo_port: Option<u16>,
    /// PostgreSQL port [default: 25432].
    #[arg(long, env = "PG_PORT")]
    pub(crate) pg_port: Option<u16>,
    /// Redis port [default: 26379].
    #[arg(long, env = "REDIS_PORT")]
    pub(crate) redis_port: Option<u16>,
}
