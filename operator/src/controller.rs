//! The reconcile loop: observe ([`crate::observe`]), plan (pure, see
//! [`crate::planner`]), act ([`crate::act`]: Kubernetes writes, one Admin
//! call), report (status and events from the outcome, see [`crate::status`]).
//!
//! The runtime wakes a cluster for a change of its spec or annotations
//! (generation / annotation predicate: the operator's own status writes do
//! not), for a change of an object it owns, and on the requeue timer the plan
//! asks for — which is how progress (a decommission streaming, a node joining)
//! is polled.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::{Controller, Predicate, WatchStreamExt, predicates, reflector, watcher};
use kube::{Client, Resource, ResourceExt};
use tracing::{Instrument, info, info_span, warn};

use crate::admin::AdminPool;
use crate::build::{BuildContext, BuildError};
use crate::crd::{KVCluster, KVClusterStatus, LEGACY_FINALIZER};
use crate::metrics::{ErrorLabels, Metrics, ResultLabels};
use crate::names;
use crate::planner::{self, Desired, Related};
use crate::status::{self, Outcome};

/// Errors of one reconciliation. Each is retried with back-off by the controller.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
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
    #[error("security material: {0}")]
    Security(#[from] crate::security::SecretPlanError),
    #[error("{kind} {name} exists and is not owned by this KVCluster; refusing to take it over")]
    NotOwned { kind: String, name: String },
}

impl Error {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Kube(_) => "kube",
            Self::Build(_) => "build",
            Self::NoNamespace(_) => "no_namespace",
            Self::TlsSecret { .. } => "tls_secret",
            Self::Encode(_) => "encode",
            Self::NotOwned { .. } => "not_owned",
            Self::Security(_) => "security",
        }
    }
}

/// Operator settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Node image for clusters created without `spec.image`.
    pub default_image: String,
    /// Field manager of every server-side apply.
    pub field_manager: String,
    /// DNS domain of the Kubernetes cluster.
    pub cluster_domain: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            default_image: format!("ghcr.io/ringkv/ringkv:{}", env!("CARGO_PKG_VERSION")),
            field_manager: names::MANAGER.into(),
            cluster_domain: names::DEFAULT_CLUSTER_DOMAIN.into(),
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
    let kvcs: Api<KVCluster> = Api::namespaced(ctx.client.clone(), &ns);
    if kvc.finalizers().iter().any(|f| f == LEGACY_FINALIZER) {
        // Left by an older operator: a finalizer only hangs deletion once the
        // operator is gone, and nothing needs it (owner references and each
        // pod's preStop drain stop a deleted cluster in order).
        let list: Vec<_> = kvc
            .finalizers()
            .iter()
            .filter(|f| *f != LEGACY_FINALIZER)
            .cloned()
            .collect();
        let patch = serde_json::json!({
            "metadata": { "finalizers": list, "resourceVersion": kvc.resource_version() }
        });
        kvcs.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        info!("removed the legacy finalizer {LEGACY_FINALIZER}");
        return Ok(Action::requeue(Duration::from_millis(100)));
    }
    if kvc.metadata.deletion_timestamp.is_some() {
        // Garbage collection deletes what the cluster owns.
        let zones: Vec<String> = kvc.spec.zones.iter().map(|z| z.name.clone()).collect();
        ctx.metrics.forget_cluster(&ns, &name, &zones);
        return Ok(Action::await_change());
    }

    let prev = kvc.status.clone().unwrap_or_default();
    let mut obs = crate::act::observe(ctx, kvc, &ns).await?;
    let sec = crate::act::observe_security(ctx, kvc, &ns).await?;
    let image = planner::resolve_image(&kvc.spec, &prev, &obs.zones, &ctx.settings.default_image);
    let build = BuildContext::new(kvc, &image, &ctx.settings.cluster_domain)
        .with_cert_source(sec.source.clone());
    let desired = Desired {
        template_hashes: (0..kvc.spec.zones.len())
            .map(|i| crate::build::desired_template_hash(&build, i).unwrap_or_default())
            .collect(),
        image: image.clone(),
        config_map: names::config_map(&name, &crate::build::config_hash(&build)),
    };
    obs.nodes = crate::act::observe_nodes(ctx, kvc, &ns, &obs, &sec).await?;

    let plan = planner::plan(&kvc.spec, &prev, &obs, &desired);
    info!(activity = ?plan.activity, admin = ?plan.admin, kube = ?plan.kube, "planned");
    let mut outcome = Outcome::new(plan, image.clone());
    let failed = crate::act::act(ctx, kvc, &ns, &build, &sec, &obs, &mut outcome).await;

    let (mut new_status, mut events) = status::report(&kvc.spec, &prev, &obs, &outcome);
    // Backups and the restore after the rest of the plan: they never block it.
    let backup_requeue = match crate::backups::reconcile(
        ctx,
        kvc,
        &ns,
        &outcome.plan.activity,
        &obs,
        &sec,
        &mut new_status,
    )
    .await
    {
        Ok((ev, requeue)) => {
            events.extend(ev);
            requeue
        }
        Err(e) => {
            warn!(error = %e, "backup step failed");
            Some(Duration::from_secs(30))
        }
    };
    if new_status != prev {
        patch_status(&kvcs, &name, &ctx.settings.field_manager, &new_status).await?;
    }
    ctx.metrics
        .record_cluster(&ns, &name, &kvc.spec, &new_status, &obs);
    publish(ctx, kvc, &ns, &events).await;
    if let Some(e) = failed {
        return Err(e);
    }
    let mut requeue = status::requeue(&outcome);
    if let Some(b) = backup_requeue {
        requeue = requeue.min(b);
    }
    Ok(Action::requeue(requeue))
}

async fn publish(ctx: &Context, kvc: &KVCluster, ns: &str, events: &[planner::PlannedEvent]) {
    let reference = kvc.object_ref(&());
    for e in events {
        let secondary = e.related.as_ref().map(|r| {
            let (api_version, kind, name) = match r {
                Related::Pod(n) => ("v1", "Pod", n),
                Related::StatefulSet(n) => ("apps/v1", "StatefulSet", n),
                Related::PersistentVolumeClaim(n) => ("v1", "PersistentVolumeClaim", n),
            };
            ObjectReference {
                api_version: Some(api_version.into()),
                kind: Some(kind.into()),
                name: Some(name.clone()),
                namespace: Some(ns.to_string()),
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
    // The primary watch passes spec changes (generation, which the API server
    // also bumps when deletion starts), annotation and finalizer changes — not
    // the operator's own status writes, which would otherwise start the next
    // reconcile at once.
    let (reader, writer) = reflector::store();
    let clusters = watcher(api::<KVCluster>(&client, ns), watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .predicate_filter(
            (predicates::generation as fn(&KVCluster) -> Option<u64>)
                .combine(predicates::annotations as fn(&KVCluster) -> Option<u64>)
                .combine(predicates::finalizers as fn(&KVCluster) -> Option<u64>),
            Default::default(),
        );
    Controller::for_stream(clusters, reader)
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
