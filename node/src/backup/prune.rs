//! Listing backups, retention and garbage collection.
//!
//! Retention deletes a backup's manifests when the backup is beyond the
//! newest `keep_last` or older than `max_age` — but never the newest
//! backup, so an age limit alone cannot leave a cluster with none. Then
//! every file object no remaining manifest names is deleted, unless it is
//! younger than `min_object_age`: a backup still uploading has stored files
//! but not yet its manifest. Manifests go first, objects second, so an
//! interruption leaves only unreferenced objects, collected next time.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use futures::TryStreamExt;
use object_store::ObjectStoreExt;

use super::BackupError;
use super::manifest::NodeManifest;
use super::target::{Target, manifest_object};
use super::verify::read_manifest;

/// Default `min_object_age`.
pub const DEFAULT_MIN_OBJECT_AGE: Duration = Duration::from_secs(6 * 3600);

#[derive(Debug, Clone)]
pub struct Retention {
    /// Keep the newest this many backups (0 = no count limit).
    pub keep_last: u32,
    /// Delete backups older than this.
    pub max_age: Option<Duration>,
    /// Never collect file objects younger than this.
    pub min_object_age: Duration,
    pub dry_run: bool,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            keep_last: 0,
            max_age: None,
            min_object_age: DEFAULT_MIN_OBJECT_AGE,
            dry_run: false,
        }
    }
}

/// One cluster backup: the node manifests under one id.
#[derive(Debug, Clone)]
pub struct BackupSummary {
    pub id: String,
    pub nodes: Vec<NodeManifest>,
}

impl BackupSummary {
    /// When the first node started.
    pub fn started_unix_ms(&self) -> u64 {
        self.nodes
            .iter()
            .map(|m| m.started_unix_ms)
            .min()
            .unwrap_or(0)
    }

    pub fn finished_unix_ms(&self) -> u64 {
        self.nodes
            .iter()
            .map(|m| m.finished_unix_ms)
            .max()
            .unwrap_or(0)
    }

    pub fn bytes(&self) -> u64 {
        self.nodes.iter().map(|m| m.bytes()).sum()
    }

    pub fn uploaded_bytes(&self) -> u64 {
        self.nodes.iter().map(|m| m.uploaded_bytes).sum()
    }

    pub fn files(&self) -> usize {
        self.nodes.iter().map(|m| m.files.len()).sum()
    }
}

/// Every backup at `target`, newest first.
pub async fn list_backups(target: &Target) -> Result<Vec<BackupSummary>, BackupError> {
    let listed: Vec<object_store::ObjectMeta> = target
        .store()
        .list(Some(&target.path("backups/")))
        .try_collect()
        .await
        .map_err(|e| BackupError::Store {
            url: target.url.clone(),
            source: e,
        })?;
    let mut by_id: BTreeMap<String, Vec<NodeManifest>> = BTreeMap::new();
    for meta in listed {
        let rel = target.relative(&meta.location);
        let Some((id, file)) = rel.strip_prefix("backups/").and_then(|r| r.split_once('/')) else {
            continue;
        };
        if !file.ends_with(".json") || file.contains('/') {
            continue;
        }
        let m = read_manifest(target, &rel).await?;
        by_id.entry(id.to_string()).or_default().push(m);
    }
    let mut out: Vec<BackupSummary> = by_id
        .into_iter()
        .map(|(id, mut nodes)| {
            nodes.sort_by(|a, b| a.node_id.cmp(&b.node_id));
            BackupSummary { id, nodes }
        })
        .collect();
    out.sort_by(|a, b| (b.started_unix_ms(), &b.id).cmp(&(a.started_unix_ms(), &a.id)));
    Ok(out)
}

/// What [`prune`] did (or would do, dry).
#[derive(Debug, Clone, Default)]
pub struct PruneReport {
    pub kept: Vec<String>,
    pub deleted: Vec<String>,
    pub objects_deleted: u64,
    pub bytes_freed: u64,
}

/// Which backups (newest first) retention deletes, at `now_ms`.
pub fn expired(backups: &[BackupSummary], r: &Retention, now_ms: u64) -> Vec<bool> {
    backups
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if i == 0 {
                return false;
            }
            let beyond_count = r.keep_last > 0 && i >= r.keep_last as usize;
            let too_old = r.max_age.is_some_and(|age| {
                now_ms.saturating_sub(b.started_unix_ms()) > age.as_millis() as u64
            });
            beyond_count || too_old
        })
        .collect()
}

/// Applies `retention` at `target` (see the module doc).
pub async fn prune(
    target: &Target,
    retention: &Retention,
    now_ms: u64,
) -> Result<PruneReport, BackupError> {
    let backups = list_backups(target).await?;
    let verdict = expired(&backups, retention, now_ms);
    let mut report = PruneReport::default();
    let mut referenced: HashSet<String> = HashSet::new();
    for (b, gone) in backups.iter().zip(&verdict) {
        if *gone {
            report.deleted.push(b.id.clone());
            if !retention.dry_run {
                for m in &b.nodes {
                    let rel = manifest_object(&b.id, &m.node_id);
                    target
                        .store()
                        .delete(&target.path(&rel))
                        .await
                        .map_err(|e| BackupError::Object {
                            object: rel.clone(),
                            source: e,
                        })?;
                }
            }
        } else {
            report.kept.push(b.id.clone());
            referenced.extend(
                b.nodes
                    .iter()
                    .flat_map(|m| m.files.iter().map(|f| f.object.clone())),
            );
        }
    }
    let files: Vec<object_store::ObjectMeta> = target
        .store()
        .list(Some(&target.path("files/")))
        .try_collect()
        .await
        .map_err(|e| BackupError::Store {
            url: target.url.clone(),
            source: e,
        })?;
    let min_age = retention.min_object_age.as_millis() as i64;
    for meta in files {
        let rel = target.relative(&meta.location);
        let age_ms = now_ms as i64 - meta.last_modified.timestamp_millis();
        if referenced.contains(&rel) || age_ms < min_age {
            continue;
        }
        if !retention.dry_run {
            match target.store().delete(&meta.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => {
                    return Err(BackupError::Object {
                        object: rel,
                        source: e,
                    });
                }
            }
        }
        report.objects_deleted += 1;
        report.bytes_freed += meta.size;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backup(id: &str, started: u64) -> BackupSummary {
        BackupSummary {
            id: id.into(),
            nodes: vec![NodeManifest {
                format: 1,
                backup_id: id.into(),
                node_id: "n".into(),
                zone: String::new(),
                tokens: vec![],
                replication: super::super::manifest::Replication { n: 3, w: 2, r: 2 },
                conflict_mode: "causal".into(),
                ringkv_version: String::new(),
                started_unix_ms: started,
                snapshot_unix_ms: started,
                finished_unix_ms: started,
                engine_last_sequence: 0,
                files: vec![],
                uploaded_files: 0,
                uploaded_bytes: 0,
            }],
        }
    }

    #[test]
    fn retention_by_count_and_age_never_deletes_the_newest() {
        let hour = 3_600_000;
        let now = 100 * hour;
        // Newest first, one an hour.
        let bs: Vec<_> = (0..6)
            .map(|i| backup(&format!("b{i}"), now - i * hour))
            .collect();
        let keep3 = Retention {
            keep_last: 3,
            ..Default::default()
        };
        assert_eq!(
            expired(&bs, &keep3, now),
            [false, false, false, true, true, true]
        );
        let two_hours = Retention {
            max_age: Some(Duration::from_secs(2 * 3600)),
            ..Default::default()
        };
        assert_eq!(
            expired(&bs, &two_hours, now),
            [false, false, false, true, true, true]
        );
        let both = Retention {
            keep_last: 2,
            max_age: Some(Duration::from_secs(4 * 3600)),
            ..Default::default()
        };
        assert_eq!(
            expired(&bs, &both, now),
            [false, false, true, true, true, true]
        );
        // Everything is old: the newest stays anyway.
        let tiny = Retention {
            max_age: Some(Duration::from_secs(1)),
            ..Default::default()
        };
        assert!(!expired(&bs, &tiny, now + 10 * hour)[0]);
        assert!(expired(&bs, &Retention::default(), now).iter().all(|d| !d));
    }
}
