//! Background services: the revocation stream consumer, the revocation snapshot, the upstream
//! watch's sweeper, the pool probes and the STS readiness watch.

pub mod pool_probes;
pub mod revocation_snapshot;
pub mod revocation_stream;
pub mod sts_readiness;
pub mod upstream_watch;
