//! Creating, growing and shrinking zones; validation.

use super::*;

#[test]
fn create_builds_every_zone_at_its_target() {
    let mut w = World::new(&[0, 0, 0]);
    w.zones = vec![None, None, None];
    w.spec.replicas = 4;
    let p = w.plan();
    assert_eq!(replicas(&p), vec![2, 1, 1]);
    assert_eq!(partitions(&p), vec![0, 0, 0]);
    assert_eq!(p.activity, Activity::Creating);
    assert_eq!(reasons(&p), vec!["Creating"]);
    assert_eq!(p.admin, None);
}

#[test]
fn creation_waits_until_every_node_is_normal() {
    let mut w = World::new(&[1, 1, 1]);
    w.status.phase = Phase::Creating;
    w.set_state("kv-zone-b-0", NodeState::Joining);
    let p = w.plan();
    assert!(
        matches!(&p.activity, Activity::Waiting { during: Phase::Creating, message, .. } if message.contains("kv-zone-b-0 is joining")),
        "{:?}",
        p.activity
    );
    w.set_state("kv-zone-b-0", NodeState::Normal);
    let p = w.plan();
    assert_eq!(p.activity, Activity::Stable);
    assert_eq!(reasons(&p), vec!["Created"]);
}

#[test]
fn scale_up_adds_one_node_at_a_time_zone_by_zone() {
    let mut w = World::new(&[1, 1, 1]);
    w.spec.replicas = 6;
    let p = w.plan();
    assert_eq!(replicas(&p), vec![2, 1, 1]);
    assert_eq!(
        p.activity,
        Activity::ScalingUp {
            node: "kv-zone-a-1".into()
        }
    );
    assert_eq!(reasons(&p), vec!["ScalingUp"]);
    assert_eq!(p.admin, None, "joining needs no admin call");

    // The StatefulSet has grown but the new node is still joining: wait.
    w.status.phase = Phase::Scaling;
    w.zones[0] = Some(sts(2));
    w.set_state("kv-zone-a-1", NodeState::Joining);
    let p = w.plan();
    assert_eq!(replicas(&p), vec![2, 1, 1]);
    assert!(matches!(
        p.activity,
        Activity::Waiting {
            during: Phase::Scaling,
            ..
        }
    ));

    // Pod not ready yet: wait too.
    w.set_state("kv-zone-a-1", NodeState::Normal);
    w.sts_mut(0).ready_replicas = 1;
    assert!(matches!(w.plan().activity, Activity::Waiting { .. }));
    w.sts_mut(0).ready_replicas = 2;

    // Normal: next zone.
    let p = w.plan();
    assert_eq!(replicas(&p), vec![2, 2, 1]);
    assert_eq!(
        p.activity,
        Activity::ScalingUp {
            node: "kv-zone-b-1".into()
        }
    );
}

#[test]
fn scale_up_waits_for_the_statefulset_to_settle() {
    let mut w = World::new(&[2, 1, 1]);
    w.spec.replicas = 6;
    w.sts_mut(0).status_replicas = 1;
    let p = w.plan();
    assert_eq!(replicas(&p), vec![2, 1, 1]);
    assert!(matches!(
        p.activity,
        Activity::Waiting {
            reason: "StatefulSetNotSettled",
            ..
        }
    ));
}

#[test]
fn scaling_completes_only_when_the_last_node_is_normal() {
    let mut w = World::new(&[2, 2, 2]);
    w.status.phase = Phase::Scaling;
    w.set_state("kv-zone-c-1", NodeState::Joining);
    assert!(matches!(
        w.plan().activity,
        Activity::Waiting {
            during: Phase::Scaling,
            ..
        }
    ));
    w.set_state("kv-zone-c-1", NodeState::Normal);
    let p = w.plan();
    assert_eq!(reasons(&p), vec!["ScalingComplete"]);
    assert_eq!(p.activity, Activity::Stable);
}

#[test]
fn scale_down_decommissions_before_lowering_replicas() {
    let mut w = World::new(&[2, 2, 2]);
    w.spec.replicas = 3;
    let p = w.plan();
    // Largest zones tie: the last one gives up its highest ordinal.
    assert_eq!(
        p.admin,
        Some(AdminCall::Decommission {
            node: "kv-zone-c-1".into(),
            zone: "zone-c".into()
        })
    );
    assert_eq!(
        replicas(&p),
        vec![2, 2, 2],
        "replicas never drop before the node has left"
    );
    let d = p.decommission.as_ref().unwrap();
    assert_eq!(
        (d.node.as_str(), d.zone.as_str(), d.phase.as_str()),
        ("kv-zone-c-1", "zone-c", "Starting")
    );
    assert!(d.started_at.is_some());
    assert_eq!(reasons(&p), vec!["DecommissionStarted"]);
}

#[test]
fn scale_down_picks_the_largest_zone() {
    let mut w = World::new(&[3, 2, 2]);
    w.spec.replicas = 6;
    let p = w.plan();
    assert_eq!(
        p.admin,
        Some(AdminCall::Decommission {
            node: "kv-zone-a-2".into(),
            zone: "zone-a".into()
        })
    );
}

#[test]
fn scale_down_waits_for_a_healthy_ring() {
    let mut w = World::new(&[2, 2, 2]);
    w.spec.replicas = 3;
    w.nodes.insert(
        "kv-zone-a-0".into(),
        NodeObservation::Unreachable("timeout".into()),
    );
    let p = w.plan();
    assert_eq!(p.admin, None);
    assert!(
        matches!(&p.activity, Activity::Waiting { reason: "NodesNotNormal", message, .. } if message.contains("kv-zone-a-0"))
    );
}

#[test]
fn creation_is_not_done_while_nodes_form_separate_rings() {
    let mut w = World::new(&[1, 1, 1]);
    w.status.phase = Phase::Creating;
    // Every node started at once and became a ring of its own.
    for pod in ["kv-zone-a-0", "kv-zone-b-0", "kv-zone-c-0"] {
        sees_only(&mut w, pod, &[]);
    }
    let p = w.plan();
    assert!(
        matches!(&p.activity, Activity::Waiting { during: Phase::Creating, reason: "NodesNotNormal", message } if message.contains("kv-zone-a-0 does not see kv-zone-b-0, kv-zone-c-0")),
        "{:?}",
        p.activity
    );
    assert!(!reasons(&p).contains(&"Created"));
    for (pod, others) in [
        ("kv-zone-a-0", ["kv-zone-b-0", "kv-zone-c-0"]),
        ("kv-zone-b-0", ["kv-zone-a-0", "kv-zone-c-0"]),
        ("kv-zone-c-0", ["kv-zone-a-0", "kv-zone-b-0"]),
    ] {
        sees_only(&mut w, pod, &others);
    }
    assert_eq!(reasons(&w.plan()), vec!["Created"]);
}

#[test]
fn scale_down_waits_until_every_node_sees_the_whole_ring() {
    let mut w = World::new(&[2, 2, 2]);
    w.spec.replicas = 3;
    // One node's gossip view still lacks a member, or thinks it is down.
    sees_only(
        &mut w,
        "kv-zone-b-0",
        &["kv-zone-a-0", "kv-zone-a-1", "kv-zone-b-1", "kv-zone-c-0"],
    );
    let p = w.plan();
    assert_eq!(p.admin, None, "no decommission on a lagging view");
    assert_eq!(replicas(&p), vec![2, 2, 2]);
    assert!(
        matches!(&p.activity, Activity::Waiting { reason: "NodesNotNormal", message, .. } if message.contains("kv-zone-b-0 does not see kv-zone-c-1")),
        "{:?}",
        p.activity
    );
    sees_only(
        &mut w,
        "kv-zone-b-0",
        &[
            "kv-zone-a-0",
            "kv-zone-a-1",
            "kv-zone-b-1",
            "kv-zone-c-0",
            "kv-zone-c-1",
        ],
    );
    w.node_mut("kv-zone-b-0").members[5].alive = false;
    assert_eq!(w.plan().admin, None, "a member seen as down blocks too");
    w.node_mut("kv-zone-b-0").members[5].alive = true;
    assert!(matches!(
        w.plan().admin,
        Some(AdminCall::Decommission { .. })
    ));
}

#[test]
fn refuses_to_go_below_n() {
    let mut w = World::new(&[1, 1, 1]);
    w.spec.replicas = 2;
    let p = w.plan();
    assert_eq!(p.admin, None);
    assert_eq!(replicas(&p), vec![1, 1, 1]);
    assert_eq!(reasons(&p), vec!["ScaleDownRefused"]);
    assert!(p.events[0].warning);
    let b = p.blocker.unwrap();
    assert_eq!(b.reason, "ScaleDownRefused");
    assert!(b.message.contains("replication.n=3"), "{}", b.message);
    // Reported once: the condition already says so next time.
    w.status.conditions.push(crate::status::condition(
        "Progressing",
        false,
        "ScaleDownRefused",
        &b.message,
        1,
        0,
    ));
    assert!(w.plan().events.is_empty());
}

#[test]
fn below_n_at_creation_is_an_invalid_spec() {
    let mut w = World::new(&[0, 0, 0]);
    w.zones = vec![None, None, None];
    w.spec.replicas = 2;
    let p = w.plan();
    assert_eq!(p.scales, None);
    assert!(matches!(&p.activity, Activity::Invalid(m) if m.contains("must not exceed replicas")));
}

#[test]
fn an_invalid_spec_touches_nothing_and_is_reported_once() {
    let mut w = World::new(&[1, 1, 1]);
    w.spec.replication.w = 4;
    let p = w.plan();
    assert_eq!(p.scales, None);
    assert_eq!(p.admin, None);
    let Activity::Invalid(msg) = &p.activity else {
        panic!("{:?}", p.activity)
    };
    assert!(msg.contains("replication.w (4) must not exceed replication.n (3)"));
    assert_eq!(reasons(&p), vec!["InvalidSpec"]);
    w.status.conditions.push(crate::status::condition(
        "Degraded",
        true,
        "InvalidSpec",
        msg,
        1,
        0,
    ));
    assert!(w.plan().events.is_empty());
}

#[test]
fn a_vnodes_change_is_refused() {
    let mut w = World::new(&[1, 1, 1]);
    w.spec.vnodes = 256;
    let p = w.plan();
    assert_eq!(p.scales, None);
    assert!(matches!(&p.activity, Activity::Invalid(m) if m.contains("vnodes cannot change")));
}

#[test]
fn a_zone_added_later_starts_empty_and_grows() {
    let mut w = World::new(&[1, 1, 1]);
    w.spec.zones.push(crate::crd::ZoneSpec {
        name: "zone-d".into(),
        node_label_value: "zone-d".into(),
    });
    w.spec.replicas = 4;
    w.hashes.push("h".into());
    w.zones.push(None);
    let p = w.plan();
    assert_eq!(replicas(&p), vec![1, 1, 1, 1]);
    assert_eq!(
        p.activity,
        Activity::ScalingUp {
            node: "kv-zone-d-0".into()
        }
    );
}

#[test]
fn rebalancing_grows_before_it_shrinks() {
    // 6 nodes in 3 zones, then a fourth zone: targets 2,2,1,1.
    let mut w = World::new(&[2, 2, 2]);
    w.spec.zones.push(crate::crd::ZoneSpec {
        name: "zone-d".into(),
        node_label_value: "zone-d".into(),
    });
    w.hashes.push("h".into());
    w.zones.push(Some(sts(0)));
    let p = w.plan();
    assert_eq!(replicas(&p), vec![2, 2, 2, 1]);
    assert_eq!(p.admin, None);
}
