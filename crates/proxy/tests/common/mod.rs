//! Test support: a `ProxyConfig` builder, real upstream servers (hyper, HTTP/1.1 + HTTP/2,
//! reporting what they received), the proxy served on a real socket, and clients.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use trellis_model::config::*;
use trellis_proxy::{ConnectionInfo, ProxyState};

pub type BoxBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

// ---------------------------------------------------------------------------------------
// Config builder

pub fn base_config() -> ProxyConfig {
    ProxyConfig {
        warnings: Vec::new(),
        version: "test".into(),
        node: NodeInfo {
            kind: ProxyKind::Gateway,
            id: "gw.test".into(),
            namespace: "test".into(),
            labels: BTreeMap::new(),
            service_account: "default".into(),
            ip: None,
            locality: None,
        },
        mesh: MeshSettings {
            trust_domain: "cluster.local".into(),
            outbound_allow_any: true,
            access_log_file: String::new(),
            access_log_json: false,
        },
        listeners: vec![],
        routes: BTreeMap::new(),
        clusters: BTreeMap::new(),
        endpoints: BTreeMap::new(),
        secrets: BTreeMap::new(),
        security: Default::default(),
        tracing: Default::default(),
    }
}

pub fn cluster(name: &str) -> Cluster {
    Cluster {
        name: name.into(),
        service: ServiceKey {
            host: format!("{name}.test.svc.cluster.local"),
            port: 80,
        },
        subset: None,
        discovery: Discovery::Eds,
        protocol: UpstreamProtocol::Http1,
        lb: LbPolicy::LeastRequest,
        connect_timeout: Duration::from_secs(2),
        pool: ConnectionPool::default(),
        outlier: None,
        tls: UpstreamTls::None,
        auto_mtls: false,
        destination_rule: None,
    }
}

pub fn endpoint(addr: SocketAddr) -> Endpoint {
    Endpoint {
        address: EndpointAddress::Socket(addr),
        labels: BTreeMap::new(),
        weight: 1,
        identity: None,
        mesh: false,
        locality: None,
        priority: 0,
    }
}

/// Builds a config around one route table named `http`.
#[derive(Default)]
pub struct Builder {
    vhosts: Vec<VirtualHost>,
    clusters: Vec<(Cluster, Vec<SocketAddr>)>,
}

impl Builder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn vhost(mut self, domains: &[&str], routes: Vec<Route>) -> Self {
        self.vhosts.push(VirtualHost {
            name: domains[0].to_string(),
            domains: domains.iter().map(|d| d.to_string()).collect(),
            require_tls: false,
            routes,
        });
        self
    }

    pub fn vhost_tls(mut self, domains: &[&str], routes: Vec<Route>) -> Self {
        self = self.vhost(domains, routes);
        self.vhosts.last_mut().unwrap().require_tls = true;
        self
    }

    pub fn cluster(mut self, c: Cluster, endpoints: &[SocketAddr]) -> Self {
        self.clusters.push((c, endpoints.to_vec()));
        self
    }

    /// A default cluster named `name` with these endpoints.
    pub fn simple(self, name: &str, endpoints: &[SocketAddr]) -> Self {
        self.cluster(cluster(name), endpoints)
    }

    pub fn build(self) -> ProxyConfig {
        let mut cfg = base_config();
        cfg.routes.insert(
            "http".into(),
            Arc::new(RouteTable {
                name: "http".into(),
                virtual_hosts: self.vhosts,
            }),
        );
        for (c, eps) in self.clusters {
            cfg.endpoints.insert(
                c.name.clone(),
                Arc::new(ClusterEndpoints {
                    endpoints: eps.into_iter().map(endpoint).collect(),
                }),
            );
            cfg.clusters.insert(c.name.clone(), Arc::new(c));
        }
        cfg
    }
}

pub fn route(rule: &str, matches: Vec<RequestMatch>, action: RouteAction) -> Route {
    Route {
        origin: RouteOrigin {
            virtual_service: "test/vs".into(),
            rule: rule.into(),
        },
        matches,
        action,
        request_headers: HeaderOps::default(),
        response_headers: HeaderOps::default(),
        timeout: None,
        retry: None,
        fault: None,
        mirrors: vec![],
        cors: None,
    }
}

pub fn dest(cluster: &str, weight: u32) -> WeightedCluster {
    WeightedCluster {
        cluster: cluster.into(),
        weight,
        request_headers: HeaderOps::default(),
        response_headers: HeaderOps::default(),
    }
}

pub fn to(cluster: &str) -> RouteAction {
    weighted(vec![dest(cluster, 100)])
}

pub fn weighted(clusters: Vec<WeightedCluster>) -> RouteAction {
    let total_weight = clusters.iter().map(|c| c.weight).sum();
    RouteAction::Forward(ForwardAction {
        clusters: WeightedClusters {
            clusters,
            total_weight,
        },
        rewrite: None,
    })
}

pub fn prefix(p: &str) -> RequestMatch {
    RequestMatch {
        uri: Some(StringMatcher::Prefix(p.into())),
        ..Default::default()
    }
}

pub fn exact(p: &str) -> RequestMatch {
    RequestMatch {
        uri: Some(StringMatcher::Exact(p.into())),
        ..Default::default()
    }
}

pub fn retry(attempts: u32, on: &[&str]) -> RetryPolicy {
    RetryPolicy {
        attempts,
        per_try_timeout: None,
        retry_on: on.iter().map(|s| s.to_string()).collect(),
        retriable_status_codes: vec![],
        retry_other_host: false,
        backoff_base: Duration::from_millis(25),
    }
}

// ---------------------------------------------------------------------------------------
// The proxy on a real socket

pub struct Proxy {
    pub addr: SocketAddr,
    pub state: Arc<ProxyState>,
}

/// Logs (access log included) to the test output; `RUST_LOG` filters.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "access=info,warn".into()),
        )
        .with_test_writer()
        .try_init();
}

impl Proxy {
    pub async fn start(config: ProxyConfig) -> Proxy {
        Self::start_with(config, Scheme::Http, 80).await
    }

    pub async fn start_with(config: ProxyConfig, scheme: Scheme, port: u16) -> Proxy {
        init_tracing();
        let state = ProxyState::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let st = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((sock, peer)) = listener.accept().await else {
                    continue;
                };
                let _ = sock.set_nodelay(true);
                let conn = ConnectionInfo {
                    listener: "test".into(),
                    listener_port: port,
                    local_addr: sock.local_addr().unwrap(),
                    peer_addr: peer,
                    route_table: "http".into(),
                    scheme,
                    sni: None,
                    peer_identity: None,
                    peer_cert_sha256: None,
                };
                tokio::spawn(trellis_proxy::http::serve_connection(
                    sock,
                    conn,
                    st.clone(),
                ));
            }
        });
        Proxy { addr, state }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

// ---------------------------------------------------------------------------------------
// Upstreams

/// What an upstream received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub version: http::Version,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// 1-based request number at this upstream.
    pub n: usize,
}

/// What an upstream answers.
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub delay: Duration,
    pub trailers: Option<HeaderMap>,
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            headers: vec![],
            body: String::new(),
            delay: Duration::ZERO,
            trailers: None,
        }
    }
    pub fn delayed(mut self, d: Duration) -> Reply {
        self.delay = d;
        self
    }
}

pub type Handler = Arc<dyn Fn(&Seen) -> Reply + Send + Sync>;

pub struct Upstream {
    pub name: String,
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// Connections accepted.
    pub conns: Arc<AtomicUsize>,
}

/// The echo reply: `upstream=`, `method=`, `path=`, `version=`, then `h:name=value` lines.
pub fn echo_reply(name: &str, s: &Seen) -> Reply {
    let mut body = format!(
        "upstream={name}\nmethod={}\npath={}\nversion={:?}\n",
        s.method, s.path, s.version
    );
    for (k, v) in &s.headers {
        body.push_str(&format!("h:{}={}\n", k, v.to_str().unwrap_or("?")));
    }
    body.push_str(&format!("body={}\n", String::from_utf8_lossy(&s.body)));
    let mut status = 200;
    let mut delay = Duration::ZERO;
    if let Some(v) = s.headers.get("x-echo-status") {
        status = v.to_str().unwrap().parse().unwrap();
    }
    if let Some(v) = s.headers.get("x-echo-delay-ms") {
        delay = Duration::from_millis(v.to_str().unwrap().parse().unwrap());
    }
    Reply {
        status,
        headers: vec![("x-upstream".into(), name.into())],
        body,
        delay,
        trailers: None,
    }
}

impl Upstream {
    pub async fn echo(name: &str) -> Upstream {
        let n = name.to_string();
        Self::start(name, Arc::new(move |s: &Seen| echo_reply(&n, s))).await
    }

    pub async fn start(name: &str, handler: Handler) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(name, listener, handler)
    }

    pub fn serve(name: &str, listener: TcpListener, handler: Handler) -> Upstream {
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (h, s) = (hits.clone(), seen.clone());
        let conns = Arc::new(AtomicUsize::new(0));
        let c = conns.clone();
        tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    continue;
                };
                c.fetch_add(1, Ordering::SeqCst);
                let (handler, hits, seen) = (handler.clone(), h.clone(), s.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let (handler, hits, seen) = (handler.clone(), hits.clone(), seen.clone());
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let n = hits.fetch_add(1, Ordering::SeqCst) + 1;
                            let s = Seen {
                                method: parts.method.to_string(),
                                path: parts
                                    .uri
                                    .path_and_query()
                                    .map(|p| p.to_string())
                                    .unwrap_or_default(),
                                version: parts.version,
                                headers: parts.headers,
                                body,
                                n,
                            };
                            seen.lock().unwrap().push(s.clone());
                            let reply = handler(&s);
                            if !reply.delay.is_zero() {
                                tokio::time::sleep(reply.delay).await;
                            }
                            let mut frames: Vec<Result<Frame<Bytes>, Infallible>> = Vec::new();
                            if !reply.body.is_empty() {
                                frames.push(Ok(Frame::data(Bytes::from(reply.body))));
                            }
                            if let Some(t) = reply.trailers {
                                frames.push(Ok(Frame::trailers(t)));
                            }
                            let body: BoxBody = futures_stream(frames).boxed();
                            let mut resp = Response::new(body);
                            *resp.status_mut() = StatusCode::from_u16(reply.status).unwrap();
                            for (k, v) in reply.headers {
                                resp.headers_mut().append(
                                    http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                                    v.parse().unwrap(),
                                );
                            }
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(sock), svc)
                        .await;
                });
            }
        });
        Upstream {
            name: name.into(),
            addr,
            hits,
            seen,
            conns,
        }
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    pub fn last(&self) -> Seen {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("upstream saw a request")
    }
}

/// A stream over ready frames (no futures-util dependency).
pub fn futures_stream<T: Unpin>(items: Vec<T>) -> VecStream<T> {
    VecStream(items.into_iter())
}

pub struct VecStream<T>(std::vec::IntoIter<T>);

impl hyper::body::Body for VecStream<Result<Frame<Bytes>, Infallible>> {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        std::task::Poll::Ready(self.0.next())
    }
}

/// An address nothing listens on.
pub async fn dead_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    drop(l);
    a
}

// ---------------------------------------------------------------------------------------
// Clients

pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
    pub trailers: Option<HeaderMap>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    /// A field of an echo body (`upstream`, `path`, `h:x-foo`, ...).
    pub fn echo(&self, key: &str) -> Option<String> {
        let prefix = format!("{key}=");
        self.body
            .lines()
            .find_map(|l| l.strip_prefix(&prefix).map(str::to_string))
    }
}

/// A keep-alive HTTP/1.1 client connection to the proxy.
pub struct H1Client {
    sender: hyper::client::conn::http1::SendRequest<BoxBody>,
}

impl H1Client {
    pub async fn connect(addr: SocketAddr) -> H1Client {
        let s = TcpStream::connect(addr).await.unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
            .await
            .unwrap();
        tokio::spawn(conn);
        H1Client { sender }
    }

    pub async fn send(&mut self, req: Request<BoxBody>) -> Resp {
        self.sender.ready().await.unwrap();
        let resp = self.sender.send_request(req).await.unwrap();
        read(resp).await
    }

    pub async fn get(&mut self, host: &str, path: &str, headers: &[(&str, &str)]) -> Resp {
        self.send(req("GET", host, path, headers, "")).await
    }
}

pub async fn read(resp: Response<Incoming>) -> Resp {
    let (parts, body) = resp.into_parts();
    let collected = body.collect().await.unwrap();
    let trailers = collected.trailers().cloned();
    Resp {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: String::from_utf8_lossy(&collected.to_bytes()).into_owned(),
        trailers,
    }
}

pub fn req(
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Request<BoxBody> {
    let mut r = Request::builder()
        .method(method)
        .uri(path)
        .header("host", host);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    r.body(Full::new(Bytes::from(body.to_string())).boxed())
        .unwrap()
}

/// One request on a fresh HTTP/1.1 connection.
pub async fn get(addr: SocketAddr, host: &str, path: &str, headers: &[(&str, &str)]) -> Resp {
    H1Client::connect(addr).await.get(host, path, headers).await
}

/// An HTTP/2 (prior knowledge) client connection.
pub struct H2Client {
    sender: hyper::client::conn::http2::SendRequest<BoxBody>,
    addr: SocketAddr,
}

impl H2Client {
    pub async fn connect(addr: SocketAddr) -> H2Client {
        let s = TcpStream::connect(addr).await.unwrap();
        let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(TokioIo::new(s))
            .await
            .unwrap();
        tokio::spawn(conn);
        H2Client { sender, addr }
    }

    pub async fn send(
        &mut self,
        method: &str,
        authority: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Resp {
        let mut r = Request::builder()
            .method(method)
            .uri(format!("http://{authority}{path}"))
            .version(http::Version::HTTP_2);
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        let resp = self
            .sender
            .send_request(r.body(Full::new(body).boxed()).unwrap())
            .await
            .unwrap();
        read(resp).await
    }
}

/// Runs curl with these arguments; returns (exit ok, stdout, stderr).
pub async fn curl(args: Vec<String>) -> (bool, String, String) {
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new("curl")
            .args(["-sS", "--max-time", "10"])
            .args(&args)
            .output()
            .expect("curl installed");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

pub fn have(cmd: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Raw bytes in, raw response out (until the proxy closes or `timeout`).
pub async fn raw(addr: SocketAddr, bytes: &[u8], timeout: Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(timeout, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}
