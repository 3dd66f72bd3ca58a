//! Trellis model: what one proxy should do, computed from resources. Pure: no I/O.
//!
//! Owns the service registry (`registry`), the compiled per-proxy configuration (`config`),
//! the compiler from Istio resources to that configuration (`compile`) and the decisions made
//! per request on it (`route` matching). The proxy, `trellis explain` and the control plane
//! share this code so one compile path serves every mode.

pub mod authn;
pub mod compile;
pub mod config;
pub mod route;
