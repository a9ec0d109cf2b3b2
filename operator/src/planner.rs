//! The planner: a pure function from (spec, previous status, observed state)
//! to the next step.
//!
//! One reconcile takes at most one step that changes the ring (add a node,
//! decommission a node, remove a left node, restart a pod, start a repair), and
//! only when the previous step has visibly finished. Priorities, highest first:
//! deletion, invalid spec, bootstrap, an in-flight decommission, a rollout,
//! scaling, repair. Everything the planner needs about the world is in
//! [`PlanInput`]; everything it wants done is in [`Plan`], so every decision is
//! unit-tested without Kubernetes or nodes.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;

use crate::builders::{ANNOTATION_TEMPLATE_HASH, ZoneScale};
use crate::crd::{
    DecommissionProgress, KVClusterSpec, KVClusterStatus, Phase, RepairProgress, SpecError,
};
use crate::names;
use crate::ring::{DecommissionPhase, NodeObservation, NodeState};

/// Requeue while something is moving.
pub const REQUEUE_BUSY: Duration = Duration::from_secs(5);
/// Requeue after a step that should complete quickly (a pod removal).
pub const REQUEUE_SOON: Duration = Duration::from_secs(2);
/// Requeue when all is well (node health is not a Kubernetes event, so poll).
pub const REQUEUE_IDLE: Duration = Duration::from_secs(30);

/// The part of a StatefulSet the planner reads.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StsObservation {
    /// `spec.replicas`.
    pub replicas: i32,
    /// `spec.updateStrategy.rollingUpdate.partition`.
    pub partition: i32,
    /// Template hash the operator last applied.
    pub template_hash: Option<String>,
    pub generation: i64,
    pub observed_generation: i64,
    pub status_replicas: i32,
    pub ready_replicas: i32,
    pub updated_replicas: i32,
    pub current_revision: Option<String>,
    pub update_revision: Option<String>,
}

impl StsObservation {
    pub fn from_statefulset(s: &StatefulSet) -> Self {
        let st = s.status.clone().unwrap_or_default();
        Self {
            replicas: s.spec.replicas.unwrap_or(1),
            partition: s
                .spec
                .update_strategy
                .as_ref()
                .and_then(|u| u.rolling_update.as_ref())
                .and_then(|r| r.partition)
                .unwrap_or(0),
            template_hash: s
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(ANNOTATION_TEMPLATE_HASH).cloned()),
            generation: s.metadata.generation.unwrap_or(0),
            observed_generation: st.observed_generation.unwrap_or(0),
            status_replicas: st.replicas,
            ready_replicas: st.ready_replicas.unwrap_or(0),
            updated_replicas: st.updated_replicas.unwrap_or(0),
            current_revision: st.current_revision,
            update_revision: st.update_revision,
        }
    }

    /// The StatefulSet controller has acted on the latest spec and the pod count matches.
    pub fn settled(&self) -> bool {
        self.observed_generation >= self.generation && self.status_replicas == self.replicas
    }

    /// Some pods still run an older template.
    pub fn rollout_pending(&self) -> bool {
        self.replicas > 0
            && (self.updated_replicas < self.replicas
                || self.current_revision != self.update_revision)
    }
}

/// Everything the planner knows.
#[derive(Debug, Clone)]
pub struct PlanInput<'a> {
    pub name: &'a str,
    pub spec: &'a KVClusterSpec,
    /// Status as last written (survives operator restarts).
    pub status: &'a KVClusterStatus,
    pub deleting: bool,
    pub created_unix_ms: i64,
    pub now_unix_ms: i64,
    /// Desired template hash per spec zone.
    pub desired_hashes: Vec<String>,
    /// Live StatefulSet per spec zone.
    pub zones: Vec<Option<StsObservation>>,
    /// Answers to `Admin.Status`, by pod name.
    pub nodes: BTreeMap<String, NodeObservation>,
}

/// An Admin call to make this reconcile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminCall {
    Decommission { node: String, zone: String },
    Repair { node: String, zone: String },
}

/// What the cluster is doing, for conditions and the phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Activity {
    Invalid(String),
    Terminating {
        remaining: i32,
    },
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
    /// Waiting for nodes before the next step of `during`.
    Waiting {
        during: Phase,
        reason: &'static str,
        message: String,
    },
    Repairing {
        zone: String,
        node: String,
    },
    Stable,
}

/// Something the operator refuses to do, surfaced as a condition.
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
}

/// The planner's decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Scale and partition per spec zone; `None` for a zone means "do not
    /// create its StatefulSet". `scales` itself is `None` when the
    /// StatefulSets must not be touched at all (invalid spec).
    pub scales: Option<Vec<Option<ZoneScale>>>,
    pub admin: Option<AdminCall>,
    pub activity: Activity,
    pub blocker: Option<Blocker>,
    pub events: Vec<PlannedEvent>,
    /// New `status.decommission`.
    pub decommission: Option<DecommissionProgress>,
    /// New `status.repair`.
    pub repair: Option<RepairProgress>,
    /// Zone whose every node finished anti-entropy now.
    pub repaired_zone: Option<String>,
    /// Deletion is complete: drop the finalizer.
    pub remove_finalizer: bool,
    pub requeue: Duration,
}

impl Plan {
    fn new(scales: Option<Vec<Option<ZoneScale>>>, activity: Activity) -> Self {
        Self {
            scales,
            admin: None,
            activity,
            blocker: None,
            events: Vec::new(),
            decommission: None,
            repair: None,
            repaired_zone: None,
            remove_finalizer: false,
            requeue: REQUEUE_BUSY,
        }
    }
}

/// Decides the next step.
pub fn plan(input: &PlanInput) -> Plan {
    let spec = input.spec;
    let exists = input.zones.iter().any(Option::is_some);

    if input.deleting {
        return plan_deletion(input);
    }

    // Validate; below-N is a refusal rather than an invalid spec once the cluster runs.
    let mut errors = match spec.validate(input.name) {
        Ok(()) => Vec::new(),
        Err(e) => e,
    };
    if let Err(e) = spec.validate_against(input.status) {
        errors.extend(e);
    }
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
        p.decommission = input.status.decommission.clone();
        p.repair = input.status.repair.clone();
        p.requeue = REQUEUE_IDLE;
        if !invalid_already_reported(input.status, &msg) {
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
            .map(|&r| {
                Some(ZoneScale {
                    replicas: r,
                    partition: 0,
                })
            })
            .collect();
        let mut p = Plan::new(Some(scales), Activity::Creating);
        p.events.push(PlannedEvent::normal(
            "Creating",
            format!("creating {total} nodes in {} zones", spec.zones.len()),
        ));
        p.blocker = blocker;
        return p;
    }

    let mut events = Vec::new();
    if let Some(b) = &blocker
        && !condition_reason_is(input.status, "Progressing", "ScaleDownRefused")
    {
        events.push(PlannedEvent::warning("ScaleDownRefused", b.message.clone()));
    }

    let mut planner = Planner::new(input, targets);
    planner.events = events;
    let mut p = planner.step();
    if p.blocker.is_none() {
        p.blocker = blocker;
    }
    p
}

fn condition_reason_is(status: &KVClusterStatus, type_: &str, reason: &str) -> bool {
    status
        .conditions
        .iter()
        .any(|c| c.type_ == type_ && c.reason == reason)
}

fn invalid_already_reported(status: &KVClusterStatus, msg: &str) -> bool {
    status
        .conditions
        .iter()
        .any(|c| c.type_ == "Degraded" && c.reason == "InvalidSpec" && c.message == msg)
}

/// Deletion: take every pod down (their preStop drains them), then release the finalizer.
fn plan_deletion(input: &PlanInput) -> Plan {
    let remaining: i32 = input
        .zones
        .iter()
        .flatten()
        .map(|s| s.status_replicas.max(s.replicas))
        .sum();
    let scales = input
        .zones
        .iter()
        .map(|z| {
            z.as_ref().map(|_| ZoneScale {
                replicas: 0,
                partition: 0,
            })
        })
        .collect();
    let mut p = Plan::new(Some(scales), Activity::Terminating { remaining });
    if remaining == 0 {
        p.remove_finalizer = true;
        p.events.push(PlannedEvent::normal(
            "Deleted",
            "all nodes stopped; releasing the cluster".into(),
        ));
    } else if input.status.phase != Phase::Terminating {
        p.events.push(PlannedEvent::normal(
            "Deleting",
            format!("stopping {remaining} nodes"),
        ));
    }
    p
}

struct Planner<'a> {
    input: &'a PlanInput<'a>,
    targets: Vec<i32>,
    /// Planned scale per zone (starts as observed).
    scales: Vec<Option<ZoneScale>>,
    events: Vec<PlannedEvent>,
    /// Zones whose template changed this reconcile (held at partition = replicas).
    changed: Vec<bool>,
}

impl<'a> Planner<'a> {
    fn new(input: &'a PlanInput<'a>, targets: Vec<i32>) -> Self {
        let mut changed = vec![false; input.zones.len()];
        let scales = input
            .zones
            .iter()
            .enumerate()
            .map(|(i, z)| {
                Some(match z {
                    // A zone added after creation starts empty and grows one node at a time.
                    None => ZoneScale {
                        replicas: 0,
                        partition: 0,
                    },
                    Some(s) => {
                        let template_changed =
                            s.template_hash.as_deref() != Some(input.desired_hashes[i].as_str());
                        let partition = if template_changed && s.replicas > 0 {
                            changed[i] = true;
                            // Apply the new template without restarting anything yet.
                            s.replicas
                        } else if s.observed_generation < s.generation {
                            // The StatefulSet controller has not seen our last change:
                            // its revisions are stale, so keep the partition as is.
                            s.partition.min(s.replicas)
                        } else if s.rollout_pending() {
                            s.partition.min(s.replicas)
                        } else {
                            0
                        };
                        ZoneScale {
                            replicas: s.replicas,
                            partition,
                        }
                    }
                })
            })
            .collect();
        Self {
            input,
            targets,
            scales,
            events: Vec::new(),
            changed,
        }
    }

    fn zone_name(&self, i: usize) -> &str {
        &self.input.spec.zones[i].name
    }

    fn pod(&self, zone: usize, ordinal: i32) -> String {
        names::pod(self.input.name, self.zone_name(zone), ordinal)
    }

    fn current(&self, zone: usize) -> i32 {
        self.input.zones[zone].as_ref().map_or(0, |s| s.replicas)
    }

    /// Pods that should be running and in the ring.
    fn expected_pods(&self) -> Vec<(usize, String)> {
        (0..self.input.zones.len())
            .flat_map(|z| (0..self.current(z)).map(move |o| (z, o)))
            .map(|(z, o)| (z, self.pod(z, o)))
            .collect()
    }

    fn finish(&mut self, activity: Activity, requeue: Duration) -> Plan {
        let mut p = Plan::new(Some(std::mem::take(&mut self.scales)), activity);
        p.events = std::mem::take(&mut self.events);
        p.requeue = requeue;
        p.decommission = self.input.status.decommission.clone();
        p.repair = self.input.status.repair.clone();
        p
    }

    fn step(&mut self) -> Plan {
        for (i, changed) in self.changed.clone().into_iter().enumerate() {
            if changed {
                let msg = format!(
                    "pod template of zone {} changed; rolling {} pods one at a time",
                    self.zone_name(i),
                    self.current(i)
                );
                let sts = names::statefulset(self.input.name, self.zone_name(i));
                self.events
                    .push(PlannedEvent::normal("RolloutStarted", msg).statefulset(&sts));
            }
        }
        if let Some(p) = self.continue_decommission() {
            return p;
        }
        if let Some(p) = self.rollout() {
            return p;
        }
        if self.input.status.phase == Phase::Upgrading {
            // The rollout is only complete once the last restarted node is back.
            if let Some((reason, message)) = self.unhealthy() {
                let during = Phase::Upgrading;
                return self.finish(
                    Activity::Waiting {
                        during,
                        reason,
                        message,
                    },
                    REQUEUE_BUSY,
                );
            }
            self.events.push(PlannedEvent::normal(
                "RolloutComplete",
                "every node runs the new pod template".into(),
            ));
        }
        if let Some(p) = self.scale() {
            return p;
        }
        self.repair()
    }

    /// Nodes that are not (yet) fit to take part in a ring change, or `None` when all are.
    fn unhealthy(&self) -> Option<(&'static str, String)> {
        for (i, z) in self.input.zones.iter().enumerate() {
            if let Some(s) = z
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
        let expected = self.expected_pods();
        for (_, pod) in &expected {
            match self.input.nodes.get(pod) {
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
        for (i, z) in self.input.zones.iter().enumerate() {
            if let Some(s) = z
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
        Some(("NodesNotNormal", msg))
    }

    /// The node being decommissioned: from status, or (after an operator restart
    /// that lost the status write) the highest-ordinal node reporting leaving/left.
    fn decommission_victim(&self) -> Option<(usize, String)> {
        if let Some(d) = &self.input.status.decommission
            && let Some(z) = self.input.spec.zones.iter().position(|s| s.name == d.zone)
        {
            return Some((z, d.node.clone()));
        }
        for z in 0..self.input.zones.len() {
            let cur = self.current(z);
            if cur == 0 {
                continue;
            }
            let pod = self.pod(z, cur - 1);
            if let Some(r) = self.input.nodes.get(&pod).and_then(NodeObservation::report) {
                let leaving = matches!(r.state, NodeState::Leaving | NodeState::Left)
                    || r.decommission.as_ref().is_some_and(|d| {
                        matches!(
                            d.phase,
                            DecommissionPhase::Streaming
                                | DecommissionPhase::Done
                                | DecommissionPhase::Failed
                        )
                    });
                if leaving {
                    return Some((z, pod));
                }
            }
        }
        None
    }

    fn continue_decommission(&mut self) -> Option<Plan> {
        let (z, node) = self.decommission_victim()?;
        let zone = self.zone_name(z).to_string();
        let cur = self.current(z);
        let mut progress =
            self.input
                .status
                .decommission
                .clone()
                .unwrap_or_else(|| DecommissionProgress {
                    node: node.clone(),
                    zone: zone.clone(),
                    phase: "Streaming".into(),
                    ranges_done: 0,
                    ranges_total: 0,
                    keys_streamed: 0,
                    started_at: None,
                    message: Some("resumed: the node reported it was leaving".into()),
                });
        if cur == 0 || self.pod(z, cur - 1) != node {
            // Replicas already went down (the pod is gone or going): the step is over.
            let mut p = self.finish(Activity::Stable, REQUEUE_SOON);
            p.decommission = None;
            return Some(self.scale_after(p));
        }
        let obs = self.input.nodes.get(&node);
        let report = obs.and_then(NodeObservation::report);
        if let Some(r) = report {
            if let Some(d) = &r.decommission {
                if d.phase == DecommissionPhase::Failed
                    && progress.phase != DecommissionPhase::Failed.as_str()
                {
                    self.events.push(
                        PlannedEvent::warning(
                            "DecommissionFailed",
                            format!("decommission of {node} failed ({}); resuming it", d.error),
                        )
                        .pod(&node),
                    );
                    progress.message = Some(d.error.clone());
                }
                progress.phase = d.phase.as_str().into();
                progress.ranges_done = i64::from(d.ranges_done);
                progress.ranges_total = i64::from(d.ranges_total);
                progress.keys_streamed = i64::try_from(d.keys_streamed).unwrap_or(i64::MAX);
            }
            let left = r.state == NodeState::Left
                || r.decommission
                    .as_ref()
                    .is_some_and(|d| d.phase == DecommissionPhase::Done);
            // The others must have heard: a node stopped before its LEFT state
            // spread stays LEAVING (down, still owning ranges) in their rings.
            let unaware = if left {
                self.unaware_of_left(&node)
            } else {
                Vec::new()
            };
            if left && !unaware.is_empty() {
                let message = format!(
                    "{node} has left; waiting until {} see it as left",
                    unaware.join(", ")
                );
                progress.message = Some(message.clone());
                let mut p = self.finish(
                    Activity::Waiting {
                        during: Phase::Scaling,
                        reason: "LeftNotGossiped",
                        message,
                    },
                    REQUEUE_BUSY,
                );
                p.decommission = Some(progress);
                return Some(p);
            }
            if left {
                // Only now, with every range streamed away, may the pod go.
                if let Some(s) = self.scales[z].as_mut() {
                    s.replicas = cur - 1;
                    s.partition = s.partition.min(cur - 1);
                }
                self.events.push(
                    PlannedEvent::normal(
                        "NodeRemoved",
                        format!("{node} left the ring; removing its pod from zone {zone}"),
                    )
                    .pod(&node),
                );
                let mut p = self.finish(Activity::RemovingNode { node }, REQUEUE_SOON);
                p.decommission = None;
                return Some(p);
            }
        }
        let mut p = match obs {
            Some(NodeObservation::Unreachable(e)) => {
                progress.message = Some(format!("waiting for {node} to come back: {e}"));
                self.finish(
                    Activity::Waiting {
                        during: Phase::Scaling,
                        reason: "DecommissionNodeUnreachable",
                        message: format!("cannot reach {node} to continue its decommission: {e}"),
                    },
                    REQUEUE_BUSY,
                )
            }
            _ => {
                // Decommission is idempotent: calling it again resumes a failed or
                // interrupted one and returns progress.
                let mut p = self.finish(
                    Activity::Decommissioning { node: node.clone() },
                    REQUEUE_BUSY,
                );
                p.admin = Some(AdminCall::Decommission {
                    node: node.clone(),
                    zone,
                });
                p
            }
        };
        p.decommission = Some(progress);
        Some(p)
    }

    /// Nodes (other than `victim`) that answered and do not yet list it as
    /// left. A node that did not answer does not block: it learns from
    /// the others' gossip once back.
    fn unaware_of_left(&self, victim: &str) -> Vec<String> {
        self.expected_pods()
            .into_iter()
            .map(|(_, pod)| pod)
            .filter(|pod| pod != victim)
            .filter(|pod| {
                self.input
                    .nodes
                    .get(pod)
                    .and_then(NodeObservation::report)
                    .is_some_and(|r| {
                        !r.members
                            .iter()
                            .any(|m| m.node_id == victim && m.state == NodeState::Left)
                    })
            })
            .collect()
    }

    /// After a finished decommission, do not start anything else in the same reconcile.
    fn scale_after(&self, mut p: Plan) -> Plan {
        p.activity = Activity::Waiting {
            during: Phase::Scaling,
            reason: "NodeRemoving",
            message: "waiting for the removed node's pod to terminate".into(),
        };
        p
    }

    fn rollout(&mut self) -> Option<Plan> {
        let z = (0..self.input.zones.len()).find(|&i| {
            self.changed[i]
                || self.input.zones[i]
                    .as_ref()
                    .is_some_and(StsObservation::rollout_pending)
        })?;
        let zone = self.zone_name(z).to_string();
        if self.changed.iter().any(|c| *c) {
            // The new template is applied with every pod held back; start restarting next time.
            let msg = format!("applying the new pod template to zone {zone}");
            return Some(self.finish(Activity::RollingOut { zone, message: msg }, REQUEUE_SOON));
        }
        let s = self.input.zones[z].clone()?;
        if let Some((reason, message)) = self.unhealthy() {
            return Some(self.finish(
                Activity::Waiting {
                    during: Phase::Upgrading,
                    reason,
                    message,
                },
                REQUEUE_BUSY,
            ));
        }
        let p = s.partition.min(s.replicas);
        if s.updated_replicas < s.replicas - p {
            let msg = format!("waiting for zone {zone} pods >= {p} to run the new template");
            return Some(self.finish(Activity::RollingOut { zone, message: msg }, REQUEUE_BUSY));
        }
        if p == 0 {
            let msg = format!("waiting for zone {zone} to report the rollout complete");
            return Some(self.finish(Activity::RollingOut { zone, message: msg }, REQUEUE_BUSY));
        }
        let pod = self.pod(z, p - 1);
        if let Some(sc) = self.scales[z].as_mut() {
            sc.partition = p - 1;
        }
        self.events.push(
            PlannedEvent::normal(
                "RestartingNode",
                format!("restarting {pod} with the new template (the ring is healthy)"),
            )
            .pod(&pod),
        );
        let msg = format!("restarting {pod}");
        Some(self.finish(Activity::RollingOut { zone, message: msg }, REQUEUE_BUSY))
    }

    fn scale(&mut self) -> Option<Plan> {
        let n = self.input.zones.len();
        let current: Vec<i32> = (0..n).map(|z| self.current(z)).collect();
        if current == self.targets {
            // The last step is only done when its nodes are in the ring as normal.
            let during = self.input.status.phase;
            if matches!(during, Phase::Creating | Phase::Scaling) {
                if let Some((reason, message)) = self.unhealthy() {
                    return Some(self.finish(
                        Activity::Waiting {
                            during,
                            reason,
                            message,
                        },
                        REQUEUE_BUSY,
                    ));
                }
                let verb = if during == Phase::Creating {
                    "Created"
                } else {
                    "ScalingComplete"
                };
                self.events.push(PlannedEvent::normal(
                    verb,
                    format!("{} nodes are normal ring members", sum(&current)),
                ));
            }
            return None;
        }
        if let Some((reason, message)) = self.unhealthy() {
            return Some(self.finish(
                Activity::Waiting {
                    during: Phase::Scaling,
                    reason,
                    message,
                },
                REQUEUE_BUSY,
            ));
        }
        // Grow before shrinking, so capacity never dips while zones rebalance.
        let grow = (0..n)
            .filter(|&z| self.targets[z] > current[z])
            .max_by_key(|&z| (self.targets[z] - current[z], std::cmp::Reverse(z)));
        if let Some(z) = grow {
            let pod = self.pod(z, current[z]);
            if let Some(s) = self.scales[z].as_mut() {
                s.replicas = current[z] + 1;
            }
            self.events.push(
                PlannedEvent::normal(
                    "ScalingUp",
                    format!(
                        "adding {pod} to zone {} ({} -> {} nodes)",
                        self.zone_name(z),
                        sum(&current),
                        sum(&current) + 1
                    ),
                )
                .pod(&pod),
            );
            return Some(self.finish(Activity::ScalingUp { node: pod }, REQUEUE_BUSY));
        }
        // Victim: highest ordinal in the largest zone above its target (later zones
        // first on ties, since earlier zones hold the remainder).
        let z = (0..n)
            .filter(|&z| current[z] > self.targets[z])
            .max_by_key(|&z| (current[z], z))?;
        let node = self.pod(z, current[z] - 1);
        let zone = self.zone_name(z).to_string();
        self.events.push(PlannedEvent::normal(
            "DecommissionStarted",
            format!("decommissioning {node} ({} -> {} nodes); its ranges stream to their new owners first", sum(&current), sum(&current) - 1),
        ).pod(&node));
        let mut p = self.finish(
            Activity::Decommissioning { node: node.clone() },
            REQUEUE_BUSY,
        );
        p.admin = Some(AdminCall::Decommission {
            node: node.clone(),
            zone: zone.clone(),
        });
        p.decommission = Some(DecommissionProgress {
            node,
            zone,
            phase: "Starting".into(),
            ranges_done: 0,
            ranges_total: 0,
            keys_streamed: 0,
            started_at: Some(crate::time::from_unix_ms(self.input.now_unix_ms)),
            message: None,
        });
        Some(p)
    }

    fn repair(&mut self) -> Plan {
        let Ok(Some(interval)) = self.input.spec.repair_interval() else {
            let mut p = self.finish(Activity::Stable, REQUEUE_IDLE);
            p.repair = None;
            return p;
        };
        let now = self.input.now_unix_ms;
        if let Some(progress) = self.input.status.repair.clone() {
            return self.continue_repair(progress);
        }
        // The most overdue zone, counting from creation for never-repaired zones.
        let interval_ms = i64::try_from(interval.as_millis()).unwrap_or(i64::MAX);
        let due = (0..self.input.zones.len())
            .filter(|&z| self.current(z) > 0)
            .map(|z| {
                let last = self
                    .input
                    .status
                    .zones
                    .iter()
                    .find(|s| s.name == self.zone_name(z))
                    .and_then(|s| s.last_repair_time.as_ref())
                    .map_or(self.input.created_unix_ms, crate::time::to_unix_ms);
                (last.saturating_add(interval_ms), z)
            })
            .min();
        let Some((due_at, z)) = due else {
            return self.finish(Activity::Stable, REQUEUE_IDLE);
        };
        if due_at > now {
            let wait = Duration::from_millis(u64::try_from(due_at - now).unwrap_or(0));
            return self.finish(Activity::Stable, wait.min(REQUEUE_IDLE));
        }
        if self.unhealthy().is_some() {
            // Repair streams between replicas: wait for a healthy ring.
            return self.finish(Activity::Stable, REQUEUE_BUSY);
        }
        let zone = self.zone_name(z).to_string();
        let node = self.pod(z, 0);
        self.events.push(
            PlannedEvent::normal(
                "RepairStarted",
                format!("anti-entropy for zone {zone}, one node at a time, starting with {node}"),
            )
            .statefulset(&names::statefulset(self.input.name, &zone)),
        );
        let mut progress = RepairProgress {
            zone: zone.clone(),
            node: node.clone(),
            repair_id: 0,
            node_started_unix_ms: now,
            baseline_completed_unix_ms: None,
            nodes_done: Vec::new(),
            started_at: Some(crate::time::from_unix_ms(now)),
            failures: 0,
            retry_after_unix_ms: None,
            message: None,
        };
        let call = self.ask_repair(&mut progress);
        let mut p = self.finish(Activity::Repairing { zone, node }, REQUEUE_BUSY);
        p.admin = call;
        p.repair = Some(progress);
        p
    }

    /// Asks `progress.node` to repair when it is reachable and idle, recording its
    /// last completion time first: the node is done once that time advances, which
    /// needs no clock agreement between operator and node and ignores failed runs.
    fn ask_repair(&self, progress: &mut RepairProgress) -> Option<AdminCall> {
        let r = self.input.nodes.get(&progress.node)?.report()?;
        if r.repair.running {
            return None;
        }
        let last = i64::try_from(r.repair.last_completed_unix_ms).unwrap_or(i64::MAX);
        progress.baseline_completed_unix_ms.get_or_insert(last);
        Some(AdminCall::Repair {
            node: progress.node.clone(),
            zone: progress.zone.clone(),
        })
    }

    fn continue_repair(&mut self, mut progress: RepairProgress) -> Plan {
        let Some(z) = self
            .input
            .spec
            .zones
            .iter()
            .position(|s| s.name == progress.zone)
        else {
            let mut p = self.finish(Activity::Stable, REQUEUE_SOON);
            p.repair = None;
            return p;
        };
        let zone = progress.zone.clone();
        let zone_pods: Vec<String> = (0..self.current(z)).map(|o| self.pod(z, o)).collect();
        let node_gone = !zone_pods.contains(&progress.node);
        let report = self
            .input
            .nodes
            .get(&progress.node)
            .and_then(NodeObservation::report);
        let node_done = node_gone
            || match (report, progress.baseline_completed_unix_ms) {
                (Some(r), Some(baseline)) => {
                    !r.repair.running
                        && i64::try_from(r.repair.last_completed_unix_ms).unwrap_or(i64::MAX)
                            > baseline
                }
                _ => false,
            };
        if !node_done {
            let node = progress.node.clone();
            let now = self.input.now_unix_ms;
            // The run we asked for ended without completing every range (a
            // replica was down, say): wait before the next attempt instead of
            // re-running a full repair on every reconcile.
            if let Some(r) = report
                && !r.repair.running
                && progress.repair_id != 0
                && i64::try_from(r.repair.repair_id).ok() == Some(progress.repair_id)
                && !r.repair.last_error.is_empty()
            {
                progress.failures += 1;
                progress.repair_id = 0;
                let backoff = repair_backoff(progress.failures);
                progress.retry_after_unix_ms =
                    Some(now.saturating_add(i64::try_from(backoff.as_millis()).unwrap_or(0)));
                progress.message = Some(r.repair.last_error.clone());
                self.events.push(
                    PlannedEvent::warning(
                        "RepairFailed",
                        format!(
                            "anti-entropy on {node} did not complete ({}); retrying in {}s",
                            r.repair.last_error,
                            backoff.as_secs()
                        ),
                    )
                    .pod(&node),
                );
                let mut p = self.finish(Activity::Repairing { zone, node }, backoff);
                p.repair = Some(progress);
                return p;
            }
            if let Some(t) = progress.retry_after_unix_ms
                && now < t
            {
                let wait = Duration::from_millis(u64::try_from(t - now).unwrap_or(0));
                let mut p = self.finish(Activity::Repairing { zone, node }, wait);
                p.repair = Some(progress);
                return p;
            }
            // Not asked yet, or idle without having completed since we asked (the
            // request was lost, the node restarted, the backoff is over): ask (again).
            let call = self.ask_repair(&mut progress);
            if call.is_some() {
                progress.retry_after_unix_ms = None;
            }
            let mut p = self.finish(Activity::Repairing { zone, node }, REQUEUE_BUSY);
            p.admin = call;
            p.repair = Some(progress);
            return p;
        }
        if !node_gone {
            progress.nodes_done.push(progress.node.clone());
        }
        let next = zone_pods
            .iter()
            .find(|p| !progress.nodes_done.contains(p))
            .cloned();
        match next {
            Some(node) => {
                self.events.push(
                    PlannedEvent::normal(
                        "RepairingNode",
                        format!("{} finished anti-entropy; starting {node}", progress.node),
                    )
                    .pod(&node),
                );
                progress.node = node.clone();
                progress.repair_id = 0;
                progress.node_started_unix_ms = self.input.now_unix_ms;
                progress.baseline_completed_unix_ms = None;
                progress.failures = 0;
                progress.retry_after_unix_ms = None;
                progress.message = None;
                let call = self.ask_repair(&mut progress);
                let mut p = self.finish(Activity::Repairing { zone, node }, REQUEUE_BUSY);
                p.admin = call;
                p.repair = Some(progress);
                p
            }
            None => {
                self.events.push(
                    PlannedEvent::normal(
                        "ZoneRepaired",
                        format!("every node of zone {zone} completed anti-entropy"),
                    )
                    .statefulset(&names::statefulset(self.input.name, &zone)),
                );
                let mut p = self.finish(Activity::Stable, REQUEUE_SOON);
                p.repair = None;
                p.repaired_zone = Some(zone);
                p
            }
        }
    }
}

/// Wait after the `failures`-th failed repair run of a node in a row.
fn repair_backoff(failures: i32) -> Duration {
    let doublings = u32::try_from(failures.saturating_sub(1))
        .unwrap_or(0)
        .min(5);
    (Duration::from_secs(30) * 2u32.pow(doublings)).min(Duration::from_secs(600))
}

fn sum(v: &[i32]) -> i32 {
    v.iter().sum()
}

#[cfg(test)]
pub(crate) mod tests;
