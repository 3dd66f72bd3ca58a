//! Sidecar injection: namespaces without an injection label (IST0102), conflicting injection
//! labels (IST0123), and workloads running as the proxy's UID (IST0144).

use trellis_api::resource::Object;

use super::is_system_namespace;
use crate::context::Context;
use crate::messages;

const INJECTION_LABEL: &str = "istio-injection";
const REVISION_LABEL: &str = "istio.io/rev";
const DATAPLANE_MODE_LABEL: &str = "istio.io/dataplane-mode";

/// IST0102 NamespaceNotInjected / IST0148 NamespaceInjectionEnabledByDefault for namespaces
/// without an injection label, IST0123 NamespaceMultipleInjectionLabels. As Istio, every
/// declared namespace is checked, whether or not the inputs hold workloads for it.
pub fn namespace_injection(cx: &mut Context) {
    let root = cx.mesh.root_namespace.clone();
    let mut namespaces: Vec<_> = cx.namespaces.values().copied().collect();
    namespaces.sort_by(|a, b| a.name.cmp(&b.name));
    for ns in namespaces {
        let name = ns.name.as_str();
        if is_system_namespace(name) || name == root || name == "istio-system" {
            continue;
        }
        let injection = ns.labels.get(INJECTION_LABEL);
        let revision = ns.labels.get(REVISION_LABEL);
        let mut istio_labels = Vec::new();
        if let Some(v) = injection {
            istio_labels.push(format!("{INJECTION_LABEL}={v}"));
        }
        if injection.is_none_or(|v| v == "enabled") {
            for l in [REVISION_LABEL, DATAPLANE_MODE_LABEL] {
                if let Some(v) = ns.labels.get(l) {
                    istio_labels.push(format!("{l}={v}"));
                }
            }
        }
        if istio_labels.len() > 1 {
            cx.report(
                messages::NAMESPACE_MULTIPLE_INJECTION_LABELS,
                ns,
                format!(
                    "The namespace has more than one type of injection labels [{}], which may lead to undefined behavior. Make sure only one injection label exists.",
                    istio_labels.join(" ")
                ),
            );
        }
        if ns
            .labels
            .get(DATAPLANE_MODE_LABEL)
            .is_some_and(|v| v == "ambient")
        {
            continue;
        }
        if injection.is_none_or(|v| v.is_empty()) && revision.is_none() {
            if enable_namespaces_by_default(cx) {
                cx.report(
                    messages::NAMESPACE_INJECTION_ENABLED_BY_DEFAULT,
                    ns,
                    "is enabled for Istio injection, as Istio is installed with enableNamespacesByDefault as true.",
                );
            } else {
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
}

/// `sidecarInjectorWebhook.enableNamespacesByDefault` in the `istio-sidecar-injector` ConfigMap's
/// `values`, when the inputs hold it.
fn enable_namespaces_by_default(cx: &Context) -> bool {
    cx.resources.iter().any(|r| {
        let Object::ConfigMap(cm) = &r.object else {
            return false;
        };
        r.name == "istio-sidecar-injector"
            && cm
                .data
                .as_ref()
                .and_then(|d| d.get("values"))
                .and_then(|v| serde_json::from_str::<serde_json::Value>(v).ok())
                .and_then(|v| {
                    v.get("sidecarInjectorWebhook")?
                        .get("enableNamespacesByDefault")?
                        .as_bool()
                })
                .unwrap_or(false)
    })
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
