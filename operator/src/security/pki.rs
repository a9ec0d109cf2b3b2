//! The operator's own per-cluster CA (automatic TLS, as scylla-operator does):
//! a self-signed ECDSA P-256 CA and leaf certificates it signs.
//!
//! rcgen is built without its X.509 parser, so the CA is re-created as an
//! issuer from its key and the same deterministic parameters (subject, key
//! usages, key-id method) — which is all an issuer needs to sign. Validity
//! times the planner needs are kept beside the PEMs (Secret annotations), not
//! parsed back.

use std::net::IpAddr;

use ::time::OffsetDateTime;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// Errors of certificate generation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PkiError {
    #[error("the CA key in Secret {secret} cannot be read: {reason}")]
    BadCaKey { secret: String, reason: String },
    #[error("{name:?} is not a valid certificate name: {reason}")]
    BadName { name: String, reason: String },
    #[error("generating a certificate: {0}")]
    Generate(String),
    #[error("time {0} ms is out of range")]
    BadTime(i64),
}

/// Lifetime of the cluster CA. It is not rotated automatically (rotating a CA
/// needs a trust-bundle overlap every node must see first); ten years.
pub const CA_VALIDITY_DAYS: i64 = 3650;
/// Lifetime of a node or operator certificate.
pub const LEAF_VALIDITY_DAYS: i64 = 90;
/// A leaf is re-issued when it has less than this left (nodes re-read their
/// certificate files, so renewal needs no restart).
pub const RENEW_BEFORE_DAYS: i64 = 30;

/// A PEM certificate with its key and validity end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    /// Unix seconds.
    pub not_after: i64,
}

fn at(unix_ms: i64) -> Result<OffsetDateTime, PkiError> {
    OffsetDateTime::from_unix_timestamp(unix_ms.div_euclid(1000))
        .map_err(|_| PkiError::BadTime(unix_ms))
}

fn gen_err(e: rcgen::Error) -> PkiError {
    PkiError::Generate(e.to_string())
}

fn ca_params(cluster: &str, namespace: &str) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "ringkv");
    dn.push(
        DnType::CommonName,
        format!("ringkv {namespace}/{cluster} CA"),
    );
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p
}

/// A new self-signed CA for one cluster, valid from `now_ms`.
pub fn new_ca(cluster: &str, namespace: &str, now_ms: i64) -> Result<Issued, PkiError> {
    let key = KeyPair::generate().map_err(gen_err)?;
    let mut p = ca_params(cluster, namespace);
    let start = at(now_ms)?;
    // An hour of slack for clocks behind the operator's.
    p.not_before = start - ::time::Duration::hours(1);
    p.not_after = start + ::time::Duration::days(CA_VALIDITY_DAYS);
    let cert = p.self_signed(&key).map_err(gen_err)?;
    Ok(Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        not_after: p.not_after.unix_timestamp(),
    })
}

/// What a leaf certificate is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafRequest {
    pub common_name: String,
    /// DNS names and IP addresses.
    pub sans: Vec<String>,
    /// Server and client auth (a node is both); else client auth only.
    pub server: bool,
}

/// Signs a new leaf with the cluster CA (`ca_key_pem` from the CA Secret).
pub fn issue(
    cluster: &str,
    namespace: &str,
    ca_key_pem: &str,
    ca_secret: &str,
    req: &LeafRequest,
    now_ms: i64,
) -> Result<Issued, PkiError> {
    let ca_key = KeyPair::from_pem(ca_key_pem).map_err(|e| PkiError::BadCaKey {
        secret: ca_secret.to_string(),
        reason: e.to_string(),
    })?;
    let issuer = Issuer::new(ca_params(cluster, namespace), ca_key);
    let key = KeyPair::generate().map_err(gen_err)?;
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "ringkv");
    dn.push(DnType::CommonName, req.common_name.clone());
    p.distinguished_name = dn;
    p.subject_alt_names = req
        .sans
        .iter()
        .map(|s| match s.parse::<IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => s
                .clone()
                .try_into()
                .map(SanType::DnsName)
                .map_err(|e: rcgen::Error| PkiError::BadName {
                    name: s.clone(),
                    reason: e.to_string(),
                }),
        })
        .collect::<Result<_, _>>()?;
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    p.extended_key_usages = if req.server {
        vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ]
    } else {
        vec![ExtendedKeyUsagePurpose::ClientAuth]
    };
    p.use_authority_key_identifier_extension = true;
    let start = at(now_ms)?;
    p.not_before = start - ::time::Duration::hours(1);
    p.not_after = start + ::time::Duration::days(LEAF_VALIDITY_DAYS);
    let cert = p.signed_by(&key, &issuer).map_err(gen_err)?;
    Ok(Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        not_after: p.not_after.unix_timestamp(),
    })
}

/// Whether a certificate ending at `not_after` (unix s) is due for renewal.
pub fn needs_renewal(not_after: i64, now_ms: i64) -> bool {
    not_after - now_ms.div_euclid(1000) < RENEW_BEFORE_DAYS * 86_400
}

/// Random secret material (gossip keys, tokens): `bytes` random bytes as hex.
pub fn random_hex(bytes: usize) -> Result<String, PkiError> {
    use ring::rand::SecureRandom;
    let mut buf = vec![0u8; bytes];
    ring::rand::SystemRandom::new()
        .fill(&mut buf)
        .map_err(|_| PkiError::Generate("the system random generator failed".into()))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_704_067_200_000;

    #[test]
    fn a_leaf_is_issued_by_the_stored_ca_key() {
        let ca = new_ca("kv", "db", NOW).unwrap();
        assert!(ca.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert_eq!(ca.not_after, NOW / 1000 + CA_VALIDITY_DAYS * 86_400);
        let leaf = issue(
            "kv",
            "db",
            &ca.key_pem,
            "kv-ca",
            &LeafRequest {
                common_name: "kv-a-0".into(),
                sans: vec![
                    "kv-a-0.kv-peers.db.svc.cluster.local".into(),
                    "127.0.0.1".into(),
                ],
                server: true,
            },
            NOW,
        )
        .unwrap();
        assert_ne!(leaf.key_pem, ca.key_pem);
        assert_eq!(leaf.not_after, NOW / 1000 + LEAF_VALIDITY_DAYS * 86_400);
        // The real check (a handshake verifying the chain and names) is in
        // operator/tests/it/tls.rs; here: a bad CA key is a typed error.
        let err = issue(
            "kv",
            "db",
            "not a key",
            "kv-ca",
            &LeafRequest {
                common_name: "x".into(),
                sans: vec![],
                server: false,
            },
            NOW,
        )
        .unwrap_err();
        assert!(matches!(err, PkiError::BadCaKey { secret, .. } if secret == "kv-ca"));
    }

    #[test]
    fn renewal_starts_thirty_days_before_the_end() {
        let end = NOW / 1000 + 31 * 86_400;
        assert!(!needs_renewal(end, NOW));
        assert!(needs_renewal(end, NOW + 2 * 86_400_000));
    }

    #[test]
    fn random_material_differs_each_time() {
        let a = random_hex(32).unwrap();
        assert_eq!(a.len(), 64);
        assert_ne!(a, random_hex(32).unwrap());
    }
}
