//! An in-memory Kubernetes API server, good enough for the operator's calls:
//! GET, LIST, POST, PUT (with resourceVersion preconditions), PATCH (server-side
//! apply with a single field manager, JSON merge patch, `/status`), DELETE with
//! finalizers. It is a `tower::Service` handed to `kube::Client::new`.
//!
//! Every mutation is appended to a shared [`Timeline`] so tests can assert the
//! order of Kubernetes writes relative to node Admin calls.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use http::{Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{Value, json};

/// One entry of the shared history of side effects.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// A write to the API: verb, plural, name, and `spec.replicas` if the body had one.
    Kube {
        verb: String,
        plural: String,
        name: String,
        replicas: Option<i64>,
    },
    /// An Admin call to a node.
    Admin { node: String, call: &'static str },
}

pub type Timeline = Arc<Mutex<Vec<Step>>>;

/// Key of a stored object: (api prefix + plural, namespace, name).
type Key = (String, String, String);

#[derive(Default)]
struct State {
    objects: BTreeMap<Key, Value>,
    /// Every change, for watches: (resourceVersion, key, ADDED|MODIFIED|DELETED, object).
    changes: Vec<(u64, Key, &'static str, Value)>,
    rv: u64,
    uid: u64,
    /// Requests answered with this status instead (plural -> code), for failure tests.
    fail: BTreeMap<String, u16>,
    /// API groups served for discovery: `group/version` -> resource plurals.
    discovery: BTreeMap<String, Vec<String>>,
}

impl State {
    fn put(&mut self, key: Key, obj: Value) {
        let kind = if self.objects.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        self.changes.push((self.rv, key.clone(), kind, obj.clone()));
        self.objects.insert(key, obj);
    }

    fn del(&mut self, key: &Key) {
        if let Some(obj) = self.objects.remove(key) {
            self.rv += 1;
            self.changes.push((self.rv, key.clone(), "DELETED", obj));
        }
    }

    /// Watch events of a collection after `since`, as JSON lines.
    fn watch(&self, collection: &str, ns: &str, since: u64) -> Vec<u8> {
        let mut out = Vec::new();
        for (rv, (c, n, _), kind, obj) in &self.changes {
            if *rv > since && c == collection && (ns.is_empty() || n == ns) {
                serde_json::to_writer(&mut out, &json!({"type": kind, "object": obj})).unwrap();
                out.push(b'\n');
            }
        }
        out
    }
}

#[derive(Clone)]
pub struct FakeApi {
    state: Arc<Mutex<State>>,
    pub timeline: Timeline,
}

struct Path {
    /// e.g. `apis/apps/v1/statefulsets` or `api/v1/services`.
    collection: String,
    plural: String,
    namespace: String,
    name: Option<String>,
    sub: Option<String>,
}

fn parse_path(path: &str) -> Option<Path> {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (prefix, rest) = match *parts.first()? {
        "api" => (parts[..2].join("/"), &parts[2..]),
        "apis" => (parts[..3].join("/"), &parts[3..]),
        _ => return None,
    };
    // namespaces/{ns}/{plural}[/{name}[/{sub}]] or {plural}[/{name}] (cluster scope / all namespaces)
    let (namespace, rest) = if rest.first() == Some(&"namespaces") && rest.len() >= 3 {
        (rest[1].to_string(), &rest[2..])
    } else {
        (String::new(), rest)
    };
    let plural = rest.first()?.to_string();
    Some(Path {
        collection: format!("{prefix}/{plural}"),
        plural,
        namespace,
        name: rest.get(1).map(|s| s.to_string()),
        sub: rest.get(2).map(|s| s.to_string()),
    })
}

fn status(code: u16, reason: &str, message: &str) -> (u16, Value) {
    (
        code,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "reason": reason, "code": code}),
    )
}

/// RFC 7386 JSON merge patch.
fn merge(target: &mut Value, patch: &Value) {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(t), Some(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        _ => *target = patch.clone(),
    }
}

impl FakeApi {
    pub fn new(timeline: Timeline) -> Self {
        Self {
            state: Arc::default(),
            timeline,
        }
    }

    pub fn client(&self) -> kube::Client {
        kube::Client::new(self.clone(), "default")
    }

    /// Make every request on `plural` fail with `code` (0 = stop failing).
    /// Serves `group_version` (e.g. `cert-manager.io/v1`) in discovery; `None` stops.
    pub fn serve_group(&self, group_version: &str, resources: Option<&[&str]>) {
        let mut st = self.state.lock().unwrap();
        match resources {
            Some(r) => {
                st.discovery.insert(
                    group_version.to_string(),
                    r.iter().map(|s| s.to_string()).collect(),
                );
            }
            None => {
                st.discovery.remove(group_version);
            }
        }
    }

    pub fn fail(&self, plural: &str, code: u16) {
        let mut s = self.state.lock().unwrap();
        if code == 0 {
            s.fail.remove(plural);
        } else {
            s.fail.insert(plural.into(), code);
        }
    }

    /// All stored objects of a plural in a namespace.
    pub fn list(&self, plural: &str, ns: &str) -> Vec<Value> {
        let s = self.state.lock().unwrap();
        s.objects
            .iter()
            .filter(|((c, n, _), _)| c.ends_with(&format!("/{plural}")) && n == ns)
            .map(|(_, v)| v.clone())
            .collect()
    }

    pub fn get(&self, plural: &str, ns: &str, name: &str) -> Option<Value> {
        let s = self.state.lock().unwrap();
        s.objects
            .iter()
            .find(|((c, n, m), _)| c.ends_with(&format!("/{plural}")) && n == ns && m == name)
            .map(|(_, v)| v.clone())
    }

    /// Direct create-or-replace of a whole object by another actor (the
    /// kubelet writing a Pod, the StatefulSet controller a PVC). Keeps a uid
    /// the object brings; not on the timeline.
    pub fn insert(&self, prefix: &str, plural: &str, ns: &str, mut obj: Value) {
        let mut s = self.state.lock().unwrap();
        s.rv += 1;
        let name = obj["metadata"]["name"].as_str().unwrap().to_string();
        let key = (format!("{prefix}/{plural}"), ns.to_string(), name);
        if !ns.is_empty() {
            obj["metadata"]["namespace"] = json!(ns);
        }
        obj["metadata"]["resourceVersion"] = json!(s.rv.to_string());
        if obj.pointer("/metadata/uid").is_none() {
            s.uid += 1;
            obj["metadata"]["uid"] = json!(format!("uid-{}", s.uid));
        }
        s.put(key, obj);
    }

    /// Direct removal by another actor; not on the timeline.
    pub fn remove(&self, plural: &str, ns: &str, name: &str) {
        let mut s = self.state.lock().unwrap();
        let key = s
            .objects
            .keys()
            .find(|(c, n, m)| c.ends_with(&format!("/{plural}")) && n == ns && m == name)
            .cloned();
        if let Some(key) = key {
            s.del(&key);
        }
    }

    /// Direct write, bypassing the request path (the test plays another actor, e.g.
    /// the StatefulSet controller writing status). Does not touch the timeline.
    pub fn update(&self, plural: &str, ns: &str, name: &str, f: impl FnOnce(&mut Value)) {
        let mut s = self.state.lock().unwrap();
        s.rv += 1;
        let rv = s.rv.to_string();
        let key = s
            .objects
            .keys()
            .find(|(c, n, m)| c.ends_with(&format!("/{plural}")) && n == ns && m == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {plural}/{name}"));
        let mut obj = s.objects[&key].clone();
        f(&mut obj);
        obj["metadata"]["resourceVersion"] = json!(rv);
        s.put(key, obj);
    }

    /// A watch: the changes after the requested resourceVersion, waiting up to
    /// a second for some (the client then watches again from where it stopped).
    async fn watch(&self, uri: &http::Uri) -> Response<Body> {
        let since: u64 = uri
            .query()
            .unwrap_or("")
            .split('&')
            .find_map(|kv| kv.strip_prefix("resourceVersion="))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let p = parse_path(uri.path()).expect("watch path");
        let mut body = Vec::new();
        for _ in 0..20 {
            body = self
                .state
                .lock()
                .unwrap()
                .watch(&p.collection, &p.namespace, since);
            if !body.is_empty() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        Response::builder()
            .status(StatusCode::OK)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .unwrap()
    }

    fn record(&self, verb: &str, plural: &str, name: &str, body: &Value) {
        self.timeline.lock().unwrap().push(Step::Kube {
            verb: verb.into(),
            plural: plural.into(),
            name: name.into(),
            replicas: body.pointer("/spec/replicas").and_then(Value::as_i64),
        });
    }

    fn handle(
        &self,
        method: &http::Method,
        uri: &http::Uri,
        content_type: &str,
        body: &[u8],
    ) -> (u16, Value) {
        if method == http::Method::GET
            && let Some(gv) = uri.path().strip_prefix("/apis/")
            && let Some(resources) = self.state.lock().unwrap().discovery.get(gv)
        {
            let resources: Vec<Value> = resources
                .iter()
                .map(|r| json!({"name": r, "namespaced": true, "kind": r, "verbs": ["get", "create", "patch"], "singularName": ""}))
                .collect();
            return (
                200,
                json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
            );
        }
        let Some(p) = parse_path(uri.path()) else {
            return status(404, "NotFound", &format!("unknown path {}", uri.path()));
        };
        if let Some(code) = self.state.lock().unwrap().fail.get(&p.plural).copied() {
            return status(code, "InternalError", "injected failure");
        }
        let body: Value = if body.is_empty() {
            Value::Null
        } else {
            match serde_json::from_slice(body) {
                Ok(v) => v,
                Err(e) => return status(400, "BadRequest", &format!("bad body: {e}")),
            }
        };
        let mut st = self.state.lock().unwrap();
        let key = |name: &str| (p.collection.clone(), p.namespace.clone(), name.to_string());
        match (method.as_str(), &p.name) {
            ("GET", None) => {
                let selector = label_selector(uri);
                let items: Vec<Value> = st
                    .objects
                    .iter()
                    .filter(|((c, n, _), _)| {
                        *c == p.collection && (p.namespace.is_empty() || *n == p.namespace)
                    })
                    .filter(|(_, v)| {
                        selector.iter().all(|(k, want)| {
                            v.pointer("/metadata/labels")
                                .and_then(|l| l.get(k))
                                .and_then(Value::as_str)
                                == Some(want.as_str())
                        })
                    })
                    .map(|(_, v)| v.clone())
                    .collect();
                (
                    200,
                    json!({"kind": "List", "apiVersion": "v1", "metadata": {"resourceVersion": st.rv.to_string()}, "items": items}),
                )
            }
            ("GET", Some(name)) => match st.objects.get(&key(name)) {
                Some(o) => (200, o.clone()),
                None => status(404, "NotFound", &format!("{} {name} not found", p.plural)),
            },
            ("POST", None) => {
                let name = body
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                if st.objects.contains_key(&key(&name)) {
                    return status(
                        409,
                        "AlreadyExists",
                        &format!("{} {name} already exists", p.plural),
                    );
                }
                let obj = create(&mut st, body.clone(), &p.namespace);
                st.put(key(&name), obj.clone());
                drop(st);
                self.record("POST", &p.plural, &name, &body);
                (201, obj)
            }
            ("PUT", Some(name)) => {
                let Some(cur) = st.objects.get(&key(name)).cloned() else {
                    return status(404, "NotFound", "not found");
                };
                let want_rv = body
                    .pointer("/metadata/resourceVersion")
                    .and_then(Value::as_str);
                if want_rv.is_some_and(|rv| {
                    Some(rv)
                        != cur
                            .pointer("/metadata/resourceVersion")
                            .and_then(Value::as_str)
                }) {
                    return status(409, "Conflict", "the object has been modified");
                }
                let mut obj = body.clone();
                keep_server_fields(&mut obj, &cur);
                bump(&mut st, &mut obj, &cur);
                st.put(key(name), obj.clone());
                drop(st);
                self.record("PUT", &p.plural, name, &body);
                (200, obj)
            }
            ("PATCH", Some(name)) => {
                let cur = st.objects.get(&key(name)).cloned();
                let is_status = p.sub.as_deref() == Some("status");
                let mut obj = if content_type.starts_with("application/apply-patch") {
                    match (&cur, is_status) {
                        (None, true) => return status(404, "NotFound", "not found"),
                        (None, false) => create(&mut st, body.clone(), &p.namespace),
                        (Some(c), true) => {
                            let mut o = c.clone();
                            o["status"] = body.get("status").cloned().unwrap_or(Value::Null);
                            o
                        }
                        (Some(c), false) => {
                            if let Some(field) = immutable_change(&p.plural, c, &body) {
                                return status(
                                    422,
                                    "Invalid",
                                    &format!(
                                        "StatefulSet.apps \"{name}\" is invalid: spec: Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden ({field})"
                                    ),
                                );
                            }
                            // One field manager owns everything it applies: the applied
                            // object replaces the old one, except server-owned fields.
                            let mut o = body.clone();
                            keep_server_fields(&mut o, c);
                            o
                        }
                    }
                } else if content_type.starts_with("application/merge-patch") {
                    let Some(c) = &cur else {
                        return status(404, "NotFound", "not found");
                    };
                    let want_rv = body
                        .pointer("/metadata/resourceVersion")
                        .and_then(Value::as_str);
                    if want_rv.is_some_and(|rv| {
                        Some(rv)
                            != c.pointer("/metadata/resourceVersion")
                                .and_then(Value::as_str)
                    }) {
                        return status(409, "Conflict", "the object has been modified");
                    }
                    let mut o = c.clone();
                    if is_status {
                        if let Some(s) = body.get("status") {
                            merge(&mut o, &json!({"status": s}));
                        }
                    } else {
                        let mut b = body.clone();
                        if let Some(m) = b.get_mut("metadata").and_then(Value::as_object_mut) {
                            m.remove("resourceVersion");
                        }
                        merge(&mut o, &b);
                    }
                    o
                } else {
                    return status(415, "UnsupportedMediaType", content_type);
                };
                if let Some(c) = &cur {
                    bump(&mut st, &mut obj, c);
                }
                // An object being deleted disappears when its last finalizer goes.
                let gone = obj.pointer("/metadata/deletionTimestamp").is_some()
                    && obj
                        .pointer("/metadata/finalizers")
                        .and_then(Value::as_array)
                        .is_none_or(Vec::is_empty);
                if gone {
                    st.del(&key(name));
                } else {
                    st.put(key(name), obj.clone());
                }
                drop(st);
                let verb = if is_status { "PATCH_STATUS" } else { "PATCH" };
                self.record(verb, &p.plural, name, &body);
                (200, obj)
            }
            ("DELETE", Some(name)) => {
                let Some(mut obj) = st.objects.get(&key(name)).cloned() else {
                    return status(404, "NotFound", "not found");
                };
                let has_finalizers = obj
                    .pointer("/metadata/finalizers")
                    .and_then(Value::as_array)
                    .is_some_and(|f| !f.is_empty());
                if has_finalizers {
                    obj["metadata"]["deletionTimestamp"] = json!("2024-01-01T00:00:00Z");
                    st.rv += 1;
                    obj["metadata"]["resourceVersion"] = json!(st.rv.to_string());
                    // As the API server does: starting deletion bumps the generation.
                    let g = obj
                        .pointer("/metadata/generation")
                        .and_then(Value::as_i64)
                        .unwrap_or(1);
                    obj["metadata"]["generation"] = json!(g + 1);
                    st.put(key(name), obj.clone());
                } else {
                    st.del(&key(name));
                }
                drop(st);
                self.record("DELETE", &p.plural, name, &Value::Null);
                (200, obj)
            }
            (m, _) => status(405, "MethodNotAllowed", &format!("{m} {}", uri.path())),
        }
    }
}

/// `labelSelector=k=v,k2=v2` of a request (equality selectors only).
fn label_selector(uri: &http::Uri) -> Vec<(String, String)> {
    uri.query()
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("labelSelector="))
        .map(|sel| {
            let sel = sel
                .replace("%3D", "=")
                .replace("%2C", ",")
                .replace("%2F", "/");
            sel.split(',')
                .filter_map(|t| t.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// A StatefulSet field the API server refuses to change, if the apply changes one.
fn immutable_change(plural: &str, cur: &Value, new: &Value) -> Option<&'static str> {
    if plural != "statefulsets" {
        return None;
    }
    for (field, ptr) in [
        ("volumeClaimTemplates", "/spec/volumeClaimTemplates"),
        ("selector", "/spec/selector"),
        ("serviceName", "/spec/serviceName"),
        ("podManagementPolicy", "/spec/podManagementPolicy"),
    ] {
        if cur.pointer(ptr) != new.pointer(ptr) {
            return Some(field);
        }
    }
    None
}

fn create(st: &mut State, mut obj: Value, ns: &str) -> Value {
    st.rv += 1;
    st.uid += 1;
    let meta = obj["metadata"]
        .as_object_mut()
        .expect("objects have metadata");
    if !ns.is_empty() {
        meta.insert("namespace".into(), json!(ns));
    }
    meta.insert("uid".into(), json!(format!("uid-{}", st.uid)));
    meta.insert("resourceVersion".into(), json!(st.rv.to_string()));
    meta.insert("generation".into(), json!(1));
    meta.insert("creationTimestamp".into(), json!("2024-01-01T00:00:00Z"));
    obj
}

/// Carries over what the server owns: identity, bookkeeping, deletion state, status.
fn keep_server_fields(obj: &mut Value, cur: &Value) {
    for f in [
        "uid",
        "creationTimestamp",
        "generation",
        "resourceVersion",
        "deletionTimestamp",
        "finalizers",
        "namespace",
    ] {
        if let Some(v) = cur["metadata"].get(f) {
            obj["metadata"][f] = v.clone();
        }
    }
    if let Some(s) = cur.get("status") {
        obj["status"] = s.clone();
    }
}

/// New resourceVersion; generation moves when the spec changes (as for real).
fn bump(st: &mut State, obj: &mut Value, cur: &Value) {
    st.rv += 1;
    obj["metadata"]["resourceVersion"] = json!(st.rv.to_string());
    let gen_ = cur
        .pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let changed = obj.get("spec") != cur.get("spec");
    obj["metadata"]["generation"] = json!(if changed { gen_ + 1 } else { gen_ });
}

impl tower::Service<Request<Body>> for FakeApi {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let bytes = body.collect_bytes().await.unwrap_or_default();
            let ct = parts
                .headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            if parts.method == http::Method::GET
                && parts
                    .uri
                    .query()
                    .is_some_and(|q| q.split('&').any(|kv| kv == "watch=true" || kv == "watch=1"))
            {
                return Ok(this.watch(&parts.uri).await);
            }
            let (code, value) = this.handle(&parts.method, &parts.uri, &ct, &bytes);
            let resp = Response::builder()
                .status(StatusCode::from_u16(code).unwrap())
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(Body::from(serde_json::to_vec(&value).unwrap()))
                .unwrap();
            Ok(resp)
        })
    }
}

#[test]
fn paths_parse() {
    let p = parse_path("/apis/apps/v1/namespaces/db/statefulsets/kv-zone-a").unwrap();
    assert_eq!(
        (
            p.collection.as_str(),
            p.namespace.as_str(),
            p.name.as_deref()
        ),
        ("apis/apps/v1/statefulsets", "db", Some("kv-zone-a"))
    );
    let p = parse_path("/apis/ringkv.io/v1alpha1/namespaces/db/kvclusters/kv/status").unwrap();
    assert_eq!(p.sub.as_deref(), Some("status"));
    let p = parse_path("/api/v1/namespaces/db/services").unwrap();
    assert_eq!((p.collection.as_str(), p.name), ("api/v1/services", None));
    let mut a = json!({"a": {"b": 1, "c": 2}});
    merge(&mut a, &json!({"a": {"b": null, "d": 3}}));
    assert_eq!(a, json!({"a": {"c": 2, "d": 3}}));
}
