//! The local "kubelet": StatefulSet controller, kubelet and cluster DNS for
//! one namespace on loopback, running a real node process per pod.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringkv_client::Admin;
use ringkv_e2e::cluster::{Endpoints, signal, tail, wait_endpoints};
use ringkv_operator::admin::Resolver;
use ringkv_proto::v1::NodeState;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::fake_api::FakeApi;
use super::{BIN, NAME, NS};

/// A pod (its volume, a directory named after it, outlives its process).
pub(super) struct Pod {
    pub(super) child: Option<Child>,
    pub(super) endpoints: Option<Endpoints>,
    pub(super) ready: bool,
}

/// StatefulSet controller + kubelet + DNS for one namespace, on loopback.
pub(super) struct Kubelet {
    pub(super) root: tempfile::TempDir,
    pub(super) pods: BTreeMap<String, Pod>,
    /// Pods removed by a scale-down before their node reported LEFT.
    pub(super) violations: Vec<String>,
    /// Pods removed by a scale-down, in order.
    pub(super) removed: Vec<String>,
    /// Published for the operator's Admin resolver: pod -> host:port.
    pub(super) admin_addrs: Arc<std::sync::Mutex<BTreeMap<String, String>>>,
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        for p in self.pods.values_mut() {
            if let Some(mut c) = p.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// Body of GET `path` over HTTP/1.0, if it answered 200.
pub(super) async fn http_get(addr: &str, path: &str) -> Option<String> {
    let fetch = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await
            .ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf).to_string();
        let (head, body) = text.split_once("\r\n\r\n")?;
        head.contains(" 200 ").then(|| body.to_string())
    };
    tokio::time::timeout(Duration::from_secs(5), fetch)
        .await
        .ok()
        .flatten()
}

/// GET `path` over HTTP/1.0; true on a 200.
pub(super) async fn http_ok(addr: &str, path: &str) -> bool {
    let fetch = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await
            .ok()?;
        let mut buf = [0u8; 16];
        let n = s.read(&mut buf).await.ok()?;
        Some(buf[..n].starts_with(b"HTTP/1.0 200") || buf[..n].starts_with(b"HTTP/1.1 200"))
    };
    tokio::time::timeout(Duration::from_secs(2), fetch)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// `$(VAR)` expansion as the kubelet does it: earlier vars only, unknown
/// references left as written.
pub(super) fn expand(value: &str, vars: &[(String, String)]) -> String {
    let mut out = value.to_string();
    for (k, v) in vars {
        out = out.replace(&format!("$({k})"), v);
    }
    out
}

impl Kubelet {
    pub(super) fn new() -> Self {
        Kubelet {
            root: tempfile::tempdir().unwrap(),
            pods: BTreeMap::new(),
            violations: Vec::new(),
            removed: Vec::new(),
            admin_addrs: Arc::default(),
        }
    }

    pub(super) fn resolver(&self) -> Resolver {
        let addrs = self.admin_addrs.clone();
        Arc::new(move |a| {
            addrs
                .lock()
                .unwrap()
                .get(&a.pod)
                .cloned()
                // Nothing listens there: the pod does not run (yet).
                .unwrap_or_else(|| "127.0.0.1:1".into())
        })
    }

    pub(super) fn endpoints(&self, pod: &str) -> Endpoints {
        self.pods[pod].endpoints.clone().expect("pod started")
    }

    /// What the peer Service's DNS name resolves to: every running pod's gossip address.
    pub(super) fn peer_addrs(&self) -> Vec<String> {
        self.pods
            .values()
            .filter(|p| p.child.is_some())
            .filter_map(|p| p.endpoints.as_ref().map(|e| e.gossip.clone()))
            .collect()
    }

    /// The environment of the template's container for `pod`, resolved.
    pub(super) fn pod_env(
        &self,
        container: &Value,
        pod: &str,
        mounts: &BTreeMap<String, PathBuf>,
    ) -> Vec<(String, String)> {
        let peers_dns = format!("{NAME}-peers.{NS}.svc.cluster.local");
        let mut vars: Vec<(String, String)> = Vec::new();
        for e in container["env"].as_array().into_iter().flatten() {
            let name = e["name"].as_str().unwrap().to_string();
            let value = match e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                Some("metadata.name") => pod.to_string(),
                Some("metadata.namespace") => NS.to_string(),
                Some(other) => panic!("field ref {other} not emulated"),
                None => expand(e["value"].as_str().unwrap_or(""), &vars),
            };
            // Volumes: a path under a mount is the host directory behind it.
            let under = mounts
                .iter()
                .filter(|(m, _)| value == **m || value.starts_with(&format!("{m}/")))
                .max_by_key(|(m, _)| m.len());
            let mut value = match under {
                Some((m, host)) => format!("{}{}", host.display(), &value[m.len()..]),
                None => value,
            };
            // DNS: the pod's own name, and the headless peer Service.
            if value == format!("{pod}.{peers_dns}") {
                value = "127.0.0.1".into();
            } else if value.starts_with(&format!("{peers_dns}:")) {
                value = self.peer_addrs().join(",");
            }
            vars.push((name, value));
        }
        // The pod network: one loopback shared by every pod.
        for v in ["GOSSIP", "INTERNODE", "GRPC", "HTTP"] {
            vars.push((format!("RINGKV_LISTEN_{v}"), "127.0.0.1:0".into()));
        }
        vars
    }

    pub(super) fn start_pod(&mut self, sts: &Value, pod: &str, config: &BTreeMap<String, String>) {
        let volume = self.root.path().join(pod);
        let tmp = self.root.path().join(format!("{pod}-tmp"));
        let config_dir = self.root.path().join(format!("{pod}-config"));
        for d in [&volume, &tmp, &config_dir] {
            std::fs::create_dir_all(d).unwrap();
        }
        for (file, body) in config {
            std::fs::write(config_dir.join(file), body).unwrap();
        }
        let spec = &sts["spec"]["template"]["spec"];
        let container = &spec["containers"][0];
        let mut mounts = BTreeMap::new();
        for m in container["volumeMounts"].as_array().into_iter().flatten() {
            let host = match m["name"].as_str().unwrap() {
                "data" => volume.clone(),
                "config" => config_dir.clone(),
                "tmp" => tmp.clone(),
                other => panic!("volume {other} not emulated"),
            };
            mounts.insert(m["mountPath"].as_str().unwrap().to_string(), host);
        }
        let command: Vec<&str> = container["command"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        assert_eq!(command, ["ringkv-node"], "the image's node binary");
        let env = self.pod_env(container, pod, &mounts);
        let _ = std::fs::remove_file(volume.join("endpoints.json"));
        self.admin_addrs.lock().unwrap().remove(pod);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.root.path().join(format!("{pod}.log")))
            .unwrap();
        let mut cmd = Command::new(BIN);
        for (k, _) in std::env::vars() {
            if k.starts_with("RINGKV_") {
                cmd.env_remove(k);
            }
        }
        let mut child = cmd
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        // The pod's address is in DNS once it runs (publishNotReadyAddresses):
        // wait for the ports it bound, so pods started after it can seed from it.
        // A pod that did not come up is restarted by a later step.
        let endpoints = wait_endpoints(&volume, None, &mut child).ok();
        if let Some(e) = &endpoints {
            let hostport = e.admin.trim_start_matches("http://").to_string();
            self.admin_addrs
                .lock()
                .unwrap()
                .insert(pod.to_string(), hostport);
        }
        self.pods.insert(
            pod.to_string(),
            Pod {
                child: Some(child),
                endpoints,
                ready: false,
            },
        );
    }

    pub(super) fn log_tail(&self, pod: &str) -> String {
        tail(&self.root.path().join(format!("{pod}.log")))
    }

    /// Scale-down: preStop, SIGTERM, then the pod is gone.
    pub(super) async fn remove_pod(&mut self, pod: &str) {
        let Some(mut p) = self.pods.remove(pod) else {
            return;
        };
        self.admin_addrs.lock().unwrap().remove(pod);
        self.removed.push(pod.to_string());
        if let Some(e) = &p.endpoints {
            let state = match Admin::connect(&e.admin).await {
                Ok(mut a) => {
                    let s = a.status().await.map(|s| s.state());
                    let _ = a.drain().await; // the preStop hook
                    s.ok()
                }
                Err(_) => None,
            };
            if state != Some(NodeState::Left) {
                self.violations
                    .push(format!("{pod} removed while {state:?}: its data was lost"));
            }
            // Removed before the others heard it left, it would stay LEAVING
            // (down, still owning ranges) in their rings for good.
            for (other, q) in &self.pods {
                let Some(e) = q.endpoints.as_ref().filter(|_| q.child.is_some()) else {
                    continue;
                };
                let seen = match Admin::connect(&e.admin).await {
                    Ok(mut a) => a.status().await.ok().and_then(|s| {
                        s.members
                            .iter()
                            .find(|m| m.node_id == pod)
                            .map(|m| m.state())
                    }),
                    Err(_) => continue,
                };
                if seen.is_some_and(|s| s != NodeState::Left) {
                    self.violations
                        .push(format!("{pod} removed while {other} still saw it {seen:?}"));
                }
            }
        }
        if let Some(mut c) = p.child.take() {
            signal(&c, libc::SIGTERM);
            let until = Instant::now() + Duration::from_secs(10);
            while c.try_wait().ok().flatten().is_none() && Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The pod's container died: the kubelet restarts it on the same volume.
    pub(super) fn crashed(&mut self, pod: &str) -> bool {
        let p = self.pods.get_mut(pod).unwrap();
        match p.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(None)) => false,
            _ => {
                p.child = None;
                true
            }
        }
    }

    /// Kill a pod's process (`kubectl delete pod --force`); the next step
    /// restarts it on its volume, as the StatefulSet would.
    pub(super) fn kill(&mut self, pod: &str) {
        let p = self.pods.get_mut(pod).unwrap();
        if let Some(mut c) = p.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        p.ready = false;
    }

    /// One pass of the StatefulSet controller and the kubelet.
    pub(super) async fn step(&mut self, api: &FakeApi) {
        for sts in api.list("statefulsets", NS) {
            // The ConfigMap version the pod template names.
            let config: BTreeMap<String, String> = sts["spec"]["template"]["spec"]["volumes"]
                .as_array()
                .into_iter()
                .flatten()
                .find_map(|v| v["configMap"]["name"].as_str())
                .and_then(|cm| api.get("configmaps", NS, cm))
                .and_then(|cm| serde_json::from_value(cm["data"].clone()).ok())
                .unwrap_or_default();
            let name = sts["metadata"]["name"].as_str().unwrap().to_string();
            let replicas = sts["spec"]["replicas"].as_i64().unwrap_or(1);
            let ordinal = |p: &str| {
                p.strip_prefix(&format!("{name}-"))
                    .and_then(|o| o.parse::<i64>().ok())
            };
            // Scale-down removes the highest ordinals first.
            let mut doomed: Vec<String> = self
                .pods
                .keys()
                .filter(|p| ordinal(p).is_some_and(|o| o >= replicas))
                .cloned()
                .collect();
            doomed.sort_by_key(|p| std::cmp::Reverse(ordinal(p)));
            for p in doomed {
                self.remove_pod(&p).await;
            }
            // Ordered start: the next ordinal only once the previous is ready.
            for o in 0..replicas {
                let pod = format!("{name}-{o}");
                let running = self.pods.contains_key(&pod) && !self.crashed(&pod);
                if !running {
                    self.start_pod(&sts, &pod, &config);
                    break;
                }
                if !self.pods[&pod].ready {
                    break;
                }
            }
            let probe = sts["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
                ["httpGet"]["path"]
                .as_str()
                .unwrap_or("/readyz")
                .to_string();
            let mut ready = 0;
            for o in 0..replicas {
                let pod = format!("{name}-{o}");
                let Some(p) = self.pods.get_mut(&pod) else {
                    continue;
                };
                p.ready = match &p.endpoints {
                    Some(e) if p.child.is_some() => http_ok(&e.http, &probe).await,
                    _ => false,
                };
                ready += i64::from(p.ready);
            }
            let revision = sts
                .pointer("/metadata/annotations/ringkv.io~1template-hash")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let generation = sts["metadata"]["generation"].as_i64().unwrap_or(1);
            let have = (0..replicas)
                .filter(|o| self.pods.contains_key(&format!("{name}-{o}")))
                .count();
            let status = json!({
                "replicas": have,
                "readyReplicas": ready,
                "updatedReplicas": have,
                "currentRevision": revision,
                "updateRevision": revision,
                "observedGeneration": generation,
            });
            // Like the StatefulSet controller: a status write only when it changed
            // (each write is a watch event that wakes the operator).
            if sts.get("status") != Some(&status) {
                api.update("statefulsets", NS, &name, |o| o["status"] = status);
            }
        }
    }
}
