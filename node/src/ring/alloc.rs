//! Choosing a new node's tokens.
//!
//! Purely random tokens leave the most-loaded of 12 nodes near 1.3x the mean
//! share; so, like Cassandra's `allocate_tokens_for_local_replication_factor`,
//! a node that can see the ring places its tokens deliberately: each of its
//! `vnodes` tokens takes an equal slice (1/(k+1) of the space in total) from
//! the largest range of the currently most-loaded node. That is water-filling
//! from the top, so it only ever lowers the maximum. The first node of a ring
//! spreads its tokens evenly from a random offset.

use std::collections::HashMap;

use super::{Ring, Token};

/// A small, seedable PRNG (splitmix64): enough for token offsets and load
/// generation, and reproducible in property tests.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }
    /// Seeded from the clock, the process id and a stack address.
    pub fn from_entropy() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let local = 0u8;
        let addr = &local as *const u8 as u64;
        SplitMix64(nanos ^ (std::process::id() as u64).rotate_left(32) ^ addr.rotate_left(17))
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Uniform in [0, n).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }
}

/// Tokens for a node of `zone` joining `ring` (which must not contain it).
///
/// Replicas are spread over zones, so what a node stores is decided by the
/// ranges where it is the first node *of its zone* clockwise: the water-filling
/// therefore runs on the sub-ring of the node's own zone (the whole ring when
/// it is the zone's first node).
pub fn allocate_tokens(ring: &Ring, zone: &str, vnodes: u32, rng: &mut SplitMix64) -> Vec<Token> {
    let same_zone: Vec<_> = ring
        .nodes()
        .iter()
        .filter(|n| n.zone == zone)
        .cloned()
        .collect();
    if same_zone.is_empty() || same_zone.len() == ring.nodes().len() {
        water_fill(ring, vnodes, rng)
    } else {
        water_fill(&Ring::new(same_zone), vnodes, rng)
    }
}

fn water_fill(ring: &Ring, vnodes: u32, rng: &mut SplitMix64) -> Vec<Token> {
    let v = vnodes.max(1) as u64;
    if ring.is_empty() {
        let step = u64::MAX / v;
        let offset = rng.below(step.max(1));
        let mut out: Vec<Token> = (0..v).map(|i| offset.wrapping_add(i * step)).collect();
        out.sort_unstable();
        return out;
    }
    // Ranges per owner as (width, end token).
    let mut owned: HashMap<&str, Vec<(u64, Token)>> = HashMap::new();
    let mut load: HashMap<&str, u128> = HashMap::new();
    let ranges = ring.ranges();
    let single = ranges.len() == 1;
    for (start, end, node) in ranges {
        let width = if single {
            u64::MAX
        } else {
            end.wrapping_sub(start)
        };
        owned
            .entry(node.id.as_str())
            .or_default()
            .push((width, end));
        *load.entry(node.id.as_str()).or_default() += width as u128;
    }
    let k = ring.nodes().len() as u128 + 1;
    let target: u128 = (1u128 << 64) / k;
    let slice = (target / v as u128).max(1) as u64;
    let mut out = Vec::with_capacity(v as usize);
    for _ in 0..v {
        // Most-loaded owner; ties broken by id for determinism.
        let (&owner, _) = load
            .iter()
            .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
            .expect("ring not empty");
        let list = owned.get_mut(owner).expect("owner has ranges");
        // A random range of the owner that can give a whole slice (random, not
        // the largest, so the new node's neighbours vary and replica sets stay
        // mixed); the largest when none can.
        let big: Vec<usize> = (0..list.len()).filter(|&i| list[i].0 > slice).collect();
        let i = if big.is_empty() {
            (0..list.len())
                .max_by_key(|&i| list[i].0)
                .expect("owner has ranges")
        } else {
            big[rng.below(big.len() as u64) as usize]
        };
        let (width, end) = list[i];
        let start = end.wrapping_sub(width);
        let take = if width > slice {
            slice
        } else {
            (width / 2).max(1)
        };
        out.push(start.wrapping_add(take));
        list[i] = (width - take, end);
        *load.get_mut(owner).expect("owner") -= take as u128;
    }
    out.sort_unstable();
    out.dedup();
    out
}
