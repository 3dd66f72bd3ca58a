//! The push protocol on the wire, with a raw gRPC client standing in for a proxy: full
//! snapshot on connect, deltas per type, endpoint-only changes as ENDPOINTS only, rejected
//! edits, ACK/NACK tracking, the CA and the token.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use trellis_control::{ControlPlane, ControlPlaneOptions, RunningControlPlane, SyncState};
use trellis_protocol::{
    control_message, proxy_message, Ack, ConfigType, CsrRequest, Hello, MeshConfigClient, Nack,
    ProxyMessage, Update,
};

async fn start(dir: &std::path::Path) -> RunningControlPlane {
    ControlPlane::start(ControlPlaneOptions {
        inputs: vec![dir.to_path_buf()],
        grpc_listen: "127.0.0.1:0".parse().unwrap(),
        metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
        bootstrap_token: Some(TOKEN.into()),
        debounce: Duration::from_millis(50),
        ..ControlPlaneOptions::default()
    })
    .await
    .expect("control plane starts")
}

struct RawProxy {
    tx: mpsc::Sender<ProxyMessage>,
    rx: tonic::Streaming<trellis_protocol::ControlMessage>,
}

async fn client(addr: SocketAddr) -> MeshConfigClient<Channel> {
    MeshConfigClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
}

fn hello(ns: &str, name: &str, token: &str) -> ProxyMessage {
    ProxyMessage {
        msg: Some(proxy_message::Msg::Hello(Hello {
            proxy_id: format!("{name}.{ns}"),
            workload_namespace: ns.into(),
            workload_name: name.into(),
            token: token.into(),
            proxy_version: "test".into(),
            admin_addr: String::new(),
            cluster: String::new(),
        })),
    }
}

impl RawProxy {
    async fn connect(
        addr: SocketAddr,
        ns: &str,
        name: &str,
        token: &str,
    ) -> Result<Self, tonic::Status> {
        let (tx, rx) = mpsc::channel(16);
        tx.send(hello(ns, name, token)).await.unwrap();
        let rx = client(addr)
            .await
            .stream(ReceiverStream::new(rx))
            .await?
            .into_inner();
        Ok(RawProxy { tx, rx })
    }

    /// Every update of the next push (up to the one with `more = false`).
    async fn push(&mut self) -> Vec<Update> {
        let mut out = Vec::new();
        loop {
            let m = tokio::time::timeout(Duration::from_secs(5), self.rx.message())
                .await
                .expect("an update within 5s")
                .expect("stream ok")
                .expect("stream open");
            let Some(control_message::Msg::Update(u)) = m.msg else {
                continue;
            };
            let more = u.more;
            out.push(u);
            if !more {
                return out;
            }
        }
    }

    async fn ack(&self, updates: &[Update]) {
        for u in updates {
            self.tx
                .send(ProxyMessage {
                    msg: Some(proxy_message::Msg::Ack(Ack {
                        r#type: u.r#type,
                        version: u.version.clone(),
                    })),
                })
                .await
                .unwrap();
        }
    }

    async fn nack(&self, updates: &[Update], error: &str) {
        for u in updates {
            self.tx
                .send(ProxyMessage {
                    msg: Some(proxy_message::Msg::Nack(Nack {
                        r#type: u.r#type,
                        version: u.version.clone(),
                        error: error.into(),
                    })),
                })
                .await
                .unwrap();
        }
    }
}

fn names(u: &Update) -> Vec<String> {
    u.resources
        .iter()
        .map(|r| r.key.as_ref().unwrap().to_string())
        .collect()
}

fn state(cp: &RunningControlPlane, proxy: &str, ty: &str) -> SyncState {
    cp.status()
        .proxies
        .iter()
        .find(|p| p.id == proxy)
        .and_then(|p| p.types.iter().find(|t| t.type_name == ty))
        .map(|t| t.state)
        .unwrap_or(SyncState::NotSent)
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

#[tokio::test]
async fn snapshot_then_deltas_per_type_with_acks() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    fixture(dir.path(), addr(7001), addr(7002), "v1");
    let cp = start(dir.path()).await;
    assert_eq!(cp.snapshot_version(), 1);

    let mut gw = RawProxy::connect(cp.grpc_addr(), "istio-system", "ingress", TOKEN)
        .await
        .unwrap();
    let first = gw.push().await;
    assert_eq!(first.len(), 2, "one full update per type");
    assert_eq!(first[0].r#type(), ConfigType::Resources);
    assert!(first[0].full && first[0].mesh_config.is_some());
    assert_eq!(first[1].r#type(), ConfigType::Endpoints);
    assert!(first[1].full);
    let res = names(&first[0]);
    assert!(
        res.contains(&"Gateway istio-system/public".to_string()),
        "{res:?}"
    );
    assert!(
        res.contains(&"VirtualService a/edge".to_string()),
        "{res:?}"
    );
    // A gateway is not sent mesh-only routes.
    assert!(
        !res.contains(&"VirtualService a/echo".to_string()),
        "{res:?}"
    );
    let eps = names(&first[1]);
    assert!(
        eps.contains(&"WorkloadEntry a/echo-v1".to_string()),
        "{eps:?}"
    );
    // Each resource says where it was read.
    let vs = first[0]
        .resources
        .iter()
        .find(|r| r.key.as_ref().unwrap().name == "edge")
        .unwrap();
    assert!(
        vs.file.ends_with("routes.yaml") && vs.line == 1,
        "{}:{}",
        vs.file,
        vs.line
    );

    let mut side = RawProxy::connect(cp.grpc_addr(), "a", "client", TOKEN)
        .await
        .unwrap();
    let side_first = side.push().await;
    let res = names(&side_first[0]);
    assert!(
        res.contains(&"VirtualService a/echo".to_string()),
        "{res:?}"
    );
    assert!(!res.iter().any(|r| r.starts_with("Gateway ")), "{res:?}");
    assert!(
        !res.contains(&"VirtualService a/edge".to_string()),
        "{res:?}"
    );

    for (p, id) in [(&gw, "ingress.istio-system"), (&side, "client.a")] {
        eventually("proxy registered", Duration::from_secs(5), || {
            state(&cp, id, "RESOURCES") == SyncState::Stale
        })
        .await;
        let _ = p;
    }
    gw.ack(&first).await;
    side.ack(&side_first).await;
    eventually("both synced", Duration::from_secs(5), || cp.all_synced()).await;

    // A route edit: RESOURCES only, to both proxies, well under a second.
    let t0 = Instant::now();
    write(dir.path(), "routes.yaml", &routes("v2"));
    let u = gw.push().await;
    let took = t0.elapsed();
    assert_eq!(u.len(), 1, "{u:?}");
    assert_eq!(u[0].r#type(), ConfigType::Resources);
    assert!(!u[0].full);
    assert_eq!(names(&u[0]), ["VirtualService a/edge"]);
    assert!(u[0].mesh_config.is_none());
    assert!(took < Duration::from_secs(1), "route edit took {took:?}");
    let s = side.push().await;
    assert_eq!(s.len(), 1);
    assert_eq!(names(&s[0]), ["VirtualService a/echo"]);
    assert_eq!(u[0].version, "2");
    eventually("stale until acked", Duration::from_secs(5), || {
        state(&cp, "ingress.istio-system", "RESOURCES") == SyncState::Stale
    })
    .await;
    gw.ack(&u).await;
    side.ack(&s).await;
    eventually("synced again", Duration::from_secs(5), || cp.all_synced()).await;

    // An endpoint-only edit (a WorkloadEntry's address): ENDPOINTS only, no RESOURCES.
    let before = cp.status();
    let pushes = |st: &trellis_control::ControlPlaneStatus, id: &str, ty: &str| {
        st.proxies
            .iter()
            .find(|p| p.id == id)
            .unwrap()
            .types
            .iter()
            .find(|t| t.type_name == ty)
            .unwrap()
            .pushes
    };
    write(
        dir.path(),
        "workloads.yaml",
        &workloads(addr(7001), addr(7003)),
    );
    let u = gw.push().await;
    assert_eq!(u.len(), 1, "{u:?}");
    assert_eq!(u[0].r#type(), ConfigType::Endpoints);
    assert_eq!(names(&u[0]), ["WorkloadEntry a/echo-v2"]);
    assert!(u[0].resources[0].json.contains("7003"));
    let s = side.push().await;
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].r#type(), ConfigType::Endpoints);
    gw.ack(&u).await;
    side.ack(&s).await;
    eventually("synced after endpoints", Duration::from_secs(5), || {
        cp.all_synced()
    })
    .await;
    let after = cp.status();
    for id in ["ingress.istio-system", "client.a"] {
        assert_eq!(
            pushes(&before, id, "RESOURCES"),
            pushes(&after, id, "RESOURCES")
        );
        assert_eq!(
            pushes(&before, id, "ENDPOINTS") + 1,
            pushes(&after, id, "ENDPOINTS")
        );
    }

    // Metrics on the metrics port.
    let body = http_get(cp.metrics_addr().unwrap(), "/metrics").await;
    assert!(
        body.contains("trellis_control_pushes_total{type=\"ENDPOINTS\"}"),
        "{body}"
    );
    assert!(
        body.contains("trellis_control_connected_proxies 2"),
        "{body}"
    );
    let syncz = http_get(cp.metrics_addr().unwrap(), "/debug/syncz").await;
    let st: trellis_control::ControlPlaneStatus =
        serde_json::from_str(syncz.split_once("\r\n\r\n").unwrap().1).unwrap();
    assert_eq!(st.proxies.len(), 2);
    cp.shutdown().await;
}

async fn http_get(addr: SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test]
async fn broken_edits_are_rejected_and_located_and_nacks_are_recorded() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    fixture(dir.path(), addr(7001), addr(7002), "v1");
    let cp = start(dir.path()).await;
    let mut gw = RawProxy::connect(cp.grpc_addr(), "istio-system", "ingress", TOKEN)
        .await
        .unwrap();
    let first = gw.push().await;
    gw.ack(&first).await;
    eventually("synced", Duration::from_secs(5), || cp.all_synced()).await;

    // Schema error: a negative weight on line 10 of routes.yaml.
    let broken = routes("v1").replacen("subset: v1}\n", "subset: v1}\n      weight: -5\n", 1);
    assert!(broken.contains("weight: -5"));
    write(dir.path(), "routes.yaml", &broken);
    eventually("schema error reported", Duration::from_secs(5), || {
        cp.last_error().is_some()
    })
    .await;
    let e = cp.last_error().unwrap();
    let text = e.to_string();
    assert!(text.contains("IST0106"), "{text}");
    assert!(text.contains("routes.yaml:10:7"), "{text}");
    assert_eq!(e.serving_version, 1);
    assert_eq!(cp.snapshot_version(), 1);

    // Analyzer error: a route bound to a Gateway that does not exist (IST0101).
    write(
        dir.path(),
        "routes.yaml",
        &routes("v1").replace("istio-system/public", "istio-system/missing"),
    );
    eventually("analyzer error reported", Duration::from_secs(5), || {
        cp.last_error()
            .is_some_and(|e| e.to_string().contains("IST0101"))
    })
    .await;
    let text = cp.last_error().unwrap().to_string();
    assert!(text.contains("VirtualService a/edge"), "{text}");
    assert!(text.contains("routes.yaml:"), "{text}");
    assert_eq!(cp.snapshot_version(), 1);
    let st = cp.status();
    assert_eq!(
        st.proxies[0].types[0].pushes, 1,
        "nothing pushed for rejected edits"
    );
    // The error is also on the debug endpoint.
    let body = http_get(cp.metrics_addr().unwrap(), "/debug/config_errors").await;
    assert!(body.contains("IST0101"), "{body}");
    let metrics = http_get(cp.metrics_addr().unwrap(), "/metrics").await;
    assert!(
        metrics.contains("trellis_control_config_errors_total 2"),
        "{metrics}"
    );

    // A good edit clears the error and is pushed; the proxy NACKs it.
    write(dir.path(), "routes.yaml", &routes("v2"));
    let u = gw.push().await;
    assert_eq!(u[0].version, "2");
    assert!(cp.last_error().is_none());
    gw.nack(
        &u,
        "compile failed: routes.yaml:1: something the proxy cannot run",
    )
    .await;
    eventually("NACK recorded", Duration::from_secs(5), || {
        state(&cp, "ingress.istio-system", "RESOURCES") == SyncState::Nacked
    })
    .await;
    let st = cp.status();
    let t = &st.proxies[0].types[0];
    assert_eq!(t.nack.as_ref().unwrap().version, "2");
    assert!(t.nack.as_ref().unwrap().error.contains("cannot run"));
    assert_eq!(t.acked_version.as_deref(), Some("1"));
    assert_eq!(t.pending.len(), 1);
    assert_eq!(t.pending[0].resource, "VirtualService a/edge");
    assert_eq!(t.pending[0].change, "updated");
    assert!(
        t.pending[0].location.ends_with("routes.yaml:1"),
        "{:?}",
        t.pending[0]
    );
    // The next version, ACKed, clears it.
    write(dir.path(), "routes.yaml", &routes("v1"));
    let u = gw.push().await;
    gw.ack(&u).await;
    eventually("synced after fix", Duration::from_secs(5), || {
        cp.all_synced()
    })
    .await;
    let t = &cp.status().proxies[0].types[0];
    assert!(t.nack.is_none() && t.pending.is_empty());
    cp.shutdown().await;
}

#[tokio::test]
async fn reload_now_reports_unchanged_and_rejected() {
    let dir = tempfile::tempdir().unwrap();
    fixture(dir.path(), addr(7001), addr(7002), "v1");
    let cp = ControlPlane::start(ControlPlaneOptions {
        inputs: vec![dir.path().to_path_buf()],
        grpc_listen: "127.0.0.1:0".parse().unwrap(),
        metrics_listen: None,
        watch: false,
        ..ControlPlaneOptions::default()
    })
    .await
    .unwrap();
    assert_eq!(cp.reload_now().await.unwrap(), 1);
    write(dir.path(), "routes.yaml", "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: x, namespace: a}\nspec:\n  hosts: [a]\n  htp: []\n");
    let e = cp.reload_now().await.unwrap_err();
    assert!(e.to_string().contains("routes.yaml:6:"), "{e}");
    write(dir.path(), "routes.yaml", &routes("v2"));
    assert_eq!(cp.reload_now().await.unwrap(), 2);
    assert!(cp.last_error().is_none());
    cp.shutdown().await;
}

#[tokio::test]
async fn start_fails_on_schema_errors() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "bad.yaml", "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: x}\nspec:\n  hosts: [a]\n  bogus: 1\n");
    let e = ControlPlane::start(ControlPlaneOptions {
        inputs: vec![dir.path().to_path_buf()],
        grpc_listen: "127.0.0.1:0".parse().unwrap(),
        metrics_listen: None,
        ..ControlPlaneOptions::default()
    })
    .await
    .err()
    .expect("start refused");
    assert!(e.to_string().contains("bad.yaml:6:"), "{e}");
    assert!(e.to_string().contains("IST0106"), "{e}");
}

#[tokio::test]
async fn bad_tokens_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    fixture(dir.path(), addr(7001), addr(7002), "v1");
    let cp = start(dir.path()).await;
    let e = RawProxy::connect(cp.grpc_addr(), "a", "client", "wrong")
        .await
        .err()
        .unwrap();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    let mut c = client(cp.grpc_addr()).await;
    let e = c
        .sign_certificate(CsrRequest {
            token: "wrong".into(),
            workload_namespace: "a".into(),
            workload_name: "client".into(),
            csr_pem: "x".into(),
            ttl_seconds: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    cp.shutdown().await;
}

#[tokio::test]
async fn certificates_carry_the_workload_identity_from_the_config() {
    let dir = tempfile::tempdir().unwrap();
    fixture(dir.path(), addr(7001), addr(7002), "v1");
    let cp = start(dir.path()).await;
    // The CSR asks for another identity: it is ignored.
    let asked = trellis_identity::SpiffeId::parse("spiffe://cluster.local/ns/kube-system/sa/admin")
        .unwrap();
    let req = trellis_identity::generate_key_and_csr(&asked).unwrap();
    let mut c = client(cp.grpc_addr()).await;
    let r = c
        .sign_certificate(CsrRequest {
            token: TOKEN.into(),
            workload_namespace: "a".into(),
            workload_name: "client".into(),
            csr_pem: req.csr_pem.clone(),
            ttl_seconds: 3600,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.spiffe_id, "spiffe://cluster.local/ns/a/sa/client-sa");
    let d = tempfile::tempdir().unwrap();
    let leaf = d.path().join("chain.pem");
    let root = d.path().join("root.pem");
    std::fs::write(&leaf, &r.cert_chain_pem).unwrap();
    std::fs::write(&root, &r.root_pem).unwrap();
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(&leaf)
        .output()
        .expect("openssl");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("URI:spiffe://cluster.local/ns/a/sa/client-sa"),
        "{text}"
    );
    assert!(!text.contains("kube-system"), "{text}");
    let out = Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(&root)
        .arg(&leaf)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Unknown workloads get nothing.
    let e = c
        .sign_certificate(CsrRequest {
            token: TOKEN.into(),
            workload_namespace: "a".into(),
            workload_name: "nobody".into(),
            csr_pem: req.csr_pem,
            ttl_seconds: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    cp.shutdown().await;
}
