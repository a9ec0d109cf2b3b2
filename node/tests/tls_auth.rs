//! TLS, mutual TLS and bearer tokens (issue 9), on in-process nodes over
//! loopback: each test fails when the protection it names is missing.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use ringkv_node::security::TlsMode;
use ringkv_node::security::pki::{Ca, CertPair};
use ringkv_proto::v1 as pb;
use ringkv_proto::v1::admin_client::AdminClient;
use ringkv_proto::v1::internode_client::InternodeClient;
use ringkv_proto::v1::key_value_client::KeyValueClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

const LONG: Duration = Duration::from_secs(60);
const READ: &str = "read-token-0123456789";
const RW: &str = "readwrite-token-0123456789";
const ADMIN: &str = "admin-token-0123456789";

/// A cluster CA with its files written under `dir`.
struct Pki {
    ca: Ca,
    dir: PathBuf,
}

impl Pki {
    fn new(dir: &Path, name: &str) -> Pki {
        let dir = dir.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let ca = Ca::generate(name).unwrap();
        std::fs::write(dir.join("ca.pem"), &ca.cert_pem).unwrap();
        let node = ca.issue_loopback("node").unwrap();
        write_pair(&dir, "node", &node);
        Pki { ca, dir }
    }
    fn ca_path(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    fn tweak(&self, mode: TlsMode) -> impl Fn(&mut ringkv_node::Config) + use<> {
        let (cert, key, ca) = (
            self.dir.join("node.pem"),
            self.dir.join("node-key.pem"),
            self.ca_path(),
        );
        move |c: &mut ringkv_node::Config| {
            c.tls_mode = mode;
            c.tls_cert = Some(cert.clone());
            c.tls_key = Some(key.clone());
            c.tls_ca = Some(ca.clone());
        }
    }
    fn client(&self, name: &str) -> CertPair {
        self.ca.issue(name, &["localhost"]).unwrap()
    }
}

fn write_pair(dir: &Path, name: &str, p: &CertPair) {
    std::fs::write(dir.join(format!("{name}.pem")), &p.cert_pem).unwrap();
    std::fs::write(dir.join(format!("{name}-key.pem")), &p.key_pem).unwrap();
}

fn tokens_file(dir: &Path) -> PathBuf {
    let p = dir.join("tokens");
    std::fs::write(
        &p,
        format!("# test tokens\nread {READ}\nreadwrite {RW}\nadmin {ADMIN}\n"),
    )
    .unwrap();
    p
}

fn with_token<T>(msg: T, token: Option<&str>) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if let Some(t) = token {
        r.metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    r
}

fn put_req(key: &str, value: &str) -> pb::PutRequest {
    pb::PutRequest {
        key: Bytes::from(key.to_string()),
        value: Bytes::from(value.to_string()),
        ..Default::default()
    }
}

fn get_req(key: &str) -> pb::GetRequest {
    pb::GetRequest {
        key: Bytes::from(key.to_string()),
        ..Default::default()
    }
}

/// An https channel trusting `ca`, presenting `identity` if given.
async fn tls_channel(
    addr: std::net::SocketAddr,
    ca: &Path,
    identity: Option<&CertPair>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls =
        ClientTlsConfig::new().ca_certificate(Certificate::from_pem(std::fs::read(ca).unwrap()));
    if let Some(id) = identity {
        tls = tls.identity(Identity::from_pem(&id.cert_pem, &id.key_pem));
    }
    Endpoint::from_shared(format!("https://127.0.0.1:{}", addr.port()))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
}

fn refused(node: &ringkv_node::RunningNode, api: &'static str, reason: &'static str) -> u64 {
    node.metrics
        .auth_refused
        .get_or_create(&ringkv_node::metrics::AuthLabels { api, reason })
        .get()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_gate_every_client_api_by_role() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = tokens_file(dir.path());
    let t = tokens.clone();
    let c = Cluster::start(1, move |cfg| {
        cfg.n = 1;
        cfg.w = 1;
        cfg.r = 1;
        cfg.auth_tokens_file = Some(t.clone());
    })
    .await;
    let node = &c.nodes[0];
    let mut kv = c.kv(0).await;

    // gRPC: no token, an unknown token, a read token writing.
    let e = kv
        .put(with_token(put_req("k", "v"), None))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
    assert!(e.message().contains("Bearer"), "{}", e.message());
    let e = kv
        .put(with_token(put_req("k", "v"), Some("not-a-token-at-all")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    let e = kv
        .put(with_token(put_req("k", "v"), Some(READ)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("readwrite"), "{}", e.message());
    let e = kv.get(with_token(get_req("k"), None)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    // Nothing was written by the refused calls.
    let got = kv
        .get(with_token(get_req("k"), Some(READ)))
        .await
        .unwrap()
        .into_inner();
    assert!(got.siblings.is_empty(), "{got:?}");
    kv.put(with_token(put_req("k", "v"), Some(RW)))
        .await
        .unwrap();
    let got = kv
        .get(with_token(get_req("k"), Some(READ)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.siblings.len(), 1);

    // Admin: only the admin token.
    let mut admin = c.admin(0).await;
    for t in [None, Some(READ), Some(RW)] {
        let e = admin
            .status(with_token(pb::StatusRequest {}, t))
            .await
            .unwrap_err();
        let want = if t.is_none() {
            tonic::Code::Unauthenticated
        } else {
            tonic::Code::PermissionDenied
        };
        assert_eq!(e.code(), want, "{t:?}: {e:?}");
    }
    admin
        .status(with_token(pb::StatusRequest {}, Some(ADMIN)))
        .await
        .unwrap();

    // HTTP: 401 with a challenge, 403, then success; probes stay open.
    let a = node.addrs.http;
    let r = http(a, "PUT", "/v1/keys/h", &[], b"x").await;
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").is_some());
    assert_eq!(r.json()["error"], "unauthenticated");
    let rd = format!("Bearer {READ}");
    let r = http(a, "PUT", "/v1/keys/h", &[("Authorization", &rd)], b"x").await;
    assert_eq!(r.status, 403, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        http(a, "GET", "/v1/keys/h", &[("Authorization", &rd)], b"")
            .await
            .status,
        404
    );
    let rw = format!("Bearer {RW}");
    let r = http(a, "PUT", "/v1/keys/h", &[("Authorization", &rw)], b"x").await;
    assert!(r.status == 200 || r.status == 204, "{}", r.status);
    assert_eq!(http(a, "GET", "/healthz", &[], b"").await.status, 200);
    assert_eq!(http(a, "GET", "/metrics", &[], b"").await.status, 200);

    // Refusals are counted by API and reason, in a closed label set.
    assert!(refused(node, "grpc", "missing_token") >= 2);
    assert!(refused(node, "grpc", "unknown_token") >= 1);
    assert!(refused(node, "grpc", "forbidden") >= 1);
    assert!(refused(node, "admin", "forbidden") >= 2);
    assert!(refused(node, "http", "missing_token") >= 1);
    assert!(refused(node, "http", "forbidden") >= 1);

    // The file is re-read: a new token works, a removed one stops working.
    std::fs::write(&tokens, "readwrite fresh-token-0123456789\n").unwrap();
    let mut kv2 = kv.clone();
    eventually(LONG, "the rewritten tokens file to be used", || {
        let mut kv2 = kv2.clone();
        async move {
            kv2.put(with_token(
                put_req("k2", "v"),
                Some("fresh-token-0123456789"),
            ))
            .await
            .is_ok()
        }
    })
    .await;
    let e = kv2
        .get(with_token(get_req("k"), Some(READ)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_cluster_replicates_and_refuses_certificates_of_another_ca() {
    let dir = tempfile::tempdir().unwrap();
    let good = Pki::new(dir.path(), "cluster-ca");
    let evil = Pki::new(dir.path(), "other-ca");
    let c = Cluster::start(3, good.tweak(TlsMode::Enabled)).await;

    // Clients need no certificate on the client API in `enabled` mode; a
    // write at W=3 proves every node replicated over mutual TLS.
    let ch = tls_channel(c.nodes[0].addrs.grpc, &good.ca_path(), None)
        .await
        .unwrap();
    let mut kv = KeyValueClient::new(ch);
    let mut req = put_req("replicated", "v");
    req.w = "3".into();
    kv.put(req).await.unwrap();
    for i in 0..3 {
        assert_eq!(
            c.local_values(i, b"replicated").await,
            vec![b"v".to_vec()],
            "node {i}"
        );
    }
    // Plaintext is not served.
    let plain = Endpoint::from_shared(format!("http://{}", c.nodes[0].addrs.grpc))
        .unwrap()
        .connect()
        .await;
    if let Ok(ch) = plain {
        assert!(
            KeyValueClient::new(ch)
                .get(get_req("replicated"))
                .await
                .is_err()
        );
    }

    let internode = c.nodes[0].addrs.internode;
    // No client certificate: the internode/Admin handshake fails.
    let no_cert = match tls_channel(internode, &good.ca_path(), None).await {
        Ok(ch) => AdminClient::new(ch)
            .status(pb::StatusRequest {})
            .await
            .is_err(),
        Err(_) => true,
    };
    assert!(no_cert, "Admin answered a client without a certificate");
    // A certificate of another CA: refused (the client trusts our CA, so
    // only the server's check of the client certificate can refuse it).
    let foreign = evil.client("rogue");
    let res = match tls_channel(internode, &good.ca_path(), Some(&foreign)).await {
        Ok(ch) => {
            let mut inter = InternodeClient::new(ch.clone());
            let w = inter
                .write_replica(pb::WriteReplicaRequest::default())
                .await
                .is_err();
            let s = AdminClient::new(ch)
                .status(pb::StatusRequest {})
                .await
                .is_err();
            w && s
        }
        Err(_) => true,
    };
    assert!(res, "a certificate of another CA was accepted");
    let failed = c.nodes[0]
        .metrics
        .tls_handshakes_failed
        .get_or_create(&ringkv_node::metrics::HandshakeLabels {
            listener: "internode",
            reason: "refused",
        })
        .get();
    assert!(failed >= 2, "refused handshakes are counted ({failed})");
    // A certificate of the cluster CA: Admin answers.
    let mine = good.client("operator");
    let ch = tls_channel(internode, &good.ca_path(), Some(&mine))
        .await
        .unwrap();
    AdminClient::new(ch)
        .status(pb::StatusRequest {})
        .await
        .unwrap();

    // A whole node with a certificate of another CA: it hears gossip (no
    // gossip secret here, to isolate TLS) but can neither stream its ranges
    // in (stays JOINING) nor receive replicas.
    let mut c = c;
    let rogue = c.add_node(evil.tweak(TlsMode::Enabled)).await;
    eventually(LONG, "the rogue to see the cluster", || async {
        c.nodes[rogue].membership.view().members.len() == 4
    })
    .await;
    let ch = tls_channel(c.nodes[0].addrs.grpc, &good.ca_path(), None)
        .await
        .unwrap();
    let mut kv = KeyValueClient::new(ch);
    for i in 0..30 {
        let _ = kv.put(put_req(&format!("after-{i}"), "v")).await;
    }
    // Observed over a few join retries (each 2 s apart): a negative needs
    // a window.
    let until = tokio::time::Instant::now() + Duration::from_secs(6);
    while tokio::time::Instant::now() < until {
        let me = c.nodes[rogue].membership.local();
        assert_ne!(
            me.state,
            pb::NodeState::Normal as i32,
            "a node with a foreign certificate finished joining"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(c.nodes[rogue].replica.store().count().await.unwrap(), 0);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_mode_needs_a_client_certificate_on_the_client_api() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "ca");
    let c = Cluster::start(1, {
        let t = pki.tweak(TlsMode::Required);
        move |cfg: &mut ringkv_node::Config| {
            t(cfg);
            cfg.n = 1;
            cfg.w = 1;
            cfg.r = 1;
        }
    })
    .await;
    let grpc = c.nodes[0].addrs.grpc;
    let anonymous = match tls_channel(grpc, &pki.ca_path(), None).await {
        Ok(ch) => KeyValueClient::new(ch).get(get_req("k")).await.is_err(),
        Err(_) => true,
    };
    assert!(
        anonymous,
        "required mode served a client without a certificate"
    );
    let id = pki.client("app");
    let ch = tls_channel(grpc, &pki.ca_path(), Some(&id)).await.unwrap();
    KeyValueClient::new(ch)
        .put(put_req("k", "v"))
        .await
        .unwrap();
    c.stop().await;
}

/// The certificate a TLS server at `addr` presents.
async fn presented(addr: std::net::SocketAddr, ca: &Path, id: &CertPair) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject as _;
    let roots =
        ringkv_node::security::tls::roots_from_pem(ca, &std::fs::read(ca).unwrap()).unwrap();
    let certs = rustls::pki_types::CertificateDer::pem_slice_iter(id.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(id.key_pem.as_bytes()).unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(ringkv_node::security::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let s = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect("127.0.0.1".try_into().unwrap(), tcp)
        .await
        .unwrap();
    s.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

fn der(pem: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject as _;
    rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_rotated_on_disk_is_used_while_writes_keep_succeeding() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "ca");
    let c = Cluster::start(3, pki.tweak(TlsMode::Enabled)).await;
    let id = pki.client("tester");
    let old = presented(c.nodes[0].addrs.internode, &pki.ca_path(), &id).await;

    // A writer at W=3 (every write crosses internode TLS) that opens a new
    // client connection every few writes, so both old and new sessions run.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let errors = Arc::new(parking_lot::Mutex::new(Vec::<String>::new()));
    let writer = {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        let errors = errors.clone();
        let (addr, ca) = (c.nodes[0].addrs.grpc, pki.ca_path());
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let ch = tls_channel(addr, &ca, None).await.unwrap();
                let mut kv = KeyValueClient::new(ch);
                for _ in 0..10 {
                    let mut req = put_req(&format!("rot-{i}"), "v");
                    req.w = "3".into();
                    match kv.put(req).await {
                        Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            errors.lock().push(format!("write {i}: {e:?}"));
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                    i += 1;
                }
            }
        })
    };
    eventually(LONG, "writes to flow", || async {
        ok.load(Ordering::Relaxed) >= 20
    })
    .await;

    // Rotate: a new node certificate and key from the same CA, written as
    // a Secret update would (new files, then renamed into place).
    let fresh = pki.ca.issue_loopback("node-rotated").unwrap();
    write_pair(&pki.dir, "node.new", &fresh);
    std::fs::rename(
        pki.dir.join("node.new-key.pem"),
        pki.dir.join("node-key.pem"),
    )
    .unwrap();
    std::fs::rename(pki.dir.join("node.new.pem"), pki.dir.join("node.pem")).unwrap();
    eventually(LONG, "every node to reload its certificate", || async {
        c.nodes
            .iter()
            .all(|n| n.tls.as_ref().unwrap().reloads() >= 1)
    })
    .await;
    let before = ok.load(Ordering::Relaxed);
    eventually(
        LONG,
        "writes to keep flowing after the rotation",
        || async { ok.load(Ordering::Relaxed) >= before + 30 },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();

    for n in &c.nodes {
        let now = presented(n.addrs.internode, &pki.ca_path(), &id).await;
        assert_eq!(
            now,
            der(&fresh.cert_pem),
            "{} presents the rotated certificate",
            n.node_id()
        );
        assert_ne!(now, old);
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "writes failed during rotation: {:?}",
        errors.lock()
    );
    eprintln!("{} writes at W=3, none failed", ok.load(Ordering::Relaxed));
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_http2_listener_advertises_a_stream_limit_and_holds_it() {
    let c = Cluster::start(1, |cfg| {
        cfg.n = 1;
        cfg.w = 1;
        cfg.r = 1;
    })
    .await;
    let limit = ringkv_node::security::HttpLimits::default().max_concurrent_streams as usize;
    for addr in [
        c.nodes[0].addrs.grpc,
        c.nodes[0].addrs.http,
        c.nodes[0].addrs.internode,
    ] {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        // Start below the server's limit so only its SETTINGS raise it.
        let (send, conn) = h2::client::Builder::new()
            .initial_max_send_streams(1)
            .handshake::<_, Bytes>(tcp)
            .await
            .unwrap();
        let driver = tokio::spawn(conn);
        eventually(LONG, "the server's SETTINGS", || {
            let send = send.clone();
            async move { send.current_max_send_streams() != 1 }
        })
        .await;
        assert_eq!(send.current_max_send_streams(), limit, "{addr}");
        driver.abort();
        // And the server holds it against a client that ignores it.
        let refused = refused_streams(addr, limit + 40).await;
        assert!(
            refused >= 40,
            "{addr}: only {refused} of the 40 streams beyond the limit were refused"
        );
    }
    c.stop().await;
}

/// Opens `count` half-open streams (HEADERS without END_STREAM) over raw
/// HTTP/2 frames, as an attacker that ignores SETTINGS would, and counts
/// the server's RST_STREAM(REFUSED_STREAM) answers.
async fn refused_streams(addr: std::net::SocketAddr, count: usize) -> usize {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        f.extend([kind, flags]);
        f.extend(stream.to_be_bytes());
        f.extend(payload);
        f
    }
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    tcp.write_all(&frame(4, 0, 0, &[])).await.unwrap();
    // The server's SETTINGS must be acknowledged before its limit applies.
    let mut head = [0u8; 9];
    loop {
        tcp.read_exact(&mut head).await.unwrap();
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut body = vec![0u8; len];
        tcp.read_exact(&mut body).await.unwrap();
        if head[3] == 4 && head[4] & 1 == 0 {
            break;
        }
    }
    tcp.write_all(&frame(4, 1, 0, &[])).await.unwrap();
    // HPACK without Huffman or indexing: :method POST, :scheme http (static
    // table), :path, :authority and content-type as literals.
    let path = b"/ringkv.v1.KeyValue/Get";
    let mut block = vec![0x83, 0x86, 0x04, path.len() as u8];
    block.extend(path);
    block.extend([0x01, 0x01, b'x', 0x0f, 0x10, 16]);
    block.extend(b"application/grpc");
    let mut out = Vec::new();
    for i in 0..count as u32 {
        out.extend(frame(1, 0x4, 2 * i + 1, &block));
    }
    tcp.write_all(&out).await.unwrap();
    let mut refused = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while refused < count && tokio::time::Instant::now() < deadline {
        let read = tokio::time::timeout(Duration::from_secs(2), tcp.read_exact(&mut head)).await;
        let Ok(Ok(_)) = read else { break };
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut body = vec![0u8; len];
        if tcp.read_exact(&mut body).await.is_err() {
            break;
        }
        // RST_STREAM with REFUSED_STREAM (7).
        if head[3] == 3 && body == [0, 0, 0, 7] {
            refused += 1;
        }
    }
    refused
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slow_header_connections_are_closed() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let c = Cluster::start(1, |cfg| {
        cfg.n = 1;
        cfg.w = 1;
        cfg.r = 1;
    })
    .await;
    let limit = ringkv_node::security::HttpLimits::default().header_read_timeout;
    let addr = c.nodes[0].addrs.http;
    // Silent connections on the gRPC listeners too.
    let silent_grpc = tokio::net::TcpStream::connect(c.nodes[0].addrs.grpc)
        .await
        .unwrap();
    let silent_internode = tokio::net::TcpStream::connect(c.nodes[0].addrs.internode)
        .await
        .unwrap();
    // One connection sends nothing; one sends half a request head and
    // stalls; one is served once, then stays idle (keep-alive).
    let idle = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut kept = tokio::net::TcpStream::connect(addr).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    for (what, mut s) in [
        ("idle", idle),
        ("slow header", slow),
        ("keep-alive", kept),
        ("silent gRPC", silent_grpc),
        ("silent internode", silent_internode),
    ] {
        let mut buf = Vec::new();
        let read =
            tokio::time::timeout(limit + Duration::from_secs(30), s.read_to_end(&mut buf)).await;
        assert!(read.is_ok(), "the {what} connection was not closed");
        eprintln!("{what} closed after {:?}", started.elapsed());
    }
    eprintln!("all closed after {:?} (limit {limit:?})", started.elapsed());
    c.stop().await;
}
