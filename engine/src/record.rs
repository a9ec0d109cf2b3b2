//! Checksummed record framing shared by the write-ahead log and the manifest.
//!
//! A record is a 12-byte header — CRC32C of the payload, payload length, and
//! CRC32C of those 8 bytes — followed by the payload. The header has its own
//! checksum so a flipped length can never make the reader skip over good
//! records and call them a torn tail.
//!
//! Recovery distinguishes a *torn tail* (the last write was cut short by a
//! crash: truncate it) from *corruption before the tail* (bytes damaged after
//! they were durably written: refuse, naming file and offset). The rule: when
//! a record at offset X is bad, look for any valid record after X. If one
//! exists, X cannot be the tail, so the log is corrupt; otherwise X is the torn
//! tail.

use std::fs::File;
use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};

pub(crate) const HEADER_LEN: usize = 12;
/// Records larger than this are refused on write and treated as damage on read.
pub(crate) const MAX_RECORD: usize = 1 << 30;

fn header(payload: &[u8]) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..4].copy_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    h[4..8].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    let hc = crc32c::crc32c(&h[0..8]);
    h[8..12].copy_from_slice(&hc.to_le_bytes());
    h
}

/// Encode one record into `out` (header + payload).
#[cfg(test)]
pub(crate) fn encode_record(out: &mut Vec<u8>, payload: &[u8]) {
    out.extend_from_slice(&header(payload));
    out.extend_from_slice(payload);
}

/// Appends records to a file.
#[derive(Debug)]
pub(crate) struct LogWriter {
    file: File,
    path: PathBuf,
    len: u64,
    buf: Vec<u8>,
}

impl LogWriter {
    /// Create (truncating) a new log file.
    pub(crate) fn create(path: &Path) -> Result<LogWriter> {
        let file = File::create(path).ctx(path)?;
        Ok(LogWriter {
            file,
            path: path.to_path_buf(),
            len: 0,
            buf: Vec::new(),
        })
    }

    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Write one record with a single write call (so a process crash leaves
    /// either all of it in the OS or a torn tail).
    pub(crate) fn append(&mut self, payload: &[u8]) -> Result<()> {
        self.append_with(|buf| buf.extend_from_slice(payload))
            .map(drop)
    }

    /// Like `append`, with the payload built in place by `build` (no copy).
    /// Returns the record's size on disk.
    pub(crate) fn append_with(&mut self, build: impl FnOnce(&mut Vec<u8>)) -> Result<usize> {
        self.buf.clear();
        self.buf.resize(HEADER_LEN, 0);
        build(&mut self.buf);
        let payload_len = self.buf.len() - HEADER_LEN;
        if payload_len > MAX_RECORD {
            return Err(Error::InvalidArgument(format!(
                "record of {payload_len} bytes exceeds the {MAX_RECORD}-byte limit"
            )));
        }
        let h = header(&self.buf[HEADER_LEN..]);
        self.buf[..HEADER_LEN].copy_from_slice(&h);
        self.file.write_all(&self.buf).ctx(&self.path)?;
        let n = self.buf.len();
        self.len += n as u64;
        // Don't keep a huge buffer around after one big batch.
        if self.buf.capacity() > (4 << 20) {
            self.buf = Vec::new();
        }
        Ok(n)
    }

    /// Cuts the file back to `len` bytes (the end of its last complete
    /// record, after a failed append) and syncs that. Shrinking needs no
    /// free space.
    pub(crate) fn truncate(&mut self, len: u64) -> Result<()> {
        use std::io::Seek as _;
        self.file.set_len(len).ctx(&self.path)?;
        self.file
            .seek(std::io::SeekFrom::Start(len))
            .ctx(&self.path)?;
        self.len = len;
        self.sync()
    }

    pub(crate) fn sync(&self) -> Result<()> {
        self.file.sync_data().ctx(&self.path)
    }

    /// A second handle on the same open file, for a background syncer.
    pub(crate) fn sync_handle(&self) -> Result<File> {
        self.file.try_clone().ctx(&self.path)
    }
}

/// The readable records of a log file.
#[derive(Debug)]
pub(crate) struct LogContents {
    pub data: Vec<u8>,
    /// Payload ranges (offsets into `data`), with the record's file offset.
    pub records: Vec<(u64, Range<usize>)>,
    /// Offset just past the last good record; `< data.len()` means a torn tail.
    pub valid_end: u64,
}

impl LogContents {
    pub(crate) fn payloads(&self) -> impl Iterator<Item = (u64, &[u8])> {
        self.records
            .iter()
            .map(|(off, r)| (*off, &self.data[r.clone()]))
    }
}

/// Where a well-formed record starts at `pos`, its payload range.
fn record_at(data: &[u8], pos: usize) -> Option<Range<usize>> {
    let h = data.get(pos..pos + HEADER_LEN)?;
    let hc = u32::from_le_bytes(h[8..12].try_into().ok()?);
    if crc32c::crc32c(&h[0..8]) != hc {
        return None;
    }
    let len = u32::from_le_bytes(h[4..8].try_into().ok()?) as usize;
    if len > MAX_RECORD {
        return None;
    }
    let start = pos + HEADER_LEN;
    let payload = data.get(start..start + len)?;
    let pc = u32::from_le_bytes(h[0..4].try_into().ok()?);
    (crc32c::crc32c(payload) == pc).then_some(start..start + len)
}

/// Parse a whole log. `plausible(candidate, last_good)` says whether a
/// checksummed payload found *after* damage could be a real later record
/// (e.g. its sequence number follows the last good record's) — it guards
/// against user data that happens to contain an encoded record.
pub(crate) fn read_log(
    path: &Path,
    plausible: impl Fn(&[u8], Option<&[u8]>) -> bool,
) -> Result<LogContents> {
    let data = std::fs::read(path).ctx(path)?;
    parse_log(path, data, plausible)
}

pub(crate) fn parse_log(
    path: &Path,
    data: Vec<u8>,
    plausible: impl Fn(&[u8], Option<&[u8]>) -> bool,
) -> Result<LogContents> {
    let mut records = Vec::new();
    let mut pos = 0usize;
    while pos < data.len() {
        match record_at(&data, pos) {
            Some(r) => {
                let next = r.end;
                records.push((pos as u64, r));
                pos = next;
            }
            None => {
                // Damage at `pos`: torn tail unless a valid record follows.
                let last_good = records
                    .last()
                    .map(|(_, r): &(u64, Range<usize>)| &data[r.clone()]);
                let later = (pos + 1..data.len().saturating_sub(HEADER_LEN - 1))
                    .find(|&p| record_at(&data, p).is_some_and(|r| plausible(&data[r], last_good)));
                if let Some(p) = later {
                    return Err(Error::corruption(
                        path,
                        pos as u64,
                        format!("damaged log record (a valid record follows at offset {p})"),
                    ));
                }
                break;
            }
        }
    }
    Ok(LogContents {
        valid_end: pos as u64,
        data,
        records,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_of(payloads: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in payloads {
            encode_record(&mut out, p);
        }
        out
    }

    #[test]
    fn reads_back_records() {
        let data = log_of(&[b"one", b"", b"three"]);
        let c = parse_log(Path::new("x"), data, |_, _| true).unwrap();
        let got: Vec<&[u8]> = c.payloads().map(|(_, p)| p).collect();
        assert_eq!(got, vec![&b"one"[..], b"", b"three"]);
        assert_eq!(c.valid_end as usize, c.data.len());
    }

    #[test]
    fn every_truncation_is_a_torn_tail() {
        let data = log_of(&[b"alpha", b"beta", b"gamma-gamma"]);
        for cut in 0..data.len() {
            let c = parse_log(Path::new("x"), data[..cut].to_vec(), |_, _| true).unwrap();
            // Only complete records come back, in order.
            let got: Vec<Vec<u8>> = c.payloads().map(|(_, p)| p.to_vec()).collect();
            let full = parse_log(Path::new("x"), data.clone(), |_, _| true).unwrap();
            let want: Vec<Vec<u8>> = full
                .records
                .iter()
                .filter(|(_, r)| r.end <= cut)
                .map(|(_, r)| data[r.clone()].to_vec())
                .collect();
            assert_eq!(got, want, "cut at {cut}");
        }
    }

    #[test]
    fn zero_filled_tail_is_torn() {
        let mut data = log_of(&[b"alpha", b"beta"]);
        let good = data.len();
        data.extend_from_slice(&[0u8; 100]);
        let c = parse_log(Path::new("x"), data, |_, _| true).unwrap();
        assert_eq!(c.records.len(), 2);
        assert_eq!(c.valid_end as usize, good);
    }

    #[test]
    fn damage_before_the_tail_is_corruption_naming_the_offset() {
        let data = log_of(&[b"alpha", b"beta", b"gamma"]);
        let second = HEADER_LEN + 5;
        for flip in [second, second + 5, second + HEADER_LEN + 1] {
            let mut d = data.clone();
            d[flip] ^= 0x40;
            let err = parse_log(Path::new("wal.log"), d, |_, _| true).unwrap_err();
            match err {
                Error::Corruption { file, offset, .. } => {
                    assert_eq!(file, Path::new("wal.log"));
                    assert_eq!(offset as usize, second);
                }
                other => panic!("expected corruption, got {other:?}"),
            }
        }
    }

    #[test]
    fn damage_in_the_last_record_is_a_torn_tail() {
        let mut data = log_of(&[b"alpha", b"beta"]);
        let n = data.len();
        data[n - 1] ^= 1;
        let c = parse_log(Path::new("x"), data, |_, _| true).unwrap();
        assert_eq!(c.records.len(), 1);
    }
}
