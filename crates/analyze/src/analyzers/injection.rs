//! Sidecar injection: namespaces without an injection label (IST0102), conflicting injection
//! labels (IST0123), and workloads running as the proxy's UID (IST0144).

use std::collections::BTreeSet;

use trellis_api::resource::Object;

use super::is_system_namespace;
use crate::context::Context;
use crate::messages;

const INJECTION_LABEL: &str = "istio-injection";
const REVISION_LABEL: &str = "istio.io/rev";

/// IST0102 NamespaceNotInjected / IST0123 NamespaceMultipleInjectionLabels.
pub fn namespace_injection(cx: &mut Context) {
    let with_workloads: BTreeSet<&str> = cx.workloads.iter().map(|w| w.namespace).collect();
    let root = cx.mesh.root_namespace.clone();
    let mut namespaces: Vec<_> = cx.namespaces.values().copied().collect();
    namespaces.sort_by(|a, b| a.name.cmp(&b.name));
    for ns in namespaces {
        let name = ns.name.as_str();
        if is_system_namespace(name) || name == root {
            continue;
        }
        let injection = ns.labels.get(INJECTION_LABEL);
        let revision = ns.labels.get(REVISION_LABEL);
        if injection.is_some() && revision.is_some() {
            cx.report(
                messages::NAMESPACE_MULTIPLE_INJECTION_LABELS,
                ns,
                format!(
                    "The namespace has more than one type of injection labels [{INJECTION_LABEL} {REVISION_LABEL}], which may lead to undefined behavior. Make sure only one injection label exists."
                ),
            );
            continue;
        }
        if injection.is_none() && revision.is_none() && with_workloads.contains(name) {
            cx.report(
                messages::NAMESPACE_NOT_INJECTED,
                ns,
                format!(
                    "The namespace is not enabled for Istio injection. Run 'kubectl label namespace {name} istio-injection=enabled' to enable it, or 'kubectl label namespace {name} istio-injection=disabled' to explicitly mark it as not needing injection."
                ),
            );
        }
    }
}

/// IST0144 InvalidApplicationUID: UID 1337 is reserved for the sidecar proxy.
pub fn application_uid(cx: &mut Context) {
    let mut hits = Vec::new();
    for r in cx.resources {
        let pod = match &r.object {
            Object::Deployment(d) => d.spec.template.spec.as_ref(),
            Object::Pod(p) => p.spec.as_ref(),
            _ => None,
        };
        let Some(pod) = pod else { continue };
        let pod_uid = pod.security_context.as_ref().and_then(|s| s.run_as_user);
        let container_uid = pod
            .containers
            .iter()
            .filter(|c| c.name != "istio-proxy")
            .filter_map(|c| c.security_context.as_ref().and_then(|s| s.run_as_user))
            .any(|u| u == 1337);
        if pod_uid == Some(1337) || container_uid {
            hits.push(r);
        }
    }
    for r in hits {
        cx.report(
            messages::INVALID_APPLICATION_UID,
            r,
            "User ID (UID) 1337 is reserved for the sidecar proxy.",
        );
    }
}
