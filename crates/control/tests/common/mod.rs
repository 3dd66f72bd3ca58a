//! Shared fixtures: a small mesh in a temp dir (a gateway, a client sidecar, an `echo`
//! ServiceEntry with v1/v2 WorkloadEntries), and helpers.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

pub const TOKEN: &str = "test-bootstrap-token";

pub fn write(dir: &Path, name: &str, text: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

pub const MESH: &str = "apiVersion: v1
kind: Namespace
metadata: {name: a}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: echo, namespace: a}
spec:
  hosts: [echo.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 8080, name: http, protocol: HTTP}
  workloadSelector:
    labels: {app: echo}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: echo, namespace: a}
spec:
  host: echo.local
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: public, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [\"*\"]
";

/// The workloads; `v1`/`v2` are the echo instances' `address:port`.
pub fn workloads(v1: SocketAddr, v2: SocketAddr) -> String {
    let we = |name: &str, version: &str, a: SocketAddr| {
        format!(
            "apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: {name}, namespace: a}}
spec:
  address: {}
  serviceAccount: echo
  ports: {{http: {}}}
  labels:
    app: echo
    version: {version}
    security.istio.io/tlsMode: disabled
---
",
            a.ip(),
            a.port()
        )
    };
    format!(
        "{}{}apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: client, namespace: a}}
spec:
  address: 127.0.0.1
  serviceAccount: client-sa
  labels: {{app: client}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: ingress, namespace: istio-system}}
spec:
  address: 127.0.0.1
  serviceAccount: ingress-sa
  labels: {{istio: ingressgateway}}
",
        we("echo-v1", "v1", v1),
        we("echo-v2", "v2", v2)
    )
}

/// Routes: the gateway's and the mesh's, both to `subset`.
pub fn routes(subset: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: edge, namespace: a}}
spec:
  hosts: [\"*\"]
  gateways: [istio-system/public]
  http:
  - route:
    - destination: {{host: echo.local, port: {{number: 8080}}, subset: {subset}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: echo, namespace: a}}
spec:
  hosts: [echo.local]
  http:
  - route:
    - destination: {{host: echo.local, subset: {subset}}}
"
    )
}

/// Writes the whole fixture into `dir`.
pub fn fixture(dir: &Path, v1: SocketAddr, v2: SocketAddr, subset: &str) {
    write(dir, "mesh.yaml", MESH);
    write(dir, "workloads.yaml", &workloads(v1, v2));
    write(dir, "routes.yaml", &routes(subset));
}

pub async fn eventually<F: FnMut() -> bool>(what: &str, timeout: Duration, mut check: F) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".to_string()))
        .with_test_writer()
        .try_init();
}
