//! Compile: Istio resources + the service registry -> the `ProxyConfig` of one proxy.
//!
//! `find_target` finds the workload a proxy runs for and decides whether it is a gateway
//! (some Gateway selects its labels) or a sidecar; `compile` builds its listeners, route
//! tables, clusters, endpoints and secrets. The gateway side lives in `gateway`, the sidecar
//! side in `sidecar`, VirtualService rule translation in `routes`, DestinationRule policy in
//! `cluster` and the services in `registry`.
//!
//! Compile never panics on any input and is tolerant the way Istio is: unknown hosts, missing
//! DestinationRules or subsets give clusters without endpoints (the proxy answers 503 UH), a
//! missing credential Secret leaves its chain without a certificate (the runtime refuses that
//! chain); each such problem is listed in `ProxyConfig::warnings`. Only what cannot be turned
//! into config at all (an invalid regex) is a `CompileError`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use trellis_api::networking::{Destination, VirtualService};
use trellis_api::{MeshConfig, Object, Resource};

use crate::cluster::{build_cluster, cluster_name, ClusterRequest, DestinationRules};
use crate::config::{
    Cluster, ClusterEndpoints, Listener, MeshSettings, NodeInfo, ProxyConfig, ProxyKind,
    RouteTable, TlsSecret, WeightedCluster, WeightedClusters,
};
use crate::registry::{
    exported_to, InstanceAddress, ServiceRegistry, WorkloadKind, CLUSTER_DOMAIN,
};

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
    /// `region/zone/subzone`, when known.
    pub locality: Option<String>,
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
    let workloads = crate::registry::workloads(resources);
    let w = [
        WorkloadKind::Pod,
        WorkloadKind::Deployment,
        WorkloadKind::WorkloadEntry,
    ]
    .iter()
    .find_map(|k| {
        workloads
            .iter()
            .find(|w| w.kind == *k && w.namespace == namespace && w.name == name)
    })
    .ok_or_else(|| CompileError::WorkloadNotFound(format!("{namespace}/{name}")))?;
    // Gateways select workloads in every namespace (Istio's default); an empty selector
    // does not make a workload a gateway.
    let is_gateway = resources.iter().any(|r| match &r.object {
        Object::Gateway(g) => {
            !g.selector.is_empty() && g.selector.iter().all(|(k, v)| w.labels.get(k) == Some(v))
        }
        _ => false,
    });
    Ok(ProxyTarget {
        kind: if is_gateway {
            ProxyKind::Gateway
        } else {
            ProxyKind::Sidecar
        },
        namespace: w.namespace.clone(),
        name: w.name.clone(),
        labels: w.labels.clone(),
        service_account: w.service_account.clone(),
        locality: w.locality.clone(),
        ip: match &w.address {
            Some(InstanceAddress::Ip(ip)) => Some(*ip),
            _ => None,
        },
    })
}

/// Compiles the configuration of the proxy for `target`.
pub fn compile(
    resources: &[Resource],
    mesh: &MeshConfig,
    target: &ProxyTarget,
    version: &str,
) -> Result<ProxyConfig, CompileError> {
    let mut cx = Compiler::new(resources, mesh, target);
    match target.kind {
        ProxyKind::Gateway => cx.build_gateway()?,
        ProxyKind::Sidecar => cx.build_sidecar()?,
    }
    let security = cx.build_security();
    let mut warnings = Vec::new();
    let tracing = crate::telemetry::resolve(resources, mesh, target, &cx.registry, &mut |w| {
        warnings.push(w)
    });
    cx.warnings.extend(warnings);
    let mut config = cx.finish(version);
    config.security = security;
    config.tracing = tracing;
    Ok(config)
}

/// A VirtualService with its hosts and gateways resolved.
pub(crate) struct VsEntry<'a> {
    pub spec: &'a VirtualService,
    /// `ns/name`.
    pub key: String,
    pub name: &'a str,
    pub namespace: &'a str,
    /// FQDNs (short names resolved in the VirtualService's namespace), lowercase.
    pub hosts: Vec<String>,
    /// `mesh` or `ns/name` (names resolved in the VirtualService's namespace).
    pub gateways: Vec<String>,
    pub export_to: Vec<String>,
}

/// `mesh` stays; `name` means `<namespace>/name`.
pub(crate) fn resolve_gateway_name(g: &str, namespace: &str) -> String {
    if g == "mesh" || g.contains('/') {
        g.to_string()
    } else {
        format!("{namespace}/{g}")
    }
}

/// Short names get `.<ns>.svc.cluster.local`; everything lowercase.
pub(crate) fn resolve_host(host: &str, namespace: &str) -> String {
    trellis_api::host::fqdn(host, namespace, CLUSTER_DOMAIN).to_ascii_lowercase()
}

/// Compile state for one proxy.
pub(crate) struct Compiler<'a> {
    pub resources: &'a [Resource],
    pub mesh: &'a MeshConfig,
    pub target: &'a ProxyTarget,
    pub registry: ServiceRegistry,
    pub rules: DestinationRules<'a>,
    /// Every VirtualService (delegates included), oldest first.
    pub vss: Vec<VsEntry<'a>>,
    pub listeners: Vec<Listener>,
    pub routes: BTreeMap<String, Arc<RouteTable>>,
    pub clusters: BTreeMap<String, Arc<Cluster>>,
    pub endpoints: BTreeMap<String, Arc<ClusterEndpoints>>,
    pub secrets: BTreeMap<String, Arc<TlsSecret>>,
    pub warnings: BTreeSet<String>,
    /// Outbound traffic to unknown destinations allowed (mesh setting, or the Sidecar's).
    pub allow_any: bool,
}

impl<'a> Compiler<'a> {
    pub fn new(resources: &'a [Resource], mesh: &'a MeshConfig, target: &'a ProxyTarget) -> Self {
        let mut vss: Vec<(&Resource, VsEntry)> = resources
            .iter()
            .filter_map(|r| match &r.object {
                Object::VirtualService(vs) => {
                    let ns = r.ns();
                    Some((
                        r,
                        VsEntry {
                            spec: vs.as_ref(),
                            key: r.key(),
                            name: r.name.as_str(),
                            namespace: ns,
                            hosts: vs.hosts.iter().map(|h| resolve_host(h, ns)).collect(),
                            gateways: vs
                                .gateways_or_mesh()
                                .into_iter()
                                .map(|g| resolve_gateway_name(g, ns))
                                .collect(),
                            export_to: if vs.export_to.is_empty() {
                                mesh.default_virtual_service_export_to.clone()
                            } else {
                                vs.export_to.clone()
                            },
                        },
                    ))
                }
                _ => None,
            })
            .collect();
        vss.sort_by(|(a, _), (b, _)| {
            (
                a.creation_timestamp.as_deref().unwrap_or(""),
                a.ns(),
                &a.name,
            )
                .cmp(&(
                    b.creation_timestamp.as_deref().unwrap_or(""),
                    b.ns(),
                    &b.name,
                ))
        });
        Compiler {
            resources,
            mesh,
            target,
            registry: ServiceRegistry::new(resources, mesh),
            rules: DestinationRules::new(resources, mesh),
            vss: vss.into_iter().map(|(_, v)| v).collect(),
            listeners: Vec::new(),
            routes: BTreeMap::new(),
            clusters: BTreeMap::new(),
            endpoints: BTreeMap::new(),
            secrets: BTreeMap::new(),
            warnings: BTreeSet::new(),
            allow_any: mesh.outbound_traffic_policy.mode
                == trellis_api::mesh::OutboundTrafficMode::AllowAny,
        }
    }

    pub fn warn(&mut self, message: impl Into<String>) {
        self.warnings.insert(message.into());
    }

    /// Ensures the cluster `outbound|port|subset|host` exists; returns its name.
    pub fn ensure_cluster(&mut self, host: &str, port: u16, subset: Option<&str>) -> String {
        let name = cluster_name(port, subset, host);
        if self.clusters.contains_key(&name) {
            return name;
        }
        let (cluster, endpoints, warnings) = {
            let service = self.registry.lookup(host, &self.target.namespace);
            let rule = self.rules.lookup(
                host,
                &self.target.namespace,
                &self.target.labels,
                service.map(|s| s.namespace.as_str()),
            );
            build_cluster(
                &ClusterRequest {
                    host,
                    port,
                    subset,
                    service,
                    rule: rule.as_ref(),
                    proxy_namespace: &self.target.namespace,
                    proxy_locality: self.target.locality.as_deref(),
                    proxy_labels: &self.target.labels,
                },
                self.mesh,
            )
        };
        for w in warnings {
            self.warn(w);
        }
        self.clusters.insert(name.clone(), Arc::new(cluster));
        self.endpoints.insert(name.clone(), Arc::new(endpoints));
        name
    }

    /// The cluster for a route destination: the host resolved in `namespace` (the rule's),
    /// port = the destination's, else the service's only port, else the listener port.
    pub fn destination_cluster(
        &mut self,
        dest: &Destination,
        namespace: &str,
        listener_port: u16,
        origin: &str,
    ) -> String {
        let host = resolve_host(&dest.host, namespace);
        let service_ports = self
            .registry
            .lookup(&host, &self.target.namespace)
            .map(|s| s.ports.iter().map(|p| p.number).collect::<Vec<_>>());
        let port = match (&dest.port, &service_ports) {
            (Some(p), _) => u16::try_from(p.number).unwrap_or(listener_port),
            (None, Some(ports)) if ports.len() == 1 => ports[0],
            _ => listener_port,
        };
        match &service_ports {
            None => self.warn(format!(
                "{origin}: destination host {host} is not a service visible from namespace {}: its cluster has no endpoints",
                self.target.namespace
            )),
            Some(ports) if !ports.contains(&port) => self.warn(format!(
                "{origin}: service {host} has no port {port}: its cluster has no endpoints"
            )),
            _ => {}
        }
        self.ensure_cluster(
            &host,
            port,
            dest.subset.as_deref().filter(|s| !s.is_empty()),
        )
    }

    /// Weighted clusters for destinations with Istio's relative weights (a lone destination
    /// gets everything; when every weight is 0 they share equally).
    pub fn weighted(
        &mut self,
        dests: Vec<(
            &Destination,
            Option<i32>,
            crate::config::HeaderOps,
            crate::config::HeaderOps,
        )>,
        namespace: &str,
        listener_port: u16,
        origin: &str,
    ) -> WeightedClusters {
        let weights =
            trellis_api::networking::relative_weights(dests.iter().map(|(_, w, _, _)| *w));
        let all_zero = weights.iter().all(|w| *w == 0);
        let mut clusters = Vec::new();
        for ((dest, _, req, resp), w) in dests.into_iter().zip(weights) {
            let cluster = self.destination_cluster(dest, namespace, listener_port, origin);
            clusters.push(WeightedCluster {
                cluster,
                weight: if all_zero { 1 } else { w },
                request_headers: req,
                response_headers: resp,
            });
        }
        let total_weight = clusters.iter().map(|c| c.weight).sum();
        WeightedClusters {
            clusters,
            total_weight,
        }
    }

    /// VirtualServices visible from the proxy's namespace.
    pub fn vs_visible(&self, vs: &VsEntry<'_>) -> bool {
        exported_to(&vs.export_to, vs.namespace, &self.target.namespace)
    }

    pub fn finish(self, version: &str) -> ProxyConfig {
        let t = self.target;
        ProxyConfig {
            version: version.to_string(),
            node: NodeInfo {
                kind: t.kind,
                id: format!("{}.{}", t.name, t.namespace),
                namespace: t.namespace.clone(),
                labels: t.labels.clone(),
                service_account: t.service_account.clone(),
                ip: t.ip,
                locality: t.locality.clone(),
            },
            mesh: MeshSettings {
                trust_domain: self.mesh.trust_domain.clone(),
                outbound_allow_any: self.allow_any,
                access_log_file: self.mesh.access_log_file.clone(),
                access_log_json: self.mesh.access_log_encoding
                    == trellis_api::mesh::AccessLogEncoding::Json,
            },
            listeners: self.listeners,
            routes: self.routes,
            clusters: self.clusters,
            endpoints: self.endpoints,
            secrets: self.secrets,
            security: Default::default(),
            tracing: Default::default(),
            warnings: self.warnings.into_iter().collect(),
        }
    }
}
