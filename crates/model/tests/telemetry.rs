//! Which tracing a proxy gets from Telemetry resources and the mesh config: Istio's levels
//! (root namespace, namespace, workload selector), field-by-field overrides, `match.mode`,
//! `defaultProviders`, the legacy `defaultConfig.tracing`, and the collector's address from
//! the registry.

use trellis_api::load::{LoadOptions, ResourceSet};
use trellis_api::{MeshConfig, Resource};
use trellis_model::compile::{compile, find_target};
use trellis_model::config::ProxyConfig;
use trellis_model::telemetry::{SpanTag, TraceProtocol};

const WORKLOADS: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: reviews-v1, namespace: shop, labels: {app: reviews, version: v1}}
spec: {serviceAccountName: reviews, containers: [{name: app, image: reviews}]}
status: {podIP: 10.0.0.5}
---
apiVersion: v1
kind: Pod
metadata: {name: ratings-v1, namespace: shop, labels: {app: ratings}}
spec: {serviceAccountName: ratings, containers: [{name: app, image: ratings}]}
status: {podIP: 10.0.0.6}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: zipkin, namespace: istio-system}
spec:
  hosts: [zipkin.istio-system.svc.cluster.local]
  location: MESH_INTERNAL
  ports: [{number: 9411, name: http, protocol: HTTP, targetPort: 19411}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.9}]
"#;

fn load(extra: &str) -> Vec<Resource> {
    let mut set = ResourceSet::default();
    set.add_text(
        "test.yaml",
        &format!("{WORKLOADS}---\n{extra}"),
        &LoadOptions::default(),
    );
    let errors: Vec<_> = set.diagnostics.iter().filter(|d| d.is_error()).collect();
    assert!(errors.is_empty(), "{errors:?}");
    set.resources
}

fn mesh(extra: serde_json::Value) -> MeshConfig {
    let mut base = serde_json::json!({
        "extensionProviders": [
            {"name": "zipkin", "zipkin": {"service": "zipkin.istio-system.svc.cluster.local", "port": 9411}},
            {"name": "otel", "opentelemetry": {"service": "otel.observability.svc.cluster.local", "port": 4317}},
            {"name": "otel-http", "opentelemetry": {"service": "otel.observability.svc.cluster.local", "port": 4318, "http": {"path": "v1/traces"}}},
            {"name": "dd", "datadog": {"service": "datadog-agent.dd.svc.cluster.local", "port": 8126}}
        ]
    });
    for (k, v) in extra.as_object().unwrap() {
        base[k] = v.clone();
    }
    MeshConfig::from_yaml("mesh.yaml", &base.to_string()).unwrap()
}

fn compile_for(res: &[Resource], mesh: &MeshConfig, name: &str) -> ProxyConfig {
    let target = find_target(res, "shop", name).unwrap();
    compile(res, mesh, &target, "t").unwrap()
}

#[test]
fn no_telemetry_and_no_legacy_tracer_means_no_tracing() {
    let c = compile_for(&load(""), &mesh(serde_json::json!({})), "reviews-v1");
    assert!(c.tracing.is_empty(), "{:?}", c.tracing);
}

#[test]
fn mesh_level_telemetry_applies_and_resolves_the_collector_from_the_registry() {
    let res = load(
        r#"
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  tracing: [{providers: [{name: zipkin}], randomSamplingPercentage: 10}]
"#,
    );
    let c = compile_for(&res, &mesh(serde_json::json!({})), "reviews-v1");
    for t in [c.tracing.client.as_ref(), c.tracing.server.as_ref()] {
        let t = t.expect("both directions traced");
        assert_eq!(t.provider, "zipkin");
        assert_eq!(t.sampling, 10.0);
        assert!(t.report);
        assert_eq!(t.service_name, "reviews.shop");
        assert_eq!(
            t.exporter.protocol,
            TraceProtocol::Zipkin {
                trace_id_64bit: false
            }
        );
        assert_eq!(
            t.exporter.addresses,
            vec!["127.0.0.9:19411".parse().unwrap()]
        );
    }
}

#[test]
fn namespace_and_workload_levels_override_field_by_field() {
    let res = load(
        r#"
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  tracing:
  - providers: [{name: zipkin}]
    randomSamplingPercentage: 10
    customTags: {env: {literal: {value: prod}}}
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: shop, namespace: shop}
spec:
  tracing:
  - randomSamplingPercentage: 50
    customTags: {team: {literal: {value: shop}}}
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: reviews, namespace: shop}
spec:
  selector: {matchLabels: {app: reviews}}
  tracing:
  - match: {mode: SERVER}
    providers: [{name: otel}]
    disableSpanReporting: true
    customTags: {user: {header: {name: X-User}}}
"#,
    );
    let m = mesh(serde_json::json!({}));
    let c = compile_for(&res, &m, "reviews-v1");
    let client = c.tracing.client.as_ref().unwrap();
    assert_eq!(client.provider, "zipkin");
    assert_eq!(client.sampling, 50.0, "the namespace overrides the mesh");
    assert!(client.report);
    assert_eq!(
        client.custom_tags.keys().collect::<Vec<_>>(),
        ["env", "team"],
        "tags add up"
    );
    let server = c.tracing.server.as_ref().unwrap();
    assert_eq!(server.provider, "otel", "the workload's SERVER rule");
    assert_eq!(server.exporter.protocol, TraceProtocol::OtlpGrpc);
    assert!(server.exporter.addresses.is_empty(), "unknown host: DNS");
    assert!(!server.report);
    assert_eq!(
        server.custom_tags["user"],
        SpanTag::Header {
            name: "x-user".into(),
            default: None
        }
    );
    // The selector does not pick ratings: namespace level only.
    let c = compile_for(&res, &m, "ratings-v1");
    assert_eq!(c.tracing.server.as_ref().unwrap().provider, "zipkin");
    assert_eq!(c.tracing.server.as_ref().unwrap().sampling, 50.0);
}

#[test]
fn the_oldest_telemetry_of_a_level_wins() {
    let res = load(
        r#"
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: b-newer, namespace: shop, creationTimestamp: "2024-02-01T00:00:00Z"}
spec: {tracing: [{providers: [{name: otel}]}]}
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: z-older, namespace: shop, creationTimestamp: "2024-01-01T00:00:00Z"}
spec: {tracing: [{providers: [{name: zipkin}]}]}
"#,
    );
    let c = compile_for(&res, &mesh(serde_json::json!({})), "reviews-v1");
    assert_eq!(c.tracing.client.unwrap().provider, "zipkin");
}

#[test]
fn default_providers_and_legacy_tracer_are_fallbacks() {
    // A Telemetry without providers uses defaultProviders.tracing.
    let res = load(
        r#"
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec: {tracing: [{randomSamplingPercentage: 100}]}
"#,
    );
    let m = mesh(serde_json::json!({"defaultProviders": {"tracing": ["otel-http"]}}));
    let t = compile_for(&res, &m, "reviews-v1").tracing.client.unwrap();
    assert_eq!(t.provider, "otel-http");
    assert_eq!(
        t.exporter.protocol,
        TraceProtocol::OtlpHttp {
            path: "/v1/traces".into()
        }
    );
    assert_eq!(t.sampling, 100.0);

    // No Telemetry: the legacy zipkin address with its sampling and path tag length.
    let m = mesh(serde_json::json!({"defaultConfig": {"tracing": {
        "zipkin": {"address": "zipkin.istio-system.svc.cluster.local:9411"},
        "sampling": 25.0,
        "maxPathTagLength": 99
    }}}));
    let t = compile_for(&load(""), &m, "reviews-v1")
        .tracing
        .client
        .unwrap();
    assert_eq!(t.exporter.host, "zipkin.istio-system.svc.cluster.local");
    assert_eq!(
        t.exporter.addresses,
        vec!["127.0.0.9:19411".parse().unwrap()]
    );
    assert_eq!(t.sampling, 25.0);
    assert_eq!(t.max_tag_length, 99);

    // ... unless tracing is disabled mesh-wide.
    let m = mesh(
        serde_json::json!({"enableTracing": false, "defaultConfig": {"tracing": {
            "zipkin": {"address": "zipkin.istio-system.svc.cluster.local:9411"}
        }}}),
    );
    assert!(compile_for(&load(""), &m, "reviews-v1").tracing.is_empty());
}

#[test]
fn unknown_and_unsupported_providers_are_reported_not_fatal() {
    for (provider, expect) in [
        ("missing", "is not an extensionProvider"),
        ("dd", "datadog provider"),
    ] {
        let res = load(&format!(
            r#"
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {{name: mesh-default, namespace: istio-system}}
spec: {{tracing: [{{providers: [{{name: {provider}}}]}}]}}
"#
        ));
        let c = compile_for(&res, &mesh(serde_json::json!({})), "reviews-v1");
        assert!(c.tracing.is_empty());
        assert!(
            c.warnings.iter().any(|w| w.contains(expect)),
            "{provider}: {:?}",
            c.warnings
        );
    }
}
