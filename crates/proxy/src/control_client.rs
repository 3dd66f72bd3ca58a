//! Control-plane mode: the proxy's config comes from a control plane over the `trellis.v1`
//! stream instead of files.
//!
//! [`ControlClient::run`] connects, says Hello, and keeps the resources it is sent (a full
//! snapshot per type on connect, then deltas). When a push is complete (`more = false`) it
//! compiles its own config with `trellis_model::compile` for its workload and hands it to a
//! [`ConfigSink`] (normally the runtime's atomic `apply`); it ACKs every type and version of
//! the push when that worked and NACKs them with the error otherwise (the config in force
//! keeps serving). When the control plane goes away the proxy keeps serving its last good
//! config and reconnects with jittered exponential backoff (100 ms to 5 s); on reconnect it
//! receives a full snapshot, and applies it only if it differs from what runs (so a
//! control-plane restart changes nothing on the data path).
//!
//! [`start_proxy`] ties it to a [`ProxyRuntime`]: the runtime starts with the first config
//! that compiles, later ones are applied to it. [`ControlPlaneIssuer`] asks the control plane's
//! CA for workload certificates (for `trellis_identity::IdentityManager`).

use std::collections::hash_map::DefaultHasher;
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng as _;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use trellis_api::{MeshConfig, Parsed, Resource};
use trellis_model::compile::{compile, find_target};
use trellis_model::config::ProxyConfig;
use trellis_protocol::{
    control_message, from_wire, proxy_message, Ack, ConfigType, CsrRequest, Hello,
    MeshConfigClient, Nack, ProxyMessage, ResourceKey, Update,
};

use crate::runtime::{ProxyRuntime, RunningProxy, RuntimeOptions};

/// Largest message accepted from the control plane.
const MAX_MESSAGE: usize = 256 << 20;

/// Who the proxy is and where its control plane is.
#[derive(Clone, Debug)]
pub struct ControlClientOptions {
    /// `host:port` or `http://host:port`.
    pub address: String,
    pub workload_namespace: String,
    pub workload_name: String,
    /// `name.namespace` when empty.
    pub proxy_id: String,
    pub token: Option<String>,
    /// Sent in Hello so `proxy-config` can find the admin server (updated by
    /// [`ControlClient::set_admin_addr`]).
    pub admin_addr: Option<SocketAddr>,
    /// `local` when empty.
    pub cluster: String,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Talk to the control plane's mTLS port instead (set once a workload certificate is
    /// held; see [`ControlClient::use_mtls`]).
    pub mtls: Option<ControlPlaneMtls>,
}

/// The control plane's mTLS channel (Istio's 15012) and the certificate to present there.
#[derive(Clone, Debug)]
pub struct ControlPlaneMtls {
    /// `host:port` of the mTLS port.
    pub address: String,
    /// The proxy's workload identity (its current certificate is presented).
    pub identity: Arc<crate::security::MeshIdentity>,
    /// Mesh root namespace: the control plane must present
    /// `spiffe://<trust domain>/ns/<root namespace>/sa/istiod`.
    pub root_namespace: String,
}

impl ControlClientOptions {
    pub fn new(address: impl Into<String>, namespace: &str, name: &str) -> Self {
        ControlClientOptions {
            address: address.into(),
            workload_namespace: namespace.to_string(),
            workload_name: name.to_string(),
            proxy_id: String::new(),
            token: None,
            admin_addr: None,
            cluster: String::new(),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            mtls: None,
        }
    }

    fn uri(&self) -> String {
        if self.address.contains("://") {
            self.address.clone()
        } else {
            format!("http://{}", self.address)
        }
    }
}

/// A config compiled from a complete push.
#[derive(Clone, Debug)]
pub struct ProxyConfigUpdate {
    pub config: ProxyConfig,
    /// Versions of each type the config was compiled from.
    pub resources_version: String,
    pub endpoints_version: String,
    /// Types the push carried.
    pub types: Vec<ConfigType>,
    pub control_plane_id: String,
}

/// Receives compiled configs.
pub trait ConfigSink: Send + 'static {
    /// Makes `update` the config in force; an error is NACKed (the previous config stays).
    fn apply(&mut self, update: ProxyConfigUpdate) -> Result<(), String>;
    /// A push that did not compile (also NACKed).
    fn rejected(&mut self, _version: &str, _error: &str) {}
}

impl<F> ConfigSink for F
where
    F: FnMut(ProxyConfigUpdate) -> Result<(), String> + Send + 'static,
{
    fn apply(&mut self, update: ProxyConfigUpdate) -> Result<(), String> {
        self(update)
    }
}

/// What the client knows about its link to the control plane.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientStatus {
    pub connected: bool,
    /// Successful stream openings.
    pub connects: u64,
    pub control_plane_id: String,
    pub resources_version: String,
    pub endpoints_version: String,
    /// Versions of the config in force (`resources/endpoints`).
    pub applied_version: String,
    /// The last error (connection, compile or apply).
    pub last_error: Option<String>,
}

/// Resources of one type, by id.
#[derive(Default)]
struct TypeSet {
    version: String,
    items: BTreeMap<String, (Resource, u64)>,
}

#[derive(Default)]
struct Held {
    resources: TypeSet,
    endpoints: TypeSet,
    mesh: Option<(MeshConfig, u64)>,
    /// Fingerprint of what the config in force was compiled from.
    applied: Option<u64>,
}

impl Held {
    fn set(&mut self, ty: ConfigType) -> &mut TypeSet {
        match ty {
            ConfigType::Endpoints => &mut self.endpoints,
            _ => &mut self.resources,
        }
    }

    fn fingerprint(&self) -> u64 {
        let mut h = DefaultHasher::new();
        for set in [&self.resources, &self.endpoints] {
            for (id, (_, hash)) in &set.items {
                (id, hash).hash(&mut h);
            }
            0xffu8.hash(&mut h);
        }
        self.mesh.as_ref().map(|(_, m)| *m).hash(&mut h);
        h.finish()
    }

    fn find(&self, id: &str) -> Option<&Resource> {
        self.resources
            .items
            .get(id)
            .or_else(|| self.endpoints.items.get(id))
            .map(|(r, _)| r)
    }

    /// Prefixes `file:line: ` of the resource a compile error names (`Kind ns/name ...`).
    fn locate(&self, error: &str) -> String {
        let mut words = error.split_whitespace();
        if let (Some(kind), Some(key)) = (words.next(), words.next()) {
            let key = key.trim_end_matches(':');
            if let Some((ns, name)) = key.split_once('/') {
                if let Some(r) = self.find(&format!("{kind}/{ns}/{name}")) {
                    let l = &r.origin.location;
                    return format!("{}:{}: {error}", l.file, l.line);
                }
            }
        }
        error.to_string()
    }
}

fn hash_str(s: &str) -> u64 {
    let mut h = DefaultHasher::new();
    s.hash(&mut h);
    h.finish()
}

/// A proxy's client of the control plane.
pub struct ControlClient {
    opts: ControlClientOptions,
    mtls: Mutex<Option<ControlPlaneMtls>>,
    held: Mutex<Held>,
    status: Mutex<ClientStatus>,
    admin: watch::Sender<Option<SocketAddr>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Why a stream ended.
enum Ended {
    /// Could not connect or the stream failed before any config arrived.
    Failed(String),
    /// The stream worked for a while, then ended.
    Lost(String),
}

impl ControlClient {
    pub fn new(opts: ControlClientOptions) -> Arc<Self> {
        let admin = watch::Sender::new(opts.admin_addr);
        Arc::new(ControlClient {
            mtls: Mutex::new(opts.mtls.clone()),
            opts,
            held: Mutex::new(Held::default()),
            status: Mutex::new(ClientStatus::default()),
            admin,
        })
    }

    /// From now on, connect to the mTLS port presenting `mtls.identity`'s certificate (config
    /// streams and certificate renewals alike).
    pub fn use_mtls(&self, mtls: ControlPlaneMtls) {
        *lock(&self.mtls) = Some(mtls);
    }

    pub fn options(&self) -> &ControlClientOptions {
        &self.opts
    }

    pub fn status(&self) -> ClientStatus {
        lock(&self.status).clone()
    }

    /// Tells the control plane where the admin server is (sent in a new Hello).
    pub fn set_admin_addr(&self, addr: Option<SocketAddr>) {
        self.admin.send_replace(addr);
    }

    fn hello(&self) -> Hello {
        let o = &self.opts;
        Hello {
            proxy_id: if o.proxy_id.is_empty() {
                format!("{}.{}", o.workload_name, o.workload_namespace)
            } else {
                o.proxy_id.clone()
            },
            workload_namespace: o.workload_namespace.clone(),
            workload_name: o.workload_name.clone(),
            token: o.token.clone().unwrap_or_default(),
            proxy_version: env!("CARGO_PKG_VERSION").to_string(),
            admin_addr: self
                .admin
                .borrow()
                .map(|a| a.to_string())
                .unwrap_or_default(),
            cluster: if o.cluster.is_empty() {
                "local".into()
            } else {
                o.cluster.clone()
            },
        }
    }

    /// Connects and follows the control plane forever (abort the task to stop), reconnecting
    /// with jittered exponential backoff.
    pub async fn run<S: ConfigSink>(&self, mut sink: S) {
        let mut backoff = self.opts.backoff_min;
        loop {
            let ended = self.session(&mut sink).await;
            {
                let mut st = lock(&self.status);
                st.connected = false;
                let msg = match &ended {
                    Ended::Failed(m) | Ended::Lost(m) => m.clone(),
                };
                st.last_error = Some(msg);
            }
            if let Ended::Lost(_) = ended {
                backoff = self.opts.backoff_min;
            }
            let jittered = backoff.mul_f64(rand::rng().random_range(0.5..=1.0));
            let (Ended::Failed(m) | Ended::Lost(m)) = &ended;
            tracing::warn!(
                control_plane = %self.opts.address,
                "control plane unavailable ({m}); keeping the config in force, retrying in {jittered:?}"
            );
            tokio::time::sleep(jittered).await;
            backoff = (backoff * 2).min(self.opts.backoff_max);
        }
    }

    async fn connect(&self) -> Result<Channel, String> {
        let mtls = lock(&self.mtls).clone();
        if let Some(m) = mtls {
            return connect_mtls(&m).await;
        }
        Endpoint::from_shared(self.opts.uri())
            .map_err(|e| format!("invalid control plane address {:?}: {e}", self.opts.address))?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5))
            .keep_alive_while_idle(true)
            .connect()
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", self.opts.address))
    }

    async fn session<S: ConfigSink>(&self, sink: &mut S) -> Ended {
        let channel = match self.connect().await {
            Ok(c) => c,
            Err(e) => return Ended::Failed(e),
        };
        let mut client = MeshConfigClient::new(channel).max_decoding_message_size(MAX_MESSAGE);
        let (tx, rx) = mpsc::channel::<ProxyMessage>(16);
        let hello = |h: Hello| ProxyMessage {
            msg: Some(proxy_message::Msg::Hello(h)),
        };
        let mut admin = self.admin.subscribe();
        admin.mark_unchanged();
        if tx.send(hello(self.hello())).await.is_err() {
            return Ended::Failed("stream closed".into());
        }
        let mut inbound = match client.stream(ReceiverStream::new(rx)).await {
            Ok(r) => r.into_inner(),
            Err(s) => return Ended::Failed(format!("{}: {}", s.code(), s.message())),
        };
        {
            let mut st = lock(&self.status);
            st.connected = true;
            st.connects += 1;
        }
        tracing::info!(control_plane = %self.opts.address, "connected to the control plane");
        let mut batch: Vec<(ConfigType, String)> = Vec::new();
        let mut errors: Vec<String> = Vec::new();
        let mut got_config = false;
        loop {
            let msg = tokio::select! {
                m = inbound.message() => m,
                changed = admin.changed() => {
                    if changed.is_ok() && tx.send(hello(self.hello())).await.is_err() {
                        return Ended::Lost("stream closed".into());
                    }
                    continue;
                }
            };
            let update = match msg {
                Ok(Some(m)) => match m.msg {
                    Some(control_message::Msg::Update(u)) => u,
                    None => continue,
                },
                Ok(None) => {
                    let why = "the control plane closed the stream".to_string();
                    return if got_config {
                        Ended::Lost(why)
                    } else {
                        Ended::Failed(why)
                    };
                }
                Err(s) => {
                    let why = format!("{}: {}", s.code(), s.message());
                    return if got_config {
                        Ended::Lost(why)
                    } else {
                        Ended::Failed(why)
                    };
                }
            };
            let more = update.more;
            let cp_id = update.control_plane_id.clone();
            let ty = update.r#type();
            if !batch.iter().any(|(t, v)| *t == ty && *v == update.version) {
                batch.retain(|(t, _)| *t != ty);
                batch.push((ty, update.version.clone()));
            }
            self.absorb(update, &mut errors);
            if more {
                continue;
            }
            got_config = true;
            let answers = self.finish(
                std::mem::take(&mut batch),
                std::mem::take(&mut errors),
                cp_id,
                sink,
            );
            for a in answers {
                if tx.send(a).await.is_err() {
                    return Ended::Lost("stream closed".into());
                }
            }
        }
    }

    /// Adds one update to the held resources; problems go to `errors`.
    fn absorb(&self, u: Update, errors: &mut Vec<String>) {
        let ty = u.r#type();
        let mut held = lock(&self.held);
        if let Some(m) = &u.mesh_config {
            match serde_json::from_str::<MeshConfig>(m) {
                Ok(mesh) => held.mesh = Some((mesh, hash_str(m))),
                Err(e) => errors.push(format!("mesh config from the control plane: {e}")),
            }
        }
        if ty == ConfigType::Unspecified {
            return;
        }
        let set = held.set(ty);
        set.version = u.version.clone();
        if u.full {
            set.items.clear();
        }
        for w in &u.resources {
            let id = w.key.as_ref().map(ResourceKey::id).unwrap_or_default();
            match from_wire(w) {
                Ok(Parsed::Resource(r)) => {
                    set.items.insert(id, (*r, hash_str(&w.json)));
                }
                Ok(Parsed::Unrecognized(_)) => {}
                Err(diags) => {
                    set.items.remove(&id);
                    errors.extend(diags.iter().map(|d| d.to_string()));
                }
            }
        }
        for k in &u.removed {
            set.items.remove(&k.id());
        }
    }

    /// Compiles and applies after a complete push; returns the ACKs or NACKs to send.
    fn finish<S: ConfigSink>(
        &self,
        batch: Vec<(ConfigType, String)>,
        mut errors: Vec<String>,
        control_plane_id: String,
        sink: &mut S,
    ) -> Vec<ProxyMessage> {
        let o = &self.opts;
        let (result, rv, ev) = {
            let mut held = lock(&self.held);
            let rv = held.resources.version.clone();
            let ev = held.endpoints.version.clone();
            let version = format!("{rv}/{ev}");
            let fp = held.fingerprint();
            let result = if !errors.is_empty() {
                Err(errors.join("; "))
            } else if held.applied == Some(fp) {
                tracing::debug!(version = %version, "push changes nothing: config in force kept");
                Ok(false)
            } else {
                let resources: Vec<Resource> = held
                    .resources
                    .items
                    .values()
                    .chain(held.endpoints.items.values())
                    .map(|(r, _)| r.clone())
                    .collect();
                let mesh = held
                    .mesh
                    .as_ref()
                    .map(|(m, _)| m.clone())
                    .unwrap_or_default();
                let compiled = find_target(&resources, &o.workload_namespace, &o.workload_name)
                    .map_err(|e| e.to_string())
                    .and_then(|t| {
                        compile(&resources, &mesh, &t, &version)
                            .map_err(|e| format!("compile failed: {}", held.locate(&e.to_string())))
                    });
                match compiled {
                    Ok(config) => {
                        drop(held);
                        let r = sink.apply(ProxyConfigUpdate {
                            config,
                            resources_version: rv.clone(),
                            endpoints_version: ev.clone(),
                            types: batch.iter().map(|(t, _)| *t).collect(),
                            control_plane_id: control_plane_id.clone(),
                        });
                        held = lock(&self.held);
                        if r.is_ok() {
                            held.applied = Some(fp);
                        }
                        r.map(|()| true)
                    }
                    Err(e) => {
                        sink.rejected(&version, &e);
                        Err(e)
                    }
                }
            };
            if let Err(e) = &result {
                errors = vec![e.clone()];
            }
            (result, rv, ev)
        };
        {
            let mut st = lock(&self.status);
            st.control_plane_id = control_plane_id;
            st.resources_version.clone_from(&rv);
            st.endpoints_version.clone_from(&ev);
            match &result {
                Ok(_) => {
                    st.applied_version = format!("{rv}/{ev}");
                    st.last_error = None;
                }
                Err(e) => st.last_error = Some(e.clone()),
            }
        }
        if let Err(e) = &result {
            tracing::warn!(resources = %rv, endpoints = %ev, "config from the control plane rejected, the config in force keeps serving: {e}");
        }
        match &result {
            // The config in force is compiled from the current version of every type: ACK
            // them all (a type NACKed earlier is confirmed by the next config that works).
            Ok(_) => [(ConfigType::Resources, rv), (ConfigType::Endpoints, ev)]
                .into_iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(ty, version)| ProxyMessage {
                    msg: Some(proxy_message::Msg::Ack(Ack {
                        r#type: ty as i32,
                        version,
                    })),
                })
                .collect(),
            Err(_) => batch
                .into_iter()
                .map(|(ty, version)| ProxyMessage {
                    msg: Some(proxy_message::Msg::Nack(Nack {
                        r#type: ty as i32,
                        version,
                        error: errors.join("; "),
                    })),
                })
                .collect(),
        }
    }

    /// Asks the control plane's CA to sign `csr_pem` for this proxy's workload.
    pub async fn sign_certificate(
        &self,
        csr_pem: &str,
        ttl: Duration,
    ) -> Result<trellis_protocol::CertificateResponse, String> {
        self.request_certificate(csr_pem, ttl)
            .await
            .map_err(|s| format!("{}: {}", s.code(), s.message()))
    }

    /// [`Self::sign_certificate`] with the gRPC status; an unreachable control plane is
    /// `Unavailable`.
    async fn request_certificate(
        &self,
        csr_pem: &str,
        ttl: Duration,
    ) -> Result<trellis_protocol::CertificateResponse, tonic::Status> {
        let channel = self.connect().await.map_err(tonic::Status::unavailable)?;
        let mut client = MeshConfigClient::new(channel);
        client
            .sign_certificate(CsrRequest {
                token: self.opts.token.clone().unwrap_or_default(),
                workload_namespace: self.opts.workload_namespace.clone(),
                workload_name: self.opts.workload_name.clone(),
                csr_pem: csr_pem.to_string(),
                ttl_seconds: ttl.as_secs(),
            })
            .await
            .map(|r| r.into_inner())
    }

    /// The proxy's mesh identity from the control plane's CA: a first certificate for a fresh
    /// key (the control plane decides the identity from the workload; the key never leaves
    /// this process), then renewal at half-life through [`ControlPlaneIssuer`]. Waits, with
    /// jittered backoff, while the control plane is unreachable; a refusal (bad token, unknown
    /// workload, no CA) is returned at once.
    pub async fn mesh_identity(
        self: &Arc<Self>,
        ttl: Duration,
        options: trellis_identity::RotationOptions,
    ) -> Result<Arc<crate::security::MeshIdentity>, String> {
        let mut backoff = self.opts.backoff_min;
        loop {
            let request =
                trellis_identity::generate_key_and_bare_csr().map_err(|e| e.to_string())?;
            match self.request_certificate(&request.csr_pem, ttl).await {
                Ok(r) => {
                    let issued = issued_cert(&r).map_err(|e| e.to_string())?;
                    return crate::security::MeshIdentity::from_first_issuance(
                        &request,
                        &issued,
                        &r.spiffe_id,
                        ControlPlaneIssuer::new(self.clone(), ttl),
                        options,
                    );
                }
                Err(s) if s.code() == tonic::Code::Unavailable => {
                    let wait = backoff.mul_f64(rand::rng().random_range(0.5..=1.0));
                    tracing::info!(retry_in = ?wait, "workload certificate: {}", s.message());
                    tokio::time::sleep(wait).await;
                    backoff = (backoff * 2).min(self.opts.backoff_max);
                }
                Err(s) => {
                    return Err(format!(
                        "the control plane refused a workload certificate: {}: {}",
                        s.code(),
                        s.message()
                    ))
                }
            }
        }
    }
}

/// A channel to the control plane's mTLS port: TLS 1.3, the workload certificate presented,
/// the server required to be the control plane's identity from the mesh CA.
async fn connect_mtls(m: &ControlPlaneMtls) -> Result<Channel, String> {
    use crate::upstream::connect::{Alpn, MeshTlsProvider as _};
    let trust_domain = m.identity.manager().identity().trust_domain().to_string();
    let expected = trellis_protocol::control_plane_identity(&trust_domain, &m.root_namespace);
    let config = m
        .identity
        .client_config(std::slice::from_ref(&expected), Alpn::Http2)
        .ok_or_else(|| "no workload certificate for the mTLS channel".to_string())?;
    let address = m.address.clone();
    let connector = tower::service_fn(move |_: http::Uri| {
        let (config, address) = (config.clone(), address.clone());
        async move {
            let tcp = tokio::net::TcpStream::connect(&address).await?;
            tcp.set_nodelay(true)?;
            // The verifier checks the SPIFFE identity; the name only fills SNI.
            let name = rustls_pki_types::ServerName::try_from("trellis-control-plane")
                .map_err(std::io::Error::other)?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
        }
    });
    Endpoint::from_shared(format!("http://{}", m.address))
        .map_err(|e| format!("invalid control plane mTLS address {:?}: {e}", m.address))?
        .connect_timeout(Duration::from_secs(2))
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true)
        .connect_with_connector(connector)
        .await
        .map_err(|e| format!("cannot connect to {} (mTLS): {e}", m.address))
}

/// The leaf, chain and roots of a `SignCertificate` answer.
fn issued_cert(
    r: &trellis_protocol::CertificateResponse,
) -> trellis_identity::Result<trellis_identity::IssuedCert> {
    let chain = trellis_identity::pem::certs_from_pem(&r.cert_chain_pem, "issued chain")?;
    let leaf_pem = chain
        .first()
        .map(|c| trellis_identity::pem::certs_to_pem([c]))
        .ok_or_else(|| trellis_identity::Error::Issue("empty certificate chain".into()))?;
    Ok(trellis_identity::IssuedCert {
        leaf_pem,
        chain_pem: r.cert_chain_pem.clone(),
        root_pem: r.root_pem.clone(),
    })
}

/// A `trellis_identity::CertificateIssuer` backed by the control plane's CA
/// (`SignCertificate` with the bootstrap token).
#[derive(Clone)]
pub struct ControlPlaneIssuer {
    client: Arc<ControlClient>,
    ttl: Duration,
}

impl ControlPlaneIssuer {
    /// `ttl` zero: the CA's default.
    pub fn new(client: Arc<ControlClient>, ttl: Duration) -> Self {
        ControlPlaneIssuer { client, ttl }
    }
}

impl trellis_identity::CertificateIssuer for ControlPlaneIssuer {
    async fn issue(
        &self,
        csr_pem: String,
    ) -> trellis_identity::Result<trellis_identity::IssuedCert> {
        let r = self
            .client
            .sign_certificate(&csr_pem, self.ttl)
            .await
            .map_err(trellis_identity::Error::Issue)?;
        issued_cert(&r)
    }
}

/// A proxy driven by a control plane.
pub struct ControlledProxy {
    pub proxy: RunningProxy,
    pub client: Arc<ControlClient>,
    task: tokio::task::JoinHandle<()>,
}

impl ControlledProxy {
    /// Stops following the control plane (the proxy keeps serving what it has).
    pub fn detach(&self) {
        self.task.abort();
    }

    /// Stops following the control plane and shuts the proxy down.
    pub async fn shutdown(&self, deadline: Duration) {
        self.task.abort();
        self.proxy.shutdown(deadline).await;
    }
}

impl Drop for ControlledProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts the client and, with the first config that compiles, the proxy runtime; later
/// configs are applied to it. Resolves once the proxy serves (waits for the control plane
/// as long as it takes; wrap it in a timeout to bound that). Must be called within Tokio.
pub async fn start_proxy(
    client_opts: ControlClientOptions,
    runtime_opts: RuntimeOptions,
) -> ControlledProxy {
    let client = ControlClient::new(ControlClientOptions {
        admin_addr: client_opts
            .admin_addr
            .or(runtime_opts.admin.filter(|a| a.port() != 0)),
        ..client_opts
    });
    let (started_tx, mut started_rx) = watch::channel::<Option<RunningProxy>>(None);
    let sink = RuntimeSink {
        running: None,
        options: runtime_opts,
        client: client.clone(),
        started: started_tx,
    };
    let runner = client.clone();
    let task = tokio::spawn(async move { runner.run(sink).await });
    let proxy = loop {
        if let Some(p) = started_rx.borrow_and_update().clone() {
            break p;
        }
        if started_rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    ControlledProxy {
        proxy,
        client,
        task,
    }
}

/// Starts the runtime with the first config, applies later ones; compile rejections are
/// recorded for the proxy's `/server_info` too.
struct RuntimeSink {
    running: Option<RunningProxy>,
    options: RuntimeOptions,
    client: Arc<ControlClient>,
    started: watch::Sender<Option<RunningProxy>>,
}

impl ConfigSink for RuntimeSink {
    fn apply(&mut self, update: ProxyConfigUpdate) -> Result<(), String> {
        match &self.running {
            Some(p) => p.apply(update.config).map_err(|e| e.to_string()),
            None => {
                let p = ProxyRuntime::start(update.config, self.options.clone())
                    .map_err(|e| e.to_string())?;
                self.client.set_admin_addr(p.admin_addr());
                self.running = Some(p.clone());
                self.started.send_replace(Some(p));
                Ok(())
            }
        }
    }

    fn rejected(&mut self, version: &str, error: &str) {
        if let Some(p) = &self.running {
            p.report_rejected(version, error);
        }
    }
}
