//! W3C trace context (`traceparent`): read only to join logs and traces, never for a decision.

/// W3C trace context: `00-<32 hex>-<16 hex>-<2 hex>`, ids not all zero, version not `ff`; a later
/// version may append fields.
pub fn valid_traceparent(t: &str) -> bool {
    let parts: Vec<&str> = t.split('-').collect();
    if parts.len() < 4 {
        return false;
    }
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let (version, trace, parent, flags) = (parts[0], parts[1], parts[2], parts[3]);
    hex(version, 2)
        && version != "ff"
        && (version != "00" || parts.len() == 4)
        && hex(trace, 32)
        && trace.bytes().any(|b| b != b'0')
        && hex(parent, 16)
        && parent.bytes().any(|b| b != b'0')
        && hex(flags, 2)
}

/// The fields of a valid `traceparent`, as the lowercase hex it carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceParent<'a> {
    pub trace_id: &'a str,
    pub parent_id: &'a str,
    pub flags: &'a str,
}

impl<'a> TraceParent<'a> {
    /// Reads a valid `traceparent` (the fields of a later version are at the same places).
    pub fn parse(t: &'a str) -> Option<Self> {
        valid_traceparent(t).then(|| Self { trace_id: &t[3..35], parent_id: &t[36..52], flags: &t[53..55] })
    }

    /// The W3C sampled flag.
    pub fn sampled(&self) -> bool {
        u8::from_str_radix(self.flags, 16).is_ok_and(|f| f & 1 == 1)
    }
}

/// The trace id of a valid `traceparent`.
pub fn trace_id(traceparent: &str) -> Option<&str> {
    TraceParent::parse(traceparent).map(|t| t.trace_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_table() {
        assert_eq!(trace_id("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        assert_eq!(trace_id("00-bad"), None);
        assert!(valid_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
        assert!(valid_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra"));
        for bad in [
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        ] {
            assert!(!valid_traceparent(bad), "{bad}");
        }
    }
}
