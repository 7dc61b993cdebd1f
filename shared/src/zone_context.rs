//! The zone a piece of work acts for, carried with the task and handed to Postgres.
//!
//! Zone tables have row-level security keyed on the setting `caracal.zone_id` (migration 0006):
//! a connection sees the rows of that zone only, all zones under `*`, and **nothing** without a
//! setting. The control plane's pool sets it on every checkout from the context of the task that
//! checks the connection out ([`setting`]), so a handler or background task that forgot to say
//! which zone it acts for reads nothing rather than another zone's rows.
//!
//! Request handlers get their zone from the path (`/v1/zones/{z}/…`, `/zones/{z}/…`) or, at the
//! token endpoint, from the form; background work that spans zones (outbox relay, revocation
//! reloads, stream consumers) runs under [`ZoneContext::AllZones`].

use std::future::Future;

tokio::task_local! {
    static CONTEXT: ZoneContext;
}

/// What the current task may see.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ZoneContext {
    /// One zone's rows.
    Zone(String),
    /// Every zone's rows: cross-zone background work and global admin routes.
    AllZones,
}

/// The value for `caracal.zone_id` that means every zone.
pub const ALL_ZONES: &str = "*";
/// The Postgres setting row-level security reads.
pub const SETTING: &str = "caracal.zone_id";

/// Runs `f` with `ctx` as the current task's zone context.
pub async fn within<F: Future>(ctx: ZoneContext, f: F) -> F::Output {
    CONTEXT.scope(ctx, f).await
}

/// Runs `f` for every zone (cross-zone background work).
pub async fn all_zones<F: Future>(f: F) -> F::Output {
    within(ZoneContext::AllZones, f).await
}

/// Runs `f` for `zone_id`.
pub async fn zone<F: Future>(zone_id: &str, f: F) -> F::Output {
    within(ZoneContext::Zone(zone_id.to_owned()), f).await
}

/// The current task's context, if it has one.
pub fn current() -> Option<ZoneContext> {
    CONTEXT.try_with(Clone::clone).ok()
}

/// The value to store in `caracal.zone_id` for the current task: the zone id, `*`, or the empty
/// string (no context: no rows).
pub fn setting() -> String {
    match current() {
        Some(ZoneContext::Zone(z)) => z,
        Some(ZoneContext::AllZones) => ALL_ZONES.to_owned(),
        None => String::new(),
    }
}

/// The zone a request path names (`/v1/zones/{z}/…` or `/zones/{z}/…`), if any.
pub fn zone_of_path(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/v1/zones/").or_else(|| path.strip_prefix("/zones/"))?;
    let zone = rest.split('/').next()?;
    (!zone.is_empty()).then_some(zone)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_setting_follows_the_task() {
        assert_eq!(setting(), "", "no context: no rows");
        assert_eq!(zone("z1", async { setting() }).await, "z1");
        assert_eq!(all_zones(async { setting() }).await, "*");
        let nested = all_zones(zone("z2", async { setting() })).await;
        assert_eq!(nested, "z2", "the innermost scope wins");
        let spawned = zone("z3", async { tokio::spawn(async { setting() }).await.unwrap() }).await;
        assert_eq!(spawned, "", "a spawned task does not inherit: it must say which zone it acts for");
    }

    #[test]
    fn zones_come_from_paths() {
        assert_eq!(zone_of_path("/v1/zones/z1/applications"), Some("z1"));
        assert_eq!(zone_of_path("/zones/z2/agents"), Some("z2"));
        assert_eq!(zone_of_path("/v1/zones/z3"), Some("z3"));
        assert_eq!(zone_of_path("/v1/zones"), None);
        assert_eq!(zone_of_path("/v1/zones/"), None);
        assert_eq!(zone_of_path("/oauth/2/token"), None);
    }
}
