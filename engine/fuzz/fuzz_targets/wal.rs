#![no_main]
//! Arbitrary bytes through the wal decoder: it may return an error, never
//! panic, hang or allocate without bound.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ringkv_engine::fuzzing::wal(data);
});
