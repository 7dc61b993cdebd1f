//! The Redis primary, wherever it is now, and writes that outlive a failover.
//!
//! - With `REDIS_URL` alone the primary is that address ([`Primary::fixed`]).
//! - With `REDIS_CLUSTER_NODES` it is a Redis Cluster: each key goes to the primary of its slot,
//!   and the redis crate's cluster client follows `MOVED` and a replica's promotion.
//! - With `REDIS_SENTINELS` it is whichever node the Sentinels name for `REDIS_SENTINEL_MASTER`,
//!   confirmed with `ROLE` before use. A [`Conn`] follows it: when a command fails (the primary
//!   died, or came back as a replica and answers `READONLY`), the Sentinels are asked again, at
//!   most every [`RESOLVE_EVERY`], and later commands go to the primary they name. A command that
//!   fails in between fails, and its caller denies: nothing is retried against a node that may not
//!   be the primary.
//! - [`Durability`]: Redis replicates asynchronously, so a primary that dies right after a
//!   `SET NX` takes the marker with it and the promoted replica would accept the same mandate
//!   again. A write that must survive (a spent JTI, a revocation, an audit event) is followed in
//!   the same round trip by `WAIT <REDIS_MIN_REPLICAS> <REDIS_REPLICA_TIMEOUT>`, and fewer
//!   acknowledgements fail it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::cluster::{ClusterClient, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::sentinel::SentinelClient;
use redis::{Cmd, ConnectionAddr, FromRedisValue, Pipeline, RedisFuture, RedisResult, Value};

/// How often a [`Conn`] may ask the Sentinels again while commands keep failing.
pub const RESOLVE_EVERY: Duration = Duration::from_millis(100);
/// How long a [`Conn`] keeps asking after a failure while the Sentinels name no usable primary
/// (an election takes seconds; Sentinel's own `failover-timeout` is usually longer).
const FOLLOW_FOR: Duration = Duration::from_secs(60);
/// How long one question to the Sentinels (and the `ROLE` check) may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);

/// Where the primary is found.
#[derive(Clone)]
pub struct Primary {
    find: Arc<Find>,
    durability: Durability,
}

enum Find {
    Fixed(redis::Client),
    Sentinels(tokio::sync::Mutex<SentinelClient>),
    Cluster(ClusterClient),
}

impl Primary {
    /// The primary at a fixed address.
    pub fn fixed(client: redis::Client, durability: Durability) -> Self {
        Self { find: Arc::new(Find::Fixed(client)), durability }
    }

    /// The primary the Sentinels behind `sentinels` name.
    pub fn sentinels(sentinels: SentinelClient, durability: Durability) -> Self {
        Self { find: Arc::new(Find::Sentinels(tokio::sync::Mutex::new(sentinels))), durability }
    }

    /// A Redis Cluster reached through `cluster`.
    pub fn cluster(cluster: ClusterClient, durability: Durability) -> Self {
        Self { find: Arc::new(Find::Cluster(cluster)), durability }
    }

    /// What a write that must survive a failover waits for.
    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// A connection of its own (a blocking stream read must not hold up shared commands), to the
    /// primary as it is now: behind Sentinels, call it at every (re)connect, not per command.
    pub async fn dedicated(&self, connect: Duration, response: Duration) -> RedisResult<Dedicated> {
        if let Find::Cluster(cluster) = &*self.find {
            let cfg = ClusterConfig::new().set_connection_timeout(connect).set_response_timeout(response);
            return Ok(Dedicated::Cluster(cluster.get_async_connection_with_config(cfg).await?, response));
        }
        let cfg = redis::AsyncConnectionConfig::new().set_connection_timeout(Some(connect)).set_response_timeout(Some(response));
        Ok(Dedicated::Node(self.client().await?.get_multiplexed_async_connection_with_config(&cfg).await?))
    }

    /// A client for the current primary (not for a cluster). Asks the Sentinels each time.
    async fn client(&self) -> RedisResult<redis::Client> {
        match &*self.find {
            Find::Fixed(client) => Ok(client.clone()),
            Find::Cluster(_) => Err(redis::RedisError::from((redis::ErrorKind::InvalidClientConfig, "a cluster has no single primary"))),
            Find::Sentinels(sentinels) => {
                let ask = async { sentinels.lock().await.async_get_client().await };
                match tokio::time::timeout(RESOLVE_TIMEOUT, ask).await {
                    Ok(found) => found,
                    Err(_) => Err(redis::RedisError::from((redis::ErrorKind::Io, "the Sentinels did not name a primary in time"))),
                }
            }
        }
    }

    /// A shared, multiplexed connection to the primary that reconnects by itself and, behind
    /// Sentinels, follows a failover. Connects before returning.
    pub async fn connect(&self, cfg: ConnectionManagerConfig) -> RedisResult<Conn> {
        let route = match &*self.find {
            Find::Fixed(client) => Route::Fixed(ConnectionManager::new_with_config(client.clone(), cfg).await?),
            Find::Cluster(cluster) => {
                let mut c = ClusterConfig::new();
                if let Some(t) = cfg.connection_timeout() {
                    c = c.set_connection_timeout(t);
                }
                if let Some(t) = cfg.response_timeout() {
                    c = c.set_response_timeout(t);
                }
                let deadline = cfg.response_timeout().unwrap_or(CLUSTER_DEADLINE);
                Route::Cluster(cluster.get_async_connection_with_config(c).await?, deadline)
            }
            Find::Sentinels(_) => {
                let client = self.client().await?;
                let addr = client.get_connection_info().addr().clone();
                let manager = ConnectionManager::new_with_config(client, cfg.clone()).await?;
                Route::Following(Arc::new(Following {
                    primary: self.clone(),
                    cfg,
                    current: ArcSwap::from_pointee(Current { addr, manager }),
                    asking: AtomicBool::new(false),
                    last_asked: std::sync::Mutex::new(Instant::now()),
                }))
            }
        };
        Ok(Conn { route, durability: self.durability })
    }
}

/// A connection to whatever node is the primary (see the module docs).
#[derive(Clone)]
pub struct Conn {
    route: Route,
    durability: Durability,
}

#[derive(Clone)]
enum Route {
    Fixed(ConnectionManager),
    Following(Arc<Following>),
    /// The connection and the most a command may take, retries and slot refreshes included.
    Cluster(ClusterConnection, Duration),
}

struct Following {
    primary: Primary,
    cfg: ConnectionManagerConfig,
    current: ArcSwap<Current>,
    /// A question to the Sentinels is under way.
    asking: AtomicBool,
    last_asked: std::sync::Mutex<Instant>,
}

struct Current {
    addr: ConnectionAddr,
    manager: ConnectionManager,
}

impl Conn {
    /// What a write that must survive a failover waits for.
    pub fn durability(&self) -> Durability {
        self.durability
    }
}

impl Following {
    /// After a failed command: ask the Sentinels again in the background, unless a question is
    /// under way or one was asked within [`RESOLVE_EVERY`].
    fn lost(self: &Arc<Self>) {
        {
            let mut last = self.last_asked.lock().unwrap_or_else(|p| p.into_inner());
            if last.elapsed() < RESOLVE_EVERY || self.asking.swap(true, Ordering::AcqRel) {
                return;
            }
            *last = Instant::now();
        }
        let this = self.clone();
        tokio::spawn(async move {
            this.follow().await;
            this.asking.store(false, Ordering::Release);
        });
    }

    /// Asks the Sentinels until they name a primary that answers `ROLE` as one: the one in use
    /// (a blip) or another, which later commands then go to. Asking once was not enough: a
    /// process that sent nothing to Redis while the Sentinels elected (the STS while the
    /// gateway's circuit was open) kept the dead primary, and its next request failed (bench S8).
    async fn follow(&self) {
        let started = Instant::now();
        let mut said = false;
        let client = loop {
            match self.primary.client().await {
                Ok(c) => break c,
                Err(e) if started.elapsed() < FOLLOW_FOR => {
                    if !said {
                        tracing::warn!(error = %e, "the Sentinels name no usable Redis primary yet; commands fail until they do");
                        said = true;
                    }
                    tokio::time::sleep(RESOLVE_EVERY).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the Sentinels named no usable Redis primary; asking again on the next failure");
                    return;
                }
            }
        };
        let addr = client.get_connection_info().addr().clone();
        let old = self.current.load().addr.clone();
        if addr == old {
            return;
        }
        match ConnectionManager::new_lazy_with_config(client, self.cfg.clone()) {
            Ok(manager) => {
                tracing::warn!(from = %old, to = %addr, "Redis primary moved; following it");
                self.current.store(Arc::new(Current { addr, manager }));
            }
            Err(e) => tracing::warn!(error = %e, "cannot build a connection to the new Redis primary"),
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match &mut self.route {
            Route::Fixed(m) => m.req_packed_command(cmd),
            Route::Cluster(c, deadline) => bounded(*deadline, c.req_packed_command(cmd)),
            Route::Following(f) => Box::pin(async move {
                let mut manager = f.current.load().manager.clone();
                let reply = manager.req_packed_command(cmd).await;
                if reply.is_err() {
                    f.lost();
                }
                reply
            }),
        }
    }

    fn req_packed_commands<'a>(&'a mut self, pipeline: &'a Pipeline, offset: usize, count: usize) -> RedisFuture<'a, Vec<Value>> {
        match &mut self.route {
            Route::Fixed(m) => m.req_packed_commands(pipeline, offset, count),
            Route::Cluster(c, deadline) => bounded(*deadline, c.req_packed_commands(pipeline, offset, count)),
            Route::Following(f) => Box::pin(async move {
                let mut manager = f.current.load().manager.clone();
                let reply = manager.req_packed_commands(pipeline, offset, count).await;
                if reply.is_err() {
                    f.lost();
                }
                reply
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match &self.route {
            Route::Fixed(m) => m.get_db(),
            Route::Cluster(c, _) => c.get_db(),
            Route::Following(f) => f.current.load().manager.get_db(),
        }
    }
}

/// A connection of its own ([`Primary::dedicated`]).
pub enum Dedicated {
    Node(MultiplexedConnection),
    /// The connection and the most a command may take (see [`Route::Cluster`]).
    Cluster(ClusterConnection, Duration),
}

impl ConnectionLike for Dedicated {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Node(c) => c.req_packed_command(cmd),
            Self::Cluster(c, deadline) => bounded(*deadline, c.req_packed_command(cmd)),
        }
    }

    fn req_packed_commands<'a>(&'a mut self, pipeline: &'a Pipeline, offset: usize, count: usize) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Node(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c, deadline) => bounded(*deadline, c.req_packed_commands(pipeline, offset, count)),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Node(c) => c.get_db(),
            Self::Cluster(c, _) => c.get_db(),
        }
    }
}

/// A cluster command's deadline when the caller set no response timeout.
const CLUSTER_DEADLINE: Duration = Duration::from_secs(2);

/// `reply`, or a timeout error after `deadline`. The cluster client's own timeouts bound each
/// attempt, not its retries and slot refreshes while a primary is down; a request must not
/// wait on those.
fn bounded<'a, T: Send + 'a>(deadline: Duration, reply: RedisFuture<'a, T>) -> RedisFuture<'a, T> {
    Box::pin(async move {
        tokio::time::timeout(deadline, reply)
            .await
            .unwrap_or_else(|_| Err(redis::RedisError::from((redis::ErrorKind::Io, "Redis Cluster did not answer in time"))))
    })
}

/// How many replicas must hold a write before it counts (`REDIS_MIN_REPLICAS`, 0 = the primary
/// alone) and how long to wait for them (`REDIS_REPLICA_TIMEOUT`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Durability {
    pub replicas: u32,
    pub timeout: Duration,
}

impl Default for Durability {
    fn default() -> Self {
        Self { replicas: 0, timeout: Duration::from_millis(500) }
    }
}

impl Durability {
    /// Runs `cmd` and, when replicas are required, `WAIT` in the same round trip. Fewer
    /// acknowledgements than required is an error: the write may not survive a failover.
    pub async fn write<T: FromRedisValue, C: ConnectionLike>(self, conn: &mut C, cmd: &Cmd) -> RedisResult<T> {
        if self.replicas == 0 {
            return cmd.query_async(conn).await;
        }
        let mut pipe = redis::pipe();
        pipe.add_command(cmd.clone());
        let (reply, acks): (T, i64) = self.with_wait(pipe).query_async(conn).await?;
        self.check(acks)?;
        Ok(reply)
    }

    /// [`Self::write`] for a non-atomic pipeline whose replies are ignored.
    pub async fn write_pipe<C: ConnectionLike>(self, conn: &mut C, pipe: &Pipeline) -> RedisResult<()> {
        if self.replicas == 0 {
            return pipe.query_async(conn).await;
        }
        let (acks,): (i64,) = self.with_wait(pipe.clone()).query_async(conn).await?;
        self.check(acks)
    }

    fn with_wait(self, mut pipe: Pipeline) -> Pipeline {
        pipe.cmd("WAIT").arg(self.replicas).arg(self.timeout.as_millis() as u64);
        pipe
    }

    fn check(self, acks: i64) -> RedisResult<()> {
        if acks >= i64::from(self.replicas) {
            return Ok(());
        }
        Err(redis::RedisError::from((
            redis::ErrorKind::Io,
            "write not replicated",
            format!("{acks} of the {} replicas required (REDIS_MIN_REPLICAS) acknowledged it", self.replicas),
        )))
    }
}
