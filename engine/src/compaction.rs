//! Leveled compaction: choosing what to compact and merging it.
//!
//! Level 0 is compacted (all of it, with the overlapping part of L1) when it
//! holds `l0_compaction_trigger` tables; level n ≥ 1 when its size exceeds
//! `l1_target_bytes * level_multiplier^(n-1)`, one table at a time in
//! round-robin key order, merged with the tables it overlaps in level n+1.
//!
//! While merging, only the newest version of each key survives. An entry that
//! is *dead* — a tombstone older than the grace period, or an expired put — is
//! dropped only when no level below the output can still hold an older version
//! of the key (otherwise dropping it would resurrect that version). A tombstone
//! inside its grace period is always kept.

use std::path::Path;
use std::sync::Arc;

use crate::cache::BlockCache;
use crate::entry::Entry;
use crate::error::{Error, Result};
use crate::iter::{LevelSource, Merge, Source};
use crate::manifest::VersionEdit;
use crate::options::Options;
use crate::sst::table::{BuildOptions, FileMeta, TableBuilder, TableIter};
use crate::version::{NUM_LEVELS, TableFile, Version, table_name};

#[derive(Debug)]
pub(crate) struct Compaction {
    pub output_level: usize,
    /// Input tables with their levels, newest data first (L0 newest first,
    /// then shallower levels before deeper ones).
    pub inputs: Vec<(usize, Arc<TableFile>)>,
    /// Move a single table down a level without rewriting it.
    pub trivial_move: bool,
}

fn level_target(opts: &Options, level: usize) -> u64 {
    let mut t = opts.l1_target_bytes;
    for _ in 1..level {
        t = t.saturating_mul(opts.level_multiplier);
    }
    t
}

/// Score of each level (≥ 1 means it needs compaction).
fn scores(v: &Version, opts: &Options) -> Vec<(usize, f64)> {
    let mut s = vec![(
        0,
        v.levels[0].len() as f64 / opts.l0_compaction_trigger as f64,
    )];
    for l in 1..NUM_LEVELS - 1 {
        s.push((l, v.level_bytes(l) as f64 / level_target(opts, l) as f64));
    }
    s
}

/// Total bytes above target across levels (reported as compaction backlog).
pub(crate) fn pending_bytes(v: &Version, opts: &Options) -> u64 {
    (1..NUM_LEVELS - 1)
        .map(|l| v.level_bytes(l).saturating_sub(level_target(opts, l)))
        .sum()
}

/// The most urgent compaction, if any level needs one. `pointers[l]` is the
/// largest key compacted last time from level l (round-robin).
pub(crate) fn pick(
    v: &Version,
    opts: &Options,
    pointers: &[Vec<u8>; NUM_LEVELS],
) -> Option<Compaction> {
    let (level, score) = scores(v, opts)
        .into_iter()
        .max_by(|a, b| a.1.total_cmp(&b.1))?;
    if score < 1.0 {
        return None;
    }
    let mut inputs: Vec<(usize, Arc<TableFile>)> = if level == 0 {
        v.levels[0].iter().map(|f| (0, Arc::clone(f))).collect()
    } else {
        let files = &v.levels[level];
        let f = files
            .iter()
            .find(|f| f.meta.smallest > pointers[level])
            .or_else(|| files.first())?;
        vec![(level, Arc::clone(f))]
    };
    let lo = inputs
        .iter()
        .map(|(_, f)| f.meta.smallest.as_slice())
        .min()?
        .to_vec();
    let hi = inputs
        .iter()
        .map(|(_, f)| f.meta.largest.as_slice())
        .max()?
        .to_vec();
    let below = v.overlapping(level + 1, &lo, &hi);
    let trivial_move = level > 0 && below.is_empty();
    inputs.extend(below.into_iter().map(|f| (level + 1, f)));
    Some(Compaction {
        output_level: level + 1,
        inputs,
        trivial_move,
    })
}

/// Everything, into the deepest populated level (at least L1).
pub(crate) fn full(v: &Version) -> Option<Compaction> {
    let deepest = v.deepest_level()?;
    let inputs: Vec<_> = v.files().map(|(l, f)| (l, Arc::clone(f))).collect();
    Some(Compaction {
        output_level: deepest.max(1),
        inputs,
        trivial_move: false,
    })
}

/// Does any table deeper than `level` possibly hold `key`? Keys arrive in
/// order, so a cursor per level only moves forward.
struct Deeper {
    levels: Vec<Vec<Arc<TableFile>>>,
    pos: Vec<usize>,
}

impl Deeper {
    fn new(v: &Version, level: usize) -> Deeper {
        let levels: Vec<_> = v.levels[level + 1..].to_vec();
        let pos = vec![0; levels.len()];
        Deeper { levels, pos }
    }

    fn may_hold(&mut self, key: &[u8]) -> bool {
        for (files, pos) in self.levels.iter().zip(self.pos.iter_mut()) {
            while *pos < files.len() && files[*pos].meta.largest.as_slice() < key {
                *pos += 1;
            }
            if files
                .get(*pos)
                .is_some_and(|f| f.meta.smallest.as_slice() <= key)
            {
                return true;
            }
        }
        false
    }
}

pub(crate) struct Outcome {
    pub edit: VersionEdit,
    pub outputs: Vec<Arc<TableFile>>,
    pub bytes_written: u64,
    pub bytes_read: u64,
}

/// Run a compaction against `version` (the version it was picked from, or a
/// newer one — only L0 may have grown since, with newer data). `new_file`
/// allocates file numbers.
pub(crate) fn run(
    c: &Compaction,
    version: &Version,
    dir: &Path,
    opts: &Options,
    cache: &Arc<BlockCache>,
    mut new_file: impl FnMut() -> u64,
) -> Result<Outcome> {
    let mut edit = VersionEdit::default();
    for (l, f) in &c.inputs {
        edit.deleted.push((*l, f.meta.number));
    }
    if c.trivial_move {
        let f = &c.inputs[0].1;
        edit.added.push((c.output_level, f.meta.clone()));
        return Ok(Outcome {
            edit,
            outputs: vec![Arc::clone(f)],
            bytes_written: 0,
            bytes_read: 0,
        });
    }
    // Sources newest first: each L0 table alone, then one concatenation per deeper level.
    let mut sources: Vec<Box<dyn Source>> = Vec::new();
    for (l, f) in c.inputs.iter().filter(|(l, _)| *l == 0) {
        debug_assert_eq!(*l, 0);
        sources.push(Box::new(TableIter::new(
            Arc::clone(f),
            Arc::clone(cache),
            false,
        )));
    }
    for level in 1..NUM_LEVELS {
        let files: Vec<_> = c
            .inputs
            .iter()
            .filter(|(l, _)| *l == level)
            .map(|(_, f)| Arc::clone(f))
            .collect();
        if !files.is_empty() {
            sources.push(Box::new(LevelSource::new(files, Arc::clone(cache), false)));
        }
    }
    let bytes_read = c.inputs.iter().map(|(_, f)| f.meta.size).sum();
    let mut merge = Merge::new(sources);
    merge.seek_to_first()?;
    let mut deeper = Deeper::new(version, c.output_level);
    let now = opts.clock.now_unix_ms();
    let grace = opts.tombstone_grace.as_millis() as u64;
    let build = BuildOptions {
        block_bytes: opts.block_bytes,
        compression: opts.compression,
        bloom_bits_per_key: opts.bloom_bits_per_key,
    };
    let mut outputs: Vec<FileMeta> = Vec::new();
    let mut builder: Option<TableBuilder> = None;
    let result = (|| -> Result<()> {
        while merge.valid() {
            let key = merge.key();
            let entry = Entry::decode(merge.value()).ok_or_else(|| {
                Error::corruption(
                    dir,
                    0,
                    format!("undecodable entry for key {key:?} during compaction"),
                )
            })?;
            let dead = match entry {
                Entry::Delete { deleted_at } => now >= deleted_at.saturating_add(grace),
                Entry::Put { expires_at, .. } => expires_at != 0 && expires_at <= now,
            };
            if !dead || deeper.may_hold(key) {
                if builder.is_none() {
                    let n = new_file();
                    builder = Some(TableBuilder::create(&dir.join(table_name(n)), n, build)?);
                }
                let b = builder.as_mut().expect("just created");
                b.add(key, merge.value())?;
                if b.estimated_size() >= opts.target_file_bytes {
                    outputs.push(builder.take().expect("present").finish()?);
                }
            }
            merge.next()?;
        }
        if let Some(b) = builder.take()
            && b.entries() > 0
        {
            outputs.push(b.finish()?);
        }
        Ok(())
    })();
    if let Err(e) = result {
        // Leave no half-written outputs behind (the manifest never named them).
        for m in &outputs {
            let _ = std::fs::remove_file(dir.join(table_name(m.number)));
        }
        if let Some(b) = builder {
            let _ = std::fs::remove_file(b.path());
        }
        return Err(e);
    }
    let mut opened = Vec::new();
    let mut bytes_written = 0;
    for m in outputs {
        bytes_written += m.size;
        edit.added.push((c.output_level, m.clone()));
        opened.push(TableFile::open(dir, m)?);
    }
    Ok(Outcome {
        edit,
        outputs: opened,
        bytes_written,
        bytes_read,
    })
}
