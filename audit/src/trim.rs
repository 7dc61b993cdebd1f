//! Trimming `caracal.audit.events`: only the ledger trims, and only what it has filed.
//!
//! Producers (gateway, STS, admin API, the outbox relay) add frames without `MAXLEN`: a cap on the
//! producer side drops the oldest entries whether or not the ledger has filed them, and an
//! unauthenticated flood could push unread evidence out. The ledger instead trims with
//! `XTRIM … MINID ~ <floor>`, where the floor is the lowest of, over every consumer group of the
//! stream, the group's last-delivered id and its oldest pending (delivered, unacknowledged) id.
//! Every entry below the floor was delivered to every group and acknowledged — for the ledger,
//! filed or dead-lettered. `~` trims whole stream nodes only, never at or above the floor.
//!
//! The price: while no ledger consumes (stopped, or `AUDIT_LEDGER_ENABLED=false` everywhere), the
//! stream grows without bound in Redis memory. Alert on `caracal_audit_stream_length` and
//! `caracal_audit_consumer_lag` (exported by a running ledger) and on Redis memory (docs/audit.md).

use redis::aio::ConnectionLike;
use redis::streams::{StreamInfoGroupsReply, StreamPendingReply};

/// A stream entry id `ms-seq`, ordered like Redis orders them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct EntryId(u64, u64);

impl EntryId {
    /// Parses `ms-seq` (a bare `ms` means `ms-0`).
    pub fn parse(s: &str) -> Option<Self> {
        let (ms, seq) = s.split_once('-').unwrap_or((s, "0"));
        Some(Self(ms.parse().ok()?, seq.parse().ok()?))
    }
}

impl std::fmt::Display for EntryId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.0, self.1)
    }
}

/// The lowest id any consumer group of `stream` may still need (module docs); `None` when the
/// stream has no group (then nothing is known to be filed and nothing is trimmed).
pub async fn floor(conn: &mut (impl ConnectionLike + Send), stream: &str) -> redis::RedisResult<Option<EntryId>> {
    let groups: StreamInfoGroupsReply = redis::cmd("XINFO").arg("GROUPS").arg(stream).query_async(conn).await?;
    let mut floor: Option<EntryId> = None;
    for g in &groups.groups {
        // An id that does not parse keeps everything: never trim on a guess.
        let mut need = EntryId::parse(&g.last_delivered_id).unwrap_or(EntryId(0, 0));
        if g.pending > 0 {
            let summary: StreamPendingReply = redis::cmd("XPENDING").arg(stream).arg(&g.name).query_async(conn).await?;
            if let StreamPendingReply::Data(d) = summary {
                need = need.min(EntryId::parse(&d.start_id).unwrap_or(EntryId(0, 0)));
            }
        }
        floor = Some(floor.map_or(need, |f| f.min(need)));
    }
    Ok(floor)
}

/// Trims what every group has acknowledged; returns how many entries Redis removed.
pub async fn trim_acknowledged(conn: &mut (impl ConnectionLike + Send), stream: &str) -> redis::RedisResult<u64> {
    match floor(conn, stream).await? {
        Some(min) if min > EntryId(0, 0) => {
            redis::cmd("XTRIM").arg(stream).arg("MINID").arg("~").arg(min.to_string()).query_async(conn).await
        }
        _ => Ok(0),
    }
}

#[cfg(test)]
mod tests {
    use super::EntryId;

    #[test]
    fn ids_order_like_redis() {
        let id = |s| EntryId::parse(s).unwrap();
        assert!(id("1700000000000-5") < id("1700000000000-12"), "sequence compares as a number");
        assert!(id("1700000000000-99") < id("1700000000001-0"));
        assert_eq!(id("42"), id("42-0"));
        assert_eq!(id("0-0"), EntryId(0, 0));
        assert_eq!(EntryId::parse("x-1"), None);
        assert_eq!(id("5-3").to_string(), "5-3");
    }
}
