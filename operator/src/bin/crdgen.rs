//! Writes the generated CRD YAML into the repository (`crds/` and the Helm chart).
//! Run from anywhere: paths are relative to the workspace root.

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let check = std::env::args().any(|a| a == "--check");
    let mut stale = Vec::new();
    for (rel, content) in ringkv_operator::crdgen::files() {
        let path = root.join(rel);
        if check {
            if std::fs::read_to_string(&path).ok().as_deref() != Some(content.as_str()) {
                stale.push(rel);
            }
            continue;
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&path, content)?;
        println!("wrote {rel}");
    }
    if !stale.is_empty() {
        eprintln!(
            "stale generated files (run `cargo run -p ringkv-operator --bin crdgen`): {stale:?}"
        );
        std::process::exit(1);
    }
    Ok(())
}
