//! End to end: `ringkv local` starts real node processes; the CLI writes and
//! reads through them; Ctrl-C (SIGINT) stops them; a restart keeps the data;
//! a node that dies is restarted by the supervisor while the others serve,
//! and `ringkv local stop|start|kill` steer single nodes.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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

/// What node `i` of the local cluster in `data` published (its ports
/// change when it restarts on port 0).
fn endpoints(data: &std::path::Path, i: usize) -> Option<serde_json::Value> {
    let t = std::fs::read_to_string(data.join(format!("node-{i}")).join("endpoints.json")).ok()?;
    serde_json::from_str(&t).ok()
}

/// Waits until every node sees all `n` members alive, NORMAL and owning
/// tokens, each at the address it has now: a node restarted on new ports
/// counts only once every other node knows its new incarnation (a node that
/// was down briefly may still be seen alive at its old address).
async fn wait_all_alive(data: &std::path::Path, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        // One sweep over every node with one reading of the endpoint files:
        // a node still answering at its file's address is not a stale file.
        let current: Option<Vec<String>> = (0..n)
            .map(|j| Some(endpoints(data, j)?["internode"].as_str()?.to_string()))
            .collect();
        let mut seen: Vec<usize> = Vec::new();
        if let Some(current) = &current {
            for addr in current {
                let status = match ringkv_client::Admin::connect(&format!("http://{addr}")).await {
                    Ok(mut a) => a.status().await.ok(),
                    Err(_) => None,
                };
                let alive = status.map_or(0, |s| {
                    s.members
                        .iter()
                        .filter(|m| {
                            m.alive
                                && m.tokens > 0
                                && m.state == ringkv_client::pb::NodeState::Normal as i32
                                && m.node_id
                                    .strip_prefix("node-")
                                    .and_then(|j| j.parse::<usize>().ok())
                                    .and_then(|j| current.get(j))
                                    == Some(&m.internode_addr)
                        })
                        .count()
                });
                seen.push(alive);
            }
        }
        if seen.len() == n && seen.iter().all(|&a| a == n) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "never did every node see {n} live members at their current addresses (node i sees seen[i]: {seen:?})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until each of the 3 nodes other than `node` sees `node` down.
async fn wait_seen_down(data: &std::path::Path, node: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    for i in (0..3).filter(|i| format!("node-{i}") != node) {
        let ep = endpoints(data, i).unwrap();
        let admin = format!("http://{}", ep["internode"].as_str().unwrap());
        loop {
            if let Ok(mut a) = ringkv_client::Admin::connect(&admin).await
                && let Ok(s) = a.status().await
                && s.members.iter().any(|m| m.node_id == node && !m.alive)
            {
                break;
            }
            assert!(Instant::now() < deadline, "node-{i} never saw {node} down");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The next line of `ringkv local`'s output that `want` accepts.
fn wait_line(local: &Local, what: &str, want: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        match local.lines.recv_timeout(Duration::from_millis(100)) {
            Ok(l) if want(&l) => return l,
            _ => {}
        }
        assert!(Instant::now() < deadline, "ringkv local never said {what}");
    }
}

fn list_state(data: &str, node: &str) -> String {
    let (ok, out, err) = cli(&["local", "list", "--data", data]);
    assert!(ok, "local list: {out} {err}");
    let line = out
        .lines()
        .find(|l| l.split_whitespace().next() == Some(node))
        .unwrap_or_else(|| panic!("{node} missing from the list:\n{out}"));
    line.split_whitespace().nth(1).unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_is_restarted_while_the_cluster_serves_and_stop_start_kill_steer_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let data = path.to_str().unwrap().to_string();
    let (local, eps) = start(&path);
    wait_all_alive(&path, 3).await;

    // A client of node-0 (never stopped here) writes and reads throughout,
    // as an application would: an operation that fails is tried again
    // (twice, 250 ms apart) — the failure detector may take a moment to
    // notice a node that just went down. Only operations that still fail
    // count against the cluster.
    let stop_load = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let load = {
        let (stop_load, failures) = (stop_load.clone(), failures.clone());
        let grpc = eps[0].grpc.clone();
        tokio::spawn(async move {
            let mut c = ringkv_client::Client::connect(&grpc).await.unwrap();
            let (mut ops, mut retried) = (0u64, 0u64);
            while !stop_load.load(Ordering::Acquire) {
                let k = format!("load-{}", ops % 100);
                for attempt in 0..3 {
                    let done = match c.put(&k, format!("v{ops}")).await {
                        Ok(_) => c.get(&k).await.map(|_| ()),
                        Err(e) => Err(e),
                    };
                    match done {
                        Ok(()) => break,
                        Err(e) if attempt == 2 => failures
                            .lock()
                            .unwrap()
                            .push(format!("op {ops} on {k}: {e}")),
                        Err(_) => {
                            retried += 1;
                            tokio::time::sleep(Duration::from_millis(250)).await;
                        }
                    }
                }
                ops += 1;
            }
            eprintln!("load: {ops} put+get pairs, {retried} retried");
            ops
        })
    };

    // SIGKILL node-2 behind the supervisor's back: reported, restarted on
    // its data, the others untouched.
    let pid = endpoints(&path, 2).unwrap()["pid"].as_i64().unwrap() as i32;
    // SAFETY: signalling a process of this test.
    unsafe {
        libc_kill(pid, 9);
    }
    let l = wait_line(&local, "that node-2 died", |l| {
        l.starts_with("node-2 exited unexpectedly")
    });
    assert!(l.contains("restarting it on its data in 1s"), "{l}");
    wait_line(&local, "that node-2 runs again", |l| {
        l.starts_with("node-2 ") && l.contains("[restart #1]")
    });
    wait_all_alive(&path, 3).await;
    assert_ne!(
        endpoints(&path, 2).unwrap()["pid"].as_i64().unwrap() as i32,
        pid
    );
    assert_eq!(list_state(&data, "node-0"), "running");

    // stop: clean, and it stays down (the others see it go).
    let (ok, out, err) = cli(&["local", "stop", "node-1", "--data", &data]);
    assert!(ok && out.contains("ok node-1 stopped"), "{out} {err}");
    assert_eq!(list_state(&data, "node-1"), "stopped");
    let (ok, _, _) = cli(&["local", "stop", "node-1", "--data", &data]);
    assert!(!ok, "stopping a stopped node is an error");
    wait_seen_down(&path, "node-1").await;
    assert_eq!(list_state(&data, "node-1"), "stopped");
    // start: back on its data.
    let (ok, out, err) = cli(&["local", "start", "node-1", "--data", &data]);
    assert!(ok && out.contains("ok node-1 started"), "{out} {err}");
    wait_all_alive(&path, 3).await;

    // kill: a crash on purpose; the supervisor restarts it.
    let (ok, out, err) = cli(&["local", "kill", "node-2", "--data", &data]);
    assert!(ok && out.contains("ok node-2 killed"), "{out} {err}");
    wait_line(&local, "that node-2 was killed", |l| {
        l.starts_with("node-2 killed on request")
    });
    wait_line(&local, "that node-2 runs again", |l| {
        l.starts_with("node-2 ") && l.contains("[restart #2]")
    });
    wait_all_alive(&path, 3).await;

    // kill --stay-down: down until started.
    let (ok, out, err) = cli(&["local", "kill", "node-1", "--stay-down", "--data", &data]);
    assert!(ok && out.contains("stays down"), "{out} {err}");
    wait_seen_down(&path, "node-1").await;
    assert_eq!(list_state(&data, "node-1"), "stopped");
    let (ok, out, err) = cli(&["local", "start", "node-1", "--data", &data]);
    assert!(ok, "{out} {err}");
    wait_all_alive(&path, 3).await;
    let (ok, out, _) = cli(&["local", "list", "--data", &data]);
    assert!(ok && out.matches("running").count() == 3, "{out}");
    // Restarts count the supervisor's own: node-1 was only started on order.
    let restarts = |node: &str| {
        out.lines()
            .find(|l| l.starts_with(node))
            .and_then(|l| l.split_whitespace().nth(3))
            .unwrap()
            .to_string()
    };
    assert_eq!(
        (restarts("node-1"), restarts("node-2")),
        ("0".into(), "2".into()),
        "{out}"
    );
    let (ok, out, _) = cli(&["local", "stop", "node-9", "--data", &data]);
    assert!(!ok && out.contains("no node called node-9"), "{out}");

    stop_load.store(true, Ordering::Release);
    let ops = load.await.unwrap();
    let failures = failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} of {ops} operations failed (three tries each) while nodes died and restarted: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(ops > 20, "the load ran ({ops} operations)");
    // Every node has the data: R=all reads through node-2.
    let ep2 = endpoints(&path, 2).unwrap();
    let mut c2 =
        ringkv_client::Client::connect(&format!("http://{}", ep2["grpc"].as_str().unwrap()))
            .await
            .unwrap();
    for k in 0..100.min(ops) {
        c2.get_with(format!("load-{k}"), "all").await.unwrap();
    }
    stop(local);
}
