//! The proxy runtime: binds the config's listeners, accepts connections, swaps configs, drains.
//!
//! - [`ProxyRuntime::start`] validates and applies the first config, binds every listener,
//!   then the admin and status ports.
//! - [`RunningProxy::apply`] validates a new config off to the side (secrets load, TLS configs
//!   build, listener addresses unique and bindable, route tables exist); only then swaps
//!   `ProxyState::config` and each listener's plan, binds added listeners and closes removed
//!   ones. A rejected config changes nothing and is recorded for `/server_info`.
//! - A listener whose bind address stays keeps its socket: no connection is refused or reset
//!   by a reload. Connections keep the plan they were accepted with; HTTP requests read the
//!   config in force when they start.
//! - [`RunningProxy::shutdown`] stops accepting, signals `ProxyState::drain`, waits for
//!   connections to finish up to a deadline, then closes the rest.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use trellis_model::config::{ChainHandler, ProxyConfig};
use trellis_model::security::is_mesh_tls;

use crate::listener::{self, ChainPlan, Dispatch, Engine, ListenerPlan};
use crate::security::{JwksCache, SecurityRuntime};
use crate::state::ProxyState;
use crate::tls::{load_compiled_file_secrets, merge_secret_files, SecretFiles, ServerConfigCache};
use crate::upstream::connect::MeshTlsProvider;

/// Changes the log filter at runtime (admin `/logging?level=`); returns the filter in force.
pub type LogControl = Arc<dyn Fn(&str) -> Result<String, String> + Send + Sync>;

/// How the runtime binds and behaves, beyond the config itself.
#[derive(Clone)]
pub struct RuntimeOptions {
    /// Config listener port -> address to bind instead (`--listen-remap 80=127.0.0.1:8080`).
    pub listen_remap: HashMap<u16, SocketAddr>,
    /// Bind every listener not remapped on this IP instead of the config's (`--bind-ip`).
    pub bind_ip: Option<IpAddr>,
    /// Admin server (`/config_dump`, `/ready`, ...); `None` for none.
    pub admin: Option<SocketAddr>,
    /// Status server (`/healthz/ready`, `/app-health/...`, `/stats/prometheus`); `None` for
    /// none.
    pub status: Option<SocketAddr>,
    /// Secrets read from files at every apply (override same-named config secrets).
    pub secret_files: HashMap<String, SecretFiles>,
    /// How long a graceful shutdown waits for connections to finish.
    pub drain_timeout: Duration,
    /// How long a listener that chooses chains by the first bytes waits for them.
    pub detect_timeout: Duration,
    pub log_control: Option<LogControl>,
    /// The proxy's mesh identity (mTLS to upstreams, inbound mesh mTLS chains); `None` for a
    /// proxy outside the mesh CA (mesh chains then refuse every handshake).
    pub mesh_tls: Option<Arc<dyn MeshTlsProvider>>,
    /// Remote JWKS cache (default: `JwksCache::default()`); kept for the process lifetime.
    pub jwks: Option<JwksCache>,
    /// Give back the executable pages that loading and compiling touched, a few seconds
    /// after each apply (`memory`); for the `trellis proxy` process, not for tests.
    pub release_startup_pages: bool,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            listen_remap: HashMap::new(),
            bind_ip: None,
            admin: Some(SocketAddr::from(([127, 0, 0, 1], 15000))),
            status: Some(SocketAddr::from(([0, 0, 0, 0], 15021))),
            secret_files: HashMap::new(),
            drain_timeout: Duration::from_secs(5),
            detect_timeout: Duration::from_secs(15),
            log_control: None,
            mesh_tls: None,
            jwks: None,
            release_startup_pages: false,
        }
    }
}

impl RuntimeOptions {
    /// Where a listener configured at `address` is bound.
    pub fn bind_address(&self, address: SocketAddr) -> SocketAddr {
        if let Some(a) = self.listen_remap.get(&address.port()) {
            return *a;
        }
        match self.bind_ip {
            Some(ip) => SocketAddr::new(ip, address.port()),
            None => address,
        }
    }
}

/// A config that was not applied, and every reason why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("config {version} rejected: {}", problems.join("; "))]
pub struct ApplyError {
    pub version: String,
    pub problems: Vec<String>,
}

/// The runtime could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ApplyError),
    #[error("cannot bind the {what} server on {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Starts proxies.
pub struct ProxyRuntime;

impl ProxyRuntime {
    /// Starts serving `config` with the real HTTP and TCP engines. Must be called from within
    /// a Tokio runtime. Returns once every listener and the admin/status ports are bound.
    pub fn start(config: ProxyConfig, options: RuntimeOptions) -> Result<RunningProxy, StartError> {
        Self::start_with(config, options, Engine)
    }

    /// Like [`ProxyRuntime::start`], with the connection handlers given (tests).
    pub fn start_with<D: Dispatch>(
        config: ProxyConfig,
        options: RuntimeOptions,
        dispatch: D,
    ) -> Result<RunningProxy, StartError> {
        let handle = tokio::runtime::Handle::current();
        let node_id = config.node.id.clone();
        let state = ProxyState::with_jwks(config.clone(), options.jwks.clone().unwrap_or_default());
        if let Some(m) = &options.mesh_tls {
            let _ = state.mesh_tls.set(m.clone());
        }
        let shared = Arc::new(Shared {
            state,
            conns: Arc::new(ConnTracker::default()),
            hard_stop: watch::Sender::new(false),
        });
        let dispatch = Arc::new(dispatch);
        let spawn_shared = shared.clone();
        let spawner: Spawner = Box::new(move |socket, plan, stop| {
            tokio::spawn(accept_loop(
                socket,
                plan,
                stop,
                spawn_shared.clone(),
                dispatch.clone(),
            ));
        });
        let now = SystemTime::now();
        let inner = Arc::new(Inner {
            shared,
            options,
            handle,
            spawner,
            applied: Mutex::new(Applied::default()),
            status: Mutex::new(Status {
                config_version: String::new(),
                node_id,
                applied: 0,
                rejected: 0,
                last_applied_at: None,
                last_error: None,
            }),
            phase: watch::Sender::new(Phase::Starting),
            started: Instant::now(),
            started_at: now,
            admin_addr: Mutex::new(None),
            status_addr: Mutex::new(None),
            applies: Arc::default(),
        });
        let bind = |what: &'static str, addr: Option<SocketAddr>| {
            addr.map(|addr| {
                bind_socket(addr).map_err(|source| StartError::Bind { what, addr, source })
            })
            .transpose()
        };
        // Admin and status first: a taken port fails the start before any listener opens.
        let admin = bind("admin", inner.options.admin)?;
        let status = bind("status", inner.options.status)?;
        let proxy = RunningProxy { inner };
        proxy.apply(config)?;
        if let Some(socket) = admin {
            *lock(&proxy.inner.admin_addr) = socket.local_addr().ok();
            tokio::spawn(crate::admin::serve(
                socket,
                proxy.clone(),
                crate::admin::Port::Admin,
            ));
        }
        if let Some(socket) = status {
            *lock(&proxy.inner.status_addr) = socket.local_addr().ok();
            tokio::spawn(crate::admin::serve(
                socket,
                proxy.clone(),
                crate::admin::Port::Status,
            ));
        }
        proxy.inner.phase.send_replace(Phase::Live);
        for l in proxy.listeners() {
            tracing::info!(listener = %l.name, config_address = %l.config_address, "listening on {}", l.bound_address);
        }
        Ok(proxy)
    }
}

type Spawner =
    Box<dyn Fn(TcpListener, Arc<ArcSwap<ListenerPlan>>, watch::Receiver<bool>) + Send + Sync>;

/// What accept loops and connections share.
struct Shared {
    state: Arc<ProxyState>,
    conns: Arc<ConnTracker>,
    /// Set when the drain deadline passes: connections still open are closed.
    hard_stop: watch::Sender<bool>,
}

struct Inner {
    shared: Arc<Shared>,
    options: RuntimeOptions,
    handle: tokio::runtime::Handle,
    spawner: Spawner,
    /// Held for the whole of an apply: applies are serialized.
    applied: Mutex<Applied>,
    status: Mutex<Status>,
    phase: watch::Sender<Phase>,
    started: Instant,
    started_at: SystemTime,
    admin_addr: Mutex<Option<SocketAddr>>,
    status_addr: Mutex<Option<SocketAddr>>,
    /// Applies so far, for `memory::release_after_settle`.
    applies: Arc<std::sync::atomic::AtomicU64>,
}

#[derive(Default)]
struct Applied {
    listeners: HashMap<ListenerKey, ActiveListener>,
    tls: ServerConfigCache,
}

/// Identity of a bound listener across applies: its bind address (or, for port 0, its name,
/// since every port-0 bind gets a new port).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum ListenerKey {
    Addr(SocketAddr),
    Ephemeral(SocketAddr, String),
}

struct ActiveListener {
    bound: SocketAddr,
    plan: Arc<ArcSwap<ListenerPlan>>,
    /// Dropping it stops the accept loop (and closes the socket).
    _stop: watch::Sender<bool>,
}

struct Status {
    config_version: String,
    node_id: String,
    applied: u64,
    rejected: u64,
    last_applied_at: Option<SystemTime>,
    last_error: Option<LastError>,
}

/// The last config that was rejected, and why.
#[derive(Clone, Debug, Serialize)]
pub struct LastError {
    pub version: String,
    pub message: String,
    /// Unix seconds.
    pub at: u64,
}

/// Life cycle of the proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Phase {
    Starting,
    Live,
    Draining,
    Stopped,
}

/// A bound listener, for logs, tests and `/listeners`.
#[derive(Clone, Debug, Serialize)]
pub struct ListenerInfo {
    pub name: String,
    pub config_address: SocketAddr,
    pub bound_address: SocketAddr,
}

/// `/server_info`.
#[derive(Clone, Debug, Serialize)]
pub struct ServerInfo {
    /// Trellis version.
    pub version: &'static str,
    pub state: Phase,
    pub node_id: String,
    pub config_version: String,
    pub uptime_seconds: u64,
    pub started_at: u64,
    pub last_applied_at: Option<u64>,
    pub configs_applied: u64,
    pub configs_rejected: u64,
    /// The last rejected config; cleared when a config is applied.
    pub last_error: Option<LastError>,
    pub listeners: Vec<ListenerInfo>,
    pub active_connections: usize,
}

/// A running proxy. Cheap to clone; every clone controls the same proxy.
#[derive(Clone)]
pub struct RunningProxy {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A validated config, ready to commit.
struct Ready {
    config: Arc<ProxyConfig>,
    security: Arc<SecurityRuntime>,
    listeners: Vec<Prepared>,
    tls: ServerConfigCache,
}

/// A listener of the new config, ready to commit.
struct Prepared {
    key: ListenerKey,
    plan: ListenerPlan,
    socket: Option<TcpListener>,
}

impl RunningProxy {
    /// Validates `new` and, if it is sound, makes it the config in force. On error nothing
    /// changes (the previous config keeps serving) and the error is recorded for
    /// `/server_info`.
    pub fn apply(&self, new: ProxyConfig) -> Result<(), ApplyError> {
        let version = new.version.clone();
        let result = {
            let mut applied = lock(&self.inner.applied);
            if matches!(*self.inner.phase.borrow(), Phase::Draining | Phase::Stopped) {
                Err(vec!["the proxy is shutting down".to_string()])
            } else {
                self.prepare(new, &applied)
                    .map(|p| self.commit(&mut applied, p))
            }
        };
        match result {
            Ok(()) => {
                let mut st = lock(&self.inner.status);
                st.config_version = version.clone();
                st.applied += 1;
                st.last_applied_at = Some(SystemTime::now());
                st.last_error = None;
                drop(st);
                self.inner.shared.state.metrics.config_applied();
                tracing::info!(version = %version, "config applied");
                if self.inner.options.release_startup_pages {
                    crate::memory::release_after_settle(&self.inner.handle, &self.inner.applies);
                }
                Ok(())
            }
            Err(problems) => {
                let e = ApplyError { version, problems };
                self.report_rejected(&e.version, &e.to_string());
                Err(e)
            }
        }
    }

    /// Records a config that never reached `apply` (it did not load or compile).
    pub fn report_rejected(&self, version: &str, message: &str) {
        tracing::warn!(version = %version, "config rejected: {message}");
        self.inner.shared.state.metrics.config_rejected();
        let mut st = lock(&self.inner.status);
        st.rejected += 1;
        st.last_error = Some(LastError {
            version: version.to_string(),
            message: message.to_string(),
            at: unix(SystemTime::now()),
        });
    }

    /// Forgets the last rejection (the inputs are back to the config in force).
    pub(crate) fn clear_last_error(&self) {
        lock(&self.inner.status).last_error = None;
    }

    fn prepare(&self, mut config: ProxyConfig, applied: &Applied) -> Result<Ready, Vec<String>> {
        let opts = &self.inner.options;
        let mesh_tls = self.inner.shared.state.mesh_tls.get();
        let mut no_identity: Vec<String> = Vec::new();
        let mut problems = Vec::new();
        if let Err(e) = load_compiled_file_secrets(&mut config.secrets) {
            problems.extend(e);
        }
        if let Err(e) = merge_secret_files(&mut config.secrets, &opts.secret_files) {
            problems.extend(e);
        }
        let mut tls = ServerConfigCache::default();
        let mut prepared: Vec<Prepared> = Vec::new();
        let mut by_key: HashMap<ListenerKey, String> = HashMap::new();
        let mut by_address: HashMap<SocketAddr, &str> = HashMap::new();
        for l in &config.listeners {
            if let Some(other) = by_address.insert(l.address, &l.name) {
                problems.push(format!(
                    "listeners {other} and {} have the same address {}",
                    l.name, l.address
                ));
                continue;
            }
            let bind = opts.bind_address(l.address);
            let key = if bind.port() == 0 {
                ListenerKey::Ephemeral(bind, l.name.clone())
            } else {
                ListenerKey::Addr(bind)
            };
            if let Some(other) = by_key.insert(key.clone(), l.name.clone()) {
                problems.push(format!(
                    "listeners {other} and {} would both bind {bind} (use --listen-remap to give one another address)",
                    l.name
                ));
                continue;
            }
            if l.filter_chains.is_empty() {
                tracing::warn!(listener = %l.name, "listener has no filter chain: its connections will be closed");
            }
            let mut chains = Vec::with_capacity(l.filter_chains.len());
            for chain in &l.filter_chains {
                let mut route_table: Arc<str> = "".into();
                if let ChainHandler::Http(m) = &chain.handler {
                    if !config.routes.contains_key(&m.route_table) {
                        problems.push(format!(
                            "listener {} filter chain {:?}: route table {:?} does not exist",
                            l.name, chain.name, m.route_table
                        ));
                    }
                    route_table = m.route_table.as_str().into();
                }
                let server_config = match &chain.tls {
                    None => None,
                    Some(t) if is_mesh_tls(t) => {
                        let http = matches!(chain.handler, ChainHandler::Http(_));
                        Some(match mesh_tls {
                            Some(m) => m.server_config(http),
                            None => {
                                no_identity.push(format!("{}/{}", l.name, chain.name));
                                crate::security::mesh::no_identity_server_config()
                            }
                        })
                    }
                    Some(t) => {
                        let http = matches!(chain.handler, ChainHandler::Http(_));
                        match tls.get_or_build(t, http, &config.secrets, &applied.tls) {
                            Ok(c) => Some(c),
                            Err(e) => {
                                problems.push(format!(
                                    "listener {} filter chain {:?}: {e}",
                                    l.name, chain.name
                                ));
                                None
                            }
                        }
                    }
                };
                chains.push(ChainPlan {
                    chain: chain.clone(),
                    tls: server_config,
                    route_table,
                });
            }
            prepared.push(Prepared {
                key,
                plan: ListenerPlan::new(&l.name, l.address, chains, opts.detect_timeout),
                socket: None,
            });
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        // Bind what is new; a failure rejects the whole config (sockets bound so far close).
        let _enter = self.inner.handle.enter();
        for p in &mut prepared {
            if applied.listeners.contains_key(&p.key) {
                continue;
            }
            let addr = match &p.key {
                ListenerKey::Addr(a) | ListenerKey::Ephemeral(a, _) => *a,
            };
            match bind_socket(addr) {
                Ok(s) => p.socket = Some(s),
                Err(e) => problems.push(format!(
                    "listener {}: cannot bind {addr}: {e}{}",
                    p.plan.name,
                    if e.kind() == std::io::ErrorKind::PermissionDenied && addr.port() < 1024 {
                        " (ports below 1024 need privileges: use --listen-remap or --bind-ip with a remap)"
                    } else {
                        ""
                    }
                )),
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        if !no_identity.is_empty() {
            tracing::warn!(
                chains = %no_identity.join(", "),
                "{} filter chain(s) terminate mesh mTLS but this proxy has no mesh identity \
                 (start it with --ca-dir): their TLS handshakes fail; plaintext chains still serve",
                no_identity.len()
            );
        }
        let config = Arc::new(config);
        let security = Arc::new(SecurityRuntime::new(
            config.clone(),
            &self.inner.shared.state.jwks,
        ));
        Ok(Ready {
            config,
            security,
            listeners: prepared,
            tls,
        })
    }

    fn commit(&self, applied: &mut Applied, ready: Ready) {
        let Ready {
            config,
            security,
            listeners,
            tls,
        } = ready;
        self.inner.shared.state.install(config, security);
        let mut next = HashMap::with_capacity(listeners.len());
        for p in listeners {
            let plan = Arc::new(p.plan);
            match (applied.listeners.remove(&p.key), p.socket) {
                (Some(active), _) => {
                    active.plan.store(plan);
                    next.insert(p.key, active);
                }
                (None, Some(socket)) => {
                    let bound = socket.local_addr().unwrap_or(plan.config_address);
                    let (stop, stop_rx) = watch::channel(false);
                    let plan = Arc::new(ArcSwap::new(plan));
                    let _enter = self.inner.handle.enter();
                    (self.inner.spawner)(socket, plan.clone(), stop_rx);
                    tracing::debug!(bound = %bound, "listener added");
                    next.insert(
                        p.key,
                        ActiveListener {
                            bound,
                            plan,
                            _stop: stop,
                        },
                    );
                }
                (None, None) => unreachable!("prepare binds every new listener"),
            }
        }
        for (key, old) in applied.listeners.drain() {
            tracing::info!(listener = ?key, bound = %old.bound, "listener removed; its open connections continue");
        }
        applied.listeners = next;
        applied.tls = tls;
    }

    /// The shared state connections use.
    pub fn state(&self) -> &Arc<ProxyState> {
        &self.inner.shared.state
    }

    /// The config in force.
    pub fn config(&self) -> Arc<ProxyConfig> {
        self.inner.shared.state.config.load_full()
    }

    pub fn options(&self) -> &RuntimeOptions {
        &self.inner.options
    }

    /// Bound listeners, sorted by name.
    pub fn listeners(&self) -> Vec<ListenerInfo> {
        let applied = lock(&self.inner.applied);
        let mut v: Vec<ListenerInfo> = applied
            .listeners
            .values()
            .map(|l| {
                let plan = l.plan.load();
                ListenerInfo {
                    name: plan.name.to_string(),
                    config_address: plan.config_address,
                    bound_address: l.bound,
                }
            })
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Where the listener named `name` is bound.
    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.listeners()
            .into_iter()
            .find(|l| l.name == name)
            .map(|l| l.bound_address)
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        *lock(&self.inner.admin_addr)
    }

    pub fn status_addr(&self) -> Option<SocketAddr> {
        *lock(&self.inner.status_addr)
    }

    pub fn phase(&self) -> Phase {
        *self.inner.phase.borrow()
    }

    /// Listeners bound and a config loaded, not draining.
    pub fn is_ready(&self) -> bool {
        self.phase() == Phase::Live
    }

    pub fn active_connections(&self) -> usize {
        self.inner.shared.conns.active.load(Ordering::Relaxed)
    }

    pub fn server_info(&self) -> ServerInfo {
        let st = lock(&self.inner.status);
        ServerInfo {
            version: env!("CARGO_PKG_VERSION"),
            state: self.phase(),
            node_id: st.node_id.clone(),
            config_version: st.config_version.clone(),
            uptime_seconds: self.inner.started.elapsed().as_secs(),
            started_at: unix(self.inner.started_at),
            last_applied_at: st.last_applied_at.map(unix),
            configs_applied: st.applied,
            configs_rejected: st.rejected,
            last_error: st.last_error.clone(),
            listeners: {
                drop(st);
                self.listeners()
            },
            active_connections: self.active_connections(),
        }
    }

    /// Graceful shutdown: stop accepting, signal drain, wait for connections to finish (up to
    /// `deadline`), close the rest. Concurrent calls wait for the same shutdown.
    pub async fn shutdown(&self, deadline: Duration) {
        let first = self.inner.phase.send_if_modified(|p| {
            if matches!(p, Phase::Draining | Phase::Stopped) {
                false
            } else {
                *p = Phase::Draining;
                true
            }
        });
        if !first {
            return self.stopped().await;
        }
        tracing::info!(
            connections = self.active_connections(),
            "draining: stopped accepting, waiting up to {deadline:?} for connections to finish"
        );
        lock(&self.inner.applied).listeners.clear();
        self.inner.shared.state.drain.start();
        let conns = &self.inner.shared.conns;
        if tokio::time::timeout(deadline, conns.idle()).await.is_err() {
            tracing::warn!(
                connections = self.active_connections(),
                "drain deadline passed: closing the remaining connections"
            );
        }
        self.inner.shared.hard_stop.send_replace(true);
        let _ = tokio::time::timeout(Duration::from_secs(1), conns.idle()).await;
        self.inner.phase.send_replace(Phase::Stopped);
        tracing::info!("proxy stopped");
    }

    /// Starts a graceful shutdown in the background (admin `/quitquitquit`).
    pub fn request_shutdown(&self) {
        let me = self.clone();
        let deadline = self.inner.options.drain_timeout;
        self.inner
            .handle
            .spawn(async move { me.shutdown(deadline).await });
    }

    /// Resolves once the proxy has stopped.
    pub async fn stopped(&self) {
        let mut rx = self.inner.phase.subscribe();
        let _ = rx.wait_for(|p| *p == Phase::Stopped).await;
    }

    /// Resolves once shutdown has begun.
    pub async fn shutting_down(&self) {
        let mut rx = self.inner.phase.subscribe();
        let _ = rx
            .wait_for(|p| matches!(p, Phase::Draining | Phase::Stopped))
            .await;
    }

    /// Receives the hard-stop signal (admin connections close with the rest).
    pub(crate) fn hard_stop(&self) -> watch::Receiver<bool> {
        self.inner.shared.hard_stop.subscribe()
    }
}

/// Binds a listening socket: SO_REUSEADDR (restarts do not wait out TIME_WAIT), backlog 1024.
fn bind_socket(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

async fn accept_loop<D: Dispatch>(
    socket: TcpListener,
    plan: Arc<ArcSwap<ListenerPlan>>,
    mut stop: watch::Receiver<bool>,
    shared: Arc<Shared>,
    dispatch: Arc<D>,
) {
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            _ = signalled(&mut stop) => break,
            accepted = socket.accept() => match accepted {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE/ENFILE and friends: back off instead of spinning.
                    tracing::warn!(listener = %plan.load().name, "accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let plan = plan.load_full();
        let guard = shared.conns.track();
        let mut hard_stop = shared.hard_stop.subscribe();
        let state = shared.state.clone();
        let dispatch = dispatch.clone();
        tokio::spawn(async move {
            let _guard = guard;
            tokio::select! {
                _ = listener::serve(stream, peer, plan, state, dispatch) => {}
                _ = signalled(&mut hard_stop) => {}
            }
        });
    }
}

/// Resolves when `rx` turns true or its sender is gone.
pub(crate) async fn signalled(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// Counts open connections; wakes drainers when the count reaches zero.
#[derive(Default)]
struct ConnTracker {
    active: AtomicUsize,
    idle: Notify,
}

struct ConnGuard(Arc<ConnTracker>);

impl ConnTracker {
    fn track(self: &Arc<Self>) -> ConnGuard {
        self.active.fetch_add(1, Ordering::Relaxed);
        ConnGuard(self.clone())
    }

    async fn idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.active.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        if self.0.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}
