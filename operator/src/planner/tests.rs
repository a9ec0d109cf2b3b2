//! Planner tests: every decision as a pure function of (spec, status, observed state).

use std::collections::BTreeMap;

use super::*;
use crate::crd::{KVClusterSpec, ZoneStatus};
use crate::ring::{DecommissionReport, Member, NodeReport, RepairReport};

const HOUR: i64 = 3_600_000;

pub(crate) struct World {
    pub spec: KVClusterSpec,
    pub status: KVClusterStatus,
    pub zones: Vec<Option<StsObservation>>,
    pub nodes: BTreeMap<String, NodeObservation>,
    pub hashes: Vec<String>,
    pub now: i64,
    pub created: i64,
    pub deleting: bool,
}

pub(crate) fn spec(replicas: i32) -> KVClusterSpec {
    serde_json::from_value(serde_json::json!({
        "replicas": replicas,
        "zones": [
            {"name": "zone-a", "nodeLabelValue": "zone-a"},
            {"name": "zone-b", "nodeLabelValue": "zone-b"},
            {"name": "zone-c", "nodeLabelValue": "zone-c"}
        ],
        "repair": {"interval": "off"}
    }))
    .unwrap()
}

fn sts(replicas: i32) -> StsObservation {
    StsObservation {
        replicas,
        partition: 0,
        template_hash: Some("h".into()),
        generation: 1,
        observed_generation: 1,
        status_replicas: replicas,
        ready_replicas: replicas,
        updated_replicas: replicas,
        current_revision: Some("r1".into()),
        update_revision: Some("r1".into()),
    }
}

fn report(pod: &str, state: NodeState) -> NodeObservation {
    NodeObservation::Report(NodeReport {
        node_id: pod.into(),
        state,
        // Filled with the converged ring when planned (`converged_views`).
        members: Vec::new(),
        decommission: None,
        repair: RepairReport::default(),
    })
}

impl World {
    /// A settled cluster with `per_zone` nodes in zones a, b, c, all normal.
    pub(crate) fn new(per_zone: &[i32]) -> Self {
        let total = per_zone.iter().sum();
        let mut w = Self {
            spec: spec(total),
            status: KVClusterStatus {
                phase: Phase::Running,
                vnodes: Some(128),
                ..Default::default()
            },
            zones: per_zone.iter().map(|&r| Some(sts(r))).collect(),
            nodes: BTreeMap::new(),
            hashes: vec!["h".into(); 3],
            now: 10 * HOUR,
            created: 0,
            deleting: false,
        };
        for (z, &r) in per_zone.iter().enumerate() {
            for o in 0..r {
                let pod = w.pod(z, o);
                w.nodes.insert(pod.clone(), report(&pod, NodeState::Normal));
            }
        }
        w
    }

    fn pod(&self, z: usize, o: i32) -> String {
        names::pod("kv", &self.spec.zones[z].name, o)
    }

    pub(crate) fn input_for_tests(&self) -> PlanInput<'_> {
        PlanInput {
            name: "kv",
            spec: &self.spec,
            status: &self.status,
            deleting: self.deleting,
            created_unix_ms: self.created,
            now_unix_ms: self.now,
            desired_hashes: self.hashes.clone(),
            zones: self.zones.clone(),
            nodes: self.converged_views(),
        }
    }

    /// The nodes as observed, where a report without members (what `report`
    /// builds) is given the converged ring: every reporting node as it
    /// reports itself. Tests of lagging views set `members` explicitly.
    fn converged_views(&self) -> BTreeMap<String, NodeObservation> {
        let ring: Vec<Member> = self
            .nodes
            .values()
            .filter_map(|n| match n {
                NodeObservation::Report(r) => Some(Member {
                    node_id: r.node_id.clone(),
                    zone: String::new(),
                    state: r.state,
                    alive: true,
                }),
                NodeObservation::Unreachable(_) => None,
            })
            .collect();
        let mut nodes = self.nodes.clone();
        for n in nodes.values_mut() {
            if let NodeObservation::Report(r) = n
                && r.members.is_empty()
            {
                r.members = ring.clone();
            }
        }
        nodes
    }

    fn plan(&self) -> Plan {
        plan(&self.input_for_tests())
    }

    fn set_state(&mut self, pod: &str, state: NodeState) {
        self.nodes.insert(pod.into(), report(pod, state));
    }

    fn node_mut(&mut self, pod: &str) -> &mut NodeReport {
        match self.nodes.get_mut(pod) {
            Some(NodeObservation::Report(r)) => r,
            _ => panic!("no report for {pod}"),
        }
    }

    fn sts_mut(&mut self, z: usize) -> &mut StsObservation {
        self.zones[z].as_mut().unwrap()
    }
}

fn replicas(p: &Plan) -> Vec<i32> {
    p.scales
        .as_ref()
        .unwrap()
        .iter()
        .map(|s| s.unwrap().replicas)
        .collect()
}

fn partitions(p: &Plan) -> Vec<i32> {
    p.scales
        .as_ref()
        .unwrap()
        .iter()
        .map(|s| s.unwrap().partition)
        .collect()
}

fn reasons(p: &Plan) -> Vec<&'static str> {
    p.events.iter().map(|e| e.reason).collect()
}

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

fn leaving(w: &mut World, pod: &str, phase: DecommissionPhase, done: u32) {
    let state = match phase {
        DecommissionPhase::Done => NodeState::Left,
        _ => NodeState::Leaving,
    };
    w.set_state(pod, state);
    w.node_mut(pod).decommission = Some(DecommissionReport {
        phase,
        ranges_total: 10,
        ranges_done: done,
        keys_streamed: 1234,
        error: if phase == DecommissionPhase::Failed {
            "peer timeout".into()
        } else {
            String::new()
        },
    });
}

fn in_flight(w: &mut World, pod: &str, zone: &str) {
    w.status.decommission = Some(DecommissionProgress {
        node: pod.into(),
        zone: zone.into(),
        phase: "Streaming".into(),
        ranges_done: 0,
        ranges_total: 0,
        keys_streamed: 0,
        started_at: None,
        message: None,
    });
}

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

/// `pod` sees only the members listed (plus itself), all normal and alive.
fn sees_only(w: &mut World, pod: &str, others: &[&str]) {
    let r = w.node_mut(pod);
    r.members = std::iter::once(pod)
        .chain(others.iter().copied())
        .map(|id| Member {
            node_id: id.into(),
            zone: String::new(),
            state: NodeState::Normal,
            alive: true,
        })
        .collect();
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
fn deletion_stops_every_node_then_releases_the_finalizer() {
    let mut w = World::new(&[2, 2, 2]);
    w.deleting = true;
    let p = w.plan();
    assert_eq!(replicas(&p), vec![0, 0, 0]);
    assert!(!p.remove_finalizer);
    assert_eq!(p.activity, Activity::Terminating { remaining: 6 });
    assert_eq!(reasons(&p), vec!["Deleting"]);
    for z in 0..3 {
        *w.sts_mut(z) = StsObservation {
            replicas: 0,
            status_replicas: 0,
            ..sts(0)
        };
    }
    w.status.phase = Phase::Terminating;
    let p = w.plan();
    assert!(p.remove_finalizer);
    assert_eq!(reasons(&p), vec!["Deleted"]);
    // A cluster whose StatefulSets never existed is released at once.
    let mut w = World::new(&[0, 0, 0]);
    w.zones = vec![None, None, None];
    w.deleting = true;
    let p = w.plan();
    assert!(p.remove_finalizer);
    assert_eq!(
        p.scales.unwrap(),
        vec![None, None, None],
        "nothing is created while deleting"
    );
}

#[test]
fn deletion_wins_over_an_invalid_spec() {
    let mut w = World::new(&[1, 1, 1]);
    w.spec.replication.w = 9;
    w.deleting = true;
    assert_eq!(replicas(&w.plan()), vec![0, 0, 0]);
}

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

#[test]
fn repair_runs_zone_by_zone_one_node_at_a_time() {
    let mut w = World::new(&[2, 1, 1]);
    w.spec.repair.interval = "1h".into();
    w.created = 0;
    w.now = 2 * HOUR;
    // The node's clock is far behind the operator's: completion is judged by the
    // node's own timestamps only.
    w.node_mut("kv-zone-a-0").repair = RepairReport {
        running: false,
        repair_id: 4,
        last_completed_unix_ms: 100,
        last_error: String::new(),
    };
    let p = w.plan();
    let call_a0 = AdminCall::Repair {
        node: "kv-zone-a-0".into(),
        zone: "zone-a".into(),
    };
    assert_eq!(p.admin, Some(call_a0.clone()));
    assert_eq!(reasons(&p), vec!["RepairStarted"]);
    let mut progress = p.repair.unwrap();
    assert_eq!(progress.node_started_unix_ms, 2 * HOUR);
    assert_eq!(progress.baseline_completed_unix_ms, Some(100));
    progress.repair_id = 5;
    w.status.repair = Some(progress);

    // Running: wait.
    w.now += 60_000;
    w.node_mut("kv-zone-a-0").repair = RepairReport {
        running: true,
        repair_id: 5,
        last_completed_unix_ms: 100,
        last_error: String::new(),
    };
    let p = w.plan();
    assert_eq!(p.admin, None);
    assert!(matches!(p.activity, Activity::Repairing { .. }));

    // Stopped without completing (failed): ask again, same baseline.
    w.node_mut("kv-zone-a-0").repair = RepairReport {
        running: false,
        repair_id: 5,
        last_completed_unix_ms: 100,
        last_error: String::new(),
    };
    let p = w.plan();
    assert_eq!(p.admin, Some(call_a0));
    assert_eq!(
        p.repair.as_ref().unwrap().baseline_completed_unix_ms,
        Some(100)
    );
    assert_eq!(p.repaired_zone, None);

    // Completed (its completion time moved): the next node of the zone.
    w.node_mut("kv-zone-a-0").repair = RepairReport {
        running: false,
        repair_id: 6,
        last_completed_unix_ms: 200,
        last_error: String::new(),
    };
    w.node_mut("kv-zone-a-1").repair = RepairReport {
        running: false,
        repair_id: 1,
        last_completed_unix_ms: 50,
        last_error: String::new(),
    };
    let p = w.plan();
    assert_eq!(
        p.admin,
        Some(AdminCall::Repair {
            node: "kv-zone-a-1".into(),
            zone: "zone-a".into()
        })
    );
    assert_eq!(reasons(&p), vec!["RepairingNode"]);
    let progress = p.repair.unwrap();
    assert_eq!(progress.nodes_done, vec!["kv-zone-a-0".to_string()]);
    assert_eq!(progress.baseline_completed_unix_ms, Some(50));
    w.status.repair = Some(progress);

    // Last node of the zone done.
    w.node_mut("kv-zone-a-1").repair = RepairReport {
        running: false,
        repair_id: 2,
        last_completed_unix_ms: 51,
        last_error: String::new(),
    };
    let p = w.plan();
    assert_eq!(p.repaired_zone.as_deref(), Some("zone-a"));
    assert_eq!(p.repair, None);
    assert_eq!(reasons(&p), vec!["ZoneRepaired"]);
}

#[test]
fn a_failed_repair_run_backs_off_and_says_why() {
    let mut w = World::new(&[1, 1, 1]);
    w.spec.repair.interval = "1h".into();
    w.created = 0;
    w.now = 2 * HOUR;
    let p = w.plan();
    let call = AdminCall::Repair {
        node: "kv-zone-a-0".into(),
        zone: "zone-a".into(),
    };
    assert_eq!(p.admin, Some(call.clone()));
    let mut progress = p.repair.unwrap();
    progress.repair_id = 5;
    w.status.repair = Some(progress);
    let failed = |w: &mut World, id: u64| {
        w.node_mut("kv-zone-a-0").repair = RepairReport {
            running: false,
            repair_id: id,
            last_completed_unix_ms: 0,
            last_error: "64 range(s) not repaired; first: kv-zone-c-1: down".into(),
        };
    };
    // Our run ended with an error: no new run now, a warning, and a retry time.
    failed(&mut w, 5);
    let p = w.plan();
    assert_eq!(p.admin, None, "no full repair again on every reconcile");
    assert_eq!(reasons(&p), vec!["RepairFailed"]);
    assert_eq!(p.requeue, Duration::from_secs(30));
    let progress = p.repair.clone().unwrap();
    assert_eq!(progress.failures, 1);
    assert_eq!(progress.retry_after_unix_ms, Some(w.now + 30_000));
    assert!(
        progress
            .message
            .as_deref()
            .unwrap()
            .contains("kv-zone-c-1: down")
    );
    w.status.repair = Some(progress);
    // Still the same failed report: waits, without repeating the event.
    w.now += 29_000;
    let p = w.plan();
    assert_eq!(p.admin, None);
    assert!(p.events.is_empty());
    // Backoff over: asked again.
    w.now += 2_000;
    let p = w.plan();
    assert_eq!(p.admin, Some(call));
    let mut progress = p.repair.unwrap();
    assert_eq!(progress.retry_after_unix_ms, None);
    progress.repair_id = 6;
    w.status.repair = Some(progress);
    // Fails again: the wait doubles.
    failed(&mut w, 6);
    let p = w.plan();
    assert_eq!(p.repair.as_ref().unwrap().failures, 2);
    assert_eq!(p.requeue, Duration::from_secs(60));
    assert_eq!(repair_backoff(9), Duration::from_secs(600), "capped");
}

#[test]
fn a_repair_request_never_received_is_sent_again() {
    // Recorded in status, but the operator died before asking (no baseline) or
    // the node restarted: the node is idle and not newer than the baseline.
    let mut w = World::new(&[1, 1, 1]);
    w.spec.repair.interval = "1h".into();
    w.node_mut("kv-zone-b-0").repair = RepairReport {
        running: false,
        repair_id: 0,
        last_completed_unix_ms: 7,
        last_error: String::new(),
    };
    for baseline in [None, Some(7)] {
        w.status.repair = Some(RepairProgress {
            zone: "zone-b".into(),
            node: "kv-zone-b-0".into(),
            repair_id: 0,
            node_started_unix_ms: w.now - 1000,
            baseline_completed_unix_ms: baseline,
            nodes_done: vec![],
            started_at: None,
            failures: 0,
            retry_after_unix_ms: None,
            message: None,
        });
        let p = w.plan();
        assert_eq!(
            p.admin,
            Some(AdminCall::Repair {
                node: "kv-zone-b-0".into(),
                zone: "zone-b".into()
            })
        );
        assert_eq!(p.repair.unwrap().baseline_completed_unix_ms, Some(7));
    }
    // An unreachable node is not asked, and not counted as repaired.
    w.nodes.insert(
        "kv-zone-b-0".into(),
        NodeObservation::Unreachable("down".into()),
    );
    let p = w.plan();
    assert_eq!(p.admin, None);
    assert_eq!(p.repaired_zone, None);
}

#[test]
fn repair_picks_the_most_overdue_zone_and_respects_the_interval() {
    let mut w = World::new(&[1, 1, 1]);
    w.spec.repair.interval = "1h".into();
    w.now = 10 * HOUR;
    for (name, at) in [
        ("zone-a", 9 * HOUR + 1),
        ("zone-b", 8 * HOUR),
        ("zone-c", 9 * HOUR),
    ] {
        w.status.zones.push(ZoneStatus {
            name: name.into(),
            last_repair_time: Some(crate::time::from_unix_ms(at)),
            ..Default::default()
        });
    }
    let p = w.plan();
    assert_eq!(
        p.admin,
        Some(AdminCall::Repair {
            node: "kv-zone-b-0".into(),
            zone: "zone-b".into()
        })
    );
    // Nothing due: idle, but wake up in time.
    w.status.zones[1].last_repair_time = Some(crate::time::from_unix_ms(10 * HOUR));
    w.status.zones[2].last_repair_time = Some(crate::time::from_unix_ms(10 * HOUR - 1000));
    w.status.zones[0].last_repair_time = Some(crate::time::from_unix_ms(10 * HOUR - HOUR + 5_000));
    let p = w.plan();
    assert_eq!(p.admin, None);
    assert_eq!(p.activity, Activity::Stable);
    assert_eq!(p.requeue, Duration::from_secs(5));
}

#[test]
fn repair_off_never_calls_repair_and_waits_for_health() {
    let w = World::new(&[1, 1, 1]);
    let p = w.plan();
    assert_eq!(p.admin, None);
    assert_eq!(p.requeue, REQUEUE_IDLE);
    let mut w = World::new(&[1, 1, 1]);
    w.spec.repair.interval = "1h".into();
    w.now = 5 * HOUR;
    w.set_state("kv-zone-a-0", NodeState::Joining);
    w.status.phase = Phase::Running;
    assert_eq!(w.plan().admin, None, "no repair on an unhealthy ring");
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
