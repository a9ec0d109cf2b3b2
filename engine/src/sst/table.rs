//! Writing and reading one SSTable file.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::block::{
    BadBlock, Block, BlockBuilder, BlockIter, DATA_RESTART_INTERVAL, INDEX_RESTART_INTERVAL,
};
use super::bloom::{self, Bloom};
use super::{BLOCK_TRAILER, FOOTER_LEN, FORMAT_VERSION, MAGIC, MAX_BLOCK_BYTES};
use crate::cache::{BlockCache, Cached};
use crate::coding::{get_u32, get_u64, get_varint, put_varint};
use crate::error::{Error, IoContext, Result};
use crate::options::Compression;

const COMPRESSION_NONE: u8 = 0;
const COMPRESSION_LZ4: u8 = 1;

/// Where a block sits in the file (length excludes the trailer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Handle {
    pub offset: u64,
    pub len: u64,
}

/// Summary of a finished table, recorded in the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileMeta {
    pub number: u64,
    pub size: u64,
    pub entries: u64,
    pub smallest: Vec<u8>,
    pub largest: Vec<u8>,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct BuildOptions {
    pub block_bytes: usize,
    pub compression: Compression,
    pub bloom_bits_per_key: u32,
}

pub(crate) struct TableBuilder {
    out: BufWriter<File>,
    path: PathBuf,
    number: u64,
    opts: BuildOptions,
    offset: u64,
    data: BlockBuilder,
    index: BlockBuilder,
    hashes: Vec<u64>,
    entries: u64,
    smallest: Option<Vec<u8>>,
    scratch: Vec<u8>,
}

impl TableBuilder {
    pub(crate) fn create(path: &Path, number: u64, opts: BuildOptions) -> Result<TableBuilder> {
        let file = File::create(path).ctx(path)?;
        Ok(TableBuilder {
            out: BufWriter::with_capacity(256 << 10, file),
            path: path.to_path_buf(),
            number,
            opts,
            offset: 0,
            data: BlockBuilder::new(DATA_RESTART_INTERVAL),
            index: BlockBuilder::new(INDEX_RESTART_INTERVAL),
            hashes: Vec::new(),
            entries: 0,
            smallest: None,
            scratch: Vec::new(),
        })
    }

    /// Add an entry; keys must be strictly increasing.
    pub(crate) fn add(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        debug_assert!(
            self.entries == 0 || key > self.data_last_key_or_index(),
            "keys out of order"
        );
        if self.smallest.is_none() {
            self.smallest = Some(key.to_vec());
        }
        self.hashes.push(bloom::hash(key));
        self.data.add(key, value);
        self.entries += 1;
        if self.data.estimated_size() >= self.opts.block_bytes {
            self.finish_data_block()?;
        }
        Ok(())
    }

    fn data_last_key_or_index(&self) -> &[u8] {
        if self.data.is_empty() {
            self.index.last_key()
        } else {
            self.data.last_key()
        }
    }

    pub(crate) fn entries(&self) -> u64 {
        self.entries
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes written so far plus the pending block.
    pub(crate) fn estimated_size(&self) -> u64 {
        self.offset + self.data.estimated_size() as u64
    }

    fn finish_data_block(&mut self) -> Result<()> {
        if self.data.is_empty() {
            return Ok(());
        }
        let last = self.data.last_key().to_vec();
        let raw = self.data.finish();
        let h = self.write_block(&raw, self.opts.compression)?;
        let mut v = Vec::with_capacity(10);
        put_varint(&mut v, h.offset);
        put_varint(&mut v, h.len);
        self.index.add(&last, &v);
        Ok(())
    }

    fn write_block(&mut self, raw: &[u8], compression: Compression) -> Result<Handle> {
        let (bytes, kind): (&[u8], u8) = match compression {
            Compression::Lz4 => {
                self.scratch = lz4_flex::block::compress_prepend_size(raw);
                // Keep compression only when it saves at least 1/8.
                if self.scratch.len() < raw.len() - raw.len() / 8 {
                    (&self.scratch, COMPRESSION_LZ4)
                } else {
                    (raw, COMPRESSION_NONE)
                }
            }
            Compression::None => (raw, COMPRESSION_NONE),
        };
        let mut crc = crc32c::crc32c(bytes);
        crc = crc32c::crc32c_append(crc, &[kind]);
        let h = Handle {
            offset: self.offset,
            len: bytes.len() as u64,
        };
        self.out.write_all(bytes).ctx(&self.path)?;
        self.out.write_all(&[kind]).ctx(&self.path)?;
        self.out.write_all(&crc.to_le_bytes()).ctx(&self.path)?;
        self.offset += bytes.len() as u64 + BLOCK_TRAILER as u64;
        Ok(h)
    }

    /// Write filter, index and footer; fsync. Returns the table's summary.
    pub(crate) fn finish(mut self) -> Result<FileMeta> {
        self.finish_data_block()?;
        let largest = self.index.last_key().to_vec();
        let filter = bloom::build(&self.hashes, self.opts.bloom_bits_per_key);
        let fh = self.write_block(&filter, Compression::None)?;
        let index = self.index.finish();
        let ih = self.write_block(&index, Compression::None)?;
        let mut footer = Vec::with_capacity(FOOTER_LEN);
        for v in [fh.offset, fh.len, ih.offset, ih.len, self.entries] {
            footer.extend_from_slice(&v.to_le_bytes());
        }
        footer.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        let crc = crc32c::crc32c(&footer);
        footer.extend_from_slice(&crc.to_le_bytes());
        footer.extend_from_slice(&MAGIC.to_le_bytes());
        self.out.write_all(&footer).ctx(&self.path)?;
        self.offset += FOOTER_LEN as u64;
        let file = self
            .out
            .into_inner()
            .map_err(|e| Error::io(&self.path, e.into_error()))?;
        file.sync_all().ctx(&self.path)?;
        Ok(FileMeta {
            number: self.number,
            size: self.offset,
            entries: self.entries,
            smallest: self.smallest.unwrap_or_default(),
            largest,
        })
    }
}

/// Where a table's bytes are: its file, or (for the fuzzer, which would
/// otherwise spend its time creating files) a buffer.
#[derive(Debug)]
enum Source {
    File(File),
    Bytes(Vec<u8>),
}

impl Source {
    fn len(&self) -> std::io::Result<u64> {
        match self {
            Source::File(f) => Ok(f.metadata()?.len()),
            Source::Bytes(b) => Ok(b.len() as u64),
        }
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        match self {
            Source::File(f) => f.read_exact_at(buf, offset),
            Source::Bytes(b) => {
                let part = usize::try_from(offset)
                    .ok()
                    .and_then(|o| b.get(o..o.checked_add(buf.len())?))
                    .ok_or(std::io::ErrorKind::UnexpectedEof)?;
                buf.copy_from_slice(part);
                Ok(())
            }
        }
    }
}

/// An open table. Index and filter are read through the block cache.
#[derive(Debug)]
pub(crate) struct Table {
    pub(crate) number: u64,
    path: PathBuf,
    file: Source,
    filter: Handle,
    index: Handle,
    pinned: std::sync::OnceLock<Bloom>,
}

impl Table {
    pub(crate) fn open(path: &Path, number: u64) -> Result<Table> {
        let file = File::open(path).ctx(path)?;
        Table::from_source(path, number, Source::File(file))
    }

    /// A table held in memory; `path` only names it in errors.
    pub(crate) fn from_bytes(path: &Path, number: u64, bytes: Vec<u8>) -> Result<Table> {
        Table::from_source(path, number, Source::Bytes(bytes))
    }

    fn from_source(path: &Path, number: u64, file: Source) -> Result<Table> {
        let size = file.len().ctx(path)?;
        let corrupt = |off: u64, why: &str| Error::corruption(path, off, why.to_string());
        if size < FOOTER_LEN as u64 {
            return Err(corrupt(0, "file too short for a table footer"));
        }
        let foot_at = size - FOOTER_LEN as u64;
        let mut footer = [0u8; FOOTER_LEN];
        file.read_exact_at(&mut footer, foot_at).ctx(path)?;
        let mut f = &footer[..];
        let nums: Vec<u64> = (0..5).filter_map(|_| get_u64(&mut f)).collect();
        let version = get_u32(&mut f).unwrap_or(0);
        let crc = get_u32(&mut f).unwrap_or(0);
        let magic = get_u64(&mut f).unwrap_or(0);
        if magic != MAGIC {
            return Err(corrupt(foot_at, "bad table magic"));
        }
        if crc32c::crc32c(&footer[..44]) != crc {
            return Err(corrupt(foot_at, "footer checksum mismatch"));
        }
        if version != FORMAT_VERSION {
            return Err(corrupt(
                foot_at,
                &format!("unsupported table format version {version}"),
            ));
        }
        let filter = Handle {
            offset: nums[0],
            len: nums[1],
        };
        let index = Handle {
            offset: nums[2],
            len: nums[3],
        };
        let fits = |h: Handle| {
            h.offset
                .checked_add(h.len)
                .and_then(|e| e.checked_add(BLOCK_TRAILER as u64))
        };
        if fits(filter) != Some(index.offset) || fits(index) != Some(foot_at) {
            return Err(corrupt(foot_at, "footer block handles out of bounds"));
        }
        Ok(Table {
            number,
            path: path.to_path_buf(),
            file,
            filter,
            index,
            pinned: std::sync::OnceLock::new(),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    fn corrupt(&self, offset: u64, why: &str) -> Error {
        Error::corruption(&self.path, offset, why.to_string())
    }

    /// Read, verify and decompress one block.
    fn read_block(&self, h: Handle) -> Result<Vec<u8>> {
        let len = usize::try_from(h.len)
            .ok()
            .filter(|&l| l <= MAX_BLOCK_BYTES)
            .ok_or_else(|| self.corrupt(h.offset, "block length out of range"))?;
        let mut buf = vec![0u8; len + BLOCK_TRAILER];
        self.file.read_exact_at(&mut buf, h.offset).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                self.corrupt(h.offset, "block extends past end of file")
            } else {
                Error::io(&self.path, e)
            }
        })?;
        let kind = buf[len];
        let stored = u32::from_le_bytes([buf[len + 1], buf[len + 2], buf[len + 3], buf[len + 4]]);
        if crc32c::crc32c(&buf[..len + 1]) != stored {
            return Err(self.corrupt(h.offset, "block checksum mismatch"));
        }
        buf.truncate(len);
        match kind {
            COMPRESSION_NONE => Ok(buf),
            COMPRESSION_LZ4 => {
                let declared = buf
                    .get(..4)
                    .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
                    .unwrap_or(usize::MAX);
                if declared > MAX_BLOCK_BYTES {
                    return Err(self.corrupt(h.offset, "compressed block too large"));
                }
                lz4_flex::block::decompress_size_prepended(&buf)
                    .map_err(|e| self.corrupt(h.offset, &format!("lz4 decompression failed: {e}")))
            }
            other => Err(self.corrupt(h.offset, &format!("unknown compression type {other}"))),
        }
    }

    fn block(&self, cache: &BlockCache, h: Handle, fill: bool) -> Result<Arc<Block>> {
        let c = cache.get_or_load((self.number, h.offset), fill, || {
            let raw = self.read_block(h)?;
            let b =
                Block::new(raw).map_err(|BadBlock| self.corrupt(h.offset, "malformed block"))?;
            Ok::<_, Error>(Cached::Block(Arc::new(b)))
        })?;
        match c {
            Cached::Block(b) => Ok(b),
            Cached::Bloom(_) => {
                Err(self.corrupt(h.offset, "cache holds a filter where a block was expected"))
            }
        }
    }

    /// The filter, read once and kept in the table handle itself (used for
    /// level-0 tables: few, each one memtable's worth of keys, and probed on
    /// every read — so bounded, and worth not paying a cache lookup).
    fn pinned_bloom(&self) -> Result<&Bloom> {
        if let Some(b) = self.pinned.get() {
            return Ok(b);
        }
        let raw = self.read_block(self.filter)?;
        let b = Bloom::decode(raw)
            .ok_or_else(|| self.corrupt(self.filter.offset, "malformed filter block"))?;
        Ok(self.pinned.get_or_init(|| b))
    }

    fn bloom(&self, cache: &BlockCache) -> Result<Arc<Bloom>> {
        let h = self.filter;
        let c = cache.get_or_load((self.number, h.offset), true, || {
            let raw = self.read_block(h)?;
            let b = Bloom::decode(raw)
                .ok_or_else(|| self.corrupt(h.offset, "malformed filter block"))?;
            Ok::<_, Error>(Cached::Bloom(Arc::new(b)))
        })?;
        match c {
            Cached::Bloom(b) => Ok(b),
            Cached::Block(_) => {
                Err(self.corrupt(h.offset, "cache holds a block where a filter was expected"))
            }
        }
    }

    fn decode_handle(&self, mut v: &[u8], at: u64) -> Result<Handle> {
        let h = (|| {
            Some(Handle {
                offset: get_varint(&mut v)?,
                len: get_varint(&mut v)?,
            })
        })()
        .filter(|h| {
            h.offset
                .checked_add(h.len)
                .and_then(|e| e.checked_add(BLOCK_TRAILER as u64))
                .is_some_and(|e| e <= self.filter.offset)
        });
        h.ok_or_else(|| self.corrupt(at, "bad block handle in index"))
    }

    /// The stored entry for `key`, if this table has one. `hash` is
    /// `bloom::hash(key)`, computed once per lookup by the caller.
    /// `pin_filter`: keep this table's filter in the handle instead of the
    /// cache (see `pinned_bloom`). `f` sees the stored entry for `key`, if
    /// this table has one (no copy is made here).
    pub(crate) fn get<R>(
        &self,
        cache: &BlockCache,
        key: &[u8],
        hash: u64,
        pin_filter: bool,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<Option<R>> {
        match self.probe(cache, key, hash, pin_filter, true, f)? {
            Probe::Found(r) => Ok(Some(r)),
            Probe::Absent => Ok(None),
            Probe::NeedsIo => unreachable!("probe with I/O allowed never asks for it"),
        }
    }

    /// Like `get`; with `io` false, answers `NeedsIo` instead of reading a
    /// block that is neither cached nor pinned (a read that never blocks).
    pub(crate) fn probe<R>(
        &self,
        cache: &BlockCache,
        key: &[u8],
        hash: u64,
        pin_filter: bool,
        io: bool,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<Probe<R>> {
        let may = if pin_filter {
            match self.pinned.get() {
                Some(b) => b.may_contain(hash),
                None if !io => return Ok(Probe::NeedsIo),
                None => self.pinned_bloom()?.may_contain(hash),
            }
        } else {
            match cache.peek((self.number, self.filter.offset)) {
                Some(Cached::Bloom(b)) => b.may_contain(hash),
                _ if !io => return Ok(Probe::NeedsIo),
                _ => self.bloom(cache)?.may_contain(hash),
            }
        };
        if !may {
            return Ok(Probe::Absent);
        }
        let Some(index) = self.block_if(cache, self.index, io)? else {
            return Ok(Probe::NeedsIo);
        };
        let mut it = index.iter();
        it.seek(key)
            .map_err(|_| self.corrupt(self.index.offset, "malformed index block"))?;
        if !it.valid() {
            return Ok(Probe::Absent);
        }
        let h = self.decode_handle(it.value(), self.index.offset)?;
        let Some(data) = self.block_if(cache, h, io)? else {
            return Ok(Probe::NeedsIo);
        };
        let mut d = data.iter();
        d.seek(key)
            .map_err(|_| self.corrupt(h.offset, "malformed data block"))?;
        Ok(if d.valid() && d.key() == key {
            Probe::Found(f(d.value()))
        } else {
            Probe::Absent
        })
    }

    /// A block through the cache; with `io` false, `None` unless cached.
    fn block_if(&self, cache: &BlockCache, h: Handle, io: bool) -> Result<Option<Arc<Block>>> {
        if io {
            return self.block(cache, h, true).map(Some);
        }
        match cache.peek((self.number, h.offset)) {
            Some(Cached::Block(b)) => Ok(Some(b)),
            _ => Ok(None),
        }
    }
}

/// What a lookup found in one table.
pub(crate) enum Probe<R> {
    Found(R),
    Absent,
    /// The answer needs a block read from disk (only when I/O was not allowed).
    NeedsIo,
}

/// Ordered cursor over a table. `fill` says whether blocks read go into the
/// cache (compaction reads don't, so they don't evict the hot set).
pub(crate) struct TableIter<T: AsRef<Table>> {
    table: T,
    cache: Arc<BlockCache>,
    fill: bool,
    index: Option<BlockIter>,
    data: Option<BlockIter>,
    data_offset: u64,
}

impl<T: AsRef<Table>> TableIter<T> {
    pub(crate) fn new(table: T, cache: Arc<BlockCache>, fill: bool) -> Self {
        TableIter {
            table,
            cache,
            fill,
            index: None,
            data: None,
            data_offset: 0,
        }
    }

    fn t(&self) -> &Table {
        self.table.as_ref()
    }

    fn index_iter(&mut self) -> Result<&mut BlockIter> {
        if self.index.is_none() {
            let t = self.table.as_ref();
            let b = t.block(&self.cache, t.index, true)?;
            self.index = Some(b.iter());
        }
        Ok(self.index.as_mut().expect("just set"))
    }

    fn bad_index(&self) -> Error {
        self.t()
            .corrupt(self.t().index.offset, "malformed index block")
    }

    fn bad_data(&self) -> Error {
        self.t().corrupt(self.data_offset, "malformed data block")
    }

    /// Load the data block the index cursor points at (or none at the end).
    fn load_data(&mut self) -> Result<()> {
        let idx = self.index.as_ref().expect("index loaded");
        if !idx.valid() {
            self.data = None;
            return Ok(());
        }
        let h = self.t().decode_handle(idx.value(), self.t().index.offset)?;
        let b = self.t().block(&self.cache, h, self.fill)?;
        self.data_offset = h.offset;
        self.data = Some(b.iter());
        Ok(())
    }

    /// Move past exhausted data blocks.
    fn skip_empty(&mut self) -> Result<()> {
        while self.data.as_ref().is_some_and(|d| !d.valid()) {
            self.index_iter()?.advance().map_err(|_| self.bad_index())?;
            self.load_data()?;
            if let Some(d) = self.data.as_mut()
                && d.seek_to_first().is_err()
            {
                return Err(self.bad_data());
            }
        }
        Ok(())
    }

    pub(crate) fn seek_to_first(&mut self) -> Result<()> {
        self.index_iter()?
            .seek_to_first()
            .map_err(|_| self.bad_index())?;
        self.load_data()?;
        if let Some(d) = self.data.as_mut()
            && d.seek_to_first().is_err()
        {
            return Err(self.bad_data());
        }
        self.skip_empty()
    }

    pub(crate) fn seek(&mut self, target: &[u8]) -> Result<()> {
        self.index_iter()?
            .seek(target)
            .map_err(|_| self.bad_index())?;
        self.load_data()?;
        if let Some(d) = self.data.as_mut()
            && d.seek(target).is_err()
        {
            return Err(self.bad_data());
        }
        self.skip_empty()
    }

    pub(crate) fn valid(&self) -> bool {
        self.data.as_ref().is_some_and(|d| d.valid())
    }

    pub(crate) fn key(&self) -> &[u8] {
        self.data.as_ref().map_or(&[], |d| d.key())
    }

    pub(crate) fn value(&self) -> &[u8] {
        self.data.as_ref().map_or(&[], |d| d.value())
    }

    pub(crate) fn next(&mut self) -> Result<()> {
        if let Some(d) = self.data.as_mut()
            && d.advance().is_err()
        {
            return Err(self.bad_data());
        }
        self.skip_empty()
    }
}

impl AsRef<Table> for Table {
    fn as_ref(&self) -> &Table {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(c: Compression) -> BuildOptions {
        BuildOptions {
            block_bytes: 256,
            compression: c,
            bloom_bits_per_key: 10,
        }
    }

    fn build(dir: &Path, n: usize, c: Compression) -> (PathBuf, FileMeta) {
        let p = dir.join("1.sst");
        let mut b = TableBuilder::create(&p, 1, opts(c)).unwrap();
        for i in 0..n {
            b.add(
                format!("key{i:06}").as_bytes(),
                format!("value-{i}-{}", "x".repeat(i % 50)).as_bytes(),
            )
            .unwrap();
        }
        (p, b.finish().unwrap())
    }

    #[test]
    fn write_then_read_back() {
        for c in [Compression::None, Compression::Lz4] {
            let dir = tempfile::tempdir().unwrap();
            let (p, meta) = build(dir.path(), 2000, c);
            assert_eq!(meta.entries, 2000);
            assert_eq!(meta.smallest, b"key000000");
            assert_eq!(meta.largest, b"key001999");
            let t = Table::open(&p, 1).unwrap();
            let cache = Arc::new(BlockCache::new(1 << 20));
            for i in (0..2000).step_by(7) {
                let k = format!("key{i:06}");
                let v = t
                    .get(
                        &cache,
                        k.as_bytes(),
                        bloom::hash(k.as_bytes()),
                        i % 2 == 0,
                        <[u8]>::to_vec,
                    )
                    .unwrap();
                assert_eq!(
                    v.unwrap(),
                    format!("value-{i}-{}", "x".repeat(i % 50)).as_bytes()
                );
            }
            let k = b"key0000005";
            assert_eq!(
                t.get(&cache, k, bloom::hash(k), false, <[u8]>::to_vec)
                    .unwrap(),
                None
            );
            let mut it = TableIter::new(&t, cache.clone(), true);
            it.seek(b"key001500x").unwrap();
            assert_eq!(it.key(), b"key001501");
            let mut n = 0;
            it.seek_to_first().unwrap();
            while it.valid() {
                n += 1;
                it.next().unwrap();
            }
            assert_eq!(n, 2000);
        }
    }

    #[test]
    fn every_flipped_byte_is_detected_or_harmless() {
        let dir = tempfile::tempdir().unwrap();
        let (p, _) = build(dir.path(), 300, Compression::Lz4);
        let good = std::fs::read(&p).unwrap();
        let cache_keys: Vec<String> = (0..300).map(|i| format!("key{i:06}")).collect();
        for pos in (0..good.len()).step_by(3) {
            let mut bad = good.clone();
            bad[pos] ^= 0x10;
            std::fs::write(&p, &bad).unwrap();
            let t = match Table::open(&p, 1) {
                Ok(t) => t,
                Err(e) => {
                    assert!(e.is_corruption(), "{e}");
                    continue;
                }
            };
            let cache = Arc::new(BlockCache::new(1 << 20));
            // Every read either returns the right value or reports corruption
            // naming the file: never wrong data, never a silent miss.
            for (i, k) in cache_keys.iter().enumerate() {
                match t.get(
                    &cache,
                    k.as_bytes(),
                    bloom::hash(k.as_bytes()),
                    i % 2 == 0,
                    <[u8]>::to_vec,
                ) {
                    Ok(Some(v)) => {
                        assert_eq!(v, format!("value-{i}-{}", "x".repeat(i % 50)).as_bytes())
                    }
                    Ok(None) => panic!("flip at {pos} made present key {k} disappear"),
                    Err(e) => {
                        assert!(e.is_corruption(), "{e}");
                        assert!(e.to_string().contains("1.sst"));
                    }
                }
            }
        }
    }
}
