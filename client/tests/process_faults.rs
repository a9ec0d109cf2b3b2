//! Real node processes (`ringkv node`, the same code as `ringkv-node`): a
//! SIGKILLed or SIGSTOPped replica does not stop W=2/R=2 traffic, and a
//! restarted node keeps its tokens and data and is repaired by reads.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ringkv_client::{Admin, Client, PutOptions};

const RINGKV: &str = env!("CARGO_BIN_EXE_ringkv");

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: signalling our own child process.
    unsafe {
        libc_kill(child.id() as i32, sig);
    }
}

/// SIGSTOP `child` and wait until every one of its threads has stopped: the
/// signal is asynchronous, and on a loaded machine a node's worker threads
/// can still serve a request for milliseconds after `kill` returns.
fn stop(child: &Child) {
    signal(child, 19);
    let tasks = format!("/proc/{}/task", child.id());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let all_stopped = std::fs::read_dir(&tasks).unwrap().all(|t| {
            let stat = std::fs::read_to_string(t.unwrap().path().join("stat")).unwrap_or_default();
            // The state follows the parenthesised command name.
            matches!(
                stat.rsplit_once(')')
                    .and_then(|(_, r)| r.trim_start().chars().next()),
                Some('T' | 't')
            )
        });
        if all_stopped {
            return;
        }
        assert!(Instant::now() < deadline, "{tasks} did not stop");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Node processes, killed on drop (also when a test fails).
struct Procs(Vec<Option<Child>>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in self.0.iter_mut().flatten() {
            signal(c, 18); // SIGCONT, in case it was stopped
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

struct Ep {
    grpc: String,
    admin: String,
    gossip: String,
}

fn spawn(dir: &std::path::Path, i: usize, seed: Option<&str>) -> (Child, Ep) {
    let name = format!("p{i}");
    let data = dir.join(&name);
    std::fs::create_dir_all(&data).unwrap();
    let _ = std::fs::remove_file(data.join("endpoints.json"));
    let mut cmd = Command::new(RINGKV);
    cmd.args(["node", "--node-id", &name])
        .arg("--data-dir")
        .arg(&data)
        .args([
            "--listen-http",
            "127.0.0.1:0",
            "--listen-grpc",
            "127.0.0.1:0",
        ])
        .args([
            "--listen-internode",
            "127.0.0.1:0",
            "--listen-gossip",
            "127.0.0.1:0",
        ])
        .args([
            "--advertise-host",
            "127.0.0.1",
            "--gossip-interval",
            "100ms",
            "--request-timeout",
            "2s",
        ])
        .args(["--sync", "never"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(s) = seed {
        cmd.args(["--seeds", s]);
    }
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(t) = std::fs::read_to_string(data.join("endpoints.json"))
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(&t)
        {
            let s = |k: &str| v[k].as_str().unwrap().to_string();
            return (
                child,
                Ep {
                    grpc: format!("http://{}", s("grpc")),
                    admin: format!("http://{}", s("internode")),
                    gossip: s("gossip"),
                },
            );
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "{name} exited during start"
        );
        assert!(Instant::now() < deadline, "{name} did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until every node behind `admins` sees exactly `alive` live NORMAL
/// members with tokens. Each node's own view matters: a node that has not
/// yet learned a peer's tokens coordinates with a shorter preference list
/// (an R=all read through it would fail), so one node's view is not enough.
async fn wait_alive(admins: &[&str], alive: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    for admin in admins {
        loop {
            if let Ok(mut a) = Admin::connect(admin).await
                && let Ok(s) = a.status().await
                && s.members
                    .iter()
                    .filter(|m| {
                        // A node started into a running ring is JOINING until it
                        // has streamed its ranges in.
                        m.alive
                            && m.tokens > 0
                            && m.state == ringkv_client::pb::NodeState::Normal as i32
                    })
                    .count()
                    == alive
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "never saw {alive} live members via {admin}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_killed_or_stopped_do_not_stop_quorums() {
    let dir = tempfile::tempdir().unwrap();
    let mut procs = Procs(Vec::new());
    let mut eps = Vec::new();
    for i in 0..3 {
        let seed = eps.first().map(|e: &Ep| e.gossip.clone());
        let (c, ep) = spawn(dir.path(), i, seed.as_deref());
        procs.0.push(Some(c));
        eps.push(ep);
    }
    let admins: Vec<&str> = eps.iter().map(|e| e.admin.as_str()).collect();
    wait_alive(&admins, 3).await;
    let mut c0 = Client::connect(&eps[0].grpc).await.unwrap();
    for k in 0..20 {
        c0.put(format!("k{k}"), format!("v{k}")).await.unwrap();
    }

    // SIGKILL node 2: every key still reads and writes at quorum.
    let mut victim = procs.0[2].take().unwrap();
    victim.kill().unwrap();
    victim.wait().unwrap();
    let mut c1 = Client::connect(&eps[1].grpc).await.unwrap();
    for k in 0..20 {
        let got = c1.get(format!("k{k}")).await.unwrap();
        assert_eq!(got.value().unwrap().as_ref(), format!("v{k}").as_bytes());
        c1.put_with(format!("k{k}"), format!("w{k}"), PutOptions::after(&got))
            .await
            .unwrap();
    }

    // SIGSTOP node 1 too: W=2 is now impossible, and says so; W=1 works.
    stop(procs.0[1].as_ref().unwrap());
    // (A failed write may still have landed on the coordinator: its own key.)
    let err = c0.put("failed", "x").await.unwrap_err().to_string();
    assert!(err.contains("quorum not reached: 1 of 2"), "{err}");
    c0.put_with("solo", "one", PutOptions::default().w("one"))
        .await
        .unwrap();
    signal(procs.0[1].as_ref().unwrap(), 18);

    // Restart node 2 on its data: it keeps its tokens and old data, and reads
    // at R=all repair what it missed while it was down.
    let (child, ep2) = spawn(dir.path(), 2, Some(&eps[0].gossip));
    procs.0[2] = Some(child);
    wait_alive(&[&eps[0].admin, &eps[1].admin, &ep2.admin], 3).await;
    let mut c2 = Client::connect(&ep2.grpc).await.unwrap();
    for k in 0..20 {
        let got = c2.get_with(format!("k{k}"), "all").await.unwrap();
        assert_eq!(
            got.value().unwrap().as_ref(),
            format!("w{k}").as_bytes(),
            "key k{k}"
        );
    }
    let mut a2 = Admin::connect(&ep2.admin).await.unwrap();
    let s = a2.status().await.unwrap();
    assert!(s.members.iter().all(|m| m.tokens == 128));
}
