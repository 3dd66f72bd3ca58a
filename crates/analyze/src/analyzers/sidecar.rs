//! Sidecar resources: several selector-less Sidecars in one namespace (IST0111), several
//! Sidecars selecting one workload (IST0110), selectors matching nothing (IST0101), Sidecars
//! for ambient namespaces or pods, which have no sidecar (IST0167).

use std::collections::BTreeMap;

use trellis_api::resource::{Kind, Object};
use trellis_api::Resource;

use super::security::selector_string;
use crate::context::Context;
use crate::messages;

/// IST0110, IST0111, IST0101 and IST0167 for Sidecars.
pub fn sidecar_selectors(cx: &mut Context) {
    let mut no_selector: BTreeMap<&str, Vec<&Resource>> = BTreeMap::new();
    let mut per_workload: BTreeMap<String, Vec<&Resource>> = BTreeMap::new();
    let mut reports = Vec::new();
    let mut ambient: Vec<&Resource> = Vec::new();
    for r in cx.of_kind(Kind::Sidecar) {
        let Object::Sidecar(sc) = &r.object else {
            continue;
        };
        match sc
            .workload_selector
            .as_ref()
            .filter(|s| !s.labels.is_empty())
        {
            None => no_selector.entry(r.ns()).or_default().push(r),
            Some(sel) => {
                let mut any = false;
                let mut all_ambient = true;
                for w in cx.workloads_matching(Some(r.ns()), &sel.labels) {
                    any = true;
                    all_ambient &= workload_in_ambient(w);
                    per_workload.entry(w.resource.key()).or_default().push(r);
                }
                if !any {
                    reports.push((
                        messages::REFERENCED_RESOURCE_NOT_FOUND,
                        r,
                        format!(
                            "Referenced selector not found: {:?}",
                            selector_string(&sel.labels)
                        ),
                    ));
                } else if all_ambient {
                    ambient.push(r);
                    reports.push((
                        messages::INEFFECTIVE_POLICY,
                        r,
                        "The policy has no impact: selected workload is in ambient mode, the policy has no impact.".to_string(),
                    ));
                }
            }
        }
    }
    for (ns, list) in no_selector {
        if cx
            .namespaces
            .get(ns)
            .is_some_and(|n| namespace_in_ambient(n))
        {
            for r in &list {
                reports.push((
                    messages::INEFFECTIVE_POLICY,
                    r,
                    "The policy has no impact: namespace is in ambient mode, the policy has no impact.".to_string(),
                ));
            }
            continue;
        }
        if list.len() > 1 {
            let names: Vec<&str> = list.iter().map(|r| r.name.as_str()).collect();
            for r in &list {
                reports.push((
                    messages::MULTIPLE_SIDECARS_WITHOUT_WORKLOAD_SELECTORS,
                    r,
                    format!(
                        "The Sidecars [{}] in namespace {ns:?} have no workload selector, which can lead to undefined behavior.",
                        names.join(" ")
                    ),
                ));
            }
        }
    }
    for (workload, list) in per_workload {
        let list: Vec<&Resource> = list
            .into_iter()
            .filter(|r| !ambient.iter().any(|a| std::ptr::eq(*a, *r)))
            .collect();
        if list.len() > 1 {
            let names: Vec<&str> = list.iter().map(|r| r.name.as_str()).collect();
            let (ns, pod) = workload.split_once('/').unwrap_or(("", &workload));
            for r in &list {
                reports.push((
                    messages::CONFLICTING_SIDECAR_WORKLOAD_SELECTORS,
                    r,
                    format!(
                        "The Sidecars [{}] in namespace {ns:?} select the same workload pod {pod:?}, which can lead to undefined behavior.",
                        names.join(" ")
                    ),
                ));
            }
        }
    }
    for (kind, r, text) in reports {
        cx.report(kind, r, text);
    }
}

/// A pod redirected to ztunnel (`ambient.istio.io/redirection: enabled`).
fn workload_in_ambient(w: &crate::context::Workload) -> bool {
    w.resource
        .annotations
        .get("ambient.istio.io/redirection")
        .is_some_and(|v| v == "enabled")
}

/// A namespace in ambient mode: `istio.io/dataplane-mode: ambient` and no sidecar injection
/// label.
fn namespace_in_ambient(ns: &Resource) -> bool {
    if ns
        .labels
        .get("istio-injection")
        .is_some_and(|v| v == "enabled")
        || ns.labels.get("istio.io/rev").is_some_and(|v| !v.is_empty())
    {
        return false;
    }
    ns.labels
        .get("istio.io/dataplane-mode")
        .is_some_and(|v| v == "ambient")
}
