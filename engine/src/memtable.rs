//! The sorted in-memory table. Every write is a new version `(user key, seq)`;
//! readers ask for the newest version at or below their snapshot sequence, so
//! a reader never sees half of a batch and scans see a consistent snapshot
//! while writes continue.
//!
//! Versions are ordered by user key ascending, then sequence descending. The
//! map key is `user_key ++ (u64::MAX - seq)` (big-endian), compared with that
//! split in mind — plain byte order would interleave keys that are prefixes of
//! each other.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::ops::Bound;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};

use parking_lot::RwLock;

use crate::entry::Entry;

const TRAILER: usize = 8;
/// Rough per-version bookkeeping cost (tree node share, two boxes).
const ENTRY_OVERHEAD: usize = 48;

/// A borrowed internal key: `user_key ++ trailer`.
#[repr(transparent)]
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct IKey([u8]);

impl IKey {
    fn new(b: &[u8]) -> &IKey {
        debug_assert!(b.len() >= TRAILER);
        // SAFETY: IKey is repr(transparent) over [u8].
        unsafe { &*(b as *const [u8] as *const IKey) }
    }
    fn user(&self) -> &[u8] {
        &self.0[..self.0.len() - TRAILER]
    }
    /// `u64::MAX - seq`: ascending trailer order is descending sequence.
    fn trailer(&self) -> u64 {
        let t: [u8; 8] = self.0[self.0.len() - TRAILER..]
            .try_into()
            .unwrap_or([0; 8]);
        u64::from_be_bytes(t)
    }

    fn seq(&self) -> u64 {
        let t: [u8; 8] = self.0[self.0.len() - TRAILER..]
            .try_into()
            .unwrap_or([0; 8]);
        u64::MAX - u64::from_be_bytes(t)
    }
}

impl Ord for IKey {
    fn cmp(&self, other: &Self) -> Ordering {
        let (a, b) = (self.user(), other.user());
        // Fast path: most keys differ in their first 8 bytes, and one integer
        // comparison is much cheaper than a memcmp call.
        if let (Some(pa), Some(pb)) = (a.first_chunk::<8>(), b.first_chunk::<8>()) {
            let (x, y) = (u64::from_be_bytes(*pa), u64::from_be_bytes(*pb));
            if x != y {
                return x.cmp(&y);
            }
        }
        a.cmp(b).then_with(|| self.trailer().cmp(&other.trailer()))
    }
}

impl PartialOrd for IKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// One version in one allocation: `user_key ++ trailer ++ encoded entry`.
/// Ordered (and compared) by the internal-key part only.
#[derive(Debug)]
struct MemKey {
    buf: Box<[u8]>,
    klen: u32,
}

impl MemKey {
    fn ikey(&self) -> &IKey {
        IKey::new(&self.buf[..self.klen as usize])
    }
    fn entry(&self) -> &[u8] {
        &self.buf[self.klen as usize..]
    }
}

impl Borrow<IKey> for MemKey {
    fn borrow(&self) -> &IKey {
        self.ikey()
    }
}

impl Ord for MemKey {
    fn cmp(&self, other: &Self) -> Ordering {
        self.ikey().cmp(other.ikey())
    }
}

impl PartialOrd for MemKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for MemKey {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for MemKey {}

fn internal_key(buf: &mut Vec<u8>, user: &[u8], seq: u64) {
    buf.clear();
    buf.extend_from_slice(user);
    buf.extend_from_slice(&(u64::MAX - seq).to_be_bytes());
}

#[derive(Debug)]
pub(crate) struct Memtable {
    map: RwLock<BTreeSet<MemKey>>,
    size: AtomicUsize,
    /// The write-ahead log file that holds this memtable's writes.
    pub(crate) wal_number: u64,
}

impl Memtable {
    pub(crate) fn new(wal_number: u64) -> Memtable {
        Memtable {
            map: RwLock::new(BTreeSet::new()),
            size: AtomicUsize::new(0),
            wal_number,
        }
    }

    /// Approximate memory used.
    pub(crate) fn size(&self) -> usize {
        self.size.load(AtomicOrdering::Relaxed)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.map.read().is_empty()
    }

    /// Insert versions: `(user key, seq, entry)`.
    pub(crate) fn insert<'a>(&self, versions: impl Iterator<Item = (&'a [u8], u64, Entry<'a>)>) {
        let mut added = 0;
        let mut map = self.map.write();
        for (key, seq, entry) in versions {
            let klen = key.len() + TRAILER;
            let mut buf = Vec::with_capacity(klen + entry.encoded_len());
            buf.extend_from_slice(key);
            buf.extend_from_slice(&(u64::MAX - seq).to_be_bytes());
            entry.encode_into(&mut buf);
            added += buf.len() + ENTRY_OVERHEAD;
            map.insert(MemKey {
                buf: buf.into_boxed_slice(),
                klen: klen as u32,
            });
        }
        drop(map);
        self.size.fetch_add(added, AtomicOrdering::Relaxed);
    }

    /// The newest version of `key` at or below `seq`, as an encoded entry.
    pub(crate) fn get<R>(
        &self,
        key: &[u8],
        seq: u64,
        buf: &mut Vec<u8>,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Option<R> {
        internal_key(buf, key, seq);
        let map = self.map.read();
        let k = map
            .range::<IKey, _>((Bound::Included(IKey::new(buf)), Bound::Unbounded))
            .next()?;
        (k.ikey().user() == key).then(|| f(k.entry()))
    }

    /// The first user key in `from` (inclusive or exclusive) with a version at
    /// or below `seq`: `(key, encoded newest visible entry)`.
    pub(crate) fn seek(&self, from: Bound<&[u8]>, seq: u64) -> Option<(Vec<u8>, Vec<u8>)> {
        let mut buf = Vec::new();
        let start = match from {
            // The newest possible version of `k` comes first.
            Bound::Included(k) => {
                internal_key(&mut buf, k, u64::MAX);
                Bound::Included(IKey::new(&buf))
            }
            // Past the oldest possible version (seq 0 is never used) of `k`.
            Bound::Excluded(k) => {
                internal_key(&mut buf, k, 0);
                Bound::Excluded(IKey::new(&buf))
            }
            Bound::Unbounded => Bound::Unbounded,
        };
        let map = self.map.read();
        map.range::<IKey, _>((start, Bound::Unbounded))
            .find(|k| k.ikey().seq() <= seq)
            .map(|k| (k.ikey().user().to_vec(), k.entry().to_vec()))
    }

    /// Visit the newest version of every key, in key order (for flush; the
    /// memtable is immutable by then).
    pub(crate) fn for_each_latest(
        &self,
        mut f: impl FnMut(&[u8], &[u8]) -> crate::Result<()>,
    ) -> crate::Result<()> {
        let map = self.map.read();
        let mut last: Option<&[u8]> = None;
        for k in map.iter() {
            let user = k.ikey().user();
            if last == Some(user) {
                continue;
            }
            last = Some(user);
            f(user, k.entry())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ins(m: &Memtable, key: &[u8], seq: u64, v: &[u8]) {
        m.insert(std::iter::once((
            key,
            seq,
            Entry::Put {
                value: v,
                expires_at: 0,
            },
        )));
    }
    fn val(e: &[u8]) -> Vec<u8> {
        Entry::decode(e)
            .and_then(|e| e.live_value(0))
            .unwrap()
            .to_vec()
    }

    #[test]
    fn snapshot_reads_pick_newest_visible_version() {
        let m = Memtable::new(1);
        ins(&m, b"a", 1, b"a1");
        ins(&m, b"a", 3, b"a3");
        ins(&m, b"ab", 2, b"ab2");
        let mut buf = Vec::new();
        assert_eq!(m.get(b"a", 5, &mut buf, val), Some(b"a3".to_vec()));
        assert_eq!(m.get(b"a", 2, &mut buf, val), Some(b"a1".to_vec()));
        assert_eq!(m.get(b"a", 0, &mut buf, val), None);
        assert_eq!(m.get(b"b", 9, &mut buf, val), None);
        // Prefix keys stay ordered by user key.
        assert_eq!(
            m.seek(Bound::Excluded(b"a"), 9).map(|(k, e)| (k, val(&e))),
            Some((b"ab".to_vec(), b"ab2".to_vec()))
        );
        assert_eq!(
            m.seek(Bound::Included(b"a"), 2).map(|(k, e)| (k, val(&e))),
            Some((b"a".to_vec(), b"a1".to_vec()))
        );
        assert_eq!(m.seek(Bound::Excluded(b"a"), 1), None);
        let mut seen = Vec::new();
        m.for_each_latest(|k, v| {
            seen.push((k.to_vec(), val(v)));
            Ok(())
        })
        .unwrap();
        assert_eq!(
            seen,
            vec![
                (b"a".to_vec(), b"a3".to_vec()),
                (b"ab".to_vec(), b"ab2".to_vec())
            ]
        );
    }
}
