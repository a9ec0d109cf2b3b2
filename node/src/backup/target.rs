//! Where backups go: an object store named by a URL, and the names of
//! things inside it.
//!
//! ```text
//! <url>/backups/<backup id>/<node id>.json        a node's manifest (written last)
//! <url>/files/<node id>/<dir>/<file>.<sha256>     a snapshot file, named by content
//! ```
//!
//! A file's object name carries its SHA-256, so "already uploaded" is a
//! listing away and two backups sharing an SSTable share its object. URLs:
//! `s3://bucket/prefix`, `gs://bucket/prefix`, `az://container/prefix`
//! (and the https forms `object_store` knows), `file:///abs/path` or a plain
//! absolute path. Credentials come from the environment (`AWS_*`,
//! `GOOGLE_*`, `AZURE_*`, as each SDK reads them); settings that are not
//! secret may also be given as query parameters, e.g.
//! `s3://b/p?endpoint=http://127.0.0.1:9000&allow_http=true&region=us-east-1`.

use std::sync::Arc;

use object_store::ObjectStore;
use object_store::path::Path as ObjPath;

use super::BackupError;

/// Longest backup or snapshot id.
pub const MAX_ID_LEN: usize = 128;

/// Checks a backup or snapshot id: 1..=128 of `[A-Za-z0-9._-]`, not
/// starting with `.` (ids become object and directory names).
pub fn validate_id(what: &'static str, id: &str) -> Result<(), BackupError> {
    let bad = |why: &str| BackupError::Invalid {
        what,
        why: format!("{id:?}: {why}"),
    };
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return Err(bad("must be 1 to 128 characters"));
    }
    if id.starts_with('.') {
        return Err(bad("must not start with '.'"));
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(bad("only letters, digits, '.', '_' and '-' are allowed"));
    }
    Ok(())
}

/// An opened backup location.
#[derive(Debug, Clone)]
pub struct Target {
    /// The URL without its query (safe to log and show).
    pub url: String,
    store: Arc<dyn ObjectStore>,
    prefix: ObjPath,
}

/// The installed rustls crypto provider (ring) for HTTPS object stores.
fn ensure_crypto_provider() {
    // Fails only when one is installed already, which is as good.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl Target {
    /// Opens `url` with options from the environment, then `extra` (which
    /// win: a request's credentials over the node's), then the URL's query.
    pub fn open(
        url: &str,
        extra: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Target, BackupError> {
        let mut options: Vec<(String, String)> = std::env::vars()
            .filter(|(k, _)| {
                k.starts_with("AWS_") || k.starts_with("GOOGLE_") || k.starts_with("AZURE_")
            })
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect();
        options.extend(extra.into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v)));
        Self::open_with(url, options)
    }

    /// Opens `url` with these options (lower-case `object_store` config
    /// keys such as `aws_access_key_id`); query parameters are added.
    pub fn open_with(url: &str, mut options: Vec<(String, String)>) -> Result<Target, BackupError> {
        let invalid = |why: String| BackupError::Invalid {
            what: "backup URL",
            why,
        };
        let url = url.trim();
        if url.is_empty() {
            return Err(invalid("empty".into()));
        }
        let parsed = if url.starts_with('/') {
            reqwest::Url::from_file_path(url)
                .map_err(|()| invalid(format!("{url:?} is not an absolute path")))?
        } else {
            reqwest::Url::parse(url).map_err(|e| invalid(format!("{url:?}: {e}")))?
        };
        for (k, v) in parsed.query_pairs() {
            options.push((k.to_ascii_lowercase(), v.into_owned()));
        }
        let mut bare = parsed.clone();
        bare.set_query(None);
        bare.set_fragment(None);
        if bare.scheme() == "file" {
            // LocalFileSystem writes below existing directories only.
            let dir = bare
                .to_file_path()
                .map_err(|()| invalid(format!("{url:?} is not a local path")))?;
            std::fs::create_dir_all(&dir).map_err(|source| BackupError::Io {
                path: dir.clone(),
                source,
            })?;
        } else {
            ensure_crypto_provider();
        }
        let (store, prefix) =
            object_store::parse_url_opts(&bare, options).map_err(|e| BackupError::Store {
                url: bare.to_string(),
                source: e,
            })?;
        Ok(Target {
            url: bare.to_string(),
            store: Arc::from(store),
            prefix,
        })
    }

    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The object path of `rel` (a name relative to the URL).
    pub fn path(&self, rel: &str) -> ObjPath {
        let mut p = self.prefix.clone();
        for part in rel.split('/').filter(|s| !s.is_empty()) {
            p = p.clone().join(part);
        }
        p
    }

    /// `path` relative to the URL (inverse of [`Target::path`]).
    pub fn relative(&self, path: &ObjPath) -> String {
        match path.prefix_match(&self.prefix) {
            Some(parts) => parts
                .map(|p| p.as_ref().to_string())
                .collect::<Vec<_>>()
                .join("/"),
            None => path.to_string(),
        }
    }
}

/// Name of a node's manifest in a backup.
pub fn manifest_object(backup_id: &str, node_id: &str) -> String {
    format!("backups/{backup_id}/{node_id}.json")
}

/// Directory of a backup's manifests.
pub fn backup_dir(backup_id: &str) -> String {
    format!("backups/{backup_id}")
}

/// Name of a snapshot file's object: `dir/file` of node `node_id` with
/// content hash `sha256` (hex).
pub fn file_object(node_id: &str, rel: &str, sha256: &str) -> String {
    format!("files/{node_id}/{rel}.{sha256}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked() {
        for ok in ["b1", "2026-01-02T03-04", "a.b_c-d", &"x".repeat(128)] {
            validate_id("backup id", ok).unwrap();
        }
        for bad in ["", ".hidden", "a/b", "a b", "ü", &"x".repeat(129), ".."] {
            assert!(
                matches!(
                    validate_id("backup id", bad),
                    Err(BackupError::Invalid { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn urls_open_and_name_objects_below_their_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("bk");
        let t = Target::open_with(root.to_str().unwrap(), Vec::new()).unwrap();
        assert!(t.url.starts_with("file:///"), "{}", t.url);
        assert!(root.is_dir());
        let p = t.path(&manifest_object("b1", "node-1"));
        assert!(p.to_string().ends_with("bk/backups/b1/node-1.json"), "{p}");
        assert_eq!(t.relative(&p), "backups/b1/node-1.json");
        let s3 = Target::open_with(
            "s3://bucket/some/prefix?endpoint=http://127.0.0.1:1&allow_http=true&region=us-east-1",
            vec![
                ("aws_access_key_id".into(), "k".into()),
                ("aws_secret_access_key".into(), "s".into()),
            ],
        )
        .unwrap();
        assert_eq!(s3.url, "s3://bucket/some/prefix");
        assert_eq!(
            s3.path("files/n/engine/000001.sst.ab").to_string(),
            "some/prefix/files/n/engine/000001.sst.ab"
        );
        // GCS and Azure are built in too (credentials are read when used).
        for (url, options) in [
            ("gs://bucket/some/prefix", vec![]),
            (
                "az://container/some/prefix",
                vec![("azure_storage_account_name".to_string(), "acct".to_string())],
            ),
        ] {
            let t = Target::open_with(url, options).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!(t.url, url);
            assert_eq!(t.path("backups").to_string(), "some/prefix/backups");
        }
        for bad in ["", "relative/path", "nope://x/y"] {
            assert!(Target::open_with(bad, Vec::new()).is_err(), "{bad:?}");
        }
    }
}
