//! TCP scenarios: raw TCP routes (echo server, redis-server through the proxy with
//! redis-cli), half-close, destination subnets, TLS passthrough by SNI, and upstream TLS
//! origination for HTTP.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use trellis_model::config::*;
use trellis_proxy::{ConnectionInfo, ProxyState};

fn weighted_to(cluster: &str) -> WeightedClusters {
    WeightedClusters {
        clusters: vec![dest(cluster, 100)],
        total_weight: 100,
    }
}

fn tcp_route(cluster: &str, subnets: &[&str]) -> TcpRoute {
    TcpRoute {
        origin: format!("VirtualService test/tcp -> {cluster}"),
        destination_subnets: subnets.iter().map(|s| s.parse().unwrap()).collect(),
        port: None,
        clusters: weighted_to(cluster),
    }
}

fn conn_info(sock: &TcpStream, peer: SocketAddr) -> ConnectionInfo {
    ConnectionInfo {
        listener: "tcp".into(),
        listener_port: 6379,
        local_addr: sock.local_addr().unwrap(),
        peer_addr: peer,
        route_table: "".into(),
        scheme: Scheme::Http,
        sni: None,
        peer_identity: None,
        peer_cert_sha256: None,
    }
}

async fn start_tcp_proxy(config: ProxyConfig, routes: Vec<TcpRoute>) -> SocketAddr {
    init_tracing();
    let state = ProxyState::new(config);
    let routes = Arc::new(routes);
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (sock, peer) = l.accept().await.unwrap();
            let (state, routes) = (state.clone(), routes.clone());
            tokio::spawn(async move {
                let conn = conn_info(&sock, peer);
                trellis_proxy::tcp::proxy_tcp(sock, conn, &routes, state).await;
            });
        }
    });
    addr
}

async fn start_passthrough_proxy(config: ProxyConfig, routes: Vec<SniRoute>) -> SocketAddr {
    init_tracing();
    let state = ProxyState::new(config);
    let routes = Arc::new(routes);
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (sock, peer) = l.accept().await.unwrap();
            let (state, routes) = (state.clone(), routes.clone());
            tokio::spawn(async move {
                let conn = conn_info(&sock, peer);
                trellis_proxy::tcp::proxy_tls_passthrough(sock, conn, &routes, state).await;
            });
        }
    });
    addr
}

/// Echoes until EOF, then closes its side (so half-close is observable).
async fn tcp_echo() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

fn tcp_config(clusters: &[(&str, Vec<SocketAddr>)]) -> ProxyConfig {
    let mut b = Builder::new();
    for (name, eps) in clusters {
        let mut c = cluster(name);
        c.protocol = UpstreamProtocol::Tcp;
        b = b.cluster(c, eps);
    }
    b.build()
}

#[tokio::test]
async fn tcp_echo_with_half_close() {
    let echo = tcp_echo().await;
    let p = start_tcp_proxy(
        tcp_config(&[("echo", vec![echo])]),
        vec![tcp_route("echo", &[])],
    )
    .await;
    let mut s = TcpStream::connect(p).await.unwrap();
    s.write_all(b"hello ").await.unwrap();
    s.write_all(b"through the mesh").await.unwrap();
    // Half-close: our FIN reaches the echo server, which answers and closes.
    s.shutdown().await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out, b"hello through the mesh");
}

#[tokio::test]
async fn tcp_routes_by_destination_subnet_and_refuse_unmatched() {
    let echo = tcp_echo().await;
    let dead = dead_addr().await;
    let p = start_tcp_proxy(
        tcp_config(&[("elsewhere", vec![dead]), ("local", vec![echo])]),
        vec![
            tcp_route("elsewhere", &["10.0.0.0/8"]),
            tcp_route("local", &["127.0.0.0/8"]),
        ],
    )
    .await;
    let mut s = TcpStream::connect(p).await.unwrap();
    s.write_all(b"x").await.unwrap();
    let mut b = [0u8; 1];
    s.read_exact(&mut b).await.unwrap();
    assert_eq!(&b, b"x");
    // No matching route: closed.
    let p = start_tcp_proxy(
        tcp_config(&[("elsewhere", vec![dead])]),
        vec![tcp_route("elsewhere", &["10.0.0.0/8"])],
    )
    .await;
    let mut s = TcpStream::connect(p).await.unwrap();
    let mut out = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .unwrap();
    assert!(n.is_err() || out.is_empty());
}

#[tokio::test]
async fn redis_through_the_tcp_proxy() {
    if !have("redis-server") || !have("redis-cli") {
        eprintln!("skipped: redis-server/redis-cli not installed");
        return;
    }
    let port = dead_addr().await.port();
    let dir = tempfile::tempdir().unwrap();
    let mut server = std::process::Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let redis: SocketAddr = ([127, 0, 0, 1], port).into();
    // Ready when it accepts connections.
    let mut ready = false;
    for _ in 0..200 {
        if TcpStream::connect(redis).await.is_ok() {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(ready, "redis-server did not start");
    let p = start_tcp_proxy(
        tcp_config(&[("redis", vec![redis])]),
        vec![tcp_route("redis", &[])],
    )
    .await;
    let cli = |args: Vec<String>| async move {
        tokio::task::spawn_blocking(move || {
            let out = std::process::Command::new("redis-cli")
                .args(&args)
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        })
        .await
        .unwrap()
    };
    let port = p.port().to_string();
    let base = vec!["-h".to_string(), "127.0.0.1".into(), "-p".into(), port];
    let with = |extra: &[&str]| {
        let mut v = base.clone();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    assert_eq!(cli(with(&["ping"])).await, "PONG");
    assert_eq!(cli(with(&["set", "trade:1", "filled"])).await, "OK");
    assert_eq!(cli(with(&["get", "trade:1"])).await, "filled");
    let _ = server.kill();
    let _ = server.wait();
}

struct TlsServer {
    addr: SocketAddr,
    cert: CertificateDer<'static>,
}

/// A rustls server for `name` that writes its name after the handshake, then echoes.
async fn tls_server(name: &str) -> TlsServer {
    let ck = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
    let cert = ck.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let name = name.to_string();
    tokio::spawn(async move {
        loop {
            let (s, _) = l.accept().await.unwrap();
            let (acceptor, name) = (acceptor.clone(), name.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(s).await else {
                    return;
                };
                let _ = tls.write_all(format!("{name}\n").as_bytes()).await;
                let mut buf = [0u8; 1024];
                while let Ok(n) = tls.read(&mut buf).await {
                    if n == 0 || tls.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    TlsServer { addr, cert }
}

fn client_config(roots: &[&CertificateDer<'static>]) -> Arc<rustls::ClientConfig> {
    let mut store = rustls::RootCertStore::empty();
    for r in roots {
        store.add((*r).clone()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(store)
            .with_no_client_auth(),
    )
}

#[tokio::test]
async fn tls_passthrough_routes_by_sni() {
    let a = tls_server("a.example.com").await;
    let b = tls_server("api.b.example.com").await;
    let routes = vec![
        SniRoute {
            origin: "VirtualService test/tls rule 0".into(),
            server_names: vec!["a.example.com".into()],
            port: None,
            destination_subnets: vec![],
            clusters: weighted_to("a"),
        },
        SniRoute {
            origin: "VirtualService test/tls rule 1".into(),
            server_names: vec!["*.b.example.com".into()],
            port: None,
            destination_subnets: vec![],
            clusters: weighted_to("b"),
        },
    ];
    let p = start_passthrough_proxy(
        tcp_config(&[("a", vec![a.addr]), ("b", vec![b.addr])]),
        routes,
    )
    .await;
    let connector = tokio_rustls::TlsConnector::from(client_config(&[&a.cert, &b.cert]));
    for (sni, want) in [
        ("a.example.com", "a.example.com\n"),
        ("api.b.example.com", "api.b.example.com\n"),
    ] {
        let s = TcpStream::connect(p).await.unwrap();
        let mut tls = connector
            .connect(ServerName::try_from(sni.to_string()).unwrap(), s)
            .await
            .expect("end-to-end TLS with the upstream's own certificate");
        let mut line = vec![0u8; want.len()];
        tls.read_exact(&mut line).await.unwrap();
        assert_eq!(String::from_utf8_lossy(&line), want);
        tls.write_all(b"ping").await.unwrap();
        let mut back = [0u8; 4];
        tls.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"ping");
    }
    // Unknown SNI: the proxy closes the connection; the handshake fails.
    let s = TcpStream::connect(p).await.unwrap();
    let r = tokio::time::timeout(
        Duration::from_secs(5),
        connector.connect(
            ServerName::try_from("c.example.com".to_string()).unwrap(),
            s,
        ),
    )
    .await
    .unwrap();
    assert!(r.is_err());
}

#[tokio::test]
async fn http_to_a_tls_upstream_with_simple_origination() {
    // An HTTPS echo upstream: rustls in front of the hyper echo server.
    let ck = rcgen::generate_simple_self_signed(vec!["secure.internal".to_string()]).unwrap();
    let cert_pem = ck.cert.pem();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![ck.cert.der().clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let plain = Upstream::echo("tls-echo").await;
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tls_addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (s, _) = l.accept().await.unwrap();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(s).await else {
                    return;
                };
                let mut up = TcpStream::connect(plain.addr).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
            });
        }
    });
    let tls = |sans: Vec<String>| UpstreamTls::Tls {
        sni: Some("secure.internal".into()),
        ca_certificates: Some(cert_pem.clone()),
        client_certificate: None,
        private_key: None,
        subject_alt_names: sans,
        insecure_skip_verify: false,
        credential: None,
    };
    let mut good = cluster("good");
    good.tls = tls(vec![]);
    let mut wrong_san = cluster("wrongsan");
    wrong_san.tls = tls(vec!["other.internal".into()]);
    let cfg = Builder::new()
        .vhost(
            &["*"],
            vec![
                route("good", vec![prefix("/good")], to("good")),
                route("bad", vec![prefix("/bad")], to("wrongsan")),
            ],
        )
        .cluster(good, &[tls_addr])
        .cluster(wrong_san, &[tls_addr])
        .build();
    let p = Proxy::start(cfg).await;
    let r = get(p.addr, "x", "/good", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.echo("upstream").unwrap(), "tls-echo");
    let r = get(p.addr, "x", "/bad", &[]).await;
    assert_eq!(
        r.status, 503,
        "certificate without the required SAN is refused"
    );
}
