//! Per-proxy scoping never changes what a proxy compiles: for every workload of several
//! manifest sets, compiling from the scoped resources gives the same config as compiling
//! from all of them. And scoping does narrow (credentials stay with gateways, other
//! namespaces' private config stays home).

use std::path::{Path, PathBuf};

use trellis_control::scope::Scope;
use trellis_control::source::{load, Sources};
use trellis_control::Snapshot;
use trellis_model::compile::{compile, find_target};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn check(sources: Sources) -> usize {
    let loaded = load(&sources);
    let snap = Snapshot::next(&Snapshot::empty(), loaded).unwrap();
    let all: Vec<trellis_api::Resource> =
        snap.entries.values().map(|e| e.resource.clone()).collect();
    let workloads = trellis_model::registry::workloads(&all);
    let mut checked = 0;
    for w in &workloads {
        let scope = Scope::compute(&snap, &w.namespace, &w.name);
        let scoped: Vec<trellis_api::Resource> = snap
            .entries
            .values()
            .filter(|e| scope.admits(e))
            .map(|e| e.resource.clone())
            .collect();
        let full = find_target(&all, &w.namespace, &w.name)
            .map_err(|e| e.to_string())
            .and_then(|t| compile(&all, &snap.mesh, &t, "1").map_err(|e| e.to_string()));
        let part = find_target(&scoped, &w.namespace, &w.name)
            .map_err(|e| e.to_string())
            .and_then(|t| compile(&scoped, &snap.mesh, &t, "1").map_err(|e| e.to_string()));
        match (full, part) {
            (Ok(a), Ok(b)) => {
                let a = serde_json::to_value(&a).unwrap();
                let b = serde_json::to_value(&b).unwrap();
                assert_eq!(
                    a, b,
                    "{}/{}: scoped compile differs (scope {scope:?})",
                    w.namespace, w.name
                );
            }
            (Err(a), Err(b)) => assert_eq!(a, b),
            (a, b) => panic!(
                "{}/{}: full {:?} vs scoped {:?}",
                w.namespace,
                w.name,
                a.map(|_| ()),
                b.map(|_| ())
            ),
        }
        assert!(scoped.len() <= all.len());
        checked += 1;
    }
    checked
}

#[test]
fn scoped_compile_equals_full_compile() {
    let r = root();
    let mut n = check(Sources {
        inputs: vec![r.join("tests/manifests/written")],
        default_namespace: "default".into(),
        ..Sources::default()
    });
    n += check(Sources {
        inputs: vec![r.join("tests/manifests/istio-samples")],
        default_namespace: "default".into(),
        ..Sources::default()
    });
    n += check(Sources {
        kustomize: vec![r.join("examples/alphintra/infra/kubernetes/istio/overlays/dev")],
        default_namespace: "default".into(),
        ..Sources::default()
    });
    for e in std::fs::read_dir(r.join("examples/broken")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "yaml") {
            n += check(Sources {
                inputs: vec![p],
                default_namespace: "default".into(),
                ..Sources::default()
            });
        }
    }
    assert!(n > 20, "only {n} workloads checked");
}

#[test]
fn secrets_reach_only_gateways_of_their_namespace() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("m.yaml"),
        r#"
apiVersion: v1
kind: Secret
metadata: {name: gw-cert, namespace: istio-system}
type: kubernetes.io/tls
stringData: {tls.crt: x, tls.key: y}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: gw, namespace: istio-system}
spec: {address: 127.0.0.1, labels: {istio: ingressgateway}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ["*"]
    tls: {mode: SIMPLE, credentialName: gw-cert}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: app, namespace: a}
spec: {address: 127.0.0.2, labels: {app: app}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: other, namespace: b}
spec: {address: 127.0.0.3, labels: {app: other}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: private, namespace: b}
spec: {host: other, exportTo: ["."]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny, namespace: b}
spec: {action: DENY, rules: [{}]}
"#,
    )
    .unwrap();
    let snap = Snapshot::next(
        &Snapshot::empty(),
        load(&Sources {
            inputs: vec![d.path().to_path_buf()],
            default_namespace: "default".into(),
            ..Sources::default()
        }),
    )
    .unwrap();
    let ids = |ns: &str, name: &str| -> Vec<String> {
        let s = Scope::compute(&snap, ns, name);
        snap.entries
            .values()
            .filter(|e| s.admits(e))
            .map(|e| e.id.clone())
            .collect()
    };
    let gw = ids("istio-system", "gw");
    assert!(
        gw.contains(&"Secret/istio-system/gw-cert".to_string()),
        "{gw:?}"
    );
    assert!(
        gw.contains(&"Gateway/istio-system/gw".to_string()),
        "{gw:?}"
    );
    let app = ids("a", "app");
    assert!(!app.iter().any(|i| i.starts_with("Secret/")), "{app:?}");
    assert!(!app.iter().any(|i| i.starts_with("Gateway/")), "{app:?}");
    assert!(
        !app.contains(&"DestinationRule/b/private".to_string()),
        "{app:?}"
    );
    assert!(
        !app.contains(&"AuthorizationPolicy/b/deny".to_string()),
        "{app:?}"
    );
    // No service in b is visible to a: b's workloads stay home.
    assert!(
        !app.contains(&"WorkloadEntry/b/other".to_string()),
        "{app:?}"
    );
    let other = ids("b", "other");
    assert!(other.contains(&"DestinationRule/b/private".to_string()));
    assert!(other.contains(&"AuthorizationPolicy/b/deny".to_string()));
}
