//! Compile tests over the project's manifests (Alphintra base, the written Istio samples) and
//! small inline resource sets.

use std::path::Path;
use std::time::Duration;

use http::HeaderMap;
use trellis_api::load::{LoadOptions, ResourceSet};
use trellis_api::{MeshConfig, Resource};
use trellis_model::compile::{compile, find_target, CompileError};
use trellis_model::config::*;
use trellis_model::route::{route_request, RequestInfo};

const ALPHINTRA: &str = "examples/alphintra/infra/kubernetes/istio/base";
const WRITTEN: &str = "tests/manifests/written";

fn repo(rel: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(rel)
}

/// Every YAML file of a directory (a kustomize base's plain files load directly).
fn load_dir(rel: &str, extra: &str) -> Vec<Resource> {
    let mut set = ResourceSet::default();
    let opts = LoadOptions::default();
    let mut files: Vec<_> = std::fs::read_dir(repo(rel))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "yaml")
                && p.file_name().is_some_and(|n| n != "kustomization.yaml")
        })
        .collect();
    files.sort();
    for f in files {
        set.add_path(&f, &opts);
    }
    if !extra.is_empty() {
        set.add_text("extra.yaml", extra, &opts);
    }
    let errors: Vec<_> = set.diagnostics.iter().filter(|d| d.is_error()).collect();
    assert!(errors.is_empty(), "{errors:?}");
    set.resources
}

fn load(yaml: &str) -> Vec<Resource> {
    let mut set = ResourceSet::default();
    set.add_text("test.yaml", yaml, &LoadOptions::default());
    let errors: Vec<_> = set.diagnostics.iter().filter(|d| d.is_error()).collect();
    assert!(errors.is_empty(), "{errors:?}");
    set.resources
}

/// Loads without asserting on diagnostics (for inputs validation rejects).
fn load_unchecked(yaml: &str) -> Vec<Resource> {
    let mut set = ResourceSet::default();
    set.add_text("test.yaml", yaml, &LoadOptions::default());
    set.resources
}

fn compile_with(res: &[Resource], mesh: &MeshConfig, workload: &str) -> ProxyConfig {
    let (ns, name) = workload.split_once('/').unwrap();
    let target = find_target(res, ns, name).unwrap();
    compile(res, mesh, &target, "test").unwrap()
}

fn compile_for(res: &[Resource], workload: &str) -> ProxyConfig {
    compile_with(res, &MeshConfig::default(), workload)
}

fn listener<'c>(c: &'c ProxyConfig, name: &str) -> &'c Listener {
    c.listeners
        .iter()
        .find(|l| l.name == name)
        .unwrap_or_else(|| {
            panic!(
                "no listener {name}: {:?}",
                c.listeners.iter().map(|l| &l.name).collect::<Vec<_>>()
            )
        })
}

fn listener_names(c: &ProxyConfig) -> Vec<&str> {
    c.listeners.iter().map(|l| l.name.as_str()).collect()
}

fn vhost<'c>(c: &'c ProxyConfig, table: &str, domain: &str) -> &'c VirtualHost {
    let t = c
        .routes
        .get(table)
        .unwrap_or_else(|| panic!("no route table {table}: {:?}", c.routes.keys()));
    t.virtual_hosts
        .iter()
        .find(|v| v.domains.iter().any(|d| d == domain))
        .unwrap_or_else(|| panic!("no virtual host for {domain} in {table}"))
}

fn cluster<'c>(c: &'c ProxyConfig, name: &str) -> &'c Cluster {
    c.clusters
        .get(name)
        .unwrap_or_else(|| panic!("no cluster {name}: {:?}", c.clusters.keys()))
}

fn endpoints(c: &ProxyConfig, name: &str) -> Vec<String> {
    c.endpoints[name]
        .endpoints
        .iter()
        .map(|e| match &e.address {
            EndpointAddress::Socket(s) => s.to_string(),
            EndpointAddress::Dns { host, port } => format!("{host}:{port}"),
        })
        .collect()
}

fn forward(r: &Route) -> Vec<(String, u32)> {
    match &r.action {
        RouteAction::Forward(f) => f
            .clusters
            .clusters
            .iter()
            .map(|c| (c.cluster.clone(), c.weight))
            .collect(),
        other => panic!("not a forward: {other:?}"),
    }
}

/// Routes a request through a route table: `vhost name / rule`.
fn pick(
    c: &ProxyConfig,
    table: &str,
    authority: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Option<(String, String)> {
    let mut h = HeaderMap::new();
    for (k, v) in headers {
        h.append(
            http::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    let req = RequestInfo {
        authority,
        path,
        method: "GET",
        scheme: "http",
        headers: &h,
        port: 80,
        source_labels: None,
        source_namespace: None,
    };
    route_request(&c.routes[table], &req).map(|(vh, r, _)| (vh.name.clone(), r.origin.rule.clone()))
}

fn route_by_rule<'c>(vh: &'c VirtualHost, rule: &str) -> &'c Route {
    vh.routes
        .iter()
        .find(|r| r.origin.rule == rule)
        .unwrap_or_else(|| panic!("no rule {rule} in {}", vh.name))
}

const SG: &str = "service-gateway.alphintra.svc.cluster.local";
const STABLE: &str = "outbound|8080|stable|service-gateway.alphintra.svc.cluster.local";
const CANARY: &str = "outbound|8080|canary|service-gateway.alphintra.svc.cluster.local";
const AUTH: &str = "outbound|8080||auth-service.alphintra.svc.cluster.local";

// ---------------------------------------------------------------------------------------------
// Alphintra
// ---------------------------------------------------------------------------------------------

#[test]
fn alphintra_ingress_gateway() {
    let res = load_dir(ALPHINTRA, "");
    let target = find_target(&res, "istio-system", "istio-ingressgateway").unwrap();
    assert_eq!(target.kind, ProxyKind::Gateway);
    assert_eq!(
        target.service_account,
        "istio-ingressgateway-service-account"
    );
    let c = compile(&res, &MeshConfig::default(), &target, "v7").unwrap();
    assert_eq!(c.version, "v7");
    assert_eq!(c.node.id, "istio-ingressgateway.istio-system");
    assert_eq!(listener_names(&c), vec!["0.0.0.0_80", "0.0.0.0_443"]);

    // 80: plaintext HTTP.
    let l80 = listener(&c, "0.0.0.0_80");
    assert_eq!(l80.direction, TrafficDirection::Gateway);
    assert_eq!(l80.address, "0.0.0.0:80".parse().unwrap());
    assert!(
        matches!(&l80.filter_chains[0].handler, ChainHandler::Http(h) if h.route_table == "http.80")
    );
    assert!(l80.filter_chains[0].tls.is_none());

    // 443: TLS termination with the credential; the base has no Secret, so the chain
    // exists, the secret entry is absent and a warning says so.
    let l443 = listener(&c, "0.0.0.0_443");
    assert_eq!(l443.filter_chains.len(), 1);
    let chain = &l443.filter_chains[0];
    assert_eq!(chain.filter_match.server_names, vec!["alphintra.local"]);
    let tls = chain.tls.as_ref().unwrap();
    assert_eq!(
        tls.certificate,
        "kubernetes://istio-system/alphintra-gateway-tls"
    );
    assert_eq!(tls.alpn, vec!["h2", "http/1.1"]);
    assert!(!tls.require_client_cert);
    let ChainHandler::Http(h) = &chain.handler else {
        panic!()
    };
    assert_eq!(
        h.route_table,
        "https.443.https.alphintra-gateway.istio-system"
    );
    assert_eq!(h.scheme, Scheme::Https);
    assert!(!c.secrets.contains_key(&tls.certificate));
    assert!(
        c.warnings
            .iter()
            .any(|w| w.contains("alphintra-gateway-tls")),
        "{:?}",
        c.warnings
    );

    // Virtual hosts for the gateway host, on both ports.
    for table in ["http.80", "https.443.https.alphintra-gateway.istio-system"] {
        let vh = vhost(&c, table, "alphintra.local");
        assert!(!vh.require_tls);
        assert_eq!(vh.routes.len(), 2);
        let auth = route_by_rule(vh, "auth");
        assert_eq!(auth.origin.virtual_service, "alphintra/service-gateway");
        assert_eq!(forward(auth), vec![(AUTH.to_string(), 100)]);
        assert_eq!(auth.matches.len(), 3);
        assert!(
            matches!(&auth.matches[0].uri, Some(StringMatcher::Prefix(p)) if p == "/api/auth/")
        );
        assert_eq!(auth.timeout, Some(Duration::from_secs(10)));
        let retry = auth.retry.as_ref().unwrap();
        assert_eq!(retry.attempts, 2);
        assert_eq!(retry.per_try_timeout, Some(Duration::from_secs(5)));
        assert_eq!(
            retry.retry_on,
            vec!["connect-failure", "refused-stream", "unavailable"]
        );

        let canary = route_by_rule(vh, "service-gateway");
        assert!(canary.matches.is_empty());
        assert_eq!(
            forward(canary),
            vec![(STABLE.to_string(), 80), (CANARY.to_string(), 20)]
        );
        assert_eq!(canary.timeout, Some(Duration::from_secs(30)));
        assert_eq!(canary.retry.as_ref().unwrap().attempts, 3);
    }

    // Request routing on the compiled table.
    let got = |path: &str| pick(&c, "http.80", "alphintra.local", path, &[]).map(|(_, r)| r);
    assert_eq!(got("/api/auth/login").as_deref(), Some("auth"));
    assert_eq!(got("/.well-known/jwks.json").as_deref(), Some("auth"));
    assert_eq!(got("/api/trades").as_deref(), Some("service-gateway"));
    assert_eq!(
        pick(&c, "http.80", "other.example", "/", &[]),
        None,
        "no virtual host: 404"
    );

    // DestinationRule policies.
    for name in [STABLE, CANARY] {
        let cl = cluster(&c, name);
        assert_eq!(
            cl.destination_rule.as_deref(),
            Some("alphintra/service-gateway")
        );
        assert_eq!(cl.protocol, UpstreamProtocol::Http1);
        assert_eq!(cl.lb, LbPolicy::LeastRequest);
        assert_eq!(cl.connect_timeout, Duration::from_secs(5));
        assert_eq!(cl.pool.max_connections, 100);
        assert_eq!(cl.pool.http1_max_pending_requests, 100);
        assert_eq!(cl.pool.http2_max_requests, 1000);
        assert_eq!(cl.pool.max_requests_per_connection, 100);
        let o = cl.outlier.as_ref().unwrap();
        assert_eq!(o.consecutive_5xx, Some(5));
        assert_eq!(o.interval, Duration::from_secs(10));
        assert_eq!(o.base_ejection_time, Duration::from_secs(30));
        assert_eq!(o.max_ejection_percent, 50);
        let UpstreamTls::IstioMutual {
            expected_identities,
            sni,
        } = &cl.tls
        else {
            panic!("{:?}", cl.tls)
        };
        assert_eq!(
            expected_identities,
            &vec!["spiffe://cluster.local/ns/alphintra/sa/service-gateway".to_string()]
        );
        assert!(sni.as_deref().unwrap().starts_with("outbound_.8080_."));
        assert!(!cl.auto_mtls);
        // Deployment pods have no known address.
        assert!(endpoints(&c, name).is_empty());
    }
    let auth = cluster(&c, AUTH);
    assert_eq!(auth.connect_timeout, Duration::from_secs(3));
    assert_eq!(auth.pool.max_connections, 50);
    assert_eq!(auth.pool.idle_timeout, Some(Duration::from_secs(60)));
    assert_eq!(auth.outlier.as_ref().unwrap().consecutive_5xx, Some(3));
    assert!(matches!(auth.tls, UpstreamTls::IstioMutual { .. }));
    // Gateways only get the clusters their routes use.
    assert_eq!(c.clusters.len(), 3);
}

#[test]
fn alphintra_gateway_with_secret_and_workload_entries() {
    let extra = r#"
apiVersion: v1
kind: Secret
metadata: {name: alphintra-gateway-tls, namespace: istio-system}
type: kubernetes.io/tls
stringData: {tls.crt: "-----BEGIN CERTIFICATE-----\nx\n", tls.key: "-----BEGIN PRIVATE KEY-----\ny\n"}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: sg-canary-local, namespace: alphintra}
spec:
  address: 127.0.0.1
  labels: {app: service-gateway, version: canary}
  serviceAccount: service-gateway
  ports: {http: 18081}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: sg-stable-local, namespace: alphintra}
spec:
  address: 127.0.0.2
  labels: {app: service-gateway, version: stable}
  serviceAccount: service-gateway
  ports: {http: 18080}
"#;
    let res = load_dir(ALPHINTRA, extra);
    let c = compile_for(&res, "istio-system/istio-ingressgateway");
    let secret = &c.secrets["kubernetes://istio-system/alphintra-gateway-tls"];
    assert!(secret.cert_chain_pem.starts_with("-----BEGIN CERTIFICATE"));
    assert!(secret.private_key_pem.contains("PRIVATE KEY"));
    assert_eq!(secret.source, "Secret istio-system/alphintra-gateway-tls");
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    // Subset endpoints filtered by the version label.
    assert_eq!(endpoints(&c, STABLE), vec!["127.0.0.2:18080"]);
    assert_eq!(endpoints(&c, CANARY), vec!["127.0.0.1:18081"]);
    let ep = &c.endpoints[CANARY].endpoints[0];
    assert!(ep.mesh);
    assert_eq!(
        ep.identity.as_deref(),
        Some("spiffe://cluster.local/ns/alphintra/sa/service-gateway")
    );
    assert!(endpoints(&c, AUTH).is_empty());
}

#[test]
fn alphintra_sidecar_reaches_managed_services_over_tcp() {
    let res = load_dir(ALPHINTRA, "");
    let c = compile_for(&res, "alphintra/service-gateway-stable");
    assert_eq!(c.node.kind, ProxyKind::Sidecar);
    let names = listener_names(&c);
    for l in [
        "virtualOutbound",
        "virtualInbound",
        "0.0.0.0_8080",
        "10.10.0.3_6379",
        "10.10.0.5_5432",
    ] {
        assert!(names.contains(&l), "{l} missing from {names:?}");
    }
    let redis = listener(&c, "10.10.0.3_6379");
    let ChainHandler::Tcp(tcp) = &redis.filter_chains[0].handler else {
        panic!()
    };
    assert_eq!(
        tcp.routes[0].clusters.clusters[0].cluster,
        "outbound|6379||redis.alphintra.internal"
    );
    let rc = cluster(&c, "outbound|6379||redis.alphintra.internal");
    assert_eq!(rc.tls, UpstreamTls::None);
    assert_eq!(rc.protocol, UpstreamProtocol::Tcp);
    assert_eq!(rc.discovery, Discovery::Eds);
    assert_eq!(rc.pool.max_connections, 200);
    assert_eq!(rc.pool.tcp_keepalive, Some(Duration::from_secs(300)));
    assert_eq!(rc.connect_timeout, Duration::from_secs(2));
    assert_eq!(
        endpoints(&c, "outbound|6379||redis.alphintra.internal"),
        vec!["10.10.0.3:6379"]
    );
    assert_eq!(
        endpoints(&c, "outbound|5432||sql.alphintra.internal"),
        vec!["10.10.0.5:5432"]
    );
    // The gateway VirtualService is bound to the gateway only: the mesh route is the default.
    let vh = vhost(&c, "8080", "service-gateway");
    assert_eq!(vh.routes.len(), 1);
    assert_eq!(vh.routes[0].origin.rule, "default");
    assert_eq!(
        forward(&vh.routes[0]),
        vec![(format!("outbound|8080||{SG}"), 100)]
    );
    let retry = vh.routes[0].retry.as_ref().unwrap();
    assert_eq!(
        (retry.attempts, retry.retriable_status_codes.clone()),
        (2, vec![503])
    );
    assert_eq!(vh.routes[0].timeout, None);
    // Subset clusters exist for every DestinationRule subset.
    assert!(c.clusters.contains_key(STABLE) && c.clusters.contains_key(CANARY));
    // Inbound: the app's 8080.
    let inbound = listener(&c, "virtualInbound");
    assert_eq!(inbound.address.port(), 15006);
    assert_eq!(
        inbound.filter_chains[0].filter_match.destination_port,
        Some(8080)
    );
    assert_eq!(endpoints(&c, "inbound|8080||"), vec!["127.0.0.1:8080"]);
    assert_eq!(
        cluster(&c, "inbound|8080||").protocol,
        UpstreamProtocol::Http1
    );
}

// ---------------------------------------------------------------------------------------------
// The written Istio samples
// ---------------------------------------------------------------------------------------------

#[test]
fn bookinfo_productpage_sidecar() {
    let res = load_dir(WRITTEN, "");
    let c = compile_for(&res, "bookinfo/productpage-v1");
    assert_eq!(c.node.kind, ProxyKind::Sidecar);
    assert!(c.mesh.outbound_allow_any);
    let l = listener(&c, "0.0.0.0_9080");
    assert_eq!(l.direction, TrafficDirection::Outbound);
    let vh = vhost(&c, "9080", "reviews");
    for d in [
        "reviews:9080",
        "reviews.bookinfo",
        "reviews.bookinfo.svc",
        "reviews.bookinfo.svc.cluster.local:9080",
    ] {
        assert!(vh.domains.iter().any(|x| x == d), "{d} in {:?}", vh.domains);
    }
    let jason = route_by_rule(vh, "jason");
    assert!(
        matches!(&jason.matches[0].headers[..], [(n, StringMatcher::Exact(v))] if n == "end-user" && v == "jason")
    );
    assert_eq!(
        forward(jason),
        vec![(
            "outbound|9080|v2|reviews.bookinfo.svc.cluster.local".into(),
            100
        )]
    );
    assert_eq!(
        forward(route_by_rule(vh, "default")),
        vec![
            (
                "outbound|9080|v1|reviews.bookinfo.svc.cluster.local".into(),
                50
            ),
            (
                "outbound|9080|v3|reviews.bookinfo.svc.cluster.local".into(),
                50
            )
        ]
    );
    assert_eq!(
        pick(
            &c,
            "9080",
            "reviews:9080",
            "/reviews/1",
            &[("end-user", "jason")]
        )
        .unwrap()
        .1,
        "jason"
    );
    assert_eq!(
        pick(&c, "http_proxy", "reviews.bookinfo:9080", "/", &[])
            .unwrap()
            .1,
        "default"
    );
    // Per-subset policy: v3 round robin, others least request.
    assert_eq!(
        cluster(&c, "outbound|9080|v3|reviews.bookinfo.svc.cluster.local").lb,
        LbPolicy::RoundRobin
    );
    assert_eq!(
        cluster(&c, "outbound|9080|v1|reviews.bookinfo.svc.cluster.local").lb,
        LbPolicy::LeastRequest
    );

    // ratings: delay for jason, abort for tester.
    let ratings = vhost(&c, "9080", "ratings");
    let f0 = ratings.routes[0].fault.as_ref().unwrap();
    assert_eq!(f0.delay, Some((Duration::from_secs(7), 100.0)));
    let f1 = ratings.routes[1].fault.as_ref().unwrap();
    assert_eq!(f1.abort, Some((FaultAbort::Http(500), 50.0)));
    assert!(ratings.routes[2].fault.is_none());

    // details: timeout and explicit retries.
    let details = &vhost(&c, "9080", "details").routes[0];
    assert_eq!(details.timeout, Some(Duration::from_secs(10)));
    let r = details.retry.as_ref().unwrap();
    assert_eq!(r.attempts, 3);
    assert_eq!(r.per_try_timeout, Some(Duration::from_secs(2)));

    // The namespace Sidecar scopes egress to bookinfo and istio-system.
    assert!(c.clusters.keys().all(|k| !k.contains("httpbin")));
    assert!(!c.routes["http_proxy"]
        .virtual_hosts
        .iter()
        .any(|v| v.name.contains("httpbin")));
    assert!(c
        .clusters
        .contains_key("outbound|80||istio-ingressgateway.istio-system.svc.cluster.local"));

    // Inbound 9080 is HTTP (the Service port is named http).
    let inbound = listener(&c, "virtualInbound");
    assert!(
        matches!(&inbound.filter_chains[0].handler, ChainHandler::Http(h) if h.route_table == "inbound|9080")
    );
    let ivh = vhost(&c, "inbound|9080", "*");
    assert!(ivh.routes[0].retry.is_none());
    assert_eq!(
        forward(&ivh.routes[0]),
        vec![("inbound|9080||".into(), 100)]
    );
    // The mesh-wide PeerAuthentication is STRICT: only mTLS chains, passthrough included.
    assert_eq!(
        inbound.filter_chains.last().unwrap().name,
        "InboundPassthroughCluster|mtls"
    );
    assert_eq!(inbound.filter_chains[0].name, "inbound|9080|mtls");
    assert!(inbound
        .filter_chains
        .iter()
        .all(|c| c.filter_match.tls_only && c.tls.is_some()));
}

#[test]
fn written_ingress_gateway_with_two_gateways() {
    let res = load_dir(WRITTEN, "");
    let c = compile_for(&res, "istio-system/istio-ingressgateway");
    assert_eq!(listener_names(&c), vec!["0.0.0.0_80", "0.0.0.0_443"]);
    // Both Gateways' HTTP servers share port 80.
    let bookinfo = vhost(&c, "http.80", "bookinfo.example.com");
    assert_eq!(bookinfo.routes.len(), 1);
    assert_eq!(
        forward(&bookinfo.routes[0]),
        vec![(
            "outbound|9080|v1|productpage.bookinfo.svc.cluster.local".into(),
            100
        )]
    );
    let httpbin = vhost(&c, "http.80", "httpbin.example.com");
    assert_eq!(httpbin.routes[0].timeout, Some(Duration::from_secs(3)));
    // The HTTPS credential exists: registered.
    let chain = &listener(&c, "0.0.0.0_443").filter_chains[0];
    let cert = &chain.tls.as_ref().unwrap().certificate;
    assert_eq!(cert, "kubernetes://istio-system/bookinfo-credential");
    assert!(c.secrets[cert].cert_chain_pem.contains("BEGIN CERTIFICATE"));
    assert!(c.secrets[cert]
        .private_key_pem
        .contains("BEGIN PRIVATE KEY"));
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

#[test]
fn httpbin_mirror_and_circuit_breaker() {
    let res = load_dir(WRITTEN, "");
    let c = compile_for(&res, "httpbin/httpbin-v1");
    let vh = vhost(&c, "8000", "httpbin");
    let r = &vh.routes[0];
    assert_eq!(
        r.mirrors,
        vec![Mirror {
            cluster: "outbound|8000|v2|httpbin.httpbin.svc.cluster.local".into(),
            percentage: 100.0
        }]
    );
    let cl = cluster(&c, "outbound|8000|v1|httpbin.httpbin.svc.cluster.local");
    assert_eq!(cl.pool.max_connections, 1);
    assert_eq!(cl.pool.http1_max_pending_requests, 1);
    assert_eq!(cl.pool.max_requests_per_connection, 1);
    let o = cl.outlier.as_ref().unwrap();
    assert_eq!(o.consecutive_5xx, Some(1));
    assert_eq!(o.base_ejection_time, Duration::from_secs(180));
    assert_eq!(o.max_ejection_percent, 100);
    // No DestinationRule TLS: auto mTLS to the injected httpbin pods.
    assert!(matches!(cl.tls, UpstreamTls::IstioMutual { .. }));
    assert!(cl.auto_mtls);
    // Two HTTP ports inbound: 8080 (target of http) and 9102.
    let inbound = listener(&c, "virtualInbound");
    let ports: Vec<_> = inbound
        .filter_chains
        .iter()
        .filter_map(|ch| Some((ch.filter_match.destination_port?, ch.name.as_str())))
        .collect();
    // httpbin's own PeerAuthentication: STRICT, except PERMISSIVE on 9102.
    assert_eq!(
        ports,
        vec![
            (8080, "inbound|8080|mtls"),
            (9102, "inbound|9102|mtls"),
            (9102, "inbound|9102|plaintext")
        ]
    );
    assert_eq!(
        c.security.inbound_ports[&8080].source,
        "workload PeerAuthentication httpbin/httpbin"
    );
}

#[test]
fn curl_registry_only_egress_and_tls_origination() {
    let res = load_dir(WRITTEN, "");
    let c = compile_for(&res, "curl/curl");
    assert!(!c.mesh.outbound_allow_any, "the Sidecar says REGISTRY_ONLY");
    let block = vhost(&c, "http_proxy", "*");
    assert_eq!(block.name, "block_all");
    assert!(matches!(
        block.routes[0].action,
        RouteAction::DirectResponse { status: 502, .. }
    ));
    // Egress hosts: httpbin.httpbin and productpage.bookinfo, not reviews.
    assert!(c
        .clusters
        .contains_key("outbound|8000||httpbin.httpbin.svc.cluster.local"));
    assert!(c
        .clusters
        .contains_key("outbound|9080||productpage.bookinfo.svc.cluster.local"));
    assert!(!c.clusters.keys().any(|k| k.contains("reviews")));
    // edition.cnn.com: DNS; port 80 originates TLS to 443 (portLevelSettings), 443 passes TLS.
    let http = cluster(&c, "outbound|80||edition.cnn.com");
    assert_eq!(http.discovery, Discovery::Dns);
    let UpstreamTls::Tls {
        sni,
        ca_certificates,
        ..
    } = &http.tls
    else {
        panic!("{:?}", http.tls)
    };
    assert_eq!(sni.as_deref(), Some("edition.cnn.com"));
    assert_eq!(
        ca_certificates.as_deref(),
        Some("/etc/ssl/certs/ca-certificates.crt")
    );
    assert_eq!(
        endpoints(&c, "outbound|80||edition.cnn.com"),
        vec!["edition.cnn.com:443"]
    );
    let https = cluster(&c, "outbound|443||edition.cnn.com");
    assert_eq!(https.tls, UpstreamTls::None);
    assert_eq!(https.protocol, UpstreamProtocol::Tcp);
    assert_eq!(
        vhost(&c, "80", "edition.cnn.com").routes[0].origin.rule,
        "default"
    );
}

#[test]
fn vm_workload_entry_service_and_proxy() {
    let res = load_dir(WRITTEN, "");
    // The VM is a workload too: its proxy is a sidecar.
    let target = find_target(&res, "vm", "inventory-vm-1").unwrap();
    assert_eq!(target.kind, ProxyKind::Sidecar);
    assert_eq!(target.ip, Some("10.128.0.17".parse().unwrap()));
    let c = compile(&res, &MeshConfig::default(), &target, "1").unwrap();
    let name = "outbound|80||inventory.vm.example.internal";
    assert_eq!(endpoints(&c, name), vec!["10.128.0.17:8080"]);
    assert_eq!(
        c.endpoints[name].endpoints[0].identity.as_deref(),
        Some("spiffe://cluster.local/ns/vm/sa/inventory")
    );
    assert!(matches!(
        cluster(&c, name).tls,
        UpstreamTls::IstioMutual { .. }
    ));
    let inbound = listener(&c, "virtualInbound");
    assert_eq!(
        inbound.filter_chains[0].filter_match.destination_port,
        Some(8080)
    );
    assert!(matches!(
        inbound.filter_chains[0].handler,
        ChainHandler::Http(_)
    ));
}

// ---------------------------------------------------------------------------------------------
// Inline resource sets
// ---------------------------------------------------------------------------------------------

const CLIENT: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: app, labels: {istio-injection: enabled}}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: app, labels: {app: client}}
spec: {serviceAccountName: client, containers: [{name: c, image: x}]}
status: {podIP: 10.0.0.1}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: app}
spec:
  clusterIP: 10.96.0.20
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}, {name: grpc-api, port: 9090}]
---
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: app, labels: {app: web, version: v1}}
spec: {serviceAccountName: web, containers: [{name: c, image: x}]}
status: {podIP: 10.0.1.1}
---
apiVersion: v1
kind: Pod
metadata: {name: web-2, namespace: app, labels: {app: web, version: v2}}
spec: {serviceAccountName: web, containers: [{name: c, image: x}]}
status: {podIP: 10.0.1.2}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web, namespace: app}
spec:
  host: web
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
"#;

fn with_client(extra: &str) -> Vec<Resource> {
    load(&format!("{CLIENT}\n---\n{extra}"))
}

#[test]
fn weights_and_route_features() {
    let res = with_client(
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: app}
spec:
  hosts: [web]
  http:
  - name: redirect
    match: [{uri: {exact: /old}}]
    redirect: {uri: /new, authority: new.example.com, derivePort: FROM_REQUEST_PORT}
  - name: direct
    match: [{uri: {prefix: /static}, method: {exact: GET}}]
    directResponse: {status: 200, body: {bytes: aGVsbG8=}}
  - name: rewrite
    match: [{uri: {regex: "/api/v[0-9]+/.*"}, withoutHeaders: {x-debug: {}}, queryParams: {q: {prefix: a}}}]
    rewrite: {uriRegexRewrite: {match: "^/api/v[0-9]+/(.*)$", rewrite: "/\\1"}, authority: internal}
    headers:
      request: {set: {X-Env: prod}, remove: [X-Drop]}
      response: {add: {X-Served-By: web}}
    route:
    - destination: {host: web, subset: v1}
      weight: 3
      headers: {request: {set: {x-subset: v1}}}
    - destination: {host: web, subset: v2}
      weight: 1
    corsPolicy:
      allowOrigins: [{exact: "https://a.example.com"}, {regex: "https://.*\\.b\\.com"}]
      allowMethods: [GET]
      maxAge: 24h
      unmatchedPreflights: IGNORE
    fault:
      abort: {grpcStatus: UNAVAILABLE, percentage: {value: 12.5}}
      delay: {fixedDelay: 1s, percent: 5}
  - name: lone
    match: [{uri: {prefix: /lone}}]
    route:
    - destination: {host: web, subset: v2}
      weight: 30
  - name: zero
    route:
    - destination: {host: web, subset: v1}
      weight: 100
    - destination: {host: web, subset: v2}
"#,
    );
    let c = compile_for(&res, "app/client");
    let vh = vhost(&c, "80", "web");
    let red = route_by_rule(vh, "redirect");
    assert_eq!(
        red.action_redirect(),
        &Redirect {
            uri: Some("/new".into()),
            prefix_rewrite: None,
            authority: Some("new.example.com".into()),
            scheme: None,
            port: None,
            derive_port_from_request: true,
            code: 301
        }
    );
    assert!(red.retry.is_none());
    assert!(matches!(
        &route_by_rule(vh, "direct").action,
        RouteAction::DirectResponse { status: 200, body: Some(b) } if b == "hello"
    ));
    let rw = route_by_rule(vh, "rewrite");
    assert_eq!(
        forward(rw),
        vec![
            ("outbound|80|v1|web.app.svc.cluster.local".into(), 3),
            ("outbound|80|v2|web.app.svc.cluster.local".into(), 1)
        ]
    );
    let RouteAction::Forward(f) = &rw.action else {
        panic!()
    };
    assert_eq!(f.clusters.total_weight, 4);
    assert_eq!(
        f.clusters.clusters[0].request_headers.set,
        vec![("x-subset".to_string(), "v1".to_string())]
    );
    let rewrite = f.rewrite.as_ref().unwrap();
    assert_eq!(rewrite.authority.as_deref(), Some("internal"));
    let (re, sub) = rewrite.uri_regex.as_ref().unwrap();
    assert_eq!(re.0.replace("/api/v2/x/y", sub.as_str()), "/x/y");
    assert_eq!(
        rw.request_headers.set,
        vec![("x-env".to_string(), "prod".to_string())]
    );
    assert_eq!(rw.request_headers.remove, vec!["x-drop".to_string()]);
    assert_eq!(
        rw.response_headers.add,
        vec![("x-served-by".to_string(), "web".to_string())]
    );
    let m = &rw.matches[0];
    assert!(
        matches!(&m.uri, Some(StringMatcher::Regex(r)) if r.is_match("/api/v1/a") && !r.is_match("/x/api/v1/a"))
    );
    assert!(matches!(&m.without_headers[..], [(n, StringMatcher::Present)] if n == "x-debug"));
    assert!(matches!(&m.query_params[..], [(n, StringMatcher::Prefix(p))] if n == "q" && p == "a"));
    let cors = rw.cors.as_ref().unwrap();
    assert_eq!(cors.allow_origins.len(), 2);
    assert_eq!(cors.max_age, Some(Duration::from_secs(86400)));
    assert!(!cors.unmatched_preflights_forward);
    let fault = rw.fault.as_ref().unwrap();
    assert_eq!(fault.abort, Some((FaultAbort::Grpc(14), 12.5)));
    assert_eq!(fault.delay, Some((Duration::from_secs(1), 5.0)));
    // A lone destination gets everything; an unset weight next to others counts as 0.
    assert_eq!(
        forward(route_by_rule(vh, "lone")),
        vec![("outbound|80|v2|web.app.svc.cluster.local".into(), 100)]
    );
    assert_eq!(
        forward(route_by_rule(vh, "zero")),
        vec![
            ("outbound|80|v1|web.app.svc.cluster.local".into(), 100),
            ("outbound|80|v2|web.app.svc.cluster.local".into(), 0)
        ]
    );
    // Subset endpoints.
    assert_eq!(
        endpoints(&c, "outbound|80|v1|web.app.svc.cluster.local"),
        vec!["10.0.1.1:8080"]
    );
    assert_eq!(
        endpoints(&c, "outbound|80||web.app.svc.cluster.local"),
        vec!["10.0.1.1:8080", "10.0.1.2:8080"]
    );
    // grpc-api port: HTTP/2 upstream, its own listener; the VIP is a domain.
    assert_eq!(
        cluster(&c, "outbound|9090||web.app.svc.cluster.local").protocol,
        UpstreamProtocol::Http2
    );
    assert!(vhost(&c, "9090", "10.96.0.20:9090")
        .name
        .starts_with("web.app"));
}

trait ActionExt {
    fn action_redirect(&self) -> &Redirect;
}
impl ActionExt for Route {
    fn action_redirect(&self) -> &Redirect {
        match &self.action {
            RouteAction::Redirect(r) => r,
            other => panic!("not a redirect: {other:?}"),
        }
    }
}

#[test]
fn retries_default_explicit_disabled_and_mesh_policy() {
    let vs = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: app}
spec:
  hosts: [web]
  http:
  - name: explicit
    match: [{headers: {x-r: {exact: explicit}}}]
    retries: {attempts: 4, retryOn: "5xx,409", perTryTimeout: 1s, retryIgnorePreviousHosts: false}
    route: [{destination: {host: web}}]
  - name: off
    match: [{headers: {x-r: {exact: off}}}]
    retries: {attempts: 0}
    route: [{destination: {host: web}}]
  - name: default
    route: [{destination: {host: web}}]
"#;
    let res = with_client(vs);
    let c = compile_for(&res, "app/client");
    let vh = vhost(&c, "80", "web");
    let e = route_by_rule(vh, "explicit").retry.clone().unwrap();
    assert_eq!(e.attempts, 4);
    assert_eq!(e.retry_on, vec!["5xx", "retriable-status-codes"]);
    assert_eq!(e.retriable_status_codes, vec![409]);
    assert_eq!(e.per_try_timeout, Some(Duration::from_secs(1)));
    assert!(!e.retry_other_host);
    assert_eq!(route_by_rule(vh, "off").retry, None);
    let d = route_by_rule(vh, "default").retry.clone().unwrap();
    assert_eq!(d.attempts, 2);
    assert_eq!(d.retriable_status_codes, vec![503]);

    // A mesh-wide policy replaces the default.
    let mut mesh = MeshConfig::default();
    mesh.default_http_retry_policy = Some(trellis_api::mesh::HttpRetry {
        attempts: 1,
        retry_on: Some("reset".into()),
        ..Default::default()
    });
    let c = compile_with(&res, &mesh, "app/client");
    let d = route_by_rule(vhost(&c, "80", "web"), "default")
        .retry
        .clone()
        .unwrap();
    assert_eq!(
        (d.attempts, d.retry_on.clone()),
        (1, vec!["reset".to_string()])
    );
}

#[test]
fn mirror_percentages() {
    let res = with_client(
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: app}
spec:
  hosts: [web]
  http:
  - name: legacy
    match: [{uri: {prefix: /a}}]
    route: [{destination: {host: web, subset: v1}}]
    mirror: {host: web, subset: v2}
    mirror_percent: 30
  - name: percentage
    match: [{uri: {prefix: /b}}]
    route: [{destination: {host: web, subset: v1}}]
    mirror: {host: web, subset: v2}
    mirrorPercentage: {value: 2.5}
  - name: default
    match: [{uri: {prefix: /c}}]
    route: [{destination: {host: web, subset: v1}}]
    mirror: {host: web, subset: v2}
  - name: several
    route: [{destination: {host: web, subset: v1}}]
    mirrors:
    - destination: {host: web, subset: v2}
    - destination: {host: other.example.com, port: {number: 8080}}
      percentage: {value: 10}
"#,
    );
    let c = compile_for(&res, "app/client");
    let vh = vhost(&c, "80", "web");
    let v2 = "outbound|80|v2|web.app.svc.cluster.local".to_string();
    let pct = |rule: &str| {
        route_by_rule(vh, rule)
            .mirrors
            .iter()
            .map(|m| (m.cluster.clone(), m.percentage))
            .collect::<Vec<_>>()
    };
    assert_eq!(pct("legacy"), vec![(v2.clone(), 30.0)]);
    assert_eq!(pct("percentage"), vec![(v2.clone(), 2.5)]);
    assert_eq!(pct("default"), vec![(v2.clone(), 100.0)]);
    assert_eq!(
        pct("several"),
        vec![
            (v2, 100.0),
            ("outbound|8080||other.example.com".to_string(), 10.0)
        ]
    );
    // An unknown mirror host still gets a cluster (no endpoints) and a warning.
    assert!(endpoints(&c, "outbound|8080||other.example.com").is_empty());
    assert!(c.warnings.iter().any(|w| w.contains("other.example.com")));
}

#[test]
fn delegate_virtual_services() {
    let res = with_client(
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: root, namespace: app}
spec:
  hosts: [web]
  http:
  - name: to-team
    match: [{uri: {prefix: /team}}]
    delegate: {name: team, namespace: team}
  - name: rest
    route: [{destination: {host: web, subset: v1}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: team, namespace: team}
spec:
  http:
  - name: v2
    match: [{uri: {prefix: /team/v2}}]
    route: [{destination: {host: web.app.svc.cluster.local, subset: v2}}]
  - name: outside
    match: [{uri: {prefix: /elsewhere}}]
    route: [{destination: {host: web.app.svc.cluster.local, subset: v2}}]
  - name: all
    route: [{destination: {host: web.app.svc.cluster.local, subset: v1}}]
"#,
    );
    let c = compile_for(&res, "app/client");
    let vh = vhost(&c, "80", "web");
    let rules: Vec<_> = vh
        .routes
        .iter()
        .map(|r| format!("{} {}", r.origin.virtual_service, r.origin.rule))
        .collect();
    assert_eq!(
        rules,
        vec!["team/team v2", "team/team all", "app/root rest"]
    );
    assert!(
        matches!(&vh.routes[0].matches[0].uri, Some(StringMatcher::Prefix(p)) if p == "/team/v2")
    );
    assert!(matches!(&vh.routes[1].matches[0].uri, Some(StringMatcher::Prefix(p)) if p == "/team"));
    assert!(
        c.warnings.iter().any(|w| w.contains("outside")),
        "{:?}",
        c.warnings
    );
    assert_eq!(pick(&c, "80", "web", "/team/v2/x", &[]).unwrap().1, "v2");
    assert_eq!(pick(&c, "80", "web", "/team/x", &[]).unwrap().1, "all");
    assert_eq!(pick(&c, "80", "web", "/elsewhere", &[]).unwrap().1, "rest");
}

#[test]
fn registry_only_from_mesh_config() {
    let res = with_client("");
    let mut mesh = MeshConfig::default();
    mesh.outbound_traffic_policy.mode = trellis_api::mesh::OutboundTrafficMode::RegistryOnly;
    let c = compile_with(&res, &mesh, "app/client");
    assert!(!c.mesh.outbound_allow_any);
    assert_eq!(vhost(&c, "80", "*").name, "block_all");
    assert_eq!(
        pick(&c, "http_proxy", "unknown.example.com", "/", &[])
            .unwrap()
            .1,
        "block_all"
    );
    let c = compile_for(&res, "app/client");
    assert_eq!(
        pick(&c, "http_proxy", "unknown.example.com", "/", &[])
            .unwrap()
            .1,
        "allow_any"
    );
    let pt = cluster(&c, "PassthroughCluster");
    assert_eq!(pt.discovery, Discovery::OriginalDst);
    assert!(c.clusters.contains_key("BlackHoleCluster"));
}

const OTHER_NS: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: public, namespace: other}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: private, namespace: other, annotations: {networking.istio.io/exportTo: "."}}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: to-app, namespace: other, annotations: {networking.istio.io/exportTo: "app,other"}}
spec: {ports: [{name: http, port: 81}]}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: public, namespace: other}
spec:
  hosts: [public]
  exportTo: ["."]
  http: [{name: hidden, route: [{destination: {host: public}}]}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: public, namespace: other}
spec:
  host: public
  exportTo: ["other"]
  trafficPolicy: {loadBalancer: {simple: RANDOM}}
"#;

#[test]
fn export_to() {
    let res = with_client(OTHER_NS);
    let c = compile_for(&res, "app/client");
    assert!(c
        .clusters
        .contains_key("outbound|80||public.other.svc.cluster.local"));
    assert!(c
        .clusters
        .contains_key("outbound|81||to-app.other.svc.cluster.local"));
    assert!(!c.clusters.keys().any(|k| k.contains("private.other")));
    // The VirtualService and the DestinationRule are not exported to app.
    let vh = vhost(&c, "80", "public.other");
    assert_eq!(vh.routes[0].origin.rule, "default");
    assert_eq!(
        cluster(&c, "outbound|80||public.other.svc.cluster.local").lb,
        LbPolicy::LeastRequest
    );
}

#[test]
fn sidecar_egress_scoping() {
    let res = with_client(&format!(
        "{OTHER_NS}\n---\n{}",
        r#"
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: app}
spec:
  egress: [{hosts: ["./*"]}]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: client, namespace: app}
spec:
  workloadSelector: {labels: {app: client}}
  egress: [{hosts: ["other/public.other.svc.cluster.local"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: other-client, namespace: app, labels: {app: other-client}}
spec: {containers: [{name: c, image: x}]}
"#
    ));
    // The selecting Sidecar wins over the namespace default.
    let c = compile_for(&res, "app/client");
    let services: Vec<_> = c
        .clusters
        .values()
        .filter(|c| c.name.starts_with("outbound|"))
        .map(|c| c.service.host.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(services, vec!["public.other.svc.cluster.local"]);
    // Another pod of the namespace gets the namespace default: only app's services.
    let c = compile_for(&res, "app/other-client");
    assert!(c
        .clusters
        .contains_key("outbound|80||web.app.svc.cluster.local"));
    assert!(!c.clusters.keys().any(|k| k.contains(".other.")));
}

#[test]
fn service_entry_resolutions() {
    let res = with_client(
        r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: static, namespace: app}
spec:
  hosts: [db.internal]
  addresses: [192.168.10.10]
  ports: [{number: 5432, name: tcp-pg, protocol: TCP, targetPort: 6432}]
  resolution: STATIC
  endpoints: [{address: 10.1.1.1}, {address: 10.1.1.2, ports: {tcp-pg: 7432}, weight: 3}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: dns, namespace: app}
spec:
  hosts: [api.example.com]
  ports: [{number: 443, name: tls, protocol: TLS}]
  resolution: DNS_ROUND_ROBIN
  endpoints: [{address: lb.example.com}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: none, namespace: app}
spec:
  hosts: ["*.googleapis.com"]
  ports: [{number: 443, name: https, protocol: HTTPS}]
  resolution: NONE
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: db, namespace: app}
spec:
  hosts: [db.internal]
  tcp:
  - match: [{destinationSubnets: [192.168.10.0/24], port: 5432}]
    route: [{destination: {host: db.internal}}]
"#,
    );
    let c = compile_for(&res, "app/client");
    let st = cluster(&c, "outbound|5432||db.internal");
    assert_eq!(st.discovery, Discovery::Eds);
    assert_eq!(st.tls, UpstreamTls::None, "MESH_EXTERNAL: no auto mTLS");
    assert_eq!(
        endpoints(&c, "outbound|5432||db.internal"),
        vec!["10.1.1.1:6432", "10.1.1.2:7432"]
    );
    assert_eq!(
        c.endpoints["outbound|5432||db.internal"].endpoints[1].weight,
        3
    );
    let l = listener(&c, "192.168.10.10_5432");
    let ChainHandler::Tcp(tcp) = &l.filter_chains[0].handler else {
        panic!()
    };
    assert_eq!(tcp.routes[0].origin, "VirtualService app/db tcp[0]");
    assert_eq!(
        tcp.routes[0].destination_subnets,
        vec!["192.168.10.0/24".parse::<ipnet::IpNet>().unwrap()]
    );

    let dns = cluster(&c, "outbound|443||api.example.com");
    assert_eq!(dns.discovery, Discovery::Dns);
    assert_eq!(
        endpoints(&c, "outbound|443||api.example.com"),
        vec!["lb.example.com:443"]
    );
    assert!(listener_names(&c).contains(&"0.0.0.0_443"));

    let none = cluster(&c, "outbound|443||*.googleapis.com");
    assert_eq!(none.discovery, Discovery::OriginalDst);
    assert!(endpoints(&c, "outbound|443||*.googleapis.com").is_empty());
    // Both TLS entries want 0.0.0.0_443: the first (by host) wins, with a warning.
    assert!(c.warnings.iter().any(|w| w.contains("0.0.0.0_443")));
}

#[test]
fn workload_entries_selected_by_a_service() {
    let res = load(
        r#"
apiVersion: v1
kind: Service
metadata: {name: api, namespace: local}
spec:
  selector: {app: api}
  ports: [{name: http, port: 8080, targetPort: 9000}, {name: tcp-admin, port: 7000, targetPort: admin}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: api-1, namespace: local}
spec:
  address: 127.0.0.1
  labels: {app: api}
  serviceAccount: api
  ports: {http: 18080, admin: 17000}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: api-2, namespace: local}
spec:
  address: 127.0.0.2
  labels: {app: api}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: caller, namespace: local}
spec: {address: 127.0.0.9, labels: {app: caller}, serviceAccount: caller}
"#,
    );
    let c = compile_for(&res, "local/caller");
    assert_eq!(c.node.ip, Some("127.0.0.9".parse().unwrap()));
    assert_eq!(
        endpoints(&c, "outbound|8080||api.local.svc.cluster.local"),
        vec!["127.0.0.1:18080", "127.0.0.2:9000"]
    );
    // A named targetPort resolves through the WorkloadEntry's ports; api-2 has none.
    assert_eq!(
        endpoints(&c, "outbound|7000||api.local.svc.cluster.local"),
        vec!["127.0.0.1:17000"]
    );
    let cl = cluster(&c, "outbound|8080||api.local.svc.cluster.local");
    assert_eq!(
        cl.tls,
        UpstreamTls::IstioMutual {
            expected_identities: vec![
                "spiffe://cluster.local/ns/local/sa/api".into(),
                "spiffe://cluster.local/ns/local/sa/default".into()
            ],
            sni: Some("outbound_.8080_._.api.local.svc.cluster.local".into())
        }
    );
    // The api workload's inbound side: 18080 (http) and 17000.
    let c = compile_for(&res, "local/api-1");
    let inbound = listener(&c, "virtualInbound");
    let chains: Vec<_> = inbound
        .filter_chains
        .iter()
        .filter(|ch| ch.filter_match.plaintext_only)
        .map(|ch| {
            (
                ch.filter_match.destination_port,
                matches!(ch.handler, ChainHandler::Http(_)),
            )
        })
        .collect();
    assert_eq!(
        chains,
        vec![(Some(17000), false), (Some(18080), true), (None, false)]
    );
}

const GATEWAY_BASE: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: gw, namespace: edge, labels: {istio: gw}}
spec: {containers: [{name: c, image: x}]}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: app}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: app}
spec:
  ports: [{name: tcp, port: 5432}]
---
apiVersion: v1
kind: Secret
metadata: {name: mtls-cred, namespace: edge}
stringData: {cert: C, key: K}
---
apiVersion: v1
kind: Secret
metadata: {name: mtls-cred-cacert, namespace: edge}
stringData: {cacert: CA}
"#;

#[test]
fn gateway_servers_and_binding() {
    let res = load(&format!(
        "{GATEWAY_BASE}\n---\n{}",
        r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: edge, creationTimestamp: "2024-01-01T00:00:00Z"}
spec:
  selector: {istio: gw}
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: ["./*.example.com", "app/shop.example.com"]
    tls: {httpsRedirect: true}
  - port: {number: 8443, name: https-mutual, protocol: HTTPS}
    hosts: ["*/mtls.example.com"]
    tls: {mode: MUTUAL, credentialName: mtls-cred, minProtocolVersion: TLSV1_3}
  - port: {number: 8443, name: https-files, protocol: HTTPS}
    hosts: ["*/*.example.com"]
    tls: {mode: SIMPLE, serverCertificate: /etc/certs/tls.crt, privateKey: /etc/certs/tls.key}
  - port: {number: 9443, name: pass, protocol: TLS}
    hosts: ["*/secure.example.com"]
    tls: {mode: PASSTHROUGH}
  - port: {number: 5432, name: tcp, protocol: TCP}
    hosts: ["*/*"]
  - port: {number: 8443, name: clash, protocol: TCP}
    hosts: ["*/*"]
  - port: {number: 8081, name: grpc, protocol: GRPC}
    hosts: ["*/*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shop-b, namespace: app, creationTimestamp: "2024-01-03T00:00:00Z"}
spec:
  hosts: [shop.example.com]
  gateways: [edge/gw]
  http: [{name: later, route: [{destination: {host: web}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shop-a, namespace: app, creationTimestamp: "2024-01-02T00:00:00Z"}
spec:
  hosts: [shop.example.com]
  gateways: [edge/gw, mesh]
  http:
  - name: earlier
    match: [{uri: {prefix: /a}, gateways: [edge/gw]}, {uri: {prefix: /mesh-only}, gateways: [mesh]}]
    route: [{destination: {host: web}}]
  - name: mesh-only
    match: [{gateways: [mesh]}]
    route: [{destination: {host: web}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: blocked, namespace: app}
spec:
  hosts: [other.example.com]
  gateways: [edge/gw]
  http: [{name: nope, route: [{destination: {host: web}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: everything, namespace: edge}
spec:
  hosts: ["*"]
  gateways: [gw]
  http: [{name: wild, route: [{destination: {host: web.app.svc.cluster.local}}]}]
  tls:
  - match: [{sniHosts: [secure.example.com], port: 9443}]
    route: [{destination: {host: web.app.svc.cluster.local, port: {number: 443}}}]
  tcp:
  - match: [{port: 5432}]
    route: [{destination: {host: db.app.svc.cluster.local}}]
"#
    ));
    let c = compile_for(&res, "edge/gw");
    assert_eq!(
        listener_names(&c),
        vec![
            "0.0.0.0_5432",
            "0.0.0.0_8080",
            "0.0.0.0_8081",
            "0.0.0.0_8443",
            "0.0.0.0_9443"
        ]
    );
    let grpc = &listener(&c, "0.0.0.0_8081").filter_chains[0];
    assert!(matches!(&grpc.handler, ChainHandler::Http(h) if h.codec == HttpCodec::Http2));
    assert_eq!(vhost(&c, "http.8081", "*").routes[0].origin.rule, "wild");
    assert!(c
        .warnings
        .iter()
        .any(|w| w.contains("servers[5]") && w.contains("conflicts")));

    // HTTP 8080 with httpsRedirect: every virtual host requires TLS.
    let shop = vhost(&c, "http.8080", "shop.example.com");
    assert!(shop.require_tls);
    assert_eq!(
        shop.routes
            .iter()
            .map(|r| r.origin.rule.as_str())
            .collect::<Vec<_>>(),
        vec!["earlier", "later"],
        "same-host VirtualServices merge oldest first; mesh-only matches drop"
    );
    assert_eq!(shop.routes[0].matches.len(), 1);
    // `./*.example.com` admits only the gateway's namespace: app/blocked is not bound there.
    let t = &c.routes["http.8080"];
    assert!(!t
        .virtual_hosts
        .iter()
        .any(|v| v.domains.iter().any(|d| d == "other.example.com")));
    // `*` in edge: the server host (more specific) becomes the domain.
    assert!(vhost(&c, "http.8080", "*.example.com").require_tls);

    // 8443: MUTUAL (exact SNI) before the wildcard SIMPLE server with file certificates.
    let l = listener(&c, "0.0.0.0_8443");
    assert_eq!(l.filter_chains.len(), 2);
    let mtls = &l.filter_chains[0];
    assert_eq!(mtls.filter_match.server_names, vec!["mtls.example.com"]);
    let dt = mtls.tls.as_ref().unwrap();
    assert!(dt.require_client_cert && dt.min_tls13);
    assert_eq!(dt.certificate, "kubernetes://edge/mtls-cred");
    assert_eq!(
        dt.client_ca.as_deref(),
        Some("kubernetes://edge/mtls-cred-cacert")
    );
    assert_eq!(c.secrets["kubernetes://edge/mtls-cred"].cert_chain_pem, "C");
    assert_eq!(
        c.secrets["kubernetes://edge/mtls-cred-cacert"]
            .ca_pem
            .as_deref(),
        Some("CA")
    );
    let files = &l.filter_chains[1];
    assert_eq!(files.filter_match.server_names, vec!["*.example.com"]);
    let cert = &files.tls.as_ref().unwrap().certificate;
    let secret = &c.secrets[cert];
    assert_eq!(
        secret.files,
        Some(SecretFiles {
            cert_chain: "/etc/certs/tls.crt".into(),
            private_key: "/etc/certs/tls.key".into(),
            ca: None
        })
    );
    let ChainHandler::Http(h) = &mtls.handler else {
        panic!()
    };
    assert_eq!(h.route_table, "https.8443.https-mutual.gw.edge");
    assert!(!vhost(&c, "https.8443.https-mutual.gw.edge", "mtls.example.com").require_tls);

    // 9443: passthrough by SNI.
    let p = &listener(&c, "0.0.0.0_9443").filter_chains[0];
    assert!(p.tls.is_none() && p.filter_match.tls_only);
    let ChainHandler::TlsPassthrough(sni) = &p.handler else {
        panic!()
    };
    assert_eq!(sni[0].server_names, vec!["secure.example.com"]);
    assert_eq!(
        sni[0].clusters.clusters[0].cluster,
        "outbound|443||web.app.svc.cluster.local"
    );

    // 5432: TCP.
    let ChainHandler::Tcp(tcp) = &listener(&c, "0.0.0.0_5432").filter_chains[0].handler else {
        panic!()
    };
    assert_eq!(
        tcp.routes[0].clusters.clusters[0].cluster,
        "outbound|5432||db.app.svc.cluster.local"
    );
}

#[test]
fn errors_and_tolerance() {
    let res = with_client("");
    assert_eq!(
        find_target(&res, "app", "missing"),
        Err(CompileError::WorkloadNotFound("app/missing".into()))
    );
    let bad = load_unchecked(&format!(
        "{CLIENT}\n---\n{}",
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bad, namespace: app}
spec:
  hosts: [web]
  http: [{match: [{uri: {regex: "("}}], route: [{destination: {host: web}}]}]
"#
    ));
    let target = find_target(&bad, "app", "client").unwrap();
    // The loader's validation already flags the regex; compile refuses it clearly too.
    let err = compile(&bad, &MeshConfig::default(), &target, "1").unwrap_err();
    assert!(
        matches!(&err, CompileError::Invalid(m) if m.contains("app/bad") && m.contains("regex")),
        "{err}"
    );
    // Unknown hosts, subsets and ports compile to clusters without endpoints.
    let odd = with_client(
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: odd, namespace: app}
spec:
  hosts: [web]
  http:
  - route:
    - {destination: {host: nowhere}, weight: 50}
    - {destination: {host: web, subset: v9, port: {number: 1234}}, weight: 50}
"#,
    );
    let c = compile_for(&odd, "app/client");
    assert!(endpoints(&c, "outbound|80||nowhere.app.svc.cluster.local").is_empty());
    assert!(endpoints(&c, "outbound|1234|v9|web.app.svc.cluster.local").is_empty());
    assert!(c.warnings.len() >= 3, "{:?}", c.warnings);
    // A gateway target with no Gateway left compiles to nothing, with a warning.
    let target = trellis_model::compile::ProxyTarget {
        kind: ProxyKind::Gateway,
        namespace: "app".into(),
        name: "client".into(),
        labels: Default::default(),
        service_account: "default".into(),
        ip: None,
        locality: None,
    };
    let c = compile(&res, &MeshConfig::default(), &target, "1").unwrap();
    assert!(c.listeners.is_empty() && !c.warnings.is_empty());
}

/// Every manifest the project ships compiles, for every workload, as a sidecar and as a
/// gateway, without panicking (alone, and all together).
#[test]
fn every_shipped_manifest_compiles_for_every_workload() {
    fn yaml_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        let mut entries: Vec<_> = rd.map(|e| e.unwrap().path()).collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                yaml_files(&p, out);
            } else if p.extension().is_some_and(|e| e == "yaml" || e == "yml")
                && p.file_name().is_some_and(|n| n != "kustomization.yaml")
            {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    yaml_files(&repo("tests/manifests"), &mut files);
    yaml_files(&repo("examples"), &mut files);
    assert!(files.len() > 20);
    let opts = LoadOptions::default();
    let mut all = ResourceSet::default();
    let mut sets = Vec::new();
    for f in &files {
        let mut one = ResourceSet::default();
        one.add_path(f, &opts);
        all.add_path(f, &opts);
        sets.push(one.resources);
    }
    sets.push(all.resources);
    let mut compiled = 0;
    for res in &sets {
        for w in trellis_model::registry::workloads(res) {
            let mut target = find_target(res, &w.namespace, &w.name).unwrap();
            for kind in [ProxyKind::Sidecar, ProxyKind::Gateway] {
                target.kind = kind;
                match compile(res, &MeshConfig::default(), &target, "x") {
                    Ok(c) => {
                        compiled += 1;
                        serde_json::to_string(&c).unwrap();
                    }
                    Err(CompileError::Invalid(_)) => {}
                    Err(e) => panic!("{e}"),
                }
            }
        }
    }
    assert!(compiled > 50, "{compiled}");
}

// ---------------------------------------------------------------------------------------------
// Security (ProxyConfig::security)
// ---------------------------------------------------------------------------------------------

#[test]
fn alphintra_gateway_security_policies() {
    use trellis_model::authz::{AuthzRequest, DecisionReason};
    let res = load_dir(ALPHINTRA, "");
    let c = compile_for(&res, "istio-system/istio-ingressgateway");
    let sec = &c.security;
    assert_eq!(
        sec.identity,
        "spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account"
    );
    // The gateway's RequestAuthentication and AuthorizationPolicy select it by its labels.
    assert_eq!(sec.jwt.rules.len(), 1);
    assert_eq!(sec.jwt.rules[0].issuer, "https://auth.alphintra.com");
    let h = HeaderMap::new();
    let anon = |path| {
        let d = sec
            .authz
            .evaluate(&AuthzRequest::http(&h, "GET", "api.alphintra.com", path));
        (d.allowed, d.to_string())
    };
    assert_eq!(
        anon("/health"),
        (
            true,
            "allowed by ALLOW policy istio-system/gateway-authz rule 0".into()
        )
    );
    assert_eq!(
        anon("/api/orders"),
        (
            false,
            "denied: no ALLOW policy matched (istio-system/gateway-authz)".into()
        )
    );
    let claims = serde_json::json!({"iss": "https://auth.alphintra.com", "sub": "u1"});
    let d = sec.authz.evaluate(&AuthzRequest {
        request_principal: Some("https://auth.alphintra.com/u1"),
        claims: Some(&claims),
        ..AuthzRequest::http(&h, "GET", "api.alphintra.com", "/api/orders")
    });
    assert!(matches!(d.reason, DecisionReason::Allowed(r) if r.rule == 1));
    // Gateways do not apply PeerAuthentication to their listeners.
    assert!(sec.inbound_ports.is_empty());
    // Trellis's default normalization.
    assert_eq!(
        sec.path_normalization.level,
        trellis_model::normalize::Normalization::DecodeAndMergeSlashes
    );
    // Serialized for /config_dump.
    let dump = serde_json::to_value(&c).unwrap();
    assert!(
        dump["security"]["authz"].is_object(),
        "{}",
        dump["security"]
    );
}

#[test]
fn alphintra_sidecar_is_strict_with_probes() {
    let res = load_dir(ALPHINTRA, "");
    let c = compile_for(&res, "alphintra/auth-service");
    let sec = &c.security;
    assert_eq!(
        sec.inbound_ports[&8080].mode,
        trellis_api::security::MtlsMode::Strict
    );
    assert_eq!(
        sec.inbound_ports[&8080].source,
        "mesh-wide PeerAuthentication istio-system/default"
    );
    let inbound = listener(&c, "virtualInbound");
    assert!(inbound
        .filter_chains
        .iter()
        .all(|ch| ch.filter_match.tls_only
            && ch
                .tls
                .as_ref()
                .is_some_and(trellis_model::security::is_mesh_tls)));
    let probe = &sec.probes["auth-service/readyz"];
    assert_eq!(
        (probe.port, probe.path.as_str()),
        (8080, "/actuator/health")
    );
    assert!(sec.probes.contains_key("auth-service/livez"));
    assert_eq!(
        sec.audiences,
        vec!["auth-service.alphintra.svc.cluster.local".to_string()]
    );
}

#[test]
fn ext_authz_provider_gets_a_cluster() {
    let yaml = r#"
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: app, labels: {app: web}}
spec: {containers: [{name: web, image: x, ports: [{containerPort: 8080}]}]}
---
apiVersion: v1
kind: Service
metadata: {name: authz, namespace: authz}
spec:
  selector: {app: authz}
  ports: [{name: http, port: 9000}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ext, namespace: app}
spec:
  action: CUSTOM
  provider: {name: my-authz}
  rules: [{to: [{operation: {paths: ["/admin*"]}}]}]
"#;
    let res = load(yaml);
    let mesh = MeshConfig {
        extension_providers: serde_json::from_value(serde_json::json!([{
            "name": "my-authz",
            "envoyExtAuthzHttp": {
                "service": "authz.authz.svc.cluster.local",
                "port": 9000,
                "pathPrefix": "/check",
                "headersToUpstreamOnAllow": ["X-User"],
                "includeRequestHeadersInCheck": ["Authorization", "cookie"]
            }
        }]))
        .unwrap(),
        ..MeshConfig::default()
    };
    let c = compile_with(&res, &mesh, "app/web");
    let p = &c.security.ext_authz["my-authz"];
    assert_eq!(p.cluster, "outbound|9000||authz.authz.svc.cluster.local");
    assert!(c.clusters.contains_key(&p.cluster));
    assert_eq!(p.path_prefix, "/check");
    assert_eq!(p.headers_to_upstream_on_allow, vec!["x-user".to_string()]);
    assert_eq!(
        p.include_request_headers,
        vec!["authorization".to_string(), "cookie".to_string()]
    );
    assert!(!p.fail_open);
    assert_eq!(p.status_on_error, 403);
}

/// Locality failover from manifests: the client's locality (its `istio-locality` label), the
/// endpoints' (WorkloadEntry `locality`), and a DestinationRule with outlier detection.
#[test]
fn locality_failover_priorities_from_manifests() {
    let yaml = "
apiVersion: v1
kind: Pod
metadata:
  name: client
  namespace: app
  labels: {app: client, istio-locality: us-west.zone1.a}
spec: {containers: [{name: c, image: c}]}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: quotes, namespace: app}
spec:
  hosts: [quotes.app.svc.cluster.local]
  location: MESH_INTERNAL
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  workloadSelector: {labels: {app: quotes}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: q-local, namespace: app}
spec: {address: 10.0.0.1, labels: {app: quotes}, locality: us-west/zone1/a}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: q-zone, namespace: app}
spec: {address: 10.0.0.2, labels: {app: quotes}, locality: us-west/zone2/a}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: q-remote, namespace: app}
spec: {address: 10.0.0.3, labels: {app: quotes}, locality: eu-west/zone1/a}
";
    let with_outlier = "
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: quotes, namespace: app}
spec:
  host: quotes.app.svc.cluster.local
  trafficPolicy:
    outlierDetection: {consecutive5xxErrors: 3, interval: 10s, baseEjectionTime: 30s}
";
    let priorities = |c: &ProxyConfig| -> Vec<(String, u32)> {
        let mut v: Vec<(String, u32)> = c.endpoints["outbound|80||quotes.app.svc.cluster.local"]
            .endpoints
            .iter()
            .map(|e| match &e.address {
                EndpointAddress::Socket(a) => (a.ip().to_string(), e.priority),
                EndpointAddress::Dns { host, .. } => (host.clone(), e.priority),
            })
            .collect();
        v.sort();
        v
    };
    let res = load(&format!("{yaml}{with_outlier}"));
    let c = compile_for(&res, "app/client");
    assert_eq!(c.node.locality.as_deref(), Some("us-west/zone1/a"));
    assert_eq!(
        priorities(&c),
        [
            ("10.0.0.1".to_string(), 0),
            ("10.0.0.2".to_string(), 1),
            ("10.0.0.3".to_string(), 2)
        ]
    );
    // Without outlier detection nothing would ever fail over: Istio sets no priorities.
    let c = compile_for(&load(yaml), "app/client");
    assert!(priorities(&c).iter().all(|(_, p)| *p == 0));
}

/// A Sidecar with `ingress` listeners replaces the derived inbound ports: the app listens on
/// 8080, the mesh reaches it on 9080 (HTTP) and on 9443 (TCP, to the workload's address).
#[test]
fn sidecar_ingress_listeners_replace_derived_inbound_ports() {
    let res = load(
        "
apiVersion: v1
kind: Pod
metadata: {name: quotes, namespace: app, labels: {app: quotes}}
spec:
  containers: [{name: q, image: q, ports: [{containerPort: 8080, name: http}]}]
status: {podIP: 10.1.2.3}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: quotes, namespace: app}
spec:
  workloadSelector: {labels: {app: quotes}}
  ingress:
  - port: {number: 9080, protocol: HTTP, name: http}
    defaultEndpoint: 127.0.0.1:8080
  - port: {number: 9443, protocol: TCP, name: tcp}
    defaultEndpoint: 0.0.0.0:8443
  - port: {number: 9999, protocol: TCP, name: sock}
    defaultEndpoint: unix:///var/run/app.sock
",
    );
    let c = compile_for(&res, "app/quotes");
    let inbound = listener(&c, "virtualInbound");
    let mut ports: Vec<Option<u16>> = inbound
        .filter_chains
        .iter()
        .map(|f| f.filter_match.destination_port)
        .collect();
    ports.dedup(); // PERMISSIVE: an mTLS and a plaintext chain per port
    assert_eq!(ports, [Some(9080), Some(9443), None], "no chain for 8080");
    assert!(matches!(
        &inbound.filter_chains[0].handler,
        ChainHandler::Http(h) if h.route_table == "inbound|9080"
    ));
    let tcp = inbound
        .filter_chains
        .iter()
        .find(|f| f.filter_match.destination_port == Some(9443))
        .unwrap();
    assert!(matches!(&tcp.handler, ChainHandler::Tcp(_)));
    assert_eq!(endpoints(&c, "inbound|9080||"), vec!["127.0.0.1:8080"]);
    assert_eq!(endpoints(&c, "inbound|9443||"), vec!["10.1.2.3:8443"]);
    assert!(
        c.warnings
            .iter()
            .any(|w| w.contains("unix:///var/run/app.sock")),
        "{:?}",
        c.warnings
    );
}

#[test]
fn sidecar_ingress_tls_replaces_mesh_mtls_and_connection_pools_limit_inbound_clusters() {
    let res = load(
        "
apiVersion: v1
kind: Pod
metadata: {name: quotes, namespace: app, labels: {app: quotes}}
spec:
  containers: [{name: q, image: q, ports: [{containerPort: 8080, name: http}]}]
status: {podIP: 10.1.2.3}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: quotes, namespace: app}
spec:
  workloadSelector: {labels: {app: quotes}}
  inboundConnectionPool:
    tcp: {maxConnections: 50, connectTimeout: 2s}
  ingress:
  - port: {number: 9443, protocol: HTTPS, name: https}
    defaultEndpoint: 127.0.0.1:8080
    tls:
      mode: MUTUAL
      serverCertificate: /etc/certs/server.pem
      privateKey: /etc/certs/key.pem
      caCertificates: /etc/certs/ca.pem
    connectionPool:
      http: {http1MaxPendingRequests: 7}
  - port: {number: 9080, protocol: HTTP, name: http}
    defaultEndpoint: 127.0.0.1:8080
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: strict, namespace: app}
spec: {mtls: {mode: STRICT}}
",
    );
    let c = compile_for(&res, "app/quotes");
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    let inbound = listener(&c, "virtualInbound");
    let on = |port| -> Vec<&FilterChain> {
        inbound
            .filter_chains
            .iter()
            .filter(|f| f.filter_match.destination_port == Some(port))
            .collect()
    };
    // 9443: the sidecar's own TLS, one chain, no mesh mTLS.
    let tls_chains = on(9443);
    assert_eq!(tls_chains.len(), 1);
    let tls = tls_chains[0].tls.as_ref().expect("TLS terminated");
    assert!(tls.require_client_cert);
    assert!(tls.certificate.contains("/etc/certs/server.pem"), "{tls:?}");
    assert_eq!(
        c.secrets[&tls.certificate]
            .files
            .as_ref()
            .unwrap()
            .private_key,
        "/etc/certs/key.pem"
    );
    assert!(tls
        .client_ca
        .as_ref()
        .unwrap()
        .contains("/etc/certs/ca.pem"));
    assert!(matches!(
        &tls_chains[0].handler,
        ChainHandler::Http(h) if h.scheme == Scheme::Https
    ));
    // 9080: STRICT mesh mTLS as usual.
    let mtls = on(9080);
    assert_eq!(mtls.len(), 1);
    assert!(mtls[0].filter_match.tls_only);
    // The listener's pool replaces inboundConnectionPool; other ports take the Sidecar's.
    let tls_cluster = &c.clusters["inbound|9443||"];
    assert_eq!(tls_cluster.pool.http1_max_pending_requests, 7);
    assert_eq!(
        tls_cluster.pool.max_connections,
        ConnectionPool::default().max_connections
    );
    let plain = &c.clusters["inbound|9080||"];
    assert_eq!(plain.pool.max_connections, 50);
    assert_eq!(plain.connect_timeout, Duration::from_secs(2));
}
