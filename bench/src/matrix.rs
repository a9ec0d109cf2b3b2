//! What the peer benchmark runs: workloads and the matrix of points
//! (workload x key distribution x value size x clients).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::zipf::KeyDist;

/// A read/write mix (YCSB's A and B mixes, plus pure writes and reads).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum Workload {
    #[serde(rename = "write-only")]
    WriteOnly,
    #[serde(rename = "50-50")]
    Mixed,
    #[serde(rename = "95-5")]
    ReadMostly,
    #[serde(rename = "read-only")]
    ReadOnly,
}

impl Workload {
    pub const ALL: [Workload; 4] = [
        Workload::WriteOnly,
        Workload::Mixed,
        Workload::ReadMostly,
        Workload::ReadOnly,
    ];

    /// Fraction of requests that are reads.
    pub fn read_ratio(self) -> f64 {
        match self {
            Workload::WriteOnly => 0.0,
            Workload::Mixed => 0.5,
            Workload::ReadMostly => 0.95,
            Workload::ReadOnly => 1.0,
        }
    }

    /// The flag value.
    pub fn name(self) -> &'static str {
        match self {
            Workload::WriteOnly => "write-only",
            Workload::Mixed => "50-50",
            Workload::ReadMostly => "95-5",
            Workload::ReadOnly => "read-only",
        }
    }

    /// For tables.
    pub fn label(self) -> &'static str {
        match self {
            Workload::WriteOnly => "write only",
            Workload::Mixed => "50% read / 50% write",
            Workload::ReadMostly => "95% read / 5% write",
            Workload::ReadOnly => "read only",
        }
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Workload {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "write-only" | "write" => Ok(Workload::WriteOnly),
            "50-50" | "mixed" => Ok(Workload::Mixed),
            "95-5" | "read-mostly" => Ok(Workload::ReadMostly),
            "read-only" | "read" => Ok(Workload::ReadOnly),
            other => Err(format!(
                "unknown workload {other:?}: use write-only, 50-50, 95-5 or read-only"
            )),
        }
    }
}

/// One measured point of the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct Point {
    // Field order is the run order: one prefill per value size.
    pub value_bytes: usize,
    pub dist: KeyDist,
    pub workload: Workload,
    pub clients: usize,
}

impl fmt::Display for Point {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} B {} clients",
            self.workload, self.dist, self.value_bytes, self.clients
        )
    }
}

pub const SMALL_VALUE: usize = 100;
pub const LARGE_VALUE: usize = 10 * 1024;

/// Which points to run. The default is a reduced matrix that fits in 15
/// minutes on 2 cores for three systems: every workload at the core client
/// counts with uniform keys and 100 B values; zipfian keys and 10 KiB values
/// only for the write-only and 95/5 mixes; and the client sweep for the plot.
#[derive(Debug, Clone)]
pub struct MatrixSpec {
    pub workloads: Vec<Workload>,
    pub dists: Vec<KeyDist>,
    pub values: Vec<usize>,
    /// Client counts of the table.
    pub clients: Vec<usize>,
    /// Client counts of the sweep (empty: no sweep).
    pub sweep: Vec<usize>,
    /// The sweep runs this workload with uniform keys and the smallest value.
    pub sweep_workload: Workload,
    /// Every workload at every distribution and value size (longer).
    pub full: bool,
}

impl Default for MatrixSpec {
    fn default() -> Self {
        MatrixSpec {
            workloads: Workload::ALL.to_vec(),
            dists: KeyDist::ALL.to_vec(),
            values: vec![SMALL_VALUE, LARGE_VALUE],
            clients: vec![32, 128],
            sweep: vec![8, 16, 32, 64, 128, 256],
            sweep_workload: Workload::WriteOnly,
            full: false,
        }
    }
}

impl MatrixSpec {
    /// The value size and distribution of the primary points and the sweep:
    /// the smallest value, uniform keys when selected.
    fn base(&self) -> Option<(usize, KeyDist)> {
        let value = self.values.iter().min().copied()?;
        let dist = if self.dists.contains(&KeyDist::Uniform) {
            KeyDist::Uniform
        } else {
            *self.dists.first()?
        };
        Some((value, dist))
    }

    /// The points to run, in run order, without duplicates.
    pub fn points(&self) -> Vec<Point> {
        let mut values = self.values.clone();
        values.sort_unstable();
        values.dedup();
        let base = self.base();
        let base_value = base.map(|b| b.0);
        let base_dist = base.map(|b| b.1);
        // The secondary combinations (other distribution, bigger values) run
        // the write-only and 95/5 mixes only, unless those are not selected.
        let secondary: Vec<Workload> = {
            let w: Vec<Workload> = self
                .workloads
                .iter()
                .copied()
                .filter(|w| matches!(w, Workload::WriteOnly | Workload::ReadMostly))
                .collect();
            if w.is_empty() {
                self.workloads.clone()
            } else {
                w
            }
        };
        let mut out = Vec::new();
        for &value_bytes in &values {
            for &dist in &self.dists {
                let primary = Some(value_bytes) == base_value && Some(dist) == base_dist;
                // Zipfian x 10 KiB is left out of the reduced matrix.
                let diagonal = Some(value_bytes) == base_value || Some(dist) == base_dist;
                if !self.full && !diagonal {
                    continue;
                }
                let workloads = if primary || self.full {
                    &self.workloads
                } else {
                    &secondary
                };
                for &workload in workloads {
                    for &clients in &self.clients {
                        out.push(Point {
                            value_bytes,
                            dist,
                            workload,
                            clients,
                        });
                    }
                }
            }
        }
        if let Some((value_bytes, dist)) = base {
            for &clients in &self.sweep {
                out.push(Point {
                    value_bytes,
                    dist,
                    workload: self.sweep_workload,
                    clients,
                });
            }
        }
        out.retain(|p| p.clients > 0);
        out.sort();
        out.dedup();
        out
    }

    /// The sweep's points, ordered by clients.
    pub fn sweep_points(&self) -> Vec<Point> {
        let Some((value_bytes, dist)) = self.base() else {
            return Vec::new();
        };
        let mut clients: Vec<usize> = self.sweep.iter().copied().filter(|&c| c > 0).collect();
        clients.sort_unstable();
        clients.dedup();
        clients
            .into_iter()
            .map(|clients| Point {
                value_bytes,
                dist,
                workload: self.sweep_workload,
                clients,
            })
            .collect()
    }
}

/// Time one system's run takes: every point's warm-up and measurement, a
/// prefill per value size and the start and stop of the system.
pub fn estimate(points: &[Point], warmup: Duration, measure: Duration) -> Duration {
    let mut values: Vec<usize> = points.iter().map(|p| p.value_bytes).collect();
    values.dedup();
    let start_stop = Duration::from_secs(15);
    let prefill = Duration::from_secs(10);
    (warmup + measure) * points.len() as u32 + prefill * values.len() as u32 + start_stop
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_matrix_covers_the_issue_and_fits_fifteen_minutes() {
        let m = MatrixSpec::default();
        let pts = m.points();
        let has = |w, d, v, c| {
            pts.contains(&Point {
                value_bytes: v,
                dist: d,
                workload: w,
                clients: c,
            })
        };
        // Every workload at 32 and 128 clients, uniform, 100 B.
        for w in Workload::ALL {
            for c in [32, 128] {
                assert!(has(w, KeyDist::Uniform, SMALL_VALUE, c), "{w} {c}");
            }
        }
        // Zipfian and 10 KiB for writes and the 95/5 mix.
        for w in [Workload::WriteOnly, Workload::ReadMostly] {
            assert!(has(w, KeyDist::Zipfian, SMALL_VALUE, 32));
            assert!(has(w, KeyDist::Uniform, LARGE_VALUE, 128));
        }
        assert!(!has(Workload::ReadOnly, KeyDist::Zipfian, SMALL_VALUE, 32));
        assert!(!has(Workload::WriteOnly, KeyDist::Zipfian, LARGE_VALUE, 32));
        // The sweep shares its 32 and 128 points with the table.
        for c in [8, 16, 64, 256] {
            assert!(has(Workload::WriteOnly, KeyDist::Uniform, SMALL_VALUE, c));
        }
        assert_eq!(pts.len(), 8 + 4 + 4 + 4);
        let sweep: Vec<usize> = m.sweep_points().iter().map(|p| p.clients).collect();
        assert_eq!(sweep, vec![8, 16, 32, 64, 128, 256]);
        // Grouped by value size (one prefill each), small values first.
        assert!(pts.windows(2).all(|w| w[0].value_bytes <= w[1].value_bytes));
        // Three systems at the default 2 s warm-up + 8 s measurement.
        let one = estimate(&pts, Duration::from_secs(2), Duration::from_secs(8));
        assert!(one * 3 < Duration::from_secs(15 * 60), "{one:?} per system");
    }

    #[test]
    fn subsets_and_full() {
        let m = MatrixSpec {
            workloads: vec![Workload::ReadOnly],
            dists: vec![KeyDist::Zipfian],
            values: vec![LARGE_VALUE],
            clients: vec![32],
            sweep: vec![],
            ..Default::default()
        };
        assert_eq!(
            m.points(),
            vec![Point {
                value_bytes: LARGE_VALUE,
                dist: KeyDist::Zipfian,
                workload: Workload::ReadOnly,
                clients: 32
            }]
        );
        assert!(m.sweep_points().is_empty());
        let full = MatrixSpec {
            full: true,
            sweep: vec![],
            ..Default::default()
        };
        assert_eq!(full.points().len(), 4 * 2 * 2 * 2);
        // Only read-only selected: the secondary points run it too.
        let ro = MatrixSpec {
            workloads: vec![Workload::ReadOnly],
            sweep: vec![],
            ..Default::default()
        };
        assert_eq!(ro.points().len(), 3 * 2);
    }

    #[test]
    fn parses_workload_names() {
        for w in Workload::ALL {
            assert_eq!(w.name().parse::<Workload>(), Ok(w));
        }
        assert_eq!("read".parse::<Workload>(), Ok(Workload::ReadOnly));
        assert!("scan".parse::<Workload>().is_err());
        assert_eq!(Workload::ReadMostly.read_ratio(), 0.95);
    }
}
