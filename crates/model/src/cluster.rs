//! Clusters: a service port (optionally narrowed to a DestinationRule subset) with the policy
//! the DestinationRules give it, as Istio computes it.
//!
//! DestinationRule selection, for a proxy in namespace C calling host H of namespace S
//! (Istio's `PushContext.destinationRule`):
//! 1. the DestinationRules of C (for a proxy in the root namespace: only the root
//!    namespace's `exportTo: ["."]` rules);
//! 2. the rules of S exported to C;
//! 3. the rules of the root namespace exported to C.
//!
//! In each step the most specific host wins (exact, then the longest wildcard). Rules with a
//! `workloadSelector` apply only to the proxies of their own namespace that they select, and
//! then take precedence over the rules without one (Istio honours selectors for outbound
//! traffic only). Several rules for the same host in one namespace are merged oldest first
//! (creation time, then name): the first top-level `trafficPolicy` wins, subsets are added
//! unless a subset of that name already exists. Simplification: a selector rule that does
//! not select the proxy is skipped rather than shadowing the others (Istio may leave such a
//! proxy without any rule for the host), and selector rules never leak subsets into the
//! catch-all rule.
//!
//! Policy: the top-level fields, then the top-level `portLevelSettings` for the port, then the
//! subset's fields, then the subset's `portLevelSettings`; each of `loadBalancer`,
//! `connectionPool`, `outlierDetection` and `tls` is replaced whole when set (Istio's
//! `MergeTrafficPolicy`).

use std::collections::BTreeMap;
use std::time::Duration;

use trellis_api::host::host_matches;
use trellis_api::mesh::H2UpgradePolicy as MeshH2Upgrade;
use trellis_api::networking::{
    ClientTLSMode, ClientTLSSettings, ConnectionPoolSettings, DestinationRule, H2UpgradePolicy,
    LoadBalancerSettings, LocalityLoadBalancerSetting, OutlierDetection as IstioOutlier, Protocol,
    SimpleLB, Subset, TrafficPolicy,
};
use trellis_api::{MeshConfig, Object, Resource};

use crate::config::{
    Cluster, ClusterEndpoints, ConnectionPool, ConsistentHash, Discovery, HashKey, LbPolicy,
    OutlierDetection, ServiceKey, UpstreamProtocol, UpstreamTls,
};
use crate::registry::{exported_to, Resolution, Service, CLUSTER_DOMAIN};

/// `outbound|<port>|<subset>|<host>`.
pub fn cluster_name(port: u16, subset: Option<&str>, host: &str) -> String {
    format!("outbound|{port}|{}|{host}", subset.unwrap_or(""))
}

/// Istio's SNI for ISTIO_MUTUAL: `outbound_.<port>_.<subset>_.<host>`.
pub fn istio_sni(port: u16, subset: Option<&str>, host: &str) -> String {
    format!("outbound_.{port}_.{}_.{host}", subset.unwrap_or(""))
}

/// Default ring size of Envoy's ring hash (Istio's `minimumRingSize` default).
pub const DEFAULT_RING_SIZE: u64 = 1024;
/// Default Maglev table size (Envoy).
pub const DEFAULT_MAGLEV_TABLE: u64 = 65537;

struct RuleEntry<'a> {
    key: String,
    namespace: &'a str,
    /// FQDN of `spec.host` (short names resolved in the rule's namespace).
    host: String,
    spec: &'a DestinationRule,
    export_to: Vec<String>,
}

/// The DestinationRules of a resource set, indexed for lookups.
pub struct DestinationRules<'a> {
    /// Oldest first.
    rules: Vec<RuleEntry<'a>>,
    root_namespace: String,
}

/// The DestinationRule(s) in effect for one host, merged.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AppliedRule {
    /// `ns/name` of each merged rule, oldest first.
    pub names: Vec<String>,
    pub traffic_policy: Option<TrafficPolicy>,
    pub subsets: Vec<Subset>,
}

impl AppliedRule {
    pub fn subset(&self, name: &str) -> Option<&Subset> {
        self.subsets.iter().find(|s| s.name == name)
    }

    /// `ns/name` (merged rules joined with `+`).
    pub fn origin(&self) -> String {
        self.names.join("+")
    }
}

impl<'a> DestinationRules<'a> {
    pub fn new(resources: &'a [Resource], mesh: &MeshConfig) -> Self {
        let mut rules: Vec<(&Resource, RuleEntry)> = resources
            .iter()
            .filter_map(|r| match &r.object {
                Object::DestinationRule(dr) => Some((
                    r,
                    RuleEntry {
                        key: r.key(),
                        namespace: r.ns(),
                        host: trellis_api::host::fqdn(&dr.host, r.ns(), CLUSTER_DOMAIN)
                            .to_ascii_lowercase(),
                        spec: dr.as_ref(),
                        export_to: if dr.export_to.is_empty() {
                            mesh.default_destination_rule_export_to.clone()
                        } else {
                            dr.export_to.clone()
                        },
                    },
                )),
                _ => None,
            })
            .collect();
        rules.sort_by(|(a, _), (b, _)| {
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
        DestinationRules {
            rules: rules.into_iter().map(|(_, e)| e).collect(),
            root_namespace: mesh.root_namespace.clone(),
        }
    }

    /// The rule in effect for `host` called by a proxy in `proxy_ns` with `proxy_labels`;
    /// `service_ns` is the namespace of the service (None when the host is unknown).
    pub fn lookup(
        &self,
        host: &str,
        proxy_ns: &str,
        proxy_labels: &BTreeMap<String, String>,
        service_ns: Option<&str>,
    ) -> Option<AppliedRule> {
        let host = host.to_ascii_lowercase();
        let root = self.root_namespace.as_str();
        let first = if proxy_ns != root {
            self.step(&host, proxy_ns, proxy_ns, proxy_labels, |_| true)
        } else {
            self.step(&host, root, proxy_ns, proxy_labels, |e| {
                e.export_to.len() == 1 && e.export_to[0] == "."
            })
        };
        if first.is_some() {
            return first;
        }
        let visible = |e: &RuleEntry| exported_to(&e.export_to, e.namespace, proxy_ns);
        if let Some(s) = service_ns.filter(|s| !s.is_empty() && *s != proxy_ns) {
            if let Some(r) = self.step(&host, s, proxy_ns, proxy_labels, visible) {
                return Some(r);
            }
        }
        self.step(&host, root, proxy_ns, proxy_labels, visible)
    }

    fn step(
        &self,
        host: &str,
        namespace: &str,
        proxy_ns: &str,
        proxy_labels: &BTreeMap<String, String>,
        visible: impl Fn(&RuleEntry) -> bool,
    ) -> Option<AppliedRule> {
        let candidates: Vec<&RuleEntry> = self
            .rules
            .iter()
            .filter(|e| {
                e.namespace == namespace
                    && visible(e)
                    && match &e.spec.workload_selector {
                        None => true,
                        Some(ws) => e.namespace == proxy_ns && ws.matches(proxy_labels),
                    }
                    && (e.host == host || host_matches(&e.host, host))
            })
            .collect();
        // Most specific host: exact, then the longest wildcard.
        let best = candidates
            .iter()
            .map(|e| e.host.as_str())
            .max_by_key(|h| (*h == host, h.len()))?;
        let chosen: Vec<&RuleEntry> = candidates.into_iter().filter(|e| e.host == best).collect();
        let selected: Vec<&RuleEntry> =
            match chosen.iter().find(|e| e.spec.workload_selector.is_some()) {
                Some(first_sel) => {
                    let labels = &first_sel
                        .spec
                        .workload_selector
                        .as_ref()
                        .unwrap()
                        .match_labels;
                    chosen
                        .iter()
                        .copied()
                        .filter(|e| {
                            e.spec
                                .workload_selector
                                .as_ref()
                                .is_some_and(|w| &w.match_labels == labels)
                        })
                        .collect()
                }
                None => chosen,
            };
        let mut out = AppliedRule::default();
        for e in selected {
            out.names.push(e.key.clone());
            if out.traffic_policy.is_none() {
                out.traffic_policy = e.spec.traffic_policy.clone();
            }
            for s in &e.spec.subsets {
                if out.subset(&s.name).is_none() {
                    out.subsets.push(s.clone());
                }
            }
        }
        Some(out)
    }
}

/// The four policy parts a cluster is built from.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Policy {
    pub load_balancer: Option<LoadBalancerSettings>,
    pub connection_pool: Option<ConnectionPoolSettings>,
    pub outlier_detection: Option<IstioOutlier>,
    pub tls: Option<ClientTLSSettings>,
}

impl Policy {
    fn apply(&mut self, tp: &TrafficPolicy, port: u16) {
        if tp.load_balancer.is_some() {
            self.load_balancer = tp.load_balancer.clone();
        }
        if tp.connection_pool.is_some() {
            self.connection_pool = tp.connection_pool.clone();
        }
        if tp.outlier_detection.is_some() {
            self.outlier_detection = tp.outlier_detection.clone();
        }
        if tp.tls.is_some() {
            self.tls = tp.tls.clone();
        }
        if let Some(pl) = tp
            .port_level_settings
            .iter()
            .find(|p| p.port.as_ref().is_some_and(|s| s.number == u32::from(port)))
        {
            if pl.load_balancer.is_some() {
                self.load_balancer = pl.load_balancer.clone();
            }
            if pl.connection_pool.is_some() {
                self.connection_pool = pl.connection_pool.clone();
            }
            if pl.outlier_detection.is_some() {
                self.outlier_detection = pl.outlier_detection.clone();
            }
            if pl.tls.is_some() {
                self.tls = pl.tls.clone();
            }
        }
    }
}

/// The policy for `port` and `subset` under `rule`.
pub fn effective_policy(rule: Option<&AppliedRule>, subset: Option<&str>, port: u16) -> Policy {
    let mut p = Policy::default();
    let Some(rule) = rule else { return p };
    if let Some(tp) = &rule.traffic_policy {
        p.apply(tp, port);
    }
    if let Some(tp) = subset
        .and_then(|s| rule.subset(s))
        .and_then(|s| s.traffic_policy.as_ref())
    {
        p.apply(tp, port);
    }
    p
}

/// What a cluster is built for.
pub struct ClusterRequest<'s> {
    pub host: &'s str,
    pub port: u16,
    pub subset: Option<&'s str>,
    /// The registry's service for the host, when there is one.
    pub service: Option<&'s Service>,
    pub rule: Option<&'s AppliedRule>,
    /// The proxy's namespace (DestinationRule `credentialName` secrets live there).
    pub proxy_namespace: &'s str,
    /// The proxy's `region/zone/subzone`, when known, and labels (locality load balancing).
    pub proxy_locality: Option<&'s str>,
    pub proxy_labels: &'s BTreeMap<String, String>,
}

/// The pool limits and connect timeout of `connectionPool` settings (a DestinationRule's, or a
/// Sidecar's `inboundConnectionPool` / ingress `connectionPool`); unset fields keep Envoy's
/// defaults, `default_connect_timeout` the mesh's.
pub(crate) fn connection_pool(
    cp: Option<&ConnectionPoolSettings>,
    default_connect_timeout: Duration,
) -> (ConnectionPool, Duration) {
    let mut pool = ConnectionPool::default();
    if let Some(tcp) = cp.and_then(|c| c.tcp.as_ref()) {
        if let Some(n) = positive(tcp.max_connections) {
            pool.max_connections = n;
        }
        if let Some(k) = &tcp.tcp_keepalive {
            pool.tcp_keepalive = Some(
                k.time
                    .as_ref()
                    .or(k.interval.as_ref())
                    .map_or(Duration::from_secs(7200), |d| d.as_std()),
            );
        }
    }
    let http = cp.and_then(|c| c.http.as_ref());
    if let Some(h) = http {
        if let Some(n) = positive(h.http1_max_pending_requests) {
            pool.http1_max_pending_requests = n;
        }
        if let Some(n) = positive(h.http2_max_requests) {
            pool.http2_max_requests = n;
        }
        if let Some(n) = positive(h.max_requests_per_connection) {
            pool.max_requests_per_connection = n;
        }
        if let Some(n) = positive(h.max_retries) {
            pool.max_retries = n;
        }
        if let Some(d) = &h.idle_timeout {
            pool.idle_timeout = Some(d.as_std()).filter(|d| !d.is_zero());
        }
    }
    let connect_timeout = cp
        .and_then(|c| c.tcp.as_ref())
        .and_then(|t| t.connect_timeout.as_ref())
        .map_or(default_connect_timeout, |d| d.as_std());
    (pool, connect_timeout)
}

/// Builds a cluster and its endpoints; warnings say what could not be honoured.
pub fn build_cluster(
    req: &ClusterRequest<'_>,
    mesh: &MeshConfig,
) -> (Cluster, ClusterEndpoints, Vec<String>) {
    let mut warnings = Vec::new();
    let name = cluster_name(req.port, req.subset, req.host);
    let policy = effective_policy(req.rule, req.subset, req.port);
    let service_port = req.service.and_then(|s| s.port(req.port));

    let lb = lb_policy(policy.load_balancer.as_ref(), &name, &mut warnings);
    let discovery = match (&lb, req.service.map(|s| s.resolution)) {
        (LbPolicy::Passthrough, _) | (_, Some(Resolution::Passthrough)) => Discovery::OriginalDst,
        (_, Some(Resolution::Dns | Resolution::DnsRoundRobin)) => Discovery::Dns,
        _ => Discovery::Eds,
    };

    let cp = policy.connection_pool.as_ref();
    let (mut pool, connect_timeout) = connection_pool(cp, mesh.connect_timeout.as_std());
    let http = cp.and_then(|c| c.http.as_ref());

    let mut protocol = match service_port {
        None => UpstreamProtocol::Auto,
        Some(p) if p.sniffed => UpstreamProtocol::Auto,
        Some(p) => match p.protocol {
            Protocol::Http | Protocol::HttpProxy => UpstreamProtocol::Http1,
            Protocol::Http2 | Protocol::Grpc | Protocol::GrpcWeb => UpstreamProtocol::Http2,
            _ => UpstreamProtocol::Tcp,
        },
    };
    if protocol == UpstreamProtocol::Http1 {
        let upgrade = match http.and_then(|h| h.h2_upgrade_policy) {
            Some(H2UpgradePolicy::Upgrade) => true,
            Some(H2UpgradePolicy::DoNotUpgrade) => false,
            _ => mesh.h2_upgrade_policy == MeshH2Upgrade::Upgrade,
        };
        if upgrade {
            pool.h2_upgrade = true;
            protocol = UpstreamProtocol::Http2;
        }
        if http.and_then(|h| h.use_client_protocol) == Some(true) {
            protocol = UpstreamProtocol::Auto;
        }
    }

    let outlier = policy.outlier_detection.as_ref().map(outlier_detection);

    let identities = || req.service.map(Service::identities).unwrap_or_default();
    let (tls, auto_mtls) = match &policy.tls {
        Some(t) => match t.mode() {
            ClientTLSMode::Disable => (UpstreamTls::None, false),
            ClientTLSMode::Simple | ClientTLSMode::Mutual => {
                let mutual = t.mode() == ClientTLSMode::Mutual;
                (
                    UpstreamTls::Tls {
                        sni: t.sni.clone().filter(|s| !s.is_empty()),
                        ca_certificates: t.ca_certificates.clone().filter(|s| !s.is_empty()),
                        client_certificate: t
                            .client_certificate
                            .clone()
                            .filter(|s| mutual && !s.is_empty()),
                        private_key: t.private_key.clone().filter(|s| mutual && !s.is_empty()),
                        subject_alt_names: t.subject_alt_names.clone(),
                        insecure_skip_verify: t.insecure_skip_verify.unwrap_or(false),
                        credential: t
                            .credential_name
                            .as_deref()
                            .filter(|s| !s.is_empty())
                            .map(|n| credential_secret_name(req.proxy_namespace, n)),
                    },
                    false,
                )
            }
            ClientTLSMode::IstioMutual => (
                UpstreamTls::IstioMutual {
                    expected_identities: if t.subject_alt_names.is_empty() {
                        identities()
                    } else {
                        t.subject_alt_names.clone()
                    },
                    sni: Some(
                        t.sni
                            .clone()
                            .filter(|s| !s.is_empty())
                            .unwrap_or_else(|| istio_sni(req.port, req.subset, req.host)),
                    ),
                },
                false,
            ),
        },
        None => {
            let auto = mesh.enable_auto_mtls
                && discovery != Discovery::OriginalDst
                && req
                    .service
                    .is_some_and(|s| !s.mesh_external && s.has_mesh_instances());
            if auto {
                (
                    UpstreamTls::IstioMutual {
                        expected_identities: identities(),
                        sni: Some(istio_sni(req.port, req.subset, req.host)),
                    },
                    true,
                )
            } else {
                (UpstreamTls::None, false)
            }
        }
    };

    let mut endpoints = match (discovery, req.service) {
        (Discovery::OriginalDst, _) | (_, None) => Vec::new(),
        (_, Some(svc)) => match req.subset {
            None => svc.endpoints(req.port, None),
            Some(subset) => match req.rule.and_then(|r| r.subset(subset)) {
                Some(s) => svc.endpoints(req.port, Some(&s.labels)),
                None => {
                    warnings.push(format!(
                        "cluster {name}: subset {subset:?} is not defined by any DestinationRule for {}: it has no endpoints",
                        req.host
                    ));
                    Vec::new()
                }
            },
        },
    };

    // Locality LB: the DestinationRule's setting, else the mesh's (on by default).
    let mesh_locality = mesh
        .locality_lb_setting
        .as_ref()
        .and_then(|v| serde_json::from_value::<LocalityLoadBalancerSetting>(v.clone()).ok());
    let locality_setting = policy
        .load_balancer
        .as_ref()
        .and_then(|lb| lb.locality_lb_setting.as_ref())
        .or(mesh_locality.as_ref());
    if let Some(setting) = locality_setting {
        let mesh_off = mesh_locality
            .as_ref()
            .is_some_and(|m| m.enabled == Some(false));
        if !(mesh_off && setting.enabled.is_none()) {
            crate::locality::apply(
                &mut endpoints,
                &crate::locality::ProxyPlace {
                    locality: req.proxy_locality,
                    labels: req.proxy_labels,
                },
                setting,
                policy.outlier_detection.is_some(),
            );
        }
    }

    let cluster = Cluster {
        name,
        service: ServiceKey {
            host: req.host.to_string(),
            port: req.port,
        },
        subset: req.subset.map(str::to_string),
        discovery,
        protocol,
        lb,
        connect_timeout,
        pool,
        outlier,
        tls,
        auto_mtls,
        destination_rule: req.rule.map(AppliedRule::origin),
    };
    (cluster, ClusterEndpoints { endpoints }, warnings)
}

/// Name under which a `credentialName` Secret of `namespace` is kept in `ProxyConfig::secrets`.
pub fn credential_secret_name(namespace: &str, name: &str) -> String {
    format!("kubernetes://{namespace}/{name}")
}

fn positive(v: Option<i32>) -> Option<u32> {
    v.filter(|n| *n > 0).map(i32::unsigned_abs)
}

fn lb_policy(
    lb: Option<&LoadBalancerSettings>,
    cluster: &str,
    warnings: &mut Vec<String>,
) -> LbPolicy {
    let Some(lb) = lb else {
        return LbPolicy::LeastRequest;
    };
    if let Some(ch) = &lb.consistent_hash {
        let key = if let Some(h) = ch.http_header_name.as_deref().filter(|h| !h.is_empty()) {
            HashKey::Header(h.to_ascii_lowercase())
        } else if let Some(c) = &ch.http_cookie {
            HashKey::Cookie {
                name: c.name.clone(),
                path: c.path.clone().filter(|p| !p.is_empty()),
                ttl: c.ttl.as_ref().map(|d| d.as_std()),
            }
        } else if ch.use_source_ip == Some(true) {
            HashKey::SourceIp
        } else if let Some(q) = ch
            .http_query_parameter_name
            .as_deref()
            .filter(|q| !q.is_empty())
        {
            HashKey::QueryParameter(q.to_string())
        } else {
            warnings.push(format!(
                "cluster {cluster}: consistentHash names no hash key: hashing the source IP"
            ));
            HashKey::SourceIp
        };
        let maglev = ch.maglev.is_some();
        let minimum_ring_size = if maglev {
            ch.maglev
                .as_ref()
                .and_then(|m| m.table_size)
                .filter(|n| *n > 0)
                .unwrap_or(DEFAULT_MAGLEV_TABLE)
        } else {
            ch.ring_hash
                .as_ref()
                .and_then(|r| r.minimum_ring_size)
                .or(ch.minimum_ring_size)
                .filter(|n| *n > 0)
                .unwrap_or(DEFAULT_RING_SIZE)
        };
        return LbPolicy::ConsistentHash(ConsistentHash {
            key,
            maglev,
            minimum_ring_size,
        });
    }
    match lb.simple_or_default() {
        SimpleLB::RoundRobin => LbPolicy::RoundRobin,
        SimpleLB::Random => LbPolicy::Random,
        SimpleLB::Passthrough => LbPolicy::Passthrough,
        _ => LbPolicy::LeastRequest,
    }
}

/// Istio's `applyOutlierDetection` over Envoy's defaults: 5xx ejection after 5 errors unless
/// `consecutive5xxErrors` says otherwise (0 disables it); gateway-error ejection only when
/// `consecutiveGatewayErrors` (or the deprecated `consecutiveErrors`, which also turns 5xx
/// ejection off) is set; interval 10s, base ejection 30s, max ejection 10%, min health 0%.
pub fn outlier_detection(o: &IstioOutlier) -> OutlierDetection {
    let legacy = o
        .consecutive_errors
        .filter(|n| *n > 0)
        .map(i32::unsigned_abs);
    let consecutive_5xx = match o.consecutive_5xx_errors {
        Some(0) => None,
        Some(n) => Some(n),
        None if legacy.is_some() => None,
        None => Some(5),
    };
    let consecutive_gateway_errors = o.consecutive_gateway_errors.filter(|n| *n > 0).or(legacy);
    OutlierDetection {
        consecutive_5xx,
        consecutive_gateway_errors,
        interval: o.interval_or_default(),
        base_ejection_time: o.base_ejection_time_or_default(),
        max_ejection_percent: o.max_ejection_percent_or_default().min(100),
        min_health_percent: o
            .min_health_percent
            .filter(|n| *n > 0)
            .map_or(0, |n| n.unsigned_abs().min(100)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::ServiceRegistry;
    use trellis_api::load::{LoadOptions, ResourceSet};

    fn load(yaml: &str) -> Vec<Resource> {
        let mut set = ResourceSet::default();
        set.add_text("test.yaml", yaml, &LoadOptions::default());
        let errors: Vec<_> = set.diagnostics.iter().filter(|d| d.is_error()).collect();
        assert!(errors.is_empty(), "{errors:?}");
        set.resources
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const RULES: &str = r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: in-client, namespace: client}
spec:
  host: svc.server.svc.cluster.local
  trafficPolicy: {loadBalancer: {simple: RANDOM}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: in-server, namespace: server}
spec:
  host: svc
  trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: private, namespace: server}
spec:
  host: other.server.svc.cluster.local
  exportTo: ["."]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: mesh-wide, namespace: istio-system}
spec:
  host: "*.svc.cluster.local"
  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: server-wide, namespace: istio-system}
spec:
  host: "*.server.svc.cluster.local"
  trafficPolicy: {tls: {mode: DISABLE}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: selected, namespace: client}
spec:
  host: svc.server.svc.cluster.local
  workloadSelector: {matchLabels: {app: special}}
  trafficPolicy: {loadBalancer: {simple: LEAST_REQUEST}}
"#;

    #[test]
    fn lookup_order_client_then_service_then_root() {
        let res = load(RULES);
        let drs = DestinationRules::new(&res, &MeshConfig::default());
        let none = BTreeMap::new();
        let host = "svc.server.svc.cluster.local";
        let pick = |ns: &str, l: &BTreeMap<String, String>| {
            drs.lookup(host, ns, l, Some("server")).map(|r| r.origin())
        };
        assert_eq!(pick("client", &none).as_deref(), Some("client/in-client"));
        assert_eq!(
            pick("client", &labels(&[("app", "special")])).as_deref(),
            Some("client/selected"),
            "a selector rule for the proxy wins"
        );
        assert_eq!(
            pick("elsewhere", &none).as_deref(),
            Some("server/in-server")
        );
        assert_eq!(pick("server", &none).as_deref(), Some("server/in-server"));
        // A rule exported only to its namespace is invisible elsewhere: the root's most
        // specific wildcard applies.
        assert_eq!(
            drs.lookup(
                "other.server.svc.cluster.local",
                "elsewhere",
                &none,
                Some("server")
            )
            .map(|r| r.origin())
            .as_deref(),
            Some("istio-system/server-wide")
        );
        assert_eq!(
            drs.lookup("x.y.svc.cluster.local", "elsewhere", &none, Some("y"))
                .map(|r| r.origin())
                .as_deref(),
            Some("istio-system/mesh-wide")
        );
        assert_eq!(drs.lookup("example.com", "client", &none, None), None);
    }

    #[test]
    fn same_host_rules_merge_oldest_first() {
        let res = load(
            r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: b-newer, namespace: ns, creationTimestamp: "2024-02-01T00:00:00Z"}
spec:
  host: svc
  trafficPolicy: {loadBalancer: {simple: RANDOM}}
  subsets:
  - {name: v1, labels: {version: other}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: a-older, namespace: ns, creationTimestamp: "2024-01-01T00:00:00Z"}
spec:
  host: svc
  subsets:
  - {name: v1, labels: {version: v1}}
"#,
        );
        let drs = DestinationRules::new(&res, &MeshConfig::default());
        let r = drs
            .lookup(
                "svc.ns.svc.cluster.local",
                "ns",
                &BTreeMap::new(),
                Some("ns"),
            )
            .unwrap();
        assert_eq!(r.names, vec!["ns/a-older", "ns/b-newer"]);
        assert_eq!(r.subset("v1").unwrap().labels["version"], "v1");
        assert_eq!(r.subset("v2").unwrap().labels["version"], "v2");
        // The older rule has no top-level policy: the newer one's is used.
        assert!(r.traffic_policy.unwrap().load_balancer.is_some());
    }

    #[test]
    fn subset_and_port_level_overrides() {
        let res = load(
            r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: r, namespace: ns}
spec:
  host: svc
  trafficPolicy:
    loadBalancer: {simple: RANDOM}
    connectionPool: {tcp: {maxConnections: 10, connectTimeout: 1s}, http: {http2MaxRequests: 7}}
    tls: {mode: ISTIO_MUTUAL}
    portLevelSettings:
    - port: {number: 9090}
      connectionPool: {http: {http1MaxPendingRequests: 3}}
  subsets:
  - name: v2
    labels: {version: v2}
    trafficPolicy:
      loadBalancer: {simple: ROUND_ROBIN}
      portLevelSettings:
      - port: {number: 9090}
        tls: {mode: DISABLE}
"#,
        );
        let drs = DestinationRules::new(&res, &MeshConfig::default());
        let rule = drs
            .lookup(
                "svc.ns.svc.cluster.local",
                "ns",
                &BTreeMap::new(),
                Some("ns"),
            )
            .unwrap();
        let mesh = MeshConfig::default();
        let build = |port, subset| {
            build_cluster(
                &ClusterRequest {
                    host: "svc.ns.svc.cluster.local",
                    port,
                    subset,
                    service: None,
                    rule: Some(&rule),
                    proxy_namespace: "ns",
                    proxy_locality: None,
                    proxy_labels: &BTreeMap::new(),
                },
                &mesh,
            )
            .0
        };
        let top = build(8080, None);
        assert_eq!(top.lb, LbPolicy::Random);
        assert_eq!(top.pool.max_connections, 10);
        assert_eq!(top.pool.http2_max_requests, 7);
        assert_eq!(top.connect_timeout, Duration::from_secs(1));
        assert!(matches!(top.tls, UpstreamTls::IstioMutual { .. }));
        assert_eq!(top.destination_rule.as_deref(), Some("ns/r"));

        // Port-level connectionPool replaces the whole top-level one.
        let port = build(9090, None);
        assert_eq!(port.pool.http1_max_pending_requests, 3);
        assert_eq!(port.pool.max_connections, u32::MAX);
        assert_eq!(port.pool.http2_max_requests, u32::MAX);
        assert_eq!(port.connect_timeout, Duration::from_secs(10));

        // Subset: its loadBalancer replaces the top one; the rest is inherited.
        let v2 = build(8080, Some("v2"));
        assert_eq!(v2.name, "outbound|8080|v2|svc.ns.svc.cluster.local");
        assert_eq!(v2.lb, LbPolicy::RoundRobin);
        assert_eq!(v2.pool.max_connections, 10);
        assert!(matches!(v2.tls, UpstreamTls::IstioMutual { .. }));
        let v2p = build(9090, Some("v2"));
        assert_eq!(v2p.tls, UpstreamTls::None);
        assert_eq!(v2p.pool.http1_max_pending_requests, 3);
    }

    #[test]
    fn outlier_defaults() {
        let o = outlier_detection(&IstioOutlier::default());
        assert_eq!(o.consecutive_5xx, Some(5));
        assert_eq!(o.consecutive_gateway_errors, None);
        assert_eq!(o.interval, Duration::from_secs(10));
        assert_eq!(o.base_ejection_time, Duration::from_secs(30));
        assert_eq!(o.max_ejection_percent, 10);
        assert_eq!(o.min_health_percent, 0);
        let o = outlier_detection(&IstioOutlier {
            consecutive_5xx_errors: Some(0),
            consecutive_gateway_errors: Some(3),
            ..Default::default()
        });
        assert_eq!(
            (o.consecutive_5xx, o.consecutive_gateway_errors),
            (None, Some(3))
        );
        let o = outlier_detection(&IstioOutlier {
            consecutive_errors: Some(4),
            ..Default::default()
        });
        assert_eq!(
            (o.consecutive_5xx, o.consecutive_gateway_errors),
            (None, Some(4))
        );
    }

    #[test]
    fn load_balancers_and_protocols() {
        let res = load(
            r#"
apiVersion: v1
kind: Namespace
metadata: {name: ns, labels: {istio-injection: enabled}}
---
apiVersion: v1
kind: Service
metadata: {name: svc, namespace: ns}
spec:
  selector: {app: svc}
  ports: [{name: grpc, port: 9000}, {name: http, port: 80}, {name: mongo, port: 27017}, {name: other, port: 5000}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: svc, namespace: ns}
spec:
  selector: {matchLabels: {app: svc}}
  template:
    metadata: {labels: {app: svc}}
    spec: {serviceAccountName: svc-sa, containers: [{name: c, image: x}]}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: r, namespace: ns}
spec:
  host: svc
  trafficPolicy:
    loadBalancer: {consistentHash: {httpCookie: {name: user, ttl: 0s, path: /}, ringHash: {minimumRingSize: 2048}}}
    portLevelSettings:
    - port: {number: 80}
      loadBalancer: {consistentHash: {httpHeaderName: X-User, maglev: {}}}
      connectionPool: {http: {h2UpgradePolicy: UPGRADE}}
"#,
        );
        let mesh = MeshConfig::default();
        let reg = ServiceRegistry::new(&res, &mesh);
        let drs = DestinationRules::new(&res, &mesh);
        let host = "svc.ns.svc.cluster.local";
        let svc = reg.lookup(host, "ns");
        let rule = drs.lookup(host, "other", &BTreeMap::new(), Some("ns"));
        let build = |port| {
            build_cluster(
                &ClusterRequest {
                    host,
                    port,
                    subset: None,
                    service: svc,
                    rule: rule.as_ref(),
                    proxy_namespace: "other",
                    proxy_locality: None,
                    proxy_labels: &BTreeMap::new(),
                },
                &mesh,
            )
            .0
        };
        let grpc = build(9000);
        assert_eq!(grpc.protocol, UpstreamProtocol::Http2);
        assert_eq!(
            grpc.lb,
            LbPolicy::ConsistentHash(ConsistentHash {
                key: HashKey::Cookie {
                    name: "user".into(),
                    path: Some("/".into()),
                    ttl: Some(Duration::ZERO)
                },
                maglev: false,
                minimum_ring_size: 2048
            })
        );
        // Auto mTLS: the Deployment is injected.
        assert_eq!(
            grpc.tls,
            UpstreamTls::IstioMutual {
                expected_identities: vec!["spiffe://cluster.local/ns/ns/sa/svc-sa".into()],
                sni: Some("outbound_.9000_._.svc.ns.svc.cluster.local".into())
            }
        );
        assert!(grpc.auto_mtls);
        let http = build(80);
        assert_eq!(http.protocol, UpstreamProtocol::Http2);
        assert!(http.pool.h2_upgrade);
        assert!(matches!(
            &http.lb,
            LbPolicy::ConsistentHash(ConsistentHash { key: HashKey::Header(h), maglev: true, minimum_ring_size: 65537 }) if h == "x-user"
        ));
        assert_eq!(build(27017).protocol, UpstreamProtocol::Tcp);
        assert_eq!(build(5000).protocol, UpstreamProtocol::Auto);
        assert_eq!(build(5000).discovery, Discovery::Eds);
    }
}
