//! End to end with the CLI and real node processes (`ringkv local`), against
//! a real S3 server on loopback (moto; the filesystem target when moto is
//! not installed, saying so): `ringkv backup` of a 3-node cluster, a second
//! backup after more writes, `backup list`, `backup prune --keep-last 1`
//! (the first backup and the objects only it named are gone, the second
//! still verifies), a flipped byte makes `backup verify` and `restore` fail
//! naming the object with nothing loaded, and once repaired `ringkv restore`
//! loads it into a fresh 5-node cluster: same siblings, deletes stay deleted.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use object_store::ObjectStoreExt;
use ringkv_client::Client;
use ringkv_node::backup::Target;

const RINGKV: &str = env!("CARGO_BIN_EXE_ringkv");
const KEYS: usize = 300;

/// Kills `ringkv local` (and so, via PDEATHSIG, its nodes) when dropped.
struct Local {
    child: Child,
    admin: Vec<String>,
    grpc: Vec<String>,
}

impl Drop for Local {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// The node tests' loopback S3 server (moto), shared by path.
#[allow(dead_code)]
#[path = "../../node/tests/common/s3.rs"]
mod s3;
#[allow(dead_code)]
#[path = "../../node/tests/common/server.rs"]
mod server;

/// The S3 server (moto) with the test's bucket, or why there is none.
fn moto() -> Result<s3::Moto, String> {
    let m = s3::Moto::start()?;
    m.create_bucket("ringkv-bk");
    Ok(m)
}

/// Dummy credentials moto accepts, for the nodes and the CLI alike.
const AWS_ENV: [(&str, &str); 3] = [
    ("AWS_ACCESS_KEY_ID", "testing"),
    ("AWS_SECRET_ACCESS_KEY", "testing"),
    ("AWS_REGION", "us-east-1"),
];

fn start(data: &std::path::Path, nodes: usize) -> Local {
    let mut child = Command::new(RINGKV)
        .arg("local")
        .arg("--data")
        .arg(data)
        .args(["--nodes", &nodes.to_string()])
        .args(["--http-port", "0", "--grpc-port", "0"])
        .args(["--internode-port", "0", "--gossip-port", "0"])
        .args(["--sync", "never"])
        .envs(AWS_ENV)
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
    let mut local = Local {
        child,
        admin: Vec::new(),
        grpc: Vec::new(),
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("ringkv local to start");
        if line.starts_with("cluster running") {
            break;
        }
        if line.starts_with("node-") {
            // node-i  http://ADDR  grpc ADDR  admin ADDR  (logs ...)
            let f: Vec<&str> = line.split_whitespace().collect();
            local.grpc.push(format!("http://{}", f[3]));
            local.admin.push(format!("http://{}", f[5]));
        }
    }
    assert_eq!(local.admin.len(), nodes);
    // Keep draining its output (a full pipe would block it).
    std::thread::spawn(move || while rx.recv().is_ok() {});
    // Every node NORMAL in every node's view.
    for a in &local.admin {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let (ok, out, _) = cli(&["--admin", a, "status"]);
            if ok && out.matches("NORMAL").count() > nodes && !out.contains(" no ") {
                break;
            }
            assert!(Instant::now() < deadline, "cluster did not converge: {out}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    local
}

fn cli(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(RINGKV)
        .args(args)
        .envs(AWS_ENV)
        .output()
        .expect("run ringkv");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn sibs(r: &ringkv_client::GetResult) -> BTreeSet<Vec<u8>> {
    r.siblings.iter().map(|s| s.value.to_vec()).collect()
}

#[test]
fn backup_prune_verify_and_restore_with_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let s3 = moto();
    let url = match &s3 {
        Ok(m) => format!(
            "s3://ringkv-bk/prod?endpoint={}&allow_http=true",
            m.endpoint()
        ),
        Err(why) => {
            println!("S3 server unavailable ({why}): using the filesystem target");
            format!("file://{}", tmp.path().join("bucket").display())
        }
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let src = start(&tmp.path().join("src"), 3);
    let deleted: Vec<String> = rt.block_on(async {
        let mut c = Client::connect(&src.grpc[0]).await.unwrap();
        let mut deleted = Vec::new();
        for i in 0..KEYS {
            c.put(format!("k{i}"), format!("a{i}")).await.unwrap();
            if i % 2 == 0 {
                // A concurrent sibling (no context).
                c.put(format!("k{i}"), format!("b{i}")).await.unwrap();
            }
            if i % 10 == 0 {
                let k = format!("gone{i}");
                let p = c.put(&k, "x").await.unwrap();
                c.delete(&k, &p.context, "").await.unwrap();
                deleted.push(k);
            }
        }
        deleted
    });

    let (ok, out, err) = cli(&[
        "--admin",
        &src.admin[0],
        "backup",
        "--url",
        &url,
        "--id",
        "b1",
    ]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("backup b1 done: 3 nodes"), "{out}");
    rt.block_on(async {
        let mut c = Client::connect(&src.grpc[1]).await.unwrap();
        for i in 0..KEYS / 10 {
            c.put(format!("more{i}"), "m").await.unwrap();
        }
    });
    let (ok, out, err) = cli(&[
        "--admin",
        &src.admin[2],
        "backup",
        "--url",
        &url,
        "--id",
        "b2",
    ]);
    assert!(ok, "{out}{err}");
    drop(src);

    let (ok, out, _) = cli(&["backup", "list", "--url", &url]);
    assert!(ok && out.contains("b1\t") && out.contains("b2\t"), "{out}");
    let creds = AWS_ENV
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()));
    let target = Target::open_with(&url, creds.collect()).unwrap();
    let objects = |t: Target| async move {
        use futures::TryStreamExt;
        t.store()
            .list(Some(&t.path("files")))
            .map_ok(|m| t.relative(&m.location))
            .try_collect::<BTreeSet<String>>()
            .await
            .unwrap()
    };
    let manifests = |id: &'static str, t: Target| async move {
        ringkv_node::backup::verify::read_manifests(&t, id)
            .await
            .unwrap()
    };
    let b1 = rt.block_on(manifests("b1", target.clone()));
    let b2 = rt.block_on(manifests("b2", target.clone()));
    let named = |ms: &[ringkv_node::backup::NodeManifest]| -> BTreeSet<String> {
        ms.iter()
            .flat_map(|m| m.files.iter().map(|f| f.object.clone()))
            .collect()
    };
    let (in_b1, in_b2) = (named(&b1), named(&b2));
    let only_b1: BTreeSet<_> = in_b1.difference(&in_b2).cloned().collect();
    assert!(
        !only_b1.is_empty(),
        "compactions/flushes since b1 left files only b1 names"
    );
    assert!(
        in_b1.intersection(&in_b2).count() > 0,
        "b2 shares b1's files"
    );
    let before = rt.block_on(objects(target.clone()));
    assert_eq!(
        before,
        &in_b1 | &in_b2,
        "stored objects = what the manifests name"
    );

    let (ok, out, err) = cli(&[
        "backup",
        "prune",
        "--url",
        &url,
        "--keep-last",
        "1",
        "--min-object-age",
        "0s",
    ]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("deleted 1 (b1)"), "{out}");
    let after = rt.block_on(objects(target.clone()));
    assert_eq!(after, in_b2, "exactly the objects only b1 named are gone");
    let (ok, out, err) = cli(&["backup", "verify", "--url", &url, "--backup", "b2"]);
    assert!(ok && out.contains("b2 verifies: 3 nodes"), "{out}{err}");
    let (ok, _, err) = cli(&["backup", "verify", "--url", &url, "--backup", "b1"]);
    assert!(!ok && err.contains("not found"), "{err}");

    // A flipped byte: verify and restore name the object; nothing loaded.
    let victim = b2
        .iter()
        .flat_map(|m| m.files.iter())
        .filter(|f| f.path.ends_with(".sst"))
        .max_by_key(|f| f.size)
        .unwrap()
        .clone();
    let original = rt.block_on(async {
        let p = target.path(&victim.object);
        let orig = target.store().get(&p).await.unwrap().bytes().await.unwrap();
        let mut bad = orig.to_vec();
        bad[orig.len() / 2] ^= 1;
        target.store().put(&p, bad.into()).await.unwrap();
        orig
    });
    let (ok, _, err) = cli(&["backup", "verify", "--url", &url, "--backup", "b2"]);
    assert!(
        !ok && err.contains(&victim.object) && err.contains("corrupt"),
        "{err}"
    );
    let dst = start(&tmp.path().join("dst"), 5);
    let restore = |dst: &Local| {
        cli(&[
            "--admin",
            &dst.admin[3],
            "restore",
            "--from",
            &url,
            "--backup",
            "b2",
            "--scratch",
            tmp.path().join("scratch").to_str().unwrap(),
        ])
    };
    let (ok, out, err) = restore(&dst);
    assert!(!ok, "{out}");
    assert!(
        err.contains(&victim.object) && err.contains("nothing was restored"),
        "{err}"
    );
    rt.block_on(async {
        let mut c = Client::connect(&dst.grpc[0]).await.unwrap();
        for i in 0..KEYS {
            assert!(
                !c.get(format!("k{i}")).await.unwrap().found(),
                "k{i} loaded"
            );
        }
    });

    // Repaired: the restore into 5 nodes loads everything.
    rt.block_on(async {
        let p = target.path(&victim.object);
        target.store().put(&p, original.into()).await.unwrap();
    });
    let (ok, out, err) = restore(&dst);
    assert!(ok, "{out}{err}");
    assert!(out.contains("done into 5 nodes"), "{out}");
    rt.block_on(async {
        let mut c = Client::connect(&dst.grpc[4]).await.unwrap();
        for i in 0..KEYS {
            let got = c.get_with(format!("k{i}"), "all").await.unwrap();
            let mut want = BTreeSet::from([format!("a{i}").into_bytes()]);
            if i % 2 == 0 {
                want.insert(format!("b{i}").into_bytes());
            }
            assert_eq!(sibs(&got), want, "k{i}");
        }
        for i in 0..KEYS / 10 {
            assert!(c.get(format!("more{i}")).await.unwrap().found(), "more{i}");
        }
        for k in &deleted {
            assert!(!c.get_with(k, "all").await.unwrap().found(), "{k} deleted");
        }
    });
}
