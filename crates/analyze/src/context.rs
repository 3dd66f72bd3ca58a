//! `Context`: the resource set indexed the way analyzers ask questions of it (services by
//! host, workloads by labels, secrets by name), built once per analysis.

use std::collections::{BTreeMap, HashMap, HashSet};

use trellis_api::resource::{Kind, Object, Resource};
use trellis_api::{Location, MeshConfig, Unrecognized};

use crate::message::Message;
use crate::messages::MessageType;

/// A port of a Kubernetes Service.
#[derive(Clone, Debug)]
pub struct ServicePort {
    pub name: String,
    pub port: i32,
    pub protocol: String,
    pub app_protocol: Option<String>,
    /// The targetPort as written (number or name), or the port when unset.
    pub target_port: String,
}

/// A Kubernetes Service as analyzers see it.
#[derive(Clone, Debug)]
pub struct ServiceInfo<'a> {
    pub resource: &'a Resource,
    pub namespace: &'a str,
    pub name: &'a str,
    pub selector: BTreeMap<String, String>,
    pub ports: Vec<ServicePort>,
    pub type_: String,
}

/// Something that runs as a mesh workload: a Pod, a Deployment's pods, a WorkloadEntry.
#[derive(Clone, Debug)]
pub struct Workload<'a> {
    pub resource: &'a Resource,
    pub namespace: &'a str,
    pub labels: BTreeMap<String, String>,
    pub service_account: String,
    /// Container ports (number, name).
    pub ports: Vec<(i32, String)>,
    /// The node a Pod is scheduled on (`spec.nodeName`), when set.
    pub node_name: Option<String>,
}

/// The indexed resource set.
pub struct Context<'a> {
    /// Every resource, in input order (one definition per object).
    pub resources: &'a [&'a Resource],
    pub mesh: &'a MeshConfig,
    pub services: Vec<ServiceInfo<'a>>,
    pub workloads: Vec<Workload<'a>>,
    /// Namespace name -> its resource, when declared.
    pub namespaces: HashMap<&'a str, &'a Resource>,
    /// `ns/name` of every Secret that exists or will exist (cert-manager Certificates).
    pub secrets: HashSet<String>,
    /// Labels of the Nodes in the inputs (topology labels for DestinationRule subsets).
    pub nodes: HashMap<String, BTreeMap<String, String>>,
    /// Objects of kinds Trellis does not model (Gateway API routes, Nodes, ...), as read.
    pub unrecognized: Vec<&'a Unrecognized>,
    /// Resources grouped by kind, in input order.
    by_kind: HashMap<Kind, Vec<&'a Resource>>,
    /// (namespace, name) -> index in `services`.
    service_index: HashMap<(&'a str, &'a str), usize>,
    /// Namespace -> indexes in `services` / `workloads`, in order.
    services_by_namespace: HashMap<&'a str, Vec<usize>>,
    workloads_by_namespace: HashMap<&'a str, Vec<usize>>,
    /// DestinationRules by the lowercased FQDN of their host; wildcard hosts apart, with it.
    rules_by_host: HashMap<String, Vec<&'a Resource>>,
    wildcard_rules: Vec<(String, &'a Resource)>,
    messages: Vec<Message>,
}

impl<'a> Context<'a> {
    pub fn new(resources: &'a [&'a Resource], mesh: &'a MeshConfig) -> Self {
        let mut services = Vec::new();
        let mut workloads = Vec::new();
        let mut namespaces = HashMap::new();
        let mut secrets = HashSet::new();
        for &r in resources {
            match &r.object {
                Object::Service(s) => {
                    let spec = s.spec.clone().unwrap_or_default();
                    let ports = spec
                        .ports
                        .unwrap_or_default()
                        .into_iter()
                        .map(|p| ServicePort {
                            name: p.name.unwrap_or_default(),
                            port: p.port,
                            protocol: p.protocol.unwrap_or_else(|| "TCP".into()),
                            app_protocol: p.app_protocol,
                            target_port: match p.target_port {
                                Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(i)) => i.to_string(),
                                Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(s)) => s,
                                None => p.port.to_string(),
                            },
                        })
                        .collect();
                    services.push(ServiceInfo {
                        resource: r,
                        namespace: r.ns(),
                        name: &r.name,
                        selector: spec.selector.unwrap_or_default(),
                        ports,
                        type_: spec.type_.unwrap_or_else(|| "ClusterIP".into()),
                    });
                }
                Object::Deployment(d) => {
                    let tpl = Some(&d.spec.template);
                    let labels = tpl
                        .and_then(|t| t.metadata.as_ref())
                        .and_then(|m| m.labels.clone())
                        .unwrap_or_default();
                    let pod = tpl.and_then(|t| t.spec.as_ref());
                    workloads.push(Workload {
                        resource: r,
                        namespace: r.ns(),
                        labels,
                        service_account: pod
                            .and_then(|p| p.service_account_name.clone())
                            .unwrap_or_else(|| "default".into()),
                        ports: pod.map(container_ports).unwrap_or_default(),
                        node_name: None,
                    });
                }
                Object::Pod(p) => {
                    let pod = p.spec.as_ref();
                    workloads.push(Workload {
                        resource: r,
                        namespace: r.ns(),
                        labels: r.labels.clone(),
                        service_account: pod
                            .and_then(|p| p.service_account_name.clone())
                            .unwrap_or_else(|| "default".into()),
                        ports: pod.map(container_ports).unwrap_or_default(),
                        node_name: pod.and_then(|p| p.node_name.clone()),
                    });
                }
                Object::Namespace(_) => {
                    namespaces.insert(r.name.as_str(), r);
                }
                Object::Secret(_) => {
                    secrets.insert(r.key());
                }
                Object::Certificate(c) if !c.spec.secret_name.is_empty() => {
                    secrets.insert(format!("{}/{}", r.ns(), c.spec.secret_name));
                }
                _ => {}
            }
        }
        crate::analyzers::workload_entries(resources, &mut workloads);
        let mut by_kind: HashMap<Kind, Vec<&'a Resource>> = HashMap::new();
        for r in resources {
            by_kind.entry(r.kind).or_default().push(r);
        }
        let service_index = services
            .iter()
            .enumerate()
            .map(|(i, s)| ((s.namespace, s.name), i))
            .collect();
        let mut services_by_namespace: HashMap<&'a str, Vec<usize>> = HashMap::new();
        for (i, s) in services.iter().enumerate() {
            services_by_namespace
                .entry(s.namespace)
                .or_default()
                .push(i);
        }
        let mut workloads_by_namespace: HashMap<&'a str, Vec<usize>> = HashMap::new();
        for (i, w) in workloads.iter().enumerate() {
            workloads_by_namespace
                .entry(w.namespace)
                .or_default()
                .push(i);
        }
        let mut cx = Context {
            by_kind,
            service_index,
            services_by_namespace,
            workloads_by_namespace,
            rules_by_host: HashMap::new(),
            wildcard_rules: Vec::new(),
            resources,
            mesh,
            services,
            workloads,
            namespaces,
            secrets,
            nodes: HashMap::new(),
            unrecognized: Vec::new(),
            messages: Vec::new(),
        };
        for r in cx.of_kind(Kind::DestinationRule).collect::<Vec<_>>() {
            let Object::DestinationRule(dr) = &r.object else {
                continue;
            };
            let host = cx.fqdn(&dr.host, r.ns()).to_ascii_lowercase();
            if host.starts_with('*') {
                cx.wildcard_rules.push((host, r));
            } else {
                cx.rules_by_host.entry(host).or_default().push(r);
            }
        }
        cx
    }

    /// DestinationRules whose host covers the concrete FQDN `fqdn` (exact hosts first, then
    /// wildcards), in input order within each.
    pub fn destination_rules_for<'s>(
        &'s self,
        fqdn: &str,
    ) -> impl Iterator<Item = &'a Resource> + 's {
        let fqdn = fqdn.to_ascii_lowercase();
        let exact = self.rules_by_host.get(&fqdn).into_iter().flatten().copied();
        let wild = self
            .wildcard_rules
            .iter()
            .filter(move |(h, _)| trellis_api::host::host_matches(h, &fqdn))
            .map(|(_, r)| *r);
        exact.chain(wild)
    }

    /// Adds the objects of kinds Trellis does not model, and records the labels of the `v1 Node`
    /// objects among them.
    pub fn add_unrecognized(&mut self, unrecognized: Vec<&'a Unrecognized>) {
        for u in unrecognized {
            self.unrecognized.push(u);
            if u.kind != "Node" || u.api_version != "v1" {
                continue;
            }
            let labels = u
                .raw
                .get("metadata")
                .and_then(|m| m.get("labels"))
                .and_then(|l| l.as_object())
                .map(|l| {
                    l.iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                        .collect()
                })
                .unwrap_or_default();
            self.nodes.insert(u.name.clone(), labels);
        }
    }

    /// Whether the Service `ns/name` is visible from `from_ns` under its
    /// `networking.istio.io/exportTo` annotation (everywhere when unset).
    pub fn service_visible(&self, svc: &ServiceInfo, from_ns: &str) -> bool {
        match svc.resource.annotations.get("networking.istio.io/exportTo") {
            None => true,
            Some(list) => {
                let export: Vec<String> = list
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect();
                exported_to(&export, svc.namespace, from_ns)
            }
        }
    }

    /// Resources of one kind.
    pub fn of_kind(&self, kind: Kind) -> impl Iterator<Item = &'a Resource> + '_ {
        self.by_kind
            .get(&kind)
            .map(|v| v.as_slice())
            .unwrap_or_default()
            .iter()
            .copied()
    }

    /// The cluster's DNS suffix for short names.
    pub fn domain_suffix(&self) -> &str {
        "svc.cluster.local"
    }

    /// Resolves a host as written in `namespace` to its FQDN: short names (no dot) get
    /// `.<namespace>.svc.cluster.local`, as Istio does.
    pub fn fqdn(&self, host: &str, namespace: &str) -> String {
        if host.contains('.') || host == "*" {
            host.to_string()
        } else {
            format!("{host}.{namespace}.{}", self.domain_suffix())
        }
    }

    /// The Kubernetes Service behind an FQDN `name.ns.svc.cluster.local`.
    pub fn service_by_fqdn(&self, fqdn: &str) -> Option<&ServiceInfo<'a>> {
        let rest = fqdn.strip_suffix(self.domain_suffix())?.strip_suffix('.')?;
        let (name, ns) = rest.split_once('.')?;
        let i = *self.service_index.get(&(ns, name))?;
        self.services.get(i)
    }

    /// Workloads in `namespace` (or anywhere when `None`) whose labels include `selector`.
    pub fn workloads_matching<'s>(
        &'s self,
        namespace: Option<&'s str>,
        selector: &'s BTreeMap<String, String>,
    ) -> impl Iterator<Item = &'s Workload<'a>> + 's {
        let all: Box<dyn Iterator<Item = &'s Workload<'a>> + 's> = match namespace {
            None => Box::new(self.workloads.iter()),
            Some(ns) => Box::new(self.workloads_in(ns)),
        };
        all.filter(move |w| selector.iter().all(|(k, v)| w.labels.get(k) == Some(v)))
    }

    /// The Kubernetes Services of a namespace, in input order.
    pub fn services_in<'s>(
        &'s self,
        namespace: &str,
    ) -> impl Iterator<Item = &'s ServiceInfo<'a>> + 's {
        self.services_by_namespace
            .get(namespace)
            .into_iter()
            .flatten()
            .map(|&i| &self.services[i])
    }

    /// The workloads of a namespace, in input order.
    pub fn workloads_in<'s>(
        &'s self,
        namespace: &str,
    ) -> impl Iterator<Item = &'s Workload<'a>> + 's {
        self.workloads_by_namespace
            .get(namespace)
            .into_iter()
            .flatten()
            .map(|&i| &self.workloads[i])
    }

    /// Services of the workload's namespace whose (non-empty) selector its labels satisfy.
    pub fn services_selecting<'s>(
        &'s self,
        w: &'s Workload<'a>,
    ) -> impl Iterator<Item = &'s ServiceInfo<'a>> + 's {
        self.services_in(w.namespace).filter(move |s| {
            !s.selector.is_empty() && s.selector.iter().all(|(k, v)| w.labels.get(k) == Some(v))
        })
    }

    /// Whether `fqdn` names a Kubernetes Service or a ServiceEntry host visible from `from_ns`.
    pub fn host_exists(&self, fqdn: &str, from_ns: &str) -> bool {
        self.service_by_fqdn(fqdn)
            .is_some_and(|s| self.service_visible(s, from_ns))
            || self.service_entry_for(fqdn, from_ns).is_some()
    }

    /// A ServiceEntry visible from `from_ns` with a host covering `fqdn`.
    pub fn service_entry_for(&self, fqdn: &str, from_ns: &str) -> Option<&'a Resource> {
        self.of_kind(Kind::ServiceEntry).find(|r| {
            let Object::ServiceEntry(se) = &r.object else {
                return false;
            };
            exported_to(&se.export_to, r.ns(), from_ns)
                && se
                    .hosts
                    .iter()
                    .any(|h| trellis_api::host::host_matches(h, fqdn))
        })
    }

    /// Port numbers a destination host exposes (Service ports or ServiceEntry ports).
    pub fn host_ports(&self, fqdn: &str, from_ns: &str) -> Option<Vec<u32>> {
        if let Some(s) = self
            .service_by_fqdn(fqdn)
            .filter(|s| self.service_visible(s, from_ns))
        {
            return Some(s.ports.iter().map(|p| p.port as u32).collect());
        }
        let r = self.service_entry_for(fqdn, from_ns)?;
        let Object::ServiceEntry(se) = &r.object else {
            return None;
        };
        Some(se.ports.iter().map(|p| p.number).collect())
    }

    /// The Gateway `ns/name`.
    pub fn gateway(&self, namespace: &str, name: &str) -> Option<&'a Resource> {
        self.of_kind(Kind::Gateway)
            .find(|r| r.name == name && r.ns() == namespace)
    }

    /// Records a message about `resource`, located at the resource (file:line).
    pub fn report(&mut self, kind: MessageType, resource: &Resource, text: impl Into<String>) {
        let m =
            Message::new(kind, text).about(resource.reference(), resource.origin.location.clone());
        self.messages.push(m);
    }

    /// Records a message about `resource` located at one of its fields.
    pub fn report_at(
        &mut self,
        kind: MessageType,
        resource: &Resource,
        field: &str,
        text: impl Into<String>,
    ) {
        let mut m =
            Message::new(kind, text).about(resource.reference(), resource.origin.locate(field));
        m.precise = false;
        self.messages.push(m);
    }

    /// Records a message with an explicit location.
    pub fn push(&mut self, message: Message) {
        self.messages.push(message);
    }

    pub fn into_messages(self) -> Vec<Message> {
        self.messages
    }

    /// Location helper for tests and callers.
    pub fn location_of(resource: &Resource) -> Location {
        resource.origin.location.clone()
    }
}

/// Whether a resource in `owner_ns` with `exportTo` is visible from `from_ns` (empty = `*`).
pub fn exported_to(export_to: &[String], owner_ns: &str, from_ns: &str) -> bool {
    export_to.is_empty()
        || export_to
            .iter()
            .any(|e| e == "*" || (e == "." && owner_ns == from_ns) || e == from_ns)
}

fn container_ports(pod: &k8s_openapi::api::core::v1::PodSpec) -> Vec<(i32, String)> {
    pod.containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .map(|p| (p.container_port, p.name.clone().unwrap_or_default()))
        .collect()
}
