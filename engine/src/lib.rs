//! ringkv-engine: the LSM storage engine of a ringkv node. It knows nothing of
//! clusters: keys and values are opaque bytes, keys ordered lexicographically.
//!
//! ```no_run
//! use ringkv_engine::{Db, Options, WriteBatch};
//! let db = Db::open("/tmp/example-db", Options::default())?;
//! db.put(b"k", b"v")?;
//! let mut batch = WriteBatch::new();
//! batch.put(b"a", b"1").delete(b"k");
//! db.write(batch)?; // atomic
//! assert_eq!(db.get(b"a")?, Some(b"1".to_vec()));
//! for item in db.scan(b"a".as_slice()..b"z".as_slice())? {
//!     let (key, value) = item?;
//!     println!("{key:?} = {value:?}");
//! }
//! db.close()?;
//! # Ok::<(), ringkv_engine::Error>(())
//! ```
//!
//! Inside: a write-ahead log with CRC32C records and group commit
//! ([`SyncPolicy`]), a sorted memtable, immutable SSTables (checksummed,
//! compressed blocks, an index block and a Bloom filter), a manifest that
//! changes the live file set atomically, background leveled compaction with
//! write back-pressure, and a block cache with a fixed budget. See
//! `engine/README.md` for the formats and the benchmark.

mod batch;
mod cache;
mod checkpoint;
mod coding;
mod compaction;
mod db;
mod entry;
mod error;
mod iter;
mod manifest;
mod memtable;
mod options;
mod readonly;
mod record;
mod space;
mod sst;
mod version;
mod write;

pub mod fuzzing;

pub use batch::{MAX_KEY_BYTES, MAX_VALUE_BYTES, WriteBatch};
pub use checkpoint::{Checkpoint, CheckpointFile};
pub use db::{Cached, Db, Scan, Stats};
pub use error::{Error, Result};
pub use options::{Clock, Compression, ManualClock, Options, SyncPolicy, SystemClock};
pub use readonly::ReadOnlyDb;
pub use write::Commit;
