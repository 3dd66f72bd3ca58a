//! Trellis model: what one proxy should do, computed from resources. Pure: no I/O.
//!
//! Owns the service registry (`registry`), the compiled per-proxy configuration (`config`),
//! the compiler from Istio resources to that configuration (`compile`, with `gateway`,
//! `sidecar`, `routes` and `cluster`) and the decisions made per request on it (`route`
//! matching, `authz` evaluation, `peer_authn` mode resolution, path `normalize`ation).
//! The proxy, `trellis explain` and the control plane share this code so one
//! compile path serves every mode.

pub mod authn;
pub mod authz;
pub mod cluster;
pub mod compile;
pub mod config;
mod gateway;
pub mod locality;
pub mod normalize;
pub mod peer_authn;
pub mod registry;
pub mod route;
pub mod routes;
pub mod security;
pub mod sidecar;
pub mod telemetry;
