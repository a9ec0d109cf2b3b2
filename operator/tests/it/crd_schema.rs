//! CRD tests: the committed YAML matches the Rust types, the examples pass the
//! schema's CEL rules (evaluated client-side by kube's CEL validator, with the
//! schema defaults applied first, as the API server does), every invalid
//! example is rejected with the intended message, and the Rust `validate()`
//! twin agrees.

use std::path::{Path, PathBuf};

use kube::core::cel::Validator;
use ringkv_operator::crd::{KVCluster, KVClusterStatus};
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn docs(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| {
            let v: serde_yaml::Value = serde::Deserialize::deserialize(d).unwrap();
            serde_json::to_value(v).unwrap()
        })
        .collect()
}

fn schema() -> Value {
    let crd: serde_yaml::Value =
        serde_yaml::from_str(&read("crds/kvclusters.ringkv.io.yaml")).unwrap();
    let crd = serde_json::to_value(crd).unwrap();
    crd.pointer("/spec/versions/0/schema/openAPIV3Schema")
        .unwrap()
        .clone()
}

fn yamls(dir: &str) -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(root().join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    v.sort();
    v
}

#[test]
fn committed_crds_match_the_rust_types() {
    for (rel, generated) in ringkv_operator::crdgen::files() {
        assert!(
            read(rel) == generated,
            "{rel} is stale: run `cargo run -p ringkv-operator --bin crdgen` and commit the result"
        );
    }
}

#[test]
fn crd_carries_the_validation_rules_printer_columns_and_subresources() {
    let crd: Value = serde_json::to_value(
        serde_yaml::from_str::<serde_yaml::Value>(&read("crds/kvclusters.ringkv.io.yaml")).unwrap(),
    )
    .unwrap();
    let text = serde_json::to_string(&crd).unwrap();
    for rule in [
        "self.replication.w <= self.replication.n",
        "self.replication.r <= self.replication.n",
        "self.replication.n <= self.replicas",
        "size(self.zones) > 0",
        "self.zones.all(z, self.zones.exists_one(y, y.name == z.name))",
        "oldSelf.zones.all(z, self.zones.exists(y, y.name == z.name))",
        "self.spec.zones.all(z, size(self.metadata.name) + size(z.name) <= 51)",
        "!self.metadata.name.endsWith('-peers')",
        "self.n == oldSelf.n",
        "quantity(self.size).compareTo(quantity(oldSelf.size)) >= 0",
    ] {
        assert!(
            text.contains(&serde_json::to_string(rule).unwrap()),
            "missing rule {rule}"
        );
    }
    let spec = crd
        .pointer("/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties")
        .unwrap();
    assert_eq!(
        spec.pointer("/vnodes/x-kubernetes-validations/0/rule"),
        Some(&Value::from("self == oldSelf"))
    );
    assert_eq!(
        spec.pointer("/conflictMode/x-kubernetes-validations/0/rule"),
        Some(&Value::from("self == oldSelf"))
    );
    assert_eq!(spec.pointer("/replicas/default"), Some(&Value::from(3)));
    assert_eq!(spec.pointer("/vnodes/default"), Some(&Value::from(128)));
    assert_eq!(
        spec.pointer("/storage/properties/reclaimPolicy/enum"),
        Some(&serde_json::json!(["Retain", "Delete"]))
    );
    let v = crd.pointer("/spec/versions/0").unwrap();
    let cols: Vec<&str> = v["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        cols,
        vec![
            "Nodes",
            "Ready",
            "N/W/R",
            "Phase",
            "Reason",
            "Zones",
            "Last Repair",
            "Image",
            "Age"
        ]
    );
    // Zones, last repair and image are for `kubectl get -o wide`.
    let wide: Vec<&str> = v["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["priority"] == 1)
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(wide, vec!["Zones", "Last Repair", "Image"]);
    assert_eq!(
        v.pointer("/subresources/scale/specReplicasPath"),
        Some(&Value::from(".spec.replicas"))
    );
    assert_eq!(
        v.pointer("/subresources/scale/statusReplicasPath"),
        Some(&Value::from(".status.replicas"))
    );
    assert_eq!(
        v.pointer("/subresources/scale/labelSelectorPath"),
        Some(&Value::from(".status.selector"))
    );
    assert!(v.pointer("/subresources/status").is_some());
}

#[test]
fn valid_examples_pass_cel_and_rust_validation() {
    let schema = schema();
    let validator = Validator::new();
    let examples = yamls("crds/examples");
    assert!(examples.len() >= 3);
    for path in &examples {
        for doc in docs(path) {
            validator
                .validate(&schema, &doc, None)
                .unwrap_or_else(|e| panic!("{}: {e:?}", path.display()));
            // The update path too: re-applying the same object is allowed.
            validator.validate(&schema, &doc, Some(&doc)).unwrap();
            let kvc: KVCluster = serde_json::from_value(doc).unwrap();
            let name = kvc.metadata.name.clone().unwrap();
            kvc.spec
                .validate(&name)
                .unwrap_or_else(|e| panic!("{}: {e:?}", path.display()));
        }
    }
}

#[test]
fn each_invalid_example_is_rejected_for_its_reason() {
    let schema = schema();
    let validator = Validator::new();
    let invalid = yamls("crds/examples/invalid");
    assert!(invalid.len() >= 8);
    for path in invalid {
        let text = std::fs::read_to_string(&path).unwrap();
        let expect = text
            .lines()
            .find_map(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{} has no `# expect:` line", path.display()))
            .trim()
            .to_string();
        let docs = docs(&path);
        let (old, new) = match docs.as_slice() {
            [new] => (None, new.clone()),
            [old, new] => (Some(old.clone()), new.clone()),
            _ => panic!("{}: one or two documents", path.display()),
        };
        if let Some(old) = &old {
            validator
                .validate(&schema, old, None)
                .expect("the stored object is valid");
        }
        let errs = validator
            .validate(&schema, &new, old.as_ref())
            .expect_err(&format!("{} was accepted", path.display()));
        assert!(
            errs.iter().any(|e| e.message.contains(&expect)),
            "{}: expected {expect:?}, got {errs:?}",
            path.display()
        );

        // The Rust twin rejects the same thing (transition rules through the
        // values the operator records in status).
        let kvc: KVCluster = serde_json::from_value(new).unwrap();
        let name = kvc.metadata.name.clone().unwrap();
        let rust = match old {
            None => kvc.spec.validate(&name),
            Some(old) => {
                let old: KVCluster = serde_json::from_value(old).unwrap();
                let recorded = KVClusterStatus {
                    vnodes: Some(old.spec.vnodes),
                    replication_factor: Some(old.spec.replication.n),
                    zones: old
                        .spec
                        .zones
                        .iter()
                        .map(|z| ringkv_operator::crd::ZoneStatus {
                            name: z.name.clone(),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                };
                if old.spec.conflict_mode != kvc.spec.conflict_mode {
                    // Not tracked by the operator: the CEL rule is the only guard.
                    continue;
                }
                if old.spec.storage != kvc.spec.storage {
                    // Checked against the live volume claim template.
                    let errs = kvc.spec.validate_storage(
                        &old.spec.storage.size,
                        old.spec.storage.storage_class_name.as_deref(),
                    );
                    if errs.is_empty() { Ok(()) } else { Err(errs) }
                } else {
                    kvc.spec.validate_against(&recorded)
                }
            }
        };
        assert!(
            rust.is_err(),
            "{}: Rust validation accepted it",
            path.display()
        );
    }
}

#[test]
fn schema_defaults_fill_a_minimal_object() {
    // What the API server stores for the minimal example.
    let doc = docs(&root().join("crds/examples/kvcluster-minimal.yaml")).remove(0);
    let kvc: KVCluster = serde_json::from_value(doc).unwrap();
    assert_eq!(kvc.spec.replication.n, 3);
    assert_eq!(kvc.spec.vnodes, 128);
    assert_eq!(kvc.spec.repair.interval, "24h");
    assert_eq!(kvc.spec.storage.size, "10Gi");
}

#[test]
fn schema_invalid_examples_are_refused_by_rust_too() {
    // The structural schema (pattern/enum) rejects these at admission; the
    // operator must not accept them either if one slips through.
    let files = yamls("crds/examples/invalid-schema");
    assert!(files.len() >= 3);
    for path in files {
        let doc = docs(&path).remove(0);
        let refused = match serde_json::from_value::<KVCluster>(doc) {
            Err(_) => true,
            Ok(kvc) => kvc
                .spec
                .validate(kvc.metadata.name.as_deref().unwrap())
                .is_err(),
        };
        assert!(refused, "{} accepted", path.display());
    }
}
