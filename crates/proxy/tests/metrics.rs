//! Istio's standard metrics from a real proxy (the runtime, its listeners, admin and status
//! ports): requests that succeed (200), find no route (404 `NR`), find no endpoint (503 `UH`)
//! or cannot connect (503 `UF`), and a TCP connection, read back from `/stats/prometheus`;
//! then the same scraped by a real Prometheus (when installed) and read from its query API.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use trellis_model::config::*;
use trellis_proxy::{ProxyRuntime, RunningProxy, RuntimeOptions};

const ECHO_SVC: &str = "echo.test.svc.cluster.local";
const ECHO_CLUSTER: &str = "outbound|80||echo.test.svc.cluster.local";

/// Echoes until EOF, then closes its side.
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

fn named_cluster(name: &str, host: &str, protocol: UpstreamProtocol) -> Cluster {
    let mut c = cluster(name);
    c.service.host = host.into();
    c.protocol = protocol;
    c
}

/// A gateway (`ingress-gw.test`, app `ingress`): `echo` routes `/` to the echo upstream,
/// `/empty` to a cluster without endpoints, `/closed` to an address nothing listens on;
/// port 6379 proxies TCP to an echo server. `inbound` turns it into a sidecar whose HTTP
/// listener is `virtualInbound`.
async fn config(http_upstream: SocketAddr, tcp_upstream: SocketAddr, inbound: bool) -> ProxyConfig {
    let mut cfg = Builder::new()
        .vhost(
            &["echo"],
            vec![
                route("empty", vec![prefix("/empty")], to("empty")),
                route("closed", vec![prefix("/closed")], to("closed")),
                route("echo", vec![prefix("/")], to(ECHO_CLUSTER)),
            ],
        )
        .cluster(
            named_cluster(ECHO_CLUSTER, ECHO_SVC, UpstreamProtocol::Http1),
            &[http_upstream],
        )
        .cluster(
            named_cluster(
                "empty",
                "empty.test.svc.cluster.local",
                UpstreamProtocol::Http1,
            ),
            &[],
        )
        .cluster(
            named_cluster(
                "closed",
                "closed.test.svc.cluster.local",
                UpstreamProtocol::Http1,
            ),
            &[dead_addr().await],
        )
        .cluster(
            named_cluster(
                "tcpecho",
                "redis.test.svc.cluster.local",
                UpstreamProtocol::Tcp,
            ),
            &[tcp_upstream],
        )
        .build();
    // The echo endpoint is a labelled workload: the destination side shows its app/version.
    let mut eps = (*cfg.endpoints[ECHO_CLUSTER]).clone();
    eps.endpoints[0].labels = BTreeMap::from([
        ("app".to_string(), "echo".to_string()),
        ("version".to_string(), "v2".to_string()),
    ]);
    cfg.endpoints.insert(ECHO_CLUSTER.into(), Arc::new(eps));
    cfg.node.id = "ingress-gw.test".into();
    cfg.node.labels = BTreeMap::from([
        ("app".to_string(), "ingress".to_string()),
        ("version".to_string(), "v1".to_string()),
    ]);
    if inbound {
        cfg.node.kind = ProxyKind::Sidecar;
    }
    let http_name = if inbound {
        trellis_model::security::VIRTUAL_INBOUND
    } else {
        "0.0.0.0_80"
    };
    cfg.listeners = vec![
        Listener {
            name: http_name.into(),
            address: "0.0.0.0:80".parse().unwrap(),
            direction: TrafficDirection::Gateway,
            filter_chains: vec![FilterChain {
                name: "http".into(),
                filter_match: ChainMatch::default(),
                tls: None,
                handler: ChainHandler::Http(HttpManager {
                    route_table: "http".into(),
                    codec: HttpCodec::Auto,
                    scheme: Scheme::Http,
                }),
            }],
        },
        Listener {
            name: "0.0.0.0_6379".into(),
            address: "0.0.0.0:6379".parse().unwrap(),
            direction: TrafficDirection::Gateway,
            filter_chains: vec![FilterChain {
                name: "tcp".into(),
                filter_match: ChainMatch::default(),
                tls: None,
                handler: ChainHandler::Tcp(TcpProxy {
                    routes: vec![TcpRoute {
                        origin: "VirtualService test/redis tcp[0]".into(),
                        destination_subnets: vec![],
                        port: None,
                        clusters: WeightedClusters {
                            clusters: vec![dest("tcpecho", 100)],
                            total_weight: 100,
                        },
                    }],
                }),
            }],
        },
    ];
    cfg
}

struct Running {
    proxy: RunningProxy,
    http: SocketAddr,
    tcp: SocketAddr,
    admin: SocketAddr,
    status: SocketAddr,
}

async fn start(inbound: bool) -> Running {
    init_tracing();
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let echo = Upstream::echo("echo").await;
    let cfg = config(echo.addr, tcp_echo().await, inbound).await;
    let local: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let opts = RuntimeOptions {
        listen_remap: [(80, local), (6379, local)].into_iter().collect(),
        admin: Some(local),
        status: Some(local),
        ..RuntimeOptions::default()
    };
    let proxy = ProxyRuntime::start(cfg, opts).expect("proxy starts");
    let http_name = if inbound {
        trellis_model::security::VIRTUAL_INBOUND
    } else {
        "0.0.0.0_80"
    };
    Running {
        http: proxy.listener_addr(http_name).unwrap(),
        tcp: proxy.listener_addr("0.0.0.0_6379").unwrap(),
        admin: proxy.admin_addr().unwrap(),
        status: proxy.status_addr().unwrap(),
        proxy,
    }
}

/// 3 × 200 (100-byte bodies), 1 × 404 NR, 1 × 503 UH, 1 × 503 UF, one TCP round trip.
async fn traffic(p: &Running) {
    let body = "x".repeat(100);
    let mut c = H1Client::connect(p.http).await;
    for _ in 0..3 {
        let r = c.send(req("POST", "echo", "/", &[], &body)).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    assert_eq!(c.get("nowhere.example", "/", &[]).await.status, 404);
    assert_eq!(c.get("echo", "/empty", &[]).await.status, 503);
    assert_eq!(c.get("echo", "/closed", &[]).await.status, 503);
    drop(c);

    let mut s = TcpStream::connect(p.tcp).await.unwrap();
    s.write_all(b"hello").await.unwrap();
    s.shutdown().await.unwrap();
    let mut back = Vec::new();
    s.read_to_end(&mut back).await.unwrap();
    assert_eq!(back, b"hello");
}

/// One sample of the text exposition.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn parse(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').expect("sample has a value");
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.strip_suffix('}').expect("closing brace")),
            None => (series, ""),
        };
        let mut map = BTreeMap::new();
        let mut rest = labels;
        while !rest.is_empty() {
            let (k, v) = rest.split_once("=\"").expect("label=\"value\"");
            let end = v
                .find('"')
                .expect("closing quote (test values have no escapes)");
            map.insert(k.to_string(), v[..end].to_string());
            rest = v[end + 1..].strip_prefix(',').unwrap_or(&v[end + 1..]);
        }
        out.push(Sample {
            name: name.to_string(),
            labels: map,
            value: value.parse().expect("numeric value"),
        });
    }
    out
}

/// The value of the one sample named `name` whose labels include `want`.
fn value(samples: &[Sample], name: &str, want: &[(&str, &str)]) -> Option<f64> {
    let hits: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            want.iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect();
    assert!(
        hits.len() <= 1,
        "{name} {want:?} matches several series: {hits:#?}"
    );
    hits.first().map(|s| s.value)
}

async fn scrape(addr: SocketAddr) -> String {
    let r = get(addr, "test", "/stats/prometheus", &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    r.body
}

/// Scrapes until `ready` holds (request metrics are recorded when the response body ends,
/// TCP ones when the connection closes: both just after the client saw the end).
async fn scrape_until(
    addr: SocketAddr,
    ready: impl Fn(&[Sample]) -> bool,
) -> (String, Vec<Sample>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = scrape(addr).await;
        let samples = parse(&text);
        if ready(&samples) {
            return (text, samples);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "metrics never settled:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn tcp_closed(s: &[Sample]) -> bool {
    value(
        s,
        "istio_tcp_connections_closed_total",
        &[("response_flags", "-")],
    ) == Some(1.0)
}

#[tokio::test]
async fn gateway_reports_istio_metrics_on_admin_and_status_ports() {
    let p = start(false).await;
    traffic(&p).await;
    let (text, s) = scrape_until(p.admin, |s| {
        tcp_closed(s) && value(s, "istio_requests_total", &[("response_code", "200")]) == Some(3.0)
    })
    .await;

    let ok = [
        ("reporter", "source"),
        ("source_workload", "ingress-gw"),
        ("source_workload_namespace", "test"),
        ("source_principal", "unknown"),
        ("source_app", "ingress"),
        ("source_version", "v1"),
        ("source_canonical_service", "ingress"),
        ("source_canonical_revision", "v1"),
        ("source_cluster", "Kubernetes"),
        ("destination_workload", "unknown"),
        ("destination_principal", "unknown"),
        ("destination_app", "echo"),
        ("destination_version", "v2"),
        ("destination_service", ECHO_SVC),
        ("destination_service_name", "echo"),
        ("destination_service_namespace", "test"),
        ("request_protocol", "http"),
        ("response_code", "200"),
        ("grpc_response_status", ""),
        ("response_flags", "-"),
        ("connection_security_policy", "unknown"),
    ];
    assert_eq!(value(&s, "istio_requests_total", &ok), Some(3.0), "{text}");
    let series = s.iter().find(|x| x.name == "istio_requests_total").unwrap();
    assert_eq!(series.labels.len(), 25, "{:?}", series.labels);

    // No route: NR, nothing known about the destination.
    let nr = [
        ("response_code", "404"),
        ("response_flags", "NR"),
        ("destination_service", "unknown"),
        ("destination_app", "unknown"),
    ];
    assert_eq!(value(&s, "istio_requests_total", &nr), Some(1.0), "{text}");
    // No endpoint (UH) and nothing listening (UF): the routed service is known.
    let uh = [
        ("response_code", "503"),
        ("response_flags", "UH"),
        ("destination_service", "empty.test.svc.cluster.local"),
        ("destination_service_name", "empty"),
    ];
    assert_eq!(value(&s, "istio_requests_total", &uh), Some(1.0), "{text}");
    let uf = [
        ("response_code", "503"),
        ("response_flags", "UF"),
        ("destination_service", "closed.test.svc.cluster.local"),
    ];
    assert_eq!(value(&s, "istio_requests_total", &uf), Some(1.0), "{text}");

    // Histograms: Istio's buckets; the three 100-byte bodies are in `le="100"`, not `le="10"`.
    let h = |name: &str, le: &str| {
        let mut want = ok.to_vec();
        want.push(("le", le));
        value(&s, name, &want)
    };
    assert_eq!(
        value(&s, "istio_request_duration_milliseconds_count", &ok),
        Some(3.0)
    );
    assert_eq!(
        h("istio_request_duration_milliseconds_bucket", "+Inf"),
        Some(3.0)
    );
    assert!(h("istio_request_duration_milliseconds_bucket", "0.5").is_some());
    assert!(h("istio_request_duration_milliseconds_bucket", "3600000").is_some());
    assert_eq!(h("istio_request_bytes_bucket", "10"), Some(0.0));
    assert_eq!(h("istio_request_bytes_bucket", "100"), Some(3.0));
    assert_eq!(value(&s, "istio_request_bytes_sum", &ok), Some(300.0));
    assert_eq!(h("istio_response_bytes_bucket", "1"), Some(0.0));
    assert_eq!(h("istio_response_bytes_bucket", "1000000000"), Some(3.0));
    assert!(value(&s, "istio_response_bytes_sum", &ok).unwrap() > 300.0);
    assert!(
        s.iter()
            .filter(|x| x.name == "istio_request_duration_milliseconds_bucket")
            .filter(|x| x.labels.get("response_code").map(String::as_str) == Some("200"))
            .count()
            == 20,
        "19 bounds + Inf"
    );

    // TCP: one connection, 5 bytes each way.
    let tcp = [
        ("reporter", "source"),
        ("request_protocol", "tcp"),
        ("destination_service", "redis.test.svc.cluster.local"),
        ("response_flags", "-"),
    ];
    for (name, want) in [
        ("istio_tcp_connections_opened_total", 1.0),
        ("istio_tcp_connections_closed_total", 1.0),
        ("istio_tcp_received_bytes_total", 5.0),
        ("istio_tcp_sent_bytes_total", 5.0),
    ] {
        assert_eq!(value(&s, name, &tcp), Some(want), "{name}\n{text}");
    }
    let tcp_series = s
        .iter()
        .find(|x| x.name == "istio_tcp_sent_bytes_total")
        .unwrap();
    assert!(!tcp_series.labels.contains_key("response_code"));

    // Proxy-level.
    assert_eq!(
        value(&s, "trellis_config_reloads_total", &[("result", "applied")]),
        Some(1.0)
    );
    assert!(value(&s, "trellis_downstream_connections_active", &[]).is_some());
    assert_eq!(
        value(
            &s,
            "envoy_cluster_upstream_rq_total",
            &[("cluster_name", ECHO_CLUSTER)]
        ),
        Some(3.0)
    );
    assert_eq!(
        value(
            &s,
            "envoy_cluster_upstream_cx_connect_fail_total",
            &[("cluster_name", "closed")]
        ),
        Some(1.0),
        "{text}"
    );
    assert!(text.contains("# TYPE istio_requests_total counter\n"));
    assert!(text.contains("# TYPE istio_request_duration_milliseconds histogram\n"));

    // The status port (what `prometheus.io/port` annotations point at) serves the same.
    let status = parse(&scrape(p.status).await);
    assert_eq!(value(&status, "istio_requests_total", &ok), Some(3.0));

    // promtool (from the prometheus package) parses it and finds nothing to say beyond
    // Istio's choice of unit.
    if have("promtool") {
        let mut child = tokio::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .await
            .unwrap();
        let out = child.wait_with_output().await.unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // The one piece of advice is about Istio's own metric name.
        for line in said.lines().filter(|l| !l.trim().is_empty()) {
            assert!(
                line.starts_with("istio_request_duration_milliseconds use base unit"),
                "promtool: {said}"
            );
        }
    }
    p.proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn sidecar_inbound_reports_as_destination() {
    let p = start(true).await;
    let mut c = H1Client::connect(p.http).await;
    assert_eq!(c.get("echo", "/", &[]).await.status, 200);
    let (text, s) = scrape_until(p.status, |s| {
        value(s, "istio_requests_total", &[("response_code", "200")]).is_some()
    })
    .await;
    let want = [
        ("reporter", "destination"),
        ("destination_workload", "ingress-gw"),
        ("destination_workload_namespace", "test"),
        ("destination_app", "ingress"),
        ("destination_principal", "unknown"),
        ("destination_service", ECHO_SVC),
        ("source_workload", "unknown"),
        ("source_principal", "unknown"),
        ("connection_security_policy", "none"),
    ];
    assert_eq!(
        value(&s, "istio_requests_total", &want),
        Some(1.0),
        "{text}"
    );
    // The TCP listener is not `virtualInbound`: outbound, reported as source.
    let mut t = TcpStream::connect(p.tcp).await.unwrap();
    t.write_all(b"ping").await.unwrap();
    t.shutdown().await.unwrap();
    let mut back = Vec::new();
    t.read_to_end(&mut back).await.unwrap();
    let (_, s) = scrape_until(p.admin, tcp_closed).await;
    assert_eq!(
        value(
            &s,
            "istio_tcp_received_bytes_total",
            &[("reporter", "source"), ("request_protocol", "tcp")]
        ),
        Some(4.0)
    );
    p.proxy.shutdown(Duration::from_secs(1)).await;
}

// ---------------------------------------------------------------------------------------
// A real Prometheus

/// `prometheus` on its own port and data directory, killed on drop.
struct Prometheus {
    child: tokio::process::Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
    log: std::path::PathBuf,
}

impl Prometheus {
    async fn start(target: SocketAddr) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 200ms\n  scrape_timeout: 200ms\n\
                 scrape_configs:\n  - job_name: trellis-proxy\n    metrics_path: /stats/prometheus\n\
                 \x20   static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let log = dir.path().join("prometheus.log");
        let child = tokio::process::Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .kill_on_drop(true)
            .spawn()
            .expect("start prometheus");
        Prometheus {
            child,
            addr,
            _dir: dir,
            log,
        }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    async fn get(&self, path: &str) -> Option<(u16, String)> {
        let s = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(self.addr))
            .await
            .ok()?
            .ok()?;
        drop(s);
        let r = tokio::time::timeout(
            Duration::from_secs(5),
            get(self.addr, "localhost", path, &[]),
        )
        .await
        .ok()?;
        Some((r.status, r.body))
    }

    async fn wait_ready(&mut self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Some((200, _)) = self.get("/-/ready").await {
                return;
            }
            if let Ok(Some(exit)) = self.child.try_wait() {
                panic!("prometheus exited ({exit}):\n{}", self.log_tail());
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "prometheus never became ready:\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Instant query: the result vector.
    async fn query(&self, promql: &str) -> Vec<serde_json::Value> {
        let q: String = promql
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' | b'.' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        let Some((200, body)) = self.get(&format!("/api/v1/query?query={q}")).await else {
            return Vec::new();
        };
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["status"], "success", "{body}");
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// Polls `promql` until some series satisfies `ok` (deadline, no fixed sleeps).
    async fn until(
        &self,
        promql: &str,
        ok: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let result = self.query(promql).await;
            if let Some(s) = result.iter().find(|s| ok(s)) {
                return s.clone();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{promql}: no matching series; last result {result:#?}\nprometheus log:\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn metric_value(series: &serde_json::Value) -> f64 {
    series["value"][1].as_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_real_prometheus_scrapes_the_status_port() {
    if !have("prometheus") {
        println!("skipped: prometheus not installed");
        return;
    }
    let p = start(false).await;
    let mut prom = Prometheus::start(p.status).await;
    prom.wait_ready().await;
    traffic(&p).await;

    let ok = prom
        .until("istio_requests_total", |s| {
            s["metric"]["response_code"] == "200" && metric_value(s) == 3.0
        })
        .await;
    let m = &ok["metric"];
    assert_eq!(m["job"], "trellis-proxy");
    for (k, v) in [
        ("reporter", "source"),
        ("source_workload", "ingress-gw"),
        ("source_workload_namespace", "test"),
        ("source_app", "ingress"),
        ("destination_service", ECHO_SVC),
        ("destination_service_name", "echo"),
        ("destination_app", "echo"),
        ("destination_version", "v2"),
        ("request_protocol", "http"),
        ("response_flags", "-"),
        ("connection_security_policy", "unknown"),
    ] {
        assert_eq!(m[k], v, "{k} in {m}");
    }
    prom.until("istio_requests_total", |s| {
        s["metric"]["response_flags"] == "NR" && s["metric"]["response_code"] == "404"
    })
    .await;
    prom.until("istio_requests_total", |s| {
        s["metric"]["response_flags"] == "UH" && s["metric"]["response_code"] == "503"
    })
    .await;
    // Histograms arrive as histograms: quantiles and bucket bounds work.
    prom.until(
        "sum by (le) (istio_request_bytes_bucket{response_code=\"200\"})",
        |s| s["metric"]["le"] == "100" && metric_value(s) == 3.0,
    )
    .await;
    let q = prom
        .until(
            "histogram_quantile(0.5, sum by (le) (istio_request_duration_milliseconds_bucket{response_code=\"200\"}))",
            |s| metric_value(s).is_finite(),
        )
        .await;
    assert!(metric_value(&q) >= 0.0, "{q}");
    prom.until("istio_tcp_sent_bytes_total", |s| {
        s["metric"]["request_protocol"] == "tcp" && metric_value(s) == 5.0
    })
    .await;
    prom.until("istio_tcp_connections_closed_total", |s| {
        s["metric"]["destination_service"] == "redis.test.svc.cluster.local"
            && metric_value(s) == 1.0
    })
    .await;

    let _ = prom.child.kill().await;
    p.proxy.shutdown(Duration::from_secs(1)).await;
}
