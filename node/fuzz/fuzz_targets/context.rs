#![no_main]
//! Arbitrary bytes through the causal-context decoder (X-Version-Context / gRPC context): it may refuse them, never panic, hang or
//! allocate without bound, and what it accepts must behave.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ringkv_node::fuzzing::context(data);
});
