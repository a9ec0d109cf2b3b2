//! The planner: a pure function from (spec, previous status, what was
//! observed) to the next step.
//!
//! One reconcile takes at most one step that changes the ring (add a node,
//! decommission a node, remove a left node, replace a dead node, restart a
//! pod, start a repair or a cleanup), and only when the previous step has
//! visibly finished. Priorities, highest first: invalid spec, bootstrap, a
//! StatefulSet being re-created, volume expansion, an in-flight decommission,
//! a node replacement, a rollout, scaling, cleanup, repair. Everything the planner
//! needs is in [`crate::observe::Observed`]; everything it wants done is in
//! [`Plan`], so every decision is unit-tested without Kubernetes or nodes.
//!
//! - [`scale`]: growing and shrinking zones, drift, never-joined pods;
//! - [`decommission`]: the victim's decommission until its pod may go;
//! - [`replace`]: a node gone for good, removed and re-created empty;
//! - [`cleanup`]: every node drops what it no longer replicates after a join;
//! - [`rollout`]: template changes, one pod at a time, and broken rollouts;
//! - [`repair`]: scheduled anti-entropy, zone by zone;
//! - [`storage`]: volume expansion and the volumes of departed nodes;
//! - [`progress`]: steps, deadlines and the reasons of waits.

pub mod backup;
mod cleanup;
mod decommission;
mod progress;
mod repair;
mod replace;
mod rollout;
mod scale;
mod storage;

use std::time::Duration;

use crate::build::ZoneScale;
use crate::crd::{
    CleanupProgress, DecommissionProgress, KVClusterSpec, KVClusterStatus, Phase, RepairProgress,
    ReplaceProgress, SpecError, StepStatus,
};
use crate::names;
use crate::observe::{NodeObservation, NodeState, Observed, StsObservation};

/// Requeue while something is moving.
pub const REQUEUE_BUSY: Duration = Duration::from_secs(5);
/// Requeue after a step that should complete quickly (a pod removal).
pub const REQUEUE_SOON: Duration = Duration::from_secs(2);
/// Requeue when all is well (node health is not a Kubernetes event, so poll).
pub const REQUEUE_IDLE: Duration = Duration::from_secs(30);

/// What the builders would apply now: computed from the spec and the resolved
/// image, not observed.
#[derive(Debug, Clone, Default)]
pub struct Desired {
    /// Pod template hash per spec zone.
    pub template_hashes: Vec<String>,
    /// The node image (see [`resolve_image`]).
    pub image: String,
    /// Name of the current ConfigMap version.
    pub config_map: String,
}

/// The node image: `spec.image` when set; otherwise what the cluster was
/// created with (`status.image`, or for clusters created before it was
/// recorded, what their StatefulSets run); the operator's default only for a
/// new cluster. An operator upgrade therefore never restarts a cluster.
pub fn resolve_image(
    spec: &KVClusterSpec,
    prev: &KVClusterStatus,
    zones: &[Option<StsObservation>],
    default: &str,
) -> String {
    spec.image
        .clone()
        .or_else(|| prev.image.clone())
        .or_else(|| zones.iter().flatten().find_map(|s| s.image.clone()))
        .unwrap_or_else(|| default.to_string())
}

/// An Admin call to make this reconcile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminCall {
    Decommission {
        node: String,
        zone: String,
    },
    Repair {
        node: String,
        zone: String,
    },
    Cleanup {
        node: String,
    },
    /// `via` runs `RemoveNode` for the dead `node`.
    RemoveNode {
        via: String,
        node: String,
    },
}

/// A Kubernetes write besides applying the desired objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KubeAction {
    /// Raise a volume's storage request (volume expansion).
    ResizeVolume {
        pvc: String,
        size: String,
    },
    /// Delete a StatefulSet but leave its pods running (`--cascade=orphan`):
    /// the way to change its immutable volume claim template.
    OrphanStatefulSet {
        name: String,
    },
    /// Delete a pod; its StatefulSet re-creates it.
    DeletePod {
        name: String,
    },
    /// Mark the volume of a decommissioned node, so it is never reused as is.
    MarkVolumeDecommissioned {
        pvc: String,
    },
    DeleteVolume {
        pvc: String,
    },
    /// Delete a ConfigMap version no StatefulSet revision uses.
    DeleteConfigMap {
        name: String,
    },
}

/// What the cluster is doing, for conditions and the phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Activity {
    Invalid(String),
    Creating,
    ScalingUp {
        node: String,
    },
    Decommissioning {
        node: String,
    },
    RemovingNode {
        node: String,
    },
    RollingOut {
        zone: String,
        message: String,
    },
    ExpandingVolumes {
        message: String,
    },
    /// Waiting before the next step of `during`.
    Waiting {
        during: Phase,
        reason: &'static str,
        message: String,
    },
    Repairing {
        zone: String,
        node: String,
    },
    /// A node drops the data it no longer replicates.
    CleaningUp {
        node: String,
        message: String,
    },
    /// A node gone for good is removed from the ring and re-created.
    ReplacingNode {
        node: String,
        message: String,
    },
    Stable,
}

/// Something the operator refuses or cannot do, surfaced as a condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocker {
    pub reason: &'static str,
    pub message: String,
}

/// The object an event is also about (Events are keyed on it, so steps on
/// different pods stay separate events instead of collapsing into one series).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Related {
    Pod(String),
    StatefulSet(String),
    PersistentVolumeClaim(String),
}

/// An Event to publish on the KVCluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedEvent {
    pub warning: bool,
    pub reason: &'static str,
    pub message: String,
    pub related: Option<Related>,
}

impl PlannedEvent {
    pub fn normal(reason: &'static str, message: String) -> Self {
        Self {
            warning: false,
            reason,
            message,
            related: None,
        }
    }
    pub fn warning(reason: &'static str, message: String) -> Self {
        Self {
            warning: true,
            reason,
            message,
            related: None,
        }
    }
    pub fn pod(mut self, name: &str) -> Self {
        self.related = Some(Related::Pod(name.to_string()));
        self
    }
    pub fn statefulset(mut self, name: &str) -> Self {
        self.related = Some(Related::StatefulSet(name.to_string()));
        self
    }
    pub fn pvc(mut self, name: &str) -> Self {
        self.related = Some(Related::PersistentVolumeClaim(name.to_string()));
        self
    }
}

/// The planner's decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Scale and partition per spec zone; `None` for a zone means "do not
    /// apply its StatefulSet". `scales` itself is `None` when nothing may be
    /// applied at all (invalid spec).
    pub scales: Option<Vec<Option<ZoneScale>>>,
    pub admin: Option<AdminCall>,
    /// Writes besides the applies, in order.
    pub kube: Vec<KubeAction>,
    pub activity: Activity,
    pub blocker: Option<Blocker>,
    /// Something that needs a human (a step past its deadline, storage that
    /// cannot grow): the `Degraded` condition.
    pub problem: Option<Blocker>,
    pub events: Vec<PlannedEvent>,
    /// New `status.decommission`.
    pub decommission: Option<DecommissionProgress>,
    /// New `status.repair`.
    pub repair: Option<RepairProgress>,
    /// New `status.cleanup`.
    pub cleanup: Option<CleanupProgress>,
    /// New `status.replace`.
    pub replace: Option<ReplaceProgress>,
    /// New `status.step`.
    pub step: Option<StepStatus>,
    /// Zone whose every node finished anti-entropy now.
    pub repaired_zone: Option<String>,
    pub requeue: Duration,
}

impl Plan {
    fn new(scales: Option<Vec<Option<ZoneScale>>>, activity: Activity) -> Self {
        Self {
            scales,
            admin: None,
            kube: Vec::new(),
            activity,
            blocker: None,
            problem: None,
            events: Vec::new(),
            decommission: None,
            repair: None,
            cleanup: None,
            replace: None,
            step: None,
            repaired_zone: None,
            requeue: REQUEUE_BUSY,
        }
    }
}

/// Decides the next step.
pub fn plan(
    spec: &KVClusterSpec,
    prev: &KVClusterStatus,
    obs: &Observed,
    desired: &Desired,
) -> Plan {
    let exists = obs.zones.iter().any(Option::is_some) || !obs.pods.is_empty();

    // Validate; below-N is a refusal rather than an invalid spec once the cluster runs.
    let mut errors = match spec.validate(&obs.name) {
        Ok(()) => Vec::new(),
        Err(e) => e,
    };
    if let Err(e) = spec.validate_against(prev) {
        errors.extend(e);
    }
    if let Some(s) = obs.zones.iter().flatten().find(|s| s.volume_size.is_some()) {
        errors.extend(spec.validate_storage(
            s.volume_size.as_deref().unwrap_or_default(),
            s.volume_class.as_deref(),
        ));
    }
    errors.extend(obs.collisions.iter().cloned());
    let below_n = errors
        .iter()
        .any(|e| matches!(e, SpecError::NAboveNodes { .. }));
    if exists {
        errors.retain(|e| !matches!(e, SpecError::NAboveNodes { .. }));
    }
    if !errors.is_empty() {
        let msg = errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        let mut p = Plan::new(None, Activity::Invalid(msg.clone()));
        p.decommission = prev.decommission.clone();
        p.repair = prev.repair.clone();
        p.cleanup = prev.cleanup.clone();
        p.replace = prev.replace.clone();
        p.step = prev.step.clone();
        p.requeue = REQUEUE_IDLE;
        if !progress::condition_is(prev, "Degraded", "InvalidSpec", Some(&msg)) {
            p.events.push(PlannedEvent::warning("InvalidSpec", msg));
        }
        return p;
    }

    let n = spec.replication.n;
    let total = if below_n { n } else { spec.replicas };
    let targets = crate::crd::zone_targets(total, spec.zones.len());
    let blocker = below_n.then(|| Blocker {
        reason: "ScaleDownRefused",
        message: format!(
            "spec.replicas={} is below replication.n={n}: refusing to run fewer than {n} nodes",
            spec.replicas
        ),
    });

    if !exists {
        let scales = targets
            .iter()
            .map(|&r| Some(ZoneScale::new(r, 0)))
            .collect();
        let mut p = Plan::new(Some(scales), Activity::Creating);
        p.events.push(PlannedEvent::normal(
            "Creating",
            format!(
                "creating {total} nodes in {} zones with image {}",
                spec.zones.len(),
                desired.image
            ),
        ));
        p.blocker = blocker;
        return p;
    }

    let mut planner = Planner::new(spec, prev, obs, desired, targets);
    if let Some(b) = &blocker
        && !progress::condition_is(prev, "Progressing", "ScaleDownRefused", None)
    {
        planner
            .events
            .push(PlannedEvent::warning("ScaleDownRefused", b.message.clone()));
    }
    let mut p = planner.step();
    if p.blocker.is_none() {
        p.blocker = blocker;
    }
    progress::track(spec, prev, obs, &mut p);
    p
}

/// Per-spec-zone view the planner works from.
#[derive(Debug, Clone)]
struct ZoneView {
    live: Option<StsObservation>,
    /// Nodes the zone runs as far as the operator is concerned (see `scale`).
    current: i32,
    /// The pod template changed this reconcile (held at partition = replicas).
    changed: bool,
}

pub(crate) struct Planner<'a> {
    spec: &'a KVClusterSpec,
    prev: &'a KVClusterStatus,
    obs: &'a Observed,
    desired: &'a Desired,
    targets: Vec<i32>,
    zones: Vec<ZoneView>,
    /// Planned scale per zone (starts as observed).
    scales: Vec<Option<ZoneScale>>,
    events: Vec<PlannedEvent>,
    kube: Vec<KubeAction>,
    problem: Option<Blocker>,
    /// A step started this reconcile (replaces `status.step`).
    new_step: Option<StepStatus>,
    /// `status.cleanup` and `status.replace` as planned so far.
    cleanup: Option<CleanupProgress>,
    replace: Option<ReplaceProgress>,
}

impl<'a> Planner<'a> {
    fn new(
        spec: &'a KVClusterSpec,
        prev: &'a KVClusterStatus,
        obs: &'a Observed,
        desired: &'a Desired,
        targets: Vec<i32>,
    ) -> Self {
        let mut p = Self {
            spec,
            prev,
            obs,
            desired,
            targets,
            zones: Vec::new(),
            scales: Vec::new(),
            events: Vec::new(),
            kube: Vec::new(),
            problem: None,
            new_step: None,
            cleanup: prev.cleanup.clone(),
            replace: prev.replace.clone(),
        };
        for i in 0..spec.zones.len() {
            let (view, scale) = p.zone_view(i);
            p.zones.push(view);
            p.scales.push(scale);
        }
        p
    }

    fn name(&self) -> &str {
        &self.obs.name
    }

    fn zone_name(&self, i: usize) -> &str {
        &self.spec.zones[i].name
    }

    fn sts_name(&self, i: usize) -> String {
        names::statefulset(self.name(), self.zone_name(i))
    }

    fn pod(&self, zone: usize, ordinal: i32) -> String {
        names::pod(self.name(), self.zone_name(zone), ordinal)
    }

    fn current(&self, zone: usize) -> i32 {
        self.zones[zone].current
    }

    fn live(&self, zone: usize) -> Option<&StsObservation> {
        self.zones[zone].live.as_ref()
    }

    fn now(&self) -> i64 {
        self.obs.now_unix_ms
    }

    /// Pods that should be running and in the ring.
    fn expected_pods(&self) -> Vec<(usize, String)> {
        (0..self.zones.len())
            .flat_map(|z| (0..self.current(z)).map(move |o| (z, o)))
            .map(|(z, o)| (z, self.pod(z, o)))
            .collect()
    }

    fn finish(&mut self, activity: Activity, requeue: Duration) -> Plan {
        let mut p = Plan::new(Some(std::mem::take(&mut self.scales)), activity);
        p.events = std::mem::take(&mut self.events);
        p.kube = std::mem::take(&mut self.kube);
        p.problem = self.problem.take();
        p.requeue = requeue;
        p.decommission = self.prev.decommission.clone();
        p.repair = self.prev.repair.clone();
        p.cleanup = self.cleanup.clone();
        p.replace = self.replace.clone();
        p.step = self.new_step.take().or_else(|| self.prev.step.clone());
        p
    }

    /// Records that a step starts now (its progress deadline counts from here).
    fn start_step(&mut self, action: &str, node: &str) {
        self.new_step = Some(StepStatus {
            action: action.into(),
            node: node.into(),
            started_at: crate::time::from_unix_ms(self.now()),
        });
    }

    fn wait(&mut self, during: Phase, (reason, message): (&'static str, String)) -> Plan {
        self.finish(
            Activity::Waiting {
                during,
                reason,
                message,
            },
            REQUEUE_BUSY,
        )
    }

    fn step(&mut self) -> Plan {
        if let Some(p) = self.recreating() {
            return p;
        }
        self.volumes();
        if let Some(p) = self.expand() {
            return p;
        }
        // A decommission victim gone for good can only be replaced (the
        // decommission then goes on with the new node); any other
        // replacement waits for the decommission in flight.
        let victim = self.prev.decommission.as_ref().map(|d| d.node.clone());
        if victim.is_some()
            && self.replacing_node() == victim
            && let Some(p) = self.replace()
        {
            return p;
        }
        if let Some(p) = self.continue_decommission() {
            return p;
        }
        if let Some(p) = self.replace() {
            return p;
        }
        if let Some(p) = self.rollout() {
            return p;
        }
        if self.prev.phase == Phase::Upgrading {
            // The rollout is only complete once the last restarted node is back.
            if let Some(why) = self.unhealthy() {
                return self.wait(Phase::Upgrading, why);
            }
            self.events.push(PlannedEvent::normal(
                "RolloutComplete",
                format!(
                    "every node runs the new pod template (image {})",
                    self.desired.image
                ),
            ));
        }
        if let Some(p) = self.scale() {
            return p;
        }
        if let Some(p) = self.cleanup() {
            return p;
        }
        self.collect_config_maps();
        self.repair()
    }

    /// Nodes that are not (yet) fit to take part in a ring change, or `None`
    /// when all are: the reason (`NodesNotNormal`, `PodPending`, `PodFailing`,
    /// `StatefulSetNotSettled`) and a message naming at most three of them.
    fn unhealthy(&self) -> Option<(&'static str, String)> {
        for (i, z) in self.zones.iter().enumerate() {
            if let Some(s) = &z.live
                && !s.settled()
            {
                return Some((
                    "StatefulSetNotSettled",
                    format!(
                        "StatefulSet of zone {} has {}/{} pods",
                        self.zone_name(i),
                        s.status_replicas,
                        s.replicas
                    ),
                ));
            }
        }
        let mut bad = Vec::new();
        let mut reason = "NodesNotNormal";
        let expected = self.expected_pods();
        for (_, pod) in &expected {
            // What the pod itself says first: a scheduling or image problem
            // is the real reason its node does not answer.
            if let Some(p) = self.obs.pods.get(pod) {
                if let Some(msg) = &p.unschedulable {
                    reason = "PodPending";
                    bad.push(format!("{pod} is Pending: {msg}"));
                    continue;
                }
                if let Some((why, msg)) = &p.waiting {
                    if reason != "PodPending" {
                        reason = "PodFailing";
                    }
                    bad.push(format!("{pod}: {why} {msg}").trim_end().to_string());
                    continue;
                }
            }
            match self.obs.nodes.get(pod) {
                Some(NodeObservation::Report(r)) if r.state == NodeState::Normal => {
                    // Each node must also see every other one as a live normal
                    // member: nodes started at once may still be separate rings,
                    // and a ring change on a node whose view lags streams ranges
                    // to the wrong owners.
                    let unseen: Vec<&str> = expected
                        .iter()
                        .map(|(_, o)| o.as_str())
                        .filter(|o| {
                            o != pod
                                && !r.members.iter().any(|m| {
                                    m.node_id == *o && m.state == NodeState::Normal && m.alive
                                })
                        })
                        .collect();
                    if !unseen.is_empty() {
                        bad.push(format!(
                            "{pod} does not see {} as live normal members yet",
                            unseen.join(", ")
                        ));
                    }
                }
                Some(NodeObservation::Report(r)) => {
                    bad.push(format!("{pod} is {}", r.state.as_str()))
                }
                Some(NodeObservation::Unreachable(e)) => {
                    bad.push(format!("{pod} is unreachable ({e})"))
                }
                None => bad.push(format!("{pod} was not asked")),
            }
        }
        for (i, z) in self.zones.iter().enumerate() {
            if let Some(s) = &z.live
                && s.ready_replicas < s.replicas
            {
                bad.push(format!(
                    "zone {}: {}/{} pods ready",
                    self.zone_name(i),
                    s.ready_replicas,
                    s.replicas
                ));
            }
        }
        if bad.is_empty() {
            return None;
        }
        let more = bad.len().saturating_sub(3);
        bad.truncate(3);
        let mut msg = bad.join(", ");
        if more > 0 {
            msg.push_str(&format!(" and {more} more"));
        }
        Some((reason, msg))
    }

    /// No node ever knew `pod`: it cannot start (unschedulable, image not
    /// pullable, no container ever ran), or it does not answer and every other
    /// node answered without listing it as a member. Such a pod can go
    /// without a decommission.
    fn never_joined(&self, pod: &str) -> bool {
        if self.obs.pods.get(pod).is_some_and(|p| p.cannot_start()) {
            return true;
        }
        if self
            .obs
            .nodes
            .get(pod)
            .is_some_and(|n| n.report().is_some())
        {
            return false;
        }
        let others: Vec<_> = self
            .expected_pods()
            .into_iter()
            .filter(|(_, p)| p != pod)
            .collect();
        !others.is_empty()
            && others.iter().all(|(_, o)| {
                self.obs
                    .nodes
                    .get(o)
                    .and_then(NodeObservation::report)
                    .is_some_and(|r| !r.members.iter().any(|m| m.node_id == pod))
            })
    }
}

fn sum(v: &[i32]) -> i32 {
    v.iter().sum()
}

#[cfg(test)]
pub(crate) mod tests;
