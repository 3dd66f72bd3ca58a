//! Istio's standard metrics, per proxy, served in Prometheus text format at
//! `GET /stats/prometheus` on the admin port (Envoy's 15000) and on the status port (Istio's
//! 15020/15021, what `prometheus.io/port` annotations point scrapers at).
//!
//! Owns: the registry and every metric family; label derivation (reporter, source and
//! destination peers, destination service) from the proxy's node, the config's clusters and
//! endpoints and the connection's mTLS peer; the per-config label [`Snapshot`], built when a
//! config is installed, which keeps the request path to a few hash lookups and reference-count
//! bumps (no string formatting, no global lock held); the exposition.
//! Does not own: when a request or connection completes (`http::access_log::AccessLog::emit`,
//! `tcp`), or serving the endpoint (`admin`).
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `istio_requests_total` | counter | [`HttpLabels`] |
//! | `istio_request_duration_milliseconds` | histogram ([`DURATION_BUCKETS_MS`]) | [`HttpLabels`] |
//! | `istio_request_bytes`, `istio_response_bytes` | histogram ([`BYTES_BUCKETS`]), body bytes | [`HttpLabels`] |
//! | `istio_tcp_sent_bytes_total`, `istio_tcp_received_bytes_total` | counter, counted as bytes move | [`TcpLabels`] |
//! | `istio_tcp_connections_opened_total`, `istio_tcp_connections_closed_total` | counter | [`TcpLabels`] |
//! | `trellis_config_reloads_total{result="applied"\|"rejected"}` | counter | |
//! | `trellis_downstream_connections_active` | gauge (at scrape) | |
//! | `envoy_cluster_upstream_rq_total`, `_rq_active`, `_cx_total`, `_cx_connect_fail`, `_rq_pending_overflow`, `_rq_retry`, `envoy_cluster_outlier_detection_ejections_enforced_total` | at scrape | `cluster_name` |
//!
//! Where the labels come from (`unknown` where the proxy cannot know, as Istio):
//! - `reporter`: `destination` on a sidecar's inbound listener (`virtualInbound`), `source`
//!   everywhere else (outbound sidecar traffic, gateways).
//! - The proxy's own side: workload (node id without `.namespace`), namespace, `app` /
//!   `version` / canonical service and revision from its labels, cluster [`CLUSTER_ID`], and
//!   its SPIFFE principal when the connection is Istio mTLS.
//! - The peer on the source side: the endpoint the request went to (config endpoints: labels,
//!   SPIFFE identity, namespace from it); its principal when the upstream connection is mTLS.
//! - The peer on the destination side: the downstream's verified SPIFFE id (mTLS), plus the
//!   labels of the endpoint with the peer's IP when exactly one endpoint has it.
//! - Destination service: the routed cluster's service host (`name.namespace.svc...` gives
//!   name and namespace); `unknown` when nothing was routed (NR).
//! - `response_flags`: the access log's Envoy flags; `grpc_response_status` from the
//!   `grpc-status` header or trailer of gRPC responses (empty otherwise);
//!   `connection_security_policy`: `mutual_tls` / `none` on the destination side, `unknown`
//!   on the source side.

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::HeaderMap;
use prometheus_client::encoding::{
    EncodeLabel, EncodeLabelSet, EncodeLabelValue, LabelSetEncoder, LabelValueEncoder,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use trellis_model::config::{
    Cluster, Endpoint, EndpointAddress, NodeInfo, ProxyConfig, ProxyKind, UpstreamTls,
};
use trellis_model::security::VIRTUAL_INBOUND;

use crate::http::error::Flags;
use crate::state::ConnectionInfo;
use crate::upstream::Upstreams;

/// Istio's default cluster id (`CLUSTER_ID`), the value of `source_cluster` /
/// `destination_cluster` for workloads of this mesh.
pub const CLUSTER_ID: &str = "Kubernetes";
const UNKNOWN: &str = "unknown";

/// Istio's (Envoy's default) buckets for `istio_request_duration_milliseconds`.
pub const DURATION_BUCKETS_MS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];
/// Istio's buckets for `istio_request_bytes` and `istio_response_bytes`.
pub const BYTES_BUCKETS: [f64; 10] = [1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9];

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS_MS)
}

fn bytes_histogram() -> Histogram {
    Histogram::new(BYTES_BUCKETS)
}

/// The proxy's metrics (one per `ProxyState`).
pub struct Metrics {
    registry: Registry,
    requests: Family<HttpLabels, Counter>,
    duration: HistogramFamily<HttpLabels>,
    request_bytes: HistogramFamily<HttpLabels>,
    response_bytes: HistogramFamily<HttpLabels>,
    tcp_sent: Family<TcpLabels, Counter>,
    tcp_received: Family<TcpLabels, Counter>,
    tcp_opened: Family<TcpLabels, Counter>,
    tcp_closed: Family<TcpLabels, Counter>,
    config_reloads: Family<ResultLabel, Counter>,
    downstream_active: Gauge,
    snapshot: ArcSwap<Snapshot>,
    /// The four HTTP series of each label set seen, so a request costs one (fast) hash of
    /// its labels instead of four SipHash lookups in the families.
    http_series: RwLock<HashMap<HttpLabels, HttpSeries, foldhash::fast::RandomState>>,
}

/// Label sets whose series handles are cached at most (the cache restarts when full).
const MAX_CACHED_SERIES: usize = 4096;

/// Handles on the series of one HTTP label set (they share their values with the families).
struct HttpSeries {
    requests: Counter,
    duration: Histogram,
    request_bytes: Histogram,
    response_bytes: Histogram,
}

impl HttpSeries {
    fn record(&self, o: &HttpOutcome<'_>) {
        self.requests.inc();
        self.duration.observe(o.duration.as_secs_f64() * 1000.0);
        self.request_bytes.observe(o.request_bytes as f64);
        self.response_bytes.observe(o.response_bytes as f64);
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct ResultLabel(&'static str);

impl EncodeLabelSet for ResultLabel {
    fn encode(&self, enc: &mut LabelSetEncoder) -> fmt::Result {
        label(enc, "result", self.0)
    }
}

impl Metrics {
    /// Metrics for a proxy serving `config` (labels follow [`Metrics::observe_config`]).
    pub fn new(config: &ProxyConfig) -> Self {
        let m = Metrics {
            registry: Registry::default(),
            requests: Family::default(),
            duration: Family::new_with_constructor(duration_histogram as fn() -> Histogram),
            request_bytes: Family::new_with_constructor(bytes_histogram as fn() -> Histogram),
            response_bytes: Family::new_with_constructor(bytes_histogram as fn() -> Histogram),
            tcp_sent: Family::default(),
            tcp_received: Family::default(),
            tcp_opened: Family::default(),
            tcp_closed: Family::default(),
            config_reloads: Family::default(),
            downstream_active: Gauge::default(),
            snapshot: ArcSwap::from_pointee(Snapshot::build(config, None)),
            http_series: RwLock::default(),
        };
        // Counters are registered without `_total`: the exposition adds it.
        let mut r = Registry::default();
        r.register(
            "istio_requests",
            "Requests handled by this proxy",
            m.requests.clone(),
        );
        r.register(
            "istio_request_duration_milliseconds",
            "Duration of requests in milliseconds",
            m.duration.clone(),
        );
        r.register(
            "istio_request_bytes",
            "HTTP request body sizes",
            m.request_bytes.clone(),
        );
        r.register(
            "istio_response_bytes",
            "HTTP response body sizes",
            m.response_bytes.clone(),
        );
        r.register(
            "istio_tcp_sent_bytes",
            "Bytes sent to the downstream during TCP connections",
            m.tcp_sent.clone(),
        );
        r.register(
            "istio_tcp_received_bytes",
            "Bytes received from the downstream during TCP connections",
            m.tcp_received.clone(),
        );
        r.register(
            "istio_tcp_connections_opened",
            "TCP connections opened",
            m.tcp_opened.clone(),
        );
        r.register(
            "istio_tcp_connections_closed",
            "TCP connections closed",
            m.tcp_closed.clone(),
        );
        r.register(
            "trellis_config_reloads",
            "Configs applied or rejected by this proxy",
            m.config_reloads.clone(),
        );
        r.register(
            "trellis_downstream_connections_active",
            "Downstream connections open",
            m.downstream_active.clone(),
        );
        Metrics { registry: r, ..m }
    }

    /// Rebuilds the label snapshot for the config now in force; `identity` is the proxy's
    /// mesh SPIFFE id when it has a mesh certificate.
    pub fn observe_config(&self, config: &ProxyConfig, identity: Option<&str>) {
        self.snapshot
            .store(Arc::new(Snapshot::build(config, identity)));
    }

    pub fn config_applied(&self) {
        self.config_reloads
            .get_or_create(&ResultLabel("applied"))
            .inc();
    }

    pub fn config_rejected(&self) {
        self.config_reloads
            .get_or_create(&ResultLabel("rejected"))
            .inc();
    }

    /// The metrics state of one HTTP request (carried by its access log entry).
    pub fn request(self: &Arc<Self>, conn: &Arc<ConnectionInfo>, grpc: bool) -> RequestMetrics {
        RequestMetrics {
            metrics: self.clone(),
            conn: conn.clone(),
            grpc,
            grpc_status: None,
        }
    }

    fn record_http(&self, r: &RequestMetrics, o: &HttpOutcome<'_>) {
        let parties = self.snapshot.load().parties(&r.conn, o.cluster, o.upstream);
        let labels = HttpLabels {
            parties,
            grpc: r.grpc,
            response_code: o.status,
            grpc_status: if r.grpc { r.grpc_status } else { None },
            flags: o.flags,
        };
        if let Some(series) = self
            .http_series
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&labels)
        {
            series.record(o);
            return;
        }
        let series = HttpSeries {
            requests: self.requests.get_or_create(&labels).clone(),
            duration: self.duration.get_or_create(&labels).clone(),
            request_bytes: self.request_bytes.get_or_create(&labels).clone(),
            response_bytes: self.response_bytes.get_or_create(&labels).clone(),
        };
        series.record(o);
        let mut cache = self.http_series.write().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= MAX_CACHED_SERIES {
            cache.clear();
        }
        cache.insert(labels, series);
    }

    /// The metrics of one proxied TCP connection: fill in the route and upstream as they are
    /// known, [`TcpStats::open`] once connected, then [`TcpStats::close`] (or drop).
    pub fn tcp<'a>(&'a self, conn: &'a ConnectionInfo) -> TcpStats<'a> {
        TcpStats {
            metrics: self,
            conn,
            cluster: None,
            upstream: None,
            received: 0,
            open: None,
            closed: false,
        }
    }

    /// A TCP connection closed before reaching an upstream (no route, denied): opened and
    /// closed with `flags`; `received` bytes were read from it.
    pub fn tcp_refused(&self, conn: &ConnectionInfo, flags: Flags, received: u64) {
        let mut t = self.tcp(conn);
        t.received(received);
        t.close(flags);
    }

    fn tcp_labels(&self, stats: &TcpStats<'_>, flags: Flags) -> TcpLabels {
        TcpLabels {
            parties: self
                .snapshot
                .load()
                .parties(stats.conn, stats.cluster, stats.upstream),
            flags,
        }
    }

    /// The Prometheus text exposition (format 0.0.4, as Envoy's `/stats/prometheus`), with
    /// per-cluster upstream statistics read from `upstreams` and the downstream connection
    /// count when the caller knows it.
    pub fn render(&self, upstreams: &Upstreams, downstream_active: Option<usize>) -> String {
        if let Some(n) = downstream_active {
            self.downstream_active
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        let mut om = String::with_capacity(16 * 1024);
        let _ = prometheus_client::encoding::text::encode_registry(&mut om, &self.registry);
        let clusters = cluster_registry(upstreams);
        let _ = prometheus_client::encoding::text::encode_registry(&mut om, &clusters);
        openmetrics_to_text(&om)
    }
}

/// What a finished HTTP request reports.
#[derive(Clone, Copy, Debug)]
pub struct HttpOutcome<'a> {
    pub status: u16,
    pub flags: Flags,
    /// The routed cluster (none: not routed).
    pub cluster: Option<&'a str>,
    /// The endpoint the (last) attempt went to.
    pub upstream: Option<SocketAddr>,
    pub duration: Duration,
    pub request_bytes: u64,
    pub response_bytes: u64,
}

/// The metrics state of one HTTP request: recorded once, when its access log entry is
/// written.
pub struct RequestMetrics {
    metrics: Arc<Metrics>,
    conn: Arc<ConnectionInfo>,
    grpc: bool,
    grpc_status: Option<u16>,
}

impl RequestMetrics {
    /// Notes `grpc-status` from the response headers (trailers-only gRPC responses).
    pub fn response_headers(&mut self, h: &HeaderMap) {
        if self.grpc {
            if let Some(s) = grpc_status(h) {
                self.grpc_status = Some(s);
            }
        }
    }

    /// Notes `grpc-status` from the response trailers.
    pub fn trailers(&mut self, h: &HeaderMap) {
        self.response_headers(h);
    }

    pub fn record(&self, outcome: &HttpOutcome<'_>) {
        self.metrics.record_http(self, outcome);
    }
}

fn grpc_status(h: &HeaderMap) -> Option<u16> {
    let v = h.get("grpc-status")?.as_bytes();
    if v.is_empty() || v.len() > 3 {
        return None;
    }
    v.iter().try_fold(0u16, |n, b| {
        b.is_ascii_digit().then(|| n * 10 + u16::from(b - b'0'))
    })
}

/// The metrics of one proxied TCP connection (see [`Metrics::tcp`]).
pub struct TcpStats<'a> {
    metrics: &'a Metrics,
    conn: &'a ConnectionInfo,
    cluster: Option<&'a str>,
    upstream: Option<SocketAddr>,
    received: u64,
    open: Option<TcpLabels>,
    closed: bool,
}

impl<'a> TcpStats<'a> {
    /// The cluster the connection was routed to.
    pub fn route(&mut self, cluster: &'a str) {
        self.cluster = Some(cluster);
    }

    /// The endpoint picked.
    pub fn upstream(&mut self, addr: SocketAddr) {
        self.upstream = Some(addr);
    }

    /// Bytes already read from the downstream (a ClientHello read for SNI).
    pub fn received(&mut self, n: u64) {
        self.received += n;
    }

    /// The upstream is connected: counts the connection opened and returns `io` wrapped so
    /// bytes are counted as they move (long connections show traffic before they close).
    pub fn open<IO>(&mut self, io: IO) -> Counted<IO> {
        let labels = self.metrics.tcp_labels(self, Flags::default());
        self.metrics.tcp_opened.get_or_create(&labels).inc();
        let received = self.metrics.tcp_received.get_or_create_owned(&labels);
        let sent = self.metrics.tcp_sent.get_or_create_owned(&labels);
        received.inc_by(std::mem::take(&mut self.received));
        self.open = Some(labels);
        Counted {
            inner: io,
            received,
            sent,
        }
    }

    /// The connection ended (`flags` as in the access log).
    pub fn close(mut self, flags: Flags) {
        self.finish(flags);
    }

    fn finish(&mut self, flags: Flags) {
        if std::mem::replace(&mut self.closed, true) {
            return;
        }
        let m = self.metrics;
        match self.open.take() {
            Some(mut labels) => {
                labels.flags = flags;
                m.tcp_closed.get_or_create(&labels).inc();
            }
            None => {
                let labels = m.tcp_labels(self, flags);
                m.tcp_opened.get_or_create(&labels).inc();
                m.tcp_closed.get_or_create(&labels).inc();
                m.tcp_received.get_or_create(&labels).inc_by(self.received);
                m.tcp_sent.get_or_create(&labels).inc_by(0);
            }
        }
    }
}

impl Drop for TcpStats<'_> {
    fn drop(&mut self) {
        self.finish(Flags::default());
    }
}

/// A downstream stream whose bytes are counted into `istio_tcp_{received,sent}_bytes_total`.
pub struct Counted<IO> {
    inner: IO,
    received: Counter,
    sent: Counter,
}

impl<IO: AsyncRead + Unpin> AsyncRead for Counted<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len().saturating_sub(before);
        if n > 0 {
            self.received.inc_by(n as u64);
        }
        r
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Counted<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            self.sent.inc_by(*n as u64);
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = &r {
            self.sent.inc_by(*n as u64);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

// ---------------------------------------------------------------------------------------
// Labels

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
enum Reporter {
    Source,
    Destination,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
enum SecurityPolicy {
    MutualTls,
    None,
    Unknown,
}

/// One side of a request: a workload, as Istio's `source_*` / `destination_*` labels show it.
/// Built once per config snapshot and shared; its hash is computed once.
#[derive(Debug)]
pub struct Peer {
    hash: u64,
    f: PeerFields,
}

#[derive(Debug, Hash, PartialEq, Eq)]
struct PeerFields {
    workload: Box<str>,
    namespace: Box<str>,
    principal: Box<str>,
    app: Box<str>,
    version: Box<str>,
    canonical_service: Box<str>,
    canonical_revision: Box<str>,
    cluster: Box<str>,
}

impl PeerFields {
    fn unknown() -> Self {
        PeerFields {
            workload: UNKNOWN.into(),
            namespace: UNKNOWN.into(),
            principal: UNKNOWN.into(),
            app: UNKNOWN.into(),
            version: UNKNOWN.into(),
            canonical_service: UNKNOWN.into(),
            canonical_revision: UNKNOWN.into(),
            cluster: UNKNOWN.into(),
        }
    }

    fn seal(self) -> Arc<Peer> {
        Arc::new(Peer {
            hash: stable_hash(&self),
            f: self,
        })
    }
}

impl Hash for Peer {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl PartialEq for Peer {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && self.f == other.f
    }
}

impl Eq for Peer {}

/// The destination service of a request.
#[derive(Debug)]
pub struct Service {
    hash: u64,
    f: ServiceFields,
}

#[derive(Debug, Hash, PartialEq, Eq)]
struct ServiceFields {
    host: Box<str>,
    name: Box<str>,
    namespace: Box<str>,
}

impl ServiceFields {
    fn seal(self) -> Arc<Service> {
        Arc::new(Service {
            hash: stable_hash(&self),
            f: self,
        })
    }
}

impl Hash for Service {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl PartialEq for Service {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && self.f == other.f
    }
}

impl Eq for Service {}

/// Deterministic (fixed-key) hash: equal label contents hash equal across snapshots.
fn stable_hash<T: Hash>(v: &T) -> u64 {
    let mut h = DefaultHasher::new();
    v.hash(&mut h);
    h.finish()
}

/// Who reported, between whom, to which service, how secured.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct Parties {
    reporter: Reporter,
    source: Arc<Peer>,
    destination: Arc<Peer>,
    service: Arc<Service>,
    security: SecurityPolicy,
}

/// The labels of Istio's HTTP/gRPC metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct HttpLabels {
    parties: Parties,
    grpc: bool,
    response_code: u16,
    grpc_status: Option<u16>,
    flags: Flags,
}

/// The labels of Istio's TCP metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct TcpLabels {
    parties: Parties,
    flags: Flags,
}

fn label<V: EncodeLabelValue>(enc: &mut LabelSetEncoder, key: &str, value: V) -> fmt::Result {
    (key, value).encode(enc.encode_label())
}

/// A label value written with `Display` (scrape time only).
struct Shown<T>(T);

impl<T: fmt::Display> EncodeLabelValue for Shown<T> {
    fn encode(&self, enc: &mut LabelValueEncoder) -> fmt::Result {
        write!(enc, "{}", self.0)
    }
}

/// Istio's label order.
fn encode_labels(
    enc: &mut LabelSetEncoder,
    p: &Parties,
    protocol: &str,
    response: Option<(u16, Option<u16>)>,
    flags: Flags,
) -> fmt::Result {
    label(
        enc,
        "reporter",
        match p.reporter {
            Reporter::Source => "source",
            Reporter::Destination => "destination",
        },
    )?;
    let s = &p.source.f;
    label(enc, "source_workload", &*s.workload)?;
    label(enc, "source_canonical_service", &*s.canonical_service)?;
    label(enc, "source_canonical_revision", &*s.canonical_revision)?;
    label(enc, "source_workload_namespace", &*s.namespace)?;
    label(enc, "source_principal", &*s.principal)?;
    label(enc, "source_app", &*s.app)?;
    label(enc, "source_version", &*s.version)?;
    label(enc, "source_cluster", &*s.cluster)?;
    let d = &p.destination.f;
    label(enc, "destination_workload", &*d.workload)?;
    label(enc, "destination_workload_namespace", &*d.namespace)?;
    label(enc, "destination_principal", &*d.principal)?;
    label(enc, "destination_app", &*d.app)?;
    label(enc, "destination_version", &*d.version)?;
    label(enc, "destination_service", &*p.service.f.host)?;
    label(enc, "destination_canonical_service", &*d.canonical_service)?;
    label(
        enc,
        "destination_canonical_revision",
        &*d.canonical_revision,
    )?;
    label(enc, "destination_service_name", &*p.service.f.name)?;
    label(
        enc,
        "destination_service_namespace",
        &*p.service.f.namespace,
    )?;
    label(enc, "destination_cluster", &*d.cluster)?;
    label(enc, "request_protocol", protocol)?;
    if let Some((code, grpc)) = response {
        label(enc, "response_code", code)?;
        label(enc, "grpc_response_status", grpc)?;
    }
    label(enc, "response_flags", Shown(flags))?;
    label(
        enc,
        "connection_security_policy",
        match p.security {
            SecurityPolicy::MutualTls => "mutual_tls",
            SecurityPolicy::None => "none",
            SecurityPolicy::Unknown => "unknown",
        },
    )
}

impl EncodeLabelSet for HttpLabels {
    fn encode(&self, enc: &mut LabelSetEncoder) -> fmt::Result {
        encode_labels(
            enc,
            &self.parties,
            if self.grpc { "grpc" } else { "http" },
            Some((self.response_code, self.grpc_status)),
            self.flags,
        )
    }
}

impl EncodeLabelSet for TcpLabels {
    fn encode(&self, enc: &mut LabelSetEncoder) -> fmt::Result {
        encode_labels(enc, &self.parties, "tcp", None, self.flags)
    }
}

// ---------------------------------------------------------------------------------------
// The per-config snapshot

/// Whether the upstream connections of a cluster are Istio mTLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mtls {
    Never,
    Always,
    /// Auto mTLS: to endpoints with a sidecar only.
    MeshEndpoints,
}

struct ClusterLabels {
    service: Arc<Service>,
    mtls: Mtls,
}

/// A config endpoint as a peer.
struct EndpointPeer {
    mesh: bool,
    identity: Option<Box<str>>,
    /// As seen over mTLS (principal known).
    with_principal: Arc<Peer>,
    /// As seen in plaintext.
    without: Arc<Peer>,
}

/// Everything label derivation needs from one config, precomputed.
pub struct Snapshot {
    sidecar: bool,
    own_mtls: Arc<Peer>,
    own_plain: Arc<Peer>,
    unknown_peer: Arc<Peer>,
    unknown_service: Arc<Service>,
    clusters: HashMap<String, ClusterLabels>,
    by_addr: HashMap<SocketAddr, Arc<EndpointPeer>>,
    /// Endpoints by IP (not loopback); `None` when several endpoints with different labels
    /// share the IP.
    by_ip: HashMap<IpAddr, Option<Arc<EndpointPeer>>>,
    trust_domain: Box<str>,
    /// Downstream mTLS peers not found by IP, by principal (bounded).
    principals: RwLock<HashMap<Box<str>, Arc<Peer>>>,
}

const MAX_CACHED_PRINCIPALS: usize = 4096;

fn first<'a>(
    labels: &'a std::collections::BTreeMap<String, String>,
    keys: &[&str],
) -> Option<&'a str> {
    keys.iter()
        .find_map(|k| labels.get(*k))
        .map(String::as_str)
        .filter(|v| !v.is_empty())
}

fn labelled_peer(
    workload: &str,
    namespace: &str,
    principal: Option<&str>,
    labels: &std::collections::BTreeMap<String, String>,
    cluster: &str,
) -> PeerFields {
    let app = first(labels, &["app", "app.kubernetes.io/name"]).unwrap_or(UNKNOWN);
    let canonical_service = first(
        labels,
        &[
            "service.istio.io/canonical-name",
            "app.kubernetes.io/name",
            "app",
        ],
    )
    .unwrap_or(if workload == UNKNOWN {
        UNKNOWN
    } else {
        workload
    });
    let canonical_revision = first(
        labels,
        &[
            "service.istio.io/canonical-revision",
            "app.kubernetes.io/version",
            "version",
        ],
    )
    .unwrap_or("latest");
    PeerFields {
        workload: workload.into(),
        namespace: namespace.into(),
        principal: principal.unwrap_or(UNKNOWN).into(),
        app: app.into(),
        version: first(labels, &["version", "app.kubernetes.io/version"])
            .unwrap_or(UNKNOWN)
            .into(),
        canonical_service: canonical_service.into(),
        canonical_revision: canonical_revision.into(),
        cluster: cluster.into(),
    }
}

/// The namespace of `spiffe://<td>/ns/<ns>/sa/<sa>`.
fn principal_namespace(principal: &str) -> Option<&str> {
    let rest = principal.strip_prefix("spiffe://").unwrap_or(principal);
    let (_, path) = rest.split_once('/')?;
    let ns = path.strip_prefix("ns/")?.split('/').next()?;
    (!ns.is_empty()).then_some(ns)
}

fn principal_trust_domain(principal: &str) -> Option<&str> {
    principal.strip_prefix("spiffe://")?.split('/').next()
}

/// `name.namespace.svc.<domain>` -> (name, namespace); other hosts are their own name.
fn service_fields(host: &str) -> ServiceFields {
    let mut parts = host.splitn(4, '.');
    let (name, namespace) = match (parts.next(), parts.next(), parts.next()) {
        (Some(n), Some(ns), Some("svc")) if !n.is_empty() && !ns.is_empty() => (n, ns),
        _ => (host, UNKNOWN),
    };
    ServiceFields {
        host: host.into(),
        name: name.into(),
        namespace: namespace.into(),
    }
}

fn node_peer(node: &NodeInfo, principal: Option<&str>) -> PeerFields {
    let workload = node
        .id
        .strip_suffix(node.namespace.as_str())
        .and_then(|w| w.strip_suffix('.'))
        .filter(|w| !w.is_empty())
        .unwrap_or(&node.id);
    labelled_peer(
        workload,
        &node.namespace,
        principal,
        &node.labels,
        CLUSTER_ID,
    )
}

fn endpoint_peer(e: &Endpoint) -> Option<EndpointPeer> {
    if e.labels.is_empty() && e.identity.is_none() {
        return None;
    }
    let identity = e.identity.as_deref();
    let namespace = identity.and_then(principal_namespace).unwrap_or(UNKNOWN);
    let cluster = if e.mesh || identity.is_some() {
        CLUSTER_ID
    } else {
        UNKNOWN
    };
    Some(EndpointPeer {
        mesh: e.mesh,
        identity: identity.map(Into::into),
        with_principal: labelled_peer(UNKNOWN, namespace, identity, &e.labels, cluster).seal(),
        without: labelled_peer(UNKNOWN, namespace, None, &e.labels, cluster).seal(),
    })
}

fn cluster_mtls(c: &Cluster, has_identity: bool) -> Mtls {
    match &c.tls {
        UpstreamTls::IstioMutual { .. } if has_identity => {
            if c.auto_mtls {
                Mtls::MeshEndpoints
            } else {
                Mtls::Always
            }
        }
        _ => Mtls::Never,
    }
}

impl Snapshot {
    /// Precomputes the labels of `config`; `identity` is the proxy's mesh SPIFFE id (without
    /// one, its connections are never Istio mTLS).
    pub fn build(config: &ProxyConfig, identity: Option<&str>) -> Snapshot {
        let node = &config.node;
        let own_id = identity.map(str::to_string).unwrap_or_else(|| {
            format!(
                "spiffe://{}/ns/{}/sa/{}",
                config.mesh.trust_domain, node.namespace, node.service_account
            )
        });
        let has_identity = identity.is_some();
        let clusters = config
            .clusters
            .iter()
            .map(|(name, c)| {
                (
                    name.clone(),
                    ClusterLabels {
                        service: service_fields(&c.service.host).seal(),
                        mtls: cluster_mtls(c, has_identity),
                    },
                )
            })
            .collect();
        let mut by_addr: HashMap<SocketAddr, Arc<EndpointPeer>> = HashMap::new();
        let mut by_ip: HashMap<IpAddr, Option<Arc<EndpointPeer>>> = HashMap::new();
        for eps in config.endpoints.values() {
            for e in &eps.endpoints {
                let EndpointAddress::Socket(addr) = e.address else {
                    continue;
                };
                if by_addr.contains_key(&addr) {
                    continue;
                }
                let Some(p) = endpoint_peer(e) else {
                    continue;
                };
                let p = Arc::new(p);
                by_addr.insert(addr, p.clone());
                let ip = addr.ip();
                if ip.is_loopback() || ip.is_unspecified() {
                    continue;
                }
                by_ip
                    .entry(ip)
                    .and_modify(|cur| {
                        if cur
                            .as_ref()
                            .is_some_and(|c| c.with_principal != p.with_principal)
                        {
                            *cur = None;
                        }
                    })
                    .or_insert_with(|| Some(p.clone()));
            }
        }
        Snapshot {
            sidecar: node.kind == ProxyKind::Sidecar,
            own_mtls: node_peer(node, Some(&own_id)).seal(),
            own_plain: node_peer(node, None).seal(),
            unknown_peer: PeerFields::unknown().seal(),
            unknown_service: ServiceFields {
                host: UNKNOWN.into(),
                name: UNKNOWN.into(),
                namespace: UNKNOWN.into(),
            }
            .seal(),
            clusters,
            by_addr,
            by_ip,
            trust_domain: config.mesh.trust_domain.as_str().into(),
            principals: RwLock::new(HashMap::new()),
        }
    }

    fn parties(
        &self,
        conn: &ConnectionInfo,
        cluster: Option<&str>,
        upstream: Option<SocketAddr>,
    ) -> Parties {
        let cl = cluster.and_then(|c| self.clusters.get(c));
        let service = cl.map_or_else(|| self.unknown_service.clone(), |c| c.service.clone());
        if self.sidecar && *conn.listener == *VIRTUAL_INBOUND {
            let mtls = conn.peer_identity.is_some();
            return Parties {
                reporter: Reporter::Destination,
                source: self.downstream_peer(conn.peer_addr.ip(), conn.peer_identity.as_deref()),
                destination: if mtls {
                    self.own_mtls.clone()
                } else {
                    self.own_plain.clone()
                },
                service,
                security: if mtls {
                    SecurityPolicy::MutualTls
                } else {
                    SecurityPolicy::None
                },
            };
        }
        let ep = upstream.and_then(|a| self.by_addr.get(&a));
        let mtls = match cl.map_or(Mtls::Never, |c| c.mtls) {
            Mtls::Never => false,
            Mtls::Always => upstream.is_some(),
            Mtls::MeshEndpoints => ep.is_some_and(|e| e.mesh),
        };
        Parties {
            reporter: Reporter::Source,
            source: if mtls {
                self.own_mtls.clone()
            } else {
                self.own_plain.clone()
            },
            destination: match ep {
                Some(e) if mtls => e.with_principal.clone(),
                Some(e) => e.without.clone(),
                None => self.unknown_peer.clone(),
            },
            service,
            security: SecurityPolicy::Unknown,
        }
    }

    /// The downstream of an inbound connection: the endpoint with its IP (when exactly one
    /// has it), with the verified principal when the connection is mTLS.
    fn downstream_peer(&self, ip: IpAddr, principal: Option<&str>) -> Arc<Peer> {
        let ep = self.by_ip.get(&ip).and_then(Option::as_ref);
        match (ep, principal) {
            (Some(e), None) => e.without.clone(),
            (Some(e), Some(p)) if e.identity.as_deref() == Some(p) => e.with_principal.clone(),
            (_, Some(p)) => self.principal_peer(p),
            (None, None) => self.unknown_peer.clone(),
        }
    }

    fn principal_peer(&self, principal: &str) -> Arc<Peer> {
        if let Some(p) = self
            .principals
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(principal)
        {
            return p.clone();
        }
        let cluster = if principal_trust_domain(principal) == Some(&*self.trust_domain) {
            CLUSTER_ID
        } else {
            UNKNOWN
        };
        let peer = PeerFields {
            namespace: principal_namespace(principal).unwrap_or(UNKNOWN).into(),
            principal: principal.into(),
            cluster: cluster.into(),
            ..PeerFields::unknown()
        }
        .seal();
        let mut cache = self.principals.write().unwrap_or_else(|e| e.into_inner());
        if cache.len() < MAX_CACHED_PRINCIPALS {
            cache.insert(principal.into(), peer.clone());
        }
        peer
    }
}

// ---------------------------------------------------------------------------------------
// Exposition

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct ClusterName(String);

impl EncodeLabelSet for ClusterName {
    fn encode(&self, enc: &mut LabelSetEncoder) -> fmt::Result {
        label(enc, "cluster_name", &self.0)
    }
}

/// Envoy-style per-cluster statistics, read at scrape time.
fn cluster_registry(upstreams: &Upstreams) -> Registry {
    use std::sync::atomic::Ordering::Relaxed;
    let rq: Family<ClusterName, Counter> = Family::default();
    let rq_active: Family<ClusterName, Gauge> = Family::default();
    let cx: Family<ClusterName, Counter> = Family::default();
    let cx_fail: Family<ClusterName, Counter> = Family::default();
    let overflow: Family<ClusterName, Counter> = Family::default();
    let retry: Family<ClusterName, Counter> = Family::default();
    let ejections: Family<ClusterName, Counter> = Family::default();
    for c in upstreams.clusters() {
        let l = ClusterName(c.config.name.clone());
        let s = &c.stats;
        rq.get_or_create(&l).inc_by(s.requests.load(Relaxed));
        rq_active
            .get_or_create(&l)
            .set(i64::try_from(c.active_requests()).unwrap_or(i64::MAX));
        cx.get_or_create(&l)
            .inc_by(s.connections_opened.load(Relaxed));
        cx_fail
            .get_or_create(&l)
            .inc_by(s.connect_failures.load(Relaxed));
        overflow.get_or_create(&l).inc_by(s.overflow.load(Relaxed));
        retry.get_or_create(&l).inc_by(s.retries.load(Relaxed));
        ejections
            .get_or_create(&l)
            .inc_by(s.ejections.load(Relaxed));
    }
    let mut r = Registry::default();
    r.register(
        "envoy_cluster_upstream_rq",
        "Upstream requests (and TCP connections) of the cluster",
        rq,
    );
    r.register(
        "envoy_cluster_upstream_rq_active",
        "Upstream requests in flight",
        rq_active,
    );
    r.register(
        "envoy_cluster_upstream_cx",
        "Upstream connections opened",
        cx,
    );
    r.register(
        "envoy_cluster_upstream_cx_connect_fail",
        "Upstream connection failures",
        cx_fail,
    );
    r.register(
        "envoy_cluster_upstream_rq_pending_overflow",
        "Requests refused by the circuit breakers",
        overflow,
    );
    r.register("envoy_cluster_upstream_rq_retry", "Retries", retry);
    r.register(
        "envoy_cluster_outlier_detection_ejections_enforced",
        "Endpoints ejected by outlier detection",
        ejections,
    );
    r
}

/// prometheus-client writes OpenMetrics; Envoy's `/stats/prometheus` (and every Prometheus
/// scraper) speaks the 0.0.4 text format: counter families are named with `_total` in
/// `# HELP`/`# TYPE`, no `# UNIT`/`# EOF`, and `le` bounds print as Envoy does (`1`, not
/// `1.0`).
pub fn openmetrics_to_text(om: &str) -> String {
    let counters: std::collections::HashSet<&str> = om
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(om.len() + counters.len() * 16);
    for line in om.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        if let Some(rest) = line
            .strip_prefix("# HELP ")
            .map(|r| ("# HELP ", r))
            .or_else(|| line.strip_prefix("# TYPE ").map(|r| ("# TYPE ", r)))
        {
            let (kind, rest) = rest;
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            out.push_str(kind);
            out.push_str(name);
            if counters.contains(name) {
                out.push_str("_total");
            }
            if !tail.is_empty() {
                out.push(' ');
                out.push_str(tail);
            }
            out.push('\n');
            continue;
        }
        // prometheus-client writes `le` first.
        match line.find("_bucket{le=\"") {
            Some(i) => {
                let start = i + "_bucket{le=\"".len();
                let end = line[start..].find('"').map_or(line.len(), |e| start + e);
                let v = &line[start..end];
                out.push_str(&line[..start]);
                out.push_str(v.strip_suffix(".0").unwrap_or(v));
                out.push_str(&line[end..]);
            }
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::error::Flag;
    use std::collections::BTreeMap;
    use trellis_model::config::{ClusterEndpoints, ServiceKey};

    fn conn(listener: &str, peer: &str, identity: Option<&str>) -> ConnectionInfo {
        ConnectionInfo {
            listener: listener.into(),
            listener_port: 80,
            local_addr: "10.0.0.1:80".parse().unwrap(),
            peer_addr: peer.parse().unwrap(),
            route_table: "r".into(),
            scheme: trellis_model::config::Scheme::Http,
            sni: None,
            peer_identity: identity.map(Into::into),
            peer_cert_sha256: None,
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// A sidecar `reviews-v1.bookinfo` with one cluster to `ratings` (auto mTLS) whose two
    /// endpoints are in the mesh, and one to an external host.
    fn config(kind: ProxyKind) -> ProxyConfig {
        let mut c = crate::test_config();
        c.node.kind = kind;
        c.node.id = "reviews-v1.bookinfo".into();
        c.node.namespace = "bookinfo".into();
        c.node.service_account = "bookinfo-reviews".into();
        c.node.labels = labels(&[("app", "reviews"), ("version", "v1")]);
        let mut ratings = test_cluster("outbound|9080||ratings.bookinfo.svc.cluster.local");
        ratings.service = ServiceKey {
            host: "ratings.bookinfo.svc.cluster.local".into(),
            port: 9080,
        };
        ratings.tls = UpstreamTls::IstioMutual {
            expected_identities: vec![],
            sni: None,
        };
        ratings.auto_mtls = true;
        let mut ext = test_cluster("outbound|443||api.example.com");
        ext.service = ServiceKey {
            host: "api.example.com".into(),
            port: 443,
        };
        let ep = |addr: &str, l: &[(&str, &str)], id: Option<&str>, mesh: bool| Endpoint {
            address: EndpointAddress::Socket(addr.parse().unwrap()),
            labels: labels(l),
            weight: 1,
            identity: id.map(Into::into),
            mesh,
            locality: None,
            priority: 0,
        };
        c.endpoints.insert(
            ratings.name.clone(),
            Arc::new(ClusterEndpoints {
                endpoints: vec![
                    ep(
                        "10.1.0.5:9080",
                        &[("app", "ratings"), ("version", "v1")],
                        Some("spiffe://cluster.local/ns/bookinfo/sa/bookinfo-ratings"),
                        true,
                    ),
                    ep(
                        "10.1.0.6:9080",
                        &[("app", "ratings"), ("version", "v2")],
                        None,
                        false,
                    ),
                ],
            }),
        );
        c.endpoints.insert(
            ext.name.clone(),
            Arc::new(ClusterEndpoints {
                endpoints: vec![ep("93.184.216.34:443", &[], None, false)],
            }),
        );
        c.clusters.insert(ratings.name.clone(), Arc::new(ratings));
        c.clusters.insert(ext.name.clone(), Arc::new(ext));
        c
    }

    fn test_cluster(name: &str) -> Cluster {
        Cluster {
            name: name.into(),
            service: ServiceKey {
                host: name.into(),
                port: 80,
            },
            subset: None,
            discovery: trellis_model::config::Discovery::Eds,
            protocol: trellis_model::config::UpstreamProtocol::Http1,
            lb: trellis_model::config::LbPolicy::LeastRequest,
            connect_timeout: Duration::from_secs(1),
            pool: Default::default(),
            outlier: None,
            tls: UpstreamTls::None,
            auto_mtls: false,
            destination_rule: None,
        }
    }

    fn render_labels(l: &HttpLabels) -> String {
        let m = Family::<HttpLabels, Counter>::default();
        m.get_or_create(l).inc();
        let mut r = Registry::default();
        r.register("x", "x", m);
        let mut s = String::new();
        prometheus_client::encoding::text::encode_registry(&mut s, &r).unwrap();
        s.lines()
            .find(|l| l.starts_with("x_total{"))
            .unwrap()
            .to_string()
    }

    fn http(parties: Parties, code: u16, flags: Flags) -> HttpLabels {
        HttpLabels {
            parties,
            grpc: false,
            response_code: code,
            grpc_status: None,
            flags,
        }
    }

    #[test]
    fn outbound_sidecar_reports_as_source_with_the_endpoint_it_reached() {
        let snap = Snapshot::build(
            &config(ProxyKind::Sidecar),
            Some("spiffe://cluster.local/ns/bookinfo/sa/bookinfo-reviews"),
        );
        let p = snap.parties(
            &conn("0.0.0.0_9080", "10.1.0.9:40000", None),
            Some("outbound|9080||ratings.bookinfo.svc.cluster.local"),
            Some("10.1.0.5:9080".parse().unwrap()),
        );
        let line = render_labels(&http(p, 200, Flags::default()));
        for want in [
            r#"reporter="source""#,
            r#"source_workload="reviews-v1""#,
            r#"source_canonical_service="reviews""#,
            r#"source_canonical_revision="v1""#,
            r#"source_workload_namespace="bookinfo""#,
            r#"source_principal="spiffe://cluster.local/ns/bookinfo/sa/bookinfo-reviews""#,
            r#"source_app="reviews""#,
            r#"source_version="v1""#,
            r#"source_cluster="Kubernetes""#,
            r#"destination_workload="unknown""#,
            r#"destination_workload_namespace="bookinfo""#,
            r#"destination_principal="spiffe://cluster.local/ns/bookinfo/sa/bookinfo-ratings""#,
            r#"destination_app="ratings""#,
            r#"destination_version="v1""#,
            r#"destination_service="ratings.bookinfo.svc.cluster.local""#,
            r#"destination_service_name="ratings""#,
            r#"destination_service_namespace="bookinfo""#,
            r#"destination_cluster="Kubernetes""#,
            r#"request_protocol="http""#,
            r#"response_code="200""#,
            r#"grpc_response_status="""#,
            r#"response_flags="-""#,
            r#"connection_security_policy="unknown""#,
        ] {
            assert!(line.contains(want), "{want} missing in {line}");
        }
        assert_eq!(line.matches("=\"").count(), 25, "{line}");

        // Auto mTLS sends plaintext to the endpoint without a sidecar: no principals.
        let p = snap.parties(
            &conn("0.0.0.0_9080", "10.1.0.9:40000", None),
            Some("outbound|9080||ratings.bookinfo.svc.cluster.local"),
            Some("10.1.0.6:9080".parse().unwrap()),
        );
        let line = render_labels(&http(p, 503, Flags::from(Flag::UF)));
        assert!(line.contains(r#"source_principal="unknown""#), "{line}");
        assert!(
            line.contains(r#"destination_principal="unknown""#),
            "{line}"
        );
        assert!(line.contains(r#"destination_version="v2""#), "{line}");
        assert!(line.contains(r#"destination_cluster="unknown""#), "{line}");
        assert!(line.contains(r#"response_flags="UF""#), "{line}");
    }

    #[test]
    fn without_a_mesh_identity_nothing_is_mtls() {
        let snap = Snapshot::build(&config(ProxyKind::Sidecar), None);
        let p = snap.parties(
            &conn("0.0.0.0_9080", "10.1.0.9:40000", None),
            Some("outbound|9080||ratings.bookinfo.svc.cluster.local"),
            Some("10.1.0.5:9080".parse().unwrap()),
        );
        assert_eq!(&*p.source.f.principal, "unknown");
        assert_eq!(&*p.destination.f.principal, "unknown");
        assert_eq!(&*p.destination.f.app, "ratings");
    }

    #[test]
    fn inbound_sidecar_reports_as_destination_with_the_mtls_peer() {
        let snap = Snapshot::build(
            &config(ProxyKind::Sidecar),
            Some("spiffe://cluster.local/ns/bookinfo/sa/bookinfo-reviews"),
        );
        // The peer's IP is a known endpoint and its certificate matches it.
        let ratings = "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-ratings";
        let p = snap.parties(
            &conn(VIRTUAL_INBOUND, "10.1.0.5:51000", Some(ratings)),
            Some("outbound|9080||ratings.bookinfo.svc.cluster.local"),
            None,
        );
        assert_eq!(p.reporter, Reporter::Destination);
        assert_eq!(p.security, SecurityPolicy::MutualTls);
        assert_eq!(&*p.source.f.app, "ratings");
        assert_eq!(&*p.source.f.principal, ratings);
        assert_eq!(&*p.destination.f.workload, "reviews-v1");
        assert_eq!(
            &*p.destination.f.principal,
            "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-reviews"
        );

        // An unknown IP with a certificate: the namespace comes from the principal.
        let other = "spiffe://cluster.local/ns/shop/sa/cart";
        let p = snap.parties(
            &conn(VIRTUAL_INBOUND, "10.9.9.9:1", Some(other)),
            None,
            None,
        );
        assert_eq!(&*p.source.f.namespace, "shop");
        assert_eq!(&*p.source.f.workload, "unknown");
        assert_eq!(&*p.source.f.cluster, "Kubernetes");
        assert!(Arc::ptr_eq(
            &p.source,
            &snap.principals.read().unwrap()[other]
        ));
        assert_eq!(&*p.service.f.host, "unknown");

        // Plaintext from an unknown peer: nothing known, security `none`.
        let p = snap.parties(&conn(VIRTUAL_INBOUND, "127.0.0.1:1", None), None, None);
        assert_eq!(p.security, SecurityPolicy::None);
        assert_eq!(p.source, snap.unknown_peer);
        assert_eq!(&*p.destination.f.principal, "unknown");
    }

    #[test]
    fn gateways_report_as_source_even_on_virtual_inbound_named_listeners() {
        let snap = Snapshot::build(&config(ProxyKind::Gateway), None);
        let p = snap.parties(
            &conn(VIRTUAL_INBOUND, "10.1.0.5:1", None),
            Some("outbound|443||api.example.com"),
            Some("93.184.216.34:443".parse().unwrap()),
        );
        assert_eq!(p.reporter, Reporter::Source);
        assert_eq!(p.security, SecurityPolicy::Unknown);
        assert_eq!(&*p.service.f.name, "api.example.com");
        assert_eq!(&*p.service.f.namespace, "unknown");
        // The external endpoint has no labels: not indexed.
        assert_eq!(p.destination, snap.unknown_peer);
    }

    #[test]
    fn label_sets_from_two_snapshots_are_the_same_series() {
        let c = config(ProxyKind::Sidecar);
        let a = Snapshot::build(&c, None);
        let b = Snapshot::build(&c, None);
        let cn = conn("out", "10.1.0.9:1", None);
        let cl = Some("outbound|9080||ratings.bookinfo.svc.cluster.local");
        let up = Some("10.1.0.5:9080".parse().unwrap());
        let la = http(a.parties(&cn, cl, up), 200, Flags::default());
        let lb = http(b.parties(&cn, cl, up), 200, Flags::default());
        assert!(!Arc::ptr_eq(&la.parties.source, &lb.parties.source));
        assert_eq!(la, lb);
        assert_eq!(stable_hash(&la), stable_hash(&lb));
    }

    #[test]
    fn derivations() {
        assert_eq!(
            principal_namespace("spiffe://cluster.local/ns/default/sa/sleep"),
            Some("default")
        );
        assert_eq!(principal_namespace("spiffe://td/other"), None);
        let s = service_fields("reviews.bookinfo.svc.cluster.local");
        assert_eq!((&*s.name, &*s.namespace), ("reviews", "bookinfo"));
        let s = service_fields("PassthroughCluster");
        assert_eq!((&*s.name, &*s.namespace), ("PassthroughCluster", "unknown"));
        let mut node = crate::test_config().node;
        node.id = "istio-ingressgateway.istio-system".into();
        node.namespace = "istio-system".into();
        let p = node_peer(&node, None);
        assert_eq!(&*p.workload, "istio-ingressgateway");
        assert_eq!(&*p.app, "unknown");
        assert_eq!(&*p.canonical_service, "istio-ingressgateway");
        assert_eq!(&*p.canonical_revision, "latest");
        let mut h = HeaderMap::new();
        h.insert("grpc-status", "14".parse().unwrap());
        assert_eq!(grpc_status(&h), Some(14));
        h.insert("grpc-status", "x".parse().unwrap());
        assert_eq!(grpc_status(&h), None);
    }

    #[test]
    fn exposition_is_prometheus_text_with_istio_buckets() {
        let c = config(ProxyKind::Gateway);
        let m = Arc::new(Metrics::new(&c));
        let cn = Arc::new(conn("gw", "10.2.0.1:1", None));
        let mut r = m.request(&cn, true);
        let mut t = HeaderMap::new();
        t.insert("grpc-status", "0".parse().unwrap());
        r.trailers(&t);
        r.record(&HttpOutcome {
            status: 200,
            flags: Flags::default(),
            cluster: Some("outbound|9080||ratings.bookinfo.svc.cluster.local"),
            upstream: Some("10.1.0.5:9080".parse().unwrap()),
            duration: Duration::from_millis(3),
            request_bytes: 5,
            response_bytes: 1500,
        });
        m.config_applied();
        let out = m.render(&Upstreams::default(), Some(2));
        assert!(
            out.contains("# TYPE istio_requests_total counter\n"),
            "{out}"
        );
        assert!(out.contains("# TYPE istio_request_duration_milliseconds histogram\n"));
        assert!(!out.contains("# EOF") && !out.contains("# UNIT"), "{out}");
        let line = |prefix: &str| {
            out.lines()
                .find(|l| l.starts_with(prefix))
                .unwrap_or_else(|| panic!("{prefix} missing in {out}"))
                .to_string()
        };
        let req = line("istio_requests_total{");
        assert!(req.ends_with("} 1"), "{req}");
        assert!(req.contains(r#"request_protocol="grpc""#), "{req}");
        assert!(req.contains(r#"grpc_response_status="0""#), "{req}");
        assert!(line("istio_request_duration_milliseconds_bucket{").contains(r#"{le="0.5","#));
        assert!(line(r#"istio_request_duration_milliseconds_bucket{le="1","#).ends_with("} 0"));
        assert!(line(r#"istio_request_duration_milliseconds_bucket{le="5","#).ends_with("} 1"));
        assert!(
            line(r#"istio_request_duration_milliseconds_bucket{le="3600000","#).ends_with("} 1")
        );
        let bytes: Vec<&str> = out
            .lines()
            .filter(|l| l.starts_with("istio_response_bytes_bucket{"))
            .collect();
        assert_eq!(bytes.len(), 11, "{bytes:?}");
        let ends = |i: usize, le: &str, n: &str| {
            assert!(
                bytes[i].contains(&format!("{{le=\"{le}\",")) && bytes[i].ends_with(n),
                "{}",
                bytes[i]
            )
        };
        ends(3, "1000", "} 0");
        ends(4, "10000", "} 1");
        ends(9, "1000000000", "} 1");
        assert!(out.contains("trellis_config_reloads_total{result=\"applied\"} 1\n"));
        assert!(out.contains("trellis_downstream_connections_active 2\n"));
    }

    #[test]
    fn tcp_connections_count_opened_closed_and_bytes() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let c = config(ProxyKind::Gateway);
        let m = Metrics::new(&c);
        let cn = conn("tcp", "10.2.0.1:1", None);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let (a, mut b) = tokio::io::duplex(64);
            let mut t = m.tcp(&cn);
            t.route("outbound|443||api.example.com");
            t.upstream("93.184.216.34:443".parse().unwrap());
            t.received(7);
            let mut io = t.open(a);
            b.write_all(b"hello").await.unwrap();
            let mut buf = [0u8; 5];
            io.read_exact(&mut buf).await.unwrap();
            io.write_all(b"abc").await.unwrap();
            t.close(Flags::default());
        });
        m.tcp_refused(&cn, Flags::from(Flag::NR), 0);
        let out = m.render(&Upstreams::default(), None);
        let value = |prefix: &str, flags: &str| -> String {
            out.lines()
                .find(|l| l.starts_with(prefix) && l.contains(flags))
                .unwrap_or_else(|| panic!("{prefix} {flags} missing in {out}"))
                .rsplit(' ')
                .next()
                .unwrap()
                .to_string()
        };
        let ok = r#"response_flags="-""#;
        assert_eq!(value("istio_tcp_received_bytes_total{", ok), "12");
        assert_eq!(value("istio_tcp_sent_bytes_total{", ok), "3");
        assert_eq!(value("istio_tcp_connections_opened_total{", ok), "1");
        assert_eq!(value("istio_tcp_connections_closed_total{", ok), "1");
        let nr = r#"response_flags="NR""#;
        assert_eq!(value("istio_tcp_connections_opened_total{", nr), "1");
        assert_eq!(value("istio_tcp_connections_closed_total{", nr), "1");
        let l = out
            .lines()
            .find(|l| l.starts_with("istio_tcp_connections_closed_total{") && l.contains(nr))
            .unwrap();
        assert!(l.contains(r#"destination_service="unknown""#), "{l}");
        assert!(l.contains(r#"request_protocol="tcp""#), "{l}");
        assert!(!l.contains("response_code"), "{l}");
    }

    #[test]
    fn counter_names_get_total_in_help_and_type() {
        let om = "# HELP a_bytes A.\n# TYPE a_bytes counter\n# UNIT a_bytes bytes\na_bytes_total 3\n# HELP h H.\n# TYPE h histogram\nh_sum 1.0\nh_count 1\nh_bucket{le=\"1.0\",k=\"v\"} 1\nh_bucket{le=\"0.5\"} 0\n# EOF\n";
        assert_eq!(
            openmetrics_to_text(om),
            "# HELP a_bytes_total A.\n# TYPE a_bytes_total counter\na_bytes_total 3\n# HELP h H.\n# TYPE h histogram\nh_sum 1.0\nh_count 1\nh_bucket{le=\"1\",k=\"v\"} 1\nh_bucket{le=\"0.5\"} 0\n"
        );
    }
}
