//! A decommission in flight.

use super::*;

#[test]
fn decommission_in_progress_is_polled_and_replicas_stay() {
    let mut w = World::new(&[2, 2, 2]);
    w.spec.replicas = 3;
    in_flight(&mut w, "kv-zone-c-1", "zone-c");
    leaving(&mut w, "kv-zone-c-1", DecommissionPhase::Streaming, 3);
    let p = w.plan();
    assert_eq!(replicas(&p), vec![2, 2, 2]);
    assert_eq!(
        p.admin,
        Some(AdminCall::Decommission {
            node: "kv-zone-c-1".into(),
            zone: "zone-c".into()
        })
    );
    let d = p.decommission.unwrap();
    assert_eq!(
        (
            d.phase.as_str(),
            d.ranges_done,
            d.ranges_total,
            d.keys_streamed
        ),
        ("Streaming", 3, 10, 1234)
    );
    assert_eq!(
        p.activity,
        Activity::Decommissioning {
            node: "kv-zone-c-1".into()
        }
    );
}

#[test]
fn decommission_continues_even_if_the_spec_scales_back_up() {
    let mut w = World::new(&[2, 2, 2]);
    w.spec.replicas = 6;
    in_flight(&mut w, "kv-zone-c-1", "zone-c");
    leaving(&mut w, "kv-zone-c-1", DecommissionPhase::Streaming, 5);
    let p = w.plan();
    assert!(matches!(p.admin, Some(AdminCall::Decommission { .. })));
    assert_eq!(replicas(&p), vec![2, 2, 2]);
}

#[test]
fn operator_restart_mid_decommission_resumes_from_the_node_report() {
    // The status write that recorded the decommission was lost; the node knows.
    let mut w = World::new(&[2, 2, 2]);
    w.spec.replicas = 3;
    leaving(&mut w, "kv-zone-b-1", DecommissionPhase::Streaming, 7);
    let p = w.plan();
    assert_eq!(
        p.admin,
        Some(AdminCall::Decommission {
            node: "kv-zone-b-1".into(),
            zone: "zone-b".into()
        })
    );
    assert_eq!(replicas(&p), vec![2, 2, 2]);
    let d = p.decommission.unwrap();
    assert_eq!((d.node.as_str(), d.ranges_done), ("kv-zone-b-1", 7));
}

#[test]
fn operator_restart_with_status_recorded_resumes_the_same_node() {
    let mut w = World::new(&[2, 2, 2]);
    w.spec.replicas = 3;
    in_flight(&mut w, "kv-zone-c-1", "zone-c");
    // The node has not started yet (the call was lost): call again, same node.
    let p = w.plan();
    assert_eq!(
        p.admin,
        Some(AdminCall::Decommission {
            node: "kv-zone-c-1".into(),
            zone: "zone-c".into()
        })
    );
    assert!(
        p.events.is_empty(),
        "no duplicate DecommissionStarted event"
    );
}

#[test]
fn a_left_node_is_removed_and_only_then() {
    let mut w = World::new(&[2, 2, 2]);
    w.spec.replicas = 3;
    in_flight(&mut w, "kv-zone-c-1", "zone-c");
    leaving(&mut w, "kv-zone-c-1", DecommissionPhase::Done, 10);
    let p = w.plan();
    assert_eq!(replicas(&p), vec![2, 2, 1]);
    assert_eq!(p.admin, None);
    assert_eq!(p.decommission, None);
    assert_eq!(reasons(&p), vec!["NodeRemoved"]);
    assert_eq!(
        p.activity,
        Activity::RemovingNode {
            node: "kv-zone-c-1".into()
        }
    );

    // Next reconcile: the StatefulSet is lowered but the pod is still terminating.
    w.status.decommission = None;
    w.sts_mut(2).replicas = 1;
    w.sts_mut(2).generation = 2;
    let p = w.plan();
    assert_eq!(replicas(&p), vec![2, 2, 1]);
    assert_eq!(
        p.admin, None,
        "no new decommission before the StatefulSet settles"
    );
    assert!(matches!(
        p.activity,
        Activity::Waiting {
            reason: "StatefulSetNotSettled",
            ..
        }
    ));

    // Settled: the next victim is the largest zone's highest ordinal.
    w.sts_mut(2).observed_generation = 2;
    w.sts_mut(2).status_replicas = 1;
    w.sts_mut(2).ready_replicas = 1;
    w.sts_mut(2).updated_replicas = 1;
    w.nodes.remove("kv-zone-c-1");
    let p = w.plan();
    assert_eq!(
        p.admin,
        Some(AdminCall::Decommission {
            node: "kv-zone-b-1".into(),
            zone: "zone-b".into()
        })
    );
}

#[test]
fn a_left_node_stays_until_the_others_have_heard_it_left() {
    let mut w = World::new(&[2, 2, 2]);
    w.spec.replicas = 3;
    in_flight(&mut w, "kv-zone-c-1", "zone-c");
    leaving(&mut w, "kv-zone-c-1", DecommissionPhase::Done, 10);
    // kv-zone-a-0's gossip view still has the victim LEAVING.
    let all = [
        "kv-zone-a-0",
        "kv-zone-a-1",
        "kv-zone-b-0",
        "kv-zone-b-1",
        "kv-zone-c-0",
        "kv-zone-c-1",
    ];
    w.node_mut("kv-zone-a-0").members = all
        .iter()
        .map(|id| Member {
            node_id: (*id).into(),
            zone: String::new(),
            state: if *id == "kv-zone-c-1" {
                NodeState::Leaving
            } else {
                NodeState::Normal
            },
            alive: true,
        })
        .collect();
    let p = w.plan();
    assert_eq!(replicas(&p), vec![2, 2, 2], "the pod must keep gossiping");
    assert_eq!(p.admin, None);
    assert!(
        matches!(&p.activity, Activity::Waiting { reason: "LeftNotGossiped", message, .. } if message.contains("until kv-zone-a-0 see")),
        "{:?}",
        p.activity
    );
    assert_eq!(p.decommission.as_ref().unwrap().phase, "Done");
    // An unreachable node does not block: it learns from the others.
    w.nodes.insert(
        "kv-zone-a-0".into(),
        NodeObservation::Unreachable("timeout".into()),
    );
    assert_eq!(replicas(&w.plan()), vec![2, 2, 1]);
}

#[test]
fn a_failed_decommission_is_resumed_not_abandoned() {
    let mut w = World::new(&[2, 2, 2]);
    w.spec.replicas = 3;
    in_flight(&mut w, "kv-zone-c-1", "zone-c");
    leaving(&mut w, "kv-zone-c-1", DecommissionPhase::Failed, 4);
    let p = w.plan();
    assert!(matches!(p.admin, Some(AdminCall::Decommission { .. })));
    assert_eq!(replicas(&p), vec![2, 2, 2]);
    assert_eq!(p.decommission.unwrap().phase, "Failed");
}

#[test]
fn an_unreachable_victim_blocks_without_lowering_replicas() {
    let mut w = World::new(&[2, 2, 2]);
    w.spec.replicas = 3;
    in_flight(&mut w, "kv-zone-c-1", "zone-c");
    w.nodes.insert(
        "kv-zone-c-1".into(),
        NodeObservation::Unreachable("connection refused".into()),
    );
    let p = w.plan();
    assert_eq!(p.admin, None);
    assert_eq!(replicas(&p), vec![2, 2, 2]);
    assert!(matches!(
        p.activity,
        Activity::Waiting {
            reason: "DecommissionNodeUnreachable",
            ..
        }
    ));
    assert!(
        p.decommission
            .unwrap()
            .message
            .unwrap()
            .contains("connection refused")
    );
}
