//! The gRPC service: config streams (one task per connected proxy), the CA, and status.
//!
//! A connection task follows the published snapshots: on connect it sends a full snapshot of
//! each type (chunked, `more` set on all but the last message), then, for every new snapshot,
//! only what changed *for this proxy* (the snapshot's change list filtered by the proxy's
//! scope; a full diff against what it holds when its scope changed or it skipped versions).
//! An endpoint-only change therefore produces an ENDPOINTS update and nothing else.
//!
//! What a proxy holds is known without per-proxy bookkeeping: the snapshot of its last push
//! (shared by every proxy at that version) filtered by the scope of then. Updates are built
//! chunk by chunk as the stream takes them, in messages of at most `CHUNK_BYTES` of resources,
//! so a thousand proxies syncing at once do not each hold a copy of their config
//! (`examples/scale.rs` measures this).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use trellis_identity::SpiffeId;
use trellis_protocol::{
    control_message, proxy_message, v1, CertificateResponse, ConfigType, ControlMessage,
    CsrRequest, Hello, ProxyMessage, ResourceKey, StatusRequest, StatusResponse, Update,
};

use crate::core::{ConnState, Core};
use crate::metrics::label;
use crate::mtls::{peer_is_workload, MeshPeer};
use crate::scope::{find_workload, Scope};
use crate::snapshot::{Entry, Snapshot};
use crate::source::unix_now;
use crate::status::{PendingChange, ProxyStatus, MAX_PENDING_CHANGES};

/// Most resources per message of a large update.
const CHUNK: usize = 1000;
/// A message of a large update ends once its resources' JSON reaches this size. The gRPC
/// encoder keeps a buffer as large as the largest message it sent for the life of the stream,
/// so large messages cost memory per connected proxy.
const CHUNK_BYTES: usize = 32 * 1024;
/// Updates queued per stream ahead of the encoder (built as they are queued).
const STREAM_QUEUE: usize = 4;
/// How long a new stream may take to say Hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) struct Service {
    pub core: Arc<Core>,
}

/// Constant-time comparison of tokens.
fn token_matches(expected: &str, given: &str) -> bool {
    let (a, b) = (expected.as_bytes(), given.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[tonic::async_trait]
impl trellis_protocol::MeshConfig for Service {
    type StreamStream = ReceiverStream<Result<ControlMessage, Status>>;

    async fn stream(
        &self,
        request: Request<Streaming<ProxyMessage>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let peer = request.remote_addr();
        let mesh_peer = mesh_peer(&request);
        let mut inbound = request.into_inner();
        let hello = match tokio::time::timeout(HELLO_TIMEOUT, inbound.message()).await {
            Ok(Ok(Some(ProxyMessage {
                msg: Some(proxy_message::Msg::Hello(h)),
            }))) => h,
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(Status::deadline_exceeded("no Hello within 10s")),
            _ => {
                return Err(Status::invalid_argument(
                    "the first message must be a Hello",
                ))
            }
        };
        if hello.workload_namespace.is_empty() || hello.workload_name.is_empty() {
            return Err(Status::invalid_argument(
                "Hello needs workload_namespace and workload_name",
            ));
        }
        match &mesh_peer {
            // mTLS channel: the certificate authenticates; it must be the workload's.
            Some(id) => {
                if let Err(s) = authorize_peer(
                    &self.core,
                    id,
                    &hello.workload_namespace,
                    &hello.workload_name,
                ) {
                    tracing::warn!(proxy = %hello.proxy_id, peer = %id, "config stream refused: {}", s.message());
                    return Err(s);
                }
            }
            None => {
                if let Some(t) = &self.core.token {
                    if !token_matches(t, &hello.token) {
                        tracing::warn!(proxy = %hello.proxy_id, peer = ?peer, "config stream refused: bad bootstrap token");
                        return Err(Status::unauthenticated("invalid bootstrap token"));
                    }
                }
            }
        }
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        let conn = Conn::new(self.core.clone(), hello, peer, tx);
        tokio::spawn(conn.run(inbound));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn sign_certificate(
        &self,
        request: Request<CsrRequest>,
    ) -> Result<Response<CertificateResponse>, Status> {
        let core = &self.core;
        let mesh_peer = mesh_peer(&request);
        let req = request.into_inner();
        let result = sign(core, &req, mesh_peer.as_ref());
        match &result {
            Ok(r) => {
                core.metrics.certs_issued.inc();
                tracing::info!(workload = %format!("{}/{}", req.workload_namespace, req.workload_name), identity = %r.spiffe_id, "certificate issued");
            }
            Err(s) => {
                core.metrics.cert_errors.inc();
                tracing::warn!(workload = %format!("{}/{}", req.workload_namespace, req.workload_name), "certificate refused: {}", s.message());
            }
        }
        result.map(Response::new)
    }

    async fn get_status(
        &self,
        _request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let json = serde_json::to_string(&self.core.status())
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(StatusResponse { json }))
    }
}

/// The proxy's certificate identity, when the request came over the mTLS channel.
fn mesh_peer<T>(request: &Request<T>) -> Option<SpiffeId> {
    request
        .extensions()
        .get::<Option<MeshPeer>>()
        .and_then(|p| p.as_ref())
        .map(|p| p.0.clone())
}

/// On the mTLS channel a proxy speaks only for a workload whose service account its
/// certificate names.
fn authorize_peer(core: &Core, peer: &SpiffeId, ns: &str, name: &str) -> Result<(), Status> {
    let snap = core.snapshot.borrow().clone();
    let (_, sa) = find_workload(&snap, ns, name).ok_or_else(|| {
        Status::not_found(format!(
            "workload {ns}/{name} is not in the config (a Pod, Deployment or WorkloadEntry)"
        ))
    })?;
    if peer_is_workload(peer, &snap.mesh.trust_domain, ns, &sa) {
        Ok(())
    } else {
        Err(Status::permission_denied(format!(
            "certificate {peer} is not workload {ns}/{name} (service account {sa})"
        )))
    }
}

fn sign(
    core: &Core,
    req: &CsrRequest,
    mesh_peer: Option<&SpiffeId>,
) -> Result<CertificateResponse, Status> {
    match mesh_peer {
        Some(peer) => authorize_peer(core, peer, &req.workload_namespace, &req.workload_name)?,
        None => {
            let Some(expected) = &core.token else {
                return Err(Status::failed_precondition(
                    "this control plane has no bootstrap token: it issues no certificates",
                ));
            };
            if !token_matches(expected, &req.token) {
                return Err(Status::unauthenticated("invalid bootstrap token"));
            }
        }
    }
    let Some(ca) = &core.ca else {
        return Err(Status::unavailable("no CA configured"));
    };
    let snap = core.snapshot.borrow().clone();
    let (_, sa) =
        find_workload(&snap, &req.workload_namespace, &req.workload_name).ok_or_else(|| {
            Status::not_found(format!(
                "workload {}/{} is not in the config (a Pod, Deployment or WorkloadEntry)",
                req.workload_namespace, req.workload_name
            ))
        })?;
    // The identity is the workload's as the config says; the CSR's names are ignored.
    let id = SpiffeId::new(
        snap.mesh.trust_domain.as_str(),
        req.workload_namespace.as_str(),
        sa,
    )
    .map_err(|e| Status::invalid_argument(e.to_string()))?;
    let issued = ca
        .sign_csr(&req.csr_pem, &id, Duration::from_secs(req.ttl_seconds))
        .map_err(|e| Status::invalid_argument(format!("cannot sign the CSR: {e}")))?;
    Ok(CertificateResponse {
        cert_chain_pem: issued.chain_pem,
        root_pem: issued.root_pem,
        spiffe_id: id.to_uri(),
    })
}

/// One proxy's stream.
struct Conn {
    core: Arc<Core>,
    id: u64,
    hello: Hello,
    /// What the proxy holds: every entry of this snapshot (the one of its last push) that
    /// this scope admits. Shared with every proxy at the same version: a connection keeps no
    /// per-resource state.
    held: Option<(Arc<Snapshot>, Scope)>,
    /// Resources it holds, per type.
    held_count: [usize; 2],
    sent_mesh: Option<u64>,
    tx: mpsc::Sender<Result<ControlMessage, Status>>,
}

fn slot(ty: ConfigType) -> usize {
    match ty {
        ConfigType::Endpoints => 1,
        _ => 0,
    }
}

/// What one push sends of one type.
struct Planned {
    ty: ConfigType,
    full: bool,
    /// With whether the proxy held an older version of it.
    added: Vec<(Arc<Entry>, bool)>,
    removed: Vec<String>,
    mesh: Option<String>,
}

impl Conn {
    fn new(
        core: Arc<Core>,
        hello: Hello,
        peer: Option<SocketAddr>,
        tx: mpsc::Sender<Result<ControlMessage, Status>>,
    ) -> Self {
        let id = core
            .next_conn
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let proxy_id = if hello.proxy_id.is_empty() {
            format!("{}.{}", hello.workload_name, hello.workload_namespace)
        } else {
            hello.proxy_id.clone()
        };
        let status = ProxyStatus {
            id: proxy_id,
            workload_namespace: hello.workload_namespace.clone(),
            workload_name: hello.workload_name.clone(),
            cluster: if hello.cluster.is_empty() {
                "local".into()
            } else {
                hello.cluster.clone()
            },
            proxy_version: hello.proxy_version.clone(),
            admin_addr: hello.admin_addr.clone(),
            peer: peer.map(|p| p.to_string()).unwrap_or_default(),
            connected_at: unix_now(),
            proxy_kind: "unknown".into(),
            types: Vec::new(),
        };
        core.conns.lock().unwrap_or_else(|p| p.into_inner()).insert(
            id,
            ConnState {
                status,
                types: Default::default(),
            },
        );
        core.metrics.connected.inc();
        Conn {
            core,
            id,
            hello,
            held: None,
            held_count: [0; 2],
            sent_mesh: None,
            tx,
        }
    }

    async fn run(mut self, mut inbound: Streaming<ProxyMessage>) {
        let mut snaps = self.core.snapshot.subscribe();
        let mut shutdown = self.core.shutdown.subscribe();
        let proxy = format!(
            "{}/{}",
            self.hello.workload_namespace, self.hello.workload_name
        );
        tracing::info!(proxy = %proxy, version = %self.hello.proxy_version, "proxy connected");
        let first = snaps.borrow_and_update().clone();
        let mut ok = self.push(&first).await;
        while ok {
            tokio::select! {
                changed = snaps.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let snap = snaps.borrow_and_update().clone();
                    ok = self.push(&snap).await;
                }
                msg = inbound.message() => match msg {
                    Ok(Some(m)) => self.on_message(m),
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!(proxy = %proxy, "stream error: {e}");
                        break;
                    }
                },
                _ = crate::core::stopped(&mut shutdown) => break,
            }
        }
        tracing::info!(proxy = %proxy, "proxy disconnected");
        self.core
            .conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
        self.core.metrics.connected.dec();
    }

    fn on_message(&mut self, m: ProxyMessage) {
        let (ty, version, nack) = match m.msg {
            Some(proxy_message::Msg::Ack(a)) => (a.r#type(), a.version, None),
            Some(proxy_message::Msg::Nack(n)) => (n.r#type(), n.version, Some(n.error)),
            Some(proxy_message::Msg::Hello(h)) => {
                // A later Hello updates what the proxy says about itself (its admin address
                // is known only once its runtime started).
                let mut conns = self.core.conns.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(state) = conns.get_mut(&self.id) {
                    state.status.admin_addr = h.admin_addr;
                    state.status.proxy_version = h.proxy_version;
                }
                return;
            }
            None => return,
        };
        if ty == ConfigType::Unspecified {
            return;
        }
        let Ok(v) = version.parse::<u64>() else {
            return;
        };
        let mut conns = self.core.conns.lock().unwrap_or_else(|p| p.into_inner());
        let Some(state) = conns.get_mut(&self.id) else {
            return;
        };
        let track = &mut state.types[slot(ty)];
        match nack {
            None => {
                self.core.metrics.acks.get_or_create(&label(ty)).inc();
                track.acked(v);
            }
            Some(error) => {
                self.core.metrics.nacks.get_or_create(&label(ty)).inc();
                tracing::warn!(proxy = %state.status.id, r#type = %ty, version = v, "proxy rejected config: {error}");
                track.nacked(v, error, unix_now());
            }
        }
    }

    /// Sends what `snap` changes for this proxy. False when the stream is gone.
    ///
    /// What the proxy holds is `held`: the entries of the snapshot of its last push that the
    /// scope of then admits. The delta is taken between that and `snap` under the new scope:
    /// over the snapshot's change list when nothing else can differ (same scope, no version
    /// skipped), else over every id of both snapshots.
    async fn push(&mut self, snap: &Arc<Snapshot>) -> bool {
        if snap.version == 0 {
            return true; // nothing accepted yet
        }
        let scope = Scope::compute(
            snap,
            &self.hello.workload_namespace,
            &self.hello.workload_name,
        );
        let prev = self.held.take();
        let first = prev.is_none();
        let mut plans = Vec::new();
        for ty in ConfigType::ALL {
            let mut added: Vec<(Arc<Entry>, bool)> = Vec::new();
            let mut removed: Vec<String> = Vec::new();
            match &prev {
                None => added.extend(
                    snap.entries
                        .values()
                        .filter(|e| e.ty == ty && scope.admits(e))
                        .map(|e| (e.clone(), false)),
                ),
                Some((old, old_scope)) => {
                    let mut diff = |id: &String| {
                        let held = old
                            .entries
                            .get(id)
                            .filter(|e| e.ty == ty && old_scope.admits(e));
                        let now = snap
                            .entries
                            .get(id)
                            .filter(|e| e.ty == ty && scope.admits(e));
                        match (held, now) {
                            (Some(h), Some(n)) if h.hash == n.hash => {}
                            (h, Some(n)) => added.push((n.clone(), h.is_some())),
                            (Some(_), None) => removed.push(id.clone()),
                            (None, None) => {}
                        }
                    };
                    if *old_scope == scope && snap.changes.from_version == old.version {
                        snap.changes.of(ty).iter().for_each(&mut diff);
                    } else if *old_scope != scope || !Arc::ptr_eq(old, snap) {
                        let ids: std::collections::BTreeSet<&String> =
                            old.entries.keys().chain(snap.entries.keys()).collect();
                        ids.into_iter().for_each(&mut diff);
                    }
                }
            }
            let mesh = (ty == ConfigType::Resources && self.sent_mesh != Some(snap.mesh_hash))
                .then(|| snap.mesh_json.to_string());
            if first || !added.is_empty() || !removed.is_empty() || mesh.is_some() {
                plans.push(Planned {
                    ty,
                    full: first,
                    added,
                    removed,
                    mesh,
                });
            }
        }
        drop(prev);
        let (found, is_gateway) = (scope.found, scope.is_gateway);
        self.held = Some((snap.clone(), scope));
        if plans.is_empty() {
            return true;
        }
        let version = snap.version.to_string();
        let mut tracked = Vec::new();
        for p in &plans {
            let count = &mut self.held_count[slot(p.ty)];
            if p.full {
                *count = 0;
            }
            let new = p.added.iter().filter(|(_, updated)| !updated).count();
            *count = (*count + new).saturating_sub(p.removed.len());
            // Only what status keeps is described.
            let changes: Vec<PendingChange> = p
                .added
                .iter()
                .map(|(e, updated)| PendingChange {
                    version: version.clone(),
                    change: if *updated { "updated" } else { "added" }.into(),
                    resource: key_display(&e.id),
                    location: format!("{}:{}", e.wire.file, e.wire.line),
                })
                .chain(p.removed.iter().map(|id| PendingChange {
                    version: version.clone(),
                    change: "removed".into(),
                    resource: key_display(id),
                    location: String::new(),
                }))
                .take(MAX_PENDING_CHANGES)
                .collect();
            let metrics = &self.core.metrics;
            metrics.pushes.get_or_create(&label(p.ty)).inc();
            metrics
                .push_resources
                .get_or_create(&label(p.ty))
                .inc_by(p.added.len() as u64);
            tracked.push((p.ty, *count, changes));
            if p.mesh.is_some() {
                self.sent_mesh = Some(snap.mesh_hash);
            }
        }
        {
            let mut conns = self.core.conns.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(state) = conns.get_mut(&self.id) {
                state.status.proxy_kind = match (found, is_gateway) {
                    (false, _) => "unknown",
                    (true, true) => "gateway",
                    (true, false) => "sidecar",
                }
                .into();
                for (ty, n, changes) in tracked {
                    state.types[slot(ty)].sent(snap.version, n, changes);
                }
            }
        }
        // Messages are built as they are sent: a full push never sits in memory whole.
        let plan_count = plans.len();
        for (i, mut p) in plans.into_iter().enumerate() {
            let mut removed: Vec<ResourceKey> = p
                .removed
                .iter()
                .filter_map(|id| ResourceKey::from_id(id))
                .collect();
            let mut start = 0;
            loop {
                let mut end = start;
                let mut bytes = 0;
                while end < p.added.len()
                    && (end == start || (end - start < CHUNK && bytes < CHUNK_BYTES))
                {
                    bytes += p.added[end].0.wire.json.len();
                    end += 1;
                }
                let last = end >= p.added.len();
                let update = Update {
                    r#type: p.ty as i32,
                    version: version.clone(),
                    full: p.full && start == 0,
                    resources: p.added[start..end]
                        .iter()
                        .map(|(e, _)| e.wire.clone())
                        .collect::<Vec<v1::Resource>>(),
                    removed: if last {
                        std::mem::take(&mut removed)
                    } else {
                        Vec::new()
                    },
                    more: !(last && i + 1 == plan_count),
                    mesh_config: if start == 0 { p.mesh.take() } else { None },
                    control_plane_id: self.core.id.clone(),
                };
                let msg = ControlMessage {
                    msg: Some(control_message::Msg::Update(update)),
                };
                if self.tx.send(Ok(msg)).await.is_err() {
                    return false;
                }
                if last {
                    break;
                }
                start = end;
            }
        }
        true
    }
}

/// `Kind ns/name` from an id.
fn key_display(id: &str) -> String {
    ResourceKey::from_id(id)
        .map(|k| k.to_string())
        .unwrap_or_else(|| id.to_string())
}
