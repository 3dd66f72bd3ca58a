//! Distributed tracing end to end: an ingress gateway compiled from manifests (Telemetry API,
//! MeshConfig `extensionProviders`), a real echo upstream, and real collectors written
//! independently of Trellis's encoders (`support/trace_collector.py`: a Zipkin v2 HTTP
//! receiver, and an OTLP/gRPC receiver built on the official opentelemetry-proto package).
//!
//! Checked: the caller's B3 / W3C context is continued (same trace, the caller's span becomes
//! the parent, a new span id goes upstream), a trace is started when none comes in, the
//! caller's "not sampled" is kept (headers propagated, no span reported),
//! `randomSamplingPercentage: 0` samples nothing, and exported spans carry Istio's operation
//! name, service name and tags (custom literal and header tags included).

mod common;
mod security_support;

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::Upstream;
use security_support::*;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use trellis_api::MeshConfig;

/// A collector process and the spans it printed.
struct Collector {
    _child: tokio::process::Child,
    port: u16,
    spans: Arc<Mutex<Vec<Value>>>,
}

impl Collector {
    async fn start(kind: &str) -> Collector {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/support/trace_collector.py"
        );
        let mut child = tokio::process::Command::new("python3")
            .args([script, kind])
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 runs the trace collector");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("collector starts")
            .unwrap()
            .expect("collector prints its port (is grpcio / opentelemetry-proto installed?)");
        let port = first.strip_prefix("listening ").unwrap().parse().unwrap();
        let spans = Arc::new(Mutex::new(Vec::new()));
        let sink = spans.clone();
        tokio::spawn(async move {
            while let Ok(Some(l)) = lines.next_line().await {
                sink.lock().unwrap().push(serde_json::from_str(&l).unwrap());
            }
        });
        Collector {
            _child: child,
            port,
            spans,
        }
    }

    /// Waits for the span of `trace_id` (bounded).
    async fn span_of(&self, trace_id: &str) -> Value {
        for _ in 0..300 {
            if let Some(s) = self.find(trace_id) {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "no span for trace {trace_id}; got {:?}",
            self.spans.lock().unwrap()
        );
    }

    fn find(&self, trace_id: &str) -> Option<Value> {
        self.spans
            .lock()
            .unwrap()
            .iter()
            .find(|s| s["traceId"] == trace_id)
            .cloned()
    }
}

fn manifests(backend_port: u16, collector_port: u16, provider: &str, sampling: f64) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: ingress, namespace: istio-system, labels: {{istio: ingressgateway, app: istio-ingressgateway}}}}
spec: {{serviceAccountName: ingress, containers: [{{name: istio-proxy, image: trellis}}]}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gw, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers: [{{port: {{number: 80, name: http, protocol: HTTP}}, hosts: ["*"]}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: api, namespace: istio-system}}
spec:
  hosts: ["*"]
  gateways: [gw]
  http: [{{route: [{{destination: {{host: backend.app.svc.cluster.local, port: {{number: 8080}}}}}}]}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: backend, namespace: app}}
spec:
  hosts: [backend.app.svc.cluster.local]
  location: MESH_INTERNAL
  ports: [{{number: 8080, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1, ports: {{http: {backend_port}}}}}]
{}"#,
        tracing(collector_port, provider, sampling)
    )
}

/// The collector's ServiceEntry and a mesh-wide Telemetry sending spans there.
fn tracing(collector_port: u16, provider: &str, sampling: f64) -> String {
    format!(
        r#"---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: collector, namespace: observability}}
spec:
  hosts: [collector.observability.svc.cluster.local]
  location: MESH_INTERNAL
  ports: [{{number: 9411, name: tcp, protocol: TCP}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1, ports: {{tcp: {collector_port}}}}}]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {{name: mesh-default, namespace: istio-system}}
spec:
  tracing:
  - providers: [{{name: {provider}}}]
    randomSamplingPercentage: {sampling}
    customTags:
      team: {{literal: {{value: trading}}}}
      user: {{header: {{name: x-user, defaultValue: anonymous}}}}
"#
    )
}

fn mesh() -> MeshConfig {
    MeshConfig {
        extension_providers: serde_json::from_value(json!([
            {"name": "zipkin", "zipkin": {"service": "collector.observability.svc.cluster.local", "port": 9411}},
            {"name": "otel", "opentelemetry": {"service": "observability/collector.observability.svc.cluster.local", "port": 9411}}
        ]))
        .unwrap(),
        ..MeshConfig::default()
    }
}

struct Env {
    collector: Collector,
    backend: Upstream,
    _proxy: trellis_proxy::RunningProxy,
    addr: std::net::SocketAddr,
}

async fn env(kind: &str, provider: &str, sampling: f64) -> Env {
    let collector = Collector::start(kind).await;
    let backend = Upstream::echo("backend").await;
    let res = load(&manifests(
        backend.addr.port(),
        collector.port,
        provider,
        sampling,
    ));
    let config = compile_for(&res, &mesh(), "istio-system/ingress");
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    let proxy = start(config, Start::default());
    let addr = proxy.listener_addr("0.0.0.0_80").unwrap();
    Env {
        collector,
        backend,
        _proxy: proxy,
        addr,
    }
}

/// The upstream's view of the last request: its headers.
fn upstream_headers(body: &str) -> HashMap<String, String> {
    body.lines()
        .filter_map(|l| l.strip_prefix("h:"))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[tokio::test]
async fn zipkin_b3_context_is_continued_started_and_exported() {
    let e = env("zipkin", "zipkin", 100.0).await;

    // A caller that is not sampled: headers go on with sampled=0, and no span is reported.
    let unsampled = "11111111111111111111111111111111";
    let (status, body) = get(
        e.addr,
        "api.test",
        "/quiet",
        &[
            ("x-b3-traceid", unsampled),
            ("x-b3-spanid", "2222222222222222"),
            ("x-b3-sampled", "0"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let h = upstream_headers(&body);
    assert_eq!(h["x-b3-traceid"], unsampled);
    assert_eq!(h["x-b3-sampled"], "0");

    // The caller's sampled trace is continued: same trace, its span is our parent.
    let trace = "463ac35c9f6413ad48485a3953bb6124";
    let (status, body) = get(
        e.addr,
        "api.test",
        "/orders?id=7",
        &[
            ("x-b3-traceid", trace),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
            ("x-b3-sampled", "1"),
            ("x-user", "alice"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let h = upstream_headers(&body);
    assert_eq!(h["x-b3-traceid"], trace);
    assert_eq!(h["x-b3-parentspanid"], "a2fb4a1d1a96d312");
    assert_eq!(h["x-b3-sampled"], "1");
    let our_span = h["x-b3-spanid"].clone();
    assert_eq!(our_span.len(), 16);
    assert_ne!(our_span, "a2fb4a1d1a96d312");

    let span = e.collector.span_of(trace).await;
    assert_eq!(span["id"], our_span.as_str());
    assert_eq!(span["parentId"], "a2fb4a1d1a96d312");
    assert_eq!(span["kind"], "CLIENT");
    assert_eq!(span["name"], "backend.app.svc.cluster.local:8080/*");
    assert_eq!(span["service"], "istio-ingressgateway.istio-system");
    let tags = &span["tags"];
    assert_eq!(tags["http.method"], "GET");
    assert_eq!(tags["http.status_code"], "200");
    assert_eq!(tags["http.url"], "http://api.test/orders?id=7");
    assert_eq!(
        tags["upstream_cluster"],
        "outbound|8080||backend.app.svc.cluster.local"
    );
    assert_eq!(tags["guid:x-request-id"], h["x-request-id"].as_str());
    assert_eq!(tags["istio.canonical_service"], "istio-ingressgateway");
    assert_eq!(tags["istio.namespace"], "istio-system");
    assert_eq!(tags["team"], "trading");
    assert_eq!(tags["user"], "alice");
    assert!(tags.get("error").is_none(), "{span}");

    // The unsampled request came first and its span would have been exported by now.
    assert!(e.collector.find(unsampled).is_none());

    // No context: a new 128-bit trace starts here, with no parent.
    let (status, body) = get(e.addr, "api.test", "/fresh", &[]).await;
    assert_eq!(status, 200, "{body}");
    let h = upstream_headers(&body);
    let fresh = h["x-b3-traceid"].clone();
    assert_eq!(fresh.len(), 32);
    assert!(!h.contains_key("x-b3-parentspanid"), "{h:?}");
    let span = e.collector.span_of(&fresh).await;
    assert!(span["parentId"].is_null(), "{span}");
    assert_eq!(span["tags"]["user"], "anonymous");
    assert!(e.backend.hits() >= 3);
}

#[tokio::test]
async fn otlp_w3c_context_is_continued_and_exported_over_grpc() {
    let e = env("otlp", "otel", 100.0).await;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let (status, body) = get(
        e.addr,
        "api.test",
        "/w3c",
        &[(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let h = upstream_headers(&body);
    let tp = h["traceparent"].clone();
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!(parts.len(), 4, "{tp}");
    assert_eq!((parts[0], parts[1], parts[3]), ("00", trace, "01"));
    assert_ne!(parts[2], "00f067aa0ba902b7");

    let span = e.collector.span_of(trace).await;
    assert_eq!(span["id"], parts[2]);
    assert_eq!(span["parentId"], "00f067aa0ba902b7");
    assert_eq!(span["kind"], "CLIENT");
    assert_eq!(span["service"], "istio-ingressgateway.istio-system");
    assert_eq!(span["tags"]["http.status_code"], "200");
    assert_eq!(span["error"], false);
}

#[tokio::test]
async fn zero_sampling_propagates_but_reports_nothing() {
    let e = env("zipkin", "zipkin", 0.0).await;
    let mut traces = Vec::new();
    for _ in 0..20 {
        let (status, body) = get(e.addr, "api.test", "/", &[]).await;
        assert_eq!(status, 200, "{body}");
        let h = upstream_headers(&body);
        assert_eq!(h["x-b3-sampled"], "0");
        traces.push(h["x-b3-traceid"].clone());
    }
    // A forced trace is sampled whatever the rate, and proves the exporter works: once its
    // span is in, none of the earlier ones can still be on the way.
    let (_, body) = get(e.addr, "api.test", "/", &[("x-envoy-force-trace", "true")]).await;
    let forced = upstream_headers(&body)["x-b3-traceid"].clone();
    e.collector.span_of(&forced).await;
    for t in traces {
        assert!(
            e.collector.find(&t).is_none(),
            "unsampled trace {t} reported"
        );
    }
}

/// A sidecar pair (no mTLS identities: PERMISSIVE inbound): client → A's outbound listener →
/// B's `virtualInbound` → the app. A reports a CLIENT span, B a SERVER span whose parent is
/// A's, both in the client's trace; the app sees B's span as its parent.
#[tokio::test]
async fn sidecar_pair_reports_client_and_server_spans_of_one_trace() {
    let collector = Collector::start("zipkin").await;
    // The app listens on 127.0.0.1:<port>; B's inbound takes the same port on 127.0.0.2.
    let app_listener = loop {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.2", port)).is_ok() {
            break l;
        }
    };
    let port = app_listener.local_addr().unwrap().port();
    let app = Upstream::serve(
        "b-app",
        app_listener,
        Arc::new(|s: &common::Seen| common::echo_reply("b-app", s)),
    );
    let res = load(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: b, namespace: apps, labels: {{app: b}}}}
spec:
  serviceAccountName: b
  containers: [{{name: app, image: echo, ports: [{{name: http, containerPort: {port}}}]}}]
status: {{podIP: 127.0.0.2}}
---
apiVersion: v1
kind: Service
metadata: {{name: b, namespace: apps}}
spec:
  selector: {{app: b}}
  ports: [{{name: http, port: 8080, targetPort: {port}}}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: a, namespace: apps}}
spec: {{address: 127.0.0.3, labels: {{app: a}}, serviceAccount: a}}
{}"#,
        tracing(collector.port, "zipkin", 100.0)
    ));
    let b = start(
        compile_for(&res, &mesh(), "apps/b"),
        Start {
            remap: vec![(15006, std::net::SocketAddr::from(([127, 0, 0, 2], port)))],
            ..Start::default()
        },
    );
    let a = start(compile_for(&res, &mesh(), "apps/a"), Start::default());
    let out = a.listener_addr("0.0.0.0_8080").unwrap();

    let trace = "0af7651916cd43dd8448eb211c80319c";
    let (status, body) = get(
        out,
        "b.apps.svc.cluster.local:8080",
        "/quote",
        &[
            ("x-b3-traceid", trace),
            ("x-b3-spanid", "b7ad6b7169203331"),
            ("x-b3-sampled", "1"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let h = upstream_headers(&body);
    assert_eq!(h["x-b3-traceid"], trace);
    let b_span = h["x-b3-spanid"].clone();
    let a_span = h["x-b3-parentspanid"].clone();
    assert_ne!(
        a_span, "b7ad6b7169203331",
        "B's parent is A's span, not the client's"
    );

    let mut spans = Vec::new();
    for _ in 0..300 {
        spans = collector
            .spans
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s["traceId"] == trace)
            .cloned()
            .collect::<Vec<_>>();
        if spans.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let client = spans
        .iter()
        .find(|s| s["kind"] == "CLIENT")
        .expect("A's span");
    let server = spans
        .iter()
        .find(|s| s["kind"] == "SERVER")
        .expect("B's span");
    assert_eq!(client["id"], a_span.as_str());
    assert_eq!(client["parentId"], "b7ad6b7169203331");
    assert_eq!(client["service"], "a.apps");
    assert_eq!(client["name"], "b.apps.svc.cluster.local:8080/*");
    assert_eq!(server["id"], b_span.as_str());
    assert_eq!(server["parentId"], a_span.as_str());
    assert_eq!(server["service"], "b.apps");
    assert_eq!(server["tags"]["http.status_code"], "200");
    assert_eq!(app.hits(), 1);
    drop((a, b));
}
