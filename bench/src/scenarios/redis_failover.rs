//! S8, Redis failover (issue 15 item 7; `docs/redis.md`): the bench's Redis becomes the primary of
//! two replicas watched by three Sentinels (quorum 2, `down-after-milliseconds` 1000), and a control
//! plane and gateway of their own find it through them, with `REDIS_MIN_REPLICAS=1`. A fixed-rate
//! governed run goes through that gateway; at `kill_at` the primary is killed (SIGKILL).
//!
//! Figures (times from the kill): when the Sentinels named another primary, the requests refused,
//! and the time to recover: until the last refused request was answered. Every refusal is a 503
//! (nothing is accepted without its JTI marker on a replica). It runs last: the other processes
//! of the bench lose their Redis with it.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use http::HeaderValue;
use serde::Serialize;
use tokio::time::Instant;

use crate::client::Conn;
use crate::load::timeline::{self, Second};
use crate::load::workload::{Auth, Workload};
use crate::load::{self, RunSummary};
use crate::procs::{Child, Spawn};
use crate::run::Plan;
use crate::scenarios::Systems;
use crate::scenarios::rate::{PATH, premint_pool};
use crate::stack::mint::Minter;

/// The name the Sentinels monitor the primary under.
const MASTER: &str = "caracal";
/// Sentinel's `down-after-milliseconds`.
const DOWN_AFTER_MS: u64 = 1_000;

/// What S8 measured.
#[derive(Debug, Serialize)]
pub(crate) struct RedisFailover {
    pub(crate) topology: String,
    /// When the primary was killed, seconds from the start of the measured window.
    pub(crate) killed_at_s: f64,
    /// Kill → the Sentinels name another primary, ms; `None`: not within the run.
    pub(crate) promoted_ms: Option<f64>,
    #[serde(flatten)]
    pub(crate) run: RunSummary,
    pub(crate) errors_before_kill: u64,
    pub(crate) refused_after_kill: u64,
    /// Kill → the last refused request answered, ms; `None`: nothing was refused.
    pub(crate) recovered_ms: Option<f64>,
    pub(crate) seconds: Vec<Second>,
}

/// The replicas and Sentinels around the bench's Redis; stopped on drop.
struct Sentinels {
    _replicas: Vec<Child>,
    sentinels: Vec<u16>,
    _children: Vec<Child>,
}

pub(crate) async fn run(sys: &mut Systems, plan: &Plan, dir: &Path) -> anyhow::Result<RedisFailover> {
    let primary_url = sys.caracal.redis_url().to_owned();
    let primary_port: u16 =
        primary_url.rsplit(':').next().and_then(|p| p.trim_end_matches('/').parse().ok()).context("the bench's Redis port")?;
    let topology = Sentinels::start(primary_port, dir).await?;
    let list = topology.sentinels.iter().map(|p| format!("127.0.0.1:{p}")).collect::<Vec<_>>().join(",");
    let env = [("REDIS_SENTINELS", list), ("REDIS_SENTINEL_MASTER", MASTER.to_owned()), ("REDIS_MIN_REPLICAS", "1".to_owned())]
        .map(|(k, v)| (k.to_owned(), v));
    let pair = sys.caracal.start_pair("s8", &env, dir).await?;

    let p = &plan.drill;
    let spec = plan.drill_spec();
    let d = &sys.demo;
    let session = Minter::session(pair.cp, d).mint(&mut Conn::new(pair.cp)).await?;
    let minter = Arc::new(Minter::gateway_for(pair.cp, d, &session, &d.resource));
    let n = (p.rate * (plan.warmup + p.duration).as_secs_f64()).ceil() as usize + plan.connections;
    let (pool, _) = premint_pool(&minter, n).await?;
    let workload =
        Workload { target: pair.gw, path: PATH.to_owned(), resource: Some(HeaderValue::from_str(&d.resource)?), auth: Auth::Consume(pool) };
    eprintln!("bench: S8 Redis failover at {} req/s for {:?}: primary killed at {:?}", p.rate, p.duration, p.kill_at);
    let pid = redis_pid(primary_port).await?;
    let t0 = Instant::now() + Duration::from_millis(20);
    let window = t0 + plan.warmup;
    let kill = async {
        tokio::time::sleep_until(window + p.kill_at).await;
        let killed = Instant::now();
        std::process::Command::new("kill").args(["-9", &pid.to_string()]).status().context("kill the Redis primary")?;
        let promoted = topology.wait_for_new_primary(primary_port, window + plan.warmup + p.duration).await;
        anyhow::Ok((killed.saturating_duration_since(window), promoted.map(|at| at.saturating_duration_since(killed))))
    };
    let (result, killed) = tokio::join!(load::run_at(Arc::new(workload), spec, t0), kill);
    let (killed_at, promoted) = killed?;
    drop(pair);
    let errors = timeline::error_times(&result.samples);
    let before = errors.iter().filter(|e| **e < killed_at).count() as u64;
    let after: Vec<&Duration> = errors.iter().filter(|e| **e >= killed_at).collect();
    let out = RedisFailover {
        topology: format!(
            "the bench's Redis as primary, 2 replicas, 3 Sentinels (quorum 2, down-after {DOWN_AFTER_MS} ms); REDIS_MIN_REPLICAS=1"
        ),
        killed_at_s: killed_at.as_secs_f64(),
        promoted_ms: promoted.map(|d| d.as_secs_f64() * 1e3),
        errors_before_kill: before,
        refused_after_kill: after.len() as u64,
        recovered_ms: after.iter().max().map(|last| (**last - killed_at).as_secs_f64() * 1e3),
        seconds: timeline::per_second(&result.samples),
        run: result.summarize(&spec),
    };
    eprintln!(
        "bench: S8: {} refused after the kill ({:?}), promoted after {}, recovered after {}, {} errors before it",
        out.refused_after_kill,
        out.run.error_statuses,
        out.promoted_ms.map_or("—".into(), |v| format!("{v:.0} ms")),
        out.recovered_ms.map_or("—".into(), |v| format!("{v:.0} ms")),
        out.errors_before_kill
    );
    Ok(out)
}

impl Sentinels {
    /// Two replicas of the primary on `primary` and three Sentinels, once the replicas are in sync
    /// and every Sentinel sees them and its two peers.
    async fn start(primary: u16, dir: &Path) -> anyhow::Result<Self> {
        let mut replicas = Vec::new();
        for i in 0..2 {
            let port = crate::run::free_addr()?.port();
            let data = dir.join(format!("s8-replica-{i}"));
            std::fs::create_dir_all(&data)?;
            let args: Vec<String> = [
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--replicaof",
                "127.0.0.1",
                &primary.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                &data.display().to_string(),
            ]
            .map(str::to_owned)
            .to_vec();
            let name = format!("s8-replica-{i}");
            replicas.push(Child::spawn(Spawn { name: &name, program: Path::new("redis-server"), args: &args, env: &[], dir })?);
        }
        let mut children = Vec::new();
        let mut sentinels = Vec::new();
        for i in 0..3 {
            let port = crate::run::free_addr()?.port();
            let data = dir.join(format!("s8-sentinel-{i}"));
            std::fs::create_dir_all(&data)?;
            let conf = data.join("sentinel.conf");
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {}\nsentinel monitor {MASTER} 127.0.0.1 {primary} 2\n\
                     sentinel down-after-milliseconds {MASTER} {DOWN_AFTER_MS}\nsentinel failover-timeout {MASTER} 10000\n\
                     sentinel parallel-syncs {MASTER} 2\n",
                    data.display()
                ),
            )?;
            let args = [conf.display().to_string(), "--sentinel".to_owned()];
            let name = format!("s8-sentinel-{i}");
            children.push(Child::spawn(Spawn { name: &name, program: Path::new("redis-server"), args: &args, env: &[], dir })?);
            sentinels.push(port);
        }
        let s = Self { _replicas: replicas, sentinels, _children: children };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let synced = query::<String>(primary, redis::cmd("INFO").arg("replication"))
                .await
                .is_some_and(|i| i.matches("state=online").count() == 2);
            let mut seen = 0;
            for &port in &s.sentinels {
                let replicas =
                    query::<Vec<redis::Value>>(port, redis::cmd("SENTINEL").arg("REPLICAS").arg(MASTER)).await.map_or(0, |v| v.len());
                let peers =
                    query::<Vec<redis::Value>>(port, redis::cmd("SENTINEL").arg("SENTINELS").arg(MASTER)).await.map_or(0, |v| v.len());
                seen += usize::from(replicas == 2 && peers == 2);
            }
            if synced && seen == s.sentinels.len() {
                return Ok(s);
            }
            anyhow::ensure!(Instant::now() < deadline, "S8: the replicas and Sentinels did not settle within 30 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Polls the Sentinels until one names a primary other than `old`; when, or `None` by `until`.
    async fn wait_for_new_primary(&self, old: u16, until: Instant) -> Option<Instant> {
        while Instant::now() < until {
            for &port in &self.sentinels {
                let named = query::<(String, String)>(port, redis::cmd("SENTINEL").arg("GET-MASTER-ADDR-BY-NAME").arg(MASTER)).await;
                if named.and_then(|(_, p)| p.parse::<u16>().ok()).is_some_and(|p| p != old) {
                    return Some(Instant::now());
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }
}

/// One command to the Redis or Sentinel on `port`; `None` on any failure.
async fn query<T: redis::FromRedisValue>(port: u16, cmd: &redis::Cmd) -> Option<T> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).ok()?;
    let cfg = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(Duration::from_secs(1)));
    let mut conn = client.get_multiplexed_async_connection_with_config(&cfg).await.ok()?;
    cmd.query_async(&mut conn).await.ok()
}

/// The process id of the Redis on `port` (`INFO server`).
async fn redis_pid(port: u16) -> anyhow::Result<u32> {
    let info = query::<String>(port, redis::cmd("INFO").arg("server")).await.context("INFO server of the bench's Redis")?;
    info.lines().find_map(|l| l.strip_prefix("process_id:")).and_then(|p| p.trim().parse().ok()).context("process_id in INFO server")
}
