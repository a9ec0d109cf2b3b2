//! Compiles `ringkv/v1/*.proto` with protox (pure Rust), so building needs no
//! system `protoc`. Also emits the descriptor set used by gRPC server reflection.
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let dir = root.join("ringkv/v1");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "proto"))
        .collect();
    files.sort();
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    let fds = protox::compile(&files, [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    {
        use prost::Message as _;
        std::fs::write(out.join("ringkv_descriptor.bin"), fds.encode_to_vec())?;
    }
    tonic_prost_build::configure().bytes(".").compile_fds(fds)?;
    Ok(())
}
