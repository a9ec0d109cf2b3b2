//! Which Secrets to write this reconcile: the operator's CA, per-pod node
//! certificates, its own client certificate (automatic TLS), the gossip
//! secret and the tokens file. Only what is missing or due is written.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;

use super::pki::{self, Issued, LeafRequest, PkiError};
use super::{
    ANNOTATION_CA, ANNOTATION_ISSUED_BY, ANNOTATION_NOT_AFTER, CertSource, GOSSIP_KEY, SecretView,
    TOKENS_KEY, names,
};
use crate::build::{BuildContext, BuildError, fnv1a_hex};

/// Errors planning Secrets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SecretPlanError {
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error("Secret {secret} has no {key}")]
    MissingKey { secret: String, key: String },
}

/// Secrets to apply, in order (the CA before what it signs).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SecretPlan {
    pub writes: Vec<Secret>,
}

/// Plans the generated Secrets of a cluster. `zone_pods[i]` are the pods of
/// zone `i` that need a certificate (every pod that runs or is about to).
pub fn plan_secrets(
    ctx: &BuildContext,
    source: Option<&CertSource>,
    secrets: &BTreeMap<String, SecretView>,
    zone_pods: &[Vec<String>],
    now_ms: i64,
) -> Result<SecretPlan, SecretPlanError> {
    let cluster = ctx.name();
    let spec = &ctx.cluster.spec;
    let mut plan = SecretPlan::default();
    if spec.tls.is_some() {
        // Authenticated gossip comes with TLS. Created once, never rewritten:
        // an operator adds a key line to rotate it.
        let gossip = names::gossip(&cluster);
        if !secrets.contains_key(&gossip) {
            let key = pki::random_hex(32)?;
            plan.writes.push(secret(
                ctx,
                &gossip,
                BTreeMap::new(),
                [(GOSSIP_KEY, format!("{key}\n"))],
            )?);
        }
    }
    if let Some(auth) = &spec.auth
        && auth.tokens_secret_name.is_none()
    {
        let name = names::auth(&cluster);
        if !secrets.contains_key(&name) {
            let file = format!(
                "# <role> <token>; roles: read, readwrite, admin. Edit to rotate (nodes re-read it).\nadmin {}\nreadwrite {}\nread {}\n",
                pki::random_hex(24)?,
                pki::random_hex(24)?,
                pki::random_hex(24)?
            );
            plan.writes
                .push(secret(ctx, &name, BTreeMap::new(), [(TOKENS_KEY, file)])?);
        }
    }
    if source == Some(&CertSource::Operator) {
        operator_pki(ctx, secrets, zone_pods, now_ms, &mut plan)?;
    }
    Ok(plan)
}

fn operator_pki(
    ctx: &BuildContext,
    secrets: &BTreeMap<String, SecretView>,
    zone_pods: &[Vec<String>],
    now_ms: i64,
    plan: &mut SecretPlan,
) -> Result<(), SecretPlanError> {
    let cluster = ctx.name();
    let ns = ctx.namespace()?;
    let ca_name = names::ca(&cluster);
    let existing_ca = secrets
        .get(&ca_name)
        .and_then(|s| Some((s.text("ca.crt")?.to_string(), s.text("ca.key")?.to_string())));
    let (ca_crt, ca_key) = match existing_ca {
        Some(ca) => ca,
        None => {
            let ca = pki::new_ca(&cluster, &ns, now_ms)?;
            let mut ann = issued_by();
            ann.insert(
                ANNOTATION_NOT_AFTER.into(),
                serde_json::json!({ "ca": ca.not_after }).to_string(),
            );
            plan.writes.push(secret(
                ctx,
                &ca_name,
                ann,
                [
                    ("ca.crt", ca.cert_pem.clone()),
                    ("ca.key", ca.key_pem.clone()),
                ],
            )?);
            (ca.cert_pem, ca.key_pem)
        }
    };
    let fingerprint = fnv1a_hex(ca_crt.as_bytes());
    let issue = |req: LeafRequest| -> Result<Issued, SecretPlanError> {
        Ok(pki::issue(&cluster, &ns, &ca_key, &ca_name, &req, now_ms)?)
    };

    for (zone, pods) in ctx.cluster.spec.zones.iter().zip(zone_pods) {
        let name = names::node_tls(&cluster, &zone.name);
        let live = secrets.get(&name);
        let leaves: Vec<(String, LeafRequest)> = pods
            .iter()
            .map(|pod| {
                (
                    pod.clone(),
                    LeafRequest {
                        common_name: pod.clone(),
                        sans: node_sans(ctx, pod),
                        server: true,
                    },
                )
            })
            .collect();
        if let Some(s) = leaf_secret(
            ctx,
            &name,
            live,
            &ca_crt,
            &fingerprint,
            &leaves,
            now_ms,
            &issue,
        )? {
            plan.writes.push(s);
        }
    }
    let name = names::operator_tls(&cluster);
    let leaves = vec![(
        "tls".to_string(),
        LeafRequest {
            common_name: crate::names::MANAGER.into(),
            sans: vec![],
            server: false,
        },
    )];
    if let Some(s) = leaf_secret(
        ctx,
        &name,
        secrets.get(&name),
        &ca_crt,
        &fingerprint,
        &leaves,
        now_ms,
        &issue,
    )? {
        plan.writes.push(s);
    }
    Ok(())
}

fn issued_by() -> BTreeMap<String, String> {
    BTreeMap::from([(ANNOTATION_ISSUED_BY.into(), crate::names::MANAGER.into())])
}

/// Names a node certificate is valid for: its stable pod DNS names, the peer
/// and client Services (clients verify the Service name), loopback (the
/// preStop drain calls 127.0.0.1).
pub fn node_sans(ctx: &BuildContext, pod: &str) -> Vec<String> {
    let cluster = ctx.name();
    let ns = ctx.namespace().unwrap_or_default();
    let domain = ctx.cluster_domain;
    let peers = crate::names::peer_service(&cluster);
    let client = crate::names::client_service(&cluster);
    vec![
        format!("{pod}.{peers}.{ns}.svc.{domain}"),
        format!("{pod}.{peers}.{ns}.svc"),
        format!("{pod}.{peers}.{ns}"),
        format!("{peers}.{ns}.svc.{domain}"),
        format!("{client}.{ns}.svc.{domain}"),
        format!("{client}.{ns}.svc"),
        format!("{client}.{ns}"),
        client,
        "localhost".into(),
        "127.0.0.1".into(),
        "::1".into(),
    ]
}

/// The Secret holding `leaves` (`<name>.crt`/`<name>.key` each, plus
/// `ca.crt`), or `None` when the live one needs no change: a leaf is
/// (re-)issued when missing, due for renewal, signed by another CA or issued
/// for other names. Leaves of pods no longer listed are kept (a pod being
/// removed may still run).
#[allow(clippy::too_many_arguments)]
fn leaf_secret(
    ctx: &BuildContext,
    name: &str,
    live: Option<&SecretView>,
    ca_crt: &str,
    fingerprint: &str,
    leaves: &[(String, LeafRequest)],
    now_ms: i64,
    issue: &dyn Fn(LeafRequest) -> Result<Issued, SecretPlanError>,
) -> Result<Option<Secret>, SecretPlanError> {
    let same_ca = live
        .and_then(|l| l.annotations.get(ANNOTATION_CA))
        .map(String::as_str)
        == Some(fingerprint);
    // notAfter and a hash of the names, per leaf.
    let mut meta: BTreeMap<String, (i64, String)> = live
        .filter(|_| same_ca)
        .and_then(|l| l.annotations.get(ANNOTATION_NOT_AFTER))
        .and_then(|j| serde_json::from_str(j).ok())
        .unwrap_or_default();
    let mut data: BTreeMap<String, String> = BTreeMap::new();
    if same_ca && let Some(l) = live {
        for (k, v) in &l.data {
            if let Ok(t) = std::str::from_utf8(v) {
                data.insert(k.clone(), t.to_string());
            }
        }
    }
    let mut changed = !same_ca || data.get("ca.crt").map(String::as_str) != Some(ca_crt);
    data.insert("ca.crt".into(), ca_crt.to_string());
    for (leaf, req) in leaves {
        let names_hash = fnv1a_hex(req.sans.join(",").as_bytes());
        let (crt, key) = (format!("{leaf}.crt"), format!("{leaf}.key"));
        let fresh = meta
            .get(leaf)
            .is_some_and(|(end, h)| !pki::needs_renewal(*end, now_ms) && *h == names_hash)
            && data.contains_key(&crt)
            && data.contains_key(&key);
        if fresh {
            continue;
        }
        let issued = issue(req.clone())?;
        data.insert(crt, issued.cert_pem);
        data.insert(key, issued.key_pem);
        meta.insert(leaf.clone(), (issued.not_after, names_hash));
        changed = true;
    }
    if !changed {
        return Ok(None);
    }
    let mut ann = issued_by();
    ann.insert(ANNOTATION_CA.into(), fingerprint.to_string());
    ann.insert(
        ANNOTATION_NOT_AFTER.into(),
        serde_json::to_string(&meta).unwrap_or_default(),
    );
    Ok(Some(secret(ctx, name, ann, data)?))
}

fn secret<K: Into<String>, V: Into<String>>(
    ctx: &BuildContext,
    name: &str,
    annotations: BTreeMap<String, String>,
    data: impl IntoIterator<Item = (K, V)>,
) -> Result<Secret, SecretPlanError> {
    let mut meta = ctx.meta(name.to_string())?;
    if !annotations.is_empty() {
        meta.annotations = Some(annotations);
    }
    Ok(Secret {
        metadata: meta,
        type_: Some("Opaque".into()),
        data: Some(
            data.into_iter()
                .map(|(k, v)| (k.into(), ByteString(v.into().into_bytes())))
                .collect(),
        ),
        ..Secret::default()
    })
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
