//! The manifest: a log of version edits (record framing from record.rs).
//! Replaying it yields the live file set. `CURRENT` names the manifest in
//! use and is replaced atomically (write, fsync, rename, fsync directory).
//!
//! Edit encoding, a sequence of tagged fields:
//! ```text
//! 1 log_number:varint     WAL files numbered below this are obsolete
//! 2 next_file:varint
//! 3 last_seq:varint
//! 4 level:u8 number size entries smallest:bytes largest:bytes   (add table)
//! 5 level:u8 number                                             (delete table)
//! ```

use std::path::Path;

use crate::coding::{get_bytes, get_u8, get_varint, put_bytes, put_varint};
use crate::error::{Error, IoContext, Result};
use crate::sst::table::FileMeta;
use crate::version::NUM_LEVELS;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct VersionEdit {
    pub log_number: Option<u64>,
    pub next_file: Option<u64>,
    pub last_seq: Option<u64>,
    pub added: Vec<(usize, FileMeta)>,
    pub deleted: Vec<(usize, u64)>,
}

impl VersionEdit {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut b = Vec::new();
        for (tag, v) in [
            (1u8, self.log_number),
            (2, self.next_file),
            (3, self.last_seq),
        ] {
            if let Some(v) = v {
                b.push(tag);
                put_varint(&mut b, v);
            }
        }
        for (level, m) in &self.added {
            b.push(4);
            b.push(*level as u8);
            put_varint(&mut b, m.number);
            put_varint(&mut b, m.size);
            put_varint(&mut b, m.entries);
            put_bytes(&mut b, &m.smallest);
            put_bytes(&mut b, &m.largest);
        }
        for (level, n) in &self.deleted {
            b.push(5);
            b.push(*level as u8);
            put_varint(&mut b, *n);
        }
        b
    }

    pub(crate) fn decode(mut b: &[u8]) -> Option<VersionEdit> {
        let mut e = VersionEdit::default();
        let level = |b: &mut &[u8]| get_u8(b).map(usize::from).filter(|&l| l < NUM_LEVELS);
        while !b.is_empty() {
            match get_u8(&mut b)? {
                1 => e.log_number = Some(get_varint(&mut b)?),
                2 => e.next_file = Some(get_varint(&mut b)?),
                3 => e.last_seq = Some(get_varint(&mut b)?),
                4 => {
                    let l = level(&mut b)?;
                    let m = FileMeta {
                        number: get_varint(&mut b)?,
                        size: get_varint(&mut b)?,
                        entries: get_varint(&mut b)?,
                        smallest: get_bytes(&mut b)?.to_vec(),
                        largest: get_bytes(&mut b)?.to_vec(),
                    };
                    e.added.push((l, m));
                }
                5 => {
                    let l = level(&mut b)?;
                    e.deleted.push((l, get_varint(&mut b)?));
                }
                _ => return None,
            }
        }
        Some(e)
    }
}

pub(crate) fn manifest_name(number: u64) -> String {
    format!("MANIFEST-{number:06}")
}

/// Point `CURRENT` at `manifest` atomically.
pub(crate) fn set_current(dir: &Path, manifest: &str) -> Result<()> {
    let tmp = dir.join("CURRENT.tmp");
    std::fs::write(&tmp, format!("{manifest}\n")).ctx(&tmp)?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .ctx(&tmp)?;
    let cur = dir.join("CURRENT");
    std::fs::rename(&tmp, &cur).ctx(&cur)?;
    sync_dir(dir)
}

/// The manifest file name `CURRENT` points at, if there is one.
pub(crate) fn read_current(dir: &Path) -> Result<Option<String>> {
    let cur = dir.join("CURRENT");
    match std::fs::read(&cur) {
        Ok(b) => {
            let s = String::from_utf8(b).ok();
            let name = s
                .as_deref()
                .map(str::trim_end)
                .filter(|n| n.starts_with("MANIFEST-") && !n.contains('/') && n.len() < 64)
                .ok_or_else(|| Error::corruption(&cur, 0, "CURRENT does not name a manifest"))?;
            Ok(Some(name.to_string()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(cur, e)),
    }
}

pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir).and_then(|f| f.sync_all()).ctx(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_roundtrip_and_truncation() {
        let e = VersionEdit {
            log_number: Some(7),
            next_file: Some(12),
            last_seq: Some(99),
            added: vec![(
                1,
                FileMeta {
                    number: 9,
                    size: 4096,
                    entries: 10,
                    smallest: b"a".to_vec(),
                    largest: b"z".to_vec(),
                },
            )],
            deleted: vec![(0, 3), (1, 4)],
        };
        let enc = e.encode();
        assert_eq!(VersionEdit::decode(&enc), Some(e));
        for cut in 1..enc.len() {
            // A cut may land on a field boundary and still decode, but never panics.
            let _ = VersionEdit::decode(&enc[..cut]);
        }
        assert_eq!(
            VersionEdit::decode(&[4, 200, 1]),
            None,
            "level out of range"
        );
    }
}
