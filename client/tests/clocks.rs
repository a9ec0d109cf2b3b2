//! Real node processes with wrong wall clocks (libfaketime moves one
//! process's clock; the monotonic clock is left alone):
//! - a node started with its clock a minute ahead, then restarted with the
//!   right clock, is alive again on every peer (the gossip generation is
//!   persisted and only grows);
//! - in `lww` mode, a node restarted with its clock set back still wins
//!   over the writes it acknowledged before (the hybrid clock's ceiling is
//!   persisted);
//! - a record from a node whose clock runs 10 minutes ahead is refused by
//!   its peers with an error naming `max_clock_skew`.
//!
//! Without libfaketime (Debian package `libfaketime`, which `.ci/run`
//! installs) the tests say so and skip.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ringkv_client::{Admin, Client, PutOptions};
use ringkv_proto::v1 as pb;

const RINGKV: &str = env!("CARGO_BIN_EXE_ringkv");

fn faketime_lib() -> Option<PathBuf> {
    [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/faketime/libfaketime.so.1",
        "/usr/local/lib/faketime/libfaketime.so.1",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

macro_rules! need_faketime {
    () => {
        match faketime_lib() {
            Some(l) => l,
            None => {
                eprintln!(
                    "SKIPPED: libfaketime is not installed (apt-get install libfaketime); it moves a node's wall clock"
                );
                return;
            }
        }
    };
}

/// Node processes, killed on drop (also when a test fails).
struct Procs(Vec<Option<Child>>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in self.0.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[derive(Clone)]
struct Ep {
    grpc: String,
    admin: String,
    gossip: String,
}

/// Starts node `p{i}` on its data directory under `dir`, its wall clock
/// moved by `offset` (a libfaketime offset such as `+60s`) when given.
fn spawn(
    dir: &Path,
    i: usize,
    seed: Option<&str>,
    mode: &str,
    clock: Option<(&Path, &str)>,
) -> (Child, Ep) {
    let name = format!("p{i}");
    let data = dir.join(&name);
    std::fs::create_dir_all(&data).unwrap();
    let _ = std::fs::remove_file(data.join("endpoints.json"));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(data.join("node.log"))
        .unwrap();
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
        ])
        .args(["--request-timeout", "3s", "--sync", "never"])
        .args(["--conflict-mode", mode])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log);
    if let Some(s) = seed {
        cmd.args(["--seeds", s]);
    }
    if let Some((lib, offset)) = clock {
        cmd.env("LD_PRELOAD", lib)
            .env("FAKETIME", offset)
            .env("DONT_FAKE_MONOTONIC", "1");
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
            "{name} exited during start: {}",
            std::fs::read_to_string(data.join("node.log")).unwrap_or_default()
        );
        assert!(Instant::now() < deadline, "{name} did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until every node behind `admins` sees `node` alive and NORMAL with
/// a generation above `above` (and every other node alive too).
async fn wait_alive_everywhere(admins: &[&str], nodes: usize, node: &str, above: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut generation = 0;
    for admin in admins {
        loop {
            let mut last = String::new();
            if let Ok(mut a) = Admin::connect(admin).await
                && let Ok(s) = a.status().await
            {
                let alive = s
                    .members
                    .iter()
                    .filter(|m| m.alive && m.tokens > 0 && m.state == pb::NodeState::Normal as i32)
                    .count();
                let target = s.members.iter().find(|m| m.node_id == node);
                last = format!(
                    "{alive} alive; {node}: {:?}",
                    target.map(|m| (m.alive, m.generation))
                );
                if alive == nodes
                    && let Some(m) = target
                    && m.generation > above
                {
                    generation = m.generation;
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{admin} never saw {node} alive with a generation above {above}: {last}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    generation
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn stop(child: &mut Child) {
    // SIGTERM: a clean stop, as a rolling restart does.
    // SAFETY: signalling our own child process.
    unsafe {
        libc_kill(child.id() as i32, 15);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "node did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_with_an_earlier_clock_is_alive_on_every_peer() {
    let lib = need_faketime!();
    let dir = tempfile::tempdir().unwrap();
    let mut procs = Procs(Vec::new());
    let mut eps: Vec<Ep> = Vec::new();
    for i in 0..3 {
        let seed = eps.first().map(|e| e.gossip.clone());
        // p2's clock runs a minute ahead on its first start.
        let clock = (i == 2).then_some((lib.as_path(), "+60s"));
        let (c, ep) = spawn(dir.path(), i, seed.as_deref(), "causal", clock);
        procs.0.push(Some(c));
        eps.push(ep);
    }
    let admins: Vec<String> = eps.iter().map(|e| e.admin.clone()).collect();
    let admins: Vec<&str> = admins.iter().map(String::as_str).collect();
    let ahead = wait_alive_everywhere(&admins, 3, "p2", 0).await;
    assert!(ahead > now_ms() + 30_000, "p2 started with its clock ahead");

    // Restarted with the right clock: a generation below the one its peers
    // remember would leave it down on all of them for as long as it runs.
    stop(procs.0[2].as_mut().unwrap());
    let (c, ep) = spawn(dir.path(), 2, Some(&eps[0].gossip), "causal", None);
    procs.0[2] = Some(c);
    eps[2] = ep;
    let admins: Vec<&str> = eps.iter().map(|e| e.admin.as_str()).collect();
    let next = wait_alive_everywhere(&admins, 3, "p2", ahead).await;
    assert!(next > ahead);

    // A generation written by hand two minutes ahead is honoured too (one
    // further ahead than half of GENERATION_SKEW would be ignored by peers,
    // so the node would start from its clock instead).
    stop(procs.0[2].as_mut().unwrap());
    let future = now_ms() + 120_000;
    std::fs::write(
        dir.path().join("p2").join("gossip_generation"),
        format!("{future}\n"),
    )
    .unwrap();
    let (c, ep) = spawn(dir.path(), 2, Some(&eps[0].gossip), "causal", None);
    procs.0[2] = Some(c);
    eps[2] = ep;
    let admins: Vec<&str> = eps.iter().map(|e| e.admin.as_str()).collect();
    wait_alive_everywhere(&admins, 3, "p2", future).await;
    // And the node serves: a write through it reaches W=2.
    let mut c2 = Client::connect(&eps[2].grpc).await.unwrap();
    c2.put("after-restart", "ok").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_lww_node_restarted_with_its_clock_set_back_still_wins_over_its_earlier_writes() {
    let lib = need_faketime!();
    let dir = tempfile::tempdir().unwrap();
    let mut procs = Procs(Vec::new());
    let mut eps: Vec<Ep> = Vec::new();
    for i in 0..3 {
        let seed = eps.first().map(|e| e.gossip.clone());
        let (c, ep) = spawn(dir.path(), i, seed.as_deref(), "lww", None);
        procs.0.push(Some(c));
        eps.push(ep);
    }
    let admins: Vec<&str> = eps.iter().map(|e| e.admin.as_str()).collect();
    wait_alive_everywhere(&admins, 3, "p0", 0).await;
    // N = 3 nodes: p0 is a replica of every key, so it coordinates them all.
    let mut c0 = Client::connect(&eps[0].grpc).await.unwrap();
    for k in 0..50 {
        c0.put_with(format!("k{k}"), "old", PutOptions::default().w("all"))
            .await
            .unwrap();
    }

    // p0 crashes and comes back with its clock a minute behind.
    let mut victim = procs.0[0].take().unwrap();
    victim.kill().unwrap();
    victim.wait().unwrap();
    let (c, ep) = spawn(
        dir.path(),
        0,
        Some(&eps[1].gossip),
        "lww",
        Some((&lib, "-60s")),
    );
    procs.0[0] = Some(c);
    eps[0] = ep;
    let admins: Vec<&str> = eps.iter().map(|e| e.admin.as_str()).collect();
    wait_alive_everywhere(&admins, 3, "p0", 0).await;
    let mut c0 = Client::connect(&eps[0].grpc).await.unwrap();
    for k in 0..50 {
        c0.put_with(format!("k{k}"), "new", PutOptions::default().w("all"))
            .await
            .unwrap_or_else(|e| panic!("k{k}: {e}"));
    }
    // Every replica keeps the new value: read each through another node.
    let mut c1 = Client::connect(&eps[1].grpc).await.unwrap();
    let mut lost = Vec::new();
    for k in 0..50 {
        let got = c1
            .get_with(format!("k{k}"), "all")
            .await
            .unwrap_or_else(|e| panic!("read k{k}: {e}"));
        if got.value().map(|v| v.as_ref()) != Some(b"new".as_slice()) {
            lost.push(k);
        }
    }
    assert!(
        lost.is_empty(),
        "{} of 50 writes after the restart lost to older ones: {lost:?}",
        lost.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_from_a_clock_ten_minutes_ahead_are_refused_with_a_clear_error() {
    let lib = need_faketime!();
    let dir = tempfile::tempdir().unwrap();
    let mut procs = Procs(Vec::new());
    let mut eps: Vec<Ep> = Vec::new();
    for i in 0..3 {
        let seed = eps.first().map(|e| e.gossip.clone());
        let clock = (i == 2).then_some((lib.as_path(), "+10m"));
        let (c, ep) = spawn(dir.path(), i, seed.as_deref(), "lww", clock);
        procs.0.push(Some(c));
        eps.push(ep);
    }
    let admins: Vec<&str> = eps.iter().map(|e| e.admin.as_str()).collect();
    wait_alive_everywhere(&admins, 3, "p2", 0).await;
    let mut c0 = Client::connect(&eps[0].grpc).await.unwrap();
    c0.put("k", "from-p0").await.unwrap();

    // p2 coordinates with its clock 10 minutes ahead: both peers refuse.
    let mut c2 = Client::connect(&eps[2].grpc).await.unwrap();
    let err = c2
        .put_with("k", "from-the-future", PutOptions::default().w("quorum"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("quorum not reached") && err.contains("max_clock_skew"),
        "{err}"
    );
    // The record stays where it was minted (like any failed write, it may
    // have landed on its coordinator), but no peer took it.
    for ep in &eps[..2] {
        let mut internode = pb::internode_client::InternodeClient::connect(ep.admin.clone())
            .await
            .unwrap();
        let read = internode
            .read_replica(pb::ReadReplicaRequest {
                key: bytes::Bytes::from_static(b"k"),
            })
            .await
            .unwrap()
            .into_inner();
        let Some(pb::record::Kind::Lww(l)) = read.record.and_then(|r| r.kind) else {
            panic!("no LWW record of k on {}", ep.admin);
        };
        assert_eq!(l.value.unwrap().value.unwrap().as_ref(), b"from-p0");
    }

    // The same record sent straight to a replica: refused, not stored.
    let ts = (now_ms() + 600_000) << 16;
    let mut internode = pb::internode_client::InternodeClient::connect(eps[1].admin.clone())
        .await
        .unwrap();
    let rec = pb::Record {
        kind: Some(pb::record::Kind::Lww(pb::LwwRecord {
            hlc: ts,
            writer: "elsewhere".into(),
            value: Some(pb::StoredValue {
                value: Some(bytes::Bytes::from_static(b"late")),
                ..Default::default()
            }),
        })),
    };
    let st = internode
        .write_replica(pb::WriteReplicaRequest {
            key: bytes::Bytes::from_static(b"direct"),
            record: Some(rec),
            hint_for: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(st.code(), tonic::Code::FailedPrecondition, "{st:?}");
    assert!(
        st.message().contains("ahead of this node's clock"),
        "{st:?}"
    );
    let read = internode
        .read_replica(pb::ReadReplicaRequest {
            key: bytes::Bytes::from_static(b"direct"),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(read.record.is_none(), "a refused record was stored");
}
