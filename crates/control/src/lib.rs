//! Trellis control plane: reads config from files, directories and kustomize overlays,
//! watches them, validates and analyzes every change, keeps a versioned snapshot, pushes it
//! to proxies (per-proxy scoped; endpoints apart from everything else; ACK/NACK tracked),
//! signs workload certificates, and reports sync status and metrics.
//!
//! Layout:
//! - `source`: load + verdict (what rejects a change).
//! - `snapshot`: immutable versioned snapshots, change lists, scoping indexes.
//! - `scope`: which resources a proxy receives.
//! - `server`: the gRPC service (`trellis.v1.MeshConfig`): config streams, CA, status.
//! - `status`: sync state per proxy and type (the `proxy-status` JSON).
//! - `http`: metrics and debug endpoints; `metrics`: the Prometheus registry.
//! - `watch`: file watching.
//!
//! ```no_run
//! # async fn f() -> Result<(), trellis_control::StartError> {
//! use trellis_control::{ControlPlane, ControlPlaneOptions};
//! let cp = ControlPlane::start(ControlPlaneOptions {
//!     kustomize: vec!["examples/alphintra/infra/kubernetes/istio/overlays/dev".into()],
//!     grpc_listen: "127.0.0.1:0".parse().unwrap(),
//!     metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
//!     bootstrap_token: Some("secret".into()),
//!     ..ControlPlaneOptions::default()
//! })
//! .await?;
//! println!("proxies connect to {}", cp.grpc_addr());
//! cp.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! Security of the channels: the plaintext gRPC port (Istio's 15010) is meant for loopback
//! bootstrap: streams and CSRs there are authenticated with the bootstrap token when one is
//! set (and certificates are only issued then). The mTLS port (Istio's 15012, `mtls`) serves
//! the same service over TLS 1.3 with the control plane's own certificate
//! (`spiffe://<td>/ns/<root ns>/sa/istiod`) and requires a client certificate from the mesh
//! CA: there a proxy may only stream config for, or renew the certificate of, a workload whose
//! service account its certificate names. The identity in a certificate is always the
//! workload's service account from the config, never what the CSR asks for.

mod core;
mod http;
mod metrics;
mod mtls;
pub mod scope;
mod server;
pub mod snapshot;
pub mod source;
pub mod status;
mod watch;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng as _;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch as wch};
use tokio::task::JoinHandle;
use trellis_identity::CertificateAuthority;
use trellis_protocol::MeshConfigServer;

use crate::core::Core;
pub use crate::snapshot::Snapshot;
pub use crate::source::{ConfigError, RejectedMessage, Sources};
pub use crate::status::{
    ControlPlaneStatus, NackInfo, PendingChange, ProxyStatus, SyncState, TypeStatus,
};

/// How to run a control plane.
#[derive(Clone, Debug)]
pub struct ControlPlaneOptions {
    /// Files or directories (recursive; a directory holding a kustomization is rendered).
    pub inputs: Vec<PathBuf>,
    /// Kustomize directories.
    pub kustomize: Vec<PathBuf>,
    /// Mesh config file; otherwise the `istio` ConfigMap of the root namespace, otherwise
    /// Istio's defaults.
    pub mesh_config: Option<PathBuf>,
    /// Namespace for namespaced objects that name none.
    pub default_namespace: String,
    /// gRPC (config streams, CA, status). Port 0 picks a free one.
    pub grpc_listen: SocketAddr,
    /// The same gRPC service over mTLS (Istio's 15012); `None` for none.
    pub mtls_listen: Option<SocketAddr>,
    /// Metrics and debug HTTP server; `None` for none.
    pub metrics_listen: Option<SocketAddr>,
    /// CA directory: Istio plug-in CA files are used when present, else a root is generated
    /// and saved there. Empty: a root generated in memory for this run.
    pub ca_dir: PathBuf,
    /// Authenticates config streams and certificate requests (local mode). `None`: streams
    /// are open and no certificate is issued.
    pub bootstrap_token: Option<String>,
    /// Quiet time after a file change before reloading.
    pub debounce: Duration,
    /// Watch the inputs (otherwise only `reload_now` reloads).
    pub watch: bool,
    /// The CONTROL PLANE column of proxy-status; generated when `None`.
    pub id: Option<String>,
}

impl Default for ControlPlaneOptions {
    fn default() -> Self {
        ControlPlaneOptions {
            inputs: Vec::new(),
            kustomize: Vec::new(),
            mesh_config: None,
            default_namespace: "default".into(),
            grpc_listen: SocketAddr::from(([127, 0, 0, 1], trellis_protocol::DEFAULT_GRPC_PORT)),
            mtls_listen: None,
            metrics_listen: Some(SocketAddr::from((
                [127, 0, 0, 1],
                trellis_protocol::DEFAULT_METRICS_PORT,
            ))),
            ca_dir: PathBuf::new(),
            bootstrap_token: None,
            debounce: Duration::from_millis(100),
            watch: true,
            id: None,
        }
    }
}

/// The control plane could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The initial config has load or schema errors.
    #[error("{0}")]
    Config(ConfigError),
    #[error("cannot bind the {what} server on {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("CA: {0}")]
    Ca(#[from] trellis_identity::Error),
    #[error("cannot watch the config: {0}")]
    Watch(std::io::Error),
}

/// Starts control planes.
pub struct ControlPlane;

/// A running control plane. Dropping it without `shutdown` leaves its tasks running until the
/// runtime stops.
pub struct RunningControlPlane {
    core: Arc<Core>,
    grpc_addr: SocketAddr,
    mtls_addr: Option<SocketAddr>,
    metrics_addr: Option<SocketAddr>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Keeps the mTLS serving certificate renewing.
    _serving: Option<mtls::ServingIdentity>,
    watcher: Mutex<Option<crate::watch::Watcher>>,
}

fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, StartError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let err = |source| StartError::Bind { what, addr, source };
    let socket =
        Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(err)?;
    socket.set_reuse_address(true).map_err(err)?;
    socket.set_nonblocking(true).map_err(err)?;
    socket.bind(&addr.into()).map_err(err)?;
    socket.listen(1024).map_err(err)?;
    TcpListener::from_std(socket.into()).map_err(err)
}

impl ControlPlane {
    /// Loads the config (load and schema errors fail the start; analyzer Errors are logged
    /// and become the baseline later changes are compared to), binds the servers and starts
    /// watching. Must be called within a Tokio runtime.
    pub async fn start(opts: ControlPlaneOptions) -> Result<RunningControlPlane, StartError> {
        let sources = Sources {
            inputs: opts.inputs.clone(),
            kustomize: opts.kustomize.clone(),
            mesh_config: opts.mesh_config.clone(),
            default_namespace: opts.default_namespace.clone(),
        };
        let s = sources.clone();
        let mut loaded = tokio::task::spawn_blocking(move || source::load(&s))
            .await
            .map_err(|e| StartError::Watch(std::io::Error::other(e.to_string())))?;
        loaded.verdict(None, 0).map_err(StartError::Config)?;
        let mut read_cache = source::ReadCache::default();
        read_cache.commit(&mut loaded);
        for m in loaded.errors() {
            tracing::error!(code = %m.kind.code, "{m} (kept: only new errors reject later changes)");
        }
        let trust_domain = loaded.mesh.trust_domain.clone();
        let root_namespace = loaded.mesh.root_namespace.clone();
        let snapshot = Snapshot::next(&Snapshot::empty(), loaded)
            .expect("the first snapshot always differs from the empty one");
        let ca_dir = opts.ca_dir.clone();
        let td = trust_domain.clone();
        let ca = tokio::task::spawn_blocking(move || {
            let trust_domain = td;
            if ca_dir.as_os_str().is_empty() {
                CertificateAuthority::generate(&trust_domain, "Trellis")
            } else {
                CertificateAuthority::load_or_generate(&ca_dir, &trust_domain, "Trellis")
            }
        })
        .await
        .map_err(|e| StartError::Watch(std::io::Error::other(e.to_string())))??;

        let ca = Arc::new(ca);
        let grpc = bind("gRPC", opts.grpc_listen)?;
        let mtls_socket = opts.mtls_listen.map(|a| bind("mTLS gRPC", a)).transpose()?;
        let mtls_addr = mtls_socket.as_ref().and_then(|s| s.local_addr().ok());
        let metrics_socket = opts
            .metrics_listen
            .map(|a| bind("metrics", a))
            .transpose()?;
        let grpc_addr = grpc.local_addr().unwrap_or(opts.grpc_listen);
        let metrics_addr = metrics_socket.as_ref().and_then(|s| s.local_addr().ok());
        let id = opts.id.clone().unwrap_or_else(|| {
            format!(
                "trellis-control-{:06x}",
                rand::rng().random::<u32>() & 0xff_ffff
            )
        });
        let version = snapshot.version;
        let core = Arc::new(Core {
            id,
            sources: sources.clone(),
            snapshot: wch::Sender::new(Arc::new(snapshot)),
            last_error: Mutex::new(None),
            reload_lock: tokio::sync::Mutex::new(()),
            read_cache: Mutex::new(read_cache),
            conns: Mutex::new(Default::default()),
            next_conn: AtomicU64::new(1),
            metrics: metrics::Metrics::new(),
            ca: Some(ca.clone()),
            token: opts.bootstrap_token.clone().filter(|t| !t.is_empty()),
            shutdown: wch::Sender::new(false),
        });
        core.metrics.snapshot_version.set(version as i64);

        let mut tasks = Vec::new();
        let mut serving = None;
        if let Some(socket) = mtls_socket {
            let identity =
                mtls::serving_identity(ca.clone(), &trust_domain, &root_namespace).await?;
            let incoming = mtls::incoming(socket, &identity, core.shutdown.subscribe())?;
            let service = MeshConfigServer::new(server::Service { core: core.clone() });
            let mut stop = core.shutdown.subscribe();
            tasks.push(tokio::spawn(async move {
                let result = tonic::transport::Server::builder()
                    .http2_keepalive_interval(Some(Duration::from_secs(10)))
                    .http2_keepalive_timeout(Some(Duration::from_secs(20)))
                    .add_service(service)
                    .serve_with_incoming_shutdown(incoming, async move {
                        crate::core::stopped(&mut stop).await;
                    })
                    .await;
                if let Err(e) = result {
                    tracing::error!("mTLS gRPC server failed: {e}");
                }
            }));
            serving = Some(identity);
        }
        let service = MeshConfigServer::new(server::Service { core: core.clone() });
        let mut stop = core.shutdown.subscribe();
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(grpc);
        tasks.push(tokio::spawn(async move {
            let result = tonic::transport::Server::builder()
                .http2_keepalive_interval(Some(Duration::from_secs(10)))
                .http2_keepalive_timeout(Some(Duration::from_secs(20)))
                .tcp_nodelay(true)
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, async move {
                    crate::core::stopped(&mut stop).await;
                })
                .await;
            if let Err(e) = result {
                tracing::error!("gRPC server failed: {e}");
            }
        }));
        if let Some(socket) = metrics_socket {
            tasks.push(tokio::spawn(http::serve(
                socket,
                core.clone(),
                core.shutdown.subscribe(),
            )));
        }
        let watcher = if opts.watch {
            let (tx, mut rx) = mpsc::unbounded_channel();
            let w = crate::watch::watch(&sources, opts.debounce, tx).map_err(StartError::Watch)?;
            let c = core.clone();
            let mut stop = core.shutdown.subscribe();
            tasks.push(tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = crate::core::stopped(&mut stop) => break,
                        r = rx.recv() => {
                            if r.is_none() {
                                break;
                            }
                            while rx.try_recv().is_ok() {}
                            let _ = c.reload("file change").await;
                        }
                    }
                }
            }));
            Some(w)
        } else {
            None
        };
        tracing::info!(
            id = %core.id,
            version,
            "control plane serving on {grpc_addr}{}{}",
            mtls_addr
                .map(|a| format!(", mTLS on {a}"))
                .unwrap_or_default(),
            metrics_addr
                .map(|a| format!(", metrics on {a}"))
                .unwrap_or_default()
        );
        Ok(RunningControlPlane {
            core,
            grpc_addr,
            mtls_addr,
            _serving: serving,
            metrics_addr,
            tasks: Mutex::new(tasks),
            watcher: Mutex::new(watcher),
        })
    }
}

impl RunningControlPlane {
    /// The id shown in proxy-status's CONTROL PLANE column.
    pub fn id(&self) -> &str {
        &self.core.id
    }

    /// Where proxies connect (`trellis proxy --control-plane`).
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// The mTLS gRPC address (`mtls_listen`), once bound.
    pub fn mtls_addr(&self) -> Option<SocketAddr> {
        self.mtls_addr
    }

    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Sync status of every connected proxy.
    pub fn status(&self) -> ControlPlaneStatus {
        self.core.status()
    }

    /// Version of the snapshot in force.
    pub fn snapshot_version(&self) -> u64 {
        self.core.current().version
    }

    /// The snapshot in force.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.core.current()
    }

    /// The last rejected change (cleared by the next accepted reload).
    pub fn last_error(&self) -> Option<ConfigError> {
        self.core.last_error()
    }

    /// Reloads now; returns the version in force or why the change was rejected.
    pub async fn reload_now(&self) -> Result<u64, ConfigError> {
        self.core.reload("reload requested").await
    }

    /// Resolves once the snapshot version is at least `version`.
    pub async fn wait_for_version(&self, version: u64) {
        let mut rx = self.core.snapshot.subscribe();
        let _ = rx.wait_for(|s| s.version >= version).await;
    }

    /// Whether every connected proxy has ACKed what it was sent, of every type.
    pub fn all_synced(&self) -> bool {
        self.status()
            .proxies
            .iter()
            .all(|p| p.types.iter().all(|t| t.state == SyncState::Synced))
    }

    /// The mesh CA (for in-process users, e.g. a gateway started by `trellis up`).
    pub fn ca(&self) -> Option<Arc<CertificateAuthority>> {
        self.core.ca.clone()
    }

    /// Stops serving: streams close (proxies keep their config and reconnect with backoff),
    /// servers stop, watching stops.
    pub async fn shutdown(&self) {
        self.core.shutdown.send_replace(true);
        self.watcher
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let tasks: Vec<JoinHandle<()>> =
            std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for t in tasks {
            let abort = t.abort_handle();
            if tokio::time::timeout(Duration::from_secs(2), t)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
        tracing::info!(id = %self.core.id, "control plane stopped");
    }
}

impl Drop for RunningControlPlane {
    fn drop(&mut self) {
        self.core.shutdown.send_replace(true);
        for t in self
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            t.abort();
        }
    }
}
