//! Immutable sorted tables.
//!
//! ```text
//! data_block* filter_block index_block footer
//! block   = bytes compression:u8 crc32c:u32      (crc over bytes ++ compression)
//! index   = a block of (last key of data block -> offset:varint len:varint)
//! filter  = blocked Bloom filter over every key (see bloom.rs)
//! footer  = filter_off:u64 filter_len:u64 index_off:u64 index_len:u64
//!           entries:u64 format_version:u32 crc32c:u32 magic:u64   (56 bytes)
//! ```
//! Keys in a table are unique user keys; values are encoded entries
//! (entry.rs). Every block is checksummed, so damage anywhere is reported as
//! corruption with the file and the block's offset — never served as data.

pub(crate) mod block;
pub(crate) mod bloom;
pub(crate) mod table;

pub(crate) const MAGIC: u64 = 0x7269_6e67_6b76_7373; // "ringkvss"
pub(crate) const FORMAT_VERSION: u32 = 1;
pub(crate) const FOOTER_LEN: usize = 56;
pub(crate) const BLOCK_TRAILER: usize = 5;
/// A block never decompresses to more than this (guards allocation on bad input).
pub(crate) const MAX_BLOCK_BYTES: usize = 64 << 20;
