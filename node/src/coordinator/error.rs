//! Errors of request coordination. API layers map them to gRPC codes and
//! HTTP statuses; every variant says what was wrong.

use crate::replica::StorageError;
use crate::version::ContextError;

/// Bad client input: nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidInput {
    #[error("key must not be empty")]
    EmptyKey,
    #[error("key is {len} bytes; the limit is {max}")]
    KeyTooLong { len: usize, max: usize },
    #[error("value is {len} bytes; the limit is max_value_bytes = {max}")]
    ValueTooLarge { len: usize, max: usize },
    #[error("malformed version context: {0}")]
    Context(#[from] ContextError),
    #[error("invalid consistency level {value:?}: {reason}")]
    Consistency { value: String, reason: String },
    #[error("invalid ttl: {0}")]
    Ttl(String),
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CoordError {
    #[error(transparent)]
    Invalid(#[from] InvalidInput),
    #[error(
        "{op} quorum not reached: {got} of {required} required replicas answered in time ({replicas} replicas; {detail})"
    )]
    QuorumNotReached {
        op: &'static str,
        required: u32,
        got: u32,
        replicas: usize,
        detail: String,
    },
    #[error("no node could coordinate the write: {0}")]
    Unavailable(String),
    /// A forwarded write arrived after its sender's deadline: not applied.
    #[error("forwarded write arrived {late_ms} ms after its sender gave up on it; not applied")]
    Expired { late_ms: u64 },
    /// The replica a write was forwarded to refused it; passed through as is.
    #[error("{message}")]
    Remote { code: tonic::Code, message: String },
    #[error(transparent)]
    Storage(#[from] StorageError),
}
