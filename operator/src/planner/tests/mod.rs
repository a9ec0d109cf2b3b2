//! Planner tests: every decision as a pure function of (spec, status, observed state).

use std::collections::BTreeMap;

use super::*;
use crate::crd::{KVClusterSpec, ZoneStatus};
use crate::observe::{
    CleanupReport, DecommissionPhase, DecommissionReport, Member, NodeReport, PodObservation,
    PvcObservation, RepairReport,
};

mod backup;
mod day2;
mod decommission;
mod maintenance;
mod repair;
mod rollout;
mod scale;

pub(crate) const HOUR: i64 = 3_600_000;

pub(crate) struct World {
    pub spec: KVClusterSpec,
    pub status: KVClusterStatus,
    pub zones: Vec<Option<StsObservation>>,
    pub nodes: BTreeMap<String, NodeObservation>,
    pub pods: BTreeMap<String, PodObservation>,
    pub pvcs: BTreeMap<String, PvcObservation>,
    pub volume_expansion: Option<bool>,
    pub config_maps: Vec<String>,
    pub collisions: Vec<SpecError>,
    pub hashes: Vec<String>,
    pub now: i64,
    pub created: i64,
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

pub(crate) fn sts(replicas: i32) -> StsObservation {
    StsObservation {
        replicas,
        operator_replicas: None,
        partition: 0,
        template_hash: Some("h".into()),
        generation: 1,
        observed_generation: 1,
        status_replicas: replicas,
        ready_replicas: replicas,
        updated_replicas: replicas,
        current_revision: Some("r1".into()),
        update_revision: Some("r1".into()),
        deleting: false,
        volume_size: Some("10Gi".into()),
        volume_class: None,
        image: Some("ringkv:test".into()),
    }
}

pub(crate) fn report(pod: &str, state: NodeState) -> NodeObservation {
    NodeObservation::Report(NodeReport {
        backup: Default::default(),
        restore: None,
        node_id: pod.into(),
        state,
        // Filled with the converged ring when planned (`converged_views`).
        members: Vec::new(),
        decommission: None,
        repair: RepairReport::default(),
        cleanup: CleanupReport::default(),
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
            pods: BTreeMap::new(),
            pvcs: BTreeMap::new(),
            volume_expansion: None,
            config_maps: Vec::new(),
            collisions: Vec::new(),
            hashes: vec!["h".into(); 3],
            now: 10 * HOUR,
            created: 0,
        };
        for (z, &r) in per_zone.iter().enumerate() {
            for o in 0..r {
                let pod = w.pod(z, o);
                w.nodes.insert(pod.clone(), report(&pod, NodeState::Normal));
            }
        }
        w
    }

    pub(crate) fn pod(&self, z: usize, o: i32) -> String {
        names::pod("kv", &self.spec.zones[z].name, o)
    }

    /// What the operator would have observed.
    pub(crate) fn observed(&self) -> Observed {
        Observed {
            name: "kv".into(),
            generation: 7,
            created_unix_ms: self.created,
            now_unix_ms: self.now,
            zones: self.zones.clone(),
            pods: self.pods.clone(),
            pvcs: self.pvcs.clone(),
            volume_expansion: self.volume_expansion,
            config_maps: self.config_maps.clone(),
            collisions: self.collisions.clone(),
            nodes: self.converged_views(),
        }
    }

    pub(crate) fn desired(&self) -> Desired {
        Desired {
            template_hashes: self.hashes.clone(),
            image: "ringkv:test".into(),
            config_map: "kv-config-1".into(),
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

    pub(crate) fn plan(&self) -> Plan {
        plan(&self.spec, &self.status, &self.observed(), &self.desired())
    }

    pub(crate) fn set_state(&mut self, pod: &str, state: NodeState) {
        self.nodes.insert(pod.into(), report(pod, state));
    }

    pub(crate) fn node_mut(&mut self, pod: &str) -> &mut NodeReport {
        match self.nodes.get_mut(pod) {
            Some(NodeObservation::Report(r)) => r,
            _ => panic!("no report for {pod}"),
        }
    }

    pub(crate) fn sts_mut(&mut self, z: usize) -> &mut StsObservation {
        self.zones[z].as_mut().unwrap()
    }
}

pub(crate) fn replicas(p: &Plan) -> Vec<i32> {
    p.scales
        .as_ref()
        .unwrap()
        .iter()
        .map(|s| s.as_ref().unwrap().replicas)
        .collect()
}

pub(crate) fn partitions(p: &Plan) -> Vec<i32> {
    p.scales
        .as_ref()
        .unwrap()
        .iter()
        .map(|s| s.as_ref().unwrap().partition)
        .collect()
}

pub(crate) fn reasons(p: &Plan) -> Vec<&'static str> {
    p.events.iter().map(|e| e.reason).collect()
}

pub(crate) fn leaving(w: &mut World, pod: &str, phase: DecommissionPhase, done: u32) {
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

pub(crate) fn in_flight(w: &mut World, pod: &str, zone: &str) {
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

/// `pod` sees only the members listed (plus itself), all normal and alive.
pub(crate) fn sees_only(w: &mut World, pod: &str, others: &[&str]) {
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
