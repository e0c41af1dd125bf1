//! The Widget server end to end, as one test binary (linked once, not once per file): a real
//! `widget-server` process per test on free loopback ports, driven over real TLS by kube-rs,
//! kubectl and hand-written requests; beside it etcd, webhook servers, the core-API stand-in,
//! and in `real_cluster` the real kube-apiserver and kube-controller-manager. One module per
//! concern; `common` holds the shared fixtures. (`tests/fuzz.rs` stays a binary of its own: its
//! counting global allocator must see only its own requests.)
//!
//! `cargo test -p widget-server --test e2e replicas::` runs one module.

mod common;

mod admission;
mod apply;
mod boundary;
mod cluster_clients;
mod durability;
mod generated;
mod go_client;
mod hardening;
mod http_contract;
mod kube_client;
mod kubectl;
mod leader;
mod operations;
mod policies;
mod real_cluster;
mod replicas;
mod security;
mod versions;
mod versions_operations;
mod webhooks;
