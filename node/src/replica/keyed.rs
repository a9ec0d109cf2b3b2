//! What the replica store and the hint store share: a striped async lock
//! per key for read-merge-write, and an engine read that leaves the runtime
//! only when it must touch disk.

use std::sync::Arc;

use ringkv_engine::{Cached, Db};
use tokio::sync::{Mutex, OwnedMutexGuard};

use super::store::StorageError;

/// `n` async locks; a key's lock is chosen by hash. Several keys are locked
/// in ascending stripe order, so no two lockers deadlock.
#[derive(Debug)]
pub(crate) struct KeyLocks {
    stripes: Vec<Arc<Mutex<()>>>,
}

impl KeyLocks {
    pub(crate) fn new(n: usize) -> KeyLocks {
        KeyLocks {
            stripes: (0..n.max(1)).map(|_| Arc::new(Mutex::new(()))).collect(),
        }
    }

    fn stripe_of(&self, key: &[u8]) -> usize {
        (xxhash_rust::xxh3::xxh3_64(key) % self.stripes.len() as u64) as usize
    }

    /// Holds `key`'s stripe until the guard drops (the guard may move to
    /// another task, as a commit does).
    pub(crate) async fn lock(&self, key: &[u8]) -> OwnedMutexGuard<()> {
        self.stripes[self.stripe_of(key)].clone().lock_owned().await
    }

    /// Holds the stripes of all `keys` (each once, in ascending order).
    pub(crate) async fn lock_all<'a>(
        &self,
        keys: impl Iterator<Item = &'a [u8]>,
    ) -> Vec<OwnedMutexGuard<()>> {
        let mut s: Vec<usize> = keys.map(|k| self.stripe_of(k)).collect();
        s.sort_unstable();
        s.dedup();
        let mut guards = Vec::with_capacity(s.len());
        for i in s {
            guards.push(self.stripes[i].clone().lock_owned().await);
        }
        guards
    }
}

/// The engine value of `key`: from memory on this task when it can be,
/// else from disk on the blocking pool.
pub(crate) async fn get(db: &Arc<Db>, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
    match db.get_cached(key)? {
        Cached::Value(v) => Ok(v),
        Cached::NeedsIo => {
            let (db, key) = (db.clone(), key.to_vec());
            tokio::task::spawn_blocking(move || db.get(&key))
                .await
                .map_err(|e| StorageError::Task(e.to_string()))?
                .map_err(StorageError::from)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keys_locked_together_exclude_a_single_key_lock() {
        let locks = Arc::new(KeyLocks::new(8));
        let keys: Vec<&[u8]> = vec![b"b", b"a", b"b", b"c"];
        let held = locks.lock_all(keys.into_iter()).await;
        assert!(held.len() <= 3, "each stripe once");
        let l = locks.clone();
        let mut waiter = tokio::spawn(async move { drop(l.lock(b"a").await) });
        tokio::select! {
            _ = &mut waiter => panic!("a key of a held batch was locked again"),
            _ = tokio::time::sleep(std::time::Duration::from_millis(50)) => {}
        }
        drop(held);
        waiter.await.unwrap();
    }
}
