//! Request ids: an inbound `X-Request-Id` is kept only if it is safe to log and echo.

/// Header name.
pub const HEADER: &str = "x-request-id";

/// Whether an inbound request id may be reused: 1..=128 chars of `[A-Za-z0-9_.:-]`.
pub fn is_acceptable(id: &str) -> bool {
    crate::mandate::is_valid_id(id)
}

/// The inbound id if acceptable, else a new UUIDv7.
pub fn from_inbound(inbound: Option<&str>) -> String {
    match inbound {
        Some(id) if is_acceptable(id) => id.to_owned(),
        _ => uuid::Uuid::now_v7().to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn keeps_safe_ids_and_replaces_others() {
        assert_eq!(super::from_inbound(Some("req-1")), "req-1");
        for bad in ["", "a b", "x\ny", "<script>", &"a".repeat(129)] {
            let id = super::from_inbound(Some(bad));
            assert_ne!(id, bad);
            assert_eq!(id.len(), 36);
        }
    }
}
