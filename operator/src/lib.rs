//! ringkv-operator: reconciles `KVCluster` resources into per-zone StatefulSets
//! and drives scaling, repair and rollouts through the nodes' Admin gRPC API.

pub mod act;
pub mod admin;
pub mod backups;
pub mod build;
pub mod controller;
pub mod crd;
pub mod crdgen;
pub mod leader;
pub mod metrics;
pub mod names;
pub mod observe;
pub mod planner;
pub mod security;
pub mod status;
pub mod telemetry;
pub mod time;
