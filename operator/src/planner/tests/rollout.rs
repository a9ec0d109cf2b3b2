//! Rollouts.

use super::*;

#[test]
fn image_change_rolls_one_pod_at_a_time() {
    let mut w = World::new(&[2, 2, 2]);
    w.hashes = vec!["h2".into(); 3];
    // 1. Apply the new template everywhere with every pod held back.
    let p = w.plan();
    assert_eq!(partitions(&p), vec![2, 2, 2]);
    assert_eq!(replicas(&p), vec![2, 2, 2]);
    assert_eq!(reasons(&p), vec!["RolloutStarted"; 3]);
    assert!(matches!(p.activity, Activity::RollingOut { .. }));

    // 2. The StatefulSet controller saw it: new revision, nothing updated yet.
    for z in 0..3 {
        let s = w.sts_mut(z);
        s.template_hash = Some("h2".into());
        s.partition = 2;
        s.update_revision = Some("r2".into());
        s.updated_replicas = 0;
    }
    w.status.phase = Phase::Upgrading;
    let p = w.plan();
    assert_eq!(partitions(&p), vec![1, 2, 2], "one pod of the first zone");
    assert_eq!(reasons(&p), vec!["RestartingNode"]);
    assert!(p.events[0].message.contains("kv-zone-a-1"));

    // 3. The pod restarted but is not normal yet: hold.
    w.sts_mut(0).partition = 1;
    w.sts_mut(0).updated_replicas = 1;
    w.set_state("kv-zone-a-1", NodeState::Joining);
    let p = w.plan();
    assert_eq!(partitions(&p), vec![1, 2, 2]);
    assert!(matches!(
        p.activity,
        Activity::Waiting {
            during: Phase::Upgrading,
            ..
        }
    ));

    // 4. Normal again: next pod.
    w.set_state("kv-zone-a-1", NodeState::Normal);
    let p = w.plan();
    assert_eq!(partitions(&p), vec![0, 2, 2]);

    // 5. Zone a done: zone b starts.
    let s = w.sts_mut(0);
    s.partition = 0;
    s.updated_replicas = 2;
    s.current_revision = Some("r2".into());
    let p = w.plan();
    assert_eq!(partitions(&p), vec![0, 1, 2]);
}

#[test]
fn rollout_waits_while_the_statefulset_status_is_stale() {
    let mut w = World::new(&[2, 2, 2]);
    // Template applied but the StatefulSet controller has not caught up: its
    // revisions still look finished. Releasing the partition now would restart
    // every pod at once.
    let s = w.sts_mut(0);
    s.partition = 2;
    s.generation = 2;
    s.observed_generation = 1;
    let p = w.plan();
    assert_eq!(partitions(&p)[0], 2);
}

#[test]
fn rollout_does_not_wait_for_empty_zones_and_completes_with_an_event() {
    let mut w = World::new(&[1, 1, 1]);
    w.status.phase = Phase::Upgrading;
    let p = w.plan();
    assert_eq!(reasons(&p), vec!["RolloutComplete"]);
    assert_eq!(p.activity, Activity::Stable);
}
