//! One [`Driver`](crate::load::Driver) per system. Every driver takes the
//! addresses of all the system's servers and opens `per_server` connections
//! to each; client `i` uses connection `i mod total`, so every system sees
//! the same client shape (C closed-loop clients multiplexed over the same
//! number of connections per server).

pub mod ringkv;

#[cfg(feature = "peer-servers")]
pub mod etcd;
#[cfg(feature = "peer-servers")]
pub mod redis;

/// The connection client `client` uses, round-robin over the pool.
pub(crate) fn pick<T: Clone>(pool: &[T], client: usize) -> T {
    pool[client % pool.len()].clone()
}
