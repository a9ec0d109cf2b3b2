//! Cache-line-blocked Bloom filter: each key touches one 64-byte block, so a
//! negative lookup costs one cache miss. With 10 bits per key it gives about
//! 1% false positives (a blocked filter is slightly worse than a classic one
//! at equal size; the test below measures it).
//!
//! Layout: `block{num_blocks}` (64 bytes each) `k:u8` `num_blocks:u32`.

const BLOCK_BITS: u32 = 512;

pub(crate) fn build(hashes: &[u64], bits_per_key: u32) -> Vec<u8> {
    let bits = (hashes.len() as u64 * u64::from(bits_per_key)).max(u64::from(BLOCK_BITS));
    let num_blocks = bits
        .div_ceil(u64::from(BLOCK_BITS))
        .min(u64::from(u32::MAX)) as u32;
    // k = bits_per_key * ln 2, the optimum for a classic filter.
    let k = ((f64::from(bits_per_key) * 0.69).round() as u32).clamp(1, 30) as u8;
    let mut out = vec![0u8; num_blocks as usize * 64];
    for &h in hashes {
        let (block, mut h2, delta) = split(h, num_blocks);
        let base = block as usize * 64;
        for _ in 0..k {
            let bit = h2 % BLOCK_BITS;
            out[base + (bit / 8) as usize] |= 1 << (bit % 8);
            h2 = h2.wrapping_add(delta);
        }
    }
    out.push(k);
    out.extend_from_slice(&num_blocks.to_le_bytes());
    out
}

fn split(h: u64, num_blocks: u32) -> (u32, u32, u32) {
    let hi = (h >> 32) as u32;
    let lo = h as u32;
    // Multiply-shift maps `hi` onto [0, num_blocks) without a division.
    let block = ((u64::from(hi) * u64::from(num_blocks)) >> 32) as u32;
    (block, lo, lo.rotate_right(17) | 1)
}

/// A decoded filter.
#[derive(Debug)]
pub(crate) struct Bloom {
    bits: Vec<u8>,
    k: u8,
    num_blocks: u32,
}

impl Bloom {
    /// `None` when the bytes are not a filter this code wrote.
    pub(crate) fn decode(mut data: Vec<u8>) -> Option<Bloom> {
        let n = data.len();
        if n < 5 {
            return None;
        }
        let num_blocks = u32::from_le_bytes(data[n - 4..].try_into().ok()?);
        let k = data[n - 5];
        if k == 0 || k > 30 || (num_blocks as usize).checked_mul(64)? != n - 5 || num_blocks == 0 {
            return None;
        }
        data.truncate(n - 5);
        Some(Bloom {
            bits: data,
            k,
            num_blocks,
        })
    }

    pub(crate) fn may_contain(&self, h: u64) -> bool {
        let (block, mut h2, delta) = split(h, self.num_blocks);
        let base = block as usize * 64;
        for _ in 0..self.k {
            let bit = h2 % BLOCK_BITS;
            if self.bits[base + (bit / 8) as usize] & (1 << (bit % 8)) == 0 {
                return false;
            }
            h2 = h2.wrapping_add(delta);
        }
        true
    }

    pub(crate) fn memory(&self) -> usize {
        self.bits.capacity() + std::mem::size_of::<Bloom>()
    }
}

pub(crate) fn hash(key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_false_negatives_and_about_one_percent_false_positives() {
        let n = 100_000u64;
        let keys: Vec<u64> = (0..n)
            .map(|i| hash(format!("key-{i}").as_bytes()))
            .collect();
        let f = Bloom::decode(build(&keys, 10)).unwrap();
        assert!(keys.iter().all(|&h| f.may_contain(h)));
        let fp = (0..n)
            .filter(|i| f.may_contain(hash(format!("absent-{i}").as_bytes())))
            .count() as f64
            / n as f64;
        // Measured ~1.1% with 10 bits/key; fail well before it drifts.
        assert!(fp < 0.015, "false positive rate {fp}");
        assert!(
            fp > 0.0005,
            "suspiciously few false positives {fp}: is the filter checked?"
        );
    }

    #[test]
    fn rejects_malformed_filters() {
        assert!(Bloom::decode(vec![]).is_none());
        assert!(Bloom::decode(vec![0; 69]).is_none());
        let mut ok = build(&[1, 2, 3], 10);
        assert!(Bloom::decode(ok.clone()).is_some());
        ok.pop();
        assert!(Bloom::decode(ok).is_none());
    }
}
