//! Gateway proxies: the servers of every Gateway selecting the workload, one listener per
//! port (`0.0.0.0_<port>`, the Gateway's port number: Istio would bind the gateway Service's
//! `targetPort` instead; the runtime remaps ports).
//!
//! - Plaintext HTTP/HTTP2/GRPC servers of a port share the route table `http.<port>`.
//! - HTTPS servers terminating TLS (SIMPLE, MUTUAL, OPTIONAL_MUTUAL, ISTIO_MUTUAL) get one
//!   filter chain per host (SNI), most specific first, and their own route table
//!   `https.<port>.<port name or server index>.<gateway name>.<gateway namespace>`.
//! - TLS servers terminating TLS route the decrypted stream with VirtualService `tcp` rules;
//!   PASSTHROUGH servers route by SNI with `tls` rules; TCP servers with `tcp` rules.
//! - The first server on a port decides whether the port is plaintext HTTP, TLS or TCP;
//!   servers of another kind on that port are ignored with a warning (Istio's conflict rule).
//!
//! Virtual hosts: each VirtualService bound to the server's Gateway (`gateways` lists
//! `ns/name`, or `name` in the VirtualService's namespace), visible to the gateway's
//! namespace, whose host the server admits (`ns/host`: `*`, `.` for the Gateway's namespace,
//! or the VirtualService's namespace; wildcards both ways) gives a virtual host for the more
//! specific of the two hosts. VirtualServices for the same host are merged: their rules are
//! concatenated oldest first (Istio's gateway behaviour).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use trellis_api::host::{host_matches, split_namespaced_host};
use trellis_api::networking::{Gateway, Protocol, Server, ServerTLSMode};
use trellis_api::{Object, Resource};

use crate::cluster::credential_secret_name;
use crate::compile::{CompileError, Compiler, VsEntry};
use crate::config::{
    ChainHandler, ChainMatch, DownstreamTls, FilterChain, HttpCodec, HttpManager, Listener,
    RouteTable, Scheme, SecretFiles, TcpProxy, TlsSecret, TrafficDirection, UpstreamTls,
    VirtualHost,
};
use crate::routes::MatchScope;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PortClass {
    PlainHttp,
    Tls,
    Tcp,
}

/// One server of one Gateway.
struct GwServer<'a> {
    /// `ns/name` of the Gateway.
    gw_key: String,
    gw_name: &'a str,
    gw_ns: &'a str,
    index: usize,
    server: &'a Server,
    protocol: Protocol,
}

impl GwServer<'_> {
    fn origin(&self) -> String {
        format!("Gateway {} servers[{}]", self.gw_key, self.index)
    }

    /// Server hosts without their namespace part, lowercase.
    fn hosts(&self) -> Vec<String> {
        self.server
            .hosts
            .iter()
            .map(|h| split_namespaced_host(h).1.to_ascii_lowercase())
            .collect()
    }
}

/// The virtual host domain a server host and a VirtualService host share, if the server
/// admits the VirtualService: the more specific of the two.
fn shared_domain(
    server_host: &str,
    gw_ns: &str,
    vs: &VsEntry<'_>,
    vs_host: &str,
) -> Option<String> {
    let (ns, host) = split_namespaced_host(server_host);
    let ns_ok = ns == "*" || (ns == "." && vs.namespace == gw_ns) || ns == vs.namespace;
    if !ns_ok {
        return None;
    }
    let host = host.to_ascii_lowercase();
    if host_matches(&host, vs_host) {
        Some(vs_host.to_string())
    } else if host_matches(vs_host, &host) {
        Some(host)
    } else {
        None
    }
}

/// Chain order for SNI selection: exact names, then wildcards (longest first), then any.
fn sni_rank(names: &[String]) -> (u8, usize) {
    match names.first() {
        None => (2, 0),
        Some(n) if n.starts_with('*') => (1, usize::MAX - n.len()),
        Some(_) => (0, 0),
    }
}

impl<'a> Compiler<'a> {
    pub(crate) fn build_gateway(&mut self) -> Result<(), CompileError> {
        let resources: &'a [Resource] = self.resources;
        let mut gws: Vec<(&'a Resource, &'a Gateway)> = resources
            .iter()
            .filter_map(|r| match &r.object {
                Object::Gateway(g)
                    if g.selector
                        .iter()
                        .all(|(k, v)| self.target.labels.get(k) == Some(v)) =>
                {
                    Some((r, g.as_ref()))
                }
                _ => None,
            })
            .collect();
        gws.sort_by(|(a, _), (b, _)| {
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
        if gws.is_empty() {
            self.warn(format!(
                "no Gateway selects workload {}/{}: the gateway has no listeners",
                self.target.namespace, self.target.name
            ));
        }

        let mut ports: BTreeMap<u16, (PortClass, Vec<GwServer<'a>>)> = BTreeMap::new();
        for (r, gw) in gws {
            for (index, server) in gw.servers.iter().enumerate() {
                let origin = format!("Gateway {} servers[{index}]", r.key());
                let Some(port) = &server.port else {
                    self.warn(format!("{origin}: no port: ignored"));
                    continue;
                };
                let Some(number) = u16::try_from(port.number).ok().filter(|n| *n != 0) else {
                    self.warn(format!(
                        "{origin}: port {} cannot be listened on: ignored",
                        port.number
                    ));
                    continue;
                };
                let Some(protocol) = port.protocol_kind() else {
                    self.warn(format!(
                        "{origin}: unknown protocol {:?}: ignored",
                        port.protocol
                    ));
                    continue;
                };
                let class = if protocol.is_http() {
                    PortClass::PlainHttp
                } else if protocol.is_tls() {
                    PortClass::Tls
                } else if protocol == Protocol::Udp {
                    self.warn(format!("{origin}: UDP is not supported: ignored"));
                    continue;
                } else {
                    PortClass::Tcp
                };
                if server
                    .bind
                    .as_deref()
                    .is_some_and(|b| b.starts_with("unix://"))
                {
                    self.warn(format!(
                        "{origin}: unix socket binds are not supported: ignored"
                    ));
                    continue;
                }
                let entry = ports.entry(number).or_insert((class, Vec::new()));
                if entry.0 != class {
                    self.warn(format!(
                        "{origin}: protocol {} conflicts with the servers already on port {number}: ignored",
                        port.protocol
                    ));
                    continue;
                }
                entry.1.push(GwServer {
                    gw_key: r.key(),
                    gw_name: r.name.as_str(),
                    gw_ns: r.ns(),
                    index,
                    server,
                    protocol,
                });
            }
        }

        for (port, (class, servers)) in ports {
            let chains = match class {
                PortClass::PlainHttp => {
                    let name = format!("http.{port}");
                    self.gateway_route_table(&name, port, &servers, true)?;
                    // HTTP2/GRPC servers expect h2 (h1 is still accepted by the runtime).
                    let h2 = servers
                        .iter()
                        .all(|s| matches!(s.protocol, Protocol::Http2 | Protocol::Grpc));
                    vec![FilterChain {
                        name: name.clone(),
                        filter_match: ChainMatch::default(),
                        tls: None,
                        handler: ChainHandler::Http(HttpManager {
                            route_table: name,
                            codec: if h2 {
                                HttpCodec::Http2
                            } else {
                                HttpCodec::Auto
                            },
                            scheme: Scheme::Http,
                        }),
                    }]
                }
                PortClass::Tls => {
                    let mut chains = Vec::new();
                    for s in &servers {
                        chains.extend(self.gateway_tls_chains(port, s)?);
                    }
                    chains.sort_by_key(|c| sni_rank(&c.filter_match.server_names));
                    chains
                }
                PortClass::Tcp => {
                    let mut routes = Vec::new();
                    for s in &servers {
                        routes.extend(self.gateway_tcp_routes(port, s));
                    }
                    if routes.is_empty() {
                        self.warn(format!(
                            "gateway port {port}: no VirtualService tcp route is bound to its TCP servers: connections are closed"
                        ));
                    }
                    vec![FilterChain {
                        name: format!("tcp.{port}"),
                        filter_match: ChainMatch::default(),
                        tls: None,
                        handler: ChainHandler::Tcp(TcpProxy { routes }),
                    }]
                }
            };
            let ip = servers
                .first()
                .and_then(|s| s.server.bind.as_deref())
                .and_then(|b| b.parse::<IpAddr>().ok())
                .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
            self.listeners.push(Listener {
                name: format!("{ip}_{port}"),
                address: SocketAddr::new(ip, port),
                direction: TrafficDirection::Gateway,
                filter_chains: chains,
            });
        }
        self.register_upstream_credentials();
        Ok(())
    }

    /// Indices of the VirtualServices bound to Gateway `gw_key` and visible here.
    fn bound_virtual_services(&self, gw_key: &str) -> Vec<usize> {
        self.vss
            .iter()
            .enumerate()
            .filter(|(_, vs)| {
                !vs.hosts.is_empty()
                    && vs.gateways.iter().any(|g| g == gw_key)
                    && self.vs_visible(vs)
            })
            .map(|(i, _)| i)
            .collect()
    }

    /// Builds (and stores) an HTTP route table for `servers`.
    fn gateway_route_table(
        &mut self,
        name: &str,
        port: u16,
        servers: &[GwServer<'a>],
        plaintext: bool,
    ) -> Result<(), CompileError> {
        // domain -> (require_tls, [(vs index, gateway key)]), in first-seen order.
        let mut order: Vec<String> = Vec::new();
        let mut hosts: BTreeMap<String, (bool, Vec<(usize, String)>)> = BTreeMap::new();
        for s in servers {
            let redirect = plaintext
                && s.server
                    .tls
                    .as_ref()
                    .is_some_and(|t| t.https_redirect == Some(true));
            for idx in self.bound_virtual_services(&s.gw_key) {
                let vs = &self.vss[idx];
                for vs_host in &vs.hosts {
                    for sh in &s.server.hosts {
                        if let Some(d) = shared_domain(sh, s.gw_ns, vs, vs_host) {
                            let e = hosts.entry(d.clone()).or_insert_with(|| {
                                order.push(d.clone());
                                (false, Vec::new())
                            });
                            e.0 |= redirect;
                            if !e.1.iter().any(|(i, _)| *i == idx) {
                                e.1.push((idx, s.gw_key.clone()));
                            }
                        }
                    }
                }
            }
            if redirect {
                for h in s.hosts() {
                    let e = hosts.entry(h.clone()).or_insert_with(|| {
                        order.push(h.clone());
                        (false, Vec::new())
                    });
                    e.0 = true;
                }
            }
        }
        let mut virtual_hosts = Vec::new();
        for d in order {
            let (require_tls, mut vss) = hosts.remove(&d).unwrap_or_default();
            vss.sort_by_key(|(i, _)| *i);
            let mut routes = Vec::new();
            for (idx, gw) in vss {
                routes.extend(self.http_routes(idx, &MatchScope { gateway: &gw, port })?);
            }
            let domains = if d == "*" {
                vec![d.clone()]
            } else {
                vec![d.clone(), format!("{d}:{port}")]
            };
            virtual_hosts.push(VirtualHost {
                name: format!("{d}:{port}"),
                domains,
                require_tls,
                routes,
            });
        }
        self.routes.insert(
            name.to_string(),
            Arc::new(RouteTable {
                name: name.to_string(),
                virtual_hosts,
            }),
        );
        Ok(())
    }

    fn gateway_tls_chains(
        &mut self,
        port: u16,
        s: &GwServer<'a>,
    ) -> Result<Vec<FilterChain>, CompileError> {
        let Some(tls) = &s.server.tls else {
            self.warn(format!(
                "{}: {} server without tls settings: ignored",
                s.origin(),
                s.server.port.as_ref().map_or("", |p| p.protocol.as_str())
            ));
            return Ok(Vec::new());
        };
        let hosts = s.hosts();
        let names: Vec<Vec<String>> = if hosts.iter().any(|h| h == "*") || hosts.is_empty() {
            vec![Vec::new()]
        } else {
            hosts.iter().map(|h| vec![h.clone()]).collect()
        };
        let server_id = s
            .server
            .port
            .as_ref()
            .map(|p| p.name.clone())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| s.index.to_string());
        let mode = tls.mode();
        let (handler, dtls) = match mode {
            ServerTLSMode::Passthrough => {
                let mut routes = Vec::new();
                for idx in self.bound_virtual_services(&s.gw_key) {
                    if !self.server_admits(s, idx) {
                        continue;
                    }
                    routes.extend(self.tls_routes(
                        idx,
                        &MatchScope {
                            gateway: &s.gw_key,
                            port,
                        },
                        Some(&hosts),
                    ));
                }
                if routes.is_empty() {
                    self.warn(format!(
                        "{}: PASSTHROUGH server without a bound VirtualService tls route: connections are closed",
                        s.origin()
                    ));
                }
                (ChainHandler::TlsPassthrough(routes), None)
            }
            ServerTLSMode::AutoPassthrough => {
                self.warn(format!(
                    "{}: AUTO_PASSTHROUGH is not supported: ignored",
                    s.origin()
                ));
                return Ok(Vec::new());
            }
            ServerTLSMode::Simple
            | ServerTLSMode::Mutual
            | ServerTLSMode::OptionalMutual
            | ServerTLSMode::IstioMutual => {
                if s.protocol == Protocol::Https {
                    let name = format!("https.{port}.{server_id}.{}.{}", s.gw_name, s.gw_ns);
                    self.gateway_route_table(&name, port, std::slice::from_ref(s), false)?;
                    let dtls = self.downstream_tls(s, true);
                    (
                        ChainHandler::Http(HttpManager {
                            route_table: name,
                            codec: HttpCodec::Auto,
                            scheme: Scheme::Https,
                        }),
                        Some(dtls),
                    )
                } else {
                    let routes = self.gateway_tcp_routes(port, s);
                    let dtls = self.downstream_tls(s, false);
                    (ChainHandler::Tcp(TcpProxy { routes }), Some(dtls))
                }
            }
        };
        let base = match &handler {
            ChainHandler::Http(h) => h.route_table.clone(),
            _ => format!("tls.{port}.{server_id}.{}.{}", s.gw_name, s.gw_ns),
        };
        let split = names.len() > 1;
        Ok(names
            .into_iter()
            .map(|server_names| FilterChain {
                name: if split {
                    format!("{base}/{}", server_names[0])
                } else {
                    base.clone()
                },
                filter_match: ChainMatch {
                    server_names,
                    tls_only: true,
                    ..Default::default()
                },
                tls: dtls.clone(),
                handler: handler.clone(),
            })
            .collect())
    }

    /// Whether the server admits some host of VirtualService `idx`.
    fn server_admits(&self, s: &GwServer<'_>, idx: usize) -> bool {
        let vs = &self.vss[idx];
        vs.hosts.iter().any(|vh| {
            s.server
                .hosts
                .iter()
                .any(|sh| shared_domain(sh, s.gw_ns, vs, vh).is_some())
        })
    }

    fn gateway_tcp_routes(&mut self, port: u16, s: &GwServer<'a>) -> Vec<crate::config::TcpRoute> {
        let mut routes = Vec::new();
        for idx in self.bound_virtual_services(&s.gw_key) {
            if !self.server_admits(s, idx) {
                continue;
            }
            routes.extend(self.tcp_routes(
                idx,
                &MatchScope {
                    gateway: &s.gw_key,
                    port,
                },
            ));
        }
        routes
    }

    /// TLS termination for a server; registers its certificates in `secrets`.
    fn downstream_tls(&mut self, s: &GwServer<'a>, http: bool) -> DownstreamTls {
        let tls = s.server.tls.clone().unwrap_or_default();
        self.server_tls(&tls, &s.origin(), http)
    }

    /// TLS termination with `tls` (a Gateway server's or a Sidecar ingress listener's);
    /// registers its certificates in `secrets`. `origin` names the settings in warnings.
    pub(crate) fn server_tls(
        &mut self,
        tls: &trellis_api::networking::ServerTLSSettings,
        origin: &str,
        http: bool,
    ) -> DownstreamTls {
        let origin = origin.to_string();
        let mode = tls.mode();
        let wants_ca = matches!(mode, ServerTLSMode::Mutual | ServerTLSMode::OptionalMutual);
        let (certificate, mut client_ca) = if mode == ServerTLSMode::IstioMutual {
            // The workload certificate and the mesh root, as Istio's SDS names them.
            ("default".to_string(), Some("ROOTCA".to_string()))
        } else if let Some(name) = tls
            .credential_name
            .clone()
            .filter(|n| !n.is_empty())
            .or_else(|| tls.credential_names.first().cloned())
        {
            self.credential(&name, wants_ca, &origin)
        } else {
            let files = tls
                .server_certificate
                .clone()
                .zip(tls.private_key.clone())
                .or_else(|| {
                    tls.tls_certificates
                        .first()
                        .and_then(|c| c.server_certificate.clone().zip(c.private_key.clone()))
                });
            match files {
                Some((cert, key)) => {
                    let name = format!("file-cert:{cert}~{key}");
                    self.secrets.insert(
                        name.clone(),
                        Arc::new(TlsSecret {
                            cert_chain_pem: String::new(),
                            private_key_pem: String::new(),
                            ca_pem: None,
                            source: format!("files {cert} and {key}"),
                            files: Some(SecretFiles {
                                cert_chain: cert,
                                private_key: key,
                                ca: None,
                            }),
                        }),
                    );
                    (name, None)
                }
                None => {
                    self.warn(format!(
                        "{origin}: no credentialName and no serverCertificate/privateKey: the chain has no certificate and is refused"
                    ));
                    (String::new(), None)
                }
            }
        };
        if wants_ca {
            if let Some(ca_name) = tls
                .ca_cert_credential_name
                .clone()
                .filter(|n| !n.is_empty())
            {
                client_ca = self.ca_credential(&ca_name, &origin);
            } else if let Some(ca) = tls.ca_certificates.clone().filter(|c| !c.is_empty()) {
                if client_ca.is_none() {
                    let name = format!("file-root:{ca}");
                    self.secrets.insert(
                        name.clone(),
                        Arc::new(TlsSecret {
                            cert_chain_pem: String::new(),
                            private_key_pem: String::new(),
                            ca_pem: None,
                            source: format!("file {ca}"),
                            files: Some(SecretFiles {
                                cert_chain: String::new(),
                                private_key: String::new(),
                                ca: Some(ca),
                            }),
                        }),
                    );
                    client_ca = Some(name);
                }
            }
            if client_ca.is_none() {
                self.warn(format!(
                    "{origin}: {mode} needs a CA to verify clients (ca.crt in the credential, a <name>-cacert Secret or caCertificates): none found"
                ));
            }
        }
        DownstreamTls {
            certificate,
            client_ca,
            require_client_cert: matches!(mode, ServerTLSMode::Mutual | ServerTLSMode::IstioMutual),
            alpn: if http {
                vec!["h2".into(), "http/1.1".into()]
            } else {
                Vec::new()
            },
            min_tls13: tls.min_protocol_version
                == Some(trellis_api::networking::TLSProtocol::TlsV1_3),
            client_san: tls.subject_alt_names.clone(),
        }
    }

    /// The decoded string data of Secret `namespace/name`.
    fn secret_data(&self, namespace: &str, name: &str) -> Option<BTreeMap<String, String>> {
        self.resources.iter().find_map(|r| match &r.object {
            Object::Secret(s) if r.ns() == namespace && r.name == name => {
                let mut out: BTreeMap<String, String> = s
                    .data
                    .iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.0).into_owned()))
                    .collect();
                for (k, v) in s.string_data.iter().flatten() {
                    out.insert(k.clone(), v.clone());
                }
                Some(out)
            }
            _ => None,
        })
    }

    fn missing_secret(&mut self, name: &str, origin: &str) {
        let ns = self.target.namespace.clone();
        let issued = self.resources.iter().any(|r| match &r.object {
            Object::Certificate(c) => r.ns() == ns && c.spec.secret_name == name,
            _ => false,
        });
        if issued {
            self.warn(format!(
                "{origin}: Secret {ns}/{name} is not in the resources (a cert-manager Certificate issues it): the chain is refused until it is available"
            ));
        } else {
            self.warn(format!(
                "{origin}: Secret {ns}/{name} (credentialName) not found in namespace {ns}: the chain is refused until it exists"
            ));
        }
    }

    /// Registers the credential Secret `name` (in the gateway's namespace); returns the
    /// certificate's secret name and, when `wants_ca`, the client CA's.
    fn credential(&mut self, name: &str, wants_ca: bool, origin: &str) -> (String, Option<String>) {
        let ns = self.target.namespace.clone();
        let key = credential_secret_name(&ns, name);
        let Some(data) = self.secret_data(&ns, name) else {
            self.missing_secret(name, origin);
            let ca = wants_ca
                .then(|| self.ca_credential(&format!("{name}-cacert"), origin))
                .flatten();
            return (key, ca);
        };
        let cert = data.get("tls.crt").or(data.get("cert")).cloned();
        let pkey = data.get("tls.key").or(data.get("key")).cloned();
        let ca = data.get("ca.crt").or(data.get("cacert")).cloned();
        match (cert, pkey) {
            (Some(cert), Some(pkey)) => {
                self.secrets.insert(
                    key.clone(),
                    Arc::new(TlsSecret {
                        cert_chain_pem: cert,
                        private_key_pem: pkey,
                        ca_pem: ca.clone(),
                        source: format!("Secret {ns}/{name}"),
                        files: None,
                    }),
                );
            }
            _ => self.warn(format!(
                "{origin}: Secret {ns}/{name} has no tls.crt/tls.key (or cert/key): the chain is refused"
            )),
        }
        let client_ca = if !wants_ca {
            None
        } else if ca.is_some() {
            Some(key.clone())
        } else {
            self.ca_credential(&format!("{name}-cacert"), origin)
        };
        (key, client_ca)
    }

    /// Registers a CA-only Secret (`ca.crt` or `cacert`).
    fn ca_credential(&mut self, name: &str, origin: &str) -> Option<String> {
        let ns = self.target.namespace.clone();
        let data = self.secret_data(&ns, name)?;
        let Some(ca) = data.get("ca.crt").or(data.get("cacert")).cloned() else {
            self.warn(format!(
                "{origin}: Secret {ns}/{name} has no ca.crt (or cacert)"
            ));
            return None;
        };
        let key = credential_secret_name(&ns, name);
        self.secrets.insert(
            key.clone(),
            Arc::new(TlsSecret {
                cert_chain_pem: String::new(),
                private_key_pem: String::new(),
                ca_pem: Some(ca),
                source: format!("Secret {ns}/{name}"),
                files: None,
            }),
        );
        Some(key)
    }

    /// DestinationRule `credentialName`s (TLS origination from gateways): register them.
    fn register_upstream_credentials(&mut self) {
        let prefix = credential_secret_name(&self.target.namespace, "");
        let names: Vec<String> = self
            .clusters
            .values()
            .filter_map(|c| match &c.tls {
                UpstreamTls::Tls {
                    credential: Some(k),
                    ..
                } => k.strip_prefix(&prefix).map(str::to_string),
                _ => None,
            })
            .collect();
        for name in names {
            let key = credential_secret_name(&self.target.namespace, &name);
            if self.secrets.contains_key(&key) {
                continue;
            }
            let origin = format!("DestinationRule credentialName {name}");
            let ns = self.target.namespace.clone();
            match self.secret_data(&ns, &name) {
                None => self.missing_secret(&name, &origin),
                Some(data) => {
                    self.secrets.insert(
                        key,
                        Arc::new(TlsSecret {
                            cert_chain_pem: data
                                .get("tls.crt")
                                .or(data.get("cert"))
                                .cloned()
                                .unwrap_or_default(),
                            private_key_pem: data
                                .get("tls.key")
                                .or(data.get("key"))
                                .cloned()
                                .unwrap_or_default(),
                            ca_pem: data.get("ca.crt").or(data.get("cacert")).cloned(),
                            source: format!("Secret {ns}/{name}"),
                            files: None,
                        }),
                    );
                }
            }
        }
    }
}
