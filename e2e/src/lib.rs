//! End-to-end test harness: real `ringkv-node` processes on loopback or in
//! their own network namespaces, faults (SIGKILL, SIGSTOP, wiped data,
//! network partitions), and a history checker for what clients observed.
//!
//! The tests live in `tests/`; this library is what they share.

pub mod cluster;
pub mod history;
pub mod netns;
pub mod verify;
pub mod workload;

/// Skip a test (return early) with a printed reason when `cond` holds.
#[macro_export]
macro_rules! skip_if {
    ($cond:expr, $($why:tt)+) => {
        if $cond {
            eprintln!("SKIPPED: {}", format!($($why)+));
            return;
        }
    };
}
