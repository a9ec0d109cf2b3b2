//! The replica layer: the one place where this node applies a record to its
//! own data (merge + hybrid-clock observe), reads it, or parks it as a hint
//! for another node, and where held hints are handed back ([`handoff`]).
//!
//! The coordinator, repair and the internode API all go through a
//! [`Replica`]; none of them touches the store or the hint store directly,
//! so what "applying a record" means (validation, clocks, metrics) is
//! decided here once.

pub mod handoff;
pub mod hints;
mod keyed;
pub mod store;
pub mod writer;

use std::sync::Arc;

use bytes::Bytes;

pub use hints::{Hint, HintStore};
pub use store::{Commit, StorageError, Store, engine_key};

use crate::metrics::Metrics;
use crate::version::{Hlc, Record};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// This node as a replica: its records, the hints it keeps for others, and
/// its hybrid logical clock (LWW mode).
#[derive(Debug)]
pub struct Replica {
    me: String,
    /// The id this node mints dots under (see `writer`).
    writer: String,
    store: Store,
    hints: HintStore,
    hlc: Hlc,
    /// LWW records whose clock is further ahead of ours are refused.
    max_clock_skew: std::time::Duration,
    metrics: Arc<Metrics>,
}

/// `max_clock_skew` unless configured (see `Replica::with_clock`).
pub const DEFAULT_MAX_CLOCK_SKEW: std::time::Duration = std::time::Duration::from_secs(5);

impl Replica {
    pub fn new(
        me: &str,
        writer: &str,
        store: Store,
        hints: HintStore,
        metrics: Arc<Metrics>,
    ) -> Replica {
        store.set_writer(writer);
        Replica {
            me: me.to_string(),
            writer: writer.to_string(),
            store,
            hints,
            hlc: Hlc::new(),
            max_clock_skew: DEFAULT_MAX_CLOCK_SKEW,
            metrics,
        }
    }

    /// Uses `hlc` as this replica's clock (a persistent one in LWW mode),
    /// and refuses LWW records more than `max_clock_skew` ahead of its wall
    /// clock.
    pub fn with_clock(mut self, hlc: Hlc, max_clock_skew: std::time::Duration) -> Replica {
        self.hlc = hlc;
        self.max_clock_skew = max_clock_skew;
        self
    }

    pub fn node_id(&self) -> &str {
        &self.me
    }

    /// The id this node mints causal dots under: its node id, or
    /// `node_id~epoch` after an unclean stop (see [`writer`]).
    pub fn writer_id(&self) -> &str {
        &self.writer
    }

    /// The record store (repair scans it; flush and close go through it).
    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn hints(&self) -> &HintStore {
        &self.hints
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn hlc(&self) -> &Hlc {
        &self.hlc
    }

    /// This replica's record of `key`, merged with what it holds of the key
    /// as hints for other nodes: a substitute answers a sloppy read with
    /// the writes it took in a home replica's place.
    pub async fn read(&self, key: &[u8]) -> Result<Option<Record>, StorageError> {
        let own = self.store.read(key).await?;
        Ok(match self.hints.lookup(key).await? {
            None => own,
            Some(h) => Some(match own {
                Some(o) => o.merge(&h),
                None => h,
            }),
        })
    }

    /// Merges a record from a coordinator, a peer or a hint into this
    /// replica (the version sync); returns the merged record.
    pub async fn apply(&self, key: &[u8], rec: Record) -> Result<Record, StorageError> {
        self.observe(&rec, false).await?;
        self.store.merge(key, rec).await
    }

    /// `apply` for many records in one engine batch; returns bytes merged.
    pub async fn apply_batch(&self, items: Vec<(Bytes, Record)>) -> Result<u64, StorageError> {
        for (_, rec) in &items {
            self.admit(rec)?;
        }
        // The newest clock covers them all.
        if let Some(newest) = items.iter().max_by_key(|(_, r)| lww_clock(r)) {
            self.observe(&newest.1, false).await?;
        }
        self.store.merge_batch(items).await
    }

    /// Replaces this replica's record of `key` with `f(current)` atomically
    /// (a coordinator minting a dot against what this replica holds), and
    /// returns it once appended, with the commit to await for durability.
    pub async fn update_then(
        &self,
        key: &[u8],
        f: impl FnOnce(Option<Record>) -> Record,
    ) -> Result<(Record, Commit), StorageError> {
        self.store.update_then(key, f).await
    }

    /// `apply` in two halves, like `update_then`, for a record this node
    /// just minted (its clock may run ahead of its own wall clock after a
    /// restart with the clock set back; peers judge that skew, not us).
    pub async fn apply_then(
        &self,
        key: &[u8],
        rec: Record,
    ) -> Result<(Record, Commit), StorageError> {
        self.observe(&rec, true).await?;
        self.store
            .update_then(key, move |cur| match cur {
                Some(c) => c.merge(&rec),
                None => rec,
            })
            .await
    }

    /// Keeps `rec` as a durable hint for `owner` (a write this node took as
    /// a substitute, or one `owner` did not acknowledge).
    pub async fn keep_hint(
        &self,
        owner: &str,
        key: &[u8],
        rec: &Record,
    ) -> Result<(), StorageError> {
        self.admit(rec)?;
        self.hints.store(owner, key, rec, now_ms()).await?;
        self.metrics.hints_stored.inc();
        Ok(())
    }

    /// Refuses an LWW record whose clock is more than `max_clock_skew`
    /// ahead of this node's wall clock (as CockroachDB refuses timestamps
    /// past its max offset): accepted, it would win over every write for
    /// that long and drag this node's clock along.
    pub fn admit(&self, rec: &Record) -> Result<(), StorageError> {
        let Some(ts) = lww_clock(rec) else {
            return Ok(());
        };
        let wall = self.hlc.wall_ms();
        let ahead = Hlc::millis(ts).saturating_sub(wall);
        if ahead > self.max_clock_skew.as_millis() as u64 {
            self.metrics.clock_skew_refused.inc();
            return Err(StorageError::ClockSkew {
                ahead_ms: ahead,
                max: self.max_clock_skew,
            });
        }
        Ok(())
    }

    /// Moves this node's clock past an LWW write's, so later local writes
    /// win over it, and makes sure a restart cannot reuse its timestamp
    /// (`Hlc::cover`). `own`: minted here, so not judged for skew.
    async fn observe(&self, rec: &Record, own: bool) -> Result<(), StorageError> {
        let Some(ts) = lww_clock(rec) else {
            return Ok(());
        };
        if !own {
            self.admit(rec)?;
        }
        self.hlc.observe(ts);
        self.hlc.cover(ts).await.map_err(StorageError::Clock)
    }
}

fn lww_clock(rec: &Record) -> Option<u64> {
    match rec {
        Record::Lww(l) => Some(l.hlc),
        Record::Causal(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SyncMode;
    use crate::version::{LwwValue, Value};
    use std::time::Duration;

    fn lww(hlc: u64) -> Record {
        Record::Lww(LwwValue {
            hlc,
            writer: "peer".into(),
            value: Value {
                data: Some(Bytes::from_static(b"v")),
                expires_at_ms: 0,
                written_at_ms: 1,
            },
        })
    }

    /// Issue 10 item 8: records applied in a batch (repair pulls, range
    /// streams, hint hand-off) move the hybrid clock like single writes do,
    /// so this node's next LWW write wins over them.
    #[tokio::test]
    async fn a_batch_of_lww_records_moves_the_clock_past_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(
            &dir.path().join("d"),
            SyncMode::Never,
            Duration::from_secs(60),
        )
        .unwrap();
        let hints = HintStore::open(&dir.path().join("h"), SyncMode::Never).unwrap();
        let r = Replica::new("me", "me", store, hints, Arc::new(Metrics::new()));
        // Two seconds ahead of this node's clock (within max_clock_skew).
        let ahead = (now_ms() + 2_000) << 16;
        r.apply_batch(vec![
            (Bytes::from_static(b"a"), lww(ahead - 5)),
            (Bytes::from_static(b"b"), lww(ahead)),
        ])
        .await
        .unwrap();
        assert!(r.hlc().now() > ahead, "the next local write would lose");
        // One too far ahead is refused, and nothing of its batch applied.
        let far = (now_ms() + 60_000) << 16;
        let e = r
            .apply_batch(vec![(Bytes::from_static(b"c"), lww(far))])
            .await
            .unwrap_err();
        assert!(matches!(e, StorageError::ClockSkew { .. }), "{e}");
        assert!(r.read(b"c").await.unwrap().is_none());
    }
}
