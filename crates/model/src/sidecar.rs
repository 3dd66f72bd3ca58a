//! Sidecar proxies.
//!
//! Outbound, for every service visible to the proxy's namespace (`exportTo`), narrowed by the
//! `Sidecar` resource that applies (the one selecting the workload, else the namespace's
//! default, else the root namespace's default) to its egress `hosts`:
//! - HTTP ports: a listener `0.0.0.0_<port>` whose route table `<port>` has a virtual host per
//!   service on that port (short name in the same namespace, `name.ns`, `name.ns.svc`, the FQDN
//!   and the VIPs, each also with `:port`), routed by the mesh VirtualService for the host
//!   (`gateways` empty or naming `mesh`; exact host before wildcard, oldest first; one per host
//!   as Istio) or by a default route to `outbound|<port>||<host>` with the mesh retry policy;
//!   plus a catch-all `*` host (ALLOW_ANY: `PassthroughCluster`; REGISTRY_ONLY: 502).
//! - Other ports: a listener per service address `<vip>_<port>` (`0.0.0.0_<port>` without a
//!   VIP; the first service wins a port, and HTTP listeners win over TCP ones) routed by the
//!   VirtualService's `tcp` rules (or `tls` rules on TLS/HTTPS ports), else to the service.
//! - `virtualOutbound` (15001): an HTTP proxy listener (route table `http_proxy`) with every
//!   HTTP service on every port (domains with the port; bare names too for port 80).
//!
//! Inbound: `virtualInbound` (15006) with one chain per workload port (container ports,
//! WorkloadEntry ports, the target ports of the services selecting it; Istio's own ports
//! excluded), selected by destination port, to `inbound|<port>||` whose endpoint is the app at
//! `127.0.0.1:<port>`; HTTP ports through the route table `inbound|<port>` (no retries);
//! then a passthrough chain to `InboundPassthroughCluster`.
//!
//! When the `Sidecar` resource that applies has `ingress` listeners, they replace the
//! derived ports, as Istio: one chain per listener port, by its protocol, to its
//! `defaultEndpoint` (`127.0.0.1:PORT`, `[::1]:PORT`, or `0.0.0.0:PORT` for the workload's own
//! address; `unix://` sockets are not supported and are reported). An ingress listener's
//! `tls` (SIMPLE or MUTUAL, certificate files) is terminated by the sidecar on that port,
//! which then takes no mesh mTLS (PeerAuthentication does not apply to it); its
//! `connectionPool`, else the Sidecar's `inboundConnectionPool`, limits the inbound cluster.
//!
//! Simplifications: egress listeners' own `port`/`bind` and ingress listeners' `bind` are not
//! compiled (the union of egress hosts scopes the proxy); VirtualService hosts that are not
//! services get no virtual host on sidecars.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use trellis_api::host::{host_matches, split_namespaced_host};
use trellis_api::networking::{
    ConnectionPoolSettings, OutboundTrafficPolicyMode, Protocol, Sidecar,
};
use trellis_api::{Object, Resource};

use crate::compile::{CompileError, Compiler};
use crate::config::{
    ChainHandler, ChainMatch, Cluster, ClusterEndpoints, ConnectionPool, Discovery, DownstreamTls,
    Endpoint, EndpointAddress, FilterChain, ForwardAction, HeaderOps, HttpCodec, HttpManager,
    LbPolicy, Listener, Route, RouteAction, RouteOrigin, RouteTable, Scheme, ServiceKey, TcpProxy,
    TcpRoute, TrafficDirection, UpstreamProtocol, UpstreamTls, VirtualHost, WeightedCluster,
    WeightedClusters,
};
use crate::registry::{port_protocol, Service, ServiceSource, Workload};
use crate::routes::{retry_policy, MatchScope};

/// Catch-all cluster forwarding to the original destination (ALLOW_ANY).
pub const PASSTHROUGH_CLUSTER: &str = "PassthroughCluster";
/// Cluster without endpoints for refused destinations (REGISTRY_ONLY).
pub const BLACKHOLE_CLUSTER: &str = "BlackHoleCluster";
/// Inbound catch-all to the original destination.
pub const INBOUND_PASSTHROUGH_CLUSTER: &str = "InboundPassthroughCluster";
/// Route table of the HTTP proxy listener.
pub const HTTP_PROXY_ROUTE: &str = "http_proxy";
/// Ports the proxy itself uses: never application ports.
const PROXY_PORTS: &[u16] = &[
    15000, 15001, 15004, 15006, 15008, 15009, 15020, 15021, 15053, 15090,
];

/// Whether the egress `hosts` (`ns/host`) admit `host` of namespace `owner`.
fn egress_admits(egress: &[(String, String)], proxy_ns: &str, owner: &str, host: &str) -> bool {
    egress.iter().any(|(ns, h)| {
        let ns_ok = match ns.as_str() {
            "*" => true,
            "." => owner == proxy_ns,
            "~" => false,
            n => n == owner,
        };
        ns_ok && host_matches(h, host)
    })
}

fn forward_route(
    origin: RouteOrigin,
    cluster: String,
    retry: Option<crate::config::RetryPolicy>,
) -> Route {
    Route {
        origin,
        matches: Vec::new(),
        action: RouteAction::Forward(ForwardAction {
            clusters: WeightedClusters {
                clusters: vec![WeightedCluster {
                    cluster,
                    weight: 100,
                    request_headers: HeaderOps::default(),
                    response_headers: HeaderOps::default(),
                }],
                total_weight: 100,
            },
            rewrite: None,
        }),
        request_headers: HeaderOps::default(),
        response_headers: HeaderOps::default(),
        timeout: None,
        retry,
        fault: None,
        mirrors: Vec::new(),
        cors: None,
    }
}

fn generated(rule: &str) -> RouteOrigin {
    RouteOrigin {
        virtual_service: String::new(),
        rule: rule.to_string(),
    }
}

fn plain_cluster(
    name: &str,
    host: &str,
    port: u16,
    discovery: Discovery,
    protocol: UpstreamProtocol,
    connect_timeout: std::time::Duration,
) -> Cluster {
    Cluster {
        name: name.to_string(),
        service: ServiceKey {
            host: host.to_string(),
            port,
        },
        subset: None,
        discovery,
        protocol,
        lb: if discovery == Discovery::OriginalDst {
            LbPolicy::Passthrough
        } else {
            LbPolicy::LeastRequest
        },
        connect_timeout,
        pool: ConnectionPool::default(),
        outlier: None,
        tls: UpstreamTls::None,
        auto_mtls: false,
        destination_rule: None,
    }
}

/// One inbound port: how to speak to it and where the app listens (`None`: 127.0.0.1 on
/// the same port).
#[derive(Clone)]
struct InboundPort {
    protocol: Protocol,
    sniffed: bool,
    /// The service the port belongs to, when one selects the workload.
    host: Option<String>,
    app: Option<SocketAddr>,
    /// Sidecar ingress `tls`: the sidecar terminates TLS itself (no mesh mTLS on the port).
    tls: Option<DownstreamTls>,
    /// Sidecar ingress `connectionPool` (replaces `inboundConnectionPool` for the port).
    pool: Option<ConnectionPoolSettings>,
}

impl<'a> Compiler<'a> {
    /// The Sidecar resource for this workload: one selecting it, else its namespace's
    /// default, else the root namespace's default (oldest first).
    fn select_sidecar(&self) -> Option<(&'a Resource, &'a Sidecar)> {
        let resources: &'a [Resource] = self.resources;
        let mut all: Vec<(&'a Resource, &'a Sidecar)> = resources
            .iter()
            .filter_map(|r| match &r.object {
                Object::Sidecar(s) => Some((r, s.as_ref())),
                _ => None,
            })
            .collect();
        all.sort_by(|(a, _), (b, _)| {
            (a.creation_timestamp.as_deref().unwrap_or(""), &a.name)
                .cmp(&(b.creation_timestamp.as_deref().unwrap_or(""), &b.name))
        });
        let ns = self.target.namespace.as_str();
        all.iter()
            .find(|(r, s)| {
                r.ns() == ns
                    && s.workload_selector
                        .as_ref()
                        .is_some_and(|w| !w.labels.is_empty() && w.matches(&self.target.labels))
            })
            .or_else(|| {
                all.iter()
                    .find(|(r, s)| r.ns() == ns && s.workload_selector.is_none())
            })
            .or_else(|| {
                all.iter().find(|(r, s)| {
                    r.ns() == self.mesh.root_namespace && s.workload_selector.is_none()
                })
            })
            .copied()
    }

    pub(crate) fn build_sidecar(&mut self) -> Result<(), CompileError> {
        let ns = self.target.namespace.clone();
        let sidecar = self.select_sidecar();
        if let Some(p) = sidecar.and_then(|(_, s)| s.outbound_traffic_policy.as_ref()) {
            self.allow_any = p.mode() == OutboundTrafficPolicyMode::AllowAny;
        }
        let egress: Option<Vec<(String, String)>> = sidecar
            .map(|(_, s)| {
                s.egress
                    .iter()
                    .flat_map(|e| e.hosts.iter())
                    .map(|h| {
                        let (n, host) = split_namespaced_host(h);
                        (n.to_string(), host.to_ascii_lowercase())
                    })
                    .collect::<Vec<_>>()
            })
            .filter(|e| !e.is_empty());

        let services: Vec<Service> = self
            .registry
            .visible_to(&ns)
            .into_iter()
            .filter(|s| {
                egress
                    .as_ref()
                    .is_none_or(|e| egress_admits(e, &ns, &s.namespace, &s.host))
            })
            .cloned()
            .collect();
        let mesh_vs: Vec<usize> = self
            .vss
            .iter()
            .enumerate()
            .filter(|(_, vs)| {
                !vs.hosts.is_empty()
                    && vs.gateways.iter().any(|g| g == "mesh")
                    && self.vs_visible(vs)
                    && egress.as_ref().is_none_or(|e| {
                        vs.hosts
                            .iter()
                            .any(|h| egress_admits(e, &ns, vs.namespace, h))
                    })
            })
            .map(|(i, _)| i)
            .collect();

        // Clusters for every service port and every subset, as Istio's CDS.
        for svc in &services {
            let rule = self
                .rules
                .lookup(&svc.host, &ns, &self.target.labels, Some(&svc.namespace));
            for p in svc.ports.iter().filter(|p| p.protocol != Protocol::Udp) {
                self.ensure_cluster(&svc.host, p.number, None);
                for subset in rule.iter().flat_map(|r| r.subsets.iter()) {
                    self.ensure_cluster(&svc.host, p.number, Some(&subset.name));
                }
            }
        }
        self.catch_all_clusters();

        // HTTP services by port, and their routes (shared by the port's table and http_proxy).
        let mut http_ports: BTreeMap<u16, Vec<(usize, Vec<Route>)>> = BTreeMap::new();
        for (i, svc) in services.iter().enumerate() {
            for p in svc.ports.iter().filter(|p| p.is_http()) {
                let routes = self.service_routes(svc, p.number, &mesh_vs)?;
                http_ports.entry(p.number).or_default().push((i, routes));
            }
        }
        let mut proxy_hosts = Vec::new();
        for (port, entries) in &http_ports {
            let mut vhosts = Vec::new();
            for (i, routes) in entries {
                let svc = &services[*i];
                vhosts.push(VirtualHost {
                    name: format!("{}:{port}", svc.host),
                    domains: service_domains(svc, *port, &ns, true),
                    require_tls: false,
                    routes: routes.clone(),
                });
                proxy_hosts.push(VirtualHost {
                    name: format!("{}:{port}", svc.host),
                    domains: service_domains(svc, *port, &ns, *port == 80),
                    require_tls: false,
                    routes: routes.clone(),
                });
            }
            vhosts.push(self.catch_all_vhost());
            let table = port.to_string();
            self.routes.insert(
                table.clone(),
                Arc::new(RouteTable {
                    name: table.clone(),
                    virtual_hosts: vhosts,
                }),
            );
            self.listeners.push(Listener {
                name: format!("0.0.0.0_{port}"),
                address: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), *port),
                direction: TrafficDirection::Outbound,
                filter_chains: vec![http_chain(&table)],
            });
        }
        proxy_hosts.push(self.catch_all_vhost());
        self.routes.insert(
            HTTP_PROXY_ROUTE.to_string(),
            Arc::new(RouteTable {
                name: HTTP_PROXY_ROUTE.to_string(),
                virtual_hosts: proxy_hosts,
            }),
        );

        // TCP (and TLS) services: one listener per VIP and port.
        let mut taken: BTreeSet<String> = self.listeners.iter().map(|l| l.name.clone()).collect();
        for svc in &services {
            for p in svc
                .ports
                .iter()
                .filter(|p| !p.is_http() && p.protocol != Protocol::Udp)
            {
                let ips: Vec<IpAddr> = if svc.addresses.is_empty() {
                    vec![IpAddr::V4(Ipv4Addr::UNSPECIFIED)]
                } else {
                    svc.addresses.iter().map(|n| n.network()).collect()
                };
                for ip in ips {
                    let name = format!("{ip}_{}", p.number);
                    if !taken.insert(name.clone()) {
                        self.warn(format!(
                            "service {} port {}: listener {name} is already used by another service: not reachable through it (give the service an address)",
                            svc.host, p.number
                        ));
                        continue;
                    }
                    let handler = self.tcp_handler(svc, p.number, p.protocol, &mesh_vs);
                    self.listeners.push(Listener {
                        name: name.clone(),
                        address: SocketAddr::new(ip, p.number),
                        direction: TrafficDirection::Outbound,
                        filter_chains: vec![FilterChain {
                            name: format!("{}:{}", svc.host, p.number),
                            filter_match: ChainMatch::default(),
                            tls: None,
                            handler,
                        }],
                    });
                }
            }
        }
        self.listeners
            .sort_by(|a, b| (a.address.port(), &a.name).cmp(&(b.address.port(), &b.name)));

        self.listeners.insert(
            0,
            Listener {
                name: "virtualOutbound".into(),
                address: SocketAddr::new(
                    IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                    u16::try_from(self.mesh.proxy_listen_port).unwrap_or(15001),
                ),
                direction: TrafficDirection::Outbound,
                filter_chains: vec![http_chain(HTTP_PROXY_ROUTE)],
            },
        );
        self.build_inbound();
        Ok(())
    }

    fn catch_all_clusters(&mut self) {
        let timeout = self.mesh.connect_timeout.as_std();
        for (name, discovery) in [
            (PASSTHROUGH_CLUSTER, Discovery::OriginalDst),
            (BLACKHOLE_CLUSTER, Discovery::Eds),
        ] {
            self.clusters.insert(
                name.to_string(),
                Arc::new(plain_cluster(
                    name,
                    name,
                    0,
                    discovery,
                    UpstreamProtocol::Auto,
                    timeout,
                )),
            );
            self.endpoints
                .insert(name.to_string(), Arc::new(ClusterEndpoints::default()));
        }
    }

    fn catch_all_vhost(&self) -> VirtualHost {
        if self.allow_any {
            VirtualHost {
                name: "allow_any".into(),
                domains: vec!["*".into()],
                require_tls: false,
                routes: vec![forward_route(
                    generated("allow_any"),
                    PASSTHROUGH_CLUSTER.into(),
                    None,
                )],
            }
        } else {
            VirtualHost {
                name: "block_all".into(),
                domains: vec!["*".into()],
                require_tls: false,
                routes: vec![Route {
                    action: RouteAction::DirectResponse {
                        status: 502,
                        body: None,
                    },
                    ..forward_route(generated("block_all"), String::new(), None)
                }],
            }
        }
    }

    /// The mesh VirtualService for `host`: exact host first, then the most specific wildcard.
    fn mesh_vs_for(&self, mesh_vs: &[usize], host: &str) -> Option<usize> {
        if let Some(i) = mesh_vs
            .iter()
            .copied()
            .find(|i| self.vss[*i].hosts.iter().any(|h| h == host))
        {
            return Some(i);
        }
        let mut best: Option<(usize, usize)> = None;
        for i in mesh_vs {
            for h in &self.vss[*i].hosts {
                if h.starts_with('*')
                    && host_matches(h, host)
                    && best.is_none_or(|(_, l)| h.len() > l)
                {
                    best = Some((*i, h.len()));
                }
            }
        }
        best.map(|(i, _)| i)
    }

    /// Routes for a service's HTTP port: its VirtualService's, else the default route.
    fn service_routes(
        &mut self,
        svc: &Service,
        port: u16,
        mesh_vs: &[usize],
    ) -> Result<Vec<Route>, CompileError> {
        if let Some(idx) = self.mesh_vs_for(mesh_vs, &svc.host) {
            let routes = self.http_routes(
                idx,
                &MatchScope {
                    gateway: "mesh",
                    port,
                },
            )?;
            if !routes.is_empty() {
                return Ok(routes);
            }
        }
        let cluster = self.ensure_cluster(&svc.host, port, None);
        Ok(vec![forward_route(
            generated("default"),
            cluster,
            retry_policy(None, self.mesh),
        )])
    }

    fn tcp_handler(
        &mut self,
        svc: &Service,
        port: u16,
        protocol: Protocol,
        mesh_vs: &[usize],
    ) -> ChainHandler {
        let scope = MatchScope {
            gateway: "mesh",
            port,
        };
        if let Some(idx) = self.mesh_vs_for(mesh_vs, &svc.host) {
            if protocol.is_tls() && !self.vss[idx].spec.tls.is_empty() {
                let routes = self.tls_routes(idx, &scope, None);
                if !routes.is_empty() {
                    return ChainHandler::TlsPassthrough(routes);
                }
            }
            let routes = self.tcp_routes(idx, &scope);
            if !routes.is_empty() {
                return ChainHandler::Tcp(TcpProxy { routes });
            }
        }
        let cluster = self.ensure_cluster(&svc.host, port, None);
        ChainHandler::Tcp(TcpProxy {
            routes: vec![TcpRoute {
                origin: "default".into(),
                destination_subnets: Vec::new(),
                port: None,
                clusters: WeightedClusters {
                    clusters: vec![WeightedCluster {
                        cluster,
                        weight: 100,
                        request_headers: HeaderOps::default(),
                        response_headers: HeaderOps::default(),
                    }],
                    total_weight: 100,
                },
            }],
        })
    }

    /// The Sidecar resource's `ingress` listeners as inbound ports. `None` when there are
    /// none.
    fn sidecar_ingress(&mut self) -> Option<BTreeMap<u16, InboundPort>> {
        let (r, sidecar) = self.select_sidecar()?;
        if sidecar.ingress.is_empty() {
            return None;
        }
        let own_ip = self.target.ip;
        let mut ports = BTreeMap::new();
        for (i, l) in sidecar.ingress.iter().enumerate() {
            let at = format!("Sidecar {}/{} ingress[{i}]", r.ns(), r.name);
            let Some(port) = l.port.as_ref().and_then(|p| u16::try_from(p.number).ok()) else {
                self.warn(format!("{at}: no valid port: skipped"));
                continue;
            };
            let proto = l
                .port
                .as_ref()
                .and_then(|p| p.protocol.clone().or_else(|| p.name.clone()))
                .unwrap_or_default()
                .to_ascii_lowercase();
            let (proto, sniffed) = port_protocol(&proto, None, None);
            let endpoint = l.default_endpoint.as_deref().unwrap_or("");
            let target = match endpoint.parse::<SocketAddr>() {
                Ok(a) if a.ip().is_unspecified() => {
                    SocketAddr::new(own_ip.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)), a.port())
                }
                Ok(a) => a,
                Err(_) if endpoint.is_empty() => {
                    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
                }
                Err(_) => {
                    self.warn(format!(
                        "{at}: defaultEndpoint {endpoint:?} is not supported (expected 127.0.0.1:PORT, [::1]:PORT or 0.0.0.0:PORT): skipped"
                    ));
                    continue;
                }
            };
            // HTTPS with `tls`: the sidecar terminates TLS and routes the HTTP inside.
            let proto = if l.tls.is_some() && proto == Protocol::Https {
                Protocol::Http
            } else {
                proto
            };
            let tls = l
                .tls
                .as_ref()
                .map(|tls| self.server_tls(tls, &format!("{at}.tls"), proto.is_http()));
            ports.insert(
                port,
                InboundPort {
                    protocol: proto,
                    sniffed,
                    host: None,
                    app: Some(target),
                    tls,
                    pool: l.connection_pool.clone(),
                },
            );
        }
        Some(ports)
    }

    /// The workload's own ports (container ports, WorkloadEntry ports, the target ports of the
    /// services selecting it), each speaking the protocol its service port declares.
    fn derived_inbound_ports(&self, w: &Workload) -> BTreeMap<u16, InboundPort> {
        let mut ports: BTreeMap<u16, InboundPort> = BTreeMap::new();
        for (name, p) in &w.ports {
            let (protocol, sniffed) = port_protocol(name, None, None);
            ports.entry(*p).or_insert(InboundPort {
                protocol,
                sniffed,
                host: None,
                app: None,
                tls: None,
                pool: None,
            });
        }
        let key = w.key();
        for svc in self.registry.services() {
            for inst in svc.instances.iter().filter(|i| i.workload == key) {
                for (svc_port, ep_port) in &inst.ports {
                    let Some(sp) = svc.port(*svc_port) else {
                        continue;
                    };
                    let declared = InboundPort {
                        protocol: sp.protocol,
                        sniffed: sp.sniffed,
                        host: Some(svc.host.clone()),
                        app: None,
                        tls: None,
                        pool: None,
                    };
                    let e = ports.entry(*ep_port).or_insert(declared.clone());
                    if !sp.sniffed && (e.sniffed || e.host.is_none()) {
                        *e = declared;
                    }
                }
            }
        }
        ports
    }

    /// `virtualInbound`: a chain per workload port to the app on 127.0.0.1 (or per `ingress`
    /// listener of the Sidecar resource, to its `defaultEndpoint`).
    fn build_inbound(&mut self) {
        let t = self.target;
        let workload = self.registry.workload(&t.namespace, &t.name).cloned();
        let local = |port| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
        let ports = match self.sidecar_ingress() {
            Some(ports) => ports,
            None => workload
                .as_ref()
                .map(|w| self.derived_inbound_ports(w))
                .unwrap_or_default(),
        };
        let timeout = self.mesh.connect_timeout.as_std();
        let inbound_pool = self
            .select_sidecar()
            .and_then(|(_, s)| s.inbound_connection_pool.clone());
        let mut chains = Vec::new();
        for (port, p) in ports {
            let InboundPort {
                protocol: proto,
                sniffed,
                host,
                app,
                tls,
                pool,
            } = p;
            if PROXY_PORTS.contains(&port) || proto == Protocol::Udp {
                continue;
            }
            let app = app.unwrap_or_else(|| local(port));
            let cluster_name = format!("inbound|{port}||");
            let http = !sniffed && proto.is_http();
            let protocol = match (sniffed, proto) {
                (true, _) => UpstreamProtocol::Auto,
                (_, Protocol::Http | Protocol::HttpProxy) => UpstreamProtocol::Http1,
                (_, Protocol::Http2 | Protocol::Grpc | Protocol::GrpcWeb) => {
                    UpstreamProtocol::Http2
                }
                _ => UpstreamProtocol::Tcp,
            };
            let host = host.unwrap_or_else(|| format!("{}.{}", t.name, t.namespace));
            let mut cluster = plain_cluster(
                &cluster_name,
                &host,
                port,
                Discovery::Eds,
                protocol,
                timeout,
            );
            if let Some(cp) = pool.as_ref().or(inbound_pool.as_ref()) {
                (cluster.pool, cluster.connect_timeout) =
                    crate::cluster::connection_pool(Some(cp), timeout);
            }
            self.clusters
                .insert(cluster_name.clone(), Arc::new(cluster));
            self.endpoints.insert(
                cluster_name.clone(),
                Arc::new(ClusterEndpoints {
                    endpoints: vec![Endpoint {
                        address: EndpointAddress::Socket(app),
                        labels: t.labels.clone(),
                        weight: 1,
                        identity: None,
                        mesh: false,
                        locality: None,
                        priority: 0,
                    }],
                }),
            );
            let filter_match = ChainMatch {
                destination_port: Some(port),
                ..Default::default()
            };
            let handler = if http {
                let table = format!("inbound|{port}");
                self.routes.insert(
                    table.clone(),
                    Arc::new(RouteTable {
                        name: table.clone(),
                        virtual_hosts: vec![VirtualHost {
                            name: format!("inbound|http|{port}"),
                            domains: vec!["*".into()],
                            require_tls: false,
                            routes: vec![forward_route(
                                generated("default"),
                                cluster_name.clone(),
                                None,
                            )],
                        }],
                    }),
                );
                ChainHandler::Http(HttpManager {
                    route_table: table,
                    codec: HttpCodec::Auto,
                    scheme: if tls.is_some() {
                        Scheme::Https
                    } else {
                        Scheme::Http
                    },
                })
            } else {
                ChainHandler::Tcp(TcpProxy {
                    routes: vec![TcpRoute {
                        origin: "default".into(),
                        destination_subnets: Vec::new(),
                        port: None,
                        clusters: WeightedClusters {
                            clusters: vec![WeightedCluster {
                                cluster: cluster_name.clone(),
                                weight: 100,
                                request_headers: HeaderOps::default(),
                                response_headers: HeaderOps::default(),
                            }],
                            total_weight: 100,
                        },
                    }],
                })
            };
            chains.push(FilterChain {
                name: format!("inbound|{port}"),
                filter_match,
                // Sidecar ingress TLS: terminated here; plaintext on the port fails the
                // handshake (it must not fall through to the passthrough chain).
                tls,
                handler,
            });
        }
        self.clusters.insert(
            INBOUND_PASSTHROUGH_CLUSTER.into(),
            Arc::new(plain_cluster(
                INBOUND_PASSTHROUGH_CLUSTER,
                INBOUND_PASSTHROUGH_CLUSTER,
                0,
                Discovery::OriginalDst,
                UpstreamProtocol::Auto,
                timeout,
            )),
        );
        self.endpoints.insert(
            INBOUND_PASSTHROUGH_CLUSTER.into(),
            Arc::new(ClusterEndpoints::default()),
        );
        chains.push(FilterChain {
            name: INBOUND_PASSTHROUGH_CLUSTER.into(),
            filter_match: ChainMatch::default(),
            tls: None,
            handler: ChainHandler::Tcp(TcpProxy {
                routes: vec![TcpRoute {
                    origin: "passthrough".into(),
                    destination_subnets: Vec::new(),
                    port: None,
                    clusters: WeightedClusters {
                        clusters: vec![WeightedCluster {
                            cluster: INBOUND_PASSTHROUGH_CLUSTER.into(),
                            weight: 100,
                            request_headers: HeaderOps::default(),
                            response_headers: HeaderOps::default(),
                        }],
                        total_weight: 100,
                    },
                }],
            }),
        });
        self.listeners.insert(
            1,
            Listener {
                name: "virtualInbound".into(),
                address: SocketAddr::new(
                    IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                    u16::try_from(self.mesh.proxy_inbound_listen_port).unwrap_or(15006),
                ),
                direction: TrafficDirection::Inbound,
                filter_chains: chains,
            },
        );
    }
}

fn http_chain(table: &str) -> FilterChain {
    FilterChain {
        name: table.to_string(),
        filter_match: ChainMatch::default(),
        tls: None,
        handler: ChainHandler::Http(HttpManager {
            route_table: table.to_string(),
            codec: HttpCodec::Auto,
            scheme: Scheme::Http,
        }),
    }
}

/// The names a service answers to from `proxy_ns`, with `:port` (and bare when `bare`).
fn service_domains(svc: &Service, port: u16, proxy_ns: &str, bare: bool) -> Vec<String> {
    let mut names = Vec::new();
    if svc.source == ServiceSource::Kubernetes {
        let name = svc.short_name().unwrap_or_default();
        if svc.namespace == proxy_ns {
            names.push(name.to_string());
        }
        names.push(format!("{name}.{}", svc.namespace));
        names.push(format!("{name}.{}.svc", svc.namespace));
    }
    names.push(svc.host.clone());
    for a in &svc.addresses {
        if a.prefix_len() == a.max_prefix_len() {
            names.push(match a.addr() {
                IpAddr::V6(v6) => format!("[{v6}]"),
                v4 => v4.to_string(),
            });
        }
    }
    let mut out = Vec::new();
    for n in names {
        let n = n.to_ascii_lowercase();
        if bare && !out.contains(&n) {
            out.push(n.clone());
        }
        let p = format!("{n}:{port}");
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out
}
