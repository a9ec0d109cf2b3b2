//! Small files in the data directory that must survive a crash whole:
//! written to a temporary file, fsynced, renamed over the old one, and the
//! directory fsynced, so a reader finds either the old or the new contents.

use std::io::Write as _;
use std::path::Path;

/// Replaces `path` with `body` atomically and durably.
pub(crate) fn write_file(path: &Path, body: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(body)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(path.parent().unwrap_or(Path::new(".")))?.sync_all()
}

/// The number stored in `path`: `Ok(None)` when there is no file, an
/// `InvalidData` error when it holds something else.
pub(crate) fn read_u64(path: &Path) -> std::io::Result<Option<u64>> {
    match std::fs::read_to_string(path) {
        Ok(s) => s.trim().parse::<u64>().map(Some).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "{}: expected a number, found {:?} ({e})",
                    path.display(),
                    s.trim()
                ),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}
