//! Clusters at runtime: endpoint discovery (EDS, DNS, original destination), endpoint
//! selection (load balancing), connection pools, circuit breaking and outlier detection.
//!
//! `Upstreams` holds one [`ClusterRuntime`] per cluster name, created on first use from the
//! config in force, kept across reloads while the cluster's definition is unchanged and
//! dropped when it changes or disappears. Per-endpoint state ([`Host`]: pools, in-flight
//! count, outlier state) is keyed by address and survives endpoint-set changes.

pub mod connect;
pub mod lb;
pub mod outlier;
pub mod pool;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use trellis_model::config::{
    Cluster, ClusterEndpoints, Discovery, EndpointAddress, LbPolicy, ProxyConfig, UpstreamTls,
};

use self::connect::{Alpn, BoxIo, ConnectError, MeshTlsProvider, TlsOrigination};
use self::lb::{Algorithm, Candidate, HashKind, Schedule};
use self::outlier::{Outcome, OutlierState};
use self::pool::{Checkout, H1Conn, Pools, Proto};

/// How long resolved DNS endpoints are trusted.
const DNS_TTL: Duration = Duration::from_secs(30);

/// Runtime state of every cluster, keyed by cluster name. Lookups are lock-free (an atomic
/// snapshot of the map); creating or dropping a runtime takes a short lock.
#[derive(Default)]
pub struct Upstreams {
    map: ArcSwap<HashMap<String, Entry>>,
    write: Mutex<()>,
}

#[derive(Clone)]
struct Entry {
    /// The definition last seen for this runtime (pointer identity for the fast path).
    def: Arc<Cluster>,
    rt: Arc<ClusterRuntime>,
}

impl Upstreams {
    /// The runtime of cluster `name` in `config`; `None` when the config has no such cluster.
    /// Fast path: one atomic load and a pointer comparison. A definition that is equal but
    /// was rebuilt (a reload) is compared once, then remembered by pointer.
    pub fn get(&self, config: &ProxyConfig, name: &str) -> Option<Arc<ClusterRuntime>> {
        let def = config.clusters.get(name)?;
        if let Some(e) = self.map.load().get(name) {
            if Arc::ptr_eq(&e.def, def) {
                return Some(e.rt.clone());
            }
        }
        let _w = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.map.load_full();
        let rt = match current.get(name) {
            Some(e) if Arc::ptr_eq(&e.def, def) => return Some(e.rt.clone()),
            Some(e) if *e.rt.config == **def => e.rt.clone(),
            _ => Arc::new(ClusterRuntime::new(def.clone())),
        };
        let mut next = (*current).clone();
        next.insert(
            name.to_string(),
            Entry {
                def: def.clone(),
                rt: rt.clone(),
            },
        );
        self.map.store(Arc::new(next));
        Some(rt)
    }

    /// After a reload: drops runtimes whose cluster disappeared or changed definition, keeps
    /// the others (pools, ejections and counters carry over).
    pub fn sync(&self, config: &ProxyConfig) {
        let _w = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.map.load_full();
        let next: HashMap<_, _> = current
            .iter()
            .filter_map(|(name, e)| {
                let def = config.clusters.get(name)?;
                (*e.rt.config == **def).then(|| {
                    (
                        name.clone(),
                        Entry {
                            def: def.clone(),
                            rt: e.rt.clone(),
                        },
                    )
                })
            })
            .collect();
        self.map.store(Arc::new(next));
    }

    /// Every live cluster runtime (for admin `/clusters`).
    pub fn clusters(&self) -> Vec<Arc<ClusterRuntime>> {
        let mut v: Vec<_> = self.map.load().values().map(|e| e.rt.clone()).collect();
        v.sort_by(|a, b| a.config.name.cmp(&b.config.name));
        v
    }
}

/// One endpoint at runtime.
pub struct Host {
    pub addr: SocketAddr,
    weight: AtomicU32,
    /// The endpoint runs a sidecar (auto mTLS sends Istio mTLS only to those).
    mesh: AtomicBool,
    active: AtomicU64,
    pub outlier: OutlierState,
    pools: Pools,
}

impl Host {
    fn new(addr: SocketAddr, weight: u32) -> Self {
        Host {
            addr,
            weight: AtomicU32::new(weight.max(1)),
            mesh: AtomicBool::new(false),
            active: AtomicU64::new(0),
            outlier: OutlierState::default(),
            pools: Pools::default(),
        }
    }

    pub fn active_requests(&self) -> u64 {
        self.active.load(Ordering::Relaxed)
    }

    /// Whether the endpoint is in the mesh (has a sidecar).
    pub fn is_mesh(&self) -> bool {
        self.mesh.load(Ordering::Relaxed)
    }
}

impl Candidate for Arc<Host> {
    fn addr(&self) -> SocketAddr {
        self.addr
    }
    fn weight(&self) -> u32 {
        self.weight.load(Ordering::Relaxed)
    }
    fn active(&self) -> u64 {
        self.active.load(Ordering::Relaxed)
    }
    fn unavailable(&self) -> bool {
        self.outlier.is_ejected()
    }
}

/// The endpoints of a cluster at one moment, with their precomputed LB schedule.
pub struct EndpointSet {
    /// Ordered by priority (locality failover), best first.
    pub hosts: Vec<Arc<Host>>,
    schedule: Schedule,
    /// With several priorities: each level's hosts (a range of `hosts`) and schedule.
    levels: Vec<(std::ops::Range<usize>, Schedule)>,
    /// Identity of the `ClusterEndpoints` this was built from (pointer), 0 for none.
    source: usize,
    resolved_at: Instant,
    has_dns: bool,
}

/// Status of one endpoint (admin `/clusters`).
#[derive(Clone, Debug, serde::Serialize)]
pub struct EndpointStatus {
    pub address: SocketAddr,
    pub weight: u32,
    pub active_requests: u64,
    pub ejected: bool,
    pub times_ejected: u32,
}

/// Counters of one cluster.
#[derive(Debug, Default)]
pub struct ClusterStats {
    pub requests: AtomicU64,
    pub overflow: AtomicU64,
    pub connect_failures: AtomicU64,
    pub ejections: AtomicU64,
    pub retries: AtomicU64,
    pub connections_opened: AtomicU64,
}

/// A cluster at runtime.
pub struct ClusterRuntime {
    pub config: Arc<Cluster>,
    set: ArcSwap<EndpointSet>,
    refresh: tokio::sync::Mutex<()>,
    hosts: Mutex<HashMap<SocketAddr, Arc<Host>>>,
    rr: AtomicUsize,
    /// HTTP/1.1 connections in use (tcp.maxConnections).
    h1_slots: Arc<Semaphore>,
    pending: AtomicU32,
    active_requests: AtomicU64,
    active_retries: AtomicU32,
    tls: Option<TlsOrigination>,
    warned: AtomicBool,
    pub stats: ClusterStats,
}

/// Why no connection could be had.
#[derive(Debug, thiserror::Error)]
pub enum CheckoutError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("handshake: {0}")]
    Handshake(#[from] hyper::Error),
}

/// A request's claim on the cluster's circuit breakers; released on drop.
pub struct Admission {
    cluster: Arc<ClusterRuntime>,
    _h1: Option<OwnedSemaphorePermit>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.cluster.active_requests.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A retry's claim on `maxRetries`.
pub struct RetryGuard(Arc<ClusterRuntime>);

impl Drop for RetryGuard {
    fn drop(&mut self) {
        self.0.active_retries.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A request in flight on one endpoint: counts toward least-request, and holds the
/// HTTP/1.1 connection until the response body is done.
pub struct InFlight {
    host: Arc<Host>,
    conn: Option<H1Conn>,
    max_requests: u32,
}

impl InFlight {
    /// The response was read to the end: the connection may serve another request.
    pub fn complete(mut self) {
        if let Some(c) = self.conn.take() {
            self.host.pools.release(c, self.max_requests);
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.host.active.fetch_sub(1, Ordering::Relaxed);
    }
}

impl ClusterRuntime {
    pub fn new(config: Arc<Cluster>) -> Self {
        let tls = match TlsOrigination::from_config(&config.tls, &config.service.host) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(cluster = %config.name, "upstream TLS settings unusable: {e}");
                None
            }
        };
        let slots = (config.pool.max_connections as usize).min(Semaphore::MAX_PERMITS);
        ClusterRuntime {
            set: ArcSwap::from_pointee(EndpointSet {
                hosts: Vec::new(),
                schedule: Schedule::default(),
                levels: Vec::new(),
                source: usize::MAX,
                resolved_at: Instant::now(),
                has_dns: false,
            }),
            refresh: tokio::sync::Mutex::new(()),
            hosts: Mutex::new(HashMap::new()),
            rr: AtomicUsize::new(0),
            h1_slots: Arc::new(Semaphore::new(slots)),
            pending: AtomicU32::new(0),
            active_requests: AtomicU64::new(0),
            active_retries: AtomicU32::new(0),
            tls,
            warned: AtomicBool::new(false),
            stats: ClusterStats::default(),
            config,
        }
    }

    fn host(&self, addr: SocketAddr, weight: u32, mesh: bool) -> Arc<Host> {
        let mut hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        let h = hosts
            .entry(addr)
            .or_insert_with(|| Arc::new(Host::new(addr, weight)));
        h.weight.store(weight.max(1), Ordering::Relaxed);
        h.mesh.store(mesh, Ordering::Relaxed);
        h.clone()
    }

    fn hash_kind(&self) -> Option<HashKind> {
        match &self.config.lb {
            LbPolicy::ConsistentHash(c) if c.maglev => Some(HashKind::Maglev),
            LbPolicy::ConsistentHash(c) => Some(HashKind::Ring {
                minimum_ring_size: if c.minimum_ring_size == 0 {
                    1024
                } else {
                    c.minimum_ring_size
                },
            }),
            _ => None,
        }
    }

    /// The current endpoint set, rebuilt when the config's endpoints changed or DNS answers
    /// are older than their TTL. `original_dst` serves `Discovery::OriginalDst` clusters.
    pub async fn endpoints(
        &self,
        config: &ProxyConfig,
        original_dst: SocketAddr,
    ) -> Arc<EndpointSet> {
        if self.config.discovery == Discovery::OriginalDst
            || self.config.lb == LbPolicy::Passthrough
        {
            let host = self.host(original_dst, 1, false);
            let hosts = vec![host];
            return Arc::new(EndpointSet {
                schedule: Schedule::new(&hosts, None),
                levels: Vec::new(),
                hosts,
                source: 0,
                resolved_at: Instant::now(),
                has_dns: false,
            });
        }
        let eps = config.endpoints.get(&self.config.name);
        let source = eps.map_or(0, |e| Arc::as_ptr(e) as usize);
        let cur = self.set.load_full();
        if cur.source == source && (!cur.has_dns || cur.resolved_at.elapsed() < DNS_TTL) {
            return cur;
        }
        // One refresh at a time; others keep using the current set if it has hosts.
        let _guard = match self.refresh.try_lock() {
            Ok(g) => g,
            Err(_) if !cur.hosts.is_empty() && cur.source == source => return cur,
            Err(_) => self.refresh.lock().await,
        };
        let cur = self.set.load_full();
        if cur.source == source && (!cur.has_dns || cur.resolved_at.elapsed() < DNS_TTL) {
            return cur;
        }
        let built = self.build_set(eps, source).await;
        let built = match built {
            Some(s) => Arc::new(s),
            // DNS failed: keep serving the previous answer (Envoy keeps the last good hosts).
            None if cur.source == source => {
                return cur;
            }
            None => Arc::new(EndpointSet {
                hosts: Vec::new(),
                schedule: Schedule::default(),
                levels: Vec::new(),
                source,
                resolved_at: Instant::now(),
                has_dns: true,
            }),
        };
        self.set.store(built.clone());
        // Forget state of endpoints that left.
        let mut hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        hosts.retain(|a, _| built.hosts.iter().any(|h| h.addr == *a));
        built
    }

    async fn build_set(
        &self,
        eps: Option<&Arc<ClusterEndpoints>>,
        source: usize,
    ) -> Option<EndpointSet> {
        let mut addrs: Vec<(SocketAddr, u32, bool, u32)> = Vec::new();
        let mut has_dns = false;
        let mut dns_failed = false;
        for ep in eps.map(|e| e.endpoints.as_slice()).unwrap_or_default() {
            match &ep.address {
                EndpointAddress::Socket(a) => addrs.push((*a, ep.weight, ep.mesh, ep.priority)),
                EndpointAddress::Dns { host, port } => {
                    has_dns = true;
                    let lookup = tokio::net::lookup_host((host.as_str(), *port));
                    match tokio::time::timeout(Duration::from_secs(5), lookup).await {
                        Ok(Ok(it)) => {
                            // STRICT_DNS: every address is an endpoint.
                            for a in it {
                                if !addrs.iter().any(|(x, ..)| *x == a) {
                                    addrs.push((a, ep.weight, ep.mesh, ep.priority));
                                }
                            }
                        }
                        Ok(Err(e)) => {
                            tracing::warn!(cluster = %self.config.name, "DNS lookup of {host} failed: {e}");
                            dns_failed = true;
                        }
                        Err(_) => {
                            tracing::warn!(cluster = %self.config.name, "DNS lookup of {host} timed out");
                            dns_failed = true;
                        }
                    }
                }
            }
        }
        if dns_failed && addrs.is_empty() {
            return None;
        }
        addrs.sort_by_key(|(.., priority)| *priority);
        let mut levels = Vec::new();
        let mut start = 0;
        for i in 1..=addrs.len() {
            if i == addrs.len() || addrs[i].3 != addrs[start].3 {
                levels.push(start..i);
                start = i;
            }
        }
        let hosts: Vec<Arc<Host>> = addrs
            .into_iter()
            .map(|(a, w, m, _)| self.host(a, w, m))
            .collect();
        let levels = if levels.len() > 1 {
            levels
                .into_iter()
                .map(|r| {
                    let schedule = Schedule::new(&hosts[r.clone()], self.hash_kind());
                    (r, schedule)
                })
                .collect()
        } else {
            Vec::new()
        };
        Some(EndpointSet {
            schedule: Schedule::new(&hosts, self.hash_kind()),
            levels,
            hosts,
            source,
            resolved_at: Instant::now(),
            has_dns,
        })
    }

    /// Picks an endpoint by the cluster's LB policy; `hash` is the consistent-hash key of the
    /// request (if the policy hashes and the key is present); `avoid` lists hosts already
    /// tried (retry on another host).
    pub fn pick(
        &self,
        set: &EndpointSet,
        hash: Option<u64>,
        avoid: &[SocketAddr],
    ) -> Option<Arc<Host>> {
        let algorithm = match &self.config.lb {
            LbPolicy::LeastRequest => Algorithm::LeastRequest,
            LbPolicy::RoundRobin => Algorithm::RoundRobin,
            LbPolicy::Random | LbPolicy::Passthrough => Algorithm::Random,
            LbPolicy::ConsistentHash(_) => Algorithm::Hash(hash),
        };
        let min_health = self
            .config
            .outlier
            .as_ref()
            .map_or(0, |o| o.min_health_percent);
        if set.levels.is_empty() {
            let panic = lb::in_panic(&set.hosts, min_health);
            let i = lb::choose_among(
                &set.hosts,
                &set.schedule,
                algorithm,
                &self.rr,
                avoid,
                !panic,
            )?;
            return Some(set.hosts[i].clone());
        }
        // Locality failover: a level by Envoy's priority load, then the others in order.
        let counts = set.levels.iter().map(|(r, _)| {
            let hosts = &set.hosts[r.clone()];
            (
                hosts.iter().filter(|h| !h.unavailable()).count(),
                hosts.len(),
            )
        });
        let first = lb::pick_level(counts, rand::random_range(0..100)).unwrap_or(0);
        let order = std::iter::once(first).chain((0..set.levels.len()).filter(|&l| l != first));
        for l in order {
            let (range, schedule) = &set.levels[l];
            let hosts = &set.hosts[range.clone()];
            let panic = lb::in_panic(hosts, min_health);
            if let Some(i) = lb::choose_among(hosts, schedule, algorithm, &self.rr, avoid, !panic) {
                return Some(hosts[i].clone());
            }
        }
        None
    }

    /// Claims circuit-breaker capacity for one request: `http2MaxRequests` (all requests),
    /// and for HTTP/1.1 a connection slot (`maxConnections`) or, when all are busy, a place
    /// in the queue (`http1MaxPendingRequests`). `Err` = overflow (503 UO).
    pub async fn admit(self: &Arc<Self>, proto: Proto) -> Result<Admission, ()> {
        let pool = &self.config.pool;
        let active = self.active_requests.fetch_add(1, Ordering::Relaxed);
        let mut admission = Admission {
            cluster: self.clone(),
            _h1: None,
        };
        if active >= u64::from(pool.http2_max_requests) {
            self.stats.overflow.fetch_add(1, Ordering::Relaxed);
            return Err(());
        }
        if proto == Proto::Http2 {
            return Ok(admission);
        }
        let permit = match self.h1_slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                let queued = self.pending.fetch_add(1, Ordering::Relaxed);
                if queued >= pool.http1_max_pending_requests {
                    self.pending.fetch_sub(1, Ordering::Relaxed);
                    self.stats.overflow.fetch_add(1, Ordering::Relaxed);
                    return Err(());
                }
                let p = self.h1_slots.clone().acquire_owned().await;
                self.pending.fetch_sub(1, Ordering::Relaxed);
                p.map_err(|_| ())?
            }
        };
        admission._h1 = Some(permit);
        Ok(admission)
    }

    /// Claims a retry under `maxRetries`; `None` = retry budget exhausted.
    pub fn try_retry(self: &Arc<Self>) -> Option<RetryGuard> {
        let n = self.active_retries.fetch_add(1, Ordering::Relaxed);
        let guard = RetryGuard(self.clone());
        if n >= self.config.pool.max_retries {
            self.stats.overflow.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        self.stats.retries.fetch_add(1, Ordering::Relaxed);
        Some(guard)
    }

    async fn dial(
        &self,
        host: &Host,
        alpn: Alpn,
        mesh: Option<&Arc<dyn MeshTlsProvider>>,
    ) -> Result<BoxIo, ConnectError> {
        self.stats
            .connections_opened
            .fetch_add(1, Ordering::Relaxed);
        let mut mesh_config = None;
        let mut mesh_sni = None;
        if let UpstreamTls::IstioMutual {
            expected_identities,
            sni,
        } = &self.config.tls
        {
            // Auto mTLS: only endpoints with a sidecar get Istio mTLS (Envoy's transport
            // socket match); a DestinationRule ISTIO_MUTUAL applies to every endpoint.
            if !self.config.auto_mtls || host.is_mesh() {
                match mesh {
                    Some(m) => match m.client_config(expected_identities, alpn) {
                        Some(c) => {
                            mesh_config = Some(c);
                            mesh_sni = sni.as_deref();
                        }
                        None => {
                            self.stats.connect_failures.fetch_add(1, Ordering::Relaxed);
                            return Err(ConnectError::Tls(std::io::Error::other(
                                "Istio mutual TLS required but the workload certificate is not loaded yet",
                            )));
                        }
                    },
                    None => {
                        if !self.warned.swap(true, Ordering::Relaxed) {
                            tracing::warn!(
                                cluster = %self.config.name,
                                "cluster asks for Istio mutual TLS but this proxy has no mesh identity \
                                 (start it with --ca-dir): connecting in plaintext"
                            );
                        }
                    }
                }
            }
        }
        let r = connect::connect(
            host.addr,
            self.config.connect_timeout,
            self.config.pool.tcp_keepalive,
            self.tls.as_ref().map(|t| (t, alpn)),
            mesh_config,
            mesh_sni,
        )
        .await;
        if r.is_err() {
            self.stats.connect_failures.fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    /// A raw connection to `host` (TCP proxying), with the cluster's TLS if any.
    pub async fn connect_raw(
        &self,
        host: &Host,
        mesh: Option<&Arc<dyn MeshTlsProvider>>,
    ) -> Result<BoxIo, ConnectError> {
        self.dial(host, Alpn::None, mesh).await
    }

    /// A connection to `host` able to carry one request of `proto`; `fresh` asks for a new,
    /// unshared HTTP/1.1 connection (upgrades). Counts the request as in flight on the host.
    pub async fn checkout(
        &self,
        host: &Arc<Host>,
        proto: Proto,
        fresh: bool,
        mesh: Option<&Arc<dyn MeshTlsProvider>>,
    ) -> Result<(Checkout, InFlightSlot), CheckoutError> {
        host.active.fetch_add(1, Ordering::Relaxed);
        let slot = InFlightSlot(Some(InFlight {
            host: host.clone(),
            conn: None,
            max_requests: self.config.pool.max_requests_per_connection,
        }));
        let c = match proto {
            Proto::Http2 => Checkout::H2(
                host.pools
                    .h2(|| async {
                        self.dial(host, Alpn::Http2, mesh)
                            .await
                            .map_err(CheckoutError::from)
                    })
                    .await?,
            ),
            Proto::Http1 => {
                let idle = if fresh {
                    None
                } else {
                    host.pools.take_idle_h1(self.config.pool.idle_timeout).await
                };
                match idle {
                    Some(c) => Checkout::H1(c),
                    None => {
                        let io = self.dial(host, Alpn::Http1, mesh).await?;
                        Checkout::H1(Pools::handshake_h1(io).await?)
                    }
                }
            }
        };
        Ok((c, slot))
    }

    /// Feeds outlier detection with the outcome of an attempt on `host`.
    pub fn record(&self, set: &EndpointSet, host: &Host, outcome: Outcome) {
        let Some(policy) = &self.config.outlier else {
            return;
        };
        if host.outlier.record(policy, outcome) {
            let now = outlier::now_ms();
            let ejected = set
                .hosts
                .iter()
                .filter(|h| h.outlier.is_ejected_at(now))
                .count();
            if outlier::ejection_allowed(policy, ejected, set.hosts.len()) {
                let d = host.outlier.eject(policy);
                self.stats.ejections.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    cluster = %self.config.name,
                    endpoint = %host.addr,
                    "outlier detection ejected endpoint for {d:?} ({outcome:?})"
                );
            }
        }
    }

    /// Endpoints with health and load (admin `/clusters`).
    pub fn endpoint_status(&self) -> Vec<EndpointStatus> {
        self.set
            .load()
            .hosts
            .iter()
            .map(|h| EndpointStatus {
                address: h.addr,
                weight: h.weight.load(Ordering::Relaxed),
                active_requests: h.active_requests(),
                ejected: h.outlier.is_ejected(),
                times_ejected: h.outlier.times_ejected(),
            })
            .collect()
    }

    pub fn active_requests(&self) -> u64 {
        self.active_requests.load(Ordering::Relaxed)
    }
}

/// Holds the in-flight claim of an attempt until the response is done.
pub struct InFlightSlot(Option<InFlight>);

impl InFlightSlot {
    /// Attaches the HTTP/1.1 connection the response arrives on.
    pub fn with_conn(mut self, conn: Option<H1Conn>) -> Self {
        if let Some(f) = self.0.as_mut() {
            f.conn = conn;
        }
        self
    }

    /// The response body was read to the end.
    pub fn complete(mut self) {
        if let Some(f) = self.0.take() {
            f.complete();
        }
    }

    pub fn host(&self) -> Option<&Arc<Host>> {
        self.0.as_ref().map(|f| &f.host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use trellis_model::config::*;

    fn cluster(name: &str, lb: LbPolicy) -> Arc<Cluster> {
        Arc::new(Cluster {
            name: name.into(),
            service: ServiceKey {
                host: "svc".into(),
                port: 80,
            },
            subset: None,
            discovery: Discovery::Eds,
            protocol: UpstreamProtocol::Http1,
            lb,
            connect_timeout: Duration::from_secs(1),
            pool: ConnectionPool::default(),
            outlier: None,
            tls: UpstreamTls::None,
            auto_mtls: false,
            destination_rule: None,
        })
    }

    #[tokio::test]
    async fn endpoint_sets_follow_config() {
        let c = cluster("c", LbPolicy::RoundRobin);
        let ep = |port| Endpoint {
            address: EndpointAddress::Socket(SocketAddr::from(([127, 0, 0, 1], port))),
            labels: BTreeMap::new(),
            weight: 1,
            identity: None,
            mesh: false,
            locality: None,
            priority: 0,
        };
        let rt = ClusterRuntime::new(c);
        let mut cfg = crate::test_config();
        cfg.endpoints.insert(
            "c".into(),
            Arc::new(ClusterEndpoints {
                endpoints: vec![ep(1), ep(2)],
            }),
        );
        let od = SocketAddr::from(([127, 0, 0, 1], 9));
        let set = rt.endpoints(&cfg, od).await;
        assert_eq!(set.hosts.len(), 2);
        let a = rt.pick(&set, None, &[]).unwrap().addr;
        let b = rt.pick(&set, None, &[]).unwrap().addr;
        assert_ne!(a, b, "round robin alternates");
        cfg.endpoints.insert(
            "c".into(),
            Arc::new(ClusterEndpoints {
                endpoints: vec![ep(2)],
            }),
        );
        let set = rt.endpoints(&cfg, od).await;
        assert_eq!(set.hosts.len(), 1);
    }
}
