//! Scheduled repair.

use super::*;
use crate::planner::repair::repair_backoff;

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
