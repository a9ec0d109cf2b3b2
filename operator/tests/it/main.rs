//! Integration tests of ringkv-operator, in one binary to keep link time down.

mod backup;
mod crd_schema;
mod day2;
mod fake_api;
mod fake_nodes;
mod leader;
mod maintenance;
mod monitoring;
mod reconcile;
mod tls;
