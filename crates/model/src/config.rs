//! `ProxyConfig`: the immutable, compiled configuration of one proxy (gateway or sidecar), in
//! Envoy's vocabulary (listeners, filter chains, route tables, clusters, endpoints) so that
//! `proxy-config` output reads like istioctl's. Built by `compile`, swapped atomically by the
//! proxy. Endpoints are kept apart from the rest so they can change without a recompile.
//!
//! Everything a request needs is precomputed here: regexes compiled, hosts lowercased,
//! weights summed. Nothing in this module does I/O.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

/// Which proxy this configuration is for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NodeInfo {
    pub kind: ProxyKind,
    /// `name.namespace`, as istioctl names proxies.
    pub id: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub service_account: String,
    /// The workload's own address when known (sidecars).
    pub ip: Option<IpAddr>,
    /// `region/zone/subzone`, when known (locality load balancing).
    pub locality: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum ProxyKind {
    Sidecar,
    Gateway,
}

/// Mesh-wide behaviour the proxy needs at runtime.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MeshSettings {
    pub trust_domain: String,
    /// REGISTRY_ONLY refuses outbound traffic to unknown hosts (502/connection reset).
    pub outbound_allow_any: bool,
    pub access_log_file: String,
    pub access_log_json: bool,
}

/// The whole compiled configuration of one proxy.
#[derive(Clone, Debug, Serialize)]
pub struct ProxyConfig {
    /// Version of the resources this was compiled from.
    pub version: String,
    pub node: NodeInfo,
    pub mesh: MeshSettings,
    pub listeners: Vec<Listener>,
    /// Route tables by name (referenced from HTTP filter chains).
    pub routes: BTreeMap<String, Arc<RouteTable>>,
    /// Clusters by name (`outbound|8080|stable|service-gateway.alphintra.svc.cluster.local`).
    pub clusters: BTreeMap<String, Arc<Cluster>>,
    /// Endpoints by cluster name; swapped independently of the rest.
    pub endpoints: BTreeMap<String, Arc<ClusterEndpoints>>,
    /// TLS certificates by secret name (gateway `credentialName`, files).
    pub secrets: BTreeMap<String, Arc<TlsSecret>>,
    /// Authentication and authorization: AuthorizationPolicies, RequestAuthentication rules,
    /// PeerAuthentication modes, path normalization, ext-authz providers, app probes.
    pub security: crate::security::SecurityConfig,
    /// Tracing (Telemetry API): provider, sampling and tags per direction.
    #[serde(skip_serializing_if = "crate::telemetry::TracingSettings::is_empty")]
    pub tracing: crate::telemetry::TracingSettings,
    /// Problems found while compiling that did not stop it (a credential Secret that is not in
    /// the resources, conflicting gateway servers, unsupported fields). Sorted, deduplicated.
    pub warnings: Vec<String>,
}

/// A listening socket and what to do with connections on it.
#[derive(Clone, Debug, Serialize)]
pub struct Listener {
    /// Envoy-style name: `0.0.0.0_8080`, `virtualOutbound`, `inbound|8080||`.
    pub name: String,
    /// Address to bind (runtime flags may remap it for unprivileged local runs).
    pub address: SocketAddr,
    pub direction: TrafficDirection,
    /// Tried in order; the first whose match fits the connection handles it.
    pub filter_chains: Vec<FilterChain>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum TrafficDirection {
    Inbound,
    Outbound,
    Gateway,
}

/// One way of handling a connection on a listener.
#[derive(Clone, Debug, Serialize)]
pub struct FilterChain {
    pub name: String,
    pub filter_match: ChainMatch,
    /// Terminate TLS with this configuration before handling (HTTPS, TLS SIMPLE/MUTUAL).
    pub tls: Option<DownstreamTls>,
    pub handler: ChainHandler,
}

/// What a connection must look like for a chain to apply.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ChainMatch {
    /// SNI names (exact or `*.suffix`); empty matches any (including no SNI).
    pub server_names: Vec<String>,
    /// Only connections that start with a TLS ClientHello.
    pub tls_only: bool,
    /// Only plaintext connections.
    pub plaintext_only: bool,
    /// Only connections whose (original) destination port is this one (`virtualInbound`
    /// chains, one per workload port). `None` matches any port.
    pub destination_port: Option<u16>,
}

/// TLS termination.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DownstreamTls {
    /// Secret name in `ProxyConfig::secrets`.
    pub certificate: String,
    /// Client certificate required (MUTUAL) or optional (OPTIONAL_MUTUAL), verified against this CA secret.
    pub client_ca: Option<String>,
    pub require_client_cert: bool,
    pub alpn: Vec<String>,
    pub min_tls13: bool,
    /// Subject alternative names a client certificate must carry (MUTUAL).
    pub client_san: Vec<String>,
}

/// What handles a connection once a chain is chosen.
#[derive(Clone, Debug, Serialize)]
pub enum ChainHandler {
    /// HTTP/1.1, HTTP/2 or h2c, routed by the named route table.
    Http(HttpManager),
    /// Raw TCP to weighted clusters.
    Tcp(TcpProxy),
    /// TLS passed through untouched, routed by SNI.
    TlsPassthrough(Vec<SniRoute>),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HttpManager {
    pub route_table: String,
    /// Protocol the listener speaks (for gateway HTTP2/GRPC servers h2 is expected, but h1 is
    /// still accepted: auto-detection serves both).
    pub codec: HttpCodec,
    /// `x-forwarded-proto` to report upstream.
    pub scheme: Scheme,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum HttpCodec {
    Auto,
    Http1,
    Http2,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Scheme {
    Http,
    Https,
}

/// TCP routes, first match wins.
#[derive(Clone, Debug, Serialize)]
pub struct TcpProxy {
    pub routes: Vec<TcpRoute>,
}

#[derive(Clone, Debug, Serialize)]
pub struct TcpRoute {
    /// Origin of this route for logs and explain: `VirtualService ns/name tcp[0]`.
    pub origin: String,
    /// Destination subnets the connection's original destination must be in (empty = any).
    pub destination_subnets: Vec<ipnet::IpNet>,
    /// Listener port the rule is restricted to.
    pub port: Option<u16>,
    pub clusters: WeightedClusters,
}

#[derive(Clone, Debug, Serialize)]
pub struct SniRoute {
    pub origin: String,
    /// SNI names (exact or `*.suffix`).
    pub server_names: Vec<String>,
    /// Destination subnets the connection's original destination must be in (empty = any).
    pub destination_subnets: Vec<ipnet::IpNet>,
    pub port: Option<u16>,
    pub clusters: WeightedClusters,
}

/// HTTP route table: virtual hosts selected by `:authority`.
#[derive(Clone, Debug, Serialize)]
pub struct RouteTable {
    pub name: String,
    pub virtual_hosts: Vec<VirtualHost>,
}

/// Routes for a set of domains.
#[derive(Clone, Debug, Serialize)]
pub struct VirtualHost {
    pub name: String,
    /// Lowercase; `*`, `*.suffix`, or exact, each optionally with `:port`.
    pub domains: Vec<String>,
    /// Redirect plaintext requests to https (gateway `httpsRedirect`), 301.
    pub require_tls: bool,
    /// First matching route wins.
    pub routes: Vec<Route>,
}

/// One HTTP rule (one VirtualService `http[]` entry).
#[derive(Clone, Debug, Serialize)]
pub struct Route {
    /// `ns/name` of the VirtualService and the rule's index or name: used in logs, metrics
    /// and `trellis explain`.
    pub origin: RouteOrigin,
    /// Any one matching is enough; empty matches every request.
    pub matches: Vec<RequestMatch>,
    pub action: RouteAction,
    pub request_headers: HeaderOps,
    pub response_headers: HeaderOps,
    /// No timeout unless set (Istio's default).
    pub timeout: Option<Duration>,
    pub retry: Option<RetryPolicy>,
    pub fault: Option<FaultInjection>,
    pub mirrors: Vec<Mirror>,
    pub cors: Option<CorsPolicy>,
}

/// `virtual_service` is empty for routes compile generates (`default`, `allow_any`,
/// `block_all`), named by `rule`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RouteOrigin {
    pub virtual_service: String,
    pub rule: String,
}

impl std::fmt::Display for RouteOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "VirtualService {} rule {}",
            self.virtual_service, self.rule
        )
    }
}

/// One `match` block: all present conditions must hold.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RequestMatch {
    pub name: Option<String>,
    pub uri: Option<StringMatcher>,
    pub ignore_uri_case: bool,
    pub scheme: Option<StringMatcher>,
    pub method: Option<StringMatcher>,
    pub authority: Option<StringMatcher>,
    /// Header name (lowercase) and matcher.
    pub headers: Vec<(String, StringMatcher)>,
    /// Headers that must not match.
    pub without_headers: Vec<(String, StringMatcher)>,
    pub query_params: Vec<(String, StringMatcher)>,
    pub port: Option<u16>,
    /// Caller workload labels (sidecars only).
    pub source_labels: BTreeMap<String, String>,
    pub source_namespace: Option<String>,
}

/// String condition. Regexes are compiled once, at compile time, anchored (full match, as
/// Envoy's `safe_regex`).
#[derive(Clone, Debug, Serialize)]
pub enum StringMatcher {
    Exact(String),
    Prefix(String),
    Regex(#[serde(serialize_with = "ser_regex")] regex::Regex),
    /// Header present with any value (`{}` in Istio).
    Present,
}

fn ser_regex<S: serde::Serializer>(r: &regex::Regex, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(r.as_str())
}

/// What a matched route does.
#[derive(Clone, Debug, Serialize)]
pub enum RouteAction {
    Forward(ForwardAction),
    Redirect(Redirect),
    DirectResponse { status: u16, body: Option<String> },
}

#[derive(Clone, Debug, Serialize)]
pub struct ForwardAction {
    pub clusters: WeightedClusters,
    pub rewrite: Option<Rewrite>,
}

/// Destinations with relative weights (already normalised: sum > 0).
#[derive(Clone, Debug, Serialize)]
pub struct WeightedClusters {
    pub clusters: Vec<WeightedCluster>,
    pub total_weight: u32,
}

#[derive(Clone, Debug, Serialize)]
pub struct WeightedCluster {
    /// Cluster name in `ProxyConfig::clusters`.
    pub cluster: String,
    pub weight: u32,
    pub request_headers: HeaderOps,
    pub response_headers: HeaderOps,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Rewrite {
    /// Replace the matched prefix (or the whole path for exact/regex matches) with this.
    pub uri: Option<String>,
    /// `uriRegexRewrite`: regex and substitution.
    #[serde(skip)]
    pub uri_regex: Option<(RegexHolder, String)>,
    pub authority: Option<String>,
}

/// A compiled regex comparable for config diffs (by pattern).
#[derive(Clone, Debug)]
pub struct RegexHolder(pub regex::Regex);

impl PartialEq for RegexHolder {
    fn eq(&self, o: &Self) -> bool {
        self.0.as_str() == o.0.as_str()
    }
}
impl Eq for RegexHolder {}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Redirect {
    pub uri: Option<String>,
    /// Replace the matched prefix.
    pub prefix_rewrite: Option<String>,
    pub authority: Option<String>,
    pub scheme: Option<String>,
    pub port: Option<u16>,
    /// `derivePort: FROM_REQUEST_PORT` keeps the request's port; FROM_PROTOCOL_DEFAULT drops it.
    pub derive_port_from_request: bool,
    pub code: u16,
}

/// Header set/add/remove, applied in that order: remove, set, add (Envoy's behaviour).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct HeaderOps {
    pub set: Vec<(String, String)>,
    pub add: Vec<(String, String)>,
    pub remove: Vec<String>,
}

impl HeaderOps {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub per_try_timeout: Option<Duration>,
    /// Envoy retry-on tokens (`5xx`, `gateway-error`, `connect-failure`, `refused-stream`,
    /// `reset`, `retriable-4xx`, `retriable-status-codes`, gRPC: `cancelled`, `unavailable`,
    /// `deadline-exceeded`, `resource-exhausted`, `internal`).
    pub retry_on: Vec<String>,
    /// Status codes named directly in retryOn (retriable-status-codes).
    pub retriable_status_codes: Vec<u16>,
    /// Try another host than the previous attempt's.
    pub retry_other_host: bool,
    /// Exponential backoff base (25ms default, Envoy) with jitter, capped at 10x.
    pub backoff_base: Duration,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FaultInjection {
    pub delay: Option<(Duration, f64)>,
    pub abort: Option<(FaultAbort, f64)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum FaultAbort {
    Http(u16),
    Grpc(u32),
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Mirror {
    pub cluster: String,
    /// 0-100; 100 when unset.
    pub percentage: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct CorsPolicy {
    pub allow_origins: Vec<StringMatcher>,
    pub allow_methods: Vec<String>,
    pub allow_headers: Vec<String>,
    pub expose_headers: Vec<String>,
    pub max_age: Option<Duration>,
    pub allow_credentials: Option<bool>,
    /// Forward preflights the policy does not match instead of answering them.
    pub unmatched_preflights_forward: bool,
}

/// An upstream: one service port, optionally narrowed to a subset.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Cluster {
    pub name: String,
    pub service: ServiceKey,
    pub subset: Option<String>,
    pub discovery: Discovery,
    pub protocol: UpstreamProtocol,
    pub lb: LbPolicy,
    pub connect_timeout: Duration,
    pub pool: ConnectionPool,
    pub outlier: Option<OutlierDetection>,
    pub tls: UpstreamTls,
    /// `tls` was chosen by auto mTLS (no DestinationRule TLS setting): mTLS goes only to the
    /// endpoints with `mesh: true`, the others get plaintext (Envoy's transport socket match).
    pub auto_mtls: bool,
    /// The DestinationRule that shaped this cluster (`ns/name`), for explain and proxy-config.
    pub destination_rule: Option<String>,
}

/// `host:port` of a service.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ServiceKey {
    pub host: String,
    pub port: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Discovery {
    /// Endpoints from the registry (`ProxyConfig::endpoints`).
    Eds,
    /// Resolve the endpoint host names by DNS (ServiceEntry DNS / DNS_ROUND_ROBIN).
    Dns,
    /// Use the connection's original destination (resolution NONE, passthrough).
    OriginalDst,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum UpstreamProtocol {
    Http1,
    Http2,
    /// Same protocol as the downstream request.
    Auto,
    Tcp,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum LbPolicy {
    LeastRequest,
    RoundRobin,
    Random,
    /// Pass to the original destination.
    Passthrough,
    ConsistentHash(ConsistentHash),
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ConsistentHash {
    pub key: HashKey,
    pub maglev: bool,
    pub minimum_ring_size: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum HashKey {
    Header(String),
    Cookie {
        name: String,
        path: Option<String>,
        ttl: Option<Duration>,
    },
    SourceIp,
    QueryParameter(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConnectionPool {
    /// tcp.maxConnections (Envoy default 2^32-1).
    pub max_connections: u32,
    pub tcp_keepalive: Option<Duration>,
    pub http1_max_pending_requests: u32,
    pub http2_max_requests: u32,
    /// 0 = unlimited.
    pub max_requests_per_connection: u32,
    pub max_retries: u32,
    pub idle_timeout: Option<Duration>,
    pub h2_upgrade: bool,
}

impl Default for ConnectionPool {
    fn default() -> Self {
        ConnectionPool {
            max_connections: u32::MAX,
            tcp_keepalive: None,
            http1_max_pending_requests: u32::MAX,
            http2_max_requests: u32::MAX,
            max_requests_per_connection: 0,
            max_retries: u32::MAX,
            idle_timeout: Some(Duration::from_secs(3600)),
            h2_upgrade: false,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OutlierDetection {
    pub consecutive_5xx: Option<u32>,
    pub consecutive_gateway_errors: Option<u32>,
    pub interval: Duration,
    pub base_ejection_time: Duration,
    pub max_ejection_percent: u32,
    pub min_health_percent: u32,
}

/// How to secure connections to the upstream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum UpstreamTls {
    None,
    /// Istio mTLS with the proxy's workload certificate; peers must present one of these
    /// SPIFFE identities (empty: any identity from the mesh CA).
    IstioMutual {
        expected_identities: Vec<String>,
        sni: Option<String>,
    },
    /// TLS origination (SIMPLE/MUTUAL) to an external or in-mesh server.
    Tls {
        sni: Option<String>,
        ca_certificates: Option<String>,
        client_certificate: Option<String>,
        private_key: Option<String>,
        subject_alt_names: Vec<String>,
        insecure_skip_verify: bool,
        /// Client certificate, key and CA from a `credentialName` Secret (gateways), by name
        /// in `ProxyConfig::secrets`; takes the place of the file fields.
        credential: Option<String>,
    },
}

/// The endpoints of one cluster.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ClusterEndpoints {
    pub endpoints: Vec<Endpoint>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Endpoint {
    /// IP:port, or a DNS name and port for DNS clusters.
    pub address: EndpointAddress,
    pub labels: BTreeMap<String, String>,
    pub weight: u32,
    /// SPIFFE identity of the workload behind this endpoint, when it is in the mesh.
    pub identity: Option<String>,
    /// Whether the endpoint has a sidecar (auto-mTLS sends mTLS only to those).
    pub mesh: bool,
    pub locality: Option<String>,
    /// Envoy priority (0 = best): locality failover (`locality`).
    pub priority: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum EndpointAddress {
    Socket(SocketAddr),
    Dns { host: String, port: u16 },
}

/// A TLS certificate and key (PEM), and optional CA bundle (for MUTUAL gateways).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TlsSecret {
    #[serde(skip)]
    pub cert_chain_pem: String,
    #[serde(skip)]
    pub private_key_pem: String,
    #[serde(skip)]
    pub ca_pem: Option<String>,
    /// Where it came from (`Secret istio-system/x`, a file path).
    pub source: String,
    /// The PEMs live in files the runtime reads (and re-reads on reload): Gateway
    /// `serverCertificate`/`privateKey`/`caCertificates`. The `*_pem` fields are empty then.
    pub files: Option<SecretFiles>,
}

/// File paths of a certificate, its key and a CA bundle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SecretFiles {
    /// Empty for a CA-only secret.
    pub cert_chain: String,
    pub private_key: String,
    pub ca: Option<String>,
}
