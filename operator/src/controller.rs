//! The reconcile loop: observe (StatefulSets, node Admin status), plan (pure,
//! see [`crate::planner`]), act (server-side apply, one Admin call), report
//! (status, events).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference, Secret, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::{Controller, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::{Instrument, info, info_span, warn};

use crate::admin::{AdminPool, NodeAddr};
use crate::builders::{self, BuildContext, BuildError};
use crate::crd::{FINALIZER, KVCluster, KVClusterStatus};
use crate::metrics::{AdminLabels, ErrorLabels, Metrics, ResultLabels, StepLabels};
use crate::names;
use crate::planner::{self, AdminCall, PlanInput, Related, StsObservation};
use crate::ring::NodeObservation;
use crate::status::{self, StatusInput};

/// Errors of one reconciliation. Each is retried with back-off by the controller.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("building objects: {0}")]
    Build(#[from] BuildError),
    #[error("KVCluster {0} has no namespace")]
    NoNamespace(String),
    #[error("TLS secret {secret}: {reason}")]
    TlsSecret { secret: String, reason: String },
    #[error("encoding an object: {0}")]
    Encode(#[from] serde_json::Error),
}

impl Error {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Kube(_) => "kube",
            Self::Build(_) => "build",
            Self::NoNamespace(_) => "no_namespace",
            Self::TlsSecret { .. } => "tls_secret",
            Self::Encode(_) => "encode",
        }
    }
}

/// Operator settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Node image for clusters that do not pin one.
    pub default_image: String,
    /// Field manager of every server-side apply.
    pub field_manager: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            default_image: format!("ghcr.io/ringkv/ringkv:{}", env!("CARGO_PKG_VERSION")),
            field_manager: names::MANAGER.into(),
        }
    }
}

/// Shared state of every reconciliation.
pub struct Context {
    pub client: Client,
    pub admin: AdminPool,
    pub recorder: Recorder,
    pub settings: Settings,
    pub metrics: Arc<Metrics>,
    /// Unix ms; injectable so tests control time.
    pub clock: Arc<dyn Fn() -> i64 + Send + Sync>,
}

impl Context {
    pub fn new(
        client: Client,
        admin: AdminPool,
        settings: Settings,
        metrics: Arc<Metrics>,
    ) -> Self {
        let instance = std::env::var("POD_NAME").ok();
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: names::MANAGER.into(),
                instance,
            },
        );
        Self {
            client,
            admin,
            recorder,
            settings,
            metrics,
            clock: Arc::new(crate::time::now_unix_ms),
        }
    }
}

/// Reconciles one `KVCluster`; records metrics around [`reconcile_inner`].
pub async fn reconcile(kvc: Arc<KVCluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    let span = info_span!("reconcile", cluster = %kvc.name_any(), namespace = kvc.namespace().unwrap_or_default());
    let start = Instant::now();
    let res = reconcile_inner(&kvc, &ctx).instrument(span).await;
    ctx.metrics.duration.observe(start.elapsed().as_secs_f64());
    let result = if res.is_ok() { "ok" } else { "error" };
    ctx.metrics
        .reconciles
        .get_or_create(&ResultLabels { result })
        .inc();
    res
}

/// Requeue policy for failed reconciliations.
pub fn error_policy(kvc: Arc<KVCluster>, err: &Error, ctx: Arc<Context>) -> Action {
    warn!(cluster = %kvc.name_any(), error = %err, "reconcile failed");
    ctx.metrics
        .errors
        .get_or_create(&ErrorLabels { kind: err.kind() })
        .inc();
    Action::requeue(Duration::from_secs(10))
}

async fn reconcile_inner(kvc: &KVCluster, ctx: &Context) -> Result<Action, Error> {
    let name = kvc.name_any();
    let ns = kvc
        .namespace()
        .ok_or_else(|| Error::NoNamespace(name.clone()))?;
    let client = ctx.client.clone();
    let kvcs: Api<KVCluster> = Api::namespaced(client.clone(), &ns);
    let deleting = kvc.metadata.deletion_timestamp.is_some();
    let finalizers = kvc.finalizers().to_vec();
    let has_finalizer = finalizers.iter().any(|f| f == FINALIZER);
    if deleting && !has_finalizer {
        return Ok(Action::await_change());
    }
    if !has_finalizer {
        // Added before anything is created, so deletion always passes through us.
        let mut list = finalizers;
        list.push(FINALIZER.to_string());
        let patch = serde_json::json!({
            "metadata": { "finalizers": list, "resourceVersion": kvc.resource_version() }
        });
        kvcs.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        return Ok(Action::requeue(Duration::from_millis(100)));
    }

    let now = (ctx.clock)();
    let build = BuildContext::new(kvc, &ctx.settings.default_image);
    let spec = &kvc.spec;
    let prev = kvc.status.clone().unwrap_or_default();

    // Observe.
    let sts_api: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    let mut zones = Vec::with_capacity(spec.zones.len());
    let mut desired_hashes = Vec::with_capacity(spec.zones.len());
    for (i, z) in spec.zones.iter().enumerate() {
        let sts = sts_api.get_opt(&names::statefulset(&name, &z.name)).await?;
        zones.push(sts.as_ref().map(StsObservation::from_statefulset));
        desired_hashes.push(builders::desired_template_hash(&build, i).unwrap_or_default());
    }
    let tls_ca = match &spec.tls {
        Some(tls) if !deleting => Some(read_ca(&client, &ns, &tls.secret_name).await?),
        _ => None,
    };
    let addr = |pod: &str| NodeAddr {
        namespace: ns.clone(),
        cluster: name.clone(),
        pod: pod.to_string(),
        tls_ca: tls_ca.clone(),
    };
    let mut pods: Vec<String> = spec
        .zones
        .iter()
        .zip(&zones)
        .flat_map(|(z, s)| {
            let n = s.as_ref().map_or(0, |s| s.replicas.max(s.status_replicas));
            (0..n)
                .map(|o| names::pod(&name, &z.name, o))
                .collect::<Vec<_>>()
        })
        .collect();
    if deleting {
        pods.clear();
    }
    let nodes = observe_nodes(ctx, &pods, &addr).await;

    // Plan.
    let created_unix_ms = kvc
        .metadata
        .creation_timestamp
        .as_ref()
        .map_or(now, crate::time::to_unix_ms);
    let input = PlanInput {
        name: &name,
        spec,
        status: &prev,
        deleting,
        created_unix_ms,
        now_unix_ms: now,
        desired_hashes,
        zones: zones.clone(),
        nodes: nodes.clone(),
    };
    let mut plan = planner::plan(&input);
    info!(activity = ?plan.activity, admin = ?plan.admin, "planned");

    // Act: objects first (a decommission never lowers replicas in the same plan).
    let pp = PatchParams::apply(&ctx.settings.field_manager).force();
    if let Some(scales) = &plan.scales {
        if !deleting {
            apply(&client, &ns, &pp, &builders::service_account(&build)?).await?;
            apply(&client, &ns, &pp, &builders::config_map(&build)?).await?;
            apply(&client, &ns, &pp, &builders::peer_service(&build)?).await?;
            apply(&client, &ns, &pp, &builders::client_service(&build)?).await?;
            apply(&client, &ns, &pp, &builders::pdb(&build)?).await?;
        }
        for (i, scale) in scales.iter().enumerate() {
            if let Some(scale) = scale {
                let desired = builders::statefulset(&build, i, *scale)?;
                if deleting {
                    // Only scale down: the template does not matter any more.
                    let patch = serde_json::json!({"spec": {"replicas": scale.replicas}});
                    sts_api
                        .patch(
                            &names::statefulset(&name, &spec.zones[i].name),
                            &PatchParams::default(),
                            &Patch::Merge(&patch),
                        )
                        .await?;
                } else {
                    apply(&client, &ns, &pp, &desired).await?;
                }
            }
        }
    }
    match plan.admin.clone() {
        Some(AdminCall::Decommission { node, .. }) => {
            let res = ctx.admin.decommission(&addr(&node)).await;
            count_admin(ctx, "decommission", res.is_ok());
            ctx.metrics
                .steps
                .get_or_create(&StepLabels {
                    step: "decommission",
                })
                .inc();
            status::record_decommission(&mut plan, res);
        }
        Some(AdminCall::Repair { node, .. }) => {
            let res = ctx.admin.repair(&addr(&node)).await;
            count_admin(ctx, "repair", res.is_ok());
            ctx.metrics
                .steps
                .get_or_create(&StepLabels { step: "repair" })
                .inc();
            status::record_repair(&mut plan, res);
        }
        None => {}
    }

    // Report.
    let new_status = status::build_status(&StatusInput {
        name: &name,
        spec,
        prev: &prev,
        generation: kvc.metadata.generation.unwrap_or(0),
        now_ms: now,
        zones: &zones,
        nodes: &nodes,
        plan: &plan,
    });
    if new_status != prev && !plan.remove_finalizer {
        patch_status(&kvcs, &name, &ctx.settings.field_manager, &new_status).await?;
    }
    let reference = kvc.object_ref(&());
    for e in &plan.events {
        let secondary = e.related.as_ref().map(|r| {
            let (api_version, kind, name) = match r {
                Related::Pod(n) => ("v1", "Pod", n),
                Related::StatefulSet(n) => ("apps/v1", "StatefulSet", n),
            };
            ObjectReference {
                api_version: Some(api_version.into()),
                kind: Some(kind.into()),
                name: Some(name.clone()),
                namespace: Some(ns.clone()),
                ..ObjectReference::default()
            }
        });
        let ev = KubeEvent {
            type_: if e.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: e.reason.into(),
            note: Some(e.message.clone()),
            action: e.reason.into(),
            secondary,
        };
        if let Err(err) = ctx.recorder.publish(&ev, &reference).await {
            // Events are best-effort: never fail a reconcile over one.
            warn!(error = %err, reason = e.reason, "could not publish event");
        }
        info!(reason = e.reason, message = %e.message, "event");
    }
    if plan.remove_finalizer {
        let list: Vec<_> = kvc
            .finalizers()
            .iter()
            .filter(|f| *f != FINALIZER)
            .cloned()
            .collect();
        let patch = serde_json::json!({
            "metadata": { "finalizers": list, "resourceVersion": kvc.resource_version() }
        });
        kvcs.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        return Ok(Action::await_change());
    }
    Ok(Action::requeue(plan.requeue))
}

fn count_admin(ctx: &Context, call: &'static str, ok: bool) {
    let result = if ok { "ok" } else { "error" };
    ctx.metrics
        .admin_calls
        .get_or_create(&AdminLabels { call, result })
        .inc();
}

/// Asks every expected node for its status, concurrently (each call has its own timeout).
async fn observe_nodes(
    ctx: &Context,
    pods: &[String],
    addr: &impl Fn(&str) -> NodeAddr,
) -> BTreeMap<String, NodeObservation> {
    let calls = pods.iter().map(|pod| {
        let a = addr(pod);
        async move {
            let obs = match ctx.admin.status(&a).await {
                Ok(r) => NodeObservation::Report(r),
                Err(e) => NodeObservation::Unreachable(e.to_string()),
            };
            (a.pod, obs)
        }
    });
    let out: BTreeMap<_, _> = futures::future::join_all(calls).await.into_iter().collect();
    for obs in out.values() {
        count_admin(ctx, "status", obs.report().is_some());
    }
    out
}

async fn read_ca(client: &Client, ns: &str, secret: &str) -> Result<Arc<Vec<u8>>, Error> {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let s = api.get_opt(secret).await?.ok_or_else(|| Error::TlsSecret {
        secret: secret.into(),
        reason: "not found".into(),
    })?;
    let ca = s
        .data
        .and_then(|d| d.get("ca.crt").cloned())
        .ok_or_else(|| Error::TlsSecret {
            secret: secret.into(),
            reason: "has no ca.crt".into(),
        })?;
    Ok(Arc::new(ca.0))
}

async fn apply<K>(client: &Client, ns: &str, pp: &PatchParams, obj: &K) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Serialize
        + DeserializeOwned
        + Clone
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let name = obj.meta().name.clone().unwrap_or_default();
    api.patch(&name, pp, &Patch::Apply(obj)).await?;
    Ok(())
}

async fn patch_status(
    api: &Api<KVCluster>,
    name: &str,
    manager: &str,
    status: &KVClusterStatus,
) -> Result<(), Error> {
    let body = serde_json::json!({
        "apiVersion": "ringkv.io/v1alpha1",
        "kind": "KVCluster",
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(manager).force(),
        &Patch::Apply(&body),
    )
    .await?;
    Ok(())
}

/// Runs the controller until `shutdown` resolves. `namespace` limits it to one namespace.
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<String>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    fn api<K>(client: &Client, ns: Option<&str>) -> Api<K>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
    {
        match ns {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let ns = namespace.as_deref();
    let owned = watcher::Config::default().labels(&format!(
        "{}={}",
        names::LABEL_MANAGED_BY,
        names::MANAGER
    ));
    Controller::new(api::<KVCluster>(&client, ns), watcher::Config::default())
        .owns(api::<StatefulSet>(&client, ns), owned.clone())
        .owns(api::<Service>(&client, ns), owned.clone())
        .owns(api::<ConfigMap>(&client, ns), owned.clone())
        .owns(api::<ServiceAccount>(&client, ns), owned.clone())
        .owns(api::<PodDisruptionBudget>(&client, ns), owned)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            match res {
                Ok((obj, action)) => tracing::debug!(cluster = %obj.name, ?action, "reconciled"),
                Err(e) => tracing::debug!(error = %e, "controller event"),
            }
        })
        .await;
}
