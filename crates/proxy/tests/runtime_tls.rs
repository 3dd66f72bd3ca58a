//! TLS on real sockets: SNI chain selection seen by rustls, openssl and curl; mutual TLS;
//! broken secrets rejected while the old certificate keeps serving; file secrets; TLS
//! passthrough; certificate and config swaps under load with no failed request.

mod runtime_support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use runtime_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use trellis_model::config::{ChainHandler, ChainMatch, FilterChain, ProxyConfig, TlsSecret};
use trellis_proxy::{ProxyRuntime, RunningProxy, RuntimeOptions};

struct Certs {
    ca: TestCa,
    a: TlsSecret,
    b: TlsSecret,
    default: TlsSecret,
}

fn certs() -> Certs {
    let ca = TestCa::new("Trellis Test CA");
    Certs {
        a: ca.leaf(&["a.example.com"], &[]),
        b: ca.leaf(&["b.example.com", "*.b.example.com"], &[]),
        default: ca.leaf(&["default.example.com"], &[]),
        ca,
    }
}

/// One HTTPS listener (config port 443): a.example.com, b.example.com + *.b.example.com, and
/// a chain for every other name; plus plaintext on the same port.
fn gateway(version: &str, c: &Certs) -> ProxyConfig {
    config(
        version,
        vec![listener(
            "0.0.0.0_443",
            "0.0.0.0:443",
            vec![
                https_chain(&["a.example.com"], downstream_tls("cert-a"), "https.443.a"),
                https_chain(
                    &["b.example.com", "*.b.example.com"],
                    downstream_tls("cert-b"),
                    "https.443.b",
                ),
                https_chain(&[], downstream_tls("cert-default"), "https.443.default"),
                FilterChain {
                    filter_match: ChainMatch {
                        plaintext_only: true,
                        ..Default::default()
                    },
                    ..plain_http_chain("http.443")
                },
            ],
        )],
        vec![
            ("cert-a", c.a.clone()),
            ("cert-b", c.b.clone()),
            ("cert-default", c.default.clone()),
        ],
    )
}

fn start(cfg: ProxyConfig, opts: RuntimeOptions) -> (RunningProxy, std::net::SocketAddr) {
    install_provider();
    let proxy = ProxyRuntime::start_with(cfg, opts, TestDispatch).unwrap();
    let addr = proxy.listener_addr("0.0.0.0_443").unwrap();
    (proxy, addr)
}

#[tokio::test]
async fn sni_selects_the_chain_and_certificate() {
    let c = certs();
    let (proxy, addr) = start(gateway("1", &c), options(&[(443, "127.0.0.1:0")]));
    let client = client_config(&c.ca.pem, None, &["http/1.1"]);

    for (sni, cn, table) in [
        ("a.example.com", "a.example.com", "https.443.a"),
        ("b.example.com", "b.example.com", "https.443.b"),
        ("v2.b.example.com", "b.example.com", "https.443.b"),
        (
            "default.example.com",
            "default.example.com",
            "https.443.default",
        ),
    ] {
        let tls = tls_connect(addr, sni, client.clone()).await.unwrap();
        assert_eq!(served_cn(&tls), cn, "certificate for {sni}");
        let mut http = KeepAlive::over(tls).await;
        let (status, body) = http.get("/").await.unwrap();
        assert_eq!(status, 200);
        assert!(
            body.contains(&format!(
                "port=443 route_table={table} scheme=Https sni={sni}"
            )),
            "{sni}: {body}"
        );
    }
    // Plaintext on the same port goes to the plaintext chain.
    let (_, body) = get(addr, "/").await;
    assert!(
        body.contains("route_table=http.443 scheme=Http sni=-"),
        "{body}"
    );
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn alpn_and_minimum_versions() {
    let c = certs();
    let mut cfg = gateway("1", &c);
    let mut strict = downstream_tls("cert-a");
    strict.min_tls13 = true;
    strict.alpn = vec!["http/1.1".into()];
    cfg.listeners[0].filter_chains[0].tls = Some(strict);
    let (proxy, addr) = start(cfg, options(&[(443, "127.0.0.1:0")]));

    // HTTP chains without explicit ALPN offer h2 and http/1.1.
    let tls = tls_connect(
        addr,
        "b.example.com",
        client_config(&c.ca.pem, None, &["h2", "http/1.1"]),
    )
    .await
    .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    // The chain's own ALPN list wins.
    let tls = tls_connect(
        addr,
        "a.example.com",
        client_config(&c.ca.pem, None, &["h2", "http/1.1"]),
    )
    .await
    .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));

    // TLS 1.2 works on the default chain, not on the TLS 1.3-only one.
    let tls12 = {
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(c.ca.pem.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        Arc::new(
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::aws_lc_rs::default_provider(),
            ))
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
        )
    };
    let tls = tls_connect(addr, "b.example.com", tls12.clone())
        .await
        .unwrap();
    assert_eq!(
        tls.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    assert!(tls_connect(addr, "a.example.com", tls12).await.is_err());
    proxy.shutdown(Duration::from_secs(1)).await;
}

fn write_pem(dir: &std::path::Path, name: &str, pem: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, pem).unwrap();
    p.display().to_string()
}

#[tokio::test]
async fn openssl_and_curl_see_the_certificate_for_their_server_name() {
    let c = certs();
    let (proxy, addr) = start(gateway("1", &c), options(&[(443, "127.0.0.1:0")]));
    let dir = tempfile::tempdir().unwrap();
    let ca = write_pem(dir.path(), "ca.pem", &c.ca.pem);
    let port = addr.port();

    for (sni, cn) in [
        ("a.example.com", "a.example.com"),
        ("x.b.example.com", "b.example.com"),
        ("other.example.org", "default.example.com"),
    ] {
        let out = tokio::process::Command::new("openssl")
            .args([
                "s_client",
                "-connect",
                &addr.to_string(),
                "-servername",
                sni,
            ])
            .args(["-CAfile", &ca, "-verify_return_error"])
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .expect("openssl runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains(&format!("subject=CN = {cn}")),
            "{sni}: {stdout}"
        );
        assert!(
            stdout.contains("Verify return code: 0 (ok)"),
            "{sni}: {stdout}"
        );
    }

    // curl with --resolve (real SNI and host check against our CA), then -k.
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--http1.1", "--cacert", &ca])
        .arg("--resolve")
        .arg(format!("a.example.com:{port}:127.0.0.1"))
        .arg(format!("https://a.example.com:{port}/"))
        .output()
        .await
        .unwrap();
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        body.contains("route_table=https.443.a scheme=Https sni=a.example.com"),
        "{body}"
    );

    let out = tokio::process::Command::new("curl")
        .args(["-sS", "-k", "-v", "--http1.1"])
        .arg("--resolve")
        .arg(format!("api.b.example.com:{port}:127.0.0.1"))
        .arg(format!("https://api.b.example.com:{port}/"))
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("subject: CN=b.example.com"), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("route_table=https.443.b"));
    proxy.shutdown(Duration::from_secs(1)).await;
}

/// Reads from a TLS stream after a request: Ok(body bytes) or the error (TLS 1.3 reports a
/// rejected client certificate only after the client's handshake completes).
async fn request(mut tls: TlsClientStream) -> Result<String, String> {
    tls.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    match tls.read_to_end(&mut out).await {
        Ok(_) if !out.is_empty() => Ok(String::from_utf8_lossy(&out).into_owned()),
        Ok(_) => Err("closed without an answer".into()),
        Err(e) => Err(e.to_string()),
    }
}

#[tokio::test]
async fn mutual_tls_requires_a_client_certificate_from_the_ca_with_an_allowed_san() {
    let c = certs();
    let client_ca = TestCa::new("Client CA");
    let mut cfg = gateway("1", &c);
    let mut mutual = downstream_tls("cert-a");
    mutual.client_ca = Some("client-ca".into());
    mutual.require_client_cert = true;
    mutual.client_san = vec!["spiffe://cluster.local/ns/shop/sa/frontend".into()];
    cfg.listeners[0].filter_chains[0].tls = Some(mutual);
    let mut optional = downstream_tls("cert-b");
    optional.client_ca = Some("client-ca".into());
    cfg.listeners[0].filter_chains[1].tls = Some(optional);
    cfg.secrets
        .insert("client-ca".into(), Arc::new(client_ca.as_ca_secret()));
    let (proxy, addr) = start(cfg, options(&[(443, "127.0.0.1:0")]));

    let frontend = client_ca.leaf(&[], &["spiffe://cluster.local/ns/shop/sa/frontend"]);
    let other = client_ca.leaf(&[], &["spiffe://cluster.local/ns/shop/sa/other"]);
    let foreign =
        c.ca.leaf(&[], &["spiffe://cluster.local/ns/shop/sa/frontend"]);

    // MUTUAL: no certificate, a certificate from another CA, or another SAN: refused.
    for (what, cert) in [
        ("none", None),
        ("foreign CA", Some(&foreign)),
        ("other SAN", Some(&other)),
    ] {
        let r = match tls_connect(addr, "a.example.com", client_config(&c.ca.pem, cert, &[])).await
        {
            Ok(tls) => request(tls).await,
            Err(e) => Err(e.to_string()),
        };
        assert!(r.is_err(), "{what}: {r:?}");
    }
    let tls = tls_connect(
        addr,
        "a.example.com",
        client_config(&c.ca.pem, Some(&frontend), &[]),
    )
    .await
    .unwrap();
    let body = request(tls).await.unwrap();
    assert!(
        body.contains("identity=spiffe://cluster.local/ns/shop/sa/frontend"),
        "{body}"
    );

    // OPTIONAL_MUTUAL: anonymous is fine, a certificate is verified when given.
    let tls = tls_connect(addr, "b.example.com", client_config(&c.ca.pem, None, &[]))
        .await
        .unwrap();
    assert!(request(tls).await.unwrap().contains("identity=-"));
    let tls = tls_connect(
        addr,
        "b.example.com",
        client_config(&c.ca.pem, Some(&other), &[]),
    )
    .await
    .unwrap();
    assert!(request(tls)
        .await
        .unwrap()
        .contains("identity=spiffe://cluster.local/ns/shop/sa/other"));
    let r = match tls_connect(
        addr,
        "b.example.com",
        client_config(&c.ca.pem, Some(&foreign), &[]),
    )
    .await
    {
        Ok(tls) => request(tls).await,
        Err(e) => Err(e.to_string()),
    };
    assert!(
        r.is_err(),
        "foreign client certificate on OPTIONAL_MUTUAL: {r:?}"
    );
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_broken_secret_is_rejected_and_the_old_certificate_keeps_serving() {
    let c = certs();
    let (proxy, addr) = start(gateway("1", &c), options(&[(443, "127.0.0.1:0")]));
    let admin = proxy.admin_addr().unwrap();
    let client = client_config(&c.ca.pem, None, &[]);

    let other_key = c.ca.leaf(&["x"], &[]).private_key_pem;
    let rotated = c.ca.leaf(&["a.example.com"], &[]);
    for (what, broken, expect) in [
        (
            "garbage PEM",
            TlsSecret {
                cert_chain_pem:
                    "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n".into(),
                ..rotated.clone()
            },
            "secret \"cert-a\"",
        ),
        (
            "key of another certificate",
            TlsSecret {
                private_key_pem: other_key.clone(),
                ..rotated.clone()
            },
            "do not load",
        ),
        (
            "empty key",
            TlsSecret {
                private_key_pem: String::new(),
                ..rotated.clone()
            },
            "no private key",
        ),
    ] {
        let mut bad = gateway("2", &c);
        bad.secrets.insert("cert-a".into(), Arc::new(broken));
        let err = proxy.apply(bad).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("listener 0.0.0.0_443"), "{what}: {msg}");
        assert!(msg.contains(expect), "{what}: {msg}");

        // The old certificate and config keep serving.
        let tls = tls_connect(addr, "a.example.com", client.clone())
            .await
            .unwrap();
        assert_eq!(served_cn(&tls), "a.example.com");
        assert_eq!(
            tls.get_ref().1.peer_certificates().unwrap()[0].as_ref(),
            pem_der(&c.a.cert_chain_pem),
            "{what}: still the old certificate"
        );
        let info = server_info(&get(admin, "/server_info").await.1);
        assert_eq!(info["config_version"], "1");
        assert!(
            info["last_error"]["message"]
                .as_str()
                .unwrap()
                .contains(expect),
            "{what}: {info}"
        );
    }
    // A missing secret, too.
    let mut missing = gateway("3", &c);
    missing.secrets.remove("cert-b");
    let err = proxy.apply(missing).unwrap_err();
    assert!(
        err.to_string()
            .contains("certificate secret \"cert-b\" not found"),
        "{err}"
    );

    // A good rotation is served to new connections at once.
    let mut good = gateway("4", &c);
    good.secrets
        .insert("cert-a".into(), Arc::new(rotated.clone()));
    proxy.apply(good).unwrap();
    let tls = tls_connect(addr, "a.example.com", client.clone())
        .await
        .unwrap();
    assert_eq!(
        tls.get_ref().1.peer_certificates().unwrap()[0].as_ref(),
        pem_der(&rotated.cert_chain_pem)
    );
    proxy.shutdown(Duration::from_secs(1)).await;
}

fn pem_der(pem: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

#[tokio::test]
async fn secrets_from_files_are_read_at_apply() {
    let c = certs();
    let v1 = c.ca.leaf(&["files.example.com"], &[]);
    let v2 = c.ca.leaf(&["files.example.com"], &[]);
    let dir = tempfile::tempdir().unwrap();
    let cert = write_pem(dir.path(), "tls.crt", &v1.cert_chain_pem);
    let key = write_pem(dir.path(), "tls.key", &v1.private_key_pem);
    let mut opts = options(&[(443, "127.0.0.1:0")]);
    opts.secret_files.insert(
        "from-files".into(),
        trellis_proxy::tls::SecretFiles::parse(&format!("{cert},{key}")).unwrap(),
    );
    let mut cfg = gateway("1", &c);
    cfg.listeners[0].filter_chains[2].tls = Some(downstream_tls("from-files"));
    let (proxy, addr) = start(cfg.clone(), opts);
    let client = client_config(&c.ca.pem, None, &[]);
    let served = |tls: &TlsClientStream| tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    let tls = tls_connect(addr, "files.example.com", client.clone())
        .await
        .unwrap();
    assert_eq!(served(&tls), pem_der(&v1.cert_chain_pem));
    assert!(proxy.config().secrets["from-files"]
        .source
        .contains("tls.crt"));

    // New files, same config: the next apply serves them.
    std::fs::write(dir.path().join("tls.crt"), &v2.cert_chain_pem).unwrap();
    std::fs::write(dir.path().join("tls.key"), &v2.private_key_pem).unwrap();
    cfg.version = "2".into();
    proxy.apply(cfg.clone()).unwrap();
    let tls = tls_connect(addr, "files.example.com", client.clone())
        .await
        .unwrap();
    assert_eq!(served(&tls), pem_der(&v2.cert_chain_pem));

    // A half-written rotation (key missing) is rejected; the last good files keep serving.
    std::fs::remove_file(dir.path().join("tls.key")).unwrap();
    cfg.version = "3".into();
    let err = proxy.apply(cfg).unwrap_err();
    assert!(
        err.to_string()
            .contains("secret \"from-files\": cannot read private key"),
        "{err}"
    );
    let tls = tls_connect(addr, "files.example.com", client)
        .await
        .unwrap();
    assert_eq!(served(&tls), pem_der(&v2.cert_chain_pem));
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn tls_passthrough_gets_the_untouched_client_hello_and_the_sni() {
    let c = certs();
    let mut cfg = gateway("1", &c);
    cfg.listeners[0].filter_chains.insert(
        0,
        FilterChain {
            name: "passthrough".into(),
            filter_match: ChainMatch {
                server_names: vec!["db.example.com".into()],
                tls_only: true,
                plaintext_only: false,
                destination_port: None,
            },
            tls: None,
            handler: ChainHandler::TlsPassthrough(vec![]),
        },
    );
    let (proxy, addr) = start(cfg, options(&[(443, "127.0.0.1:0")]));

    // A real ClientHello, written raw, so we know its exact size.
    let hello = {
        let config = client_config(&c.ca.pem, None, &[]);
        let name = rustls::pki_types::ServerName::try_from("db.example.com").unwrap();
        let mut conn = rustls::ClientConnection::new(config, name).unwrap();
        let mut out = Vec::new();
        conn.write_tls(&mut out).unwrap();
        out
    };
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    // Sent in two pieces: the listener waits for the whole hello.
    tcp.write_all(&hello[..10]).await.unwrap();
    tcp.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    tcp.write_all(&hello[10..]).await.unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).await.unwrap();
    assert_eq!(
        answer,
        format!(
            "passthrough sni=db.example.com record_type=22 hello_bytes={}\n",
            hello.len()
        )
    );
    // Other names still terminate.
    let tls = tls_connect(addr, "a.example.com", client_config(&c.ca.pem, None, &[]))
        .await
        .unwrap();
    assert_eq!(served_cn(&tls), "a.example.com");
    proxy.shutdown(Duration::from_secs(1)).await;
}

/// Clients loop over keep-alive connections (plaintext and TLS) and fresh TLS handshakes
/// while configs and certificates are swapped 30 times: no request fails, and every answer
/// comes from a config that was in force.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapping_configs_under_load_fails_no_request() {
    let c = certs();
    let rotated_a = c.ca.leaf(&["a.example.com"], &[]);
    let (proxy, addr) = start(gateway("0", &c), options(&[(443, "127.0.0.1:0")]));
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();

    for i in 0..4 {
        let (stop, ok) = (stop.clone(), ok.clone());
        let client = client_config(&c.ca.pem, None, &[]);
        clients.push(tokio::spawn(async move {
            let mut conn = if i % 2 == 0 {
                KeepAlive::connect(addr).await
            } else {
                KeepAlive::over(tls_connect(addr, "a.example.com", client).await.unwrap()).await
            };
            let mut versions = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let (status, body) = conn.get("/").await.expect("keep-alive request");
                assert_eq!(status, 200, "{body}");
                let v: u32 = body["version=".len()..body.find(' ').unwrap()]
                    .parse()
                    .unwrap();
                assert!(
                    versions.last().is_none_or(|last| v >= *last),
                    "versions go forward"
                );
                versions.push(v);
                ok.fetch_add(1, Ordering::Relaxed);
            }
            versions
        }));
    }
    {
        let (stop, ok) = (stop.clone(), ok.clone());
        let client = client_config(&c.ca.pem, None, &[]);
        clients.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let tls = tls_connect(addr, "a.example.com", client.clone())
                    .await
                    .expect("handshake during swaps");
                let mut conn = KeepAlive::over(tls).await;
                let (status, _) = conn.get("/").await.expect("request on a new connection");
                assert_eq!(status, 200);
                ok.fetch_add(1, Ordering::Relaxed);
            }
            Vec::new()
        }));
    }

    eventually("every client is running", || async {
        ok.load(Ordering::Relaxed) >= 20
    })
    .await;
    for v in 1..=30u32 {
        let mut cfg = gateway(&v.to_string(), &c);
        if v % 2 == 1 {
            cfg.secrets
                .insert("cert-a".into(), Arc::new(rotated_a.clone()));
        }
        proxy.apply(cfg).unwrap();
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    let before = ok.load(Ordering::Relaxed);
    eventually("requests after the last swap", || async {
        ok.load(Ordering::Relaxed) > before + 20
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for (i, c) in clients.into_iter().enumerate() {
        let versions = c.await.expect("client task ran without failure");
        if i < 4 {
            assert_eq!(
                versions.last(),
                Some(&30),
                "client {i} ends on the last config"
            );
            assert!(versions.first() < versions.last(), "client {i} saw swaps");
        }
    }
    assert!(ok.load(Ordering::Relaxed) > 100, "load was applied");
    proxy.shutdown(Duration::from_secs(1)).await;
}
