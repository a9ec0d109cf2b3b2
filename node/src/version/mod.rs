//! Causal versioning: dotted version vector sets (siblings), the opaque client
//! context, a hybrid logical clock, and the stored record that combines them.

mod context;
mod dvv;
mod hlc;
mod record;

pub use context::{ContextError, VersionVector};
pub use dvv::{DvvSet, Entry};
pub use hlc::{Hlc, MARGIN_MS as HLC_MARGIN_MS};
pub use record::{LwwValue, Record, Value};

#[cfg(test)]
mod tests;
