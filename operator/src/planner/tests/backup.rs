//! Backup planning: schedule, one node per zone, never during a rollout,
//! completion and failure, retention.

use std::collections::BTreeMap;

use crate::crd::{BackupPhase, BackupRun, Phase, RetentionSpec};
use crate::planner::Activity;
use crate::planner::backup::*;

const H: i64 = 3_600_000;
/// 2024-01-01T00:00:00Z.
const T0: i64 = 1_704_067_200_000;

#[test]
fn a_slot_is_due_once_and_missed_slots_collapse() {
    // Daily at 03:00 UTC.
    let s = "0 3 * * *";
    assert_eq!(due_slot(s, T0, T0 + 2 * H).unwrap(), None, "02:00: not yet");
    assert_eq!(due_slot(s, T0, T0 + 3 * H).unwrap(), Some(T0 + 3 * H));
    // Once taken, the same slot is not due again.
    assert_eq!(due_slot(s, T0 + 3 * H, T0 + 5 * H).unwrap(), None);
    // The operator was down three days: one backup, for the newest slot.
    assert_eq!(
        due_slot(s, T0 + 3 * H, T0 + 75 * H + 1).unwrap(),
        Some(T0 + 75 * H)
    );
    assert_eq!(due_slot("@hourly", T0, T0 + H + 5).unwrap(), Some(T0 + H));
    assert!(matches!(
        due_slot("every day", T0, T0),
        Err(BackupError::BadSchedule { .. })
    ));
}

fn zones() -> Vec<Vec<String>> {
    ["a", "b"]
        .iter()
        .map(|z| (0..2).map(|o| format!("kv-{z}-{o}")).collect())
        .collect()
}

fn run() -> BackupRun {
    BackupRun {
        id: "kv-1".into(),
        trigger: "schedule".into(),
        phase: BackupPhase::Pending,
        started_unix_ms: T0,
        ..BackupRun::default()
    }
}

fn idle() -> Option<NodeBackup> {
    Some(NodeBackup::default())
}

fn running() -> Option<NodeBackup> {
    Some(NodeBackup {
        running: true,
        backup_id: "kv-1".into(),
        ..NodeBackup::default()
    })
}

fn completed(bytes: u64) -> Option<NodeBackup> {
    Some(NodeBackup {
        backup_id: "kv-1".into(),
        last_completed_id: "kv-1".into(),
        files_total: 3,
        bytes_total: bytes,
        bytes_uploaded: bytes / 2,
        ..NodeBackup::default()
    })
}

fn nodes(states: &[(&str, Option<NodeBackup>)]) -> BTreeMap<String, Option<NodeBackup>> {
    states
        .iter()
        .map(|(n, s)| (n.to_string(), s.clone()))
        .collect()
}

#[test]
fn one_node_per_zone_backs_up_at_a_time() {
    let all_idle = nodes(&[
        ("kv-a-0", idle()),
        ("kv-a-1", idle()),
        ("kv-b-0", idle()),
        ("kv-b-1", idle()),
    ]);
    let step = advance(&run(), &zones(), &all_idle, None, T0);
    assert_eq!(step.start.as_deref(), Some("kv-a-0"));
    assert_eq!(step.run.phase, BackupPhase::Running);
    // kv-a-0 runs: zone a is busy, zone b starts its first node.
    let n = nodes(&[
        ("kv-a-0", running()),
        ("kv-a-1", idle()),
        ("kv-b-0", idle()),
        ("kv-b-1", idle()),
    ]);
    let step = advance(&step.run, &zones(), &n, None, T0);
    assert_eq!(step.start.as_deref(), Some("kv-b-0"));
    assert_eq!(step.run.nodes_running, ["kv-a-0"]);
    // Both zones busy: nothing starts.
    let n = nodes(&[
        ("kv-a-0", running()),
        ("kv-a-1", idle()),
        ("kv-b-0", running()),
        ("kv-b-1", idle()),
    ]);
    let step = advance(&step.run, &zones(), &n, None, T0);
    assert_eq!(step.start, None);
    // kv-a-0 done: kv-a-1 next.
    let n = nodes(&[
        ("kv-a-0", completed(100)),
        ("kv-a-1", idle()),
        ("kv-b-0", running()),
        ("kv-b-1", idle()),
    ]);
    let step = advance(&step.run, &zones(), &n, None, T0);
    assert_eq!(step.start.as_deref(), Some("kv-a-1"));
    assert_eq!(step.run.nodes_done, ["kv-a-0"]);
}

#[test]
fn no_node_backup_starts_during_a_rollout_or_a_decommission() {
    let rollout = Activity::RollingOut {
        zone: "a".into(),
        message: "1/2 updated".into(),
    };
    let decom = Activity::Decommissioning {
        node: "kv-b-1".into(),
    };
    for activity in [rollout, decom] {
        let why = busy(&activity).expect("busy");
        let n = nodes(&[
            ("kv-a-0", running()),
            ("kv-a-1", idle()),
            ("kv-b-0", idle()),
            ("kv-b-1", idle()),
        ]);
        let step = advance(&run(), &zones(), &n, Some(&why), T0);
        assert_eq!(step.start, None, "{why}");
        assert_eq!(step.run.phase, BackupPhase::Running);
        assert!(
            step.run.reason.starts_with("paused: "),
            "{}",
            step.run.reason
        );
        // The node already uploading is let finish.
        assert_eq!(step.run.nodes_running, ["kv-a-0"]);
    }
    assert_eq!(busy(&Activity::Stable), None);
    assert_eq!(
        busy(&Activity::Repairing {
            zone: "a".into(),
            node: "kv-a-0".into()
        }),
        None,
        "repair reads, it does not move data: backups may run"
    );
    assert!(
        busy(&Activity::Waiting {
            during: Phase::Upgrading,
            reason: "PodNotReady",
            message: String::new()
        })
        .is_some()
    );
}

#[test]
fn a_backup_succeeds_with_totals_or_fails_with_the_node_and_reason() {
    let n = nodes(&[
        ("kv-a-0", completed(100)),
        ("kv-a-1", completed(200)),
        ("kv-b-0", completed(300)),
        ("kv-b-1", completed(400)),
    ]);
    let step = advance(&run(), &zones(), &n, None, T0 + 90_000);
    assert_eq!(step.run.phase, BackupPhase::Succeeded);
    assert_eq!(step.run.bytes, 1000);
    assert_eq!(step.run.bytes_uploaded, 500);
    assert_eq!(step.run.files, 12);
    assert_eq!(step.run.duration_seconds, 90);
    assert_eq!(step.run.finished_unix_ms, Some(T0 + 90_000));
    assert_eq!(step.start, None);

    let mut broken = n.clone();
    broken.insert(
        "kv-b-0".into(),
        Some(NodeBackup {
            backup_id: "kv-1".into(),
            error: "PUT s3://b/x: 403 AccessDenied".into(),
            ..NodeBackup::default()
        }),
    );
    let step = advance(&run(), &zones(), &broken, None, T0 + 1000);
    assert_eq!(step.run.phase, BackupPhase::Failed);
    assert_eq!(step.run.reason, "kv-b-0: PUT s3://b/x: 403 AccessDenied");

    // An unreachable node is waited for, not failed.
    let mut gone = n.clone();
    gone.insert("kv-b-1".into(), None);
    let step = advance(&run(), &zones(), &gone, None, T0);
    assert_eq!(step.run.phase, BackupPhase::Running);
    assert_eq!(step.run.nodes_done.len(), 3);
}

#[test]
fn retention_and_history() {
    let r = RetentionSpec {
        keep_last: 3,
        max_age: Some("30d".into()),
    };
    assert_eq!(retention(&r).unwrap(), (3, 30 * 86_400));
    assert_eq!(retention(&RetentionSpec::default()).unwrap(), (7, 0));
    assert!(matches!(
        retention(&RetentionSpec {
            keep_last: 1,
            max_age: Some("soon".into())
        }),
        Err(BackupError::BadMaxAge(_))
    ));
    let mut h = Vec::new();
    for i in 0..12 {
        record_history(
            &mut h,
            BackupRun {
                id: format!("b{i}"),
                ..BackupRun::default()
            },
            10,
        );
    }
    assert_eq!(h.len(), 10);
    assert_eq!(h[0].id, "b11");
    assert_eq!(backup_id("kv", T0 + 3 * H), "kv-20240101T030000Z");
}
