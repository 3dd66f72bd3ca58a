//! Shared by the runtime tests: a test CA, hand-built configs, a tiny in-test HTTP handler
//! (the real HTTP engine lives elsewhere), and small HTTP/TLS clients.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use trellis_model::config::*;
use trellis_proxy::listener::{Dispatch, Io};
use trellis_proxy::{ConnectionInfo, ProxyState};

pub fn install_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// A CA that issues server and client certificates.
pub struct TestCa {
    pub pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        TestCa {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A leaf for `dns` names (CN = first name) plus optional URI SANs.
    pub fn leaf(&self, dns: &[&str], uris: &[&str]) -> TlsSecret {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(dns.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        if let Some(cn) = dns.first().or(uris.first()) {
            params.distinguished_name.push(DnType::CommonName, *cn);
        }
        for u in uris {
            params
                .subject_alt_names
                .push(SanType::URI((*u).try_into().unwrap()));
        }
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        TlsSecret {
            cert_chain_pem: cert.pem(),
            private_key_pem: key.serialize_pem(),
            ca_pem: None,
            source: format!("test leaf {dns:?}"),
            files: None,
        }
    }

    /// A secret holding only this CA (for `client_ca`).
    pub fn as_ca_secret(&self) -> TlsSecret {
        TlsSecret {
            cert_chain_pem: self.pem.clone(),
            private_key_pem: String::new(),
            ca_pem: Some(self.pem.clone()),
            source: "test CA".into(),
            files: None,
        }
    }
}

pub fn node() -> NodeInfo {
    NodeInfo {
        kind: ProxyKind::Gateway,
        id: "ingressgateway.istio-system".into(),
        namespace: "istio-system".into(),
        labels: BTreeMap::from([("istio".to_string(), "ingressgateway".to_string())]),
        service_account: "istio-ingressgateway".into(),
        ip: None,
        locality: None,
    }
}

pub fn route_table(name: &str) -> Arc<RouteTable> {
    Arc::new(RouteTable {
        name: name.into(),
        virtual_hosts: vec![],
    })
}

/// A config with the given listeners and secrets; every route table the listeners name
/// exists (empty), plus one cluster with one endpoint.
pub fn config(
    version: &str,
    listeners: Vec<Listener>,
    secrets: Vec<(&str, TlsSecret)>,
) -> ProxyConfig {
    let mut routes = BTreeMap::new();
    for l in &listeners {
        for c in &l.filter_chains {
            if let ChainHandler::Http(m) = &c.handler {
                routes.insert(m.route_table.clone(), route_table(&m.route_table));
            }
        }
    }
    let cluster = "outbound|8080||echo.default.svc.cluster.local".to_string();
    ProxyConfig {
        warnings: Vec::new(),
        security: Default::default(),
        tracing: Default::default(),
        version: version.into(),
        node: node(),
        mesh: MeshSettings {
            trust_domain: "cluster.local".into(),
            outbound_allow_any: true,
            access_log_file: String::new(),
            access_log_json: false,
        },
        listeners,
        routes,
        clusters: BTreeMap::from([(
            cluster.clone(),
            Arc::new(Cluster {
                name: cluster.clone(),
                service: ServiceKey {
                    host: "echo.default.svc.cluster.local".into(),
                    port: 8080,
                },
                subset: None,
                discovery: Discovery::Eds,
                protocol: UpstreamProtocol::Auto,
                lb: LbPolicy::LeastRequest,
                connect_timeout: Duration::from_secs(10),
                pool: ConnectionPool::default(),
                outlier: None,
                tls: UpstreamTls::None,
                auto_mtls: false,
                destination_rule: None,
            }),
        )]),
        endpoints: BTreeMap::from([(
            cluster,
            Arc::new(ClusterEndpoints {
                endpoints: vec![Endpoint {
                    address: EndpointAddress::Socket("10.0.0.7:8080".parse().unwrap()),
                    labels: BTreeMap::new(),
                    weight: 1,
                    identity: None,
                    mesh: false,
                    locality: None,
                    priority: 0,
                }],
            }),
        )]),
        secrets: secrets
            .into_iter()
            .map(|(n, s)| (n.to_string(), Arc::new(s)))
            .collect(),
    }
}

pub fn http_handler(route_table: &str) -> ChainHandler {
    ChainHandler::Http(HttpManager {
        route_table: route_table.into(),
        codec: HttpCodec::Auto,
        scheme: Scheme::Http,
    })
}

pub fn listener(name: &str, address: &str, chains: Vec<FilterChain>) -> Listener {
    Listener {
        name: name.into(),
        address: address.parse().unwrap(),
        direction: TrafficDirection::Gateway,
        filter_chains: chains,
    }
}

pub fn plain_http_chain(route_table: &str) -> FilterChain {
    FilterChain {
        name: format!("http:{route_table}"),
        filter_match: ChainMatch::default(),
        tls: None,
        handler: http_handler(route_table),
    }
}

pub fn downstream_tls(secret: &str) -> DownstreamTls {
    DownstreamTls {
        certificate: secret.into(),
        client_ca: None,
        require_client_cert: false,
        alpn: vec![],
        min_tls13: false,
        client_san: vec![],
    }
}

pub fn https_chain(server_names: &[&str], tls: DownstreamTls, route_table: &str) -> FilterChain {
    FilterChain {
        name: format!("https:{}", server_names.join(",")),
        filter_match: ChainMatch {
            server_names: server_names.iter().map(|s| s.to_string()).collect(),
            tls_only: true,
            plaintext_only: false,
            destination_port: None,
        },
        tls: Some(tls),
        handler: http_handler(route_table),
    }
}

/// Answers every HTTP request with what the runtime told it: config version (read per
/// request), listener, port, route table, scheme, SNI, peer identity. `?delay_ms=N` delays
/// the answer (an in-flight request). TCP chains get `tcp <listener>\n`; TLS passthrough
/// answers `passthrough sni=<sni> hello=<bytes read>` after reading the replayed ClientHello.
pub struct TestDispatch;

impl Dispatch for TestDispatch {
    async fn http<IO: Io>(&self, io: IO, conn: ConnectionInfo, state: Arc<ProxyState>) {
        let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            let conn = conn.clone();
            let state = state.clone();
            async move {
                let version = state.config.load().version.clone();
                if let Some(ms) = req
                    .uri()
                    .query()
                    .and_then(|q| q.strip_prefix("delay_ms="))
                    .and_then(|v| v.parse::<u64>().ok())
                {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
                let body = format!(
                    "version={} listener={} port={} route_table={} scheme={:?} sni={} identity={} draining={}\n",
                    version,
                    conn.listener,
                    conn.listener_port,
                    conn.route_table,
                    conn.scheme,
                    conn.sni.as_deref().unwrap_or("-"),
                    conn.peer_identity.as_deref().unwrap_or("-"),
                    state.drain.is_draining(),
                );
                Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::from(
                    body,
                ))))
            }
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(io), svc)
            .await;
    }

    async fn tcp<'a, IO: Io>(
        &'a self,
        mut io: IO,
        conn: ConnectionInfo,
        _routes: &'a [TcpRoute],
        _state: Arc<ProxyState>,
    ) {
        let _ = io
            .write_all(format!("tcp {}\n", conn.listener).as_bytes())
            .await;
        let _ = io.shutdown().await;
    }

    async fn tls_passthrough<'a, IO: Io>(
        &'a self,
        mut io: IO,
        conn: ConnectionInfo,
        _routes: &'a [SniRoute],
        _state: Arc<ProxyState>,
    ) {
        let mut head = [0u8; 5];
        if io.read_exact(&mut head).await.is_err() {
            return;
        }
        let len = u16::from_be_bytes([head[3], head[4]]) as usize;
        let mut rest = vec![0u8; len];
        if io.read_exact(&mut rest).await.is_err() {
            return;
        }
        let msg = format!(
            "passthrough sni={} record_type={} hello_bytes={}\n",
            conn.sni.as_deref().unwrap_or("-"),
            head[0],
            5 + len
        );
        let _ = io.write_all(msg.as_bytes()).await;
        let _ = io.shutdown().await;
    }
}

/// One HTTP/1.1 request on a new connection: (status, body).
pub async fn http(method: &str, addr: SocketAddr, path: &str) -> (u16, String) {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "test")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = sender.send_request(req).await.expect("request");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

pub async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    http("GET", addr, path).await
}

/// A keep-alive HTTP/1.1 client on any stream.
pub struct KeepAlive {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl KeepAlive {
    pub async fn over<IO: Io>(io: IO) -> KeepAlive {
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        KeepAlive { sender }
    }

    pub async fn connect(addr: SocketAddr) -> KeepAlive {
        Self::over(TcpStream::connect(addr).await.expect("connect")).await
    }

    pub async fn get(&mut self, path: &str) -> Result<(u16, String), String> {
        self.sender.ready().await.map_err(|e| e.to_string())?;
        let req = hyper::Request::builder()
            .uri(path)
            .header("host", "test")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = self
            .sender
            .send_request(req)
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
}

/// Polls the admin `/ready` until it answers 200 (never a fixed sleep).
pub async fn wait_ready(admin: SocketAddr) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Ok(stream)) =
            tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(admin)).await
        {
            drop(stream);
            if get(admin, "/ready").await.0 == 200 {
                return;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "admin {admin} never became ready"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `check` until it returns true or 10 s pass.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

pub fn server_info(body: &str) -> serde_json::Value {
    serde_json::from_str(body).expect("server_info is JSON")
}

/// A rustls client config trusting `ca_pem`, optionally with a client certificate.
pub fn client_config(
    ca_pem: &str,
    client: Option<&TlsSecret>,
    alpn: &[&str],
) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let b = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let mut c = match client {
        None => b.with_no_client_auth(),
        Some(s) => {
            let certs = CertificateDer::pem_slice_iter(s.cert_chain_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = PrivateKeyDer::from_pem_slice(s.private_key_pem.as_bytes()).unwrap();
            b.with_client_auth_cert(certs, key).unwrap()
        }
    };
    c.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Arc::new(c)
}

pub type TlsClientStream = tokio_rustls::client::TlsStream<TcpStream>;

/// TLS-connects to `addr` sending `sni`.
pub async fn tls_connect(
    addr: SocketAddr,
    sni: &str,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<TlsClientStream> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(sni.to_string()).unwrap();
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
}

/// The CN of the certificate the server presented.
pub fn served_cn(stream: &TlsClientStream) -> String {
    let leaf = stream.get_ref().1.peer_certificates().unwrap()[0].clone();
    use x509_parser::prelude::FromDer;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(leaf.as_ref()).unwrap();
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or_default()
        .to_string();
    cn
}

/// Runtime options for tests: remaps, admin on an ephemeral loopback port, no status port.
pub fn options(remaps: &[(u16, &str)]) -> trellis_proxy::RuntimeOptions {
    trellis_proxy::RuntimeOptions {
        listen_remap: remaps
            .iter()
            .map(|(p, a)| (*p, a.parse().unwrap()))
            .collect(),
        bind_ip: None,
        admin: Some("127.0.0.1:0".parse().unwrap()),
        status: None,
        ..Default::default()
    }
}
