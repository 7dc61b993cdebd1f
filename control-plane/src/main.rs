//! `caracal-control-plane`: configuration from the environment, migrations at start, then the STS
//! and admin API until SIGINT/SIGTERM.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::serve::ListenerExt as _;
use caracal_shared::config_env::Env;
use caracal_sts::Sts;
use sqlx::postgres::PgPoolOptions;
use tokio::sync::Notify;

// See the gateway: the mint path allocates small buffers per request on every worker.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use caracal_control_plane::config::ControlPlaneConfig;
use caracal_control_plane::state::AppState;
use caracal_control_plane::{app, db, metrics, outbox};
use caracal_shared::zone_context::all_zones;

const USAGE: &str = "usage: caracal-control-plane [migrate | health | --version]\n\
  (no argument)  serve the STS, admin API, Coordinator and audit ledger (migrations first)\n\
  migrate        apply the database migrations and exit (a deploy's migrations job; needs DATABASE_URL only)\n\
  health         probe a running control plane's /health on loopback (a container HEALTHCHECK): exit 0 or 1\n\
  --version      print the version";

fn main() {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        [] => {}
        ["migrate"] => std::process::exit(runtime(None).block_on(migrate_only())),
        ["health"] => std::process::exit(runtime(Some(1)).block_on(caracal_shared::health_probe::probe("0.0.0.0:8080"))),
        ["--version" | "-V"] => {
            println!("caracal-control-plane {}", env!("CARGO_PKG_VERSION"));
            return;
        }
        ["--help" | "-h"] => {
            println!("{USAGE}");
            return;
        }
        _ => {
            eprintln!("{USAGE}");
            std::process::exit(64);
        }
    }
    let cfg = match ControlPlaneConfig::from_source(&Env) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("caracal-control-plane: refusing to start\n{errors}");
            std::process::exit(64);
        }
    };
    // Sized before it starts: the configuration says how many workers serve.
    let runtime = runtime(Some(cfg.threads));
    // The process's own work spans zones; request handlers and background tasks set theirs.
    if let Err(e) = runtime.block_on(caracal_shared::zone_context::all_zones(run(cfg))) {
        eprintln!("caracal-control-plane: {e:#}");
        std::process::exit(1);
    }
}

/// The multi-threaded runtime, with `threads` workers (tokio's default, one per core, for `None`).
fn runtime(threads: Option<usize>) -> tokio::runtime::Runtime {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = threads {
        builder.worker_threads(n);
    }
    builder.enable_all().build().unwrap_or_else(|e| {
        eprintln!("caracal-control-plane: cannot start the async runtime: {e}");
        std::process::exit(1);
    })
}

/// `migrate`: applies the migrations as the `DATABASE_URL` login and exits (0 done, 64 bad
/// configuration, 1 failed). Serving also migrates at start; sqlx holds an advisory lock, so
/// concurrent runs wait for each other.
async fn migrate_only() -> i32 {
    let cfg = match caracal_control_plane::config::MigrateConfig::from_source(&Env) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("caracal-control-plane migrate: refusing to start\n{errors}");
            return 64;
        }
    };
    let applied = async {
        let options: sqlx::postgres::PgConnectOptions = cfg.database_url.expose().parse().context("DATABASE_URL")?;
        db::migrate(&options).await.context("applying migrations")
    };
    match applied.await {
        Ok(()) => {
            tracing::info!(latest = caracal_control_plane::MIGRATOR.iter().map(|m| m.version).max(), "migrations applied");
            0
        }
        Err(e) => {
            eprintln!("caracal-control-plane migrate: {e:#}");
            1
        }
    }
}

async fn run(cfg: ControlPlaneConfig) -> anyhow::Result<()> {
    tracing::info!(config = ?cfg, "starting caracal-control-plane");
    for warning in cfg.warnings() {
        tracing::warn!("{warning}");
    }
    // Loaded before anything connects: a certificate that went bad since validation stops the start.
    let tls = match &cfg.tls {
        Some(t) => Some(caracal_control_plane::tls::server_config(&t.cert_file, &t.key_file)?),
        None => None,
    };
    let options: sqlx::postgres::PgConnectOptions = cfg.database_url.expose().parse().context("DATABASE_URL")?;
    db::migrate(&options).await.context("applying migrations")?;
    // Serving pool: role caracal_control, row-level security by the zone each checkout acts for.
    let db = db::pool_options(cfg.database_max_connections)
        .connect_with(options.clone())
        .await
        .context("connecting to Postgres as caracal_control (DATABASE_URL)")?;
    let (role,): (String,) = sqlx::query_as("SELECT current_user::text").fetch_one(&db).await.context("checking the serving role")?;
    tracing::info!(db_role = %role, "serving pool connected (row-level security by zone)");
    // The owner, for the ledger's sweeps and retention only (the append-only table's one DELETE).
    let owner = PgPoolOptions::new().max_connections(2).connect_with(options).await.context("connecting to Postgres (DATABASE_URL)")?;
    let redis_primary = cfg.redis.primary().context("REDIS_URL")?;
    // Fail fast when Redis is gone: a mint must not hang behind reconnection attempts.
    let redis_cfg = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(Duration::from_secs(1)))
        .set_number_of_retries(1);
    let redis = redis_primary.connect(redis_cfg).await.context("connecting to Redis (REDIS_URL, REDIS_SENTINELS)")?;
    // A connection opens without AUTH when the URL has no password; the first command is what a
    // password-protected Redis refuses (NOAUTH). Say so now rather than serve 503s.
    redis::cmd("PING").query_async::<String>(&mut redis.clone()).await.context("Redis refused PING (REDIS_URL credentials?)")?;
    let metrics = Arc::new(metrics::Metrics::new()?);
    metrics.worker_threads.set(tokio::runtime::Handle::current().metrics().num_workers() as i64);
    let sts = Sts::new(cfg.sts.clone(), db.clone(), redis.clone(), &metrics.registry)?;
    let notify = Arc::new(Notify::new());
    let cfg = Arc::new(cfg);
    let (approvals, _) = tokio::sync::broadcast::channel(1024);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (ledger, ledger_tasks) = match &cfg.ledger {
        Some(l) => {
            let (handle, tasks) = caracal_control_plane::ledger::start(&cfg, l, owner.clone(), &metrics.registry, stop_rx.clone()).await?;
            (Some(handle), tasks)
        }
        None => (None, Vec::new()),
    };
    let (evidence, evidence_rx) = tokio::sync::mpsc::channel(caracal_control_plane::evidence::QUEUE);
    sts.set_evidence(evidence.clone());
    let delivery = caracal_control_plane::evidence::Delivery {
        redis: redis.clone(),
        db: db.clone(),
        key: cfg.audit_key(),
        outbox_notify: notify.clone(),
    };
    let evidence_task = tokio::spawn(all_zones(caracal_control_plane::evidence::ship(delivery, evidence_rx, stop_rx.clone())));
    let state = AppState {
        db: db.clone(),
        redis: redis.clone(),
        sts,
        cfg: cfg.clone(),
        metrics: metrics.clone(),
        outbox_notify: notify.clone(),
        approvals: approvals.clone(),
        evidence,
        ledger,
        otel: match &cfg.otel {
            Some(o) => Some(Arc::new(
                caracal_shared::otel::Exporter::start(o, "caracal-control-plane").map_err(|e| anyhow::anyhow!("trace export: {e}"))?,
            )),
            None => None,
        },
    };

    state.sts.start_background(stop_rx.clone()).await.context("loading revoked sessions")?;
    let host = caracal_shared::config_env::hostname("cp");
    let instance = format!("{host}:{}:{}", cfg.listen.port(), std::process::id());
    let consumer_tasks = caracal_control_plane::consumers::spawn(
        state.sts.clone(),
        redis_primary,
        cfg.streams_key(),
        &instance,
        &state.metrics.registry,
        stop_rx.clone(),
    )?;
    tokio::spawn(all_zones(caracal_control_plane::api::approvals::listen(db.clone(), approvals, stop_rx.clone())));
    let relay = outbox::Relay { db, redis, streams_key: cfg.streams_key(), notify, metrics };
    let relay_task = tokio::spawn(all_zones(relay.run(stop_rx)));

    let tcp = tokio::net::TcpListener::bind(cfg.listen).await.with_context(|| format!("binding {}", cfg.listen))?;
    tracing::info!(listen = %cfg.listen, tls = tls.is_some(), "control plane listening");
    if let Some(control) = &cfg.control {
        check_control_token(&state.db, control.api_token.expose()).await;
    }
    let router = app::app(state);
    // A co-located gateway's exchanges arrive on the Unix socket: the same routes, no TCP stack.
    let local = match cfg.listen_socket.as_deref() {
        Some(path) => {
            let listener = bind_socket(path)?;
            tracing::info!(socket = %path.display(), "control plane listening on a Unix socket");
            let service = router.clone().into_make_service();
            Some((path, tokio::spawn(async move { axum::serve(listener, service).with_graceful_shutdown(shutdown_signal()).await })))
        }
        None => None,
    };
    // The peer address feeds Control's per-address limit.
    let service = router.into_make_service_with_connect_info::<std::net::SocketAddr>();
    match tls {
        Some(tls) => {
            // `tap_io` only to reuse axum's peer-address plumbing; the TLS listener sets nodelay.
            let listener = caracal_control_plane::tls::TlsListener::new(tcp, tls)?.tap_io(|_| {});
            axum::serve(listener, service).with_graceful_shutdown(shutdown_signal()).await?;
        }
        None => {
            // Responses are written whole; Nagle would only delay them behind the client's delayed ACK.
            let listener = tcp.tap_io(|s| {
                let _ = s.set_nodelay(true);
            });
            axum::serve(listener, service).with_graceful_shutdown(shutdown_signal()).await?;
        }
    }
    if let Some((path, served)) = local {
        let _ = served.await;
        let _ = std::fs::remove_file(path);
    }
    let _ = stop_tx.send(true);
    // Evidence of the last requests first, then the relay that may carry it from the outbox.
    let _ = evidence_task.await;
    let _ = relay_task.await;
    for t in consumer_tasks.into_iter().chain(ledger_tasks) {
        let _ = t.await;
    }
    Ok(())
}

/// Control dispatches with `CONTROL_API_TOKEN`; say at start when it cannot work, rather than on
/// the first invoke. (Not fatal: the token may belong to a database restored later.)
async fn check_control_token(db: &sqlx::PgPool, token: &str) {
    let digest = caracal_shared::sig::sha256(token.as_bytes());
    let live: Result<Option<(String,)>, _> = sqlx::query_as("SELECT id FROM admin_tokens WHERE token_sha256 = $1 AND revoked_at IS NULL")
        .bind(&digest[..])
        .fetch_optional(db)
        .await;
    match live {
        Ok(Some((id,))) => tracing::info!(admin_token_id = %id, "Control enabled; dispatching with this admin token"),
        Ok(None) => tracing::error!("CONTROL_API_TOKEN is not a live admin token: every Control dispatch will fail (502 upstream)"),
        Err(e) => tracing::warn!(error = %e, "could not check CONTROL_API_TOKEN"),
    }
}

/// Binds `LISTEN_SOCKET` with mode 0660. A socket file left by an earlier run is replaced; a
/// socket something still answers on, or a path that is not a socket, is an error.
fn bind_socket(path: &std::path::Path) -> anyhow::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        anyhow::ensure!(meta.file_type().is_socket(), "LISTEN_SOCKET {} exists and is not a socket", path.display());
        anyhow::ensure!(
            std::os::unix::net::UnixStream::connect(path).is_err(),
            "LISTEN_SOCKET {}: another process is listening on it",
            path.display()
        );
        std::fs::remove_file(path).with_context(|| format!("removing the stale socket {}", path.display()))?;
    }
    let listener = tokio::net::UnixListener::bind(path).with_context(|| format!("binding LISTEN_SOCKET {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    Ok(listener)
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}
