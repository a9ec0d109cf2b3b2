//! Reconcile flows for cleanup after a scale-up and for replacing a node gone
//! for good, against the in-memory API and the fake nodes.

use serde_json::{Value, json};

use crate::fake_api::Step;
use crate::reconcile::{Harness, NS, condition, settled, spec};
use ringkv_operator::crd::KVCluster;
use ringkv_proto::v1 as pb;

fn reasons(h: &Harness) -> Vec<String> {
    h.events().into_iter().map(|e| e.1).collect()
}

fn admin_calls(h: &Harness, call: &str) -> Vec<(usize, String)> {
    h.timeline
        .lock()
        .unwrap()
        .iter()
        .enumerate()
        .filter_map(|(i, s)| match s {
            Step::Admin { node, call: c } if *c == call => Some((i, node.clone())),
            _ => None,
        })
        .collect()
}

/// Index of the first DELETE of `plural/name` in the timeline.
fn deleted_at(h: &Harness, plural: &str, name: &str) -> Option<usize> {
    h.timeline.lock().unwrap().iter().position(|s| {
        matches!(s, Step::Kube { verb, plural: p, name: n, .. }
            if verb == "DELETE" && p == plural && n == name)
    })
}

fn idle(target: i32) -> impl Fn(Option<&KVCluster>) -> bool {
    let settled = settled(target);
    move |k| {
        settled(k)
            && k.and_then(|k| k.status.as_ref())
                .is_some_and(|s| s.cleanup.is_none() && s.replace.is_none())
    }
}

#[tokio::test]
async fn after_a_scale_up_every_node_cleans_up_once_the_new_node_is_normal() {
    let h = Harness::new(spec(3, json!({}))).await;
    h.run_until(15, settled(3)).await;
    h.set_spec(json!({"replicas": 4})).await;
    let kvc = h.run_until(40, idle(4)).await.unwrap();
    let calls = admin_calls(&h, "Cleanup");
    let mut nodes: Vec<String> = calls.iter().map(|(_, n)| n.clone()).collect();
    nodes.sort();
    nodes.dedup();
    assert_eq!(
        nodes,
        vec!["kv-zone-a-0", "kv-zone-a-1", "kv-zone-b-0", "kv-zone-c-0"],
        "every node cleaned up"
    );
    // Never while the new node joined (a node would have refused it), and
    // only after the StatefulSet was scaled up.
    let ring = h.nodes.ring.lock().unwrap();
    assert!(ring.refused.is_empty(), "{:?}", ring.refused);
    assert!(ring.violations.is_empty(), "{:?}", ring.violations);
    assert!(ring.nodes.values().all(|n| n.cleanup_completed_ms > 0));
    drop(ring);
    let scaled = h
        .timeline
        .lock()
        .unwrap()
        .iter()
        .rposition(|s| {
            matches!(
                s,
                Step::Kube {
                    replicas: Some(2),
                    ..
                }
            )
        })
        .unwrap();
    assert!(calls[0].0 > scaled);
    let r = reasons(&h);
    let pos = |what: &str| r.iter().position(|x| x == what).unwrap();
    assert!(pos("ScalingComplete") < pos("CleanupStarted"));
    assert!(pos("CleanupStarted") < pos("CleanupComplete"));
    assert_eq!(condition(&kvc, "Progressing").status, "False");
}

#[tokio::test]
async fn a_node_whose_volume_is_lost_is_removed_then_recreated_as_a_new_node() {
    let h = Harness::new(spec(4, json!({}))).await;
    h.run_until(20, idle(4)).await;
    let dead = "kv-zone-b-0";
    let claim = format!("data-{dead}");
    let old_volume = h.nodes.ring.lock().unwrap().volumes[&claim];
    {
        let mut ring = h.nodes.ring.lock().unwrap();
        let n = ring.nodes.get_mut(dead).unwrap();
        n.dead = true;
        n.running = false;
    }
    h.api.update("persistentvolumeclaims", NS, &claim, |o| {
        o["status"]["phase"] = json!("Lost")
    });
    let kvc = h
        .run_until(40, |k| {
            idle(4)(k)
                && h.nodes.state(dead) == Some(pb::NodeState::Normal)
                && reasons(&h).contains(&"NodeReplaced".to_string())
        })
        .await
        .unwrap();

    let removes = admin_calls(&h, "RemoveNode");
    assert!(!removes.is_empty());
    assert!(
        removes.iter().all(|(_, via)| via != dead),
        "another node coordinates"
    );
    // The volume and pod go only after the removal was asked for (and the
    // fake ring records a violation if the node was not LEFT by then).
    let pvc_gone = deleted_at(&h, "persistentvolumeclaims", &claim).unwrap();
    let pod_gone = deleted_at(&h, "pods", dead).unwrap();
    assert!(removes[0].0 < pvc_gone && pvc_gone < pod_gone);
    let ring = h.nodes.ring.lock().unwrap();
    assert!(ring.violations.is_empty(), "{:?}", ring.violations);
    assert!(ring.refused.is_empty(), "{:?}", ring.refused);
    assert_ne!(ring.volumes[&claim], old_volume, "a new, empty volume");
    assert!(!ring.nodes[dead].dead);
    drop(ring);
    let r = reasons(&h);
    for e in [
        "NodeReplacing",
        "NodeRemoved",
        "NodeReplaced",
        "CleanupComplete",
    ] {
        assert!(r.contains(&e.to_string()), "{e} in {r:?}");
    }
    assert_eq!(condition(&kvc, "Degraded").status, "False");
}

#[tokio::test]
async fn a_live_node_annotated_for_replacement_is_refused_until_it_is_down() {
    let h = Harness::new(spec(4, json!({}))).await;
    h.run_until(20, idle(4)).await;
    let target = "kv-zone-a-1";
    h.api.update("pods", NS, target, |o| {
        o["metadata"]["annotations"] = json!({"ringkv.io/replace": "true"})
    });
    let kvc = h
        .run_until(5, |k| {
            k.and_then(|k| k.status.as_ref())
                .is_some_and(|s| s.reason == "ReplaceRefused")
        })
        .await
        .unwrap();
    let d = condition(&kvc, "Degraded");
    assert_eq!(d.status, "True");
    assert!(d.message.contains(target), "{}", d.message);
    assert!(admin_calls(&h, "RemoveNode").is_empty());
    assert!(kvc.status.as_ref().unwrap().replace.is_none());

    // Its process dies for good: now it is replaced.
    {
        let mut ring = h.nodes.ring.lock().unwrap();
        let n = ring.nodes.get_mut(target).unwrap();
        n.dead = true;
        n.running = false;
    }
    h.run_until(40, |k| {
        idle(4)(k)
            && h.nodes.state(target) == Some(pb::NodeState::Normal)
            && reasons(&h).contains(&"NodeReplaced".to_string())
    })
    .await;
    assert!(!admin_calls(&h, "RemoveNode").is_empty());
    let pod = h.api.get("pods", NS, target).unwrap();
    assert_eq!(
        pod.pointer("/metadata/annotations/ringkv.io~1replace"),
        None::<&Value>,
        "the new pod does not carry the request"
    );
    let ring = h.nodes.ring.lock().unwrap();
    assert!(ring.violations.is_empty(), "{:?}", ring.violations);
    assert!(ring.refused.is_empty(), "{:?}", ring.refused);
}
