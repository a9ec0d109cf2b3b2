//! The engine's error type. Corruption always names the file and the byte
//! offset where the bad bytes start, so an operator can find them.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("corruption in {file} at offset {offset}: {reason}")]
    Corruption {
        file: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("database directory {0} is locked by another process")]
    Locked(PathBuf),
    #[error("the database is closed")]
    Closed,
    /// A background flush or compaction failed earlier; the database refuses
    /// further writes so nothing is acknowledged that may not be durable.
    #[error("background error, database is read-only: {0}")]
    Background(String),
    /// The disk is full (or over quota): writes are refused, nothing is
    /// lost, and the database retries its background work and takes
    /// writes again by itself once space is freed.
    #[error(
        "no space left for the database ({0}); writes are refused until space is freed, then resume by themselves"
    )]
    NoSpace(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corruption(
        file: impl Into<PathBuf>,
        offset: u64,
        reason: impl Into<String>,
    ) -> Error {
        Error::Corruption {
            file: file.into(),
            offset,
            reason: reason.into(),
        }
    }

    /// True for `Corruption`.
    pub fn is_corruption(&self) -> bool {
        matches!(self, Error::Corruption { .. })
    }

    /// True when the disk is full or over quota: `NoSpace`, or an I/O error
    /// of that kind (which background work retries instead of giving up).
    pub fn is_no_space(&self) -> bool {
        match self {
            Error::NoSpace(_) => true,
            Error::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
            ),
            _ => false,
        }
    }
}

/// Attach a path to an io::Result.
pub(crate) trait IoContext<T> {
    fn ctx(self, path: &std::path::Path) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, path: &std::path::Path) -> Result<T> {
        self.map_err(|e| Error::io(path, e))
    }
}
