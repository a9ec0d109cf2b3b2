//! Causal versioning: dotted version vector sets (siblings), the opaque client
//! context, a hybrid logical clock, and the stored record that combines them.

mod context;
mod dvv;
mod hlc;
mod prune;
mod record;

pub use context::{ContextError, MAX_CONTEXT_ENTRIES, MAX_COUNTER, VersionVector, counter_ceiling};
pub use dvv::{DvvSet, Entry, MAX_WRITERS};
pub use hlc::{Hlc, MARGIN_MS as HLC_MARGIN_MS};
pub use record::{LwwValue, MAX_RECORD_WRITERS, Record, RecordDecodeError, Value};

#[cfg(test)]
mod tests;
