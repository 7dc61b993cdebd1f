//! Redis that survives a failover, as production runs it: the stack's `redis-server` as primary,
//! two replicas, and three `redis-server --sentinel` processes (quorum 2) watching them, all on
//! loopback. Sentinel declares the primary down after [`DOWN_AFTER`] without an answer.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::infra::{Redis, RedisOptions, free_port, scratch_dir, wait_for_port};

/// The name the Sentinels monitor the primary under.
pub const MASTER: &str = "caracal";
/// Sentinel's `down-after-milliseconds`.
pub const DOWN_AFTER: Duration = Duration::from_millis(1000);

/// The replicas and Sentinels around a primary; stopped on drop.
pub struct RedisHa {
    pub replicas: Vec<Redis>,
    pub sentinels: Vec<Sentinel>,
}

/// One `redis-server --sentinel`.
pub struct Sentinel {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl RedisHa {
    /// Two replicas of `primary` and three Sentinels, once both replicas are in sync and every
    /// Sentinel sees them and the other Sentinels (so a failover can be agreed and elected).
    pub fn start(primary: &Redis) -> Self {
        let replicas: Vec<Redis> =
            (0..2).map(|_| Redis::start_with(RedisOptions { replica_of: Some(primary.port), ..Default::default() })).collect();
        // Both replicas in sync: a write can be acknowledged (REDIS_MIN_REPLICAS) from the start.
        wait_for_online_replicas(primary.port, 2, Duration::from_secs(20));
        let sentinels: Vec<Sentinel> = (0..3).map(|_| Sentinel::start(primary.port)).collect();
        let ha = Self { replicas, sentinels };
        ha.wait_until(Duration::from_secs(30), "every Sentinel to see 2 replicas and 2 other Sentinels", |s| {
            let replicas = count(s, "REPLICAS");
            let peers = count(s, "SENTINELS");
            replicas == 2 && peers == 2
        });
        ha
    }

    /// The settings that point a service at the Sentinels (the host of its `REDIS_URL` is then
    /// ignored), with writes waiting for one replica.
    pub fn env(&self) -> Vec<(String, String)> {
        let list = self.sentinels.iter().map(|s| format!("127.0.0.1:{}", s.port)).collect::<Vec<_>>().join(",");
        vec![("REDIS_SENTINELS".into(), list), ("REDIS_SENTINEL_MASTER".into(), MASTER.into()), ("REDIS_MIN_REPLICAS".into(), "1".into())]
    }

    /// The primary's port as the first Sentinel that answers names it.
    pub fn primary_port(&self) -> Option<u16> {
        self.sentinels.iter().find_map(|s| {
            let reply: Option<(String, String)> =
                redis::cmd("SENTINEL").arg("GET-MASTER-ADDR-BY-NAME").arg(MASTER).query(&mut s.connection()?).ok()?;
            reply?.1.parse().ok()
        })
    }

    /// Waits until the Sentinels name a primary other than `old`; returns it.
    pub fn wait_for_new_primary(&self, old: u16, within: Duration) -> u16 {
        let start = Instant::now();
        loop {
            if let Some(port) = self.primary_port().filter(|p| *p != old) {
                return port;
            }
            assert!(start.elapsed() < within, "no failover away from port {old} within {within:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_until(&self, within: Duration, what: &str, ok: impl Fn(&mut redis::Connection) -> bool) {
        let start = Instant::now();
        while !self.sentinels.iter().all(|s| s.connection().is_some_and(|mut c| ok(&mut c))) {
            assert!(start.elapsed() < within, "waited {within:?} for {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// How many `REPLICAS` or `SENTINELS` a Sentinel knows for [`MASTER`].
fn count(conn: &mut redis::Connection, what: &str) -> usize {
    redis::cmd("SENTINEL").arg(what).arg(MASTER).query::<Vec<redis::Value>>(conn).map(|v| v.len()).unwrap_or(0)
}

impl Sentinel {
    fn start(primary_port: u16) -> Self {
        let dir = scratch_dir("sentinel");
        let port = free_port();
        // Sentinel rewrites its config file as it learns the topology, so each has its own.
        let conf = dir.join("sentinel.conf");
        let text = format!(
            "port {port}\nbind 127.0.0.1\ndir {}\nsentinel monitor {MASTER} 127.0.0.1 {primary_port} 2\n\
             sentinel down-after-milliseconds {MASTER} {}\nsentinel failover-timeout {MASTER} 10000\n\
             sentinel parallel-syncs {MASTER} 2\n",
            dir.display(),
            DOWN_AFTER.as_millis()
        );
        std::fs::write(&conf, text).expect("write sentinel.conf");
        let child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdout(std::fs::File::create(dir.join("sentinel.log")).unwrap())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("redis-server must be installed (apt-get install redis-server)");
        wait_for_port(port, Duration::from_secs(10));
        Self { port, dir, child: Some(child) }
    }

    fn connection(&self) -> Option<redis::Connection> {
        let client = redis::Client::open(format!("redis://127.0.0.1:{}", self.port)).ok()?;
        client.get_connection_with_timeout(Duration::from_secs(1)).ok()
    }

    /// Where its log is.
    pub fn log(&self) -> PathBuf {
        self.dir.join("sentinel.log")
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A Redis Cluster around a first node started with [`RedisOptions::cluster`]: five more nodes,
/// three primaries with one replica each (`redis-cli --cluster create`), node timeout 1 s.
pub struct RedisCluster {
    pub others: Vec<Redis>,
}

impl RedisCluster {
    /// Creates the cluster and waits until every node says `cluster_state:ok` and every primary's
    /// replica is online.
    pub fn start(first: &Redis) -> Self {
        let others: Vec<Redis> = (0..5).map(|_| Redis::start_with(RedisOptions { cluster: true, ..Default::default() })).collect();
        let nodes: Vec<String> =
            std::iter::once(first.port).chain(others.iter().map(|r| r.port)).map(|p| format!("127.0.0.1:{p}")).collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&nodes)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .expect("redis-cli must be installed (apt-get install redis-server)");
        assert!(out.status.success(), "redis-cli --cluster create: {}", String::from_utf8_lossy(&out.stdout));
        let cluster = Self { others };
        let start = Instant::now();
        for port in cluster.ports(first) {
            loop {
                let info: String = node(port).and_then(|mut c| redis::cmd("CLUSTER").arg("INFO").query(&mut c).ok()).unwrap_or_default();
                // Healthy, and a primary's replica in sync (a write can be acknowledged by it).
                let replication = replication(port);
                let synced = replication.contains("role:slave") || replication.contains("state=online");
                if info.contains("cluster_state:ok") && synced {
                    break;
                }
                assert!(start.elapsed() < Duration::from_secs(30), "node {port} not in a healthy cluster: {info}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        cluster
    }

    /// Every node's port, `first` included.
    pub fn ports(&self, first: &Redis) -> Vec<u16> {
        std::iter::once(first.port).chain(self.others.iter().map(|r| r.port)).collect()
    }

    /// The settings that point a service at the cluster, with writes waiting for one replica.
    pub fn env(&self, first: &Redis) -> Vec<(String, String)> {
        let list = self.ports(first).iter().map(|p| format!("127.0.0.1:{p}")).collect::<Vec<_>>().join(",");
        vec![("REDIS_CLUSTER_NODES".into(), list), ("REDIS_MIN_REPLICAS".into(), "1".into())]
    }
}

/// `ROLE` of the node on `port`: `master`, `slave`, or `None` when it does not answer.
pub fn role(port: u16) -> Option<String> {
    let reply: Vec<redis::Value> = redis::cmd("ROLE").query(&mut node(port)?).ok()?;
    redis::from_redis_value(reply.into_iter().next()?).ok()
}

/// `INFO replication` of the node on `port` (empty when it does not answer).
pub fn replication(port: u16) -> String {
    node(port).and_then(|mut c| redis::cmd("INFO").arg("replication").query(&mut c).ok()).unwrap_or_default()
}

/// Waits until the primary on `port` has at least `n` replicas in sync (`state=online`).
pub fn wait_for_online_replicas(port: u16, n: usize, within: Duration) {
    let start = Instant::now();
    loop {
        let info = replication(port);
        if info.matches("state=online").count() >= n {
            return;
        }
        assert!(start.elapsed() < within, "{n} replicas of port {port} not in sync after {within:?}: {info}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The port of a replica of the primary on `port` (from its `INFO replication`).
pub fn replica_of(port: u16) -> Option<u16> {
    let info = replication(port);
    info.lines().find(|l| l.starts_with("slave0:"))?.split(',').find_map(|kv| kv.strip_prefix("port="))?.parse().ok()
}

fn node(port: u16) -> Option<redis::Connection> {
    redis::Client::open(format!("redis://127.0.0.1:{port}")).ok()?.get_connection_with_timeout(Duration::from_secs(1)).ok()
}
