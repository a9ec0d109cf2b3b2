//! A real S3-compatible server on loopback for backup tests: `moto_server`
//! from PyPI (`moto[server]`), which `.ci/run` installs into
//! `target/moto-venv`. Tests that need it skip, saying why, when it is absent.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::Command;

use super::server::{Reports, Server};

pub struct Moto {
    port: u16,
    _server: Server,
}

/// `moto_server`: $RINGKV_MOTO_SERVER, else `target/moto-venv/bin/moto_server`
/// of this workspace, else one on PATH.
fn binary() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("RINGKV_MOTO_SERVER") {
        return Ok(p.into());
    }
    let venv =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/moto-venv/bin/moto_server");
    if venv.exists() {
        return Ok(venv);
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("moto_server"))
            .find(|p| p.exists())
    });
    on_path.ok_or_else(|| {
        format!(
            "moto_server not found (set RINGKV_MOTO_SERVER, or run .ci/run, or: python3 -m venv target/moto-venv && target/moto-venv/bin/pip install 'moto[server]'); looked in {}",
            venv.display()
        )
    })
}

impl Moto {
    /// Starts moto on a free loopback port (it binds port 0 and prints it).
    pub fn start() -> Result<Moto, String> {
        let mut cmd = Command::new(binary()?);
        cmd.args(["-H", "127.0.0.1", "-p", "0"]);
        Server::start(cmd, Reports::Stderr, "Running on http://127.0.0.1:").map(|server| Moto {
            port: server.port,
            _server: server,
        })
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Credentials moto accepts (any), as object_store options.
    pub fn options(&self) -> HashMap<String, String> {
        HashMap::from([
            ("aws_access_key_id".to_string(), "testing".to_string()),
            ("aws_secret_access_key".to_string(), "testing".to_string()),
            ("aws_region".to_string(), "us-east-1".to_string()),
        ])
    }

    /// Creates a bucket (S3 CreateBucket: an unsigned path-style PUT, which
    /// moto accepts).
    pub fn create_bucket(&self, name: &str) {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(
            s,
            "PUT /{name} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        )
        .unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        assert!(
            resp.starts_with("HTTP/1.1 200"),
            "CreateBucket {name}: {resp}"
        );
    }
}
