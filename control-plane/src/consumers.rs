//! The STS's stream consumers: revocations, policy activations, key rotations (and zones created
//! or archived) and catalog changes made by any control-plane instance reach this instance's
//! in-memory state within a read (DESIGN §5).
//!
//! Each instance has its own consumer groups (`sts-<kind>:<instance>`, the instance id ending in
//! the pid), so every instance sees every message; the groups are removed on a clean exit. The
//! revocation group starts at the beginning of the retained stream (replaying is harmless), the
//! others at new messages (a fresh instance loads policies and keys on demand anyway).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use caracal_shared::stream_consumer::{Consumer, ConsumerMetrics, Failure, Handler, Message};
use caracal_shared::streams;
use caracal_sts::Sts;
use prometheus::{Gauge, IntCounter, IntGauge, Registry};

/// Fields naming a revoked anchor.
const ANCHOR_FIELDS: &[&str] = &["session_id", "sid", "root_sid", "agent_session_id", "delegation_edge_id", "edge_id"];

/// Applies `caracal.sessions.revoke` to the STS's revoked set.
pub struct Revocations(pub Arc<Sts>);

impl Handler for Revocations {
    fn handle(&self, batch: &[Message]) -> Vec<Result<(), Failure>> {
        batch
            .iter()
            .map(|m| {
                let Some(zone) = m.get("zone_id") else { return Err(Failure::Permanent("no zone_id".into())) };
                let anchors: Vec<&str> = ANCHOR_FIELDS.iter().filter_map(|f| m.get(f)).collect();
                if anchors.is_empty() {
                    return Err(Failure::Permanent("no revocation anchor in message".into()));
                }
                self.0.revoked.insert_many(zone, &anchors);
                Ok(())
            })
            .collect()
    }
}

/// What an invalidation message makes this instance forget.
#[derive(Clone, Copy)]
pub enum Invalidate {
    Policy,
    Keys,
}

/// Applies `caracal.policy.invalidate` / `caracal.keys.invalidate`.
pub struct Invalidations {
    pub sts: Arc<Sts>,
    pub what: Invalidate,
}

impl Handler for Invalidations {
    fn handle(&self, batch: &[Message]) -> Vec<Result<(), Failure>> {
        let mut zones = BTreeSet::new();
        let results = batch
            .iter()
            .map(|m| match m.get("zone_id") {
                Some(z) => {
                    zones.insert(z.to_owned());
                    Ok(())
                }
                None => Err(Failure::Permanent("no zone_id".into())),
            })
            .collect();
        let (sts, what) = (self.sts.clone(), self.what);
        // The caches are async; forgetting an entry cannot fail, so acknowledging first is safe.
        tokio::spawn(async move {
            for z in zones {
                match what {
                    Invalidate::Policy => sts.policies.invalidate(&z).await,
                    Invalidate::Keys => sts.keys.invalidate(&z).await,
                }
                tracing::info!(zone_id = %z, kind = match what { Invalidate::Policy => "policy", Invalidate::Keys => "keys" }, "invalidated by stream");
            }
        });
        results
    }
}

/// Applies `caracal.catalog.invalidate` (`{zone_id, kind: application|resource, id}`).
pub struct CatalogInvalidations(pub Arc<Sts>);

impl Handler for CatalogInvalidations {
    fn handle(&self, batch: &[Message]) -> Vec<Result<(), Failure>> {
        let mut forget = Vec::new();
        let results = batch
            .iter()
            .map(|m| match (m.get("zone_id"), m.get("kind"), m.get("id")) {
                (Some(z), Some(k @ ("application" | "resource")), Some(id)) => {
                    forget.push((z.to_owned(), k == "application", id.to_owned()));
                    Ok(())
                }
                _ => Err(Failure::Permanent("catalog invalidation without zone_id, kind or id".into())),
            })
            .collect();
        let sts = self.0.clone();
        // Forgetting a cache entry cannot fail, so acknowledging first is safe.
        tokio::spawn(async move {
            for (zone, application, id) in forget {
                if application {
                    sts.catalog.invalidate_application(&zone, &id).await;
                } else {
                    sts.catalog.invalidate_resource(&zone, &id).await;
                }
            }
        });
        results
    }
}

fn metrics(registry: &Registry, kind: &str) -> Result<ConsumerMetrics, prometheus::Error> {
    let counter = |name: &str, help: &str| -> Result<IntCounter, prometheus::Error> {
        let c = IntCounter::new(format!("caracal_sts_{kind}_{name}"), help)?;
        registry.register(Box::new(c.clone()))?;
        Ok(c)
    };
    Ok(ConsumerMetrics {
        handled: counter("messages_total", "Stream messages applied.")?,
        invalid_signatures: counter("invalid_signatures_total", "Stream messages with a bad _sig (dead-lettered).")?,
        dead_letters: counter("dead_letters_total", "Stream messages dead-lettered.")?,
        reclaimed: counter("pending_reclaimed_total", "Pending stream messages reclaimed.")?,
        read_errors: counter("stream_errors_total", "Stream read failures.")?,
        dead_letter_backlog: {
            let g = IntGauge::new(format!("caracal_sts_{kind}_dead_letter_backlog"), "Entries in the stream's dead-letter stream.")?;
            registry.register(Box::new(g.clone()))?;
            g
        },
        lag_seconds: {
            let g = Gauge::new(
                format!("caracal_sts_{kind}_consumer_lag_seconds"),
                "Age of the oldest stream message this instance's group has not applied; 0 when caught up.",
            )?;
            registry.register(Box::new(g.clone()))?;
            g
        },
    })
}

/// Starts the consumers; they stop and remove their groups when `shutdown` flips.
pub fn spawn(
    sts: Arc<Sts>,
    primary: caracal_shared::redis_primary::Primary,
    key: Vec<u8>,
    instance: &str,
    registry: &Registry,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<Vec<tokio::task::JoinHandle<()>>, prometheus::Error> {
    let make = |stream: &str, kind: &str, start_id: &'static str| Group {
        primary: primary.clone(),
        stream: stream.to_owned(),
        group: format!("sts-{kind}:{instance}"),
        consumer: format!("sts-{instance}"),
        key: key.clone(),
        start_id,
    };
    let revocations = make(streams::SESSIONS_REVOKE, "revocation", "0").with(Revocations(sts.clone()), metrics(registry, "revocation")?);
    let policies = make(streams::POLICY_INVALIDATE, "policy", "$")
        .with(Invalidations { sts: sts.clone(), what: Invalidate::Policy }, metrics(registry, "policy_invalidation")?);
    let keys = make(streams::KEYS_INVALIDATE, "keys", "$")
        .with(Invalidations { sts: sts.clone(), what: Invalidate::Keys }, metrics(registry, "keys_invalidation")?);
    let catalog =
        make(streams::CATALOG_INVALIDATE, "catalog", "$").with(CatalogInvalidations(sts), metrics(registry, "catalog_invalidation")?);
    Ok(vec![run(revocations, shutdown.clone()), run(policies, shutdown.clone()), run(keys, shutdown.clone()), run(catalog, shutdown)])
}

/// A consumer's identity before its handler is chosen.
struct Group {
    primary: caracal_shared::redis_primary::Primary,
    stream: String,
    group: String,
    consumer: String,
    key: Vec<u8>,
    start_id: &'static str,
}

impl Group {
    fn with<H: Handler>(self, handler: H, metrics: ConsumerMetrics) -> Consumer<H> {
        Consumer {
            primary: self.primary,
            stream: self.stream,
            group: self.group,
            consumer: self.consumer,
            key: self.key,
            handler,
            metrics,
            block: Duration::from_millis(500),
            start_id: self.start_id,
        }
    }
}

fn run<H: Handler + 'static>(c: Consumer<H>, shutdown: tokio::sync::watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        c.run(shutdown).await;
        if let Err(e) = c.destroy_group().await {
            tracing::warn!(group = %c.group, error = %e, "could not remove a consumer group");
        }
    })
}
