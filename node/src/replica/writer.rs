//! The id this node mints causal dots under.
//!
//! A coordinator sends a write to the other replicas while its own copy is
//! still being synced. If it then crashes, the others hold a dot `(id, c)`
//! that this node lost, and counting on from its own records it would mint
//! `(id, c)` again for another value: the two would merge as one event and
//! one value would silently vanish. So after any stop that was not clean (a
//! crash, a kill, lost or wiped data) the node mints under a new id,
//! `node_id~epoch`, that no dot can have used before: the epoch is the wall
//! clock in milliseconds when the unclean start was noticed. A clean
//! shutdown leaves a marker and the id carries over. Node ids cannot
//! contain `~` (config validation), so writer ids never collide with them.

use std::io::Write as _;
use std::path::Path;

const EPOCH_FILE: &str = "writer_epoch";
const CLEAN_FILE: &str = "clean_shutdown";

/// How this start found the data directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// A node that never stored anything: its plain node id is new.
    New,
    /// A node the cluster knew whose data directory was lost or wiped.
    DataLost,
    /// A data directory of this node, from an earlier run.
    Existing,
}

/// The writer id for this run, recording it (and that a crash from now on
/// is unclean) in `dir`. `now_ms` becomes the epoch when a new one is needed.
pub fn writer_id(dir: &Path, node_id: &str, start: Start, now_ms: u64) -> std::io::Result<String> {
    let stored = match std::fs::read_to_string(dir.join(EPOCH_FILE)) {
        Ok(s) => s.trim().parse::<u64>().ok(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let clean = dir.join(CLEAN_FILE).exists();
    let epoch = match (stored, start) {
        (None, Start::New) => 0,
        (Some(e), Start::New | Start::Existing) if clean => e,
        // An unclean stop, an unreadable epoch, or lost data: a fresh id.
        _ => now_ms.max(1),
    };
    if stored != Some(epoch) {
        write_durably(&dir.join(EPOCH_FILE), epoch.to_string().as_bytes())?;
    }
    // From here on, stopping without `mark_clean` is unclean.
    match std::fs::remove_file(dir.join(CLEAN_FILE)) {
        Ok(()) => sync_dir(dir)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    Ok(if epoch == 0 {
        node_id.to_string()
    } else {
        format!("{node_id}~{epoch}")
    })
}

/// Records a clean shutdown: everything this run minted is durable.
pub fn mark_clean(dir: &Path) -> std::io::Result<()> {
    write_durably(&dir.join(CLEAN_FILE), b"clean\n")
}

fn write_durably(path: &Path, body: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(body)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_survives_clean_stops_and_changes_after_unclean_ones() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        // A new node mints under its plain id.
        assert_eq!(writer_id(dir, "n1", Start::New, 100).unwrap(), "n1");
        mark_clean(dir).unwrap();
        assert_eq!(writer_id(dir, "n1", Start::Existing, 200).unwrap(), "n1");
        // Killed (no marker): a new epoch.
        assert_eq!(
            writer_id(dir, "n1", Start::Existing, 300).unwrap(),
            "n1~300"
        );
        // That epoch carries over clean restarts...
        mark_clean(dir).unwrap();
        assert_eq!(
            writer_id(dir, "n1", Start::Existing, 400).unwrap(),
            "n1~300"
        );
        // ...and a second crash moves on again.
        assert_eq!(
            writer_id(dir, "n1", Start::Existing, 500).unwrap(),
            "n1~500"
        );
    }

    #[test]
    fn a_node_whose_data_was_lost_never_reuses_its_plain_id() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(
            writer_id(d.path(), "n2", Start::DataLost, 777).unwrap(),
            "n2~777"
        );
    }
}
