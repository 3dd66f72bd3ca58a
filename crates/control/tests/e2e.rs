//! Control plane + two real proxies (a gateway and a sidecar, in process, driven by
//! `trellis_proxy::control_client`) + two echo upstreams: live route edits, endpoint-only
//! edits, rejected edits, a NACK from a failing apply, and a control-plane restart, all
//! observed through real traffic and the status.

mod common;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::TokioIo;
use trellis_control::{ControlPlane, ControlPlaneOptions, RunningControlPlane, SyncState};
use trellis_proxy::control_client::{start_proxy, ControlClientOptions, ControlledProxy};
use trellis_proxy::RuntimeOptions;

/// An HTTP server answering every request with `body`.
async fn echo(body: &'static str) -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req| async move {
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(body))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    a
}

/// One GET through `addr`: the body, or the error.
async fn get(addr: SocketAddr) -> Result<String, String> {
    let s = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = hyper::Request::get("/")
        .header("host", "echo.example")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let body = String::from_utf8_lossy(&body).to_string();
    if status != 200 {
        return Err(format!("{status}: {body}"));
    }
    Ok(body)
}

async fn start_cp(dir: &std::path::Path, grpc: SocketAddr) -> RunningControlPlane {
    ControlPlane::start(ControlPlaneOptions {
        inputs: vec![dir.to_path_buf()],
        grpc_listen: grpc,
        metrics_listen: None,
        bootstrap_token: Some(TOKEN.into()),
        debounce: Duration::from_millis(50),
        id: Some("cp-test".into()),
        ..ControlPlaneOptions::default()
    })
    .await
    .expect("control plane starts")
}

async fn proxy(cp: SocketAddr, ns: &str, name: &str, remap: &[u16]) -> ControlledProxy {
    let mut o = ControlClientOptions::new(cp.to_string(), ns, name);
    o.token = Some(TOKEN.into());
    let ro = RuntimeOptions {
        listen_remap: remap
            .iter()
            .map(|p| (*p, SocketAddr::from(([127, 0, 0, 1], 0))))
            .collect::<HashMap<_, _>>(),
        admin: Some("127.0.0.1:0".parse().unwrap()),
        status: None,
        drain_timeout: Duration::from_millis(200),
        ..RuntimeOptions::default()
    };
    tokio::time::timeout(Duration::from_secs(10), start_proxy(o, ro))
        .await
        .expect("proxy gets its first config within 10s")
}

fn routes_json(p: &ControlledProxy) -> String {
    serde_json::to_string(&p.proxy.config().routes).unwrap()
}

async fn until_body(gw: SocketAddr, want: &str, timeout: Duration) -> Duration {
    let t0 = Instant::now();
    loop {
        if get(gw).await.as_deref() == Ok(want) {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < timeout,
            "no {want:?} through the gateway after {timeout:?}: last {:?}",
            get(gw).await
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_config_through_real_proxies() {
    init_logs();
    let v1 = echo("v1").await;
    let v2 = echo("v2").await;
    let dir = tempfile::tempdir().unwrap();
    fixture(dir.path(), v1, v2, "v1");
    let cp = start_cp(dir.path(), "127.0.0.1:0".parse().unwrap()).await;
    let grpc = cp.grpc_addr();

    let gw = proxy(grpc, "istio-system", "ingress", &[80]).await;
    let side = proxy(grpc, "a", "client", &[15001, 15006, 8080]).await;
    let gw_addr = gw
        .proxy
        .listener_addr("0.0.0.0_80")
        .expect("gateway listener");
    assert_eq!(get(gw_addr).await.unwrap(), "v1");
    assert!(routes_json(&side).contains("outbound|8080|v1|echo.local"));
    eventually("both proxies synced", Duration::from_secs(5), || {
        let st = cp.status();
        st.proxies.len() == 2 && cp.all_synced()
    })
    .await;
    eventually("admin addresses known", Duration::from_secs(5), || {
        cp.status().proxies.iter().all(|p| !p.admin_addr.is_empty())
    })
    .await;
    let st = cp.status();
    let g = st
        .proxies
        .iter()
        .find(|p| p.id == "ingress.istio-system")
        .unwrap();
    assert_eq!(g.proxy_kind, "gateway");
    assert_eq!(g.admin_addr, gw.proxy.admin_addr().unwrap().to_string());

    // A route edit reaches both proxies in well under a second.
    let t0 = Instant::now();
    write(dir.path(), "routes.yaml", &routes("v2"));
    let took = until_body(gw_addr, "v2", Duration::from_secs(5)).await;
    assert!(took < Duration::from_secs(1), "route change took {took:?}");
    eventually(
        "sidecar routes to v2",
        Duration::from_secs(1)
            .saturating_sub(t0.elapsed())
            .max(Duration::from_millis(100)),
        || routes_json(&side).contains("outbound|8080|v2|echo.local"),
    )
    .await;
    eventually("synced after the edit", Duration::from_secs(5), || {
        cp.all_synced()
    })
    .await;

    // An endpoint-only edit: echo-v2 now points at the v1 server; routes are not resent.
    let resources_pushes = |cp: &RunningControlPlane| -> Vec<u64> {
        cp.status()
            .proxies
            .iter()
            .map(|p| p.types[0].pushes)
            .collect()
    };
    let before = resources_pushes(&cp);
    write(dir.path(), "workloads.yaml", &workloads(v1, v1));
    until_body(gw_addr, "v1", Duration::from_secs(2)).await;
    eventually("synced after endpoints", Duration::from_secs(5), || {
        cp.all_synced()
    })
    .await;
    assert_eq!(
        before,
        resources_pushes(&cp),
        "an endpoint change resent RESOURCES"
    );
    write(dir.path(), "workloads.yaml", &workloads(v1, v2));
    until_body(gw_addr, "v2", Duration::from_secs(2)).await;

    // A broken edit changes nothing on the proxies.
    let version = gw.proxy.config().version.clone();
    write(
        dir.path(),
        "routes.yaml",
        &routes("v1").replace("subset: v1}\n", "subset: v1}\n      weight: -1\n"),
    );
    eventually("rejected", Duration::from_secs(5), || {
        cp.last_error().is_some()
    })
    .await;
    assert_eq!(gw.proxy.config().version, version);
    assert_eq!(get(gw_addr).await.unwrap(), "v2");

    // A config the gateway cannot apply (a server port already taken): NACKed, old config
    // keeps serving, proxy-status says NACKED with the reason.
    let taken = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    write(
        dir.path(),
        "mesh.yaml",
        &MESH.replace(
            "    hosts: [\"*\"]\n",
            &format!("    hosts: [\"*\"]\n  - port: {{number: {port}, name: http-extra, protocol: HTTP}}\n    hosts: [\"*\"]\n"),
        ),
    );
    write(dir.path(), "routes.yaml", &routes("v2"));
    eventually("gateway NACKed", Duration::from_secs(5), || {
        cp.status()
            .proxies
            .iter()
            .any(|p| p.id == "ingress.istio-system" && p.types[0].state == SyncState::Nacked)
    })
    .await;
    let st = cp.status();
    let g = st
        .proxies
        .iter()
        .find(|p| p.id == "ingress.istio-system")
        .unwrap();
    let nack = g.types[0].nack.as_ref().unwrap();
    assert!(nack.error.contains("cannot bind"), "{}", nack.error);
    assert!(g.types[0]
        .pending
        .iter()
        .any(|c| c.resource == "Gateway istio-system/public"));
    assert_eq!(get(gw_addr).await.unwrap(), "v2");
    assert!(gw.proxy.server_info().last_error.is_some());
    drop(taken);
    write(dir.path(), "mesh.yaml", MESH);
    eventually("synced after the fix", Duration::from_secs(5), || {
        cp.all_synced()
    })
    .await;

    // Control-plane restart: traffic keeps flowing during the outage, proxies resync after.
    cp.shutdown().await;
    drop(cp);
    eventually("clients notice", Duration::from_secs(5), || {
        !gw.client.status().connected && !side.client.status().connected
    })
    .await;
    for _ in 0..20 {
        assert_eq!(get(gw_addr).await.unwrap(), "v2");
    }
    let cp = start_cp(dir.path(), grpc).await;
    eventually(
        "proxies reconnected and synced",
        Duration::from_secs(10),
        || {
            let st = cp.status();
            st.proxies.len() == 2 && cp.all_synced()
        },
    )
    .await;
    assert_eq!(gw.client.status().connects, 2);
    assert_eq!(get(gw_addr).await.unwrap(), "v2");
    write(dir.path(), "routes.yaml", &routes("v1"));
    until_body(gw_addr, "v1", Duration::from_secs(2)).await;
    cp.shutdown().await;
    gw.shutdown(Duration::from_millis(200)).await;
    side.shutdown(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn a_proxy_whose_workload_is_missing_nacks_with_the_reason() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    fixture(
        dir.path(),
        "127.0.0.1:7001".parse().unwrap(),
        "127.0.0.1:7002".parse().unwrap(),
        "v1",
    );
    let cp = start_cp(dir.path(), "127.0.0.1:0".parse().unwrap()).await;
    let mut o = ControlClientOptions::new(cp.grpc_addr().to_string(), "a", "ghost");
    o.token = Some(TOKEN.into());
    let client = trellis_proxy::control_client::ControlClient::new(o);
    let applied = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = applied.clone();
    let runner = client.clone();
    let task = tokio::spawn(async move {
        runner
            .run(
                move |_u: trellis_proxy::control_client::ProxyConfigUpdate| {
                    counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    Ok(())
                },
            )
            .await
    });
    eventually("NACKed", Duration::from_secs(5), || {
        cp.status()
            .proxies
            .iter()
            .any(|p| p.id == "ghost.a" && p.types.iter().all(|t| t.state == SyncState::Nacked))
    })
    .await;
    let st = cp.status();
    let p = &st.proxies[0];
    assert_eq!(p.proxy_kind, "unknown");
    let err = &p.types[0].nack.as_ref().unwrap().error;
    assert!(err.contains("workload a/ghost not found"), "{err}");
    assert_eq!(applied.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert!(client.status().last_error.unwrap().contains("not found"));
    // The workload appears: the next push compiles and is ACKed.
    let extra = "---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: ghost, namespace: a}\nspec: {address: 127.0.0.1, labels: {app: ghost}}\n";
    write(
        dir.path(),
        "workloads.yaml",
        &format!(
            "{}{extra}",
            workloads(
                "127.0.0.1:7001".parse().unwrap(),
                "127.0.0.1:7002".parse().unwrap()
            )
        ),
    );
    eventually(
        "ACKed once the workload exists",
        Duration::from_secs(5),
        || cp.all_synced(),
    )
    .await;
    assert_eq!(applied.load(std::sync::atomic::Ordering::SeqCst), 1);
    task.abort();
    cp.shutdown().await;
}
