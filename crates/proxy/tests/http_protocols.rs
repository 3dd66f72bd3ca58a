//! Protocol scenarios: HTTP/2 and h2c, gRPC trailers and errors, WebSocket tunnels,
//! pipelining, and bad input that must be refused without disturbing the proxy.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::HeaderMap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use trellis_model::config::*;

fn proto_cluster(name: &str, p: UpstreamProtocol) -> Cluster {
    let mut c = cluster(name);
    c.protocol = p;
    c
}

#[tokio::test]
async fn h2c_and_h1_downstream_map_to_the_cluster_protocol() {
    let up = Upstream::echo("up").await;
    let cfg = Builder::new()
        .vhost(
            &["*"],
            vec![
                route("auto", vec![prefix("/auto")], to("auto")),
                route("h1", vec![prefix("/h1")], to("h1")),
                route("h2", vec![prefix("/h2")], to("h2")),
            ],
        )
        .cluster(proto_cluster("auto", UpstreamProtocol::Auto), &[up.addr])
        .cluster(proto_cluster("h1", UpstreamProtocol::Http1), &[up.addr])
        .cluster(proto_cluster("h2", UpstreamProtocol::Http2), &[up.addr])
        .build();
    let p = Proxy::start(cfg).await;
    // curl with HTTP/2 prior knowledge (h2c).
    let (ok, out, err) = curl(vec![
        "--http2-prior-knowledge".into(),
        "-i".into(),
        p.url("/auto/x"),
    ])
    .await;
    assert!(ok, "{err}");
    assert!(out.starts_with("HTTP/2 200"), "{out}");
    assert!(
        out.contains("version=HTTP/2.0"),
        "auto follows the downstream: {out}"
    );
    let (_, out, _) = curl(vec!["--http2-prior-knowledge".into(), p.url("/h1/x")]).await;
    assert!(out.contains("version=HTTP/1.1"), "{out}");
    let (_, out, _) = curl(vec!["--http1.1".into(), p.url("/h2/x")]).await;
    assert!(out.contains("version=HTTP/2.0"), "{out}");
    let (_, out, _) = curl(vec!["--http1.1".into(), p.url("/auto/x")]).await;
    assert!(out.contains("version=HTTP/1.1"), "{out}");
    // hyper's HTTP/2 client, many streams on one connection, with bodies.
    let mut h2 = H2Client::connect(p.addr).await;
    for i in 0..20 {
        let r = h2
            .send(
                "POST",
                "api.example.com",
                "/h1/post",
                &[],
                Bytes::from(format!("n={i}")),
            )
            .await;
        assert_eq!(r.status, 200);
        assert_eq!(r.echo("body").unwrap(), format!("n={i}"));
        assert_eq!(r.echo("h:host").unwrap(), "api.example.com");
    }
}

#[tokio::test]
async fn nghttp_and_h2load_through_the_proxy() {
    if !have("nghttp") || !have("h2load") {
        eprintln!("skipped: nghttp2-client (nghttp, h2load) not installed");
        return;
    }
    let up = Upstream::echo("up").await;
    let cfg = Builder::new()
        .vhost(&["*"], vec![route("all", vec![], to("h2"))])
        .cluster(proto_cluster("h2", UpstreamProtocol::Http2), &[up.addr])
        .build();
    let p = Proxy::start(cfg).await;
    let url = p.url("/ng");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("nghttp")
            .args(["-v", &url])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(":status: 200"), "{text}");
    assert!(text.contains("path=/ng"), "{text}");
    let url = p.url("/load");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("h2load")
            .args(["-n", "400", "-c", "4", "-m", "10", &url])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("400 succeeded, 0 failed"), "{text}");
    assert!(text.contains("400 2xx"), "{text}");
}

fn grpc_upstream_reply(s: &Seen) -> Reply {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", "0".parse().unwrap());
    trailers.insert("grpc-message", "ok".parse().unwrap());
    Reply {
        status: 200,
        headers: vec![("content-type".into(), "application/grpc".into())],
        // A length-prefixed gRPC message echoing the request message.
        body: String::from_utf8_lossy(&s.body).into_owned(),
        delay: Duration::ZERO,
        trailers: Some(trailers),
    }
}

#[tokio::test]
async fn grpc_trailers_pass_through_and_errors_are_grpc() {
    let up = Upstream::start("grpc", Arc::new(grpc_upstream_reply)).await;
    let cfg = Builder::new()
        .vhost(
            &["*"],
            vec![
                route("grpc", vec![prefix("/pkg.Svc/")], to("grpc")),
                route("down", vec![prefix("/pkg.Down/")], to("empty")),
            ],
        )
        .cluster(proto_cluster("grpc", UpstreamProtocol::Http2), &[up.addr])
        .cluster(proto_cluster("empty", UpstreamProtocol::Http2), &[])
        .build();
    let p = Proxy::start(cfg).await;
    let mut h2 = H2Client::connect(p.addr).await;
    let msg = Bytes::from_static(b"\x00\x00\x00\x00\x05hello");
    let hdrs = [("content-type", "application/grpc"), ("te", "trailers")];
    let r = h2
        .send(
            "POST",
            "grpc.example.com",
            "/pkg.Svc/Echo",
            &hdrs,
            msg.clone(),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.as_bytes(), &msg[..]);
    let t = r.trailers.expect("trailers arrive end to end");
    assert_eq!(t.get("grpc-status").unwrap(), "0");
    assert_eq!(t.get("grpc-message").unwrap(), "ok");
    let seen = up.last();
    assert_eq!(seen.version, http::Version::HTTP_2);
    assert_eq!(seen.headers.get("te").unwrap(), "trailers");
    // No endpoint: a gRPC error (UNAVAILABLE), not an HTTP 503.
    let r = h2
        .send("POST", "grpc.example.com", "/pkg.Down/Echo", &hdrs, msg)
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("grpc-status"), Some("14"));
    assert_eq!(r.header("grpc-message"), Some("no healthy upstream"));
    // No route for a gRPC request: UNIMPLEMENTED.
    let r = h2
        .send("POST", "grpc.example.com", "/other/x", &hdrs, Bytes::new())
        .await;
    assert_eq!(r.header("grpc-status"), Some("12"));
    // gRPC over an HTTP/1.1 downstream still reaches an h2 upstream (and trailers need h2).
}

/// A minimal WebSocket-ish upstream: answers the Upgrade with 101 and echoes bytes.
async fn upgrade_echo_server() -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if s.read(&mut b).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(b[0]);
                }
                let head = String::from_utf8_lossy(&head).to_lowercase();
                assert!(head.contains("upgrade: websocket"), "{head}");
                s.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")
                    .await
                    .unwrap();
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn websocket_upgrade_is_tunnelled() {
    let ws = upgrade_echo_server().await;
    let cfg = Builder::new()
        .vhost(&["*"], vec![route("ws", vec![], to("ws"))])
        .simple("ws", &[ws])
        .build();
    let p = Proxy::start(cfg).await;
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    s.write_all(
        b"GET /chat HTTP/1.1\r\nHost: ws.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut b).await.unwrap(), 1);
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    assert!(head.contains("sec-websocket-accept"), "{head}");
    // A masked text frame "hello", echoed back byte for byte through the tunnel.
    let frame = [
        0x81u8,
        0x85,
        1,
        2,
        3,
        4,
        b'h' ^ 1,
        b'e' ^ 2,
        b'l' ^ 3,
        b'l' ^ 4,
        b'o' ^ 1,
    ];
    for _ in 0..3 {
        s.write_all(&frame).await.unwrap();
        let mut back = [0u8; 11];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut back))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(back, frame);
    }
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let up = Upstream::echo("up").await;
    let cfg = Builder::new()
        .vhost(&["*"], vec![route("all", vec![], to("up"))])
        .simple("up", &[up.addr])
        .build();
    let p = Proxy::start(cfg).await;
    let out = raw(
        p.addr,
        b"GET /first HTTP/1.1\r\nHost: a\r\n\r\nGET /second HTTP/1.1\r\nHost: a\r\n\r\nGET /third HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    let first = out.find("path=/first").expect(&out);
    let second = out.find("path=/second").expect(&out);
    let third = out.find("path=/third").expect(&out);
    assert!(first < second && second < third);
    assert_eq!(out.matches("HTTP/1.1 200").count(), 3);
}

#[tokio::test]
async fn bad_requests_are_refused_and_the_proxy_keeps_serving() {
    let up = Upstream::echo("up").await;
    let cfg = Builder::new()
        .vhost(&["*"], vec![route("all", vec![], to("up"))])
        .simple("up", &[up.addr])
        .build();
    let p = Proxy::start(cfg).await;
    let status = |out: &str| out.split(' ').nth(1).unwrap_or("").to_string();
    let t = Duration::from_secs(3);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("malformed request line", b"GARBAGE\r\n\r\n".to_vec(), "400"),
        (
            "lowercase method",
            b"get / HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(),
            "400",
        ),
        ("missing host", b"GET / HTTP/1.1\r\n\r\n".to_vec(), "400"),
        (
            "asterisk form",
            b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(),
            "400",
        ),
        (
            "signed content-length",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello".to_vec(),
            "400",
        ),
        (
            "NUL in header",
            b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\0c\r\n\r\n".to_vec(),
            "400",
        ),
        (
            "huge header",
            format!(
                "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
                "a".repeat(100_000)
            )
            .into_bytes(),
            "431",
        ),
        (
            "too many headers (101, Envoy's limit is 100)",
            format!(
                "GET / HTTP/1.1\r\nHost: a\r\n{}\r\n",
                (0..100)
                    .map(|i| format!("X-H{i}: v\r\n"))
                    .collect::<String>()
            )
            .into_bytes(),
            "431",
        ),
    ];
    for (name, bytes, want) in cases {
        let out = raw(p.addr, &bytes, t).await;
        assert_eq!(status(&out), want, "{name}: {out:?}");
    }
    assert_eq!(up.hits(), 0, "nothing bad reached the upstream");
    // 95 headers pass (the proxy adds its x-forwarded-*/x-request-id ones, and the test
    // upstream, hyper too, refuses more than 100).
    let many = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n{}\r\n",
        (0..93)
            .map(|i| format!("X-H{i}: v\r\n"))
            .collect::<String>()
    );
    let out = raw(p.addr, many.as_bytes(), t).await;
    assert_eq!(status(&out), "200", "95 headers: {out:?}");
    // Content-Length with Transfer-Encoding: chunked framing wins, Content-Length is
    // dropped and the connection closes after the response (RFC 9112 §6.3), so bytes after
    // the chunked body can never be read as a second, smuggled request.
    let out = raw(
        p.addr,
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
        t,
    )
    .await;
    assert!(out.to_lowercase().contains("connection: close"), "{out}");
    assert!(!out.contains("/smuggled"), "{out}");
    assert!(up
        .seen
        .lock()
        .unwrap()
        .iter()
        .all(|s| s.path != "/smuggled"));
    // Obfuscated transfer-encoding is not chunked: refused.
    let out = raw(
        p.addr,
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
        t,
    )
    .await;
    assert_eq!(status(&out), "400", "{out}");
    assert_eq!(get(p.addr, "a", "/fine", &[]).await.status, 200);
}

/// The head goes upstream before the body is read: a chunked body the client botches fails
/// the upstream attempt, and that is the client's error (400, DPE, connection closed), not an
/// upstream reset (503).
#[tokio::test]
async fn a_malformed_request_body_is_400_not_503() {
    let up = Upstream::echo("up").await;
    let cfg = Builder::new()
        .vhost(&["*"], vec![route("all", vec![], to("up"))])
        .simple("up", &[up.addr])
        .build();
    let p = Proxy::start(cfg).await;
    let t = Duration::from_secs(5);
    let cases: [(&str, &[u8]); 3] = [
        (
            "chunk size overflow",
            b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff1\r\nhello\r\n0\r\n\r\n",
        ),
        (
            "chunk size not hex",
            b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        ),
        (
            "chunk longer than its size",
            b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhello\r\n0\r\n\r\n",
        ),
    ];
    for (name, bytes) in cases {
        let out = raw(p.addr, bytes, t).await;
        assert!(out.starts_with("HTTP/1.1 400 "), "{name}: {out:?}");
        assert!(out.ends_with("Bad Request"), "{name}: {out:?}");
        assert!(
            out.to_lowercase().contains("connection: close"),
            "{name}: {out:?}"
        );
        assert!(!out.contains("upstream connect error"), "{name}: {out:?}");
    }
    // The upstream never got a whole request, and the proxy keeps serving.
    assert!(up.seen.lock().unwrap().iter().all(|s| s.body.is_empty()));
    assert_eq!(get(p.addr, "a", "/fine", &[]).await.status, 200);
}
