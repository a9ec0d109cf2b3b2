//! A scheduled backup through the real reconcile: due at the schedule's
//! slot, one node per zone at a time (the fake nodes record a violation
//! otherwise), credentials passed as object-store options, retention pruned
//! after success, status history and events.

use serde_json::json;

use crate::reconcile::{Harness, NS, settled, spec};

#[tokio::test]
async fn a_scheduled_backup_runs_node_by_node_and_prunes() {
    let h = Harness::new(spec(
        6,
        json!({"backup": {
            "schedule": "@hourly",
            "destination": {"url": "s3://bucket/kv", "credentialsSecret": "s3"},
            "retention": {"keepLast": 2, "maxAge": "7d"}
        }}),
    ))
    .await;
    h.api.insert(
        "api/v1",
        "secrets",
        NS,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s3"},
               "data": {"aws_access_key_id": "QUtJQQ==", "aws_endpoint": "aHR0cDovLzEyNy4wLjAuMTo5MDAw"}}),
    );
    h.run_until(200, settled(6)).await;
    assert!(
        h.nodes.ring.lock().unwrap().backup_calls.is_empty(),
        "not due yet"
    );

    // The next hour's slot.
    h.clock
        .fetch_add(3_600_000, std::sync::atomic::Ordering::SeqCst);
    let kvc = h
        .run_until(60, |k| {
            k.and_then(|k| k.status.as_ref())
                .and_then(|s| s.backup.as_ref())
                .is_some_and(|b| b.last_successful.is_some())
        })
        .await
        .unwrap();
    let b = kvc.status.unwrap().backup.unwrap();
    let run = &b.history[0];
    assert_eq!(run.phase, ringkv_operator::crd::BackupPhase::Succeeded);
    assert_eq!(run.nodes_done.len(), 6);
    assert_eq!((run.bytes, run.files, run.bytes_uploaded), (6000, 18, 2400));
    assert_eq!(b.current, None);
    assert_eq!(b.last_successful.as_deref(), Some(run.id.as_str()));

    let ring = h.nodes.ring.lock().unwrap();
    assert!(ring.violations.is_empty(), "{:?}", ring.violations);
    assert_eq!(ring.backup_calls.len(), 6, "each node once");
    for (_, url, id, opts) in &ring.backup_calls {
        assert_eq!(url, "s3://bucket/kv");
        assert_eq!(id, &run.id);
        assert_eq!(
            opts.get("aws_access_key_id").map(String::as_str),
            Some("AKIA")
        );
        assert_eq!(
            opts.get("aws_endpoint").map(String::as_str),
            Some("http://127.0.0.1:9000")
        );
    }
    assert_eq!(ring.prunes, [("s3://bucket/kv".to_string(), 2, 7 * 86_400)]);
    drop(ring);
    let reasons: Vec<String> = h.events().into_iter().map(|e| e.1).collect();
    for want in ["BackupStarted", "BackupSucceeded", "BackupsPruned"] {
        assert!(
            reasons.iter().any(|r| r == want),
            "no {want} in {reasons:?}"
        );
    }
}
