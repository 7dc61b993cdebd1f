//! `caracal-admin`: the admin API client, so an operator manages zones, applications, resources,
//! policies, sessions, the audit chain and admin tokens without hand-written requests.
//!
//! Product management only: the local process lifecycle is `caracal run`'s, a separate binary with
//! none of this code (the trust boundary of the runtime CLI).
//!
//! Exit codes: 0 done, 1 the API refused (its status, `error` and `error_description` are printed),
//! 2 usage, file or transport error, 3 `audit verify` found the chain broken.

mod args;
mod client;
mod commands;
mod error;
mod output;
mod secret;

use std::process::ExitCode;

use clap::Parser;

use crate::args::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("caracal-admin: cannot start: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("caracal-admin: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
