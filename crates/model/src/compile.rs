//! Compile: Istio resources + the service registry -> the `ProxyConfig` of one proxy.
//! Scaffolding: the compiler is being written (issue 3); the signatures are fixed.

use std::collections::BTreeMap;
use std::net::IpAddr;

use trellis_api::{MeshConfig, Resource};

use crate::config::{ProxyConfig, ProxyKind};

/// The workload a proxy runs for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyTarget {
    pub kind: ProxyKind,
    pub namespace: String,
    /// Pod, Deployment or WorkloadEntry name.
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub service_account: String,
    pub ip: Option<IpAddr>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CompileError {
    #[error("workload {0} not found: expected a Pod, Deployment or WorkloadEntry of that namespace/name")]
    WorkloadNotFound(String),
    #[error("{0}")]
    Invalid(String),
}

/// Finds the workload `namespace/name` (Pod, Deployment or WorkloadEntry) and decides whether
/// its proxy is a gateway (some Gateway selects its labels) or a sidecar.
pub fn find_target(
    resources: &[Resource],
    namespace: &str,
    name: &str,
) -> Result<ProxyTarget, CompileError> {
    let _ = resources;
    Err(CompileError::WorkloadNotFound(format!(
        "{namespace}/{name}"
    )))
}

/// Compiles the configuration of the proxy for `target`.
pub fn compile(
    resources: &[Resource],
    mesh: &MeshConfig,
    target: &ProxyTarget,
    version: &str,
) -> Result<ProxyConfig, CompileError> {
    let _ = (resources, mesh, version);
    Err(CompileError::Invalid(format!(
        "compile of {}/{} not written yet",
        target.namespace, target.name
    )))
}
