//! Sidecar `ingress` listeners with their own `tls` (Istio's "TLS termination at the sidecar
//! for traffic from outside the mesh"), end to end: manifests compiled by the real compiler,
//! certificate files on disk, curl as the client, an echo app behind the sidecar.
//!
//! Checked: curl's TLS handshake (verified against the test CA) succeeds on the listener port
//! and the app sees `x-forwarded-proto: https`; mesh mTLS is not asked for on that port even
//! under a namespace-wide STRICT PeerAuthentication; plaintext to the port is refused (it
//! does not fall through to the passthrough chain); MUTUAL requires a client certificate from
//! the listener's `caCertificates`.

mod common;
mod runtime_support;
mod security_support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use common::{echo_reply, Seen, Upstream};
use runtime_support::TestCa;
use security_support::*;
use trellis_api::MeshConfig;

/// A port free on 127.0.0.2 (the workload's address), for the listener the Sidecar declares.
fn free_workload_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.2:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn manifests(port: u16, app_port: u16, mode: &str, dir: &Path) -> String {
    let d = dir.display();
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: quotes, namespace: app, labels: {{app: quotes}}}}
spec:
  serviceAccountName: quotes
  containers: [{{name: q, image: q, ports: [{{containerPort: {app_port}, name: http}}]}}]
status: {{podIP: 127.0.0.2}}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: quotes, namespace: app}}
spec:
  workloadSelector: {{labels: {{app: quotes}}}}
  ingress:
  - port: {{number: {port}, protocol: HTTPS, name: https}}
    defaultEndpoint: 127.0.0.1:{app_port}
    tls:
      mode: {mode}
      serverCertificate: {d}/server.pem
      privateKey: {d}/server-key.pem
      caCertificates: {d}/ca.pem
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: strict, namespace: app}}
spec: {{mtls: {{mode: STRICT}}}}
"#
    )
}

struct Env {
    _dir: tempfile::TempDir,
    dir: std::path::PathBuf,
    app: Upstream,
    _proxy: trellis_proxy::RunningProxy,
    port: u16,
    ca: TestCa,
}

async fn env(mode: &str) -> Env {
    runtime_support::install_provider();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let ca = TestCa::new("Sidecar ingress test CA");
    let leaf = ca.leaf(&["quotes.app.svc.cluster.local"], &[]);
    std::fs::write(dir.join("server.pem"), &leaf.cert_chain_pem).unwrap();
    std::fs::write(dir.join("server-key.pem"), &leaf.private_key_pem).unwrap();
    std::fs::write(dir.join("ca.pem"), &ca.pem).unwrap();
    let app = Upstream::serve(
        "quotes",
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        Arc::new(|s: &Seen| echo_reply("quotes", s)),
    );
    let port = free_workload_port();
    let res = load(&manifests(port, app.addr.port(), mode, &dir));
    let config = compile_for(&res, &MeshConfig::default(), "app/quotes");
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    let proxy = start(
        config,
        Start {
            remap: vec![(15006, SocketAddr::from(([127, 0, 0, 2], port)))],
            ..Start::default()
        },
    );
    Env {
        _dir: tmp,
        dir,
        app,
        _proxy: proxy,
        port,
        ca,
    }
}

fn curl_args(e: &Env, extra: &[&str]) -> Vec<String> {
    let host = "quotes.app.svc.cluster.local";
    let mut args: Vec<String> = [
        "-sS",
        "--max-time",
        "10",
        "--cacert",
        &e.dir.join("ca.pem").display().to_string(),
        "--resolve",
        &format!("{host}:{}:127.0.0.2", e.port),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args.push(format!("https://{host}:{}/quote?sym=ACME", e.port));
    args
}

#[tokio::test]
async fn simple_tls_is_terminated_by_the_sidecar_without_mesh_mtls() {
    let e = env("SIMPLE").await;
    let (ok, out, err) = run("curl", curl_args(&e, &[]), None).await;
    assert!(ok, "curl failed: {err}");
    assert_eq!(
        echo(&out, "path").as_deref(),
        Some("/quote?sym=ACME"),
        "{out}"
    );
    assert_eq!(
        echo(&out, "h:x-forwarded-proto").as_deref(),
        Some("https"),
        "{out}"
    );
    assert_eq!(e.app.hits(), 1);

    // Plaintext on the TLS port is refused; nothing reaches the app.
    let (ok, out, _) = run(
        "curl",
        vec![
            "-sS".into(),
            "--max-time".into(),
            "5".into(),
            format!("http://127.0.0.2:{}/quote", e.port),
        ],
        None,
    )
    .await;
    assert!(!ok, "plaintext was served: {out}");
    assert_eq!(e.app.hits(), 1);
}

#[tokio::test]
async fn mutual_tls_requires_a_client_certificate_from_the_listener_ca() {
    let e = env("MUTUAL").await;
    let (ok, _, err) = run("curl", curl_args(&e, &[]), None).await;
    assert!(!ok, "served without a client certificate");
    assert_eq!(e.app.hits(), 0, "{err}");

    let client = e.ca.leaf(&["client.example.com"], &[]);
    std::fs::write(e.dir.join("client.pem"), &client.cert_chain_pem).unwrap();
    std::fs::write(e.dir.join("client-key.pem"), &client.private_key_pem).unwrap();
    let cert = e.dir.join("client.pem").display().to_string();
    let key = e.dir.join("client-key.pem").display().to_string();
    let (ok, out, err) = run(
        "curl",
        curl_args(&e, &["--cert", &cert, "--key", &key]),
        None,
    )
    .await;
    assert!(ok, "curl with a client certificate failed: {err}");
    assert_eq!(echo(&out, "upstream").as_deref(), Some("quotes"), "{out}");
    assert_eq!(e.app.hits(), 1);
}
