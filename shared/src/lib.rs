//! Types and codecs that both sides of Caracal share.
//!
//! The gateway and the control plane agree on these formats byte for byte: mandate claims and their
//! ES256 compact serialization, JWKS documents, the `_sig` of stream messages, the HMAC that signs a
//! gateway→STS exchange, the wire error body, and the way configuration is read from the
//! environment. Two pieces do I/O because every service needs them identically: the Redis
//! [`stream_consumer`] and the [`revocation`] view it feeds.

pub mod audit;
pub mod b64;
pub mod config_env;
pub mod error_code;
pub mod exchange;
pub mod health_probe;
pub mod jwks;
pub mod jws;
pub mod mandate;
pub mod mcp;
pub mod otel;
pub mod pool;
pub mod postgres_url;
pub mod redis_primary;
pub mod redis_target;
pub mod request_id;
pub mod revocation;
pub mod sig;
pub mod stream_consumer;
pub mod streams;
pub mod trace_context;
pub mod zone_context;

pub use error_code::{ErrorCode, WireError};
pub use mandate::{Claims, SubType, Use};
