//! PeerAuthentication precedence: workload > namespace > mesh, oldest wins, UNSET inherits,
//! root-namespace selector policies ignored, portLevelMtls on the workload policy only.

use std::collections::BTreeMap;

use trellis_api::load::{LoadOptions, ResourceSet};
use trellis_api::security::MtlsMode::{self, *};
use trellis_api::Resource;
use trellis_model::peer_authn::{ModeSource, PeerAuthnPolicy};

const ROOT: &str = "istio-system";

fn load(yaml: &str) -> Vec<Resource> {
    let mut set = ResourceSet::default();
    set.add_text("pa.yaml", yaml, &LoadOptions::default());
    set.resources
}

fn pa(name: &str, ns: &str, ts: Option<&str>, selector: Option<&str>, body: &str) -> String {
    let ts = ts.map_or(String::new(), |t| format!(", creationTimestamp: \"{t}\""));
    let sel = selector.map_or(String::new(), |s| {
        format!("  selector: {{matchLabels: {{app: {s}}}}}\n")
    });
    format!(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: {name}, namespace: {ns}{ts}}}\nspec:\n{sel}{body}\n---\n"
    )
}

fn resolve(yaml: &str, ns: &str, app: &str) -> trellis_model::peer_authn::EffectivePeerAuthn {
    let labels = BTreeMap::from([("app".to_string(), app.to_string())]);
    PeerAuthnPolicy::resolve(&load(yaml), ns, &labels, ROOT)
}

fn mode(yaml: &str, ns: &str, app: &str, port: u32) -> MtlsMode {
    resolve(yaml, ns, app).mode_for_port(port)
}

#[test]
fn precedence_workload_namespace_mesh() {
    let mesh = pa("default", ROOT, None, None, "  mtls: {mode: STRICT}");
    let ns = pa("ns", "foo", None, None, "  mtls: {mode: PERMISSIVE}");
    let wl = pa("wl", "foo", None, Some("web"), "  mtls: {mode: DISABLE}");

    assert_eq!(mode(&mesh, "foo", "web", 80), Strict);
    assert_eq!(mode(&(mesh.clone() + &ns), "foo", "web", 80), Permissive);
    assert_eq!(mode(&(mesh.clone() + &ns + &wl), "foo", "web", 80), Disable);
    assert_eq!(
        mode(&(mesh.clone() + &ns + &wl), "foo", "api", 80),
        Permissive
    );
    assert_eq!(mode(&(mesh.clone() + &ns + &wl), "bar", "web", 80), Strict);

    let e = resolve(&(mesh.clone() + &ns + &wl), "foo", "web");
    assert_eq!(e.mesh_policy.unwrap().to_string(), "istio-system/default");
    assert_eq!(e.namespace_policy.unwrap().to_string(), "foo/ns");
    assert_eq!(e.workload_policy.unwrap().to_string(), "foo/wl");
    assert!(matches!(e.mode_source, ModeSource::Workload(ref p) if p.name == "wl"));
}

#[test]
fn default_is_permissive() {
    assert_eq!(mode("", "foo", "web", 80), Permissive);
    // A policy in another namespace does not apply.
    let other = pa("x", "bar", None, None, "  mtls: {mode: STRICT}");
    assert_eq!(mode(&other, "foo", "web", 80), Permissive);
}

#[test]
fn unset_inherits_from_the_parent_level() {
    let mesh = pa("default", ROOT, None, None, "  mtls: {mode: STRICT}");
    let ns_unset = pa("ns", "foo", None, None, "  mtls: {mode: UNSET}");
    let wl_no_mtls = pa(
        "wl",
        "foo",
        None,
        Some("web"),
        "  portLevelMtls:\n    \"8080\": {mode: DISABLE}",
    );
    let yaml = mesh + &ns_unset + &wl_no_mtls;
    let e = resolve(&yaml, "foo", "web");
    assert_eq!(e.mode, Strict);
    assert!(matches!(e.mode_source, ModeSource::Mesh(_)));
    assert_eq!(e.mode_for_port(80), Strict);
    assert_eq!(e.mode_for_port(8080), Disable);
    assert!(matches!(e.source_for_port(8080), ModeSource::Port(_, 8080)));
    assert!(matches!(e.source_for_port(80), ModeSource::Mesh(_)));
}

#[test]
fn port_level_unset_inherits_the_workload_mode() {
    let wl = pa(
        "wl",
        "foo",
        None,
        Some("web"),
        "  mtls: {mode: STRICT}\n  portLevelMtls:\n    \"9090\": {mode: UNSET}\n    \"8080\": {mode: PERMISSIVE}",
    );
    let e = resolve(&wl, "foo", "web");
    assert_eq!(e.mode_for_port(9090), Strict);
    assert_eq!(e.mode_for_port(8080), Permissive);
    assert_eq!(e.mode_for_port(1), Strict);
    assert!(matches!(e.source_for_port(9090), ModeSource::Workload(_)));
}

#[test]
fn root_namespace_selector_policies_are_ignored() {
    let mesh = pa("default", ROOT, None, None, "  mtls: {mode: STRICT}");
    let root_sel = pa(
        "root-web",
        ROOT,
        None,
        Some("web"),
        "  mtls: {mode: DISABLE}\n  portLevelMtls:\n    \"80\": {mode: DISABLE}",
    );
    let yaml = mesh + &root_sel;
    assert_eq!(mode(&yaml, "foo", "web", 80), Strict);
    // Even for a workload in the root namespace.
    assert_eq!(mode(&yaml, ROOT, "web", 80), Strict);
    // An empty selector is a namespace-wide (here: mesh-wide) policy.
    let empty_sel = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: empty, namespace: foo}\nspec:\n  selector: {}\n  mtls: {mode: DISABLE}\n";
    assert_eq!(mode(empty_sel, "foo", "web", 80), Disable);
}

#[test]
fn oldest_wins_then_name() {
    let newer = pa(
        "a-newer",
        "foo",
        Some("2024-06-01T00:00:00Z"),
        None,
        "  mtls: {mode: DISABLE}",
    );
    let older = pa(
        "z-older",
        "foo",
        Some("2024-01-01T00:00:00+02:00"),
        None,
        "  mtls: {mode: STRICT}",
    );
    assert_eq!(mode(&(newer.clone() + &older), "foo", "web", 80), Strict);
    assert_eq!(mode(&(older.clone() + &newer), "foo", "web", 80), Strict);

    let wl_new = pa(
        "b",
        "foo",
        Some("2024-06-01T00:00:00Z"),
        Some("web"),
        "  mtls: {mode: DISABLE}",
    );
    let wl_old = pa(
        "c",
        "foo",
        Some("2023-06-01T00:00:00Z"),
        Some("web"),
        "  mtls: {mode: STRICT}",
    );
    assert_eq!(mode(&(wl_new + &wl_old), "foo", "web", 80), Strict);

    // No timestamps: the name decides, deterministically.
    let x = pa("x", "foo", None, None, "  mtls: {mode: DISABLE}");
    let y = pa("y", "foo", None, None, "  mtls: {mode: STRICT}");
    assert_eq!(mode(&(y.clone() + &x), "foo", "web", 80), Disable);
    assert_eq!(mode(&(x + &y), "foo", "web", 80), Disable);
}
