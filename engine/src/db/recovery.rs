//! Recovery on open: the tables and logs on disk back to a file set and a memtable.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::batch::{Group, decode_group, plausible_successor};
use crate::error::{Error, IoContext, Result};
use crate::memtable::Memtable;
use crate::options::Options;
use crate::record::read_log;
use crate::sst::table::{BuildOptions, FileMeta, TableBuilder};
use crate::version::{TableFile, table_name, wal_name};

use super::insert_ops;
use super::manifest_io::{ManifestState, read_manifest};

/// What recovery found.
pub(super) struct Recovered {
    pub(super) files: Vec<(usize, Arc<TableFile>)>,
    pub(super) next_file: u64,
    pub(super) last_seq: u64,
    pub(super) obsolete: Vec<PathBuf>,
    /// What the logs held that no table has, with the logs kept for it
    /// (its `wal_number` is the first of them): a restart writes no table,
    /// so it needs next to no free space.
    pub(super) unflushed: Option<Memtable>,
}

pub(crate) fn parse_number(name: &str, suffix: &str) -> Option<u64> {
    name.strip_suffix(suffix)?.parse().ok()
}

/// Write a memtable's newest versions as a level-0 table; `None` if empty.
pub(super) fn write_level0(
    dir: &Path,
    mem: &Memtable,
    number: u64,
    opts: &Options,
) -> Result<Option<FileMeta>> {
    let path = dir.join(table_name(number));
    let mut b = TableBuilder::create(
        &path,
        number,
        BuildOptions {
            block_bytes: opts.block_bytes,
            compression: opts.compression,
            bloom_bits_per_key: opts.bloom_bits_per_key,
        },
    )?;
    let res = mem.for_each_latest(|k, v| b.add(k, v));
    if let Err(e) = res {
        let _ = std::fs::remove_file(&path);
        return Err(e);
    }
    if b.entries() == 0 {
        drop(b);
        std::fs::remove_file(&path).ctx(&path)?;
        return Ok(None);
    }
    match b.finish() {
        Ok(m) => Ok(Some(m)),
        Err(e) => {
            let _ = std::fs::remove_file(&path);
            Err(e)
        }
    }
}

pub(super) fn recover(dir: &Path, opts: &Options) -> Result<Recovered> {
    let mut tables = Vec::new();
    let mut wals = Vec::new();
    let mut obsolete = Vec::new();
    let mut max_number = 0;
    for entry in std::fs::read_dir(dir).ctx(dir)? {
        let entry = entry.ctx(dir)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(n) = parse_number(&name, ".sst") {
            tables.push(n);
            max_number = max_number.max(n);
        } else if let Some(n) = parse_number(&name, ".log") {
            wals.push(n);
            max_number = max_number.max(n);
        } else if let Some(n) = name
            .strip_prefix("MANIFEST-")
            .and_then(|s| s.parse::<u64>().ok())
        {
            max_number = max_number.max(n);
            obsolete.push(entry.path());
        } else if name == "CURRENT.tmp" {
            obsolete.push(entry.path());
        }
    }
    let m = read_manifest(dir)?;
    if m.is_none() && (!tables.is_empty() || !wals.is_empty()) {
        return Err(Error::corruption(
            dir.join("CURRENT"),
            0,
            "CURRENT is missing but the directory holds tables or logs",
        ));
    }
    let ManifestState {
        metas,
        mut next_file,
        mut last_seq,
        log_number,
    } = m.unwrap_or_default();
    next_file = next_file.max(max_number + 1);
    let mut files = Vec::new();
    for (level, meta) in metas {
        let n = meta.number;
        if !tables.contains(&n) {
            return Err(Error::corruption(
                dir.join("CURRENT"),
                0,
                format!("table {} named by the manifest is missing", table_name(n)),
            ));
        }
        files.push((level, TableFile::open(dir, meta)?));
    }
    // Tables the manifest does not name are leftovers of interrupted work.
    for n in tables {
        if !files.iter().any(|(_, f)| f.meta.number == n) {
            obsolete.push(dir.join(table_name(n)));
        }
    }
    // Replay logs the manifest has not yet seen flushed, oldest first.
    wals.sort_unstable();
    let live: Vec<u64> = wals.iter().copied().filter(|&n| n >= log_number).collect();
    obsolete.extend(
        wals.iter()
            .filter(|&&n| n < log_number)
            .map(|&n| dir.join(wal_name(n))),
    );
    // Kept in memory (with its logs) up to what a running database may
    // hold in memtables; beyond that, written to level 0 as it is replayed.
    // A running database's memtables can hold more than that (each may
    // overshoot by one batch, and a recovered memtable is reused), so on a
    // full disk recovery keeps everything in memory rather than refuse to
    // open: the logs bound it, and a restart then needs no free space.
    let keep = opts.memtable_bytes * (1 + opts.max_immutable_memtables);
    let manifest_files = files.len();
    let (replayed, torn) = match replay(dir, opts, &live, Some(keep), &mut files, &mut next_file) {
        Err(e) if e.is_no_space() => {
            for (_, f) in files.drain(manifest_files..) {
                let _ = std::fs::remove_file(dir.join(table_name(f.meta.number)));
            }
            replay(dir, opts, &live, None, &mut files, &mut next_file)?
        }
        r => r?,
    };
    // The next log starts after the newest one's last complete record: cut
    // a torn tail off (which needs no space), or recovery would later see
    // damage in a log that is not the newest.
    if let Some((path, valid_end)) = torn {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .ctx(&path)?;
        f.set_len(valid_end).ctx(&path)?;
        f.sync_all().ctx(&path)?;
    }
    last_seq = last_seq.max(replayed.last_seq);
    let unflushed = match replayed.mem {
        Some(mem) if !mem.is_empty() => Some(mem),
        // Everything is in tables (or there was nothing): retire every log.
        _ => {
            obsolete.extend(live.iter().map(|&n| dir.join(wal_name(n))));
            None
        }
    };
    Ok(Recovered {
        files,
        next_file,
        last_seq,
        obsolete,
        unflushed,
    })
}

/// What one replay of the live logs left.
struct Replayed {
    last_seq: u64,
    /// `None` when all of it went to tables.
    mem: Option<Memtable>,
}

type Torn = Option<(PathBuf, u64)>;

/// Replays `live` into a memtable. With `flush_at`, a memtable that reaches
/// it is written to level 0 (pushed onto `files`), and then so is the rest,
/// since the logs can only be retired together.
fn replay(
    dir: &Path,
    opts: &Options,
    live: &[u64],
    flush_at: Option<usize>,
    files: &mut Vec<(usize, Arc<TableFile>)>,
    next_file: &mut u64,
) -> Result<(Replayed, Torn)> {
    let mut flush = |mem: &Memtable| -> Result<()> {
        let n = *next_file;
        *next_file += 1;
        if let Some(m) = write_level0(dir, mem, n, opts)? {
            files.push((0, TableFile::open(dir, m)?));
        }
        Ok(())
    };
    let mut last_seq = 0;
    let mut flushed_any = false;
    let mut mem = Memtable::new(live.first().copied().unwrap_or(0));
    let torn = replay_logs(dir, live, |g| {
        let count = insert_ops(&mem, g.first_seq, g.write_time, g.ops.into_iter());
        last_seq = last_seq.max(g.first_seq + count.saturating_sub(1));
        if flush_at.is_some_and(|at| mem.size() >= at) {
            flush(&mem)?;
            mem = Memtable::new(0);
            flushed_any = true;
        }
        Ok(())
    })?;
    let mem = if flushed_any {
        if !mem.is_empty() {
            flush(&mem)?;
        }
        None
    } else {
        Some(mem)
    };
    Ok((Replayed { last_seq, mem }, torn))
}

/// Reads the logs `live` (oldest first) and hands each of their write
/// groups to `apply`, in order. Logs are synced before a new one starts, so
/// only the newest may be torn: damage anywhere else is corruption. Returns
/// the newest log's path and valid length when it has a torn tail.
pub(crate) fn replay_logs(
    dir: &Path,
    live: &[u64],
    mut apply: impl FnMut(Group<'_>) -> Result<()>,
) -> Result<Option<(PathBuf, u64)>> {
    let mut torn = None;
    for (i, &n) in live.iter().enumerate() {
        let path = dir.join(wal_name(n));
        let contents = read_log(&path, plausible_successor)?;
        let damaged = (contents.valid_end as usize) < contents.data.len();
        if damaged && i + 1 < live.len() {
            return Err(Error::corruption(
                &path,
                contents.valid_end,
                "damaged record in a log that is not the newest",
            ));
        }
        for (off, payload) in contents.payloads() {
            let g = decode_group(payload)
                .ok_or_else(|| Error::corruption(&path, off, "undecodable log record"))?;
            apply(g)?;
        }
        if damaged {
            torn = Some((path, contents.valid_end));
        }
    }
    Ok(torn)
}
