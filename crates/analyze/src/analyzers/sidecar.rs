//! Sidecar resources: several selector-less Sidecars in one namespace (IST0111), several
//! Sidecars selecting one workload (IST0110), selectors matching nothing (IST0127).

use std::collections::BTreeMap;

use trellis_api::resource::{Kind, Object};
use trellis_api::Resource;

use super::security::selector_string;
use crate::context::Context;
use crate::messages;

/// IST0110, IST0111 and IST0127 for Sidecars.
pub fn sidecar_selectors(cx: &mut Context) {
    let mut no_selector: BTreeMap<&str, Vec<&Resource>> = BTreeMap::new();
    let mut per_workload: BTreeMap<String, Vec<&Resource>> = BTreeMap::new();
    let mut reports = Vec::new();
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
                for w in cx.workloads_matching(Some(r.ns()), &sel.labels) {
                    any = true;
                    per_workload.entry(w.resource.key()).or_default().push(r);
                }
                if !any {
                    reports.push((
                        messages::NO_MATCHING_WORKLOADS_FOUND,
                        r,
                        format!(
                            "No matching workloads for this resource with the following labels: {}",
                            selector_string(&sel.labels)
                        ),
                    ));
                }
            }
        }
    }
    for (ns, list) in no_selector {
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
