//! Background services: the revocation stream consumer, the revocation snapshot and the upstream
//! watch's sweeper.

pub mod revocation_snapshot;
pub mod revocation_stream;
pub mod upstream_watch;
