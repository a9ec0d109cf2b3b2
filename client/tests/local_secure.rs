//! `ringkv local --secure` end to end: real node processes with TLS, mutual
//! TLS on Admin, tokens and a gossip secret; the CLI reaches them only with
//! the CA, the token and (for Admin) the client certificate it generated.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const RINGKV: &str = env!("CARGO_BIN_EXE_ringkv");

/// Kills `ringkv local` (and via PDEATHSIG its nodes) when the test ends.
struct Local(Child);

impl Drop for Local {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn cli(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(RINGKV)
        .args(args)
        .env_remove("RINGKV_TOKEN")
        .env_remove("RINGKV_CACERT")
        .output()
        .expect("run ringkv");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn local_secure_is_reachable_only_with_its_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let mut child = Command::new(RINGKV)
        .arg("local")
        .arg("--secure")
        .arg("--data")
        .arg(data)
        .args(["--nodes", "3", "--sync", "never"])
        .args(["--http-port", "0", "--grpc-port", "0"])
        .args(["--internode-port", "0", "--gossip-port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn ringkv local --secure");
    let out = child.stdout.take().unwrap();
    let _local = Local(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let (mut http, mut grpc, mut admin) = (String::new(), String::new(), String::new());
    let mut printed = String::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("ringkv local --secure to start");
        printed.push_str(&line);
        printed.push('\n');
        if line.starts_with("cluster running") {
            break;
        }
        if line.starts_with("node-0 ") {
            // node-0  https://ADDR  grpc ADDR  admin ADDR  (logs ...)
            let f: Vec<&str> = line.split_whitespace().collect();
            assert!(f[1].starts_with("https://"), "{line}");
            http = f[1].trim_start_matches("https://").to_string();
            grpc = format!("https://{}", f[3]);
            admin = format!("https://{}", f[5]);
        }
    }
    let sec = data.join("secure");
    let p = |f: &str| sec.join(f).display().to_string();
    // It printed how to call it, with the real paths.
    assert!(
        printed.contains(&format!("--cacert {}", p("ca.pem"))),
        "{printed}"
    );
    assert!(printed.contains("authorization: Bearer"), "{printed}");
    for f in [
        "node-key.pem",
        "client-key.pem",
        "gossip-secret",
        "tokens",
        "admin.token",
    ] {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(sec.join(f)).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "{f} is readable by others");
    }

    let (ca, tok, cert, key) = (
        p("ca.pem"),
        p("admin.token"),
        p("client.pem"),
        p("client-key.pem"),
    );
    let plain_grpc = grpc.replace("https://", "http://");
    // Admin: the token alone is not enough under TLS, the client
    // certificate is; then every node is NORMAL (they joined over mTLS
    // with authenticated gossip).
    let (ok, _, _) = cli(&[
        "--admin",
        &admin,
        "--cacert",
        &ca,
        "--token-file",
        &tok,
        "status",
    ]);
    assert!(!ok, "Admin answered without a client certificate");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (ok, out, err) = cli(&[
            "--admin",
            &admin,
            "--cacert",
            &ca,
            "--token-file",
            &tok,
            "--cert",
            &cert,
            "--key",
            &key,
            "status",
        ]);
        if ok && out.matches("NORMAL").count() >= 4 {
            break;
        }
        assert!(Instant::now() < deadline, "status: {out} {err}");
        std::thread::sleep(Duration::from_millis(200));
    }

    // Without credentials: refused, and nothing written.
    let (ok, _, err) = cli(&["--addr", &plain_grpc, "put", "k", "v"]);
    assert!(!ok, "a plaintext put succeeded");
    let (ok, _, err2) = cli(&["--addr", &grpc, "--cacert", &ca, "put", "k", "v"]);
    assert!(!ok, "a put without a token succeeded");
    assert!(err2.contains("Unauthenticated"), "{err} / {err2}");
    // With the CA and the token: works.
    let (ok, _, err) = cli(&[
        "--addr",
        &grpc,
        "--cacert",
        &ca,
        "--token-file",
        &tok,
        "put",
        "k",
        "v",
    ]);
    assert!(ok, "{err}");
    let (ok, out, err) = cli(&[
        "--addr",
        &grpc,
        "--cacert",
        &ca,
        "--token-file",
        &tok,
        "get",
        "k",
    ]);
    assert!(ok && out.trim() == "v", "{out} {err}");

    // The printed curl line works (when curl is installed).
    if Path::new("/usr/bin/curl").exists() {
        let token = std::fs::read_to_string(sec.join("admin.token")).unwrap();
        let out = Command::new("curl")
            .args(["-sS", "--cacert", &ca, "-H"])
            .arg(format!("authorization: Bearer {}", token.trim()))
            .arg(format!("https://{http}/v1/keys/k"))
            .output()
            .unwrap();
        let body = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && body.contains('v'), "{body}");
        let out = Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--cacert",
                &ca,
            ])
            .arg(format!("https://{http}/v1/keys/k"))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "401");
    } else {
        eprintln!("skipping the curl check: /usr/bin/curl is not installed");
    }
}
