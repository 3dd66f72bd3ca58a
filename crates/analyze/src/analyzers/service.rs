//! Services: Istio port naming (IST0118, IST0150 for ExternalName Services) and workloads selected by several Services that
//! disagree on a port's protocol (IST0116) or target port (IST0137).

use std::collections::BTreeMap;

use super::is_system_namespace;
use crate::context::{Context, ServicePort};
use crate::messages;

/// Protocols Istio recognises in a port name prefix or appProtocol.
pub const PROTOCOLS: &[&str] = &[
    "http",
    "http2",
    "https",
    "grpc",
    "grpc-web",
    "tcp",
    "tls",
    "mongo",
    "mysql",
    "redis",
    "udp",
    "http_proxy",
    "h2c",
    "ws",
    "wss",
];

/// The protocol Istio infers for a Service port: appProtocol, then the name prefix.
pub fn port_protocol(port: &ServicePort) -> Option<&'static str> {
    let from = |s: &str| {
        let s = s.to_ascii_lowercase();
        PROTOCOLS.iter().copied().find(|p| *p == s)
    };
    if let Some(ap) = &port.app_protocol {
        let ap = ap.rsplit('/').next().unwrap_or(ap);
        if let Some(p) = from(ap) {
            return Some(p);
        }
    }
    let prefix = port.name.split('-').next().unwrap_or("");
    let lower = port.name.to_ascii_lowercase();
    if lower == "grpc-web" || lower.starts_with("grpc-web-") {
        return Some("grpc-web");
    }
    from(prefix)
}

/// IST0118 PortNameIsNotUnderNamingConvention; IST0150 ExternalNameServiceTypeInvalidPortName
/// for ExternalName Services.
pub fn port_names(cx: &mut Context) {
    let mut hits = Vec::new();
    for svc in &cx.services {
        // Istio's own Services (gateways: label `istio`, `release: istio`, managed gateways and
        // waypoints) carry ports like `status-port`.
        if is_system_namespace(svc.namespace)
            || svc.resource.labels.contains_key("istio")
            || svc
                .resource
                .labels
                .get("release")
                .is_some_and(|v| v == "istio")
            || svc.resource.labels.contains_key("gateway.istio.io/managed")
        {
            continue;
        }
        for (i, p) in svc.ports.iter().enumerate() {
            if p.app_protocol.is_some() && port_protocol(p).is_some() {
                continue;
            }
            let field = format!("spec.ports[{i}].name");
            if svc.type_ == "ExternalName" {
                // An ExternalName Service has no endpoints to sniff: a port Istio cannot name a
                // protocol for, or one explicitly named `tcp`, is forwarded as opaque TCP.
                if port_protocol(p).is_none() || p.name == "tcp" {
                    hits.push((
                        messages::EXTERNAL_NAME_SERVICE_TYPE_INVALID_PORT_NAME,
                        svc.resource,
                        field,
                        "Port name for ExternalName service is invalid. Proxy may prevent tcp named ports and unmatched traffic for ports serving TCP protocol from being forwarded correctly".to_string(),
                    ));
                }
                continue;
            }
            if port_protocol(p).is_none() {
                hits.push((
                    messages::PORT_NAME_IS_NOT_UNDER_NAMING_CONVENTION,
                    svc.resource,
                    field,
                    format!(
                        "Port name {} (port: {}, targetPort: {}) doesn't follow the naming convention of Istio port.",
                        p.name, p.port, p.target_port
                    ),
                ));
            }
        }
    }
    for (kind, r, field, text) in hits {
        cx.report_at(kind, r, &field, text);
    }
}

/// IST0116 DeploymentAssociatedToMultipleServices and IST0137 DeploymentConflictingPorts.
pub fn multi_service(cx: &mut Context) {
    let mut reports = Vec::new();
    for w in &cx.workloads {
        if w.resource.kind != trellis_api::Kind::Deployment || !deployment_in_mesh(cx, w.resource) {
            continue;
        }
        let services: Vec<_> = cx.services_selecting(w).collect();
        if services.len() < 2 {
            continue;
        }
        // port -> protocol -> services
        let mut by_port: BTreeMap<i32, BTreeMap<String, Vec<String>>> = BTreeMap::new();
        // targetPort -> port -> services
        let mut by_target: BTreeMap<String, BTreeMap<i32, Vec<String>>> = BTreeMap::new();
        for s in &services {
            for p in &s.ports {
                let proto = port_protocol(p).unwrap_or("tcp").to_string();
                by_port
                    .entry(p.port)
                    .or_default()
                    .entry(proto)
                    .or_default()
                    .push(s.name.to_string());
                by_target
                    .entry(p.target_port.clone())
                    .or_default()
                    .entry(p.port)
                    .or_default()
                    .push(s.name.to_string());
            }
        }
        for (port, protos) in by_port {
            if protos.len() > 1 {
                let mut names: Vec<String> = protos.values().flatten().cloned().collect();
                names.sort();
                names.dedup();
                reports.push((
                    messages::DEPLOYMENT_ASSOCIATED_TO_MULTIPLE_SERVICES,
                    w.resource,
                    format!(
                        "This deployment {} is associated with multiple services using port {port} but different protocols: [{}]",
                        w.resource.name,
                        names.join(" ")
                    ),
                ));
            }
        }
        for (target, ports) in by_target {
            if ports.len() > 1 {
                let mut names: Vec<String> = ports.values().flatten().cloned().collect();
                names.sort();
                names.dedup();
                let nums: Vec<String> = ports.keys().map(|p| p.to_string()).collect();
                reports.push((
                    messages::DEPLOYMENT_CONFLICTING_PORTS,
                    w.resource,
                    format!(
                        "This deployment {} is associated with multiple services [{}] using targetPort \"{target}\" but different ports: [{}].",
                        w.resource.name,
                        names.join(" "),
                        nums.join(" ")
                    ),
                ));
            }
        }
    }
    for (kind, r, text) in reports {
        cx.report(kind, r, text);
    }
}

/// Whether a Deployment's pods get a sidecar, as Istio decides for this analyzer: an
/// `istio-proxy` container, else the pod template's `sidecar.istio.io/inject` label or
/// annotation, else its namespace's injection labels.
fn deployment_in_mesh(cx: &Context, r: &trellis_api::Resource) -> bool {
    let trellis_api::Object::Deployment(d) = &r.object else {
        return false;
    };
    let tpl = &d.spec.template;
    if tpl
        .spec
        .as_ref()
        .is_some_and(|p| p.containers.iter().any(|c| c.name == "istio-proxy"))
    {
        return true;
    }
    let meta = tpl.metadata.as_ref();
    let label = meta
        .and_then(|m| m.labels.as_ref())
        .and_then(|l| l.get("sidecar.istio.io/inject"));
    let annotation = meta
        .and_then(|m| m.annotations.as_ref())
        .and_then(|a| a.get("sidecar.istio.io/inject"));
    if let Some(v) = label.or(annotation) {
        return v.eq_ignore_ascii_case("true");
    }
    cx.namespaces.get(r.ns()).is_some_and(|ns| {
        ns.labels
            .get("istio-injection")
            .is_some_and(|v| v == "enabled")
            || ns.labels.contains_key("istio.io/rev")
    })
}
