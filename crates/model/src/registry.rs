//! The service registry: every service a proxy may call, with its ports, protocols and the
//! workload instances behind it, built from the resources alone (no I/O).
//!
//! Sources, as Istio's:
//! - Kubernetes `Service`s (host `name.ns.svc.cluster.local`): ports with the protocol chosen
//!   by `appProtocol`, then by port-name prefix (`http`, `http2`, `https`, `grpc`, `grpc-web`,
//!   `tcp`, `tls`, `mongo`, `redis`, `mysql`); anything else is a port Istio would sniff, which
//!   we treat as TCP (`ServicePort::sniffed` says so). Instances come from the Service's
//!   `EndpointSlice`s when there are any, else from the Pods, Deployments (pod templates: no
//!   address) and WorkloadEntries of its namespace that its selector selects.
//! - `ServiceEntry`s (one service per host): `addresses`, ports, location, resolution,
//!   inline `endpoints` or a `workloadSelector` selecting WorkloadEntries and Pods.
//!
//! Each instance carries its labels (for subsets), weight, service account, SPIFFE identity
//! and whether it runs in the mesh (has a sidecar). Does not own: DestinationRule policy
//! (`cluster`), the per-proxy view (`compile`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Serialize;
use trellis_api::networking::{
    Location, Protocol, Resolution as SeResolution, ServiceEntry, WorkloadEntry,
};
use trellis_api::{MeshConfig, Object, Resource};

use crate::config::{Endpoint, EndpointAddress};

/// Kubernetes cluster DNS domain (`svc.cluster.local`).
pub const CLUSTER_DOMAIN: &str = "cluster.local";
/// Service annotation Istio reads for a Kubernetes Service's visibility.
pub const EXPORT_TO_ANNOTATION: &str = "networking.istio.io/exportTo";
/// Pod label/annotation that turns injection off (`"false"`) or on (`"true"`).
pub const INJECT_LABEL: &str = "sidecar.istio.io/inject";
/// Label naming the EndpointSlice's Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Endpoint label Istio uses for the endpoint's TLS mode (`istio` / `disabled`).
const TLS_MODE_LABEL: &str = "security.istio.io/tlsMode";

/// Where a service was declared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum ServiceSource {
    Kubernetes,
    ServiceEntry,
}

/// How a service's endpoints are found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Resolution {
    /// Known instance addresses (Kubernetes, ServiceEntry STATIC).
    Static,
    /// Resolve the instance host names by DNS (ServiceEntry DNS, DYNAMIC_DNS, ExternalName).
    Dns,
    /// DNS, one answer per connection (ServiceEntry DNS_ROUND_ROBIN).
    DnsRoundRobin,
    /// Forward to the connection's original destination (ServiceEntry NONE).
    Passthrough,
}

/// Where an instance's port comes from when the service names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum TargetPort {
    Number(u16),
    /// A container port name (Kubernetes `targetPort: http`).
    Name(String),
}

/// One port of a service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ServicePort {
    pub number: u16,
    pub name: String,
    /// The protocol in effect (TCP for ports Istio would sniff).
    #[serde(serialize_with = "ser_protocol")]
    pub protocol: Protocol,
    /// No protocol could be selected: Istio sniffs such ports; we treat them as TCP
    /// listeners and let HTTP routed to them keep the caller's protocol.
    pub sniffed: bool,
    pub target_port: TargetPort,
}

impl ServicePort {
    /// HTTP-family port (routed by `http` rules on sidecars).
    pub fn is_http(&self) -> bool {
        !self.sniffed && self.protocol.is_http()
    }
}

fn ser_protocol<S: serde::Serializer>(p: &Protocol, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{p:?}").to_ascii_uppercase())
}

/// An instance address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum InstanceAddress {
    Ip(IpAddr),
    /// Resolved by DNS (ServiceEntry DNS endpoints, the hosts of DNS entries without endpoints).
    Dns(String),
}

/// One workload instance behind a service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Instance {
    /// `Kind ns/name` of the workload (or `ServiceEntry ns/name endpoints[i]`).
    pub workload: String,
    /// `None` when the workload's address is not known (Deployment pods in manifests).
    pub address: Option<InstanceAddress>,
    /// Service port number -> port on the instance (absent: the instance does not serve it).
    pub ports: BTreeMap<u16, u16>,
    pub labels: BTreeMap<String, String>,
    pub weight: u32,
    pub service_account: Option<String>,
    /// SPIFFE identity when the instance is in the mesh and its service account is known.
    pub identity: Option<String>,
    /// Runs with a sidecar (auto mTLS sends Istio mTLS only to those).
    pub mesh: bool,
    pub locality: Option<String>,
}

/// A service: one host with ports and instances.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Service {
    /// FQDN (`reviews.bookinfo.svc.cluster.local`) or the ServiceEntry host, lowercase.
    pub host: String,
    pub namespace: String,
    /// Name of the Service / ServiceEntry resource.
    pub name: String,
    pub source: ServiceSource,
    /// Virtual IPs: the ClusterIP(s), or the ServiceEntry's `addresses`.
    pub addresses: Vec<IpNet>,
    pub ports: Vec<ServicePort>,
    /// Effective `exportTo` (the mesh default when unset).
    pub export_to: Vec<String>,
    pub resolution: Resolution,
    /// ServiceEntry MESH_EXTERNAL, Kubernetes ExternalName.
    pub mesh_external: bool,
    pub instances: Vec<Instance>,
    /// ServiceEntry `subjectAltNames`: identities its instances may present.
    pub subject_alt_names: Vec<String>,
    /// Creation timestamp ("" when unset) for Istio's oldest-first tie breaks.
    pub creation: String,
}

impl Service {
    /// Whether a proxy in `namespace` can see this service.
    pub fn visible_to(&self, namespace: &str) -> bool {
        exported_to(&self.export_to, &self.namespace, namespace)
    }

    pub fn port(&self, number: u16) -> Option<&ServicePort> {
        self.ports.iter().find(|p| p.number == number)
    }

    /// The Kubernetes short name (`reviews`), when this is a Kubernetes Service.
    pub fn short_name(&self) -> Option<&str> {
        (self.source == ServiceSource::Kubernetes).then_some(self.name.as_str())
    }

    /// True when some instance runs with a sidecar.
    pub fn has_mesh_instances(&self) -> bool {
        self.instances.iter().any(|i| i.mesh)
    }

    /// SPIFFE identities the instances present (sorted, deduplicated), plus `subjectAltNames`.
    pub fn identities(&self) -> Vec<String> {
        let mut ids: BTreeSet<String> = self
            .instances
            .iter()
            .filter_map(|i| i.identity.clone())
            .collect();
        ids.extend(self.subject_alt_names.iter().cloned());
        ids.into_iter().collect()
    }

    /// Endpoints serving `port`, optionally only those carrying all `subset` labels. Instances
    /// without a known address are left out.
    pub fn endpoints(&self, port: u16, subset: Option<&BTreeMap<String, String>>) -> Vec<Endpoint> {
        let mut out = Vec::new();
        for inst in &self.instances {
            if let Some(labels) = subset {
                if !labels.iter().all(|(k, v)| inst.labels.get(k) == Some(v)) {
                    continue;
                }
            }
            let (Some(addr), Some(p)) = (&inst.address, inst.ports.get(&port)) else {
                continue;
            };
            let address = match addr {
                InstanceAddress::Ip(ip) => EndpointAddress::Socket((*ip, *p).into()),
                InstanceAddress::Dns(h) => match h.parse::<IpAddr>() {
                    Ok(ip) => EndpointAddress::Socket((ip, *p).into()),
                    Err(_) => EndpointAddress::Dns {
                        host: h.clone(),
                        port: *p,
                    },
                },
            };
            out.push(Endpoint {
                address,
                labels: inst.labels.clone(),
                weight: inst.weight,
                identity: inst.identity.clone(),
                mesh: inst.mesh,
                locality: inst.locality.clone(),
                priority: 0,
            });
        }
        out
    }
}

/// Whether a resource in `owner` with `export_to` is visible from `namespace`:
/// `*` everywhere, `.` its own namespace, `~` nowhere, else the namespaces listed.
pub fn exported_to(export_to: &[String], owner: &str, namespace: &str) -> bool {
    if export_to.is_empty() {
        return true;
    }
    export_to.iter().any(|e| match e.as_str() {
        "*" => true,
        "." => owner == namespace,
        "~" => false,
        ns => ns == namespace,
    })
}

/// Kind of a workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum WorkloadKind {
    Pod,
    Deployment,
    WorkloadEntry,
}

impl WorkloadKind {
    pub fn name(self) -> &'static str {
        match self {
            WorkloadKind::Pod => "Pod",
            WorkloadKind::Deployment => "Deployment",
            WorkloadKind::WorkloadEntry => "WorkloadEntry",
        }
    }
}

/// Something that runs: a Pod, a Deployment's pods (template), a WorkloadEntry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Workload {
    pub kind: WorkloadKind,
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub service_account: String,
    pub address: Option<InstanceAddress>,
    /// Named ports: container ports (name may be empty) or the WorkloadEntry `ports` map.
    pub ports: Vec<(String, u16)>,
    pub mesh: bool,
    pub weight: u32,
    pub locality: Option<String>,
}

impl Workload {
    /// `Kind ns/name`.
    pub fn key(&self) -> String {
        format!("{} {}/{}", self.kind.name(), self.namespace, self.name)
    }

    fn port_named(&self, name: &str) -> Option<u16> {
        if name.is_empty() {
            return None;
        }
        self.ports.iter().find(|(n, _)| n == name).map(|(_, p)| *p)
    }

    fn instance(&self, ports: BTreeMap<u16, u16>, trust_domain: &str) -> Instance {
        Instance {
            workload: self.key(),
            address: self.address.clone(),
            ports,
            labels: self.labels.clone(),
            weight: self.weight,
            service_account: Some(self.service_account.clone()),
            identity: self
                .mesh
                .then(|| spiffe_id(trust_domain, &self.namespace, &self.service_account)),
            mesh: self.mesh,
            locality: self.locality.clone(),
        }
    }
}

/// `spiffe://<trust domain>/ns/<ns>/sa/<sa>`.
pub fn spiffe_id(trust_domain: &str, namespace: &str, service_account: &str) -> String {
    format!("spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}")
}

/// The protocol of a port from its `appProtocol`, else its name, as Istio's
/// `kube.ConvertProtocol`: `(protocol, sniffed)`. UDP ports stay UDP.
pub fn port_protocol(name: &str, app_protocol: Option<&str>, l4: Option<&str>) -> (Protocol, bool) {
    if l4.is_some_and(|p| p.eq_ignore_ascii_case("UDP")) {
        return (Protocol::Udp, false);
    }
    let mut candidate = name;
    if let Some(app) = app_protocol.filter(|a| !a.is_empty()) {
        match app {
            "kubernetes.io/h2c" => return (Protocol::Http2, false),
            "kubernetes.io/ws" => return (Protocol::Http, false),
            "kubernetes.io/wss" => return (Protocol::Https, false),
            _ => candidate = app,
        }
    }
    if candidate.to_ascii_lowercase().starts_with("grpc-web") {
        return (Protocol::GrpcWeb, false);
    }
    let prefix = candidate.split('-').next().unwrap_or("");
    match Protocol::parse(prefix) {
        Some(Protocol::Udp) | None => (Protocol::Tcp, true),
        Some(p) => (p, false),
    }
}

/// Namespace labels, for injection decisions.
struct Namespaces<'a> {
    labels: BTreeMap<&'a str, &'a BTreeMap<String, String>>,
}

impl<'a> Namespaces<'a> {
    fn new(resources: &'a [Resource]) -> Self {
        let labels = resources
            .iter()
            .filter(|r| matches!(r.object, Object::Namespace(_)))
            .map(|r| (r.name.as_str(), &r.labels))
            .collect();
        Namespaces { labels }
    }

    /// Whether a pod with these labels/annotations in `ns` gets a sidecar (Istio's default
    /// injection webhooks: namespace `istio-injection=enabled` or `istio.io/rev`, unless the pod
    /// says `sidecar.istio.io/inject: "false"`; a pod saying `"true"` is injected unless the
    /// namespace says `istio-injection=disabled`).
    fn injected(
        &self,
        ns: &str,
        labels: &BTreeMap<String, String>,
        annotations: &BTreeMap<String, String>,
    ) -> bool {
        let ns_labels = self.labels.get(ns);
        let ns_injection = ns_labels.and_then(|l| l.get("istio-injection"));
        if ns_injection.is_some_and(|v| v == "disabled") {
            return false;
        }
        let pod_flag = labels
            .get(INJECT_LABEL)
            .or_else(|| annotations.get(INJECT_LABEL));
        if pod_flag.is_some_and(|v| v == "false") {
            return false;
        }
        ns_injection.is_some_and(|v| v == "enabled")
            || ns_labels.is_some_and(|l| l.contains_key("istio.io/rev"))
            || pod_flag.is_some_and(|v| v == "true")
            || labels.contains_key("istio.io/rev")
    }
}

fn container_ports(spec: Option<&PodSpec>) -> Vec<(String, u16)> {
    let mut out = Vec::new();
    for c in spec.map(|s| s.containers.as_slice()).unwrap_or_default() {
        for p in c.ports.as_deref().unwrap_or_default() {
            if p.protocol
                .as_deref()
                .is_some_and(|x| x.eq_ignore_ascii_case("UDP"))
            {
                continue;
            }
            if let Ok(n) = u16::try_from(p.container_port) {
                out.push((p.name.clone().unwrap_or_default(), n));
            }
        }
    }
    out
}

/// Every workload in the resources: Pods, Deployments (their pod template) and
/// WorkloadEntries, in resource order.
pub fn workloads(resources: &[Resource]) -> Vec<Workload> {
    let namespaces = Namespaces::new(resources);
    let mut out = Vec::new();
    for r in resources {
        match &r.object {
            Object::Pod(p) => {
                let spec = p.spec.as_ref();
                let address = p
                    .status
                    .as_ref()
                    .and_then(|s| s.pod_ip.as_deref())
                    .and_then(|ip| ip.parse().ok())
                    .map(InstanceAddress::Ip);
                out.push(Workload {
                    kind: WorkloadKind::Pod,
                    namespace: r.ns().to_string(),
                    name: r.name.clone(),
                    labels: r.labels.clone(),
                    service_account: service_account(spec),
                    address,
                    ports: container_ports(spec),
                    mesh: namespaces.injected(r.ns(), &r.labels, &r.annotations),
                    weight: 1,
                    locality: label_locality(&r.labels),
                });
            }
            Object::Deployment(d) => {
                let dspec = &d.spec;
                let meta = dspec.template.metadata.as_ref();
                let labels = meta.and_then(|m| m.labels.clone()).unwrap_or_default();
                let annotations = meta.and_then(|m| m.annotations.clone()).unwrap_or_default();
                let spec = dspec.template.spec.as_ref();
                out.push(Workload {
                    kind: WorkloadKind::Deployment,
                    namespace: r.ns().to_string(),
                    name: r.name.clone(),
                    mesh: namespaces.injected(r.ns(), &labels, &annotations),
                    locality: label_locality(&labels),
                    labels,
                    service_account: service_account(spec),
                    address: None,
                    ports: container_ports(spec),
                    weight: 1,
                });
            }
            Object::WorkloadEntry(we) => {
                out.push(workload_entry(r.ns(), &r.name, we, &r.labels));
            }
            _ => {}
        }
    }
    out
}

fn service_account(spec: Option<&PodSpec>) -> String {
    spec.and_then(|s| {
        s.service_account_name
            .clone()
            .or_else(|| s.service_account.clone())
    })
    .filter(|s| !s.is_empty())
    .unwrap_or_else(|| "default".to_string())
}

fn workload_entry(
    ns: &str,
    name: &str,
    we: &WorkloadEntry,
    meta_labels: &BTreeMap<String, String>,
) -> Workload {
    // Istio uses the spec labels; metadata labels fill in what the spec does not say.
    let mut labels = meta_labels.clone();
    labels.extend(we.labels.clone());
    let mesh = labels.get(TLS_MODE_LABEL).is_none_or(|m| m != "disabled");
    Workload {
        kind: WorkloadKind::WorkloadEntry,
        namespace: ns.to_string(),
        name: name.to_string(),
        labels,
        service_account: we
            .service_account
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "default".to_string()),
        address: instance_address(we.address.as_deref()),
        ports: we
            .ports
            .iter()
            .filter_map(|(n, p)| u16::try_from(*p).ok().map(|p| (n.clone(), p)))
            .collect(),
        mesh,
        weight: we.weight_or_default(),
        locality: we.locality.clone(),
    }
}

/// An IP, or a host name; unix sockets and empty addresses are not addressable here.
fn instance_address(address: Option<&str>) -> Option<InstanceAddress> {
    let a = address?.trim();
    if a.is_empty() || a.starts_with("unix://") {
        return None;
    }
    Some(match a.parse::<IpAddr>() {
        Ok(ip) => InstanceAddress::Ip(ip),
        Err(_) => InstanceAddress::Dns(a.to_ascii_lowercase()),
    })
}

fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// All services of a resource set.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ServiceRegistry {
    /// Sorted by host, then oldest first.
    services: Vec<Service>,
    workloads: Vec<Workload>,
}

impl ServiceRegistry {
    /// Builds the registry from Services, ServiceEntries, EndpointSlices, Pods, Deployments and
    /// WorkloadEntries.
    pub fn new(resources: &[Resource], mesh: &MeshConfig) -> Self {
        let workloads = workloads(resources);
        let td = mesh.trust_domain.as_str();
        let mut services = Vec::new();
        for r in resources {
            match &r.object {
                Object::Service(svc) => {
                    services.push(kubernetes_service(r, svc, resources, &workloads, mesh));
                }
                Object::ServiceEntry(se) => {
                    services.extend(service_entry(r, se, &workloads, mesh, td));
                }
                _ => {}
            }
        }
        services.sort_by(|a, b| {
            (&a.host, &a.creation, &a.namespace, &a.name).cmp(&(
                &b.host,
                &b.creation,
                &b.namespace,
                &b.name,
            ))
        });
        ServiceRegistry {
            services,
            workloads,
        }
    }

    pub fn services(&self) -> &[Service] {
        &self.services
    }

    pub fn workloads(&self) -> &[Workload] {
        &self.workloads
    }

    /// Services visible from `namespace`; for a host declared several times, the one in
    /// `namespace` wins, else the oldest.
    pub fn visible_to(&self, namespace: &str) -> Vec<&Service> {
        let mut by_host: BTreeMap<&str, &Service> = BTreeMap::new();
        for s in self.services.iter().filter(|s| s.visible_to(namespace)) {
            match by_host.get(s.host.as_str()) {
                Some(prev) if prev.namespace == namespace || s.namespace != namespace => {}
                _ => {
                    by_host.insert(&s.host, s);
                }
            }
        }
        by_host.into_values().collect()
    }

    /// The service for `host` (FQDN) as seen from `namespace`.
    pub fn lookup(&self, host: &str, namespace: &str) -> Option<&Service> {
        let host = host.to_ascii_lowercase();
        let mut found: Option<&Service> = None;
        for s in self
            .services
            .iter()
            .filter(|s| s.host == host && s.visible_to(namespace))
        {
            if found.is_none()
                || (s.namespace == namespace && found.unwrap().namespace != namespace)
            {
                found = Some(s);
            }
        }
        found
    }

    /// The workload `kind ns/name`.
    pub fn workload(&self, namespace: &str, name: &str) -> Option<&Workload> {
        [
            WorkloadKind::Pod,
            WorkloadKind::Deployment,
            WorkloadKind::WorkloadEntry,
        ]
        .iter()
        .find_map(|k| {
            self.workloads
                .iter()
                .find(|w| w.kind == *k && w.namespace == namespace && w.name == name)
        })
    }
}

fn export_to_or_default(list: &[String], default: &[String]) -> Vec<String> {
    if list.is_empty() {
        default.to_vec()
    } else {
        list.to_vec()
    }
}

fn kubernetes_service(
    r: &Resource,
    svc: &k8s_openapi::api::core::v1::Service,
    resources: &[Resource],
    workloads: &[Workload],
    mesh: &MeshConfig,
) -> Service {
    let ns = r.ns();
    let spec = svc.spec.clone().unwrap_or_default();
    let host = format!("{}.{ns}.svc.{CLUSTER_DOMAIN}", r.name).to_ascii_lowercase();
    let mut ports = Vec::new();
    for p in spec.ports.as_deref().unwrap_or_default() {
        let Ok(number) = u16::try_from(p.port) else {
            continue;
        };
        let name = p.name.clone().unwrap_or_default();
        let (protocol, sniffed) =
            port_protocol(&name, p.app_protocol.as_deref(), p.protocol.as_deref());
        let target_port = match &p.target_port {
            Some(IntOrString::Int(i)) => {
                TargetPort::Number(u16::try_from(*i).ok().filter(|n| *n != 0).unwrap_or(number))
            }
            Some(IntOrString::String(s)) => match s.parse::<u16>() {
                Ok(n) if n != 0 => TargetPort::Number(n),
                _ if s.is_empty() => TargetPort::Number(number),
                _ => TargetPort::Name(s.clone()),
            },
            None => TargetPort::Number(number),
        };
        ports.push(ServicePort {
            number,
            name,
            protocol,
            sniffed,
            target_port,
        });
    }
    let mut addresses = Vec::new();
    let mut ips: Vec<&str> = spec.cluster_ip.as_deref().into_iter().collect();
    ips.extend(spec.cluster_ips.iter().flatten().map(String::as_str));
    for ip in ips {
        if let Ok(ip) = ip.parse::<IpAddr>() {
            let net = IpNet::from(ip);
            if !addresses.contains(&net) {
                addresses.push(net);
            }
        }
    }
    let export_to = r
        .annotations
        .get(EXPORT_TO_ANNOTATION)
        .map(|a| {
            a.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
        })
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| mesh.default_service_export_to.clone());

    let td = mesh.trust_domain.as_str();
    let mut service = Service {
        host,
        namespace: ns.to_string(),
        name: r.name.clone(),
        source: ServiceSource::Kubernetes,
        addresses,
        ports,
        export_to,
        resolution: Resolution::Static,
        mesh_external: false,
        instances: Vec::new(),
        subject_alt_names: Vec::new(),
        creation: r.creation_timestamp.clone().unwrap_or_default(),
    };

    if spec.type_.as_deref() == Some("ExternalName") {
        if let Some(ext) = spec.external_name.as_deref().filter(|e| !e.is_empty()) {
            service.resolution = Resolution::Dns;
            service.mesh_external = true;
            service.instances.push(Instance {
                workload: format!("Service {}/{} externalName", ns, r.name),
                address: Some(InstanceAddress::Dns(ext.to_ascii_lowercase())),
                ports: service.ports.iter().map(|p| (p.number, p.number)).collect(),
                labels: BTreeMap::new(),
                weight: 1,
                service_account: None,
                identity: None,
                mesh: false,
                locality: None,
            });
        }
        return service;
    }

    // EndpointSlices of this Service, when present, are the source of truth.
    let slices: Vec<_> = resources
        .iter()
        .filter_map(|x| match &x.object {
            Object::EndpointSlice(s)
                if x.ns() == ns
                    && x.labels.get(SERVICE_NAME_LABEL).map(String::as_str)
                        == Some(r.name.as_str()) =>
            {
                Some(s)
            }
            _ => None,
        })
        .collect();
    if !slices.is_empty() {
        for slice in slices {
            let slice_ports: BTreeMap<String, u16> = slice
                .ports
                .iter()
                .flatten()
                .filter_map(|p| {
                    Some((
                        p.name.clone().unwrap_or_default(),
                        u16::try_from(p.port?).ok()?,
                    ))
                })
                .collect();
            for (i, ep) in slice.endpoints.iter().flatten().enumerate() {
                if ep.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                    continue;
                }
                let pod = ep
                    .target_ref
                    .as_ref()
                    .filter(|t| t.kind.as_deref() == Some("Pod"))
                    .and_then(|t| t.name.as_deref())
                    .and_then(|name| {
                        workloads.iter().find(|w| {
                            w.kind == WorkloadKind::Pod && w.namespace == ns && w.name == name
                        })
                    });
                let ports: BTreeMap<u16, u16> = service
                    .ports
                    .iter()
                    .filter_map(|sp| slice_ports.get(&sp.name).map(|p| (sp.number, *p)))
                    .collect();
                for addr in &ep.addresses {
                    let Ok(ip) = addr.parse::<IpAddr>() else {
                        continue;
                    };
                    let mut inst = match pod {
                        Some(w) => w.instance(ports.clone(), td),
                        None => Instance {
                            workload: format!(
                                "EndpointSlice {}/{} endpoints[{i}]",
                                ns,
                                slice.metadata.name.as_deref().unwrap_or("")
                            ),
                            address: None,
                            ports: ports.clone(),
                            labels: BTreeMap::new(),
                            weight: 1,
                            service_account: None,
                            identity: None,
                            mesh: false,
                            locality: ep.zone.clone(),
                        },
                    };
                    inst.address = Some(InstanceAddress::Ip(ip));
                    service.instances.push(inst);
                }
            }
        }
        // Workloads without an endpoint still say which identities serve the service.
        if let Some(sel) = spec.selector.as_ref().filter(|s| !s.is_empty()) {
            for w in workloads
                .iter()
                .filter(|w| w.namespace == ns && w.address.is_none() && selects(sel, &w.labels))
            {
                service.instances.push(w.instance(BTreeMap::new(), td));
            }
        }
        return service;
    }

    let Some(selector) = spec.selector.as_ref().filter(|s| !s.is_empty()) else {
        return service;
    };
    for w in workloads
        .iter()
        .filter(|w| w.namespace == ns && selects(selector, &w.labels))
    {
        let mut ports = BTreeMap::new();
        for sp in &service.ports {
            let p = if w.kind == WorkloadKind::WorkloadEntry {
                // A WorkloadEntry maps the service port by name, else serves the target port.
                w.port_named(&sp.name).or(match &sp.target_port {
                    TargetPort::Number(n) => Some(*n),
                    TargetPort::Name(n) => w.port_named(n),
                })
            } else {
                match &sp.target_port {
                    TargetPort::Number(n) => Some(*n),
                    TargetPort::Name(n) => w.port_named(n),
                }
            };
            if let Some(p) = p {
                ports.insert(sp.number, p);
            }
        }
        service.instances.push(w.instance(ports, td));
    }
    service
}

fn service_entry(
    r: &Resource,
    se: &ServiceEntry,
    workloads: &[Workload],
    mesh: &MeshConfig,
    td: &str,
) -> Vec<Service> {
    let ns = r.ns();
    let resolution = match se.resolution() {
        SeResolution::None => Resolution::Passthrough,
        SeResolution::Static => Resolution::Static,
        SeResolution::Dns | SeResolution::DynamicDns => Resolution::Dns,
        SeResolution::DnsRoundRobin => Resolution::DnsRoundRobin,
    };
    let external = se.location() == Location::MeshExternal;
    let ports: Vec<ServicePort> = se
        .ports
        .iter()
        .filter_map(|p| {
            let number = u16::try_from(p.number).ok().filter(|n| *n != 0)?;
            let (protocol, sniffed) = match p.protocol.as_deref().and_then(Protocol::parse) {
                Some(proto) => (proto, false),
                None => (Protocol::Tcp, true),
            };
            Some(ServicePort {
                number,
                name: p.name.clone(),
                protocol,
                sniffed,
                target_port: TargetPort::Number(
                    u16::try_from(p.target_port_or_number()).unwrap_or(number),
                ),
            })
        })
        .collect();
    let addresses: Vec<IpNet> = se
        .addresses
        .iter()
        .filter_map(|a| {
            a.parse::<IpNet>()
                .ok()
                .or_else(|| a.parse::<IpAddr>().ok().map(IpNet::from))
        })
        .collect();
    let export_to = export_to_or_default(&se.export_to, &mesh.default_service_export_to);
    let target_of = |sp: &ServicePort| match sp.target_port {
        TargetPort::Number(n) => n,
        TargetPort::Name(_) => sp.number,
    };

    // Instances shared by every host of the entry.
    let mut instances = Vec::new();
    for (i, ep) in se.endpoints.iter().enumerate() {
        let address = instance_address(ep.address.as_deref());
        if address.is_none() {
            continue;
        }
        let ports = ports
            .iter()
            .map(|sp| {
                let p = ep
                    .ports
                    .get(&sp.name)
                    .and_then(|p| u16::try_from(*p).ok())
                    .filter(|p| *p != 0)
                    .unwrap_or_else(|| target_of(sp));
                (sp.number, p)
            })
            .collect();
        let in_mesh = !external
            && (ep.service_account.is_some()
                || ep.labels.get(TLS_MODE_LABEL).is_some_and(|m| m == "istio"));
        let sa = ep.service_account.clone().filter(|s| !s.is_empty());
        instances.push(Instance {
            workload: format!("ServiceEntry {ns}/{} endpoints[{i}]", r.name),
            address,
            ports,
            labels: ep.labels.clone(),
            weight: ep.weight_or_default(),
            identity: match (&sa, in_mesh) {
                (Some(sa), true) => Some(spiffe_id(td, ns, sa)),
                _ => None,
            },
            service_account: sa,
            mesh: in_mesh,
            locality: ep.locality.clone(),
        });
    }
    if let Some(sel) = &se.workload_selector {
        // Pods, Deployments (no address: identities only) and WorkloadEntries of the
        // entry's namespace.
        for w in workloads
            .iter()
            .filter(|w| w.namespace == ns && sel.matches(&w.labels))
        {
            let ports = ports
                .iter()
                .map(|sp| {
                    let p = if w.kind == WorkloadKind::WorkloadEntry {
                        w.port_named(&sp.name).unwrap_or_else(|| target_of(sp))
                    } else {
                        target_of(sp)
                    };
                    (sp.number, p)
                })
                .collect();
            let mut inst = w.instance(ports, td);
            if external {
                inst.mesh = false;
                inst.identity = None;
            }
            instances.push(inst);
        }
    }

    let mut out = Vec::new();
    for host in &se.hosts {
        let host = trellis_api::host::fqdn(host, ns, CLUSTER_DOMAIN).to_ascii_lowercase();
        let mut inst = instances.clone();
        if inst.is_empty()
            && se.workload_selector.is_none()
            && matches!(resolution, Resolution::Dns | Resolution::DnsRoundRobin)
            && !host.starts_with('*')
        {
            // A DNS entry without endpoints resolves its own host.
            inst.push(Instance {
                workload: format!("ServiceEntry {ns}/{} host {host}", r.name),
                address: Some(InstanceAddress::Dns(host.clone())),
                ports: ports.iter().map(|sp| (sp.number, target_of(sp))).collect(),
                labels: BTreeMap::new(),
                weight: 1,
                service_account: None,
                identity: None,
                mesh: false,
                locality: None,
            });
        }
        out.push(Service {
            host,
            namespace: ns.to_string(),
            name: r.name.clone(),
            source: ServiceSource::ServiceEntry,
            addresses: addresses.clone(),
            ports: ports.clone(),
            export_to: export_to.clone(),
            resolution,
            mesh_external: external,
            instances: inst,
            subject_alt_names: se.subject_alt_names.clone(),
            creation: r.creation_timestamp.clone().unwrap_or_default(),
        });
    }
    out
}

/// A pod's locality from its `istio-locality` label (`region.zone.subzone`: label values
/// cannot hold `/`), as `region/zone/subzone`. Istio otherwise reads the node's topology
/// labels, which manifests do not carry.
pub fn label_locality(labels: &BTreeMap<String, String>) -> Option<String> {
    labels
        .get("istio-locality")
        .filter(|v| !v.is_empty())
        .map(|v| v.replace('.', "/"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use trellis_api::load::{LoadOptions, ResourceSet};

    pub(crate) fn load(yaml: &str) -> Vec<Resource> {
        let mut set = ResourceSet::default();
        set.add_text("test.yaml", yaml, &LoadOptions::default());
        let errors: Vec<_> = set.diagnostics.iter().filter(|d| d.is_error()).collect();
        assert!(errors.is_empty(), "{errors:?}");
        set.resources
    }

    #[test]
    fn protocols_by_app_protocol_then_name() {
        assert_eq!(port_protocol("http", None, None), (Protocol::Http, false));
        assert_eq!(
            port_protocol("http-metrics", None, None),
            (Protocol::Http, false)
        );
        assert_eq!(port_protocol("http2", None, None), (Protocol::Http2, false));
        assert_eq!(
            port_protocol("grpc-web-x", None, None),
            (Protocol::GrpcWeb, false)
        );
        assert_eq!(port_protocol("grpc", None, None), (Protocol::Grpc, false));
        assert_eq!(
            port_protocol("tcp-redis", None, None),
            (Protocol::Tcp, false)
        );
        assert_eq!(port_protocol("https", None, None), (Protocol::Https, false));
        assert_eq!(
            port_protocol("status-port", None, None),
            (Protocol::Tcp, true)
        );
        assert_eq!(port_protocol("", None, None), (Protocol::Tcp, true));
        assert_eq!(
            port_protocol("web", Some("http"), None),
            (Protocol::Http, false)
        );
        assert_eq!(
            port_protocol("web", Some("kubernetes.io/h2c"), None),
            (Protocol::Http2, false)
        );
        assert_eq!(
            port_protocol("http", None, Some("UDP")),
            (Protocol::Udp, false)
        );
    }

    #[test]
    fn kubernetes_service_with_pods_deployments_and_workload_entries() {
        let res = load(
            r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio-injection: enabled}}
---
apiVersion: v1
kind: Service
metadata: {name: cart, namespace: shop}
spec:
  clusterIP: 10.96.0.10
  selector: {app: cart}
  ports:
  - {name: http, port: 80, targetPort: web}
  - {name: tcp-admin, port: 9000, targetPort: 9001}
---
apiVersion: v1
kind: Pod
metadata: {name: cart-1, namespace: shop, labels: {app: cart, version: v1}}
spec:
  serviceAccountName: cart
  containers: [{name: c, image: x, ports: [{name: web, containerPort: 8080}]}]
status: {podIP: 10.0.0.5}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: cart-v2, namespace: shop}
spec:
  selector: {matchLabels: {app: cart}}
  template:
    metadata: {labels: {app: cart, version: v2}}
    spec:
      serviceAccountName: cart2
      containers: [{name: c, image: x}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: vm, namespace: shop}
spec:
  address: 192.168.1.9
  labels: {app: cart, version: vm}
  serviceAccount: cart-vm
  ports: {http: 8888}
"#,
        );
        let reg = ServiceRegistry::new(&res, &MeshConfig::default());
        let svc = reg.lookup("cart.shop.svc.cluster.local", "other").unwrap();
        assert_eq!(
            svc.addresses,
            vec!["10.96.0.10/32".parse::<IpNet>().unwrap()]
        );
        assert!(svc.port(80).unwrap().is_http());
        assert_eq!(svc.port(9000).unwrap().protocol, Protocol::Tcp);
        assert_eq!(svc.instances.len(), 3);
        let eps = svc.endpoints(80, None);
        let addrs: Vec<String> = eps
            .iter()
            .map(|e| match &e.address {
                EndpointAddress::Socket(s) => s.to_string(),
                EndpointAddress::Dns { host, port } => format!("{host}:{port}"),
            })
            .collect();
        assert_eq!(addrs, vec!["10.0.0.5:8080", "192.168.1.9:8888"]);
        // The WorkloadEntry has no port named tcp-admin: it serves the target port.
        assert_eq!(svc.endpoints(9000, None).len(), 2);
        let vm: BTreeMap<String, String> = [("version".to_string(), "vm".to_string())].into();
        assert_eq!(svc.endpoints(80, Some(&vm)).len(), 1);
        assert_eq!(
            svc.identities(),
            vec![
                "spiffe://cluster.local/ns/shop/sa/cart",
                "spiffe://cluster.local/ns/shop/sa/cart-vm",
                "spiffe://cluster.local/ns/shop/sa/cart2",
            ]
        );
        assert!(eps.iter().all(|e| e.mesh));
    }

    #[test]
    fn endpoint_slices_win_over_selectors() {
        let res = load(
            r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: ns1, annotations: {networking.istio.io/exportTo: "."}}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-abc, namespace: ns1, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints:
- addresses: [10.1.0.1]
- addresses: [10.1.0.2]
  conditions: {ready: false}
"#,
        );
        let reg = ServiceRegistry::new(&res, &MeshConfig::default());
        assert!(reg.lookup("web.ns1.svc.cluster.local", "ns2").is_none());
        let svc = reg.lookup("web.ns1.svc.cluster.local", "ns1").unwrap();
        let eps = svc.endpoints(80, None);
        assert_eq!(eps.len(), 1);
        assert_eq!(
            eps[0].address,
            EndpointAddress::Socket("10.1.0.1:8080".parse().unwrap())
        );
        assert!(!eps[0].mesh);
    }

    #[test]
    fn service_entries() {
        let res = load(
            r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext, namespace: a}
spec:
  hosts: [api.example.com, www.example.com]
  ports: [{number: 443, name: https, protocol: HTTPS}, {number: 80, name: http, protocol: HTTP, targetPort: 8080}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db, namespace: a}
spec:
  hosts: [db.internal]
  addresses: [10.10.0.3/32]
  ports: [{number: 5432, name: tcp-pg, protocol: TCP}]
  location: MESH_INTERNAL
  resolution: STATIC
  endpoints:
  - {address: 10.10.0.3, ports: {tcp-pg: 6432}, serviceAccount: pg, labels: {zone: a}}
  - {address: 10.10.0.4}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: any, namespace: a}
spec:
  hosts: ["*.wild.com"]
  ports: [{number: 443, name: tls, protocol: TLS}]
  resolution: NONE
  exportTo: ["."]
"#,
        );
        let reg = ServiceRegistry::new(&res, &MeshConfig::default());
        let api = reg.lookup("api.example.com", "b").unwrap();
        assert_eq!(api.resolution, Resolution::Dns);
        assert!(api.mesh_external);
        assert_eq!(
            api.endpoints(80, None)[0].address,
            EndpointAddress::Dns {
                host: "api.example.com".into(),
                port: 8080
            }
        );
        assert!(reg.lookup("www.example.com", "b").is_some());
        let db = reg.lookup("db.internal", "a").unwrap();
        let eps = db.endpoints(5432, None);
        assert_eq!(
            eps[0].address,
            EndpointAddress::Socket("10.10.0.3:6432".parse().unwrap())
        );
        assert_eq!(
            eps[0].identity.as_deref(),
            Some("spiffe://cluster.local/ns/a/sa/pg")
        );
        assert!(eps[0].mesh);
        assert_eq!(
            eps[1].address,
            EndpointAddress::Socket("10.10.0.4:5432".parse().unwrap())
        );
        assert!(!eps[1].mesh);
        let any = reg.lookup("*.wild.com", "a").unwrap();
        assert_eq!(any.resolution, Resolution::Passthrough);
        assert!(any.instances.is_empty());
        assert!(reg.lookup("*.wild.com", "b").is_none());
    }

    #[test]
    fn injection_rules() {
        let res = load(
            r#"
apiVersion: v1
kind: Namespace
metadata: {name: on, labels: {istio-injection: enabled}}
---
apiVersion: v1
kind: Namespace
metadata: {name: rev, labels: {istio.io/rev: canary}}
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: on}
spec: {containers: [{name: c, image: x}]}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: on, labels: {sidecar.istio.io/inject: "false"}}
spec: {containers: [{name: c, image: x}]}
---
apiVersion: v1
kind: Pod
metadata: {name: c, namespace: off, labels: {sidecar.istio.io/inject: "true"}}
spec: {containers: [{name: c, image: x}]}
---
apiVersion: v1
kind: Pod
metadata: {name: d, namespace: off}
spec: {containers: [{name: c, image: x}]}
---
apiVersion: v1
kind: Pod
metadata: {name: e, namespace: rev}
spec: {containers: [{name: c, image: x}]}
"#,
        );
        let w = workloads(&res);
        let mesh: Vec<(&str, bool)> = w.iter().map(|w| (w.name.as_str(), w.mesh)).collect();
        assert_eq!(
            mesh,
            vec![
                ("a", true),
                ("b", false),
                ("c", true),
                ("d", false),
                ("e", true)
            ]
        );
        assert_eq!(w[0].service_account, "default");
    }
}
