//! Entry points for fuzzing the decoders that read bytes from disk (used by
//! `engine/fuzz` and by the decoder property tests). Each takes arbitrary
//! bytes and must never panic, hang or allocate without bound.

use std::path::Path;
use std::sync::Arc;

use crate::cache::BlockCache;
use crate::sst::bloom;
use crate::sst::table::{Table, TableIter};

/// Open `bytes` as an SSTable and read all of it: a scan, then point reads
/// of every key the scan returned. Returns how many entries were read, or
/// the error.
pub fn sstable(bytes: &[u8]) -> crate::Result<usize> {
    let path = Path::new("fuzz.sst");
    let table = Arc::new(Table::from_bytes(path, 1, bytes.to_vec())?);
    let cache = Arc::new(BlockCache::new(1 << 20));
    let mut it = TableIter::new(Arc::clone(&table), Arc::clone(&cache), true);
    it.seek_to_first()?;
    let mut keys = Vec::new();
    while it.valid() && keys.len() < 100_000 {
        keys.push(it.key().to_vec());
        it.next()?;
    }
    for k in &keys {
        table.get(&cache, k, bloom::hash(k), false, |_| ())?;
        table.get(&cache, k, bloom::hash(k), true, |_| ())?;
    }
    it.seek(b"m")?;
    Ok(keys.len())
}

/// Parse `bytes` as a write-ahead log and decode every record. Returns the
/// number of operations recovered, or the error.
pub fn wal(bytes: &[u8]) -> crate::Result<usize> {
    let contents = crate::record::parse_log(
        Path::new("fuzz.log"),
        bytes.to_vec(),
        crate::batch::plausible_successor,
    )?;
    let mut ops = 0;
    for (off, p) in contents.payloads() {
        let g = crate::batch::decode_group(p)
            .ok_or_else(|| crate::Error::corruption("fuzz.log", off, "undecodable log record"))?;
        ops += g.ops.len();
    }
    Ok(ops)
}

/// Parse `bytes` as a manifest and decode every edit.
pub fn manifest(bytes: &[u8]) -> crate::Result<usize> {
    let contents = crate::record::parse_log(Path::new("MANIFEST"), bytes.to_vec(), |p, _| {
        crate::manifest::VersionEdit::decode(p).is_some()
    })?;
    let mut n = 0;
    for (off, p) in contents.payloads() {
        crate::manifest::VersionEdit::decode(p).ok_or_else(|| {
            crate::Error::corruption("MANIFEST", off, "undecodable manifest edit")
        })?;
        n += 1;
    }
    Ok(n)
}
