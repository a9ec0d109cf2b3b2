//! One driver per engine, configured alike: 64 MiB memtable, 64 MiB block
//! cache, ~10 bits/key Bloom filters, LZ4, 4 KiB blocks, WAL on; `sync`
//! chooses fsync-per-acknowledged-write or not.

use std::path::Path;

/// The operations the workloads need, identical across engines.
pub trait Engine: Send + Sync {
    fn put(&self, key: &[u8], value: &[u8]);
    /// True when the key has a value.
    fn get(&self, key: &[u8]) -> bool;
    /// Read up to `n` entries from `start`; returns how many.
    fn scan(&self, start: &[u8], n: usize) -> usize;
    /// Make memtables durable in tables.
    fn flush(&self);
}

pub const MEMTABLE_BYTES: usize = 64 << 20;
pub const CACHE_BYTES: usize = 64 << 20;

pub fn names() -> Vec<&'static str> {
    let mut v = vec!["ringkv"];
    if cfg!(feature = "peers") {
        v.extend(["fjall", "rocksdb"]);
    }
    v
}

pub fn open(name: &str, dir: &Path, sync: bool) -> Box<dyn Engine> {
    match name {
        "ringkv" => Box::new(Ringkv::open(dir, sync)),
        #[cfg(feature = "peers")]
        "fjall" => Box::new(peers::Fjall::open(dir, sync)),
        #[cfg(feature = "peers")]
        "rocksdb" => Box::new(peers::Rocks::open(dir, sync)),
        other => panic!("unknown or not compiled-in engine {other} (peers need --features peers)"),
    }
}

pub struct Ringkv(ringkv_engine::Db);

impl Ringkv {
    fn open(dir: &Path, sync: bool) -> Self {
        let opts = ringkv_engine::Options {
            sync: if sync {
                ringkv_engine::SyncPolicy::Always
            } else {
                ringkv_engine::SyncPolicy::Never
            },
            memtable_bytes: MEMTABLE_BYTES,
            block_cache_bytes: CACHE_BYTES,
            ..Default::default()
        };
        Ringkv(ringkv_engine::Db::open(dir, opts).expect("open ringkv"))
    }
}

impl Engine for Ringkv {
    fn put(&self, key: &[u8], value: &[u8]) {
        self.0.put(key, value).expect("put");
    }
    fn get(&self, key: &[u8]) -> bool {
        self.0.get(key).expect("get").is_some()
    }
    fn scan(&self, start: &[u8], n: usize) -> usize {
        let mut c = 0;
        for item in self.0.scan(start..).expect("scan").take(n) {
            std::hint::black_box(item.expect("scan item"));
            c += 1;
        }
        c
    }
    fn flush(&self) {
        self.0.flush().expect("flush");
    }
}

#[cfg(feature = "peers")]
mod peers {
    use super::*;

    pub struct Fjall {
        db: fjall::Database,
        ks: fjall::Keyspace,
        sync: bool,
    }

    impl Fjall {
        pub fn open(dir: &Path, sync: bool) -> Self {
            let db = fjall::Database::builder(dir)
                .cache_size(CACHE_BYTES as u64)
                .open()
                .expect("open fjall");
            let ks = db
                .keyspace("bench", || {
                    fjall::KeyspaceCreateOptions::default().max_memtable_size(MEMTABLE_BYTES as u64)
                })
                .expect("keyspace");
            Fjall { db, ks, sync }
        }
    }

    impl Engine for Fjall {
        fn put(&self, key: &[u8], value: &[u8]) {
            self.ks.insert(key, value).expect("insert");
            if self.sync {
                self.db
                    .persist(fjall::PersistMode::SyncAll)
                    .expect("persist");
            }
        }
        fn get(&self, key: &[u8]) -> bool {
            self.ks.get(key).expect("get").is_some()
        }
        fn scan(&self, start: &[u8], n: usize) -> usize {
            self.ks
                .range(start.to_vec()..)
                .take(n)
                .map(|g| g.into_inner().expect("scan item"))
                .count()
        }
        fn flush(&self) {
            self.ks.rotate_memtable_and_wait().expect("flush");
        }
    }

    pub struct Rocks {
        db: rocksdb::DB,
        wo: rocksdb::WriteOptions,
    }

    // WriteOptions is a plain C struct only read by RocksDB; sharing it is safe.
    unsafe impl Sync for Rocks {}
    unsafe impl Send for Rocks {}

    impl Rocks {
        pub fn open(dir: &Path, sync: bool) -> Self {
            let mut o = rocksdb::Options::default();
            o.create_if_missing(true);
            o.set_write_buffer_size(MEMTABLE_BYTES);
            o.set_max_write_buffer_number(3);
            o.set_compression_type(rocksdb::DBCompressionType::Lz4);
            o.set_max_background_jobs(2);
            let mut t = rocksdb::BlockBasedOptions::default();
            let cache = rocksdb::Cache::new_lru_cache(CACHE_BYTES);
            t.set_block_cache(&cache);
            t.set_bloom_filter(10.0, false);
            t.set_block_size(4096);
            o.set_block_based_table_factory(&t);
            let db = rocksdb::DB::open(&o, dir).expect("open rocksdb");
            let mut wo = rocksdb::WriteOptions::default();
            wo.set_sync(sync);
            Rocks { db, wo }
        }
    }

    impl Engine for Rocks {
        fn put(&self, key: &[u8], value: &[u8]) {
            self.db.put_opt(key, value, &self.wo).expect("put");
        }
        fn get(&self, key: &[u8]) -> bool {
            self.db.get_pinned(key).expect("get").is_some()
        }
        fn scan(&self, start: &[u8], n: usize) -> usize {
            let mut it = self.db.raw_iterator();
            it.seek(start);
            let mut c = 0;
            while c < n && it.valid() {
                std::hint::black_box((it.key(), it.value()));
                c += 1;
                it.next();
            }
            c
        }
        fn flush(&self) {
            self.db.flush().expect("flush");
        }
    }
}
