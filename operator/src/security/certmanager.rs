//! cert-manager objects for a cluster whose certificates cert-manager issues.
//!
//! A StatefulSet's pods share one pod template, so they cannot each mount a
//! Secret of their own: cert-manager issues one Certificate per zone, valid
//! for every pod of the zone (`*.<cluster>-peers.<namespace>.svc...`), the
//! Services and loopback. Without an explicit issuer the operator bootstraps
//! the usual self-signed CA chain (a SelfSigned Issuer signs the `<cluster>-ca`
//! Certificate, a CA Issuer of that Secret signs the rest).

use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};

use super::{CertSource, names};
use crate::build::{BuildContext, BuildError};
use crate::crd::IssuerRef;

pub const GROUP: &str = "cert-manager.io";
pub const VERSION: &str = "v1";

pub fn certificate_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(GROUP, VERSION, "Certificate"),
        "certificates",
    )
}

pub fn issuer_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(GROUP, VERSION, "Issuer"), "issuers")
}

/// Whether an API group listing (discovery of `cert-manager.io/v1`) serves
/// what the operator needs.
pub fn installed(resources: &[String]) -> bool {
    ["certificates", "issuers"]
        .iter()
        .all(|r| resources.iter().any(|x| x == r))
}

/// The Issuers and Certificates to apply, in order; empty unless `source` is
/// cert-manager.
pub fn objects(ctx: &BuildContext, source: Option<&CertSource>) -> Result<Vec<Value>, BuildError> {
    let Some(CertSource::CertManager(issuer)) = source else {
        return Ok(Vec::new());
    };
    let cluster = ctx.name();
    let ns = ctx.namespace()?;
    let meta = |name: String| -> Result<Value, BuildError> {
        Ok(serde_json::to_value(ctx.meta(name)?).unwrap_or(Value::Null))
    };
    let mut out = Vec::new();
    let issuer = match issuer {
        Some(i) => i.clone(),
        None => {
            let selfsigned = names::selfsigned_issuer(&cluster);
            out.push(json!({
                "apiVersion": "cert-manager.io/v1", "kind": "Issuer",
                "metadata": meta(selfsigned.clone())?,
                "spec": { "selfSigned": {} }
            }));
            out.push(json!({
                "apiVersion": "cert-manager.io/v1", "kind": "Certificate",
                "metadata": meta(names::ca(&cluster))?,
                "spec": {
                    "isCA": true,
                    "commonName": format!("ringkv {ns}/{cluster} CA"),
                    "secretName": names::ca(&cluster),
                    "duration": "87600h",
                    "privateKey": { "algorithm": "ECDSA", "size": 256 },
                    "issuerRef": { "name": selfsigned, "kind": "Issuer", "group": GROUP }
                }
            }));
            out.push(json!({
                "apiVersion": "cert-manager.io/v1", "kind": "Issuer",
                "metadata": meta(names::ca(&cluster))?,
                "spec": { "ca": { "secretName": names::ca(&cluster) } }
            }));
            IssuerRef {
                name: names::ca(&cluster),
                kind: "Issuer".into(),
            }
        }
    };
    let issuer_ref = json!({ "name": issuer.name, "kind": issuer.kind, "group": GROUP });
    let domain = ctx.cluster_domain;
    let peers = crate::names::peer_service(&cluster);
    let client = crate::names::client_service(&cluster);
    for zone in &ctx.cluster.spec.zones {
        let name = names::node_tls(&cluster, &zone.name);
        out.push(json!({
            "apiVersion": "cert-manager.io/v1", "kind": "Certificate",
            "metadata": meta(name.clone())?,
            "spec": {
                "secretName": name,
                "commonName": crate::names::statefulset(&cluster, &zone.name),
                "dnsNames": [
                    format!("*.{peers}.{ns}.svc.{domain}"),
                    format!("*.{peers}.{ns}.svc"),
                    format!("{peers}.{ns}.svc.{domain}"),
                    format!("{client}.{ns}.svc.{domain}"),
                    format!("{client}.{ns}.svc"),
                    format!("{client}.{ns}"),
                    client,
                    "localhost",
                ],
                "ipAddresses": ["127.0.0.1", "::1"],
                "usages": ["server auth", "client auth", "digital signature", "key encipherment"],
                "duration": "2160h",
                "renewBefore": "720h",
                "privateKey": { "algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always" },
                "issuerRef": issuer_ref.clone()
            }
        }));
    }
    out.push(json!({
        "apiVersion": "cert-manager.io/v1", "kind": "Certificate",
        "metadata": meta(names::operator_tls(&cluster))?,
        "spec": {
            "secretName": names::operator_tls(&cluster),
            "commonName": crate::names::MANAGER,
            "usages": ["client auth", "digital signature", "key encipherment"],
            "duration": "2160h",
            "renewBefore": "720h",
            "privateKey": { "algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always" },
            "issuerRef": issuer_ref
        }
    }));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::testutil::*;

    fn kinds(v: &[Value]) -> Vec<(String, String)> {
        v.iter()
            .map(|o| {
                (
                    o["kind"].as_str().unwrap().to_string(),
                    o["metadata"]["name"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    #[test]
    fn without_an_issuer_a_self_signed_ca_chain_is_bootstrapped() {
        let c = cluster();
        let objs = objects(&ctx(&c), Some(&CertSource::CertManager(None))).unwrap();
        let k = kinds(&objs);
        assert_eq!(k[0], ("Issuer".into(), "kv-selfsigned".into()));
        assert_eq!(k[1], ("Certificate".into(), "kv-ca".into()));
        assert_eq!(k[2], ("Issuer".into(), "kv-ca".into()));
        assert_eq!(objs[1]["spec"]["isCA"], true);
        let zone_a = &objs[3];
        assert_eq!(zone_a["metadata"]["name"], "kv-zone-a-tls");
        assert_eq!(zone_a["spec"]["secretName"], "kv-zone-a-tls");
        assert_eq!(zone_a["spec"]["issuerRef"]["name"], "kv-ca");
        assert_eq!(
            zone_a["spec"]["dnsNames"][0],
            "*.kv-peers.db.svc.cluster.local"
        );
        assert!(
            zone_a["spec"]["ipAddresses"]
                .as_array()
                .unwrap()
                .contains(&json!("127.0.0.1"))
        );
        assert_eq!(
            zone_a["metadata"]["ownerReferences"][0]["kind"],
            "KVCluster"
        );
        let op = objs.last().unwrap();
        assert_eq!(op["metadata"]["name"], "kv-operator-tls");
        assert_eq!(op["spec"]["usages"][0], "client auth");
    }

    #[test]
    fn a_given_issuer_is_used_as_is() {
        let c = cluster();
        let src = CertSource::CertManager(Some(IssuerRef {
            name: "corp".into(),
            kind: "ClusterIssuer".into(),
        }));
        let objs = objects(&ctx(&c), Some(&src)).unwrap();
        assert!(objs.iter().all(|o| o["kind"] == "Certificate"));
        assert_eq!(objs.len(), 4, "three zones and the operator");
        assert!(
            objs.iter()
                .all(|o| o["spec"]["issuerRef"]["kind"] == "ClusterIssuer")
        );
        assert!(
            objects(&ctx(&c), Some(&CertSource::Operator))
                .unwrap()
                .is_empty()
        );
        assert!(installed(&[
            "certificates".into(),
            "issuers".into(),
            "orders".into()
        ]));
        assert!(!installed(&["issuers".into()]));
    }
}
