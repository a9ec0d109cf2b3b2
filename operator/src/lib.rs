//! ringkv-operator: reconciles `KVCluster` resources into per-zone StatefulSets
//! and drives scaling, repair and rollouts through the nodes' Admin gRPC API.

pub mod builders;
pub mod crd;
pub mod crdgen;
pub mod names;
