//! The gossip generation of this node's incarnation. Peers keep the state
//! of a node's highest generation and ignore lower ones, so a restart must
//! never go back: a node started once with a clock that ran ahead, then
//! restarted with the right clock, would otherwise be shadowed by its own
//! older incarnation and seen down for as long as it runs. The generation
//! is `max(stored + 1, now)`, persisted in the data directory before the
//! node gossips it.

use std::path::Path;

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
    let generation = match stored {
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
    fn an_unreadable_file_starts_from_the_clock() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(FILE), "garbage").unwrap();
        assert_eq!(next_generation(d.path(), 7_000).unwrap(), 7_000);
        assert_eq!(next_generation(d.path(), 6_000).unwrap(), 7_001);
    }
}
