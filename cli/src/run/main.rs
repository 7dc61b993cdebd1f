//! `caracal`: the runtime CLI. One command family, `caracal run start|stop|status`, for the local
//! stack: Postgres and Redis on loopback, the control plane, the gateway and the demo echo upstream,
//! with pid files and logs in the stack directory (`.local/stack`).
//!
//! Lifecycle only, by design (the trust boundary of the runtime CLI): zones, tokens, policies and
//! every other product-management action belong to the admin API and `caracal-admin`.
//!
//! Exit codes: 0 done, 1 a step failed, 2 usage, 3 `status` found a component down or not ready.

mod args;
mod error;
mod layout;
mod postgres;
mod probe;
mod process;
mod redis;
mod secrets;
mod services;
mod stack;

use std::process::ExitCode;

use clap::Parser;

use crate::args::{Cli, Command, RunCmd};

fn main() -> ExitCode {
    let Cli { command: Command::Run(cmd) } = Cli::parse();
    let result = match cmd {
        RunCmd::Start(args) => stack::start(&args),
        RunCmd::Stop(args) => stack::stop(&args),
        RunCmd::Status(args) => stack::status(&args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("caracal: {e}");
            ExitCode::FAILURE
        }
    }
}
