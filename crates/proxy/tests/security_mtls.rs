//! Mutual TLS between two sidecars from one local mesh CA, end to end on real sockets:
//! client → sidecar A (outbound listener) → mTLS → sidecar B (`virtualInbound`, PeerAuthentication
//! from the manifests) → the app, an echo server reporting the headers it got.
//!
//! Local layout (no iptables): B's workload address is 127.0.0.2; its app listens on
//! 127.0.0.1:<port> and B's `virtualInbound` is bound on 127.0.0.2:<port>, so the inbound
//! chain for that port is chosen by the destination port, as with transparent capture. One
//! socket serves one port: the port-level test starts a second B proxy (same config) on the
//! other port.
//!
//! Certificates are checked with openssl: `s_client` with no certificate, with one from the
//! mesh CA and with one from another CA; `openssl verify` and `x509` on the workload cert.

mod common;
mod security_support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{echo_reply, Reply, Seen, Upstream};
use security_support::*;
use sha2::Digest;
use tokio::net::TcpListener;
use trellis_api::MeshConfig;
use trellis_identity::{
    generate_key_and_csr, CertificateAuthority, IdentityManager, LocalIssuer, SpiffeId,
};
use trellis_proxy::security::mesh::RotationOptions;
use trellis_proxy::security::MeshIdentity;
use trellis_proxy::upstream::connect::MeshTlsProvider;
use trellis_proxy::RunningProxy;

const TD: &str = "cluster.local";
const B_HOST: &str = "b.apps.svc.cluster.local:8080";

/// The app's two ports: bound on 127.0.0.1, with the same ports free on 127.0.0.2 for B.
struct App {
    http: Upstream,
    metrics: Upstream,
}

async fn bind_app_port() -> TcpListener {
    loop {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.2", port)).is_ok() {
            return l;
        }
    }
}

async fn app() -> App {
    let handler = Arc::new(|s: &Seen| {
        if s.path == "/live-fail" {
            return Reply::status(500);
        }
        echo_reply("b-app", s)
    });
    App {
        http: Upstream::serve("b-app", bind_app_port().await, handler),
        metrics: Upstream::serve(
            "b-metrics",
            bind_app_port().await,
            Arc::new(|s: &Seen| echo_reply("b-metrics", s)),
        ),
    }
}

fn manifests(mode: &str, http: u16, metrics: u16) -> String {
    manifests_named(mode, http, metrics, "http")
}

/// `name` is the name of the app's main port (its protocol: `http`, `http2`, `grpc`, ...).
fn manifests_named(mode: &str, http: u16, metrics: u16, name: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: b, namespace: apps, labels: {{app: b, sidecar.istio.io/inject: "true"}}}}
spec:
  serviceAccountName: b
  containers:
    - name: app
      image: echo
      ports: [{{name: {name}, containerPort: {http}}}, {{name: http-metrics, containerPort: {metrics}}}]
      readinessProbe: {{httpGet: {{path: /ready, port: {http}}}}}
      livenessProbe: {{httpGet: {{path: /live-fail, port: {name}}}}}
status: {{podIP: 127.0.0.2}}
---
apiVersion: v1
kind: Service
metadata: {{name: b, namespace: apps}}
spec:
  selector: {{app: b}}
  ports: [{{name: {name}, port: 8080, targetPort: {http}}}, {{name: http-metrics, port: 9090, targetPort: {metrics}}}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: a, namespace: apps}}
spec: {{address: 127.0.0.3, labels: {{app: a}}, serviceAccount: a}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: b, namespace: apps}}
spec:
  selector: {{matchLabels: {{app: b}}}}
  mtls: {{mode: {mode}}}
  portLevelMtls:
    {metrics}: {{mode: DISABLE}}
"#
    )
}

struct Mesh {
    dir: tempfile::TempDir,
}

impl Mesh {
    fn new() -> Mesh {
        let dir = tempfile::tempdir().unwrap();
        // Create the CA once, before the proxies load it.
        CertificateAuthority::load_or_generate(dir.path(), TD, "Trellis test").unwrap();
        Mesh { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    async fn identity(&self, sa: &str) -> Arc<MeshIdentity> {
        MeshIdentity::from_local_ca(
            self.path(),
            TD,
            "apps",
            sa,
            Duration::ZERO,
            RotationOptions::default(),
        )
        .await
        .unwrap()
    }

    fn ca(&self) -> CertificateAuthority {
        CertificateAuthority::load_plugin(self.path()).unwrap()
    }
}

/// Sidecar B serving `port` of the app on 127.0.0.2:`port`.
fn start_b(
    res: &[trellis_api::Resource],
    port: u16,
    mesh: Option<Arc<dyn MeshTlsProvider>>,
) -> RunningProxy {
    start(
        compile_for(res, &MeshConfig::default(), "apps/b"),
        Start {
            remap: vec![(15006, SocketAddr::from(([127, 0, 0, 2], port)))],
            mesh,
            status: Some(loopback0()),
            ..Start::default()
        },
    )
}

/// Sidecar A; returns it and the address of its outbound listener for service port 8080.
fn start_a(
    res: &[trellis_api::Resource],
    mesh: Option<Arc<dyn MeshTlsProvider>>,
) -> (RunningProxy, SocketAddr, SocketAddr) {
    let a = start(
        compile_for(res, &MeshConfig::default(), "apps/a"),
        Start {
            mesh,
            ..Start::default()
        },
    );
    let http = a.listener_addr("0.0.0.0_8080").unwrap();
    let metrics = a.listener_addr("0.0.0.0_9090").unwrap();
    (a, http, metrics)
}

fn sha256_hex(der: &[u8]) -> String {
    sha2::Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A certificate + key (PEM files in `dir`) for `spiffe://cluster.local/ns/apps/sa/<sa>` from
/// `ca`.
fn client_cert(ca: &CertificateAuthority, sa: &str, dir: &Path) -> (String, String) {
    let id = SpiffeId::new(TD, "apps", sa).unwrap();
    let req = generate_key_and_csr(&id).unwrap();
    let issued = ca.sign_csr(&req.csr_pem, &id, Duration::ZERO).unwrap();
    let cert = dir.join(format!("{sa}-cert.pem"));
    let key = dir.join(format!("{sa}-key.pem"));
    std::fs::write(&cert, &issued.chain_pem).unwrap();
    std::fs::write(&key, req.key.serialize_pem()).unwrap();
    (
        cert.to_string_lossy().into_owned(),
        key.to_string_lossy().into_owned(),
    )
}

/// `openssl s_client` to `addr` sending one HTTP request; returns (stdout, stderr).
async fn s_client(addr: SocketAddr, cert: Option<(&str, &str)>) -> (String, String) {
    let mut args: Vec<String> = vec![
        "s_client".into(),
        "-connect".into(),
        addr.to_string(),
        "-tls1_3".into(),
        "-ign_eof".into(),
    ];
    if let Some((c, k)) = cert {
        args.extend(["-cert".into(), c.into(), "-key".into(), k.into()]);
    }
    let (_, out, err) = run(
        "openssl",
        args,
        Some("GET /via-openssl HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n".into()),
    )
    .await;
    (out, err)
}

#[tokio::test]
async fn strict_mtls_between_two_sidecars_from_one_ca() {
    let mesh = Mesh::new();
    let app = app().await;
    let port = app.http.addr.port();
    let res = load(&manifests("STRICT", port, app.metrics.addr.port()));
    let b_id = mesh.identity("b").await;
    let a_id = mesh.identity("a").await;
    let b = start_b(&res, port, Some(b_id.clone()));
    let (a, a_out, _) = start_a(&res, Some(a_id.clone()));
    let inbound = SocketAddr::from(([127, 0, 0, 2], port));

    // A → B over mTLS: the app sees B's x-forwarded-client-cert naming A (never the client's).
    let (status, body) = get(
        a_out,
        B_HOST,
        "/hello",
        &[(
            "x-forwarded-client-cert",
            "By=spiffe://cluster.local/ns/apps/sa/b;URI=spiffe://cluster.local/ns/apps/sa/admin",
        )],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(echo(&body, "upstream").as_deref(), Some("b-app"));
    let a_leaf = a_id.manager().current().unwrap();
    let expected = format!(
        "By=spiffe://cluster.local/ns/apps/sa/b;Hash={};URI=spiffe://cluster.local/ns/apps/sa/a",
        sha256_hex(a_leaf.chain()[0].as_ref())
    );
    assert_eq!(
        echo(&body, "h:x-forwarded-client-cert").as_deref(),
        Some(expected.as_str())
    );
    let cfg = b.config();
    assert_eq!(
        cfg.security.inbound_ports[&port].source,
        "workload PeerAuthentication apps/b"
    );

    // Plaintext to B's STRICT port: closed without an answer, and the log says why.
    let (status, text) = get(inbound, "b", "/plain", &[]).await;
    assert_eq!((status, text.as_str()), (0, ""));
    wait_log(&["plaintext connection refused", "PeerAuthentication STRICT"]).await;

    let tmp = tempfile::tempdir().unwrap();
    // openssl without a client certificate: no HTTP answer.
    let (out, err) = s_client(inbound, None).await;
    assert!(!out.contains("HTTP/1.1"), "{out}\n{err}");
    assert!(
        format!("{out}{err}").contains("certificate required"),
        "{out}\n{err}"
    );
    // openssl with a certificate from the mesh CA: served, and the app sees its identity.
    let (c, k) = client_cert(&mesh.ca(), "openssl", tmp.path());
    let (out, err) = s_client(inbound, Some((&c, &k))).await;
    assert!(out.contains("HTTP/1.1 200"), "{out}\n{err}");
    assert!(
        out.contains("URI=spiffe://cluster.local/ns/apps/sa/openssl"),
        "{out}"
    );
    // openssl with a certificate from another CA (same SPIFFE id): refused.
    let other = CertificateAuthority::generate(TD, "Other").unwrap();
    let (c, k) = client_cert(&other, "a", tmp.path());
    let (out, err) = s_client(inbound, Some((&c, &k))).await;
    assert!(!out.contains("HTTP/1.1"), "{out}\n{err}");
    assert!(format!("{out}{err}").contains("alert"), "{out}\n{err}");
    wait_log(&["mutual TLS handshake failed"]).await;

    // The workload certificate: verified by openssl against the mesh root, one URI SAN.
    let b_cert = tmp.path().join("b.pem");
    std::fs::write(
        &b_cert,
        trellis_identity::pem::certs_to_pem(b_id.manager().current().unwrap().chain()),
    )
    .unwrap();
    let root = mesh.path().join("root-cert.pem");
    let (ok, out, err) = run(
        "openssl",
        vec![
            "verify".into(),
            "-CAfile".into(),
            root.to_string_lossy().into(),
            b_cert.to_string_lossy().into(),
        ],
        None,
    )
    .await;
    assert!(ok && out.contains(": OK"), "{out}{err}");
    let (_, out, _) = run(
        "openssl",
        vec![
            "x509".into(),
            "-noout".into(),
            "-ext".into(),
            "subjectAltName,basicConstraints".into(),
            "-in".into(),
            b_cert.to_string_lossy().into(),
        ],
        None,
    )
    .await;
    assert!(
        out.contains("URI:spiffe://cluster.local/ns/apps/sa/b"),
        "{out}"
    );
    assert!(out.contains("CA:FALSE"), "{out}");

    a.shutdown(Duration::from_secs(1)).await;
    b.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn permissive_accepts_plaintext_and_mtls_on_one_port() {
    let mesh = Mesh::new();
    let app = app().await;
    let port = app.http.addr.port();
    let res = load(&manifests("PERMISSIVE", port, app.metrics.addr.port()));
    let b = start_b(&res, port, Some(mesh.identity("b").await));
    let (a, a_out, _) = start_a(&res, Some(mesh.identity("a").await));
    let inbound = SocketAddr::from(([127, 0, 0, 2], port));

    let (status, body) = get(
        inbound,
        "b",
        "/plain",
        &[(
            "x-forwarded-client-cert",
            "By=x;URI=spiffe://cluster.local/ns/x/sa/y",
        )],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        echo(&body, "h:x-forwarded-client-cert"),
        None,
        "plaintext: no XFCC"
    );
    let (status, body) = get(a_out, B_HOST, "/mtls", &[]).await;
    assert_eq!(status, 200, "{body}");
    assert!(echo(&body, "h:x-forwarded-client-cert")
        .unwrap()
        .ends_with(";URI=spiffe://cluster.local/ns/apps/sa/a"));
    a.shutdown(Duration::from_secs(1)).await;
    b.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn port_level_disable_allows_plaintext_on_that_port_only() {
    let mesh = Mesh::new();
    let app = app().await;
    let (port, metrics) = (app.http.addr.port(), app.metrics.addr.port());
    let res = load(&manifests("STRICT", port, metrics));
    let b_id: Arc<dyn MeshTlsProvider> = mesh.identity("b").await;
    let b = start_b(&res, port, Some(b_id.clone()));
    let b_metrics = start_b(&res, metrics, Some(b_id));
    assert_eq!(
        b.config().security.inbound_ports[&metrics].source,
        format!("workload PeerAuthentication apps/b portLevelMtls {metrics}")
    );
    let (status, body) = get(
        SocketAddr::from(([127, 0, 0, 2], metrics)),
        "b",
        "/metrics",
        &[],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(echo(&body, "upstream").as_deref(), Some("b-metrics"));
    let (status, _) = get(SocketAddr::from(([127, 0, 0, 2], port)), "b", "/plain", &[]).await;
    assert_eq!(status, 0, "the other port stays STRICT");
    b.shutdown(Duration::from_secs(1)).await;
    b_metrics.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn no_plaintext_fallback_before_the_certificate_is_loaded() {
    let mesh = Mesh::new();
    let app = app().await;
    let port = app.http.addr.port();
    let res = load(&manifests("STRICT", port, app.metrics.addr.port()));
    let ca = Arc::new(mesh.ca());
    // B's identity exists but holds no certificate yet.
    let b_spiffe = SpiffeId::new(TD, "apps", "b").unwrap();
    let manager = IdentityManager::new(b_spiffe.clone(), ca.trust_bundle().clone());
    let b_id = MeshIdentity::new(manager.clone()).unwrap();
    let b = start_b(&res, port, Some(b_id));
    let (a, a_out, _) = start_a(&res, Some(mesh.identity("a").await));
    let before = app.http.hits();
    let (status, body) = get(a_out, B_HOST, "/early", &[]).await;
    assert_eq!(status, 503, "{body}");
    let (status, _) = get(SocketAddr::from(([127, 0, 0, 2], port)), "b", "/plain", &[]).await;
    assert_eq!(status, 0, "no plaintext fallback");
    assert_eq!(app.http.hits(), before);
    // The certificate arrives: the same proxies now serve, no restart.
    manager
        .renew(&LocalIssuer::new(ca.clone(), b_spiffe, Duration::ZERO))
        .await
        .unwrap();
    let (status, body) = get(a_out, B_HOST, "/later", &[]).await;
    assert_eq!(status, 200, "{body}");

    // A client without a certificate yet: its mTLS connections fail rather than go plaintext.
    let a_spiffe = SpiffeId::new(TD, "apps", "a").unwrap();
    let a2 = MeshIdentity::new(IdentityManager::new(a_spiffe, ca.trust_bundle().clone())).unwrap();
    let (a2, a2_out, _) = start_a(&res, Some(a2));
    let (status, body) = get(a2_out, B_HOST, "/no-cert", &[]).await;
    assert_eq!(status, 503, "{body}");
    a.shutdown(Duration::from_secs(1)).await;
    a2.shutdown(Duration::from_secs(1)).await;
    b.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_sidecar_from_another_ca_is_refused_both_ways() {
    let mesh = Mesh::new();
    let other = Mesh::new();
    let app = app().await;
    let port = app.http.addr.port();
    let res = load(&manifests("STRICT", port, app.metrics.addr.port()));
    let b = start_b(&res, port, Some(mesh.identity("b").await));
    let (a, a_out, _) = start_a(&res, Some(other.identity("a").await));
    let (status, body) = get(a_out, B_HOST, "/foreign", &[]).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(app.http.hits(), 0);
    a.shutdown(Duration::from_secs(1)).await;
    b.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn app_probes_work_under_strict_through_the_status_port() {
    let mesh = Mesh::new();
    let app = app().await;
    let port = app.http.addr.port();
    let res = load(&manifests("STRICT", port, app.metrics.addr.port()));
    let b = start_b(&res, port, Some(mesh.identity("b").await));
    let status_addr = b.status_addr().unwrap();
    let (status, text) = get(status_addr, "b", "/app-health/app/readyz", &[]).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(app.http.last().path, "/ready");
    assert_eq!(
        app.http.last().headers.get("user-agent").unwrap(),
        "trellis-probe"
    );
    let (status, text) = get(status_addr, "b", "/app-health/app/livez", &[]).await;
    assert_eq!(status, 500, "the app's failure is reported: {text}");
    let (status, _) = get(status_addr, "b", "/app-health/app/startupz", &[]).await;
    assert_eq!(status, 404, "no startup probe");
    let (status, _) = get(status_addr, "b", "/healthz/ready", &[]).await;
    assert_eq!(status, 200);
    // The same probe on the app port itself, in plaintext, is refused (STRICT).
    let (status, _) = get(SocketAddr::from(([127, 0, 0, 2], port)), "b", "/ready", &[]).await;
    assert_eq!(status, 0);
    b.shutdown(Duration::from_secs(1)).await;
}

/// AuthorizationPolicy on B judges the mTLS peer identity; policies selecting A do not touch
/// A's own outbound calls (sidecars enforce on inbound traffic only).
#[tokio::test]
async fn sidecar_authorization_uses_the_peer_identity_on_inbound_only() {
    let mesh = Mesh::new();
    let app = app().await;
    let port = app.http.addr.port();
    let policies = r#"
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: only-a, namespace: apps}
spec:
  selector: {matchLabels: {app: b}}
  rules:
    - from: [{source: {principals: ["cluster.local/ns/apps/sa/a"]}}]
      to: [{operation: {methods: [GET]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: a-accepts-nothing, namespace: apps}
spec:
  selector: {matchLabels: {app: a}}
  action: DENY
  rules: [{}]
"#;
    let res = load(&(manifests("STRICT", port, app.metrics.addr.port()) + policies));
    let b = start_b(&res, port, Some(mesh.identity("b").await));
    let (a, a_out, _) = start_a(&res, Some(mesh.identity("a").await));
    let (status, body) = get(a_out, B_HOST, "/from-a", &[]).await;
    assert_eq!(
        status, 200,
        "A's outbound is not judged by A's policies: {body}"
    );
    let raw = format!(
        "POST /from-a HTTP/1.1\r\nHost: {B_HOST}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let (status, text) = raw_http(a_out, &raw).await;
    assert_eq!(status, 403, "{text}");
    assert!(text.ends_with("RBAC: access denied"));

    // Another identity of the same mesh: denied, and the log names the policy.
    let tmp = tempfile::tempdir().unwrap();
    let (c, k) = client_cert(&mesh.ca(), "intruder", tmp.path());
    let (out, err) = s_client(SocketAddr::from(([127, 0, 0, 2], port)), Some((&c, &k))).await;
    assert!(out.contains("HTTP/1.1 403"), "{out}\n{err}");
    let line = wait_log(&["\"GET /via-openssl HTTP/1.1\" 403 RBAC"]).await;
    assert!(
        line[0].contains("denied: no ALLOW policy matched (apps/only-a)"),
        "{line:?}"
    );
    a.shutdown(Duration::from_secs(1)).await;
    b.shutdown(Duration::from_secs(1)).await;
}

/// The ingress gateway calls a STRICT workload with Istio mTLS when the DestinationRule says
/// ISTIO_MUTUAL (Alphintra's service-gateway), with its own mesh identity.
#[tokio::test]
async fn gateway_calls_a_strict_workload_over_istio_mutual() {
    let mesh = Mesh::new();
    let app = app().await;
    let port = app.http.addr.port();
    let gateway = r#"
---
apiVersion: v1
kind: Pod
metadata: {name: ingress, namespace: istio-system, labels: {istio: ingressgateway}}
spec: {serviceAccountName: ingressgateway, containers: [{name: istio-proxy, image: trellis}]}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: b, namespace: istio-system}
spec:
  hosts: ["*"]
  gateways: [gw]
  http: [{route: [{destination: {host: b.apps.svc.cluster.local, port: {number: 8080}}}]}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: b, namespace: apps}
spec:
  host: b.apps.svc.cluster.local
  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}
"#;
    let res = load(&(manifests("STRICT", port, app.metrics.addr.port()) + gateway));
    let b = start_b(&res, port, Some(mesh.identity("b").await));
    let gw_id = MeshIdentity::from_local_ca(
        mesh.path(),
        TD,
        "istio-system",
        "ingressgateway",
        Duration::ZERO,
        RotationOptions::default(),
    )
    .await
    .unwrap();
    let gw = start(
        compile_for(&res, &MeshConfig::default(), "istio-system/ingress"),
        Start {
            mesh: Some(gw_id),
            ..Start::default()
        },
    );
    let addr = gw.listener_addr("0.0.0.0_80").unwrap();
    let (status, body) = get(addr, "shop.example.com", "/via-gateway", &[]).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        echo(&body, "h:x-forwarded-client-cert")
            .unwrap()
            .ends_with(";URI=spiffe://cluster.local/ns/istio-system/sa/ingressgateway"),
        "{body}"
    );
    gw.shutdown(Duration::from_secs(1)).await;
    b.shutdown(Duration::from_secs(1)).await;
}

/// An HTTP/2 service: A negotiates `h2` with B over mTLS (ALPN), B speaks h2 to the app.
#[tokio::test]
async fn http2_over_mesh_mtls() {
    let mesh = Mesh::new();
    let app = app().await;
    let port = app.http.addr.port();
    let res = load(&manifests_named(
        "STRICT",
        port,
        app.metrics.addr.port(),
        "http2",
    ));
    let b = start_b(&res, port, Some(mesh.identity("b").await));
    let (a, a_out, _) = start_a(&res, Some(mesh.identity("a").await));
    let (status, body) = get(a_out, B_HOST, "/h2", &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(echo(&body, "version").as_deref(), Some("HTTP/2.0"));
    assert!(echo(&body, "h:x-forwarded-client-cert")
        .unwrap()
        .ends_with(";URI=spiffe://cluster.local/ns/apps/sa/a"));
    a.shutdown(Duration::from_secs(1)).await;
    b.shutdown(Duration::from_secs(1)).await;
}
