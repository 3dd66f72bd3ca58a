//! What `trellis up` runs, decided from the manifests alone (no I/O but the port allocator
//! it is given): one entry per workload (a `WorkloadEntry`, or a Deployment that has none),
//! the addresses and ports each process uses, local stand-ins for managed TCP services, and
//! the manifests the proxies compile (the user's, adjusted to what runs on this machine).
//!
//! # Local mode
//!
//! - A **workload** is a `WorkloadEntry`. A Deployment is *realized* by the WorkloadEntries
//!   of its namespace that carry every label of its selector; a Deployment no WorkloadEntry
//!   realizes gets one generated (named like it, its pod template's labels and service
//!   account, its container ports, one loopback address; replicas count as one).
//!   Deployments are then left out of the proxies' manifests: on this machine they are the
//!   WorkloadEntries.
//! - **Addresses**: a workload keeps its WorkloadEntry's loopback address (`127.0.10.N` in
//!   the example); other addresses get one from `127.<net>.10.0/24`. `--loopback-net B` moves
//!   every loopback address to `127.B.x.y`, so several meshes (tests) run side by side.
//!   Each sidecar binds its outbound listeners on its own `127.<net>.30.N`; stand-ins listen
//!   on `127.<net>.40.N`.
//! - **Inbound**: the sidecar listens on the workload address and forwards to the app on
//!   `127.0.0.1:<port>` (the model's inbound cluster endpoint). Apps of different workloads
//!   cannot all have `127.0.0.1:8080`, so each mesh port gets a port of its own, the same
//!   on the workload address (sidecar) and on 127.0.0.1 (app), written into the
//!   WorkloadEntry's `ports` of the proxies' copy.
//! - **Gateways** (workloads a Gateway selects) run a gateway proxy: each Gateway server port
//!   is bound on the workload address at the gateway Service's target port (80 -> 8080,
//!   443 -> 8443), or where `--http-port` / `--https-port` say.
//! - **Commands**: the annotation `trellis.io/command` on the WorkloadEntry (or on the
//!   Deployment's pod template) starts the app; `trellis` there means this binary. The app
//!   gets `LISTEN_ADDR`, `PORT`, `HTTP_PROXY` (the sidecar's outbound HTTP proxy), the
//!   realized Deployment's literal container `env`, and its readiness probe path is polled.
//! - **JWKS**: a RequestAuthentication `jwksUri` naming a mesh Service that `up` runs is
//!   pointed at that service's app (`http://127.0.0.1:<port>/...`) in the proxies' copy: the
//!   proxy fetches keys with a plain HTTP client, which can neither resolve
//!   `*.svc.cluster.local` here nor pass the service's STRICT mTLS sidecar.
//! - **Stand-ins**: a `MESH_EXTERNAL` ServiceEntry port that is Redis (name `*redis*` or
//!   6379) or PostgreSQL (`*postgres*`/`*sql*` or 5432) gets a local server when one is
//!   installed; the entry's endpoints point at it in the proxies' copy.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use k8s_openapi::api::apps::v1::Deployment;
use serde_json::{json, Value};
use trellis_api::{Object, Resource};

/// Annotation naming the command that starts a workload's app.
pub const COMMAND_ANNOTATION: &str = "trellis.io/command";
/// Annotation naming the app's health path (else the Deployment's readiness probe).
pub const HEALTH_ANNOTATION: &str = "trellis.io/health";

/// Planning inputs besides the manifests.
#[derive(Clone, Debug)]
pub struct PlanOptions {
    /// Second octet of every loopback address (`127.<net>.x.y`); `None` keeps the manifests'.
    pub net: Option<u8>,
    /// Where the first HTTP / HTTPS gateway server binds (`Some(0)`: any free port).
    pub http_port: Option<u16>,
    pub https_port: Option<u16>,
    /// Stand-in servers available (`redis-server`, `postgres`).
    pub redis_available: bool,
    pub postgres_available: bool,
    /// Stand-ins turned off (`--no-standins`).
    pub standins_off: bool,
}

impl PlanOptions {
    fn net(&self) -> u8 {
        self.net.unwrap_or(0)
    }
}

/// What kind of process runs for a workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Role {
    /// A gateway proxy (no app).
    Gateway,
    /// An app behind a sidecar.
    Sidecar,
    /// An app without sidecar (not in the mesh), on the workload address itself.
    Plain,
}

/// One workload and how it runs.
#[derive(Clone, Debug, serde::Serialize)]
pub struct WorkloadPlan {
    pub namespace: String,
    pub name: String,
    pub role: Role,
    /// Where it comes from: `WorkloadEntry alphintra/x` or `Deployment alphintra/x (generated
    /// WorkloadEntry)`.
    pub source: String,
    pub labels: BTreeMap<String, String>,
    pub service_account: String,
    /// The workload (mesh) address: where other workloads reach it.
    pub address: IpAddr,
    /// `(port name, port in the manifests, port on this machine)`.
    pub ports: Vec<(String, u16, u16)>,
    /// Sidecars: the IP their outbound listeners bind (15001 HTTP proxy, service ports).
    pub outbound_ip: Option<IpAddr>,
    /// Gateways: config listener port -> bind address (port 0: any free port).
    pub gateway_binds: Vec<GatewayBind>,
    pub app: Option<AppPlan>,
}

impl WorkloadPlan {
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// The sidecar's inbound address (workload address, first mesh port).
    pub fn inbound(&self) -> Option<SocketAddr> {
        (self.role == Role::Sidecar)
            .then(|| {
                self.ports
                    .first()
                    .map(|p| SocketAddr::new(self.address, p.2))
            })
            .flatten()
    }
}

/// A gateway listener's local binding.
#[derive(Clone, Debug, serde::Serialize)]
pub struct GatewayBind {
    /// The Gateway server port (listener `0.0.0.0_<port>`).
    pub port: u16,
    pub protocol: String,
    pub bind: SocketAddr,
    /// Hosts of the servers on this port.
    pub hosts: Vec<String>,
    /// `credentialName` of a TLS server on this port.
    pub credential: Option<String>,
}

/// The app of a workload.
#[derive(Clone, Debug, serde::Serialize)]
pub struct AppPlan {
    pub command: String,
    pub listen: SocketAddr,
    pub env: Vec<(String, String)>,
    /// HTTP path polled for readiness; `None`: a TCP connect is enough.
    pub health: Option<String>,
}

/// A local server standing in for a managed service.
#[derive(Clone, Debug, serde::Serialize)]
pub struct StandIn {
    pub kind: StandInKind,
    /// `ServiceEntry ns/name`.
    pub service_entry: String,
    pub host: String,
    pub port: u16,
    pub listen: SocketAddr,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum StandInKind {
    Redis,
    Postgres,
}

impl StandInKind {
    pub fn name(self) -> &'static str {
        match self {
            StandInKind::Redis => "redis",
            StandInKind::Postgres => "postgres",
        }
    }
}

/// Everything `up` runs.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Plan {
    pub workloads: Vec<WorkloadPlan>,
    pub standins: Vec<StandIn>,
    /// The manifests the proxies compile.
    #[serde(skip)]
    pub documents: Vec<Value>,
    /// What the plan did that the user should know (generated entries, missing tools).
    pub notes: Vec<String>,
    /// Gateway credential (`ns/name`) -> the certificate file a client should trust.
    #[serde(skip)]
    pub trust: BTreeMap<String, std::path::PathBuf>,
}

/// Allocations that must not move while `up` runs (ports in use by running processes).
#[derive(Clone, Debug, Default)]
pub struct Allocations {
    /// `ns/name` -> workload address.
    addresses: BTreeMap<String, IpAddr>,
    /// (`ns/name`, manifest port) -> local port.
    ports: BTreeMap<(String, u16), u16>,
    /// `ns/name` -> outbound IP.
    outbound: BTreeMap<String, IpAddr>,
    /// (config port) -> gateway bind, by `ns/name`.
    gateway: BTreeMap<(String, u16), SocketAddr>,
}

/// Finds free ports: `alloc(ip)` returns a port free on `ip` and on 127.0.0.1.
pub type PortAllocator<'a> = dyn FnMut(IpAddr) -> std::io::Result<u16> + 'a;

fn loopback(net: u8, third: u8, fourth: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, net, third, fourth))
}

/// A manifest address as used here: loopback addresses move to `127.<net>.x.y` when a net is
/// set; other addresses cannot be bound locally (`None`).
fn local_address(addr: Option<&str>, net: Option<u8>) -> Option<IpAddr> {
    let ip: IpAddr = addr?.trim().parse().ok()?;
    match ip {
        IpAddr::V4(v4) if v4.is_loopback() => {
            let o = v4.octets();
            Some(match net {
                Some(n) => loopback(n, o[2], o[3]),
                None => ip,
            })
        }
        _ => None,
    }
}

/// Data about a Deployment that `up` uses.
struct DeploymentInfo<'a> {
    resource: &'a Resource,
    selector: BTreeMap<String, String>,
    template_labels: BTreeMap<String, String>,
    template_annotations: BTreeMap<String, String>,
    service_account: String,
    ports: Vec<(String, u16)>,
    env: Vec<(String, String)>,
    health: Option<String>,
    replicas: i32,
}

fn deployment_info<'a>(r: &'a Resource, d: &Deployment) -> DeploymentInfo<'a> {
    let spec = &d.spec;
    let selector = spec
        .selector
        .match_labels
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    let meta = spec.template.metadata.as_ref();
    let pod = spec.template.spec.as_ref();
    let container = pod.and_then(|p| p.containers.first());
    let mut ports = Vec::new();
    for c in pod.map(|p| p.containers.as_slice()).unwrap_or_default() {
        for p in c.ports.iter().flatten() {
            if let Ok(n) = u16::try_from(p.container_port) {
                ports.push((p.name.clone().unwrap_or_default(), n));
            }
        }
    }
    let env = container
        .and_then(|c| c.env.as_ref())
        .map(|env| {
            env.iter()
                .filter_map(|e| Some((e.name.clone(), e.value.clone()?)))
                .collect()
        })
        .unwrap_or_default();
    let health = container
        .and_then(|c| c.readiness_probe.as_ref())
        .and_then(|p| p.http_get.as_ref())
        .and_then(|h| h.path.clone());
    DeploymentInfo {
        resource: r,
        selector,
        template_labels: meta
            .and_then(|m| m.labels.clone())
            .unwrap_or_default()
            .into_iter()
            .collect(),
        template_annotations: meta
            .and_then(|m| m.annotations.clone())
            .unwrap_or_default()
            .into_iter()
            .collect(),
        service_account: pod
            .and_then(|p| p.service_account_name.clone().or(p.service_account.clone()))
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "default".to_string()),
        ports,
        env,
        health,
        replicas: spec.replicas.unwrap_or(1),
    }
}

fn contains_all(labels: &BTreeMap<String, String>, selector: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// A workload before allocation.
struct Candidate<'a> {
    namespace: String,
    name: String,
    source: String,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    service_account: String,
    address: Option<IpAddr>,
    ports: Vec<(String, u16)>,
    /// The WorkloadEntry document to rewrite (`None`: generated).
    raw: Option<&'a Value>,
    deployment: Option<usize>,
    no_sidecar: bool,
}

/// Namespaces labelled for injection (`istio-injection: enabled`).
fn injected_namespaces(resources: &[Resource]) -> BTreeSet<String> {
    resources
        .iter()
        .filter(|r| matches!(r.object, Object::Namespace(_)))
        .filter(|r| {
            r.labels.get("istio-injection").map(String::as_str) == Some("enabled")
                || r.labels.contains_key("istio.io/rev")
        })
        .map(|r| r.name.clone())
        .collect()
}

/// Gateway servers by workload: `(port, protocol, hosts, credential)` of every Gateway whose
/// selector the labels carry.
fn gateway_servers(
    resources: &[Resource],
    labels: &BTreeMap<String, String>,
) -> Vec<(u16, String, Vec<String>, Option<String>)> {
    let mut out: Vec<(u16, String, Vec<String>, Option<String>)> = Vec::new();
    for r in resources {
        let Object::Gateway(g) = &r.object else {
            continue;
        };
        if g.selector.is_empty() || !g.selector.iter().all(|(k, v)| labels.get(k) == Some(v)) {
            continue;
        }
        for s in &g.servers {
            let Some(port) = s.port.as_ref() else {
                continue;
            };
            let Ok(number) = u16::try_from(port.number) else {
                continue;
            };
            let protocol = port.protocol.to_ascii_uppercase();
            let credential = s.tls.as_ref().and_then(|t| t.credential_name.clone());
            let hosts: Vec<String> = s
                .hosts
                .iter()
                .map(|h| {
                    h.rsplit_once('/')
                        .map_or(h.as_str(), |(_, h)| h)
                        .to_string()
                })
                .collect();
            match out.iter_mut().find(|(p, ..)| *p == number) {
                Some(e) => {
                    for h in hosts {
                        if !e.2.contains(&h) {
                            e.2.push(h);
                        }
                    }
                    if e.3.is_none() {
                        e.3 = credential;
                    }
                }
                None => out.push((number, protocol, hosts, credential)),
            }
        }
    }
    out.sort_by_key(|(p, ..)| *p);
    out
}

/// The target port of the gateway Service port `port` for a workload with `labels` in `ns`.
fn service_target_port(
    resources: &[Resource],
    ns: &str,
    labels: &BTreeMap<String, String>,
    workload_ports: &[(String, u16)],
    port: u16,
) -> Option<u16> {
    for r in resources.iter().filter(|r| r.ns() == ns) {
        let Object::Service(svc) = &r.object else {
            continue;
        };
        let Some(spec) = &svc.spec else { continue };
        let selector: BTreeMap<String, String> = spec
            .selector
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect();
        if !contains_all(labels, &selector) {
            continue;
        }
        for p in spec.ports.iter().flatten() {
            if i32::from(port) != p.port {
                continue;
            }
            use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
            return match &p.target_port {
                None => Some(port),
                Some(IntOrString::Int(n)) => u16::try_from(*n).ok(),
                Some(IntOrString::String(name)) => workload_ports
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, p)| *p),
            };
        }
    }
    None
}

/// Plans the run. `alloc` is asked for ports that must be free; allocations already in `keep`
/// are reused (a re-plan while running keeps every process where it is).
pub fn plan(
    resources: &[Resource],
    options: &PlanOptions,
    keep: &mut Allocations,
    alloc: &mut PortAllocator<'_>,
) -> std::io::Result<Plan> {
    let net = options.net();
    let mut plan = Plan::default();
    let injected = injected_namespaces(resources);

    let deployments: Vec<DeploymentInfo> = resources
        .iter()
        .filter_map(|r| match &r.object {
            Object::Deployment(d) => Some(deployment_info(r, d)),
            _ => None,
        })
        .collect();

    // WorkloadEntries, then Deployments none of them realizes.
    let mut candidates: Vec<Candidate> = Vec::new();
    for r in resources {
        let Object::WorkloadEntry(we) = &r.object else {
            continue;
        };
        let mut labels = r.labels.clone();
        labels.extend(we.labels.clone());
        let deployment = deployments
            .iter()
            .position(|d| d.resource.ns() == r.ns() && contains_all(&labels, &d.selector));
        candidates.push(Candidate {
            namespace: r.ns().to_string(),
            name: r.name.clone(),
            source: format!("WorkloadEntry {}", r.key()),
            no_sidecar: labels.get("security.istio.io/tlsMode").map(String::as_str)
                == Some("disabled")
                || r.annotations
                    .get("sidecar.istio.io/inject")
                    .map(String::as_str)
                    == Some("false"),
            labels,
            annotations: r.annotations.clone(),
            service_account: we
                .service_account
                .clone()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "default".to_string()),
            address: local_address(we.address.as_deref(), options.net),
            ports: we
                .ports
                .iter()
                .filter_map(|(n, p)| Some((n.clone(), u16::try_from(*p).ok()?)))
                .collect(),
            raw: Some(&r.raw),
            deployment,
        });
    }
    for (i, d) in deployments.iter().enumerate() {
        if candidates.iter().any(|c| c.deployment == Some(i)) {
            continue;
        }
        if d.replicas == 0 {
            plan.notes.push(format!(
                "Deployment {} has 0 replicas: not started",
                d.resource.key()
            ));
            continue;
        }
        let ns = d.resource.ns().to_string();
        let mut name = d.resource.name.clone();
        if candidates
            .iter()
            .any(|c| c.namespace == ns && c.name == name)
        {
            name = format!("{name}-local");
        }
        plan.notes.push(format!(
            "Deployment {} has no WorkloadEntry: running one replica as WorkloadEntry {ns}/{name}",
            d.resource.key()
        ));
        let mut annotations = d.resource.annotations.clone();
        annotations.extend(d.template_annotations.clone());
        let no_sidecar = !injected.contains(&ns)
            || d.template_annotations
                .get("sidecar.istio.io/inject")
                .map(String::as_str)
                == Some("false")
            || d.template_labels
                .get("sidecar.istio.io/inject")
                .map(String::as_str)
                == Some("false");
        candidates.push(Candidate {
            namespace: ns,
            name,
            source: format!("Deployment {} (generated WorkloadEntry)", d.resource.key()),
            labels: d.template_labels.clone(),
            annotations,
            service_account: d.service_account.clone(),
            address: None,
            ports: d.ports.clone(),
            raw: None,
            deployment: Some(i),
            no_sidecar,
        });
    }

    // Addresses: kept, then the manifests', then the next free 127.<net>.10.N.
    let mut used: BTreeSet<IpAddr> = keep.addresses.values().copied().collect();
    for c in &candidates {
        if let Some(a) = c.address {
            used.insert(a);
        }
    }
    let mut next_host = 1u8;
    let mut fresh = |used: &mut BTreeSet<IpAddr>| loop {
        let ip = loopback(net, 10, next_host);
        next_host = next_host.wrapping_add(1).max(1);
        if used.insert(ip) {
            return ip;
        }
    };

    // Stand-ins first: apps get their addresses in the environment.
    let mut standin_index = 1u8;
    let mut se_rewrites: BTreeMap<String, Vec<(u16, IpAddr)>> = BTreeMap::new();
    for r in resources {
        let Object::ServiceEntry(se) = &r.object else {
            continue;
        };
        if se.location() != trellis_api::networking::Location::MeshExternal {
            continue;
        }
        for p in &se.ports {
            let Ok(number) = u16::try_from(p.number) else {
                continue;
            };
            let name = p.name.to_ascii_lowercase();
            let kind = if name.contains("redis") || number == 6379 {
                StandInKind::Redis
            } else if name.contains("postgres") || name.contains("sql") || number == 5432 {
                StandInKind::Postgres
            } else {
                continue;
            };
            let host = se.hosts.first().cloned().unwrap_or_default();
            let available = match kind {
                StandInKind::Redis => options.redis_available,
                StandInKind::Postgres => options.postgres_available,
            };
            if options.standins_off {
                continue;
            }
            if !available {
                plan.notes.push(format!(
                    "{host}:{number} (ServiceEntry {}): no local {} stand-in: {}",
                    r.key(),
                    kind.name(),
                    match kind {
                        StandInKind::Redis => "install redis-server (apt-get install redis-server / brew install redis)",
                        StandInKind::Postgres => "install PostgreSQL (apt-get install postgresql / brew install postgresql)",
                    }
                ));
                continue;
            }
            let ip = loopback(net, 40, standin_index);
            standin_index = standin_index.saturating_add(1);
            se_rewrites.entry(r.key()).or_default().push((number, ip));
            plan.standins.push(StandIn {
                kind,
                service_entry: r.key(),
                host,
                port: number,
                listen: SocketAddr::new(ip, number),
            });
        }
    }

    for c in &candidates {
        let key = format!("{}/{}", c.namespace, c.name);
        let address = match keep.addresses.get(&key) {
            Some(a) => *a,
            None => {
                let a = c.address.unwrap_or_else(|| fresh(&mut used));
                keep.addresses.insert(key.clone(), a);
                a
            }
        };
        let deployment = c.deployment.map(|i| &deployments[i]);
        let servers = gateway_servers(resources, &c.labels);
        let role = if !servers.is_empty() {
            Role::Gateway
        } else if c.no_sidecar {
            Role::Plain
        } else {
            Role::Sidecar
        };
        // Ports: the entry's, else the Services' target ports (numbers) selecting it.
        let mut manifest_ports = c.ports.clone();
        if manifest_ports.is_empty() {
            manifest_ports = service_ports_of(resources, &c.namespace, &c.labels);
        }
        let mut ports = Vec::new();
        for (name, p) in &manifest_ports {
            let local = match role {
                Role::Sidecar => match keep.ports.get(&(key.clone(), *p)) {
                    Some(l) => *l,
                    None => {
                        let l = alloc(address)?;
                        keep.ports.insert((key.clone(), *p), l);
                        l
                    }
                },
                _ => *p,
            };
            if !ports.iter().any(|(_, q, _)| q == p) {
                ports.push((name.clone(), *p, local));
            }
        }

        let outbound_ip = (role == Role::Sidecar).then(|| {
            if let Some(ip) = keep.outbound.get(&key) {
                return *ip;
            }
            let taken: BTreeSet<IpAddr> = keep.outbound.values().copied().collect();
            // 127.x.10.N -> 127.<net>.30.N; others from 127.<net>.30.101 up.
            let preferred = match address {
                IpAddr::V4(v4) if v4.octets()[2] == 10 => Some(loopback(net, 30, v4.octets()[3])),
                _ => None,
            };
            let ip = preferred
                .filter(|ip| !taken.contains(ip))
                .unwrap_or_else(|| {
                    (101..=254)
                        .map(|n| loopback(net, 30, n))
                        .find(|ip| !taken.contains(ip))
                        .unwrap_or(loopback(net, 31, 1))
                });
            keep.outbound.insert(key.clone(), ip);
            ip
        });

        let mut gateway_binds = Vec::new();
        if role == Role::Gateway {
            let mut http_taken = false;
            let mut https_taken = false;
            for (port, protocol, hosts, credential) in servers {
                let tls = matches!(protocol.as_str(), "HTTPS" | "TLS");
                let requested = if tls && !https_taken {
                    https_taken = true;
                    options.https_port
                } else if !tls && !http_taken {
                    http_taken = true;
                    options.http_port
                } else {
                    None
                };
                let bind = match keep.gateway.get(&(key.clone(), port)) {
                    Some(b) => *b,
                    None => {
                        let target = requested.unwrap_or_else(|| {
                            let t = service_target_port(
                                resources,
                                &c.namespace,
                                &c.labels,
                                &manifest_ports,
                                port,
                            )
                            .unwrap_or(port);
                            if t < 1024 {
                                t.saturating_add(8000)
                            } else {
                                t
                            }
                        });
                        let b = SocketAddr::new(address, target);
                        keep.gateway.insert((key.clone(), port), b);
                        b
                    }
                };
                gateway_binds.push(GatewayBind {
                    port,
                    protocol,
                    bind,
                    hosts,
                    credential,
                });
            }
        }

        let command = c.annotations.get(COMMAND_ANNOTATION).cloned();
        let app = match (&command, role) {
            (Some(command), Role::Sidecar | Role::Plain) => {
                let listen = match (role, ports.first()) {
                    (Role::Sidecar, Some((_, _, local))) => {
                        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), *local)
                    }
                    (_, Some((_, p, _))) => SocketAddr::new(address, *p),
                    (_, None) => SocketAddr::new(address, 8080),
                };
                let mut env: Vec<(String, String)> =
                    deployment.map(|d| d.env.clone()).unwrap_or_default();
                env.push(("LISTEN_ADDR".into(), listen.to_string()));
                env.push(("PORT".into(), listen.port().to_string()));
                env.push(("TRELLIS_WORKLOAD".into(), c.name.clone()));
                if let Some(ip) = outbound_ip {
                    env.push(("HTTP_PROXY".into(), format!("http://{ip}:15001")));
                    env.push(("http_proxy".into(), format!("http://{ip}:15001")));
                    env.push(("TRELLIS_OUTBOUND_IP".into(), ip.to_string()));
                    if let Some(redis) = redis_port(resources) {
                        env.push(("REDIS_ADDR".into(), SocketAddr::new(ip, redis).to_string()));
                    }
                }
                Some(AppPlan {
                    command: command.clone(),
                    listen,
                    env,
                    health: c
                        .annotations
                        .get(HEALTH_ANNOTATION)
                        .cloned()
                        .or_else(|| deployment.and_then(|d| d.health.clone())),
                })
            }
            (None, Role::Sidecar | Role::Plain) => {
                plan.notes.push(format!(
                    "{} {key} has no `{COMMAND_ANNOTATION}` annotation: its sidecar runs, but no app answers behind it",
                    if c.raw.is_some() { "WorkloadEntry" } else { "workload" }
                ));
                None
            }
            _ => None,
        };

        // The proxies' copy of the entry.
        let mut doc = match c.raw {
            Some(raw) => raw.clone(),
            None => json!({
                "apiVersion": "networking.istio.io/v1",
                "kind": "WorkloadEntry",
                "metadata": {"name": c.name, "namespace": c.namespace},
                "spec": {
                    "labels": c.labels,
                    "serviceAccount": c.service_account,
                },
            }),
        };
        doc["spec"]["address"] = json!(address.to_string());
        let port_map: serde_json::Map<String, Value> = ports
            .iter()
            .filter(|(n, ..)| !n.is_empty())
            .map(|(n, _, l)| (n.clone(), json!(l)))
            .collect();
        // Service ports that reach the entry by target port get an explicit name mapping.
        let mut port_map = port_map;
        if role == Role::Sidecar {
            for (name, target) in service_port_names(resources, &c.namespace, &c.labels) {
                if port_map.contains_key(&name) {
                    continue;
                }
                if let Some((_, _, local)) = ports.iter().find(|(_, p, _)| *p == target) {
                    port_map.insert(name, json!(local));
                }
            }
        }
        if !port_map.is_empty() {
            doc["spec"]["ports"] = Value::Object(port_map);
        }
        plan.documents.push(doc);

        plan.workloads.push(WorkloadPlan {
            namespace: c.namespace.clone(),
            name: c.name.clone(),
            role,
            source: c.source.clone(),
            labels: c.labels.clone(),
            service_account: c.service_account.clone(),
            address,
            ports,
            outbound_ip,
            gateway_binds,
            app,
        });
    }

    // Everything else, as written; Deployments are the entries now.
    let mut rest = Vec::new();
    for r in resources {
        match &r.object {
            Object::WorkloadEntry(_) | Object::Deployment(_) => {}
            Object::RequestAuthentication(ra) => {
                let mut doc = r.raw.clone();
                for (i, rule) in ra.jwt_rules.iter().enumerate() {
                    let Some(uri) = &rule.jwks_uri else { continue };
                    if let Some(local) = local_jwks_uri(uri, r.ns(), resources, &plan.workloads) {
                        plan.notes.push(format!(
                            "RequestAuthentication {} jwtRules[{i}]: keys fetched from {local} (the app behind {uri})",
                            r.key()
                        ));
                        doc["spec"]["jwtRules"][i]["jwksUri"] = json!(local);
                        if let Some(o) = doc["spec"]["jwtRules"][i].as_object_mut() {
                            o.remove("jwks_uri");
                        }
                    }
                }
                rest.push(doc);
            }
            Object::ServiceEntry(_) if se_rewrites.contains_key(&r.key()) => {
                let mut doc = r.raw.clone();
                let rewrites = &se_rewrites[&r.key()];
                let ip = rewrites[0].1;
                doc["spec"]["resolution"] = json!("STATIC");
                doc["spec"]["endpoints"] = json!([{"address": ip.to_string()}]);
                rest.push(doc);
            }
            _ => rest.push(r.raw.clone()),
        }
    }
    rest.append(&mut plan.documents);
    plan.documents = rest;
    // Gateways first, then by address.
    plan.workloads.sort_by(|a, b| {
        (a.role != Role::Gateway, a.address, &a.name).cmp(&(
            b.role != Role::Gateway,
            b.address,
            &b.name,
        ))
    });
    Ok(plan)
}

/// `http://<app>/<path>` for a `jwksUri` whose host is a Kubernetes Service (FQDN,
/// `name.ns`, `name.ns.svc` or a short name in `ns`) served by a planned app.
fn local_jwks_uri(
    uri: &str,
    ns: &str,
    resources: &[Resource],
    workloads: &[WorkloadPlan],
) -> Option<String> {
    let rest = uri.strip_prefix("http://")?;
    let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().ok()?),
        None => (authority, 80),
    };
    let host = host.to_ascii_lowercase();
    let parts: Vec<&str> = host.trim_end_matches('.').split('.').collect();
    let (svc_name, svc_ns) = match parts.as_slice() {
        [name] => (*name, ns),
        [name, n] | [name, n, "svc"] | [name, n, "svc", "cluster", "local"] => (*name, *n),
        _ => return None,
    };
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    for r in resources {
        let Object::Service(svc) = &r.object else {
            continue;
        };
        if r.name != svc_name || r.ns() != svc_ns {
            continue;
        }
        let spec = svc.spec.as_ref()?;
        let selector: BTreeMap<String, String> = spec
            .selector
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect();
        let sp = spec
            .ports
            .iter()
            .flatten()
            .find(|p| p.port == i32::from(port))?;
        for w in workloads.iter().filter(|w| {
            w.namespace == svc_ns && w.app.is_some() && contains_all(&w.labels, &selector)
        }) {
            let target = match &sp.target_port {
                None => Some(port),
                Some(IntOrString::Int(n)) => u16::try_from(*n).ok(),
                Some(IntOrString::String(name)) => {
                    w.ports.iter().find(|(n, ..)| n == name).map(|(_, p, _)| *p)
                }
            };
            let by_name = w
                .ports
                .iter()
                .find(|(n, ..)| sp.name.as_deref() == Some(n.as_str()));
            let Some(local) = by_name
                .or_else(|| w.ports.iter().find(|(_, p, _)| Some(*p) == target))
                .map(|(_, p, l)| if w.role == Role::Sidecar { *l } else { *p })
            else {
                continue;
            };
            let app_ip = match w.role {
                Role::Sidecar => IpAddr::V4(Ipv4Addr::LOCALHOST),
                _ => w.address,
            };
            return Some(format!("http://{}/{path}", SocketAddr::new(app_ip, local)));
        }
    }
    None
}

/// Named target ports of the Services selecting `labels` in `ns` (`(name, number)`).
fn service_ports_of(
    resources: &[Resource],
    ns: &str,
    labels: &BTreeMap<String, String>,
) -> Vec<(String, u16)> {
    let mut out = Vec::new();
    for (name, target) in service_port_names(resources, ns, labels) {
        if !out.iter().any(|(_, p)| *p == target) {
            out.push((name, target));
        }
    }
    out
}

/// `(service port name, target port number)` of every Service selecting `labels` in `ns`.
fn service_port_names(
    resources: &[Resource],
    ns: &str,
    labels: &BTreeMap<String, String>,
) -> Vec<(String, u16)> {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    let mut out = Vec::new();
    for r in resources.iter().filter(|r| r.ns() == ns) {
        let Object::Service(svc) = &r.object else {
            continue;
        };
        let Some(spec) = &svc.spec else { continue };
        let selector: BTreeMap<String, String> = spec
            .selector
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect();
        if !contains_all(labels, &selector) {
            continue;
        }
        for p in spec.ports.iter().flatten() {
            let target = match &p.target_port {
                None => u16::try_from(p.port).ok(),
                Some(IntOrString::Int(n)) => u16::try_from(*n).ok(),
                Some(IntOrString::String(_)) => None,
            };
            if let (Some(name), Some(t)) = (&p.name, target) {
                out.push((name.clone(), t));
            }
        }
    }
    out
}

/// The port of the first Redis-like MESH_EXTERNAL ServiceEntry port.
fn redis_port(resources: &[Resource]) -> Option<u16> {
    resources.iter().find_map(|r| match &r.object {
        Object::ServiceEntry(se) => se.ports.iter().find_map(|p| {
            let n = u16::try_from(p.number).ok()?;
            (p.name.to_ascii_lowercase().contains("redis") || n == 6379).then_some(n)
        }),
        _ => None,
    })
}

/// The documents as one YAML stream (JSON flow documents, which every YAML reader takes).
pub fn render(documents: &[Value]) -> String {
    let mut out = String::from(
        "# Generated by `trellis up` from your manifests: what this machine runs.\n# Do not edit: edit the inputs; `trellis up` rewrites this file.\n",
    );
    for d in documents {
        out.push_str("---\n");
        out.push_str(&serde_json::to_string(d).unwrap_or_default());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use trellis_api::load::{LoadOptions, ResourceSet};

    fn example() -> Vec<Resource> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../examples/alphintra/local/dev");
        let mut set = ResourceSet::default();
        set.add_path(&dir, &LoadOptions::default());
        assert!(!set.has_errors(), "{:?}", set.diagnostics);
        set.resources
    }

    fn counter() -> impl FnMut(IpAddr) -> std::io::Result<u16> {
        let mut next = 40000u16;
        move |_| {
            next += 1;
            Ok(next)
        }
    }

    fn options() -> PlanOptions {
        PlanOptions {
            net: None,
            http_port: None,
            https_port: None,
            redis_available: true,
            postgres_available: false,
            standins_off: false,
        }
    }

    #[test]
    fn the_example_runs_its_workload_entries() {
        let resources = example();
        let mut keep = Allocations::default();
        let mut alloc = counter();
        let plan = plan(&resources, &options(), &mut keep, &mut alloc).unwrap();
        let names: Vec<(&str, Role)> = plan
            .workloads
            .iter()
            .map(|w| (w.name.as_str(), w.role))
            .collect();
        assert_eq!(
            names,
            [
                ("istio-ingressgateway", Role::Gateway),
                ("service-gateway-stable", Role::Sidecar),
                ("service-gateway-canary", Role::Sidecar),
                ("auth-service", Role::Sidecar),
            ]
        );
        let stable = &plan.workloads[1];
        assert_eq!(stable.address.to_string(), "127.0.10.1");
        let local = stable.ports[0].2;
        assert_eq!(stable.ports, [("http".to_string(), 8080, local)]);
        let mut all: Vec<u16> = plan.workloads[1..].iter().map(|w| w.ports[0].2).collect();
        all.dedup();
        assert_eq!(all.len(), 3, "one local port per workload");
        assert_eq!(stable.outbound_ip.unwrap().to_string(), "127.0.30.1");
        let app = stable.app.as_ref().unwrap();
        assert_eq!(app.listen.to_string(), format!("127.0.0.1:{local}"));
        assert_eq!(app.health.as_deref(), Some("/actuator/health"));
        assert!(app.command.contains("demo-app service-gateway"));
        assert!(app
            .env
            .contains(&("REDIS_ADDR".to_string(), "127.0.30.1:6379".to_string())));
        let gw = &plan.workloads[0];
        let binds: Vec<(u16, String)> = gw
            .gateway_binds
            .iter()
            .map(|b| (b.port, b.bind.to_string()))
            .collect();
        assert_eq!(
            binds,
            [
                (80, "127.0.0.1:8080".into()),
                (443, "127.0.0.1:8443".into())
            ]
        );
        assert_eq!(
            gw.gateway_binds[1].credential.as_deref(),
            Some("dev-alphintra-gateway-tls")
        );
        // Redis gets a stand-in, PostgreSQL a note.
        assert_eq!(plan.standins.len(), 1);
        assert_eq!(plan.standins[0].listen.to_string(), "127.0.40.1:6379");
        assert!(
            plan.notes.iter().any(|n| n.contains("PostgreSQL")),
            "{:?}",
            plan.notes
        );
        // The proxies' copy: no Deployments, entries at their local ports, Redis local.
        assert!(!plan.documents.iter().any(|d| d["kind"] == "Deployment"));
        let we = plan
            .documents
            .iter()
            .find(|d| {
                d["kind"] == "WorkloadEntry" && d["metadata"]["name"] == "service-gateway-stable"
            })
            .unwrap();
        assert_eq!(we["spec"]["ports"]["http"], local);
        let redis = plan
            .documents
            .iter()
            .find(|d| d["kind"] == "ServiceEntry" && d["metadata"]["name"] == "redis-memorystore")
            .unwrap();
        assert_eq!(redis["spec"]["endpoints"][0]["address"], "127.0.40.1");
        // The gateway fetches the auth service's keys from its app.
        let ra = plan
            .documents
            .iter()
            .find(|d| d["kind"] == "RequestAuthentication")
            .unwrap();
        let auth_port = plan.workloads[3].ports[0].2;
        assert_eq!(
            ra["spec"]["jwtRules"][0]["jwksUri"],
            format!("http://127.0.0.1:{auth_port}/.well-known/jwks.json")
        );

        // A re-plan keeps every allocation.
        let again = super::plan(&resources, &options(), &mut keep, &mut alloc).unwrap();
        assert_eq!(again.workloads[1].ports, stable.ports);
        assert_eq!(again.workloads[3].ports, plan.workloads[3].ports);
    }

    #[test]
    fn loopback_net_moves_every_address_and_ports_can_be_chosen() {
        let resources = example();
        let opts = PlanOptions {
            net: Some(77),
            http_port: Some(0),
            https_port: Some(9443),
            ..options()
        };
        let plan = plan(
            &resources,
            &opts,
            &mut Allocations::default(),
            &mut counter(),
        )
        .unwrap();
        assert_eq!(plan.workloads[2].address.to_string(), "127.77.10.2");
        assert_eq!(
            plan.workloads[2].outbound_ip.unwrap().to_string(),
            "127.77.30.2"
        );
        let gw = &plan.workloads[0];
        assert_eq!(gw.gateway_binds[0].bind.to_string(), "127.77.0.1:0");
        assert_eq!(gw.gateway_binds[1].bind.to_string(), "127.77.0.1:9443");
        assert_eq!(plan.standins[0].listen.to_string(), "127.77.40.1:6379");
    }

    #[test]
    fn deployments_without_entries_get_generated_ones() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../examples/alphintra/infra/kubernetes/istio/overlays/prod");
        let mut set = ResourceSet::default();
        set.add_path(&dir, &LoadOptions::default());
        let plan = plan(
            &set.resources,
            &options(),
            &mut Allocations::default(),
            &mut counter(),
        )
        .unwrap();
        let names: Vec<(&str, &str, Role)> = plan
            .workloads
            .iter()
            .map(|w| (w.name.as_str(), w.namespace.as_str(), w.role))
            .collect();
        assert!(names.contains(&("service-gateway-canary", "alphintra", Role::Sidecar)));
        assert!(names.contains(&("istio-ingressgateway", "istio-system", Role::Gateway)));
        let canary = plan
            .workloads
            .iter()
            .find(|w| w.name == "service-gateway-canary")
            .unwrap();
        assert!(canary.source.contains("generated"));
        assert!(canary.address.to_string().starts_with("127.0.10."));
        assert!(canary.app.is_none());
        assert!(plan
            .notes
            .iter()
            .any(|n| n.contains("has no WorkloadEntry")));
    }
}
