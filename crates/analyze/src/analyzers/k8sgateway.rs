//! Policies that select the pods of a Kubernetes Gateway API gateway by label (IST0166
//! IneffectiveSelector): such pods are configured through `targetRef(s)`, and Istio ignores a
//! workload selector there.

use std::collections::BTreeMap;

use serde_json::Value;
use trellis_api::resource::{Kind, Object};
use trellis_api::ResourceRef;

use crate::context::Context;
use crate::message::Message;
use crate::messages;

/// The label Gateway API deployments put on their pods.
const GATEWAY_NAME_LABEL: &str = "gateway.networking.k8s.io/gateway-name";

/// A policy's selector labels, when it selects by label and names no target.
fn selector_only(
    selector: Option<&BTreeMap<String, String>>,
    has_target: bool,
) -> Option<&BTreeMap<String, String>> {
    if has_target {
        return None;
    }
    selector
}

/// Selector labels of a WasmPlugin (read as an unrecognized object) without target references.
fn wasm_plugin_selector(raw: &Value) -> Option<BTreeMap<String, String>> {
    let spec = raw.get("spec")?;
    let has_target = spec.get("targetRef").is_some_and(|t| !t.is_null())
        || spec
            .get("targetRefs")
            .and_then(Value::as_array)
            .is_some_and(|t| !t.is_empty());
    if has_target {
        return None;
    }
    let labels = spec.get("selector")?.get("matchLabels")?.as_object()?;
    Some(
        labels
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
            .collect(),
    )
}

/// IST0166 IneffectiveSelector for AuthorizationPolicies, RequestAuthentications, Telemetries
/// and WasmPlugins whose selector matches a Gateway API gateway's pods.
pub fn ineffective_gateway_selectors(cx: &mut Context) {
    // Namespace -> labels of the gateway pods there.
    let mut gateway_pods: BTreeMap<&str, Vec<&BTreeMap<String, String>>> = BTreeMap::new();
    for w in &cx.workloads {
        if w.labels.contains_key(GATEWAY_NAME_LABEL) {
            gateway_pods.entry(w.namespace).or_default().push(&w.labels);
        }
    }
    if gateway_pods.is_empty() {
        return;
    }
    // (policy, namespace, selector labels)
    let mut policies: Vec<(
        ResourceRef,
        trellis_api::Location,
        &str,
        BTreeMap<String, String>,
    )> = Vec::new();
    for kind in [
        Kind::AuthorizationPolicy,
        Kind::RequestAuthentication,
        Kind::Telemetry,
    ] {
        for r in cx.of_kind(kind) {
            let selector = match &r.object {
                Object::AuthorizationPolicy(p) => selector_only(
                    p.selector.as_ref().map(|s| &s.match_labels),
                    p.target_ref.is_some() || !p.target_refs.is_empty(),
                ),
                Object::RequestAuthentication(p) => selector_only(
                    p.selector.as_ref().map(|s| &s.match_labels),
                    p.target_ref.is_some() || !p.target_refs.is_empty(),
                ),
                Object::Telemetry(p) => selector_only(
                    p.selector.as_ref().map(|s| &s.match_labels),
                    p.target_ref.is_some() || !p.target_refs.is_empty(),
                ),
                _ => None,
            };
            if let Some(sel) = selector {
                policies.push((
                    r.reference(),
                    r.origin.locate("spec.selector"),
                    r.ns(),
                    sel.clone(),
                ));
            }
        }
    }
    for u in &cx.unrecognized {
        if u.kind != "WasmPlugin" || !u.api_version.starts_with("extensions.istio.io/") {
            continue;
        }
        if let Some(sel) = wasm_plugin_selector(&u.raw) {
            let ns = u.namespace.as_deref().unwrap_or("default");
            policies.push((u.reference(), u.origin.locate("spec.selector"), ns, sel));
        }
    }
    let mut out = Vec::new();
    for (reference, location, ns, selector) in policies {
        for pod in gateway_pods.get(ns).into_iter().flatten() {
            if selector.iter().all(|(k, v)| pod.get(k) == Some(v)) {
                out.push(
                    Message::new(
                        messages::INEFFECTIVE_SELECTOR,
                        format!(
                            "Ineffective selector on Kubernetes Gateway {}. Use the TargetRef field instead.",
                            pod[GATEWAY_NAME_LABEL]
                        ),
                    )
                    .about(reference.clone(), location.clone()),
                );
            }
        }
    }
    for m in out {
        cx.push(m);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn wasm_plugin_selector_only_without_targets() {
        let sel = json!({"spec": {"selector": {"matchLabels": {"a": "b"}}}});
        assert_eq!(
            wasm_plugin_selector(&sel),
            Some(BTreeMap::from([("a".to_string(), "b".to_string())]))
        );
        let with_target = json!({"spec": {
            "selector": {"matchLabels": {"a": "b"}},
            "targetRefs": [{"kind": "Gateway", "group": "gateway.networking.k8s.io", "name": "g"}],
        }});
        assert_eq!(wasm_plugin_selector(&with_target), None);
        assert_eq!(wasm_plugin_selector(&json!({"spec": {"url": "x"}})), None);
    }
}
