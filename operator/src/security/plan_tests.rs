use super::*;
use crate::build::testutil::*;
use crate::crd::{AuthSpec, TlsSpec};

const NOW: i64 = 1_704_067_200_000;
const DAY: i64 = 86_400_000;

fn pods(per_zone: i32) -> Vec<Vec<String>> {
    ["zone-a", "zone-b", "zone-c"]
        .iter()
        .map(|z| (0..per_zone).map(|o| format!("kv-{z}-{o}")).collect())
        .collect()
}

/// The live Secrets after applying `plan` on top of `live`.
fn applied(live: &BTreeMap<String, SecretView>, plan: &SecretPlan) -> BTreeMap<String, SecretView> {
    let mut out = live.clone();
    for s in &plan.writes {
        out.insert(s.metadata.name.clone().unwrap(), SecretView::from_secret(s));
    }
    out
}

fn names_of(plan: &SecretPlan) -> Vec<String> {
    plan.writes
        .iter()
        .map(|s| s.metadata.name.clone().unwrap())
        .collect()
}

fn tls_cluster() -> crate::crd::KVCluster {
    let mut c = cluster();
    c.spec.tls = Some(TlsSpec::default());
    c
}

#[test]
fn automatic_tls_creates_a_ca_per_pod_certificates_and_the_operator_certificate() {
    let c = tls_cluster();
    let ctx = ctx(&c);
    let plan = plan_secrets(
        &ctx,
        Some(&CertSource::Operator),
        &BTreeMap::new(),
        &pods(2),
        NOW,
    )
    .unwrap();
    assert_eq!(
        names_of(&plan),
        [
            "kv-gossip",
            "kv-ca",
            "kv-zone-a-tls",
            "kv-zone-b-tls",
            "kv-zone-c-tls",
            "kv-operator-tls"
        ]
    );
    let live = applied(&BTreeMap::new(), &plan);
    let ca = live["kv-ca"].text("ca.crt").unwrap().to_string();
    assert!(live["kv-ca"].data.contains_key("ca.key"));
    let zone_a = &live["kv-zone-a-tls"];
    assert_eq!(zone_a.text("ca.crt"), Some(ca.as_str()));
    for pod in ["kv-zone-a-0", "kv-zone-a-1"] {
        assert!(
            zone_a
                .text(&format!("{pod}.crt"))
                .unwrap()
                .contains("BEGIN CERTIFICATE")
        );
        assert!(
            zone_a
                .text(&format!("{pod}.key"))
                .unwrap()
                .contains("PRIVATE KEY")
        );
    }
    assert!(
        !zone_a.data.contains_key("kv-zone-b-0.crt"),
        "a zone's Secret holds only its pods"
    );
    assert_ne!(
        zone_a.data["kv-zone-a-0.key"], zone_a.data["kv-zone-a-1.key"],
        "one key per pod"
    );
    assert_eq!(
        zone_a.annotations[super::super::ANNOTATION_ISSUED_BY],
        "ringkv-operator"
    );
    let op = &live["kv-operator-tls"];
    assert!(op.data.contains_key("tls.crt") && op.data.contains_key("tls.key"));
    assert_eq!(op.text("ca.crt"), Some(ca.as_str()));
    let gossip = live["kv-gossip"].text(GOSSIP_KEY).unwrap();
    assert_eq!(gossip.trim().len(), 64);
    assert!(
        !live.contains_key("kv-auth"),
        "tokens only when spec.auth is set"
    );

    // Nothing is rewritten when nothing is due.
    let again = plan_secrets(
        &ctx,
        Some(&CertSource::Operator),
        &live,
        &pods(2),
        NOW + DAY,
    )
    .unwrap();
    assert!(again.writes.is_empty(), "{:?}", names_of(&again));
}

#[test]
fn a_new_pod_gets_a_certificate_and_the_others_keep_theirs() {
    let c = tls_cluster();
    let ctx = ctx(&c);
    let live = applied(
        &BTreeMap::new(),
        &plan_secrets(
            &ctx,
            Some(&CertSource::Operator),
            &BTreeMap::new(),
            &pods(1),
            NOW,
        )
        .unwrap(),
    );
    let mut more = pods(1);
    more[1].push("kv-zone-b-1".into());
    let plan = plan_secrets(&ctx, Some(&CertSource::Operator), &live, &more, NOW).unwrap();
    assert_eq!(names_of(&plan), ["kv-zone-b-tls"]);
    let after = applied(&live, &plan);
    let b = &after["kv-zone-b-tls"];
    assert!(b.data.contains_key("kv-zone-b-1.crt"));
    assert_eq!(
        b.data["kv-zone-b-0.crt"],
        live["kv-zone-b-tls"].data["kv-zone-b-0.crt"]
    );
}

#[test]
fn leaves_are_renewed_before_they_expire_and_when_the_ca_changes() {
    let c = tls_cluster();
    let ctx = ctx(&c);
    let live = applied(
        &BTreeMap::new(),
        &plan_secrets(
            &ctx,
            Some(&CertSource::Operator),
            &BTreeMap::new(),
            &pods(1),
            NOW,
        )
        .unwrap(),
    );
    // 61 days into a 90-day certificate: 29 days left, under the 30-day margin.
    let later = NOW + 61 * DAY;
    let plan = plan_secrets(&ctx, Some(&CertSource::Operator), &live, &pods(1), later).unwrap();
    assert_eq!(
        names_of(&plan),
        [
            "kv-zone-a-tls",
            "kv-zone-b-tls",
            "kv-zone-c-tls",
            "kv-operator-tls"
        ],
        "the CA and the gossip secret stay"
    );
    let renewed = applied(&live, &plan);
    assert_ne!(
        renewed["kv-zone-a-tls"].data["kv-zone-a-0.crt"],
        live["kv-zone-a-tls"].data["kv-zone-a-0.crt"]
    );

    // Someone replaced the CA: everything it signs is re-issued.
    let mut new_ca = live.clone();
    new_ca.remove("kv-ca");
    let fresh_ca = plan_secrets(&ctx, Some(&CertSource::Operator), &new_ca, &pods(1), NOW).unwrap();
    let rotated = applied(&new_ca, &fresh_ca);
    assert_ne!(
        rotated["kv-ca"].data["ca.crt"],
        live["kv-ca"].data["ca.crt"]
    );
    assert_eq!(
        rotated["kv-zone-c-tls"].data["ca.crt"],
        rotated["kv-ca"].data["ca.crt"]
    );
    assert_ne!(
        rotated["kv-zone-c-tls"].data["kv-zone-c-0.crt"],
        live["kv-zone-c-tls"].data["kv-zone-c-0.crt"]
    );
}

#[test]
fn tokens_are_generated_once_unless_the_user_brings_them() {
    let mut c = cluster();
    c.spec.auth = Some(AuthSpec::default());
    let ctx1 = ctx(&c);
    let plan = plan_secrets(&ctx1, None, &BTreeMap::new(), &pods(1), NOW).unwrap();
    assert_eq!(
        names_of(&plan),
        ["kv-auth"],
        "no TLS: no gossip secret, no certificates"
    );
    let live = applied(&BTreeMap::new(), &plan);
    let tokens = live["kv-auth"].text(TOKENS_KEY).unwrap();
    let roles: Vec<&str> = tokens
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    assert_eq!(roles, ["admin", "readwrite", "read"]);
    assert!(super::super::admin_token(tokens).unwrap().len() >= 32);
    assert!(
        plan_secrets(&ctx1, None, &live, &pods(1), NOW)
            .unwrap()
            .writes
            .is_empty()
    );

    c.spec.auth = Some(AuthSpec {
        tokens_secret_name: Some("mine".into()),
    });
    assert!(
        plan_secrets(&ctx(&c), None, &BTreeMap::new(), &pods(1), NOW)
            .unwrap()
            .writes
            .is_empty()
    );
}

#[test]
fn user_certificates_and_a_user_gossip_secret_are_never_written() {
    let mut c = tls_cluster();
    c.spec.tls.as_mut().unwrap().secret_name = Some("mine".into());
    let src = CertSource::Secret("mine".into());
    let plan = plan_secrets(&ctx(&c), Some(&src), &BTreeMap::new(), &pods(1), NOW).unwrap();
    assert_eq!(names_of(&plan), ["kv-gossip"]);
    let user_gossip = BTreeMap::from([("kv-gossip".to_string(), SecretView::default())]);
    assert!(
        plan_secrets(&ctx(&c), Some(&src), &user_gossip, &pods(1), NOW)
            .unwrap()
            .writes
            .is_empty()
    );
}
