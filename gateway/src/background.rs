//! Background services: the revocation stream consumer, the revocation snapshot, the upstream
//! watch's sweeper and the pool probes.

pub mod pool_probes;
pub mod revocation_snapshot;
pub mod revocation_stream;
pub mod upstream_watch;
