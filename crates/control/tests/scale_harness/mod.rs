//! The control-plane scale workload and lightweight proxies, shared by the `scale` example
//! (the benchmark: `cargo run --release -p trellis-control --example scale`) and the
//! `scale_smoke` test (the same code at a size CI runs in seconds).
//!
//! - [`Workload`]: a generated mesh written as YAML files into a directory the control plane
//!   reads (its real config source): per namespace a Namespace, Services with one
//!   EndpointSlice each (the endpoints), Pods (the proxies' workloads), and for some services
//!   a DestinationRule (v1/v2 subsets, each selecting a Deployment) and a VirtualService
//!   splitting traffic by weight. It analyzes without Error messages.
//! - [`Workload::endpoint_change`] / [`Workload::route_change`]: one endpoint added to or
//!   removed from one service's EndpointSlice; one VirtualService's weights edited. Each
//!   rewrites one file (atomically, by rename), as an editor or a ConfigMap update would.
//! - [`spawn_proxies`]: lightweight proxies: real gRPC clients of `trellis.v1.MeshConfig`
//!   that say Hello for a workload, read every update and ACK each (type, version) once the
//!   push is complete (`more = false`), reporting every ACK as an [`AckEvent`]. They compile
//!   nothing.
//! - [`AckTracker`]: waits until every proxy that must receive a version has ACKed it.
//! - [`receivers`]: which proxies must receive a change to a resource, by the control
//!   plane's own scoping.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use trellis_control::scope::Scope;
use trellis_control::Snapshot;
use trellis_protocol::{
    control_message, proxy_message, Ack, ConfigType, Hello, MeshConfigClient, ProxyMessage,
};

/// Size of the generated mesh.
#[derive(Clone, Debug)]
pub struct WorkloadSize {
    pub namespaces: usize,
    pub services_per_namespace: usize,
    pub endpoints_per_service: usize,
    /// Services per namespace with a VirtualService and a DestinationRule (the first ones).
    pub routed_per_namespace: usize,
    /// Proxies in all, spread round-robin over the namespaces.
    pub proxies: usize,
}

impl WorkloadSize {
    pub fn services(&self) -> usize {
        self.namespaces * self.services_per_namespace
    }

    pub fn endpoints(&self) -> usize {
        self.services() * self.endpoints_per_service
    }
}

/// The identity a proxy says Hello with: a Pod of the config.
#[derive(Clone, Debug)]
pub struct ProxyIdentity {
    pub namespace: String,
    pub name: String,
}

/// The generated mesh and its current state (what the files say).
pub struct Workload {
    pub size: WorkloadSize,
    /// Extra endpoints per (namespace, service) index added by endpoint changes.
    extra_endpoints: BTreeMap<(usize, usize), usize>,
    /// v1 weight per (namespace, service) index of the routed services (v2 gets the rest).
    weights: BTreeMap<(usize, usize), u32>,
    /// Namespaces whose Services are exported only to themselves (`exportTo: .`).
    private: std::collections::BTreeSet<usize>,
}

/// One change written to the config directory.
#[derive(Clone, Debug)]
pub struct Change {
    /// Id (`Kind/namespace/name`) of the resource that changed.
    pub id: String,
    /// What was done, for logs.
    pub what: String,
}

pub fn namespace_name(ns: usize) -> String {
    format!("ns-{ns:02}")
}

pub fn service_name(svc: usize) -> String {
    format!("svc-{svc:03}")
}

/// Writes `text` to `dir/name` atomically (temp file + rename).
pub fn write_atomic(dir: &Path, name: &str, text: &str) {
    let path = dir.join(name);
    let tmp = path.with_file_name(format!(
        ".{}.tmp",
        path.file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
}

impl Workload {
    pub fn new(size: WorkloadSize) -> Self {
        assert!(size.namespaces <= 250 && size.services_per_namespace <= 250);
        assert!(size.endpoints_per_service < 250);
        assert!(size.routed_per_namespace <= size.services_per_namespace);
        let mut weights = BTreeMap::new();
        for ns in 0..size.namespaces {
            for svc in 0..size.routed_per_namespace {
                weights.insert((ns, svc), 80);
            }
        }
        Workload {
            size,
            extra_endpoints: BTreeMap::new(),
            weights,
            private: Default::default(),
        }
    }

    /// The proxies: proxy `i` runs in namespace `i % namespaces` as a Pod of service
    /// `(i / namespaces) % services_per_namespace`.
    pub fn proxies(&self) -> Vec<ProxyIdentity> {
        (0..self.size.proxies)
            .map(|i| {
                let (ns, svc, k) = self.proxy_slot(i);
                ProxyIdentity {
                    namespace: namespace_name(ns),
                    name: format!("{}-{k}", service_name(svc)),
                }
            })
            .collect()
    }

    fn proxy_slot(&self, i: usize) -> (usize, usize, usize) {
        let n = self.size.namespaces;
        let s = self.size.services_per_namespace;
        (i % n, (i / n) % s, i / (n * s))
    }

    /// Writes every file of the mesh into `dir` (one directory per namespace).
    pub fn write_all(&self, dir: &Path) {
        for ns in 0..self.size.namespaces {
            std::fs::create_dir_all(dir.join(namespace_name(ns))).unwrap();
            self.write_base(dir, ns);
            self.write_endpoints(dir, ns);
            self.write_routes(dir, ns);
            self.write_pods(dir, ns);
        }
    }

    fn write_base(&self, dir: &Path, ns: usize) {
        let nsn = namespace_name(ns);
        let mut t = format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {nsn}\n  labels: {{istio-injection: enabled}}\n"
        );
        let export = if self.private.contains(&ns) {
            ", annotations: {networking.istio.io/exportTo: \".\"}"
        } else {
            ""
        };
        for svc in 0..self.size.services_per_namespace {
            let s = service_name(svc);
            let _ = write!(
                t,
                "---
apiVersion: v1
kind: Service
metadata: {{name: {s}, namespace: {nsn}, labels: {{app: {s}}}{export}}}
spec:
  selector: {{app: {s}}}
  ports:
  - {{name: http, port: 80, targetPort: 8080, protocol: TCP}}
"
            );
            if svc < self.size.routed_per_namespace {
                let _ = write!(
                    t,
                    "---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {s}, namespace: {nsn}}}
spec:
  host: {s}
  trafficPolicy:
    connectionPool: {{tcp: {{maxConnections: 100}}}}
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
"
                );
            }
        }
        write_atomic(dir, &format!("{nsn}/base.yaml"), &t);
    }

    fn write_endpoints(&self, dir: &Path, ns: usize) {
        let nsn = namespace_name(ns);
        let mut t = String::new();
        for svc in 0..self.size.services_per_namespace {
            let s = service_name(svc);
            let n = self.size.endpoints_per_service
                + self.extra_endpoints.get(&(ns, svc)).copied().unwrap_or(0);
            let _ = write!(
                t,
                "---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {s}-slice, namespace: {nsn}, labels: {{kubernetes.io/service-name: {s}}}}}
addressType: IPv4
ports: [{{name: http, port: 8080, protocol: TCP}}]
endpoints:
"
            );
            for e in 0..n {
                let _ = writeln!(
                    t,
                    "- {{addresses: [10.{ns}.{svc}.{}], conditions: {{ready: true}}}}",
                    e + 1
                );
            }
        }
        write_atomic(dir, &format!("{nsn}/endpoints.yaml"), &t);
    }

    fn write_routes(&self, dir: &Path, ns: usize) {
        let nsn = namespace_name(ns);
        let mut t = String::new();
        for svc in 0..self.size.routed_per_namespace {
            let s = service_name(svc);
            let w = self.weights[&(ns, svc)];
            let _ = write!(
                t,
                "---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {s}, namespace: {nsn}}}
spec:
  hosts: [{s}]
  http:
  - route:
    - {{destination: {{host: {s}, subset: v1}}, weight: {w}}}
    - {{destination: {{host: {s}, subset: v2}}, weight: {}}}
    timeout: 5s
",
                100 - w
            );
        }
        write_atomic(dir, &format!("{nsn}/routes.yaml"), &t);
    }

    fn write_pods(&self, dir: &Path, ns: usize) {
        let nsn = namespace_name(ns);
        let mut t = String::new();
        for i in (ns..self.size.proxies).step_by(self.size.namespaces) {
            let (_, svc, k) = self.proxy_slot(i);
            let s = service_name(svc);
            let version = if k % 2 == 0 { "v1" } else { "v2" };
            let _ = write!(
                t,
                "---
apiVersion: v1
kind: Pod
metadata: {{name: {s}-{k}, namespace: {nsn}, labels: {{app: {s}, version: {version}}}}}
spec:
  serviceAccountName: {s}
  containers:
  - {{name: app, image: example/{s}, ports: [{{containerPort: 8080}}]}}
status: {{podIP: 10.{ns}.{svc}.{}}}
",
                250 - k % 5
            );
        }
        // Both subsets of every routed service select a workload (else IST0173, an Error).
        for svc in 0..self.size.routed_per_namespace {
            let s = service_name(svc);
            for version in ["v1", "v2"] {
                let _ = write!(
                    t,
                    "---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {s}-{version}, namespace: {nsn}}}
spec:
  selector: {{matchLabels: {{app: {s}, version: {version}}}}}
  template:
    metadata: {{labels: {{app: {s}, version: {version}}}}}
    spec:
      serviceAccountName: {s}
      containers:
      - {{name: app, image: example/{s}:{version}, ports: [{{containerPort: 8080}}]}}
"
                );
            }
        }
        write_atomic(dir, &format!("{nsn}/pods.yaml"), &t);
    }

    /// Exports the Services of namespace `ns` only to `ns` (or to everyone again), rewriting
    /// its `base.yaml`: proxies elsewhere stop (or start) seeing them and their endpoints.
    pub fn set_private(&mut self, dir: &Path, ns: usize, private: bool) {
        if private {
            self.private.insert(ns);
        } else {
            self.private.remove(&ns);
        }
        self.write_base(dir, ns);
    }

    /// (namespace, service) whose endpoints round `round` changes.
    fn endpoint_target(&self, round: usize) -> (usize, usize) {
        (
            (round * 7) % self.size.namespaces,
            (round * 13) % self.size.services_per_namespace,
        )
    }

    /// (namespace, service) whose VirtualService round `round` edits.
    fn route_target(&self, round: usize) -> (usize, usize) {
        assert!(self.size.routed_per_namespace > 0);
        (
            (round * 11) % self.size.namespaces,
            (round * 3) % self.size.routed_per_namespace,
        )
    }

    /// Id of the EndpointSlice round `round`'s endpoint change edits.
    pub fn endpoint_change_id(&self, round: usize) -> String {
        let (ns, svc) = self.endpoint_target(round);
        format!(
            "EndpointSlice/{}/{}-slice",
            namespace_name(ns),
            service_name(svc)
        )
    }

    /// Id of the VirtualService round `round`'s route change edits.
    pub fn route_change_id(&self, round: usize) -> String {
        let (ns, svc) = self.route_target(round);
        format!(
            "VirtualService/{}/{}",
            namespace_name(ns),
            service_name(svc)
        )
    }

    /// Round `round`'s endpoint change: one endpoint added to (or, if it had one added,
    /// removed from) one service, rewriting that namespace's `endpoints.yaml`.
    pub fn endpoint_change(&mut self, dir: &Path, round: usize) -> Change {
        let (ns, svc) = self.endpoint_target(round);
        let extra = self.extra_endpoints.entry((ns, svc)).or_default();
        let what = if *extra == 0 {
            *extra = 1;
            "endpoint added"
        } else {
            *extra = 0;
            "endpoint removed"
        };
        self.write_endpoints(dir, ns);
        Change {
            id: self.endpoint_change_id(round),
            what: format!("{what} in {}/{}", namespace_name(ns), service_name(svc)),
        }
    }

    /// Round `round`'s route change: one VirtualService's v1/v2 weights edited, rewriting
    /// that namespace's `routes.yaml`.
    pub fn route_change(&mut self, dir: &Path, round: usize) -> Change {
        let (ns, svc) = self.route_target(round);
        let w = self.weights.get_mut(&(ns, svc)).unwrap();
        let mut next = 10 + ((round as u32 * 7) % 80);
        if next == *w {
            next += 1;
        }
        *w = next;
        self.write_routes(dir, ns);
        Change {
            id: self.route_change_id(round),
            what: format!(
                "weights {next}/{} in VirtualService {}/{}",
                100 - next,
                namespace_name(ns),
                service_name(svc)
            ),
        }
    }
}

/// The proxies (indexes into `proxies`) that receive resource `id` of `snap`, by the control
/// plane's own scoping rules.
pub fn receivers(snap: &Snapshot, id: &str, proxies: &[ProxyIdentity]) -> Vec<usize> {
    let Some(entry) = snap.entries.get(id) else {
        panic!("{id} is not in snapshot {}", snap.version)
    };
    proxies
        .iter()
        .enumerate()
        .filter(|(_, p)| Scope::compute(snap, &p.namespace, &p.name).admits(entry))
        .map(|(i, _)| i)
        .collect()
}

/// One ACK a proxy sent.
#[derive(Clone, Debug)]
pub struct AckEvent {
    pub proxy: usize,
    pub ty: ConfigType,
    pub version: u64,
    /// When the ACK was handed to the stream.
    pub at: Instant,
    /// Whether the update was a full one.
    pub full: bool,
    /// Resources added or changed, and removed, by the update(s) of this type.
    pub resources: usize,
    pub removed: usize,
}

/// Connects one lightweight proxy per identity, `per_connection` proxies sharing each HTTP/2
/// connection (1: one connection per proxy, as real proxies). Returns once every stream is
/// open (Hello sent); the tasks run until their stream ends.
pub async fn spawn_proxies(
    addr: SocketAddr,
    proxies: &[ProxyIdentity],
    per_connection: usize,
    events: mpsc::UnboundedSender<AckEvent>,
) -> Vec<JoinHandle<()>> {
    let per_connection = per_connection.max(1);
    let mut tasks = Vec::with_capacity(proxies.len());
    let mut channel: Option<Channel> = None;
    for (i, p) in proxies.iter().enumerate() {
        if i % per_connection == 0 {
            channel = Some(connect(addr).await);
        }
        let client =
            MeshConfigClient::new(channel.clone().unwrap()).max_decoding_message_size(64 << 20);
        let (tx, rx) = mpsc::channel(8);
        tx.send(hello(p)).await.unwrap();
        let mut stream = client
            .clone()
            .stream(ReceiverStream::new(rx))
            .await
            .unwrap_or_else(|e| panic!("proxy {}/{}: stream refused: {e}", p.namespace, p.name))
            .into_inner();
        let events = events.clone();
        tasks.push(tokio::spawn(async move {
            // (type, version, full, resources, removed) of the push being received.
            let mut push: Vec<(ConfigType, u64, bool, usize, usize)> = Vec::new();
            loop {
                let msg = match stream.message().await {
                    Ok(Some(m)) => m,
                    Ok(None) | Err(_) => return,
                };
                let Some(control_message::Msg::Update(u)) = msg.msg else {
                    continue;
                };
                let ty = u.r#type();
                let version: u64 = u.version.parse().unwrap_or(0);
                match push.iter_mut().find(|x| x.0 == ty && x.1 == version) {
                    Some(x) => {
                        x.3 += u.resources.len();
                        x.4 += u.removed.len();
                    }
                    None => push.push((ty, version, u.full, u.resources.len(), u.removed.len())),
                }
                if u.more {
                    continue;
                }
                for (ty, version, full, resources, removed) in push.drain(..) {
                    let ack = ProxyMessage {
                        msg: Some(proxy_message::Msg::Ack(Ack {
                            r#type: ty as i32,
                            version: version.to_string(),
                        })),
                    };
                    if tx.send(ack).await.is_err() {
                        return;
                    }
                    let _ = events.send(AckEvent {
                        proxy: i,
                        ty,
                        version,
                        at: Instant::now(),
                        full,
                        resources,
                        removed,
                    });
                }
            }
        }));
    }
    tasks
}

async fn connect(addr: SocketAddr) -> Channel {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(10));
    let mut tries = 0;
    loop {
        match endpoint.connect().await {
            Ok(c) => return c,
            Err(e) if tries < 20 => {
                tries += 1;
                tracing::debug!("connect to {addr}: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("cannot connect to {addr}: {e}"),
        }
    }
}

fn hello(p: &ProxyIdentity) -> ProxyMessage {
    ProxyMessage {
        msg: Some(proxy_message::Msg::Hello(Hello {
            proxy_id: format!("{}.{}", p.name, p.namespace),
            workload_namespace: p.namespace.clone(),
            workload_name: p.name.clone(),
            token: String::new(),
            proxy_version: "scale-bench".into(),
            admin_addr: String::new(),
            cluster: String::new(),
        })),
    }
}

fn slot(ty: ConfigType) -> usize {
    match ty {
        ConfigType::Endpoints => 1,
        _ => 0,
    }
}

/// What the proxies ACKed, per proxy and type: the latest version and when.
pub struct AckTracker {
    rx: mpsc::UnboundedReceiver<AckEvent>,
    latest: Vec<[Option<(u64, Instant)>; 2]>,
    /// Every ACK received, in order (for checks after a round).
    pub log: Vec<AckEvent>,
}

/// How every expected proxy ACKed one version.
#[derive(Clone, Debug)]
pub struct Fanout {
    /// The last expected ACK.
    pub last: Instant,
    /// The first ACK of the version (any proxy).
    pub first: Instant,
    /// ACKs of this version from proxies that were not expected to receive it.
    pub unexpected: usize,
    /// Most resources (added/changed + removed) one proxy received in the update.
    pub max_resources: usize,
    /// Expected proxies that got a full update rather than a delta.
    pub full_updates: usize,
}

impl AckTracker {
    pub fn new(rx: mpsc::UnboundedReceiver<AckEvent>, proxies: usize) -> Self {
        AckTracker {
            rx,
            latest: vec![[None, None]; proxies],
            log: Vec::new(),
        }
    }

    fn record(&mut self, e: AckEvent) {
        let l = &mut self.latest[e.proxy][slot(e.ty)];
        if l.is_none_or(|(v, _)| v < e.version) {
            *l = Some((e.version, e.at));
        }
        self.log.push(e);
    }

    /// Waits until every proxy in `expected` has ACKed `version` (or later) of `ty`.
    pub async fn wait(
        &mut self,
        ty: ConfigType,
        version: u64,
        expected: &[usize],
        timeout: Duration,
    ) -> Result<Fanout, String> {
        let deadline = tokio::time::Instant::now() + timeout;
        let from = self.log.len();
        loop {
            let missing = expected
                .iter()
                .filter(|&&p| self.latest[p][slot(ty)].is_none_or(|(v, _)| v < version))
                .count();
            if missing == 0 {
                break;
            }
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(e)) => self.record(e),
                Ok(None) => return Err(format!("every proxy stream ended; {missing} missing")),
                Err(_) => {
                    return Err(format!(
                    "{missing} of {} proxies did not ACK {ty} version {version} within {timeout:?}",
                    expected.len()
                ))
                }
            }
        }
        // ACKs that were already queued.
        while let Ok(e) = self.rx.try_recv() {
            self.record(e);
        }
        let last = expected
            .iter()
            .map(|&p| self.latest[p][slot(ty)].unwrap().1)
            .max()
            .unwrap_or_else(Instant::now);
        let mut is_expected = vec![false; self.latest.len()];
        for &p in expected {
            is_expected[p] = true;
        }
        let mut f = Fanout {
            last,
            first: last,
            unexpected: 0,
            max_resources: 0,
            full_updates: 0,
        };
        for e in &self.log[from..] {
            if e.ty != ty || e.version != version {
                continue;
            }
            f.first = f.first.min(e.at);
            if !is_expected[e.proxy] {
                f.unexpected += 1;
            }
            f.max_resources = f.max_resources.max(e.resources + e.removed);
            if e.full {
                f.full_updates += 1;
            }
        }
        Ok(f)
    }

    /// Drops the log (keeps the latest versions).
    pub fn clear_log(&mut self) {
        self.log.clear();
    }
}

/// The `q` quantile (0..=1) of `v` (nearest rank); `v` need not be sorted.
pub fn quantile(v: &[Duration], q: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    let mut s = v.to_vec();
    s.sort();
    let rank = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len());
    s[rank - 1]
}
