//! Which resources the STS said are MCP servers, per zone: learned from directives (and from the
//! STS refusing a POST without MCP facts), so a malformed or oversized POST to a known MCP
//! resource is refused before its mandate is spent or the STS is asked. Only consulted for a POST
//! that looks like MCP and was not read cleanly, and written only when a grant changes it: the
//! well-formed path pays nothing. A resource is forgotten when a directive for it no longer says
//! MCP; unknown resources are simply decided by the STS, so the set is an optimisation, never an
//! authority. Bounded: past [`MAX`] entries it starts over.

use dashmap::DashSet;

/// Most resources remembered.
const MAX: usize = 10_000;

/// The set of (zone, resource identifier) pairs known to be MCP.
#[derive(Default)]
pub struct KnownMcp {
    set: DashSet<String>,
}

fn key(zone_id: &str, resource: &str) -> String {
    format!("{zone_id}\n{resource}")
}

impl KnownMcp {
    /// Whether the resource is known to be MCP.
    pub fn contains(&self, zone_id: &str, resource: &str) -> bool {
        !self.set.is_empty() && self.set.contains(&key(zone_id, resource))
    }

    /// Records what a directive (or refusal) said about the resource.
    pub fn learn(&self, zone_id: &str, resource: &str, mcp: bool) {
        let k = key(zone_id, resource);
        if mcp && !self.set.contains(&k) {
            if self.set.len() >= MAX {
                self.set.clear();
            }
            self.set.insert(k);
        } else if !mcp && !self.set.is_empty() {
            self.set.remove(&k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learned_per_zone_and_forgotten() {
        let k = KnownMcp::default();
        assert!(!k.contains("z", "https://mcp"));
        k.learn("z", "https://mcp", true);
        assert!(k.contains("z", "https://mcp"));
        assert!(!k.contains("other", "https://mcp"), "per zone");
        k.learn("z", "https://mcp", false);
        assert!(!k.contains("z", "https://mcp"));
        for i in 0..=MAX {
            k.learn("z", &format!("r{i}"), true);
        }
        assert!(k.set.len() <= MAX, "bounded");
    }
}
