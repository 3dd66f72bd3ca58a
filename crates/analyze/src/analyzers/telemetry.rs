//! Telemetry resources: selectors matching no workload (IST0101) or several Telemetries selecting
//! one workload (IST0159), several selector-less Telemetries in a namespace (IST0160), access
//! logging without providers when the mesh has no default (IST0157), and tracing to a Lightstep
//! provider (IST0002 Deprecated).

use std::collections::{BTreeMap, BTreeSet};

use trellis_api::resource::{Kind, Object};
use trellis_api::telemetry::Telemetry;
use trellis_api::Resource;

use super::security::selector_string;
use crate::context::Context;
use crate::messages;

fn telemetries<'a>(cx: &Context<'a>) -> Vec<(&'a Resource, &'a Telemetry)> {
    cx.of_kind(Kind::Telemetry)
        .filter_map(|r| match &r.object {
            Object::Telemetry(t) => Some((r, t.as_ref())),
            _ => None,
        })
        .collect()
}

/// IST0101 (selector matches nothing) and IST0159 (one workload selected by several
/// Telemetries), per namespace. Telemetries without selector labels are left out.
pub fn telemetry_selectors(cx: &mut Context) {
    let mut per_workload: BTreeMap<String, Vec<&Resource>> = BTreeMap::new();
    let mut reports = Vec::new();
    for (r, t) in telemetries(cx) {
        let Some(sel) = t.selector.as_ref().filter(|s| !s.match_labels.is_empty()) else {
            continue;
        };
        let mut any = false;
        for w in cx.workloads_matching(Some(r.ns()), &sel.match_labels) {
            any = true;
            per_workload.entry(w.resource.key()).or_default().push(r);
        }
        if !any {
            reports.push((
                messages::REFERENCED_RESOURCE_NOT_FOUND,
                r,
                format!(
                    "Referenced selector not found: {:?}",
                    selector_string(&sel.match_labels)
                ),
            ));
        }
    }
    for (workload, list) in per_workload {
        if list.len() < 2 {
            continue;
        }
        let names: Vec<&str> = list.iter().map(|r| r.name.as_str()).collect();
        let (ns, pod) = workload.split_once('/').unwrap_or(("", &workload));
        for r in &list {
            reports.push((
                messages::CONFLICTING_TELEMETRY_WORKLOAD_SELECTORS,
                r,
                format!(
                    "The Telemetries [{}] in namespace {ns:?} select the same workload pod {pod:?}, which can lead to undefined behavior.",
                    names.join(" ")
                ),
            ));
        }
    }
    for (kind, r, text) in reports {
        cx.report(kind, r, text);
    }
}

/// IST0160: more than one Telemetry in a namespace applies to every workload there (no
/// selector, no target reference).
pub fn telemetry_default_selectors(cx: &mut Context) {
    let mut per_ns: BTreeMap<&str, Vec<&Resource>> = BTreeMap::new();
    for (r, t) in telemetries(cx) {
        if t.selector.is_none() && t.target_ref.is_none() && t.target_refs.is_empty() {
            per_ns.entry(r.ns()).or_default().push(r);
        }
    }
    let mut reports = Vec::new();
    for (ns, list) in per_ns {
        if list.len() < 2 {
            continue;
        }
        let names: Vec<&str> = list.iter().map(|r| r.name.as_str()).collect();
        for r in list {
            reports.push((
                r,
                format!(
                    "The Telemetries [{}] in namespace {ns:?} have no workload selector, which can lead to undefined behavior.",
                    names.join(" ")
                ),
            ));
        }
    }
    for (r, text) in reports {
        cx.report(
            messages::MULTIPLE_TELEMETRIES_WITHOUT_WORKLOAD_SELECTORS,
            r,
            text,
        );
    }
}

/// Whether an `accessLogging` entry enables logging without naming a provider (ignored when
/// the mesh has no default access log provider). Disabled entries need none.
fn access_logging_without_provider(entry: &serde_json::Value) -> bool {
    let disabled = entry
        .get("disabled")
        .and_then(|d| d.as_bool())
        .unwrap_or(false);
    let providers = entry
        .get("providers")
        .and_then(|p| p.as_array())
        .is_some_and(|p| !p.is_empty());
    !disabled && !providers
}

/// IST0157 InvalidTelemetryProvider, one per access logging entry without providers, when the
/// mesh names no default access log provider.
pub fn telemetry_providers(cx: &mut Context) {
    if !cx.mesh.default_providers.access_logging.is_empty() {
        return;
    }
    let mut reports = Vec::new();
    for (r, t) in telemetries(cx) {
        for (i, entry) in t.access_logging.iter().enumerate() {
            if access_logging_without_provider(entry) {
                reports.push((
                    r,
                    format!("spec.accessLogging[{i}]"),
                    format!(
                        "The Telemetry {} in namespace {:?} with empty providers will be ignored.",
                        r.name,
                        r.ns()
                    ),
                ));
            }
        }
    }
    for (r, field, text) in reports {
        cx.report_at(messages::INVALID_TELEMETRY_PROVIDER, r, &field, text);
    }
}

/// IST0002 Deprecated: tracing to a provider the mesh defines as Lightstep.
pub fn telemetry_lightstep(cx: &mut Context) {
    let lightstep: BTreeSet<&str> = cx
        .mesh
        .extension_providers
        .iter()
        .filter(|p| p.lightstep.is_some())
        .map(|p| p.name.as_str())
        .collect();
    if lightstep.is_empty() {
        return;
    }
    let mut reports = Vec::new();
    for (r, t) in telemetries(cx) {
        for (i, rule) in t.tracing.iter().enumerate() {
            for (j, p) in rule.providers.iter().enumerate() {
                if lightstep.contains(p.name.as_str()) {
                    reports.push((
                        r,
                        format!("spec.tracing[{i}].providers[{j}]"),
                        format!(
                            "Deprecated: The Lightstep provider {} is deprecated, please migrate to OpenTelemetry provider.",
                            p.name
                        ),
                    ));
                }
            }
        }
    }
    for (r, field, text) in reports {
        cx.report_at(messages::DEPRECATED, r, &field, text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn access_logging_needs_a_provider_unless_disabled() {
        assert!(access_logging_without_provider(
            &json!({"filter": {"expression": "response.code >= 400"}})
        ));
        assert!(access_logging_without_provider(&json!({"providers": []})));
        assert!(access_logging_without_provider(&json!({"disabled": false})));
        assert!(!access_logging_without_provider(
            &json!({"providers": [{"name": "envoy"}]})
        ));
        assert!(!access_logging_without_provider(&json!({"disabled": true})));
    }
}
