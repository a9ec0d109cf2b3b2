//! Key choosers for the peer benchmark: uniform, and YCSB's scrambled
//! Zipfian (Gray et al., "Quickly generating billion-record synthetic
//! databases"; theta 0.99 as in YCSB). Ranks are scattered over the key space
//! by a hash so the hottest keys do not sit next to each other on a ring or
//! in a B-tree.

use std::fmt;
use std::str::FromStr;

use crate::workload::{Rng, mix};

/// YCSB's default skew.
pub const YCSB_THETA: f64 = 0.99;

/// How keys are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyDist {
    Uniform,
    Zipfian,
}

impl KeyDist {
    pub const ALL: [KeyDist; 2] = [KeyDist::Uniform, KeyDist::Zipfian];

    pub fn name(self) -> &'static str {
        match self {
            KeyDist::Uniform => "uniform",
            KeyDist::Zipfian => "zipfian",
        }
    }
}

impl fmt::Display for KeyDist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for KeyDist {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "uniform" => Ok(KeyDist::Uniform),
            "zipfian" | "zipf" => Ok(KeyDist::Zipfian),
            other => Err(format!(
                "unknown key distribution {other:?}: use uniform or zipfian"
            )),
        }
    }
}

/// The Zipfian rank generator over `0..n` (rank 0 is the hottest).
#[derive(Debug, Clone)]
pub struct Zipf {
    n: u64,
    theta: f64,
    alpha: f64,
    zetan: f64,
    eta: f64,
}

/// zeta(k, theta) = sum over i in 1..=k of 1 / i^theta.
pub fn zeta(k: u64, theta: f64) -> f64 {
    (1..=k).map(|i| 1.0 / (i as f64).powf(theta)).sum()
}

impl Zipf {
    /// `n` must be at least 2 and `theta` in (0, 1).
    pub fn new(n: u64, theta: f64) -> Zipf {
        assert!(n >= 2, "a Zipfian needs at least 2 items");
        assert!(theta > 0.0 && theta < 1.0, "theta must be in (0, 1)");
        let zetan = zeta(n, theta);
        let zeta2 = zeta(2, theta);
        Zipf {
            n,
            theta,
            alpha: 1.0 / (1.0 - theta),
            zetan,
            eta: (1.0 - (2.0 / n as f64).powf(1.0 - theta)) / (1.0 - zeta2 / zetan),
        }
    }

    /// The exact probability of rank `r` (for tests and docs).
    pub fn probability(&self, r: u64) -> f64 {
        1.0 / ((r + 1) as f64).powf(self.theta) / self.zetan
    }

    /// The rank for a uniform draw `u` in [0, 1).
    pub fn rank(&self, u: f64) -> u64 {
        let uz = u * self.zetan;
        if uz < 1.0 {
            0
        } else if uz < 1.0 + 0.5f64.powf(self.theta) {
            1
        } else {
            let r = (self.n as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64;
            r.min(self.n - 1)
        }
    }

    /// A key in `0..n`: a Zipfian rank, scrambled.
    pub fn next(&self, rng: &mut Rng) -> u64 {
        scramble(self.rank(rng.next_f64()), self.n)
    }
}

/// Where rank `r` lives in a key space of `n` keys (YCSB hashes the rank
/// too; several ranks may share a key, as there).
pub fn scramble(r: u64, n: u64) -> u64 {
    mix(r) % n
}

/// Draws keys of `0..n` with a distribution.
#[derive(Debug, Clone)]
pub enum KeyChooser {
    Uniform(u64),
    Zipf(Zipf),
}

impl KeyChooser {
    pub fn new(dist: KeyDist, n: u64) -> KeyChooser {
        match dist {
            KeyDist::Uniform => KeyChooser::Uniform(n.max(1)),
            KeyDist::Zipfian => KeyChooser::Zipf(Zipf::new(n.max(2), YCSB_THETA)),
        }
    }

    pub fn next(&self, rng: &mut Rng) -> u64 {
        match self {
            KeyChooser::Uniform(n) => rng.below(*n),
            KeyChooser::Zipf(z) => z.next(rng),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const N: u64 = 10_000;
    const DRAWS: usize = 400_000;

    fn rank_counts(z: &Zipf, seed: u64) -> Vec<u64> {
        let mut rng = Rng::new(seed);
        let mut c = vec![0u64; N as usize];
        for _ in 0..DRAWS {
            c[z.rank(rng.next_f64()) as usize] += 1;
        }
        c
    }

    #[test]
    fn hottest_ranks_follow_the_zipf_law() {
        let z = Zipf::new(N, YCSB_THETA);
        let c = rank_counts(&z, 42);
        // Ranks 0 and 1 are exact in Gray's method; later ranks approximate.
        for r in 0..2 {
            let want = z.probability(r) * DRAWS as f64;
            let got = c[r as usize] as f64;
            assert!(
                (got - want).abs() / want < 0.05,
                "rank {r}: {got} draws, expected ~{want:.0}"
            );
        }
        // With theta .99 over 10,000 keys the top 1% of ranks take about half
        // of all requests (zeta(100)/zeta(10000) ~ 0.53); uniform would give 1%.
        let top: u64 = c[..100].iter().sum();
        let share = top as f64 / DRAWS as f64;
        let want = zeta(100, YCSB_THETA) / zeta(N, YCSB_THETA);
        assert!(
            (share - want).abs() < 0.05,
            "top 100 ranks: {share:.3} of draws, expected ~{want:.3}"
        );
        // Monotone on the head: rank 0 > rank 1 > rank 10 > rank 1000.
        assert!(c[0] > c[1] && c[1] > c[10] && c[10] > c[1000]);
    }

    #[test]
    fn ranks_and_keys_stay_in_range() {
        let z = Zipf::new(N, YCSB_THETA);
        assert_eq!(z.rank(0.0), 0);
        assert!(z.rank(0.999_999_999) < N);
        let k = KeyChooser::new(KeyDist::Zipfian, N);
        let u = KeyChooser::new(KeyDist::Uniform, N);
        let mut rng = Rng::new(7);
        for _ in 0..100_000 {
            assert!(k.next(&mut rng) < N);
            assert!(u.next(&mut rng) < N);
        }
    }

    #[test]
    fn scrambling_scatters_the_hot_keys() {
        let k = KeyChooser::new(KeyDist::Zipfian, N);
        let mut rng = Rng::new(9);
        let mut c = vec![0u64; N as usize];
        for _ in 0..DRAWS {
            c[k.next(&mut rng) as usize] += 1;
        }
        let mut hot: Vec<u64> = (0..N).collect();
        hot.sort_by_key(|&i| std::cmp::Reverse(c[i as usize]));
        let top10 = &hot[..10];
        // The hottest key is where rank 0 was scrambled to.
        assert_eq!(top10[0], scramble(0, N));
        // Not the first keys, and spread over the key space.
        assert!(top10.iter().any(|&i| i >= 10));
        let (lo, hi) = (top10.iter().min().unwrap(), top10.iter().max().unwrap());
        assert!(hi - lo > N / 4, "hot keys clustered in {lo}..{hi}");
    }

    #[test]
    fn uniform_is_flat() {
        let k = KeyChooser::new(KeyDist::Uniform, 100);
        let mut rng = Rng::new(3);
        let mut c = [0u64; 100];
        for _ in 0..200_000 {
            c[k.next(&mut rng) as usize] += 1;
        }
        let (min, max) = (c.iter().min().unwrap(), c.iter().max().unwrap());
        assert!(*min > 1_700 && *max < 2_300, "uniform counts {min}..{max}");
    }

    #[test]
    fn parses_names() {
        assert_eq!("zipf".parse::<KeyDist>(), Ok(KeyDist::Zipfian));
        assert_eq!("uniform".parse::<KeyDist>(), Ok(KeyDist::Uniform));
        assert!(
            "gaussian"
                .parse::<KeyDist>()
                .unwrap_err()
                .contains("gaussian")
        );
    }
}
