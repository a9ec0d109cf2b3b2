#![no_main]
//! Arbitrary bytes through the gossip datagram guard (authentication, replay window, size and decompression bounds): it may refuse them, never panic, hang or
//! allocate without bound, and what it accepts must behave.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ringkv_node::fuzzing::gossip_datagram(data);
});
