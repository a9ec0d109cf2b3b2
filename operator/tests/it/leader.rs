//! Leader election against the in-memory API server.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use ringkv_operator::leader::{LeaseConfig, release, try_acquire_or_renew};

use crate::fake_api::{FakeApi, Timeline};

fn cfg(id: &str) -> LeaseConfig {
    LeaseConfig {
        name: "ringkv-operator".into(),
        namespace: "ops".into(),
        identity: id.into(),
        duration: Duration::from_secs(15),
        renew_every: Duration::from_secs(5),
    }
}

#[tokio::test]
async fn one_leader_at_a_time_with_takeover_after_expiry() {
    let api = FakeApi::new(Timeline::default());
    let leases: Api<Lease> = Api::namespaced(api.client(), "ops");
    let t0 = Timestamp::from_second(1_700_000_000).unwrap();
    let at = |s: i64| Timestamp::from_second(t0.as_second() + s).unwrap();

    assert!(
        try_acquire_or_renew(&leases, &cfg("a"), t0).await.unwrap(),
        "a creates the lease"
    );
    assert!(
        !try_acquire_or_renew(&leases, &cfg("b"), at(1))
            .await
            .unwrap(),
        "b follows"
    );
    assert!(
        try_acquire_or_renew(&leases, &cfg("a"), at(5))
            .await
            .unwrap(),
        "a renews"
    );
    assert!(
        !try_acquire_or_renew(&leases, &cfg("b"), at(15))
            .await
            .unwrap(),
        "still valid"
    );
    // a stops renewing: after the duration b takes over.
    assert!(
        try_acquire_or_renew(&leases, &cfg("b"), at(21))
            .await
            .unwrap()
    );
    assert!(
        !try_acquire_or_renew(&leases, &cfg("a"), at(22))
            .await
            .unwrap(),
        "a lost it"
    );
    let l = leases.get("ringkv-operator").await.unwrap().spec.unwrap();
    assert_eq!(l.holder_identity.as_deref(), Some("b"));
    assert_eq!(l.lease_transitions, Some(1));

    // A graceful shutdown hands over at once.
    release(&leases, &cfg("b")).await.unwrap();
    assert!(
        try_acquire_or_renew(&leases, &cfg("a"), at(23))
            .await
            .unwrap()
    );
    // Releasing someone else's lease is a no-op.
    release(&leases, &cfg("b")).await.unwrap();
    assert_eq!(
        leases
            .get("ringkv-operator")
            .await
            .unwrap()
            .spec
            .unwrap()
            .holder_identity
            .as_deref(),
        Some("a")
    );
}
