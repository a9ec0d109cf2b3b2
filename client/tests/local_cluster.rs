//! End to end: `ringkv local` starts real node processes; the CLI writes and
//! reads through them; Ctrl-C (SIGINT) stops them; a restart keeps the data.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const RINGKV: &str = env!("CARGO_BIN_EXE_ringkv");

/// Kills the `ringkv local` process (and so, via PDEATHSIG, its nodes) if a test fails.
struct Local {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Drop for Local {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Endpoints {
    grpc: String,
    admin: String,
    http: String,
}

fn start(data: &std::path::Path) -> (Local, Vec<Endpoints>) {
    let mut child = Command::new(RINGKV)
        .arg("local")
        .arg("--data")
        .arg(data)
        .args([
            "--nodes",
            "3",
            "--http-port",
            "0",
            "--grpc-port",
            "0",
            "--internode-port",
            "0",
            "--gossip-port",
            "0",
        ])
        .args(["--sync", "never"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn ringkv local");
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let local = Local { child, lines: rx };
    let mut eps = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let line = local
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("ringkv local to start");
        if line.starts_with("cluster running") {
            break;
        }
        if line.starts_with("node-") {
            let f: Vec<&str> = line.split_whitespace().collect();
            // node-i  http://ADDR  grpc ADDR  admin ADDR  (logs ...)
            eps.push(Endpoints {
                http: f[1].to_string(),
                grpc: format!("http://{}", f[3]),
                admin: format!("http://{}", f[5]),
            });
        }
    }
    assert_eq!(eps.len(), 3, "one line per node");
    (local, eps)
}

fn cli(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(RINGKV)
        .args(args)
        .output()
        .expect("run ringkv");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// Polls the CLI until the cluster has converged (every node in node 0's ring).
fn wait_members(admin: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (ok, out, _) = cli(&["--admin", admin, "status"]);
        if ok && out.matches("NORMAL").count() >= 4 && !out.contains(" no ") {
            return;
        }
        assert!(Instant::now() < deadline, "cluster did not converge: {out}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn stop(mut local: Local) {
    // SAFETY: signalling our own child process.
    unsafe {
        libc_kill(local.child.id() as i32, 2);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut stopped = 0;
    loop {
        match local.lines.recv_timeout(Duration::from_millis(200)) {
            Ok(l) if l.ends_with(" stopped") => stopped += 1,
            _ => {}
        }
        if let Some(status) = local.child.try_wait().unwrap() {
            assert!(status.success(), "ringkv local exited with {status}");
            while let Ok(l) = local.lines.recv_timeout(Duration::from_millis(500)) {
                if l.ends_with(" stopped") {
                    stopped += 1;
                }
            }
            assert_eq!(stopped, 3, "every node reports a clean stop");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "ringkv local did not stop on SIGINT"
        );
    }
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

#[test]
fn local_cluster_serves_the_cli_and_stops_cleanly_keeping_data() {
    let dir = tempfile::tempdir().unwrap();
    let (local, eps) = start(dir.path());
    wait_members(&eps[0].admin);

    let (ok, out, err) = cli(&["--addr", &eps[0].grpc, "put", "greeting", "hello"]);
    assert!(ok, "put failed: {out} {err}");
    let (ok, out, err) = cli(&["--addr", &eps[1].grpc, "get", "greeting"]);
    assert!(ok, "get failed: {err}");
    assert_eq!(out, "hello\n");
    let ctx = err
        .lines()
        .find_map(|l| l.strip_prefix("context: "))
        .expect("context on stderr")
        .to_string();
    let (ok, _, _) = cli(&[
        "--addr",
        &eps[2].grpc,
        "put",
        "greeting",
        "hello again",
        "--context",
        &ctx,
    ]);
    assert!(ok);
    let (_, out, _) = cli(&["--addr", &eps[0].grpc, "get", "greeting"]);
    assert_eq!(out, "hello again\n");
    let (ok, _, _) = cli(&["--addr", &eps[0].grpc, "put", "doomed", "x"]);
    assert!(ok);
    let (ok, _, _) = cli(
        &["--addr", &eps[0].grpc, "delete", "doomed", "--context", &{
            let (_, _, e) = cli(&["--addr", &eps[0].grpc, "get", "doomed"]);
            e.lines()
                .find_map(|l| l.strip_prefix("context: "))
                .unwrap()
                .to_string()
        }],
    );
    assert!(ok);
    let (ok, _, err) = cli(&["--addr", &eps[0].grpc, "get", "doomed"]);
    assert!(!ok && err.contains("not found"), "{err}");
    // Bad input is a clear error, not a crash.
    let (ok, _, err) = cli(&["--addr", &eps[0].grpc, "put", "k", "v", "--w", "9"]);
    assert!(
        !ok && err.contains("exceeds the replication factor"),
        "{err}"
    );
    let (ok, out, _) = cli(&["--admin", &eps[0].admin, "status", "--json"]);
    assert!(ok);
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status["members"].as_array().unwrap().len(), 3);
    assert!(eps[0].http.starts_with("http://127.0.0.1:"));

    // Add a node to the running cluster: it joins, streams, turns NORMAL.
    let data = dir.path().to_str().unwrap();
    let (ok, out, err) = cli(&["local", "add", "--data", data]);
    assert!(ok, "local add failed: {out} {err}");
    assert!(out.contains("ok added node-3"), "{out}");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, out, _) = cli(&["--admin", &eps[0].admin, "status"]);
        if out.matches("NORMAL").count() >= 5 && !out.contains(" no ") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node-3 never became NORMAL: {out}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let (ok, out, _) = cli(&["--addr", &eps[1].grpc, "get", "greeting", "--r", "all"]);
    assert!(ok && out == "hello again\n", "{out}");
    // And remove it again: decommissioned (LEFT), then stopped.
    let (ok, out, err) = cli(&["local", "remove", "node-3", "--data", data]);
    assert!(ok, "local remove failed: {out} {err}");
    assert!(out.contains("ok node-3 decommissioned"), "{out}");
    let (_, out, _) = cli(&["--admin", &eps[0].admin, "status"]);
    assert!(out.contains("LEFT"), "{out}");
    let (ok, out, _) = cli(&["--addr", &eps[2].grpc, "get", "greeting", "--r", "all"]);
    assert!(ok && out == "hello again\n", "{out}");
    stop(local);

    // Data is kept for the next start.
    let (local, eps) = start(dir.path());
    wait_members(&eps[0].admin);
    let (ok, out, err) = cli(&["--addr", &eps[2].grpc, "get", "greeting"]);
    assert!(ok, "{err}");
    assert_eq!(out, "hello again\n");
    stop(local);
}
