//! Leader election against the in-memory API server: handover timing with
//! the renew deadline, and a graceful release.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use ringkv_operator::leader::{Elector, LeaseConfig, release};

use crate::fake_api::{FakeApi, Timeline};

fn elector(id: &str) -> Elector {
    Elector::new(LeaseConfig::new(
        "ringkv-operator",
        "ops",
        id,
        Duration::from_secs(15),
    ))
}

/// Seconds on the test's monotonic clock, as milliseconds.
fn s(secs: u64) -> u64 {
    secs * 1000
}

#[tokio::test]
async fn the_old_leader_stops_before_a_standby_takes_over() {
    let api = FakeApi::new(Timeline::default());
    let leases: Api<Lease> = Api::namespaced(api.client(), "ops");
    // Wall clocks agree here; the renew time a writes moves with it.
    let wall = |t: u64| Timestamp::from_second(1_700_000_000 + t as i64).unwrap();
    let (mut a, mut b) = (elector("a"), elector("b"));

    assert!(
        a.round(&leases, s(0), wall(0)).await.unwrap(),
        "a creates the lease"
    );
    assert!(!b.round(&leases, s(1), wall(1)).await.unwrap(), "b follows");
    assert!(a.round(&leases, s(2), wall(2)).await.unwrap(), "a renews");
    assert!(!b.round(&leases, s(3), wall(3)).await.unwrap());

    // a's renewals start failing (API trouble on its side) from t=4 s.
    api.fail("leases", 500);
    for t in [4, 6, 8] {
        assert!(a.round(&leases, s(t), wall(t)).await.is_err());
        assert!(!a.must_stop(s(t)), "within the renew deadline at {t}s");
    }
    // 10 s after its last renewal (t=2) a must stop reconciling.
    assert!(!a.must_stop(s(11)));
    assert!(a.must_stop(s(12)));
    api.fail("leases", 0);

    // b saw the last change at t=3: it may take over only at t=18, well after
    // a stopped at t=12 — never both at once.
    for t in [12, 15, 17] {
        assert!(
            !b.round(&leases, s(t), wall(t)).await.unwrap(),
            "still following at {t}s"
        );
    }
    assert!(
        b.round(&leases, s(18), wall(18)).await.unwrap(),
        "b takes over"
    );
    let l = leases.get("ringkv-operator").await.unwrap().spec.unwrap();
    assert_eq!(l.holder_identity.as_deref(), Some("b"));
    assert_eq!(l.lease_transitions, Some(1));
    assert!(
        !a.round(&leases, s(19), wall(19)).await.unwrap(),
        "a lost it"
    );

    // A graceful shutdown hands over at once.
    release(&leases, &b.cfg).await.unwrap();
    assert!(a.round(&leases, s(20), wall(20)).await.unwrap());
    // Releasing someone else's lease is a no-op.
    release(&leases, &b.cfg).await.unwrap();
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

#[tokio::test]
async fn a_leader_with_a_clock_far_behind_is_not_deposed() {
    // The leader's wall clock is an hour behind: the renew times it writes
    // look expired to anyone comparing them with their own clock.
    let api = FakeApi::new(Timeline::default());
    let leases: Api<Lease> = Api::namespaced(api.client(), "ops");
    let behind = Timestamp::from_second(1_700_000_000 - 3600).unwrap();
    let now = Timestamp::from_second(1_700_000_000).unwrap();
    let (mut a, mut b) = (elector("a"), elector("b"));
    assert!(a.round(&leases, s(0), behind).await.unwrap());
    for t in 1..40 {
        if t % 2 == 0 {
            let wall = Timestamp::from_second(behind.as_second() + t as i64).unwrap();
            assert!(a.round(&leases, s(t), wall).await.unwrap());
        }
        assert!(
            !b.round(&leases, s(t), now).await.unwrap(),
            "b took a live lease at {t}s"
        );
    }
}
