//! Security material of a cluster: where node certificates come from, the
//! Secrets the operator generates (CA, per-pod certificates, its own client
//! certificate, the gossip secret, tokens) and what the operator itself
//! presents to the Admin API.
//!
//! Everything here is pure: the reconciler observes the Secrets
//! ([`SecretView`]), asks [`plan_secrets`] / [`certmanager::objects`] what to
//! write, and applies it before the StatefulSets, so a new pod's certificate
//! exists before the pod does.

pub mod certmanager;
pub mod pki;
mod plan;

use std::collections::BTreeMap;

pub use plan::{SecretPlan, SecretPlanError, node_sans, plan_secrets};

use crate::crd::{IssuerRef, KVClusterSpec, TlsIssuer, TlsSpec};

/// Annotation on Secrets the operator's own CA issued (also: sticky issuer).
pub const ANNOTATION_ISSUED_BY: &str = "ringkv.io/issued-by";
/// Annotation with `{name: notAfter unix seconds}` of the leaves of a Secret.
pub const ANNOTATION_NOT_AFTER: &str = "ringkv.io/not-after";
/// Annotation with a fingerprint of the CA that signed a Secret's leaves.
pub const ANNOTATION_CA: &str = "ringkv.io/ca-fingerprint";
/// Annotation cert-manager puts on the Secrets it writes.
pub const ANNOTATION_CERT_MANAGER: &str = "cert-manager.io/certificate-name";

/// Mount points in node pods.
pub const GOSSIP_DIR: &str = "/etc/ringkv/gossip";
pub const AUTH_DIR: &str = "/etc/ringkv/auth";
/// Key of the gossip secret file (one key per line: the first signs, all verify).
pub const GOSSIP_KEY: &str = "secret";
/// Key of the tokens file (`<role> <token>` lines).
pub const TOKENS_KEY: &str = "tokens";

/// Where the node certificates of a cluster come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertSource {
    /// One user Secret (`tls.crt`, `tls.key`, `ca.crt`) for every node.
    Secret(String),
    /// The operator's CA; per-pod certificates in `<cluster>-<zone>-tls`.
    Operator,
    /// cert-manager Certificates, one per zone (`<cluster>-<zone>-tls`).
    CertManager(Option<IssuerRef>),
}

impl CertSource {
    /// Secret the pods of `zone` mount at the TLS directory.
    pub fn node_secret(&self, cluster: &str, zone: &str) -> String {
        match self {
            Self::Secret(s) => s.clone(),
            Self::Operator | Self::CertManager(_) => names::node_tls(cluster, zone),
        }
    }

    /// Each pod has its own `<pod>.crt`/`<pod>.key` (else `tls.crt`/`tls.key`).
    pub fn per_pod_files(&self) -> bool {
        matches!(self, Self::Operator)
    }

    /// Secret with the operator's Admin client certificate (`tls.crt`,
    /// `tls.key`) and the CA it trusts (`ca.crt`).
    pub fn operator_secret(&self, cluster: &str) -> String {
        match self {
            Self::Secret(s) => s.clone(),
            Self::Operator | Self::CertManager(_) => names::operator_tls(cluster),
        }
    }
}

/// Who issued an existing cluster's certificates (so a cluster never switches
/// CA because cert-manager was installed or removed later: nodes with
/// certificates from two CAs could not talk).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExistingIssuer {
    Operator,
    CertManager,
}

impl ExistingIssuer {
    /// From the annotations of a cluster's node Secret.
    pub fn of(secret: &SecretView) -> Option<Self> {
        if secret.annotations.contains_key(ANNOTATION_ISSUED_BY) {
            Some(Self::Operator)
        } else if secret.annotations.contains_key(ANNOTATION_CERT_MANAGER) {
            Some(Self::CertManager)
        } else {
            None
        }
    }
}

/// Resolves the certificate source: an explicit Secret wins, then an explicit
/// issuer, then whoever issued the existing certificates, then cert-manager
/// when its CRDs are installed.
pub fn cert_source(
    tls: &TlsSpec,
    existing: Option<ExistingIssuer>,
    cert_manager_installed: bool,
) -> CertSource {
    if let Some(s) = &tls.secret_name {
        return CertSource::Secret(s.clone());
    }
    let cm = CertSource::CertManager(tls.cert_manager_issuer.clone());
    match (tls.issuer, existing) {
        (TlsIssuer::Operator, _) => CertSource::Operator,
        (TlsIssuer::CertManager, _) => cm,
        (TlsIssuer::Auto, Some(ExistingIssuer::Operator)) => CertSource::Operator,
        (TlsIssuer::Auto, Some(ExistingIssuer::CertManager)) => cm,
        (TlsIssuer::Auto, None) if cert_manager_installed => cm,
        (TlsIssuer::Auto, None) => CertSource::Operator,
    }
}

/// What the operator read of one Secret.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretView {
    pub data: BTreeMap<String, Vec<u8>>,
    pub annotations: BTreeMap<String, String>,
}

impl SecretView {
    pub fn from_secret(s: &k8s_openapi::api::core::v1::Secret) -> Self {
        Self {
            data: s
                .data
                .iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.0.clone()))
                .collect(),
            annotations: s.metadata.annotations.clone().unwrap_or_default(),
        }
    }

    pub fn text(&self, key: &str) -> Option<&str> {
        self.data.get(key).and_then(|v| std::str::from_utf8(v).ok())
    }
}

/// The first `admin` token of a tokens file (`<role> <token>` lines; `#`
/// comments and blank lines ignored).
pub fn admin_token(tokens: &str) -> Option<String> {
    tokens.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        match (it.next(), it.next()) {
            (Some("admin"), Some(t)) => Some(t.to_string()),
            _ => None,
        }
    })
}

/// Secret the nodes read their tokens from, when authentication is on.
pub fn tokens_secret(cluster: &str, spec: &KVClusterSpec) -> Option<String> {
    spec.auth.as_ref().map(|a| {
        a.tokens_secret_name
            .clone()
            .unwrap_or_else(|| names::auth(cluster))
    })
}

/// Names of the generated Secrets and cert-manager objects.
pub mod names {
    /// The operator's CA (`ca.crt`, `ca.key`), or cert-manager's self-signed CA.
    pub fn ca(cluster: &str) -> String {
        format!("{cluster}-ca")
    }
    /// Node certificates of one zone.
    pub fn node_tls(cluster: &str, zone: &str) -> String {
        format!("{cluster}-{zone}-tls")
    }
    /// The operator's Admin client certificate.
    pub fn operator_tls(cluster: &str) -> String {
        format!("{cluster}-operator-tls")
    }
    pub fn gossip(cluster: &str) -> String {
        format!("{cluster}-gossip")
    }
    pub fn auth(cluster: &str) -> String {
        format!("{cluster}-auth")
    }
    /// cert-manager self-signed Issuer that signs the cluster CA.
    pub fn selfsigned_issuer(cluster: &str) -> String {
        format!("{cluster}-selfsigned")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls(issuer: TlsIssuer) -> TlsSpec {
        TlsSpec {
            issuer,
            ..TlsSpec::default()
        }
    }

    #[test]
    fn the_source_is_sticky_and_cert_manager_is_detected() {
        let auto = tls(TlsIssuer::Auto);
        assert_eq!(cert_source(&auto, None, false), CertSource::Operator);
        assert_eq!(
            cert_source(&auto, None, true),
            CertSource::CertManager(None)
        );
        // cert-manager installed after the cluster got its CA: keep the CA.
        assert_eq!(
            cert_source(&auto, Some(ExistingIssuer::Operator), true),
            CertSource::Operator
        );
        // cert-manager's CRDs gone (say, mid-upgrade): keep its certificates.
        assert_eq!(
            cert_source(&auto, Some(ExistingIssuer::CertManager), false),
            CertSource::CertManager(None)
        );
        assert_eq!(
            cert_source(&tls(TlsIssuer::Operator), None, true),
            CertSource::Operator
        );
        let mut own = auto.clone();
        own.secret_name = Some("mine".into());
        assert_eq!(
            cert_source(&own, Some(ExistingIssuer::Operator), true),
            CertSource::Secret("mine".into())
        );
        assert_eq!(
            CertSource::Secret("mine".into()).node_secret("kv", "a"),
            "mine"
        );
        assert_eq!(CertSource::Operator.node_secret("kv", "a"), "kv-a-tls");
    }

    #[test]
    fn the_admin_token_is_the_first_admin_line() {
        let f = "# rotated 2024-01\nread r1\n\nadmin  a1\nadmin a2\n";
        assert_eq!(admin_token(f).as_deref(), Some("a1"));
        assert_eq!(admin_token("read r\nreadwrite w\n"), None);
        assert_eq!(admin_token("admin\n"), None);
    }
}
