//! `caracal-bench`: the benchmark harness and the small servers it puts behind the proxies.
//!
//! - `caracal-bench run [--smoke] ...` starts every system under test as a child process, runs the
//!   standard scenarios side by side on loopback and writes `<out>/<date>.{md,json,svg}` (see
//!   `bench/README.md`; `bench/run.sh` prepares Postgres, Redis, nginx and Envoy and calls it).
//! - `caracal-bench upstream ADDR`: the bench upstream (small JSON, `/bytes/N`, `/sse`).
//! - `caracal-bench proxy LISTEN UPSTREAM...`: the plain Pingora pass-through baseline (several
//!   upstreams: round robin).
//! - `caracal-bench load URL ...`: one ad-hoc load run against any URL.
//! - `caracal-bench echo [ADDR]` (default `127.0.0.1:9000`): the demo echo upstream of the local
//!   stack; answers every request with a JSON echo of its method, path, query and headers.

mod client;
mod echo;
mod hist;
mod load;
mod peers;
mod plot;
mod procs;
mod profile;
mod proxy;
mod report;
mod run;
mod scenarios;
mod stack;
mod upstream;

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "caracal-bench", about = "Caracal benchmark harness")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The demo echo upstream.
    Echo {
        #[arg(default_value = "127.0.0.1:9000")]
        addr: SocketAddr,
    },
    /// The bench upstream: small JSON on any path, `/bytes/N`, `/sse?n=&interval_ms=`.
    Upstream { addr: SocketAddr },
    /// The plain Pingora pass-through (no auth), two worker threads; several upstreams: round robin.
    Proxy {
        listen: SocketAddr,
        #[arg(required = true)]
        upstreams: Vec<SocketAddr>,
    },
    /// Runs every scenario and writes the report.
    Run(Box<run::RunArgs>),
    /// One load run against a URL (fixed rate when `--rate` is given, else saturation).
    Load {
        url: String,
        #[arg(long)]
        rate: Option<f64>,
        #[arg(long, default_value_t = 5.0)]
        duration: f64,
        #[arg(long, default_value_t = 32)]
        connections: usize,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Echo { addr } => runtime(2)?.block_on(echo::serve(addr)),
        Command::Upstream { addr } => runtime(2)?.block_on(upstream::serve(addr)),
        // Pingora owns its runtimes and signal handling; it must not run inside ours.
        Command::Proxy { listen, upstreams } => proxy::run(listen, upstreams),
        Command::Run(args) => runtime(2)?.block_on(run::run(*args)),
        Command::Load { url, rate, duration, connections } => {
            runtime(2)?.block_on(load::adhoc(&url, rate, Duration::from_secs_f64(duration), connections))
        }
    }
}

fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build()
}
