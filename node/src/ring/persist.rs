//! A node's tokens are chosen once and kept in its data directory, so a
//! restart keeps ownership.

use std::path::{Path, PathBuf};

use super::Token;

const FILE: &str = "tokens";

#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

/// The persisted tokens, if this node has chosen them before.
pub fn load_tokens(dir: &Path) -> Result<Option<Vec<Token>>, TokenFileError> {
    if !dir.join(FILE).exists() {
        return Ok(None);
    }
    load_or_create_tokens(dir, Vec::new).map(|(t, _)| Some(t))
}

/// Loads the persisted tokens, or persists and returns `create()` when there
/// are none. The file is written to a temporary name, fsynced and renamed, so
/// a crash never leaves a half-written token list.
pub fn load_or_create_tokens(
    dir: &Path,
    create: impl FnOnce() -> Vec<Token>,
) -> Result<(Vec<Token>, bool), TokenFileError> {
    let path = dir.join(FILE);
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TokenFileError::Io { path, source }
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let mut tokens = Vec::new();
            for (i, line) in text
                .lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
            {
                let t = line
                    .trim()
                    .parse::<u64>()
                    .map_err(|e| TokenFileError::Corrupt {
                        path: path.clone(),
                        reason: format!("line {}: {e}", i + 1),
                    })?;
                tokens.push(t);
            }
            if tokens.is_empty() {
                return Err(TokenFileError::Corrupt {
                    path,
                    reason: "no tokens".into(),
                });
            }
            Ok((tokens, false))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let tokens = create();
            std::fs::create_dir_all(dir).map_err(io(dir))?;
            let tmp = dir.join(format!("{FILE}.tmp"));
            let body: String = tokens.iter().map(|t| format!("{t}\n")).collect();
            {
                use std::io::Write;
                let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
                f.write_all(body.as_bytes()).map_err(io(&tmp))?;
                f.sync_all().map_err(io(&tmp))?;
            }
            std::fs::rename(&tmp, &path).map_err(io(&path))?;
            Ok((tokens, true))
        }
        Err(e) => Err(TokenFileError::Io { path, source: e }),
    }
}
