//! Cluster backups, planned purely: when a scheduled backup is due, which
//! node backs up next (one at a time per zone, zones in parallel), when a
//! backup has finished or failed, and the retention passed to the node's
//! prune (garbage collection).
//!
//! A cluster backup is the set of node backups taken under one id. No node
//! backup starts while the cluster changes shape or software (a rollout,
//! scaling, a decommission, a removal, a volume expansion): a node restarting
//! or streaming mid-upload would leave a backup that does not hold every
//! replica's copy; running node backups are let finish.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use crate::crd::{BackupPhase, BackupRun, RetentionSpec};

use super::Activity;

/// Errors of the backup settings (surfaced as a Degraded reason).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    #[error("backup.schedule {schedule:?} is not a cron schedule: {reason}")]
    BadSchedule { schedule: String, reason: String },
    #[error("backup.retention.maxAge {0:?} is not a duration")]
    BadMaxAge(String),
}

/// The most recent slot of `schedule` (UTC) in `(after_ms, now_ms]`, if any.
/// Missed slots collapse into the newest one: a backup never queues behind
/// another.
pub fn due_slot(schedule: &str, after_ms: i64, now_ms: i64) -> Result<Option<i64>, BackupError> {
    let bad = |reason: String| BackupError::BadSchedule {
        schedule: schedule.to_string(),
        reason,
    };
    let cron = croner::Cron::from_str(schedule).map_err(|e| bad(e.to_string()))?;
    // Whole seconds: slots are on second boundaries.
    let now = chrono::DateTime::from_timestamp_millis(now_ms - now_ms.rem_euclid(1000))
        .ok_or_else(|| bad(format!("time {now_ms} out of range")))?;
    let prev = match cron.find_previous_occurrence(&now, true) {
        Ok(t) => t.timestamp_millis(),
        Err(_) => return Ok(None),
    };
    Ok((prev > after_ms).then_some(prev))
}

/// Why no node backup may start now, if the cluster is busy.
pub fn busy(activity: &Activity) -> Option<String> {
    match activity {
        Activity::Invalid(m) => Some(format!("the spec is invalid: {m}")),
        Activity::Creating => Some("the cluster is being created".into()),
        Activity::ScalingUp { node } => Some(format!("{node} is joining")),
        Activity::Decommissioning { node } => Some(format!("{node} is being decommissioned")),
        Activity::RemovingNode { node } => Some(format!("{node} is being removed")),
        Activity::RollingOut { zone, .. } => Some(format!("zone {zone} is rolling out")),
        Activity::ExpandingVolumes { .. } => Some("volumes are being expanded".into()),
        Activity::ReplacingNode { node, .. } => Some(format!("{node} is being replaced")),
        Activity::Waiting { reason, .. } => Some(format!("the cluster is waiting ({reason})")),
        Activity::Repairing { .. } | Activity::CleaningUp { .. } | Activity::Stable => None,
    }
}

/// A node's backup state, from its Admin status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeBackup {
    pub running: bool,
    /// The backup running or last run.
    pub backup_id: String,
    /// Error of the last run (empty: fine).
    pub error: String,
    /// Id of the last completed backup.
    pub last_completed_id: String,
    pub files_total: u64,
    pub bytes_total: u64,
    pub bytes_uploaded: u64,
}

/// What to do next for a running cluster backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupStep {
    /// The run, updated (phase, nodes, totals, reason).
    pub run: BackupRun,
    /// Start this node's backup now (the first idle zone's next node).
    pub start: Option<String>,
}

/// Advances `run` given every zone's pods (in ordinal order) and what the
/// nodes report. A node unreachable mid-backup is waited for (its backup is
/// resumed by the next start); a node reporting an error fails the run.
pub fn advance(
    run: &BackupRun,
    zones: &[Vec<String>],
    nodes: &BTreeMap<String, Option<NodeBackup>>,
    busy: Option<&str>,
    now_ms: i64,
) -> BackupStep {
    let mut run = run.clone();
    if matches!(run.phase, BackupPhase::Succeeded | BackupPhase::Failed) {
        return BackupStep { run, start: None };
    }
    let id = run.id.clone();
    let mut done = Vec::new();
    let mut running = Vec::new();
    let (mut bytes, mut files, mut uploaded) = (0, 0, 0);
    let mut failure = None;
    for pod in zones.iter().flatten() {
        let Some(Some(n)) = nodes.get(pod) else {
            continue;
        };
        let mine = n.backup_id == id;
        if n.last_completed_id == id
            || (mine && !n.running && n.error.is_empty() && run.nodes_done.contains(pod))
        {
            done.push(pod.clone());
            bytes += n.bytes_total;
            files += n.files_total;
            uploaded += n.bytes_uploaded;
        } else if mine && n.running {
            running.push(pod.clone());
        } else if mine && !n.error.is_empty() && failure.is_none() {
            failure = Some(format!("{pod}: {}", n.error));
        }
    }
    run.nodes_done = done;
    run.nodes_running = running;
    run.bytes = bytes;
    run.files = files;
    run.bytes_uploaded = uploaded;
    let finish = |run: &mut BackupRun, phase, reason: String| {
        run.phase = phase;
        run.reason = reason;
        run.finished_unix_ms = Some(now_ms);
        run.duration_seconds = (now_ms - run.started_unix_ms).max(0) / 1000;
        run.nodes_running.clear();
    };
    if let Some(reason) = failure {
        finish(&mut run, BackupPhase::Failed, reason);
        return BackupStep { run, start: None };
    }
    let all: usize = zones.iter().map(Vec::len).sum();
    if all > 0 && run.nodes_done.len() == all {
        finish(&mut run, BackupPhase::Succeeded, String::new());
        return BackupStep { run, start: None };
    }
    run.phase = BackupPhase::Running;
    if let Some(why) = busy {
        run.reason = format!("paused: {why}");
        return BackupStep { run, start: None };
    }
    run.reason.clear();
    // One node per zone at a time; start in the first zone that is idle.
    let start = zones.iter().find_map(|pods| {
        let zone_busy = pods.iter().any(|p| run.nodes_running.contains(p));
        if zone_busy {
            return None;
        }
        pods.iter()
            .find(|p| !run.nodes_done.contains(p) && !run.nodes_running.contains(p))
            .cloned()
    });
    BackupStep { run, start }
}

/// A new cluster backup id: sortable by time, unique per cluster.
pub fn backup_id(cluster: &str, now_ms: i64) -> String {
    let t = chrono::DateTime::from_timestamp_millis(now_ms)
        .map(|t| t.format("%Y%m%dT%H%M%SZ").to_string())
        .unwrap_or_else(|| now_ms.to_string());
    format!("{cluster}-{t}")
}

/// The node's prune arguments: (keep_last, max_age_seconds; 0 = no age limit).
pub fn retention(r: &RetentionSpec) -> Result<(u32, u64), BackupError> {
    let age = match &r.max_age {
        None => 0,
        Some(s) => humantime::parse_duration(s)
            .map_err(|_| BackupError::BadMaxAge(s.clone()))?
            .as_secs(),
    };
    Ok((r.keep_last, age))
}

/// Keeps the newest `max` finished runs, newest first.
pub fn record_history(history: &mut Vec<BackupRun>, run: BackupRun, max: usize) {
    history.insert(0, run);
    history.truncate(max);
}

/// How soon to look again while a backup runs.
pub const POLL: Duration = Duration::from_secs(10);
