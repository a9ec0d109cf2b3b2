//! The reconcile's contact with the world: reading what is there
//! ([`observe`], [`observe_nodes`]) and carrying out a plan ([`act`]).
//!
//! Writes are server-side applies with one field manager, skipped when the
//! live object already has every field the operator would set (a no-op apply
//! is still a request, and with some API servers a watch event); an object of
//! the same name that this cluster does not own is never taken over.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams,
    PropagationPolicy,
};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tracing::info;

use crate::admin::{AdminTls, NodeAddr};
use crate::build::{self, BuildContext};
use crate::controller::{Context, Error};
use crate::crd::KVCluster;
use crate::metrics::{AdminLabels, StepLabels};
use crate::names;
use crate::observe::{
    ANNOTATION_DECOMMISSIONED, NodeObservation, Observed, PodObservation, PvcObservation,
    StsObservation,
};
use crate::planner::{AdminCall, KubeAction};
use crate::security::{self, CertSource, ExistingIssuer, SecretView, certmanager};
use crate::status::{AdminResult, Outcome};

/// Everything but the nodes: StatefulSets, pods, volumes, ConfigMap
/// versions, and the names other clusters of the namespace claimed.
pub async fn observe(ctx: &Context, kvc: &KVCluster, ns: &str) -> Result<Observed, Error> {
    let client = &ctx.client;
    let name = kvc.name_any();
    let now = (ctx.clock)();
    let selector = names::selector_string(&name);
    let lp = ListParams::default().labels(&selector);

    let sts_api: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
    let mut zones = Vec::with_capacity(kvc.spec.zones.len());
    for z in &kvc.spec.zones {
        let sts = sts_api.get_opt(&names::statefulset(&name, &z.name)).await?;
        zones.push(sts.as_ref().map(StsObservation::from_statefulset));
    }
    let pods: BTreeMap<String, PodObservation> = Api::<Pod>::namespaced(client.clone(), ns)
        .list(&lp)
        .await?
        .items
        .iter()
        .map(|p| (p.name_any(), PodObservation::from_pod(p)))
        .collect();
    let pvc_list = Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns)
        .list(&lp)
        .await?
        .items;
    let pvcs: BTreeMap<String, PvcObservation> = pvc_list
        .iter()
        .map(|c| (c.name_any(), PvcObservation::from_pvc(c)))
        .collect();
    // The class the volumes were bound with (the cluster default when the
    // spec names none) decides whether they can grow.
    let volume_expansion = match pvcs.values().find_map(|p| p.class.clone()) {
        Some(class) => Api::<StorageClass>::all(client.clone())
            .get_opt(&class)
            .await
            .ok()
            .flatten()
            .map(|c| c.allow_volume_expansion.unwrap_or(false)),
        None => None,
    };
    let prefix = names::config_map_prefix(&name);
    let config_maps = Api::<ConfigMap>::namespaced(client.clone(), ns)
        .list(&lp)
        .await?
        .items
        .iter()
        .map(ResourceExt::name_any)
        .filter(|n| n.starts_with(&prefix))
        .collect();
    let others = Api::<KVCluster>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await?
        .items;
    Ok(Observed {
        name,
        generation: kvc.metadata.generation.unwrap_or(0),
        created_unix_ms: kvc
            .metadata
            .creation_timestamp
            .as_ref()
            .map_or(now, crate::time::to_unix_ms),
        now_unix_ms: now,
        zones,
        pods,
        pvcs,
        volume_expansion,
        config_maps,
        collisions: crate::crd::name_collisions(kvc, &others),
        nodes: BTreeMap::new(),
    })
}

/// Asks every node the StatefulSets run for its status, concurrently (each
/// call has its own timeout).
pub async fn observe_nodes(
    ctx: &Context,
    kvc: &KVCluster,
    ns: &str,
    obs: &Observed,
    sec: &SecurityObservation,
) -> Result<BTreeMap<String, NodeObservation>, Error> {
    let name = kvc.name_any();
    let pods: Vec<String> = kvc
        .spec
        .zones
        .iter()
        .zip(&obs.zones)
        .flat_map(|(z, s)| {
            let n = s.as_ref().map_or(0, |s| s.replicas.max(s.status_replicas));
            let from_pods = obs
                .zone_pods(&name, &z.name)
                .keys()
                .max()
                .map_or(0, |o| o + 1);
            (0..n.max(from_pods))
                .map(|o| names::pod(&name, &z.name, o))
                .collect::<Vec<_>>()
        })
        .collect();
    let calls = pods.iter().map(|pod| {
        let a = addr(kvc, ns, pod, sec);
        async move {
            let obs = match ctx.admin.status(&a).await {
                Ok(r) => NodeObservation::Report(r),
                Err(e) => NodeObservation::Unreachable(e.to_string()),
            };
            (a.pod, obs)
        }
    });
    let out: BTreeMap<_, _> = futures::future::join_all(calls).await.into_iter().collect();
    for o in out.values() {
        count_admin(ctx, "status", o.report().is_some());
    }
    Ok(out)
}

fn addr(kvc: &KVCluster, ns: &str, pod: &str, sec: &SecurityObservation) -> NodeAddr {
    NodeAddr {
        namespace: ns.to_string(),
        cluster: kvc.name_any(),
        pod: pod.to_string(),
        tls: sec.admin_tls.clone(),
        token: sec.admin_token.clone(),
    }
}

/// The Secrets of a cluster's security and what follows from them.
#[derive(Debug, Clone, Default)]
pub struct SecurityObservation {
    /// Where node certificates come from (`None`: no TLS).
    pub source: Option<CertSource>,
    /// The Secrets the operator reads or generates, by name (absent = missing).
    pub secrets: BTreeMap<String, SecretView>,
    /// What the operator trusts and presents on the Admin port.
    pub admin_tls: Option<Arc<AdminTls>>,
    pub admin_token: Option<Arc<String>>,
}

/// Reads the cluster's security Secrets, detects cert-manager (discovery of
/// `cert-manager.io/v1`) when the spec lets it choose, and resolves the
/// certificate source.
pub async fn observe_security(
    ctx: &Context,
    kvc: &KVCluster,
    ns: &str,
) -> Result<SecurityObservation, Error> {
    let spec = &kvc.spec;
    let cluster = kvc.name_any();
    let mut out = SecurityObservation::default();
    if spec.tls.is_none() && spec.auth.is_none() {
        return Ok(out);
    }
    let mut wanted = vec![
        security::names::ca(&cluster),
        security::names::operator_tls(&cluster),
        security::names::gossip(&cluster),
    ];
    wanted.extend(
        spec.zones
            .iter()
            .map(|z| security::names::node_tls(&cluster, &z.name)),
    );
    if let Some(s) = spec.tls.as_ref().and_then(|t| t.secret_name.clone()) {
        wanted.push(s);
    }
    let tokens = security::tokens_secret(&cluster, spec);
    wanted.extend(tokens.clone());
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    for name in wanted {
        if let Some(s) = api.get_opt(&name).await? {
            out.secrets.insert(name, SecretView::from_secret(&s));
        }
    }
    if let Some(tls) = &spec.tls {
        let existing = spec
            .zones
            .first()
            .and_then(|z| {
                out.secrets
                    .get(&security::names::node_tls(&cluster, &z.name))
            })
            .and_then(ExistingIssuer::of);
        let needs_discovery = tls.secret_name.is_none()
            && tls.issuer == crate::crd::TlsIssuer::Auto
            && existing.is_none();
        let cm = needs_discovery && cert_manager_installed(&ctx.client).await;
        let source = security::cert_source(tls, existing, cm);
        let name = source.operator_secret(&cluster);
        let view = out.secrets.get(&name);
        if view.is_none() && matches!(source, CertSource::Secret(_)) {
            return Err(Error::TlsSecret {
                secret: name,
                reason: "not found".into(),
            });
        }
        // Generated material may not exist yet (first reconcile, or
        // cert-manager still issuing): Admin calls then fail and the nodes
        // are reported unreachable until it does.
        let ca = view.and_then(|v| v.data.get("ca.crt").cloned());
        if ca.is_none() && matches!(source, CertSource::Secret(_)) {
            return Err(Error::TlsSecret {
                secret: name,
                reason: "has no ca.crt".into(),
            });
        }
        let identity = view.and_then(|v| {
            Some((
                v.data.get("tls.crt")?.clone(),
                v.data.get("tls.key")?.clone(),
            ))
        });
        out.admin_tls = Some(Arc::new(AdminTls {
            ca: ca.unwrap_or_default(),
            identity,
        }));
        out.source = Some(source);
    }
    out.admin_token = tokens
        .and_then(|t| out.secrets.get(&t))
        .and_then(|v| v.text(security::TOKENS_KEY))
        .and_then(security::admin_token)
        .map(Arc::new);
    Ok(out)
}

async fn cert_manager_installed(client: &kube::Client) -> bool {
    let gv = format!("{}/{}", certmanager::GROUP, certmanager::VERSION);
    match client.list_api_group_resources(&gv).await {
        Ok(list) => certmanager::installed(
            &list
                .resources
                .iter()
                .map(|r| r.name.clone())
                .collect::<Vec<_>>(),
        ),
        Err(_) => false,
    }
}

/// Pods of each zone that need a certificate: every ordinal below the
/// target, the live StatefulSet's replicas or an existing pod.
fn cert_pods(kvc: &KVCluster, obs: &Observed) -> Vec<Vec<String>> {
    let name = kvc.name_any();
    let targets = kvc.spec.zone_targets();
    kvc.spec
        .zones
        .iter()
        .enumerate()
        .map(|(i, z)| {
            let sts = obs
                .zones
                .get(i)
                .and_then(|s| s.as_ref())
                .map_or(0, |s| s.replicas.max(s.status_replicas));
            let pods = obs
                .zone_pods(&name, &z.name)
                .keys()
                .max()
                .map_or(0, |o| o + 1);
            let n = targets.get(i).copied().unwrap_or(0).max(sts).max(pods);
            (0..n).map(|o| names::pod(&name, &z.name, o)).collect()
        })
        .collect()
}

/// Writes the generated Secrets and cert-manager objects (before anything
/// that mounts them).
async fn apply_security(
    ctx: &Context,
    kvc: &KVCluster,
    ns: &str,
    build: &BuildContext<'_>,
    sec: &SecurityObservation,
    obs: &Observed,
) -> Result<(), Error> {
    if kvc.spec.tls.is_none() && kvc.spec.auth.is_none() {
        return Ok(());
    }
    let uid = kvc.uid().unwrap_or_default();
    let pp = PatchParams::apply(&ctx.settings.field_manager).force();
    let plan = security::plan_secrets(
        build,
        sec.source.as_ref(),
        &sec.secrets,
        &cert_pods(kvc, obs),
        (ctx.clock)(),
    )?;
    for s in &plan.writes {
        info!(
            secret = s.metadata.name.as_deref().unwrap_or(""),
            "writing secret"
        );
        apply(&ctx.client, ns, &pp, &uid, s).await?;
    }
    for o in certmanager::objects(build, sec.source.as_ref())? {
        let ar = if o["kind"] == "Issuer" {
            certmanager::issuer_resource()
        } else {
            certmanager::certificate_resource()
        };
        apply_dynamic(&ctx.client, ns, &pp, &uid, &ar, o).await?;
    }
    Ok(())
}

async fn apply_dynamic(
    client: &kube::Client,
    ns: &str,
    pp: &PatchParams,
    owner_uid: &str,
    ar: &ApiResource,
    obj: Value,
) -> Result<(), Error> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, ar);
    let name = obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if let Some(live) = api.get_opt(&name).await? {
        let ours = live
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.controller == Some(true) && o.uid == owner_uid);
        if !ours {
            return Err(Error::NotOwned {
                kind: ar.kind.clone(),
                name,
            });
        }
        if contains(&serde_json::to_value(&live)?, &obj) {
            return Ok(());
        }
    }
    api.patch(&name, pp, &Patch::Apply(&obj)).await?;
    Ok(())
}

fn count_admin(ctx: &Context, call: &'static str, ok: bool) {
    let result = if ok { "ok" } else { "error" };
    ctx.metrics
        .admin_calls
        .get_or_create(&AdminLabels { call, result })
        .inc();
}

/// Carries out the plan in order: volume and StatefulSet writes that must
/// precede the applies, the applies, the writes that must follow them, then
/// the Admin call. The first failed Kubernetes write stops the rest (no Admin
/// call on top of a half-applied plan); it is recorded in the outcome and
/// returned.
pub async fn act(
    ctx: &Context,
    kvc: &KVCluster,
    ns: &str,
    build: &BuildContext<'_>,
    sec: &SecurityObservation,
    obs: &Observed,
    outcome: &mut Outcome,
) -> Option<Error> {
    let res = async {
        apply_security(ctx, kvc, ns, build, sec, obs).await?;
        let (before, after): (Vec<_>, Vec<_>) =
            outcome.plan.kube.clone().into_iter().partition(|k| {
                !matches!(
                    k,
                    KubeAction::DeletePod { .. } | KubeAction::DeleteConfigMap { .. }
                )
            });
        for k in &before {
            kube_action(ctx, ns, k).await?;
        }
        if let Some(scales) = outcome.plan.scales.clone() {
            let uid = kvc.uid().unwrap_or_default();
            let pp = PatchParams::apply(&ctx.settings.field_manager).force();
            let client = &ctx.client;
            apply(client, ns, &pp, &uid, &build::service_account(build)?).await?;
            apply(client, ns, &pp, &uid, &build::config_map(build)?).await?;
            apply(client, ns, &pp, &uid, &build::peer_service(build)?).await?;
            apply(client, ns, &pp, &uid, &build::client_service(build)?).await?;
            apply(client, ns, &pp, &uid, &build::pdb(build)?).await?;
            for (i, scale) in scales.iter().enumerate() {
                if let Some(scale) = scale {
                    apply(client, ns, &pp, &uid, &build::statefulset(build, i, scale)?).await?;
                }
            }
        }
        for k in &after {
            kube_action(ctx, ns, k).await?;
        }
        Ok::<(), Error>(())
    }
    .await;
    if let Err(e) = res {
        outcome.apply_error = Some(e.to_string());
        return Some(e);
    }
    let tls = sec;
    match outcome.plan.admin.clone() {
        Some(AdminCall::Decommission { node, .. }) => {
            let res = ctx.admin.decommission(&addr(kvc, ns, &node, tls)).await;
            count_admin(ctx, "decommission", res.is_ok());
            step(ctx, "decommission");
            outcome.admin = Some(AdminResult::Decommission(res));
        }
        Some(AdminCall::Repair { node, .. }) => {
            let res = ctx.admin.repair(&addr(kvc, ns, &node, tls)).await;
            count_admin(ctx, "repair", res.is_ok());
            step(ctx, "repair");
            outcome.admin = Some(AdminResult::Repair(res));
        }
        Some(AdminCall::Cleanup { node }) => {
            let res = ctx.admin.cleanup(&addr(kvc, ns, &node, tls)).await;
            count_admin(ctx, "cleanup", res.is_ok());
            step(ctx, "cleanup");
            outcome.admin = Some(AdminResult::Cleanup(res));
        }
        Some(AdminCall::RemoveNode { via, node }) => {
            let res = ctx
                .admin
                .remove_node(&addr(kvc, ns, &via, tls), &node)
                .await;
            count_admin(ctx, "remove_node", res.is_ok());
            step(ctx, "remove_node");
            outcome.admin = Some(AdminResult::RemoveNode(res));
        }
        None => {}
    }
    None
}

fn step(ctx: &Context, step: &'static str) {
    ctx.metrics.steps.get_or_create(&StepLabels { step }).inc();
}

async fn kube_action(ctx: &Context, ns: &str, k: &KubeAction) -> Result<(), Error> {
    let client = ctx.client.clone();
    let merge = |v: Value| Patch::Merge(v);
    info!(action = ?k, "kubernetes write");
    match k {
        KubeAction::ResizeVolume { pvc, size } => {
            let body = serde_json::json!({"spec": {"resources": {"requests": {"storage": size}}}});
            ignore_gone(
                Api::<PersistentVolumeClaim>::namespaced(client, ns)
                    .patch(pvc, &PatchParams::default(), &merge(body))
                    .await
                    .map(|_| ()),
            )?;
        }
        KubeAction::MarkVolumeDecommissioned { pvc } => {
            let at = crate::time::from_unix_ms((ctx.clock)());
            let body =
                serde_json::json!({"metadata": {"annotations": {ANNOTATION_DECOMMISSIONED: at}}});
            ignore_gone(
                Api::<PersistentVolumeClaim>::namespaced(client, ns)
                    .patch(pvc, &PatchParams::default(), &merge(body))
                    .await
                    .map(|_| ()),
            )?;
        }
        KubeAction::DeleteVolume { pvc } => {
            ignore_gone(
                Api::<PersistentVolumeClaim>::namespaced(client, ns)
                    .delete(pvc, &DeleteParams::default())
                    .await
                    .map(|_| ()),
            )?;
        }
        KubeAction::OrphanStatefulSet { name } => {
            let dp = DeleteParams {
                propagation_policy: Some(PropagationPolicy::Orphan),
                ..DeleteParams::default()
            };
            ignore_gone(
                Api::<StatefulSet>::namespaced(client, ns)
                    .delete(name, &dp)
                    .await
                    .map(|_| ()),
            )?;
        }
        KubeAction::DeletePod { name } => {
            ignore_gone(
                Api::<Pod>::namespaced(client, ns)
                    .delete(name, &DeleteParams::default())
                    .await
                    .map(|_| ()),
            )?;
        }
        KubeAction::DeleteConfigMap { name } => {
            ignore_gone(
                Api::<ConfigMap>::namespaced(client, ns)
                    .delete(name, &DeleteParams::default())
                    .await
                    .map(|_| ()),
            )?;
        }
    }
    Ok(())
}

fn ignore_gone(r: Result<(), kube::Error>) -> Result<(), Error> {
    match r {
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        other => Ok(other?),
    }
}

/// Server-side apply of `obj`, unless the live object already carries every
/// field of it. Refuses an object of the same name this cluster does not own.
async fn apply<K>(
    client: &kube::Client,
    ns: &str,
    pp: &PatchParams,
    owner_uid: &str,
    obj: &K,
) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Serialize
        + DeserializeOwned
        + Clone
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let name = obj.meta().name.clone().unwrap_or_default();
    if let Some(live) = api.get_opt(&name).await? {
        let ours = live
            .meta()
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.controller == Some(true) && o.uid == owner_uid);
        if !ours {
            return Err(Error::NotOwned {
                kind: K::kind(&()).to_string(),
                name,
            });
        }
        if contains(&serde_json::to_value(&live)?, &serde_json::to_value(obj)?) {
            return Ok(());
        }
    }
    api.patch(&name, pp, &Patch::Apply(obj)).await?;
    Ok(())
}

/// Whether `live` has every field of `desired` with the same value (fields
/// the API server added are ignored: a server-side apply of `desired` would
/// change nothing).
pub fn contains(live: &Value, desired: &Value) -> bool {
    match (live, desired) {
        (_, Value::Null) => true,
        (Value::Object(l), Value::Object(d)) => d
            .iter()
            .all(|(k, v)| v.is_null() || l.get(k).is_some_and(|lv| contains(lv, v))),
        (Value::Array(l), Value::Array(d)) => {
            l.len() == d.len() && l.iter().zip(d).all(|(lv, dv)| contains(lv, dv))
        }
        (l, d) => l == d,
    }
}

#[cfg(test)]
mod tests {
    use super::contains;
    use serde_json::json;

    #[test]
    fn contains_ignores_server_fields_but_not_changes() {
        let live = json!({"metadata": {"name": "a", "uid": "1", "labels": {"x": "1", "y": "2"}},
                          "spec": {"replicas": 2, "ports": [{"port": 1, "nodePort": 30001}]}});
        assert!(contains(
            &live,
            &json!({"metadata": {"labels": {"x": "1"}}})
        ));
        assert!(contains(&live, &json!({"spec": {"ports": [{"port": 1}]}})));
        assert!(!contains(&live, &json!({"spec": {"replicas": 3}})));
        assert!(!contains(
            &live,
            &json!({"spec": {"ports": [{"port": 1}, {"port": 2}]}})
        ));
        assert!(!contains(
            &live,
            &json!({"metadata": {"annotations": {"a": "b"}}})
        ));
        assert!(contains(
            &live,
            &json!({"spec": {"replicas": 2, "absent": null}})
        ));
    }
}
