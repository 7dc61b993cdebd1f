//! `caracal-gateway`: reads its configuration from the environment (see the README) and Pingora's
//! standard flags (`-c conf.yaml`, `-t`, `-d`, `-u`), then serves until stopped. `health` probes
//! a running gateway's `/health` (a container HEALTHCHECK); `--version` prints the version.

use caracal_gateway::config::GatewayConfig;
use caracal_shared::config_env::Env;
use pingora::server::configuration::Opt;

// The request path allocates small, short-lived buffers on every thread; mimalloc's per-thread
// free lists cut allocator time (measured in the bench issue note).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    match std::env::args().nth(1).as_deref() {
        Some("health") => std::process::exit(caracal_shared::health_probe::run("0.0.0.0:8081")),
        Some("--version" | "-V") => {
            println!("caracal-gateway {}", env!("CARGO_PKG_VERSION"));
            return;
        }
        _ => {}
    }
    let opt = Opt::parse_args();
    let cfg = match GatewayConfig::from_source(&Env) {
        Ok(cfg) => cfg,
        Err(errors) => {
            eprintln!("caracal-gateway: refusing to start\n{errors}");
            std::process::exit(64);
        }
    };
    tracing::info!(config = ?cfg, "starting caracal-gateway");
    for warning in cfg.warnings() {
        tracing::warn!("{warning}");
    }
    match caracal_gateway::app::build(cfg, opt) {
        Ok(server) => server.run_forever(),
        Err(e) => {
            eprintln!("caracal-gateway: {e:#}");
            std::process::exit(1);
        }
    }
}
