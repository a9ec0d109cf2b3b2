//! A node's backup manifest: the files of its snapshot (by object name,
//! size and SHA-256) and its ring state. Written last, so a manifest names
//! only objects already stored; a backup exists once its manifests do.

use serde::{Deserialize, Serialize};

use super::BackupError;
use super::target::validate_id;

pub const FORMAT: u32 = 1;

/// Snapshot subdirectories that are uploaded (and restored).
pub const DIRS: [&str; 2] = ["engine", "hints"];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    /// Path inside the snapshot: `engine/000012.sst`, `hints/CURRENT`.
    pub path: String,
    /// Object name relative to the backup URL.
    pub object: String,
    pub size: u64,
    /// Lower-case hex SHA-256 of the contents.
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replication {
    pub n: u32,
    pub w: u32,
    pub r: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeManifest {
    pub format: u32,
    pub backup_id: String,
    pub node_id: String,
    pub zone: String,
    /// The node's ring tokens at snapshot time.
    pub tokens: Vec<u64>,
    pub replication: Replication,
    pub conflict_mode: String,
    pub ringkv_version: String,
    pub started_unix_ms: u64,
    pub snapshot_unix_ms: u64,
    pub finished_unix_ms: u64,
    pub engine_last_sequence: u64,
    pub files: Vec<ManifestFile>,
    /// What this backup uploaded; the rest was already stored.
    pub uploaded_files: u64,
    pub uploaded_bytes: u64,
}

impl NodeManifest {
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("a manifest always serializes")
    }

    /// Parses and checks a manifest read from `object`: nothing in it may
    /// name a path outside the snapshot or an object outside `files/`.
    pub fn parse(object: &str, bytes: &[u8]) -> Result<NodeManifest, BackupError> {
        let bad = |why: String| BackupError::BadManifest {
            object: object.to_string(),
            why,
        };
        let m: NodeManifest = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        if m.format != FORMAT {
            return Err(bad(format!(
                "format {} (this build reads {FORMAT})",
                m.format
            )));
        }
        validate_id("backup id", &m.backup_id).map_err(|e| bad(e.to_string()))?;
        if m.node_id.is_empty() || m.node_id.contains('/') || m.node_id.starts_with('.') {
            return Err(bad(format!("node id {:?}", m.node_id)));
        }
        for f in &m.files {
            let ok_path = f.path.split_once('/').is_some_and(|(dir, name)| {
                DIRS.contains(&dir)
                    && !name.is_empty()
                    && !name.contains('/')
                    && !name.starts_with('.')
            });
            if !ok_path {
                return Err(bad(format!("file path {:?}", f.path)));
            }
            let ok_object = f.object.starts_with("files/")
                && !f
                    .object
                    .split('/')
                    .any(|p| p.is_empty() || p == "." || p == "..");
            if !ok_object {
                return Err(bad(format!("object name {:?}", f.object)));
            }
            if f.sha256.len() != 64 || !f.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad(format!("checksum of {:?}", f.path)));
            }
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> NodeManifest {
        NodeManifest {
            format: FORMAT,
            backup_id: "b1".into(),
            node_id: "node-1".into(),
            zone: "z1".into(),
            tokens: vec![1, 2, 3],
            replication: Replication { n: 3, w: 2, r: 2 },
            conflict_mode: "causal".into(),
            ringkv_version: "0.1.0".into(),
            started_unix_ms: 1,
            snapshot_unix_ms: 2,
            finished_unix_ms: 3,
            engine_last_sequence: 4,
            files: vec![ManifestFile {
                path: "engine/000001.sst".into(),
                object: format!("files/node-1/engine/000001.sst.{}", "a".repeat(64)),
                size: 10,
                sha256: "a".repeat(64),
            }],
            uploaded_files: 1,
            uploaded_bytes: 10,
        }
    }

    #[test]
    fn roundtrips_and_refuses_what_escapes_the_snapshot() {
        let m = sample();
        assert_eq!(NodeManifest::parse("o", &m.to_json()).unwrap(), m);
        let mut cases = Vec::new();
        for path in ["../x", "engine/../../x", "other/x", "engine/", "engine/a/b"] {
            let mut b = sample();
            b.files[0].path = path.into();
            cases.push(b);
        }
        for object in ["backups/x", "files/../x", "files//x"] {
            let mut b = sample();
            b.files[0].object = object.into();
            cases.push(b);
        }
        let mut b = sample();
        b.format = 9;
        cases.push(b);
        let mut b = sample();
        b.files[0].sha256 = "zz".into();
        cases.push(b);
        for c in cases {
            assert!(
                matches!(
                    NodeManifest::parse("o", &c.to_json()),
                    Err(BackupError::BadManifest { .. })
                ),
                "{c:?}"
            );
        }
        assert!(NodeManifest::parse("o", b"{not json").is_err());
    }
}
