//! Per-proxy scoping: which resources of a snapshot a proxy receives.
//!
//! The rule is that a proxy gets everything the model could consult when compiling its
//! config, and may get more, never less (the `scoped_compile_equals_full_compile` test
//! checks this against full compiles):
//! - Services, ServiceEntries, DestinationRules: its namespace's, and those exported to it.
//! - VirtualServices: sidecars get those bound to `mesh`, visible to their namespace and (with
//!   a `Sidecar` resource) whose hosts its egress admits; gateways get those bound to the
//!   Gateways that select them; delegates (no hosts) go to everyone.
//! - AuthorizationPolicy, RequestAuthentication, Sidecar: its namespace and the root namespace.
//! - Gateways: only gateway proxies, those that select them.
//! - Secrets and Certificates: only gateway proxies, of their own namespace (credentials
//!   never reach sidecars).
//! - Workloads (WorkloadEntry, Pod, Deployment) and EndpointSlices: namespaces holding a
//!   Service or ServiceEntry the proxy can see, and its own.
//! - Namespaces, PeerAuthentications: everyone. ConfigMaps, ServiceAccounts: no one (the mesh
//!   config is sent on its own).
//!
//! Not narrowed further (correct first): Services and DestinationRules are not narrowed by
//! the Sidecar's egress hosts, because the model resolves route destinations against every
//! visible service.

use std::collections::{BTreeMap, BTreeSet};

use trellis_model::registry::exported_to;

use crate::snapshot::{Entry, Snapshot, Vis};

/// What a proxy is, as far as scoping cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scope {
    pub namespace: String,
    pub root_namespace: String,
    /// Whether its workload was found.
    pub found: bool,
    pub labels: BTreeMap<String, String>,
    pub service_account: String,
    pub is_gateway: bool,
    /// `ns/name` of the Gateways that select it (gateways only).
    pub gateway_keys: BTreeSet<String>,
    /// Egress `(namespace, host)` of the Sidecar resource in force (sidecars with one).
    pub egress: Option<Vec<(String, String)>>,
    /// Namespaces whose workloads it receives.
    pub endpoint_namespaces: BTreeSet<String>,
}

/// The workload `ns/name` in a snapshot: labels and service account (Pod, then Deployment,
/// then WorkloadEntry, as `find_target`).
pub fn find_workload(
    snap: &Snapshot,
    ns: &str,
    name: &str,
) -> Option<(BTreeMap<String, String>, String)> {
    ["Pod", "Deployment", "WorkloadEntry"].iter().find_map(|k| {
        let e = snap.entries.get(&format!("{k}/{ns}/{name}"))?;
        let w = trellis_model::registry::workloads(std::slice::from_ref(&e.resource))
            .into_iter()
            .next()?;
        Some((w.labels, w.service_account))
    })
}

fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The model's Sidecar egress check.
fn egress_admits(egress: &[(String, String)], proxy_ns: &str, owner: &str, host: &str) -> bool {
    egress.iter().any(|(ns, h)| {
        let ns_ok = match ns.as_str() {
            "*" => true,
            "." => owner == proxy_ns,
            "~" => false,
            n => n == owner,
        };
        ns_ok && trellis_api::host::host_matches(h, host)
    })
}

impl Scope {
    /// The scope of the proxy for workload `ns/name` in `snap`.
    pub fn compute(snap: &Snapshot, ns: &str, name: &str) -> Scope {
        let idx = &snap.index;
        let (found, labels, service_account) = match find_workload(snap, ns, name) {
            Some((l, sa)) => (true, l, sa),
            None => (false, BTreeMap::new(), String::new()),
        };
        let is_gateway = found
            && idx
                .gateways
                .iter()
                .any(|g| !g.selector.is_empty() && selects(&g.selector, &labels));
        let gateway_keys = if is_gateway {
            idx.gateways
                .iter()
                .filter(|g| selects(&g.selector, &labels))
                .map(|g| g.key.clone())
                .collect()
        } else {
            BTreeSet::new()
        };
        let egress = if is_gateway {
            None
        } else {
            idx.sidecars
                .iter()
                .find(|s| {
                    s.ns == ns
                        && s.selector
                            .as_ref()
                            .is_some_and(|sel| !sel.is_empty() && selects(sel, &labels))
                })
                .or_else(|| {
                    idx.sidecars
                        .iter()
                        .find(|s| s.ns == ns && s.selector.is_none())
                })
                .or_else(|| {
                    idx.sidecars
                        .iter()
                        .find(|s| s.ns == idx.root_namespace && s.selector.is_none())
                })
                .map(|s| s.egress.clone())
                .filter(|e| !e.is_empty())
        };
        let mut endpoint_namespaces: BTreeSet<String> = idx
            .service_exports
            .iter()
            .filter(|(owner, lists)| {
                owner.as_str() == ns || lists.iter().any(|l| exported_to(l, owner, ns))
            })
            .map(|(owner, _)| owner.clone())
            .collect();
        endpoint_namespaces.insert(ns.to_string());
        Scope {
            namespace: ns.to_string(),
            root_namespace: idx.root_namespace.clone(),
            found,
            labels,
            service_account,
            is_gateway,
            gateway_keys,
            egress,
            endpoint_namespaces,
        }
    }

    /// Whether the proxy receives `entry`.
    pub fn admits(&self, entry: &Entry) -> bool {
        let me = self.namespace.as_str();
        match &entry.vis {
            Vis::All => true,
            Vis::Never => false,
            Vis::Exported { ns, export_to } => ns == me || exported_to(export_to, ns, me),
            Vis::VirtualService {
                ns,
                export_to,
                hosts,
                gateways,
            } => {
                if !(ns == me || exported_to(export_to, ns, me)) {
                    return false;
                }
                if self.is_gateway {
                    gateways.iter().any(|g| self.gateway_keys.contains(g))
                } else {
                    gateways.iter().any(|g| g == "mesh")
                        && self
                            .egress
                            .as_ref()
                            .is_none_or(|e| hosts.iter().any(|h| egress_admits(e, me, ns, h)))
                }
            }
            Vis::Local { ns } => ns == me || *ns == self.root_namespace,
            Vis::GatewaySecret { ns } => self.is_gateway && ns == me,
            Vis::Gateway { selector } => self.is_gateway && selects(selector, &self.labels),
            Vis::Workload { ns } => self.endpoint_namespaces.contains(ns),
        }
    }
}
