//! Background services: the revocation stream consumer and the revocation snapshot.

pub mod revocation_snapshot;
pub mod revocation_stream;
