//! What clients did and saw, and the checks on it.
//!
//! Writers own their keys and write each key with increasing versions, the
//! value being `<key>@<version>`; a writer passes the context of its last
//! acknowledged write of the key, so acknowledged writes of one key form a
//! chain. Then:
//!
//! - a write is *acknowledged* when the client got success; it must never be
//!   lost: at the end every replica holds that version or a later one;
//! - a quorum read that *began after* a write of the key was acknowledged
//!   must return that version or a later one (never older);
//! - a read never returns a version nobody tried to write.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Failed(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Write {
        version: u64,
    },
    /// Versions of the live siblings returned.
    Read {
        versions: Vec<u64>,
    },
}

#[derive(Debug, Clone)]
pub struct Op {
    pub key: String,
    pub kind: Kind,
    /// Since the history began.
    pub start: Duration,
    pub end: Duration,
    pub outcome: Outcome,
}

pub fn value(key: &str, version: u64) -> Vec<u8> {
    format!("{key}@{version}").into_bytes()
}

/// The version in a value written by `value`, if it is one.
pub fn version_of(key: &str, v: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(v).ok()?;
    let (k, ver) = s.rsplit_once('@')?;
    (k == key).then(|| ver.parse().ok()).flatten()
}

#[derive(Debug)]
pub struct History {
    t0: Instant,
    ops: Mutex<Vec<Op>>,
}

impl Default for History {
    fn default() -> Self {
        History {
            t0: Instant::now(),
            ops: Mutex::new(Vec::new()),
        }
    }
}

/// A check that failed, in words.
pub type Violation = String;

impl History {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn now(&self) -> Duration {
        self.t0.elapsed()
    }

    pub fn record(&self, key: &str, kind: Kind, start: Duration, outcome: Outcome) {
        let op = Op {
            key: key.to_string(),
            kind,
            start,
            end: self.now(),
            outcome,
        };
        self.ops.lock().unwrap().push(op);
    }

    pub fn ops(&self) -> Vec<Op> {
        self.ops.lock().unwrap().clone()
    }

    pub fn writes(&self) -> (usize, usize) {
        let ops = self.ops.lock().unwrap();
        let w: Vec<_> = ops
            .iter()
            .filter(|o| matches!(o.kind, Kind::Write { .. }))
            .collect();
        let failed = w.iter().filter(|o| o.outcome != Outcome::Ok).count();
        (w.len(), failed)
    }

    pub fn reads(&self) -> (usize, usize) {
        let ops = self.ops.lock().unwrap();
        let r: Vec<_> = ops
            .iter()
            .filter(|o| matches!(o.kind, Kind::Read { .. }))
            .collect();
        let failed = r.iter().filter(|o| o.outcome != Outcome::Ok).count();
        (r.len(), failed)
    }

    pub fn failed_writes(&self) -> Vec<Op> {
        self.ops()
            .into_iter()
            .filter(|o| matches!(o.kind, Kind::Write { .. }) && o.outcome != Outcome::Ok)
            .collect()
    }

    /// Per key: (last acknowledged version, highest version attempted).
    pub fn expected(&self) -> BTreeMap<String, (Option<u64>, u64)> {
        let mut m: BTreeMap<String, (Option<u64>, u64)> = BTreeMap::new();
        for o in self.ops() {
            if let Kind::Write { version } = o.kind {
                let e = m.entry(o.key.clone()).or_insert((None, 0));
                e.1 = e.1.max(version);
                if o.outcome == Outcome::Ok {
                    e.0 = Some(e.0.map_or(version, |v| v.max(version)));
                }
            }
        }
        m
    }

    /// Reads that saw the past: older than a write acknowledged before the
    /// read began, or a version nobody wrote.
    pub fn stale_reads(&self) -> Vec<Violation> {
        let ops = self.ops();
        let mut acked: BTreeMap<&str, Vec<(Duration, u64)>> = BTreeMap::new();
        let mut attempted: BTreeMap<&str, u64> = BTreeMap::new();
        for o in &ops {
            if let Kind::Write { version } = o.kind {
                let a = attempted.entry(&o.key).or_default();
                *a = (*a).max(version);
                if o.outcome == Outcome::Ok {
                    acked.entry(&o.key).or_default().push((o.end, version));
                }
            }
        }
        let mut bad = Vec::new();
        for o in &ops {
            let Kind::Read { versions } = &o.kind else {
                continue;
            };
            if o.outcome != Outcome::Ok {
                continue;
            }
            let floor = acked.get(o.key.as_str()).and_then(|ws| {
                ws.iter()
                    .filter(|(end, _)| *end < o.start)
                    .map(|(_, v)| *v)
                    .max()
            });
            let seen = versions.iter().copied().max();
            if let Some(f) = floor
                && seen.is_none_or(|s| s < f)
            {
                bad.push(format!(
                    "read of {} at {:?} returned {:?}, but version {f} was acknowledged before it began",
                    o.key, o.start, versions
                ));
            }
            let max_attempted = attempted.get(o.key.as_str()).copied().unwrap_or(0);
            if let Some(s) = seen
                && s > max_attempted
            {
                bad.push(format!(
                    "read of {} returned version {s}, which nobody wrote",
                    o.key
                ));
            }
        }
        bad
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    fn h(ops: &[(&str, Kind, u64, u64, bool)]) -> History {
        let hist = History::new();
        {
            let mut v = hist.ops.lock().unwrap();
            for (k, kind, s, e, ok) in ops {
                v.push(Op {
                    key: k.to_string(),
                    kind: kind.clone(),
                    start: at(*s),
                    end: at(*e),
                    outcome: if *ok {
                        Outcome::Ok
                    } else {
                        Outcome::Failed("x".into())
                    },
                });
            }
        }
        hist
    }

    #[test]
    fn a_read_older_than_an_acknowledged_write_is_flagged() {
        let hist = h(&[
            ("k", Kind::Write { version: 1 }, 0, 10, true),
            ("k", Kind::Write { version: 2 }, 20, 30, true),
            ("k", Kind::Read { versions: vec![1] }, 40, 50, true),
        ]);
        assert_eq!(hist.stale_reads().len(), 1);
    }

    #[test]
    fn concurrent_reads_may_see_either_version() {
        let hist = h(&[
            ("k", Kind::Write { version: 1 }, 0, 10, true),
            ("k", Kind::Write { version: 2 }, 20, 30, true),
            // Began before version 2 was acknowledged.
            ("k", Kind::Read { versions: vec![1] }, 25, 50, true),
            ("k", Kind::Read { versions: vec![2] }, 25, 50, true),
        ]);
        assert!(hist.stale_reads().is_empty());
    }

    #[test]
    fn a_read_of_nothing_after_an_ack_and_phantoms_are_flagged() {
        let hist = h(&[
            ("k", Kind::Write { version: 3 }, 0, 10, true),
            ("k", Kind::Read { versions: vec![] }, 20, 30, true),
            ("k", Kind::Read { versions: vec![9] }, 20, 30, true),
        ]);
        assert_eq!(hist.stale_reads().len(), 2);
    }

    #[test]
    fn expected_tracks_acknowledged_and_attempted() {
        let hist = h(&[
            ("k", Kind::Write { version: 1 }, 0, 10, true),
            ("k", Kind::Write { version: 2 }, 20, 30, false),
        ]);
        assert_eq!(hist.expected()["k"], (Some(1), 2));
        assert_eq!(hist.writes(), (2, 1));
        assert_eq!(version_of("k", &value("k", 42)), Some(42));
        assert_eq!(version_of("k", b"other@1"), None);
    }
}
