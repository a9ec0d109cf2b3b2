//! The internode transport: a pooled gRPC client per peer, with a fault
//! injector consulted before (and after) every call, so tests can drop, delay
//! or partition traffic between chosen nodes.

mod breaker;
mod client;
mod coalesce;
mod faults;

pub use client::{InternodeClient, TransportError};
pub use faults::{CallKind, Fault, FaultInjector};
