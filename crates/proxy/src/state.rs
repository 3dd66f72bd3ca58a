//! `ProxyState`: what every connection shares (the current config, swapped atomically, and the
//! runtime upstream state), and `ConnectionInfo`: what a listener knows about one connection.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use trellis_model::config::{ProxyConfig, Scheme};

use crate::metrics::Metrics;
use crate::security::{JwksCache, SecurityRuntime};
use crate::telemetry::{Exporters, Tracers};
use crate::upstream::connect::MeshTlsProvider;
use crate::upstream::Upstreams;

/// Shared by all connections of one proxy.
pub struct ProxyState {
    /// The config in force. Readers `load()` it once per request; a reload `store()`s a new one
    /// without disturbing requests in flight.
    pub config: ArcSwap<ProxyConfig>,
    /// The security runtime of the config in force (JWT authenticator), with that config:
    /// requests load this once and use its `config`, so routing and policies always come
    /// from the same snapshot.
    pub security: ArcSwap<SecurityRuntime>,
    /// Remote JWKS, shared by every config snapshot (keys survive reloads).
    pub jwks: JwksCache,
    /// Runtime state of clusters (pools, LB, outlier ejections), keyed by cluster name.
    pub upstreams: Upstreams,
    /// The proxy's mesh identity: client TLS for Istio mutual TLS to upstreams
    /// (`UpstreamTls::IstioMutual`) and server TLS for inbound mesh mTLS chains, installed once
    /// (`RuntimeOptions::mesh_tls`). Without one, such clusters are dialled in plaintext (with
    /// a warning per cluster) and mesh mTLS chains refuse every handshake.
    pub mesh_tls: OnceLock<Arc<dyn MeshTlsProvider>>,
    /// Set when the proxy starts draining (shutdown): connections should finish the request
    /// in flight and close (HTTP/1.1 `Connection: close`, HTTP/2 GOAWAY).
    pub drain: Drain,
    /// Istio's standard metrics; their labels follow the config in force (`install`).
    pub metrics: Arc<Metrics>,
    /// The tracers of the config in force (`install`).
    pub tracers: ArcSwap<Tracers>,
    /// Span queues to collectors, kept across reloads.
    pub exporters: Exporters,
}

impl ProxyState {
    pub fn new(config: ProxyConfig) -> Arc<Self> {
        Self::with_jwks(config, JwksCache::default())
    }

    /// A state whose remote key sets are fetched by `jwks`.
    pub fn with_jwks(config: ProxyConfig, jwks: JwksCache) -> Arc<Self> {
        let config = Arc::new(config);
        let security = SecurityRuntime::new(config.clone(), &jwks);
        let metrics = Arc::new(Metrics::new(&config));
        let exporters = Exporters::default();
        let tracers = ArcSwap::from_pointee(Tracers::new(&config, &exporters));
        Arc::new(ProxyState {
            config: ArcSwap::new(config),
            security: ArcSwap::from_pointee(security),
            jwks,
            upstreams: Upstreams::default(),
            mesh_tls: OnceLock::new(),
            drain: Drain::default(),
            metrics,
            tracers,
            exporters,
        })
    }

    /// Installs a new config; upstream state for clusters that still exist unchanged is
    /// kept, the rest is dropped (in-flight requests finish on what they hold).
    pub fn swap(&self, config: ProxyConfig) {
        self.upstreams.sync(&config);
        let config = Arc::new(config);
        let security = Arc::new(SecurityRuntime::new(config.clone(), &self.jwks));
        self.install(config, security);
    }

    /// Makes `config` (and its security runtime, built for it) the one in force.
    pub fn install(&self, config: Arc<ProxyConfig>, security: Arc<SecurityRuntime>) {
        let identity = self.mesh_tls.get().map(|m| m.identity());
        self.metrics.observe_config(&config, identity.as_deref());
        // Tracers read the tracing settings, the node (tags, service name) and the mesh
        // (trust domain tag): rebuilt only when one of them changed.
        let current = self.config.load();
        if config.tracing != current.tracing
            || config.node != current.node
            || config.mesh != current.mesh
        {
            self.tracers
                .store(Arc::new(Tracers::new(&config, &self.exporters)));
        }
        self.config.store(config);
        self.security.store(security);
    }
}

/// Facts about one downstream connection, from the listener and TLS layer.
#[derive(Clone, Debug)]
pub struct ConnectionInfo {
    /// Listener name (for logs, metrics).
    pub listener: Arc<str>,
    /// Port in the config's terms (the Gateway server port, the service port), which routing
    /// matches on even when the socket was remapped for local runs.
    pub listener_port: u16,
    pub local_addr: SocketAddr,
    pub peer_addr: SocketAddr,
    /// Route table for HTTP chains.
    pub route_table: Arc<str>,
    pub scheme: Scheme,
    /// SNI the client sent, when TLS was terminated, or (TLS passthrough) when the listener
    /// peeked the ClientHello without consuming it. When `None` on a passthrough chain,
    /// `tcp::proxy_tls_passthrough` reads the ClientHello itself and replays it upstream.
    pub sni: Option<String>,
    /// SPIFFE identity of the peer (mTLS), when known.
    pub peer_identity: Option<String>,
    /// SHA-256 of the peer's leaf certificate (DER), lowercase hex, when it sent one
    /// (`x-forwarded-client-cert` `Hash=`).
    pub peer_cert_sha256: Option<Arc<str>>,
}

impl ConnectionInfo {
    /// Where the client meant to connect: used by original-destination clusters and TCP
    /// routes' `destinationSubnets`. In local mode that is the address it dialled
    /// (`local_addr`); transparent capture (iptables REDIRECT) will read `SO_ORIGINAL_DST`
    /// into `local_addr` at accept time, so this stays the single seam.
    pub fn original_dst(&self) -> SocketAddr {
        self.local_addr
    }
}

/// The proxy-wide drain signal: set once, when a graceful shutdown begins.
#[derive(Debug)]
pub struct Drain(tokio::sync::watch::Sender<bool>);

impl Default for Drain {
    fn default() -> Self {
        Drain(tokio::sync::watch::Sender::new(false))
    }
}

impl Drain {
    /// Starts draining (idempotent).
    pub fn start(&self) {
        self.0.send_replace(true);
    }

    pub fn is_draining(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once draining has started (at once if it already has).
    pub async fn started(&self) {
        let mut rx = self.0.subscribe();
        // The sender lives as long as `self`, so this cannot fail while borrowed.
        let _ = rx.wait_for(|draining| *draining).await;
    }
}
