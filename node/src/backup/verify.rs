//! Verification: read a backup's manifests and every object they name back,
//! checking size and SHA-256. Problems name the object; all are reported,
//! not just the first.

use std::path::Path;

use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStoreExt;
use tokio::io::AsyncWriteExt;

use super::manifest::{ManifestFile, NodeManifest};
use super::target::{Target, backup_dir, manifest_object, validate_id};
use super::{BackupError, hex};

/// Objects read at once.
const PARALLEL: usize = 4;

/// Something wrong with one object of a backup.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    Missing {
        object: String,
    },
    Corrupt {
        object: String,
        expected_size: u64,
        size: u64,
        expected_sha256: String,
        sha256: String,
    },
    Unreadable {
        object: String,
        error: String,
    },
}

impl Problem {
    pub fn object(&self) -> &str {
        match self {
            Problem::Missing { object }
            | Problem::Corrupt { object, .. }
            | Problem::Unreadable { object, .. } => object,
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::Missing { object } => write!(f, "object {object} is missing"),
            Problem::Corrupt {
                object,
                expected_size,
                size,
                expected_sha256,
                sha256,
            } => write!(
                f,
                "object {object} is corrupt: {size} bytes with SHA-256 {sha256}, the manifest says {expected_size} bytes with SHA-256 {expected_sha256}"
            ),
            Problem::Unreadable { object, error } => {
                write!(f, "object {object} cannot be read: {error}")
            }
        }
    }
}

/// What a verification (or a verified download) covered.
#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    pub backup_id: String,
    pub nodes: Vec<String>,
    pub files: u64,
    pub bytes: u64,
}

/// Every node manifest of backup `backup_id`, by node id.
pub async fn read_manifests(
    target: &Target,
    backup_id: &str,
) -> Result<Vec<NodeManifest>, BackupError> {
    validate_id("backup id", backup_id)?;
    let prefix = target.path(&format!("{}/", backup_dir(backup_id)));
    let listed: Vec<object_store::ObjectMeta> = target
        .store()
        .list(Some(&prefix))
        .try_collect()
        .await
        .map_err(|e| BackupError::Store {
            url: target.url.clone(),
            source: e,
        })?;
    let mut out = Vec::new();
    for meta in listed {
        let rel = target.relative(&meta.location);
        let Some(node) = rel
            .strip_prefix(&format!("{}/", backup_dir(backup_id)))
            .and_then(|n| n.strip_suffix(".json"))
        else {
            continue;
        };
        let m = read_manifest(target, &rel).await?;
        if m.backup_id != backup_id || m.node_id != node {
            return Err(BackupError::BadManifest {
                object: rel,
                why: format!("it is node {:?} of backup {:?}", m.node_id, m.backup_id),
            });
        }
        out.push(m);
    }
    if out.is_empty() {
        return Err(BackupError::NotFound {
            backup_id: backup_id.to_string(),
            url: target.url.clone(),
        });
    }
    out.sort_by(|a, b| a.node_id.cmp(&b.node_id));
    Ok(out)
}

/// One manifest, by its relative object name.
pub async fn read_manifest(target: &Target, rel: &str) -> Result<NodeManifest, BackupError> {
    let err = |e| BackupError::Object {
        object: rel.to_string(),
        source: e,
    };
    let got = target.store().get(&target.path(rel)).await.map_err(err)?;
    let bytes = got.bytes().await.map_err(err)?;
    NodeManifest::parse(rel, &bytes)
}

/// Reads one object, checking it against `file`; writes it to `dest` when
/// given. `on_bytes` sees the bytes as they arrive.
pub async fn fetch_checked(
    target: &Target,
    file: &ManifestFile,
    dest: Option<&Path>,
    on_bytes: &(dyn Fn(u64) + Send + Sync),
) -> Result<(), Problem> {
    let object = file.object.clone();
    let unreadable = |e: String| Problem::Unreadable {
        object: object.clone(),
        error: e,
    };
    let got = match target.store().get(&target.path(&file.object)).await {
        Ok(g) => g,
        Err(object_store::Error::NotFound { .. }) => {
            return Err(Problem::Missing {
                object: object.clone(),
            });
        }
        Err(e) => return Err(unreadable(e.to_string())),
    };
    let mut out = match dest {
        Some(p) => Some(
            tokio::fs::File::create(p)
                .await
                .map_err(|e| unreadable(format!("writing {}: {e}", p.display())))?,
        ),
        None => None,
    };
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut size = 0u64;
    let mut stream = got.into_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| unreadable(e.to_string()))?;
        ctx.update(&chunk);
        size += chunk.len() as u64;
        if let Some(f) = out.as_mut() {
            f.write_all(&chunk)
                .await
                .map_err(|e| unreadable(format!("writing a local copy: {e}")))?;
        }
        on_bytes(chunk.len() as u64);
    }
    if let Some(mut f) = out {
        f.flush()
            .await
            .map_err(|e| unreadable(format!("writing a local copy: {e}")))?;
    }
    let sha256 = hex(ctx.finish().as_ref());
    if size != file.size || sha256 != file.sha256 {
        return Err(Problem::Corrupt {
            object,
            expected_size: file.size,
            size,
            expected_sha256: file.sha256.clone(),
            sha256,
        });
    }
    Ok(())
}

/// Checks every object of backup `backup_id`. `Err(Unverified)` lists every
/// missing or corrupt object.
pub async fn verify(target: &Target, backup_id: &str) -> Result<VerifyReport, BackupError> {
    let manifests = read_manifests(target, backup_id).await?;
    let files: Vec<ManifestFile> = manifests
        .iter()
        .flat_map(|m| m.files.iter().cloned())
        .collect();
    // Owned items and an async block: a closure borrowing them is not
    // general enough for a Send future (rust-lang/rust#102211).
    let problems: Vec<Problem> = futures::stream::iter(files.clone())
        .map(|f| async move { fetch_checked(target, &f, None, &|_| {}).await })
        .buffer_unordered(PARALLEL)
        .filter_map(|r| async move { r.err() })
        .collect()
        .await;
    if !problems.is_empty() {
        let mut problems = problems;
        problems.sort_by(|a, b| a.object().cmp(b.object()));
        return Err(BackupError::Unverified {
            backup_id: backup_id.to_string(),
            problems,
        });
    }
    Ok(VerifyReport {
        backup_id: backup_id.to_string(),
        nodes: manifests.iter().map(|m| m.node_id.clone()).collect(),
        files: files.len() as u64,
        bytes: files.iter().map(|f| f.size).sum(),
    })
}

/// The manifest name of every node of a backup (for messages).
pub fn manifest_names(backup_id: &str, manifests: &[NodeManifest]) -> Vec<String> {
    manifests
        .iter()
        .map(|m| manifest_object(backup_id, &m.node_id))
        .collect()
}
