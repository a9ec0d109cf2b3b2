//! Uploading a snapshot: hash every file (SHA-256, cached per inode: a
//! table's hard links share one), list what the node already has in the
//! bucket (one listing), upload only files whose `name.sha256` object is not
//! there, rate-limited; then the manifest, last.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::{ObjectStoreExt, PutPayload, WriteMultipart};
use parking_lot::Mutex;
use tokio::io::AsyncReadExt;

use super::manifest::ManifestFile;
use super::snapshot::SnapshotFile;
use super::target::{Target, file_object};
use super::{BackupError, hex};
use crate::ratelimit::RateLimiter;

/// Files up to this size go up in one PUT; bigger ones in parts.
const SINGLE_PUT_MAX: u64 = 8 << 20;
/// Multipart part size (S3's minimum is 5 MiB).
const PART_BYTES: usize = 8 << 20;
/// Read (and rate-limit) granularity.
const CHUNK: usize = 1 << 20;

/// Progress callbacks of an upload.
pub trait Progress: Send + Sync {
    /// Totals are known (after hashing).
    fn totals(&self, files: u32, bytes: u64);
    fn phase(&self, phase: &'static str);
    /// Bytes of a file sent.
    fn sent(&self, bytes: u64);
    /// A file is done: uploaded, or skipped as already stored.
    fn file_done(&self, size: u64, uploaded: bool);
}

/// SHA-256 of files, remembered by (device, inode, size, mtime): a
/// snapshot's tables are hard links of the live ones, and immutable.
#[derive(Debug, Default)]
pub struct HashCache(Mutex<HashMap<(u64, u64, u64, i64), String>>);

impl HashCache {
    /// The SHA-256 (hex) of `path`. Blocking.
    pub fn sha256(&self, path: &Path) -> Result<String, BackupError> {
        let md = std::fs::metadata(path).map_err(|e| BackupError::io(path, e))?;
        let key = (
            md.dev(),
            md.ino(),
            md.len(),
            md.mtime_nsec() + md.mtime() * 1_000_000_000,
        );
        if let Some(h) = self.0.lock().get(&key) {
            return Ok(h.clone());
        }
        let h = sha256_file(path)?;
        let mut map = self.0.lock();
        // Bounded: entries of tables long gone are useless.
        if map.len() > 100_000 {
            map.clear();
        }
        map.insert(key, h.clone());
        Ok(h)
    }
}

/// SHA-256 (hex) of a file's contents. Blocking.
pub fn sha256_file(path: &Path) -> Result<String, BackupError> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| BackupError::io(path, e))?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = f.read(&mut buf).map_err(|e| BackupError::io(path, e))?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
    }
    Ok(hex(ctx.finish().as_ref()))
}

/// What an upload did.
#[derive(Debug, Clone, Default)]
pub struct Uploaded {
    pub files: Vec<ManifestFile>,
    pub uploaded_files: u64,
    pub uploaded_bytes: u64,
}

/// Uploads `files` of node `node_id` that the bucket does not hold yet.
pub async fn upload_files(
    target: &Target,
    node_id: &str,
    files: Vec<SnapshotFile>,
    hashes: Arc<HashCache>,
    limiter: &RateLimiter,
    progress: &dyn Progress,
) -> Result<Uploaded, BackupError> {
    progress.phase("hashing");
    let hashed = {
        let files = files.clone();
        tokio::task::spawn_blocking(move || {
            files
                .iter()
                .map(|f| hashes.sha256(&f.path))
                .collect::<Result<Vec<_>, _>>()
        })
        .await
        .map_err(|e| BackupError::Task(e.to_string()))??
    };
    progress.totals(files.len() as u32, files.iter().map(|f| f.size).sum());
    progress.phase("uploading");
    let existing = stored_objects(target, &format!("files/{node_id}/")).await?;
    let mut out = Uploaded::default();
    for (f, sha) in files.into_iter().zip(hashed) {
        let object = file_object(node_id, &f.rel, &sha);
        if existing.get(&object) == Some(&f.size) {
            progress.file_done(f.size, false);
        } else {
            let got = put_file(target, &object, &f.path, f.size, limiter, progress).await?;
            if got != sha {
                // The file changed under us (never, for a snapshot): refuse
                // to name an object whose contents do not match.
                let _ = target.store().delete(&target.path(&object)).await;
                return Err(BackupError::io(
                    &f.path,
                    std::io::Error::other("file changed while it was uploaded"),
                ));
            }
            out.uploaded_files += 1;
            out.uploaded_bytes += f.size;
            progress.file_done(f.size, true);
        }
        out.files.push(ManifestFile {
            path: f.rel,
            object,
            size: f.size,
            sha256: sha,
        });
    }
    Ok(out)
}

/// Objects below `rel_prefix` (relative names) and their sizes.
pub async fn stored_objects(
    target: &Target,
    rel_prefix: &str,
) -> Result<HashMap<String, u64>, BackupError> {
    let prefix = target.path(rel_prefix);
    let listed: Vec<object_store::ObjectMeta> = target
        .store()
        .list(Some(&prefix))
        .try_collect()
        .await
        .map_err(|e| BackupError::Store {
            url: target.url.clone(),
            source: e,
        })?;
    Ok(listed
        .into_iter()
        .map(|m| (target.relative(&m.location), m.size))
        .collect())
}

/// Uploads one file; returns the SHA-256 of what was sent.
async fn put_file(
    target: &Target,
    object: &str,
    path: &Path,
    size: u64,
    limiter: &RateLimiter,
    progress: &dyn Progress,
) -> Result<String, BackupError> {
    let loc = target.path(object);
    let obj_err = |e| BackupError::Object {
        object: object.to_string(),
        source: e,
    };
    let mut file = tokio::fs::File::open(path)
        .await
        .map_err(|e| BackupError::io(path, e))?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; CHUNK];
    if size <= SINGLE_PUT_MAX {
        let mut all = Vec::with_capacity(size as usize);
        file.read_to_end(&mut all)
            .await
            .map_err(|e| BackupError::io(path, e))?;
        limiter.acquire(all.len() as u64).await;
        ctx.update(&all);
        let n = all.len() as u64;
        target
            .store()
            .put(&loc, PutPayload::from(Bytes::from(all)))
            .await
            .map_err(obj_err)?;
        progress.sent(n);
        return Ok(hex(ctx.finish().as_ref()));
    }
    let upload = target.store().put_multipart(&loc).await.map_err(obj_err)?;
    let mut w = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
    let res: Result<(), BackupError> = async {
        loop {
            let n = file
                .read(&mut buf)
                .await
                .map_err(|e| BackupError::io(path, e))?;
            if n == 0 {
                return Ok(());
            }
            limiter.acquire(n as u64).await;
            ctx.update(&buf[..n]);
            w.wait_for_capacity(2).await.map_err(obj_err)?;
            w.write(&buf[..n]);
            progress.sent(n as u64);
        }
    }
    .await;
    match res {
        Ok(()) => {
            w.finish().await.map_err(obj_err)?;
            Ok(hex(ctx.finish().as_ref()))
        }
        Err(e) => {
            let _ = w.abort().await;
            Err(e)
        }
    }
}
