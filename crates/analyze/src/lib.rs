//! Trellis analyze: `istioctl analyze` over a resource set, with Istio's message codes.
//!
//! Owns the analyzers (`analyzers/`, one file per area), the message catalogue (`messages`) and
//! message rendering (`message`). Schema problems found while loading become IST0106
//! SchemaValidationError messages here, so one list carries everything. Does not read files
//! (`trellis_api::load`) or compile proxy config.

pub mod analyzers;
pub mod context;
pub mod message;
pub mod messages;

use trellis_api::load::ResourceSet;
use trellis_api::{Diagnostic, MeshConfig, Resource, Severity, Unrecognized};

pub use context::Context;
pub use message::{Message, OutputMessage};
pub use messages::{Level, MessageType};

/// Runs load-diagnostic conversion and every analyzer; messages come back sorted by level
/// (most severe first), then by file and line.
pub fn analyze(set: &ResourceSet, mesh: &MeshConfig) -> Vec<Message> {
    analyze_parts(
        &set.resources.iter().collect::<Vec<_>>(),
        &set.unrecognized,
        &set.diagnostics,
        mesh,
    )
}

/// `analyze` over borrowed parts of a load: resources in load order (a later definition of
/// the same object wins), the objects of kinds Trellis does not model, and the load
/// diagnostics. Lets a caller that keeps resources between loads (the control plane's
/// incremental reload) analyze without copying them.
pub fn analyze_parts<'a>(
    resources: &[&'a Resource],
    unrecognized: impl IntoIterator<Item = &'a Unrecognized>,
    diagnostics: impl IntoIterator<Item = &'a Diagnostic>,
    mesh: &MeshConfig,
) -> Vec<Message> {
    let mut out: Vec<Message> = diagnostics
        .into_iter()
        .map(|d| {
            let kind = match d.severity {
                Severity::Error => messages::SCHEMA_VALIDATION_ERROR,
                _ => messages::SCHEMA_WARNING,
            };
            let what = if kind == messages::SCHEMA_VALIDATION_ERROR {
                "Schema validation error"
            } else {
                "Schema validation warning"
            };
            let text = if d.field.is_empty() {
                format!("{what}: {}", d.message)
            } else {
                format!("{what}: {}: {}", d.field, d.message)
            };
            let mut m = Message::new(kind, text);
            m.resource = d.resource.clone();
            m.location = d.location.clone();
            m.precise = true;
            m
        })
        .collect();
    // istioctl analyzes files as if the default ingress gateway (a pod and its Service in the
    // Istio namespace) were installed, unless the mesh turns ingress off; so does Trellis. They
    // come first, so a definition in the inputs wins.
    let defaults = default_resources(mesh);
    let mut all: Vec<&Resource> = Vec::with_capacity(defaults.len() + resources.len());
    all.extend(defaults.iter());
    all.extend(resources.iter().copied());
    // The same object defined twice (alternative sample files, re-applied manifests) is one
    // object, as `kubectl apply` would leave it: the last definition wins.
    let resources = dedupe_last_wins(all);
    let unrecognized: Vec<&'a Unrecognized> = unrecognized.into_iter().collect();
    let mut cx = Context::new(&resources, mesh);
    cx.add_unrecognized(unrecognized);
    analyzers::run_all(&mut cx);
    // Never report on the assumed default resources themselves.
    out.extend(cx.into_messages().into_iter().filter(|m| {
        m.location
            .as_ref()
            .is_none_or(|l| &*l.file != DEFAULT_RESOURCES_FILE)
    }));
    sort_messages(&mut out);
    out.dedup();
    out
}

/// The pseudo file name of `default_resources`.
const DEFAULT_RESOURCES_FILE: &str = "<default ingress gateway>";

/// The resources istioctl adds for files-only analysis: the `istio=ingressgateway` pod and the
/// ingress Service (ports 80, 443, 31400, 15443) in the Istio namespace.
pub fn default_resources(mesh: &MeshConfig) -> Vec<trellis_api::Resource> {
    if mesh.ingress_controller_mode == trellis_api::mesh::IngressControllerMode::Off {
        return Vec::new();
    }
    let ns = "istio-system";
    let svc = &mesh.ingress_service;
    let text = format!(
        "apiVersion: v1
kind: Pod
metadata:
  labels:
    istio: ingressgateway
  name: {svc}-dummypod
  namespace: {ns}
spec:
  containers:
  - name: istio-proxy
---
apiVersion: v1
kind: Service
metadata:
  name: {svc}
  namespace: {ns}
spec:
  ports:
  - {{name: http2, nodePort: 31380, port: 80, protocol: TCP, targetPort: 80}}
  - {{name: https, nodePort: 31390, port: 443, protocol: TCP, targetPort: 443}}
  - {{name: tcp, nodePort: 31400, port: 31400, protocol: TCP, targetPort: 31400}}
  - {{name: tls, nodePort: 31447, port: 15443, protocol: TCP, targetPort: 15443}}
  selector:
    istio: ingressgateway
"
    );
    let mut set = ResourceSet::default();
    set.add_text(
        DEFAULT_RESOURCES_FILE,
        &text,
        &trellis_api::load::LoadOptions::default(),
    );
    set.resources
}

/// Whether a resource is one of `default_resources` (never reported on).
pub fn is_default_resource(r: &trellis_api::Resource) -> bool {
    &*r.origin.location.file == DEFAULT_RESOURCES_FILE
}

fn dedupe_last_wins(resources: Vec<&Resource>) -> Vec<&Resource> {
    let mut last = std::collections::HashMap::with_capacity(resources.len());
    for (i, r) in resources.iter().enumerate() {
        last.insert((r.kind, r.ns(), r.name.as_str()), i);
    }
    if last.len() == resources.len() {
        return resources;
    }
    resources
        .iter()
        .enumerate()
        .filter(|(i, r)| last[&(r.kind, r.ns(), r.name.as_str())] == *i)
        .map(|(_, r)| *r)
        .collect()
}

/// Most severe first, then by file, line, code.
pub fn sort_messages(messages: &mut [Message]) {
    messages.sort_by(|a, b| {
        let key = |m: &Message| {
            (
                std::cmp::Reverse(m.level),
                m.location
                    .as_ref()
                    .map(|l| (l.file.to_string(), l.line, l.column)),
                m.kind.code,
                m.text.clone(),
            )
        };
        key(a).cmp(&key(b))
    });
}
