use super::*;

fn raw(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn defaults_match_the_contract() {
    let c = Config::from_raw(&raw(&[("node_id", "a")])).unwrap();
    assert_eq!((c.n, c.w, c.r, c.vnodes), (3, 2, 2, 128));
    assert_eq!(c.listen_internode.port(), 7001);
    assert_eq!(c.listen_grpc.port(), 7070);
    assert_eq!(c.listen_http.port(), 8080);
    assert_eq!(c.listen_gossip.port(), 7000);
    assert_eq!(c.data_dir, PathBuf::from("./ringkv-data/a"));
    assert_eq!(c.tombstone_grace, Duration::from_secs(864000));
    assert_eq!(c.conflict_mode, ConflictMode::Causal);
    assert_eq!(c.repair_interval, None);
}

#[test]
fn invalid_values_name_the_field() {
    for (pairs, field) in [
        (vec![("w", "4")], "w"),
        (vec![("r", "0")], "r"),
        (vec![("n", "x")], "n"),
        (vec![("conflict_mode", "newest")], "conflict_mode"),
        (vec![("request_timeout", "soon")], "request_timeout"),
        (vec![("sync", "sometimes")], "sync"),
        (vec![("speculative_retry", "99p")], "speculative_retry"),
        (vec![("sloppy_reads", "maybe")], "sloppy_reads"),
        (vec![("max_clock_skew", "500ms")], "max_clock_skew"),
        (vec![("max_clock_skew", "a while")], "max_clock_skew"),
        (vec![("node_id", "a b")], "node_id"),
        (vec![("seeds", "host-without-port")], "seeds"),
        (vec![("listen_http", "nowhere")], "listen_http"),
    ] {
        let mut p = vec![("node_id", "a")];
        p.extend(pairs);
        let e = Config::from_raw(&raw(&p)).unwrap_err().to_string();
        assert!(e.contains(&format!("`{field}`")), "{e}");
    }
}

#[test]
fn the_gossip_secret_file_is_a_path_and_unset_by_default() {
    let c = Config::from_raw(&raw(&[("node_id", "a")])).unwrap();
    assert_eq!(c.gossip_secret_file, None);
    let c = Config::from_raw(&raw(&[
        ("node_id", "a"),
        ("gossip_secret_file", " /etc/ringkv/gossip/secret "),
    ]))
    .unwrap();
    assert_eq!(
        c.gossip_secret_file,
        Some(PathBuf::from("/etc/ringkv/gossip/secret"))
    );
    // A missing file is refused at start, naming the file.
    let e = crate::membership::GossipSecret::load(Path::new("/nonexistent/secret"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("/nonexistent/secret"), "{e}");
}

#[test]
fn tls_mode_needs_its_files_and_files_need_tls_mode() {
    let c = Config::from_raw(&raw(&[("node_id", "a")])).unwrap();
    assert_eq!(c.tls_mode, crate::security::TlsMode::Disabled);
    let e = Config::from_raw(&raw(&[("node_id", "a"), ("tls_cert", "/c.pem")]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("`tls_cert`") && e.contains("tls_mode"), "{e}");
    let e = Config::from_raw(&raw(&[
        ("node_id", "a"),
        ("tls_mode", "enabled"),
        ("tls_cert", "/c.pem"),
        ("tls_key", "/k.pem"),
    ]))
    .unwrap_err()
    .to_string();
    assert!(e.contains("`tls_ca`"), "{e}");
    let e = Config::from_raw(&raw(&[("node_id", "a"), ("tls_mode", "on")]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("`tls_mode`"), "{e}");
    let c = Config::from_raw(&raw(&[
        ("node_id", "a"),
        ("tls_mode", "required"),
        ("tls_cert", "/c.pem"),
        ("tls_key", "/k.pem"),
        ("tls_ca", "/ca.pem"),
        ("auth_tokens_file", "/tokens"),
    ]))
    .unwrap();
    assert_eq!(c.tls_mode, crate::security::TlsMode::Required);
    assert_eq!(c.auth_tokens_file, Some(PathBuf::from("/tokens")));
}

#[test]
fn yaml_is_overridden_by_flags() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(
        &path,
        "node_id: y\nn: 5\nw: 3\nseeds:\n  - a:7000\n  - b:7000\nsync: periodic:100ms\n",
    )
    .unwrap();
    let args = Args {
        config: Some(path.clone()),
        w: Some("4".into()),
        ..Args::default()
    };
    let c = args.resolve().unwrap();
    assert_eq!(c.node_id, "y");
    assert_eq!((c.n, c.w), (5, 4));
    assert_eq!(c.seeds, vec!["a:7000", "b:7000"]);
    assert_eq!(c.sync, SyncMode::Periodic(Duration::from_millis(100)));

    std::fs::write(&path, "nodes: 3\n").unwrap();
    let e = Args {
        config: Some(path),
        ..Args::default()
    }
    .resolve()
    .unwrap_err()
    .to_string();
    assert!(e.contains("unknown field `nodes`"), "{e}");
}
