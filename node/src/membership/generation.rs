//! The gossip generation of this node's incarnation. A restart must be a
//! newer incarnation than every earlier one: a node started once with a
//! clock that ran ahead, then restarted with the right clock, would
//! otherwise look older than its own previous incarnation (peers kept the
//! highest generation and saw it down for as long as it ran). The
//! generation is `max(stored + 1, now)`, persisted in the data directory
//! before the node gossips it — except that peers ignore generations more
//! than [`GENERATION_SKEW`] ahead of their clocks (a forged one must not
//! shadow the real node), so one more than half of that ahead is not used:
//! the node starts from its clock and says why (peers then prefer the
//! incarnation they hear from).

use std::path::Path;

use super::GENERATION_SKEW;

const FILE: &str = "gossip_generation";

/// This run's generation (`now_ms`: the wall clock in milliseconds),
/// recorded durably in `dir` before it is returned.
pub fn next_generation(dir: &Path, now_ms: u64) -> std::io::Result<u64> {
    let path = dir.join(FILE);
    let stored = match crate::durable::read_u64(&path) {
        Ok(s) => s,
        // Only a hand edit or a damaged disk gets here (the file is replaced
        // atomically): start from the clock rather than refuse to start.
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            tracing::warn!(error = %e, "ignoring an unreadable gossip generation");
            None
        }
        Err(e) => return Err(e),
    };
    let bound = now_ms.saturating_add(GENERATION_SKEW.as_millis() as u64 / 2);
    let generation = match stored {
        Some(s) if s.saturating_add(1) > bound => {
            tracing::warn!(
                stored = s,
                now = now_ms,
                "the last gossip generation is far ahead of the clock (it ran ahead then, or runs behind now); starting from the clock"
            );
            now_ms
        }
        Some(s) => now_ms.max(s.saturating_add(1)),
        None => now_ms,
    };
    crate::durable::write_file(&path, format!("{generation}\n").as_bytes())?;
    Ok(generation)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generation_only_grows() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(next_generation(d.path(), 1_000).unwrap(), 1_000);
        assert_eq!(next_generation(d.path(), 5_000).unwrap(), 5_000);
        // The clock went back (it ran ahead during the last start).
        assert_eq!(next_generation(d.path(), 2_000).unwrap(), 5_001);
        assert_eq!(next_generation(d.path(), 2_001).unwrap(), 5_002);
        // A start in the same millisecond as the last one still moves on.
        assert_eq!(next_generation(d.path(), 5_002).unwrap(), 5_003);
    }

    #[test]
    fn a_generation_peers_would_ignore_is_not_used() {
        let d = tempfile::tempdir().unwrap();
        let skew = GENERATION_SKEW.as_millis() as u64;
        // Within half the peers' bound: still one more than the last.
        std::fs::write(d.path().join(FILE), format!("{}", 1_000_000 + skew / 2 - 1)).unwrap();
        assert_eq!(
            next_generation(d.path(), 1_000_000).unwrap(),
            1_000_000 + skew / 2
        );
        // Beyond: the clock.
        std::fs::write(d.path().join(FILE), format!("{}", 1_000_000 + skew)).unwrap();
        assert_eq!(next_generation(d.path(), 1_000_000).unwrap(), 1_000_000);
        assert_eq!(next_generation(d.path(), 1_000_000).unwrap(), 1_000_001);
    }

    #[test]
    fn an_unreadable_file_starts_from_the_clock() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(FILE), "garbage").unwrap();
        assert_eq!(next_generation(d.path(), 7_000).unwrap(), 7_000);
        assert_eq!(next_generation(d.path(), 6_000).unwrap(), 7_001);
    }
}
