//! A database opened for reading only: a checkpoint, a backup being
//! restored, or the directory of a stopped node. Nothing in the directory is
//! written, created or deleted (no lock file, no new log or manifest, no
//! background threads); logs the manifest has not seen flushed are replayed
//! into memory. Do not open a directory a live [`crate::Db`] is writing:
//! what it sees there is undefined.

use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::cache::BlockCache;
use crate::db::{Cached, Scan, insert_ops, lookup_in, parse_number, read_manifest, replay_logs};
use crate::error::{Error, IoContext, Result};
use crate::manifest::VersionEdit;
use crate::memtable::Memtable;
use crate::options::Options;
use crate::version::{SuperVersion, TableFile, Version, table_name};

/// A read-only database. `Send + Sync`.
#[derive(Debug)]
pub struct ReadOnlyDb {
    dir: PathBuf,
    sv: Arc<SuperVersion>,
    seq: u64,
    cache: Arc<BlockCache>,
    opts: Options,
}

impl ReadOnlyDb {
    /// Opens the database in `path` without changing anything there.
    /// `opts` gives the block cache size and the clock expiry is judged by;
    /// its other fields do not matter.
    pub fn open(path: impl AsRef<Path>, opts: Options) -> Result<ReadOnlyDb> {
        let dir = path.as_ref().to_path_buf();
        let manifest = read_manifest(&dir)?.ok_or_else(|| {
            Error::InvalidArgument(format!("no database at {} (no CURRENT)", dir.display()))
        })?;
        let mut tables = Vec::new();
        let mut wals = Vec::new();
        for entry in std::fs::read_dir(&dir).ctx(&dir)? {
            let name = entry.ctx(&dir)?.file_name().to_string_lossy().into_owned();
            if let Some(n) = parse_number(&name, ".sst") {
                tables.push(n);
            } else if let Some(n) = parse_number(&name, ".log") {
                wals.push(n);
            }
        }
        let mut opened = Vec::new();
        for (_, meta) in &manifest.metas {
            if !tables.contains(&meta.number) {
                return Err(Error::corruption(
                    dir.join("CURRENT"),
                    0,
                    format!(
                        "table {} named by the manifest is missing",
                        table_name(meta.number)
                    ),
                ));
            }
            opened.push(TableFile::open(&dir, meta.clone())?);
        }
        let version = Version::default().apply(
            &VersionEdit {
                added: manifest.metas.clone(),
                ..Default::default()
            },
            &opened,
        );
        let mem = Memtable::new(0);
        let mut last_seq = manifest.last_seq;
        wals.sort_unstable();
        let live: Vec<u64> = wals
            .into_iter()
            .filter(|&n| n >= manifest.log_number)
            .collect();
        // A torn tail is left as it is: a read-only open writes nothing.
        replay_logs(&dir, &live, |g| {
            let count = insert_ops(&mem, g.first_seq, g.write_time, g.ops.into_iter());
            last_seq = last_seq.max(g.first_seq + count.saturating_sub(1));
            Ok(())
        })?;
        Ok(ReadOnlyDb {
            cache: Arc::new(BlockCache::new(opts.block_cache_bytes)),
            sv: Arc::new(SuperVersion {
                mem: Arc::new(mem),
                imm: Vec::new(),
                version: Arc::new(version),
            }),
            seq: last_seq,
            dir,
            opts,
        })
    }

    /// The directory this database lives in.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Sequence number of the newest write it holds.
    pub fn last_sequence(&self) -> u64 {
        self.seq
    }

    /// The value of `key`, if it has a live one.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let now = self.opts.clock.now_unix_ms();
        match lookup_in(&self.sv, self.seq, &self.cache, &self.dir, now, key, true)? {
            Cached::Value(v) => Ok(v),
            Cached::NeedsIo => unreachable!("a lookup with I/O allowed never asks for it"),
        }
    }

    /// Ordered scan of `range`.
    pub fn scan<K: AsRef<[u8]>, R: RangeBounds<K>>(&self, range: R) -> Result<Scan> {
        Scan::new(
            Arc::clone(&self.sv),
            self.seq,
            &self.cache,
            &self.dir,
            self.opts.clock.now_unix_ms(),
            range,
        )
    }

    /// Scan of every key.
    pub fn iter(&self) -> Result<Scan> {
        self.scan::<&[u8], _>(..)
    }

    /// Number of tables and their bytes.
    pub fn table_files(&self) -> (usize, u64) {
        self.sv
            .version
            .files()
            .fold((0, 0), |(n, b), (_, f)| (n + 1, b + f.meta.size))
    }
}
