//! Security policies: selectors that match no workload (IST0127), namespaces referenced by an
//! AuthorizationPolicy that do not exist (IST0101), and PeerAuthentication port-level settings
//! for ports the selected workloads do not have (IST0167).

use std::collections::{BTreeMap, BTreeSet};

use trellis_api::common::WorkloadSelector;
use trellis_api::resource::Object;
use trellis_api::Resource;

use crate::context::Context;
use crate::messages;

/// `k=v,k2=v2`, sorted by key (Kubernetes' selector string form).
pub fn selector_string(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn selector_of(r: &Resource) -> Option<&WorkloadSelector> {
    match &r.object {
        Object::AuthorizationPolicy(p) => p.selector.as_ref(),
        Object::RequestAuthentication(p) => p.selector.as_ref(),
        Object::PeerAuthentication(p) => p.selector.as_ref(),
        _ => None,
    }
}

/// IST0127 NoMatchingWorkloadsFound for policies whose selector matches nothing. A policy in
/// the root namespace applies mesh-wide, so its selector may match any namespace.
pub fn selectors_match_workloads(cx: &mut Context) {
    let root = cx.mesh.root_namespace.clone();
    let mut hits = Vec::new();
    let empty = WorkloadSelector::default();
    for r in cx.resources {
        // An AuthorizationPolicy without a selector applies to its whole namespace (the whole
        // mesh in the root namespace): as Istio, it still needs some workload there.
        let sel = match (selector_of(r), &r.object) {
            (Some(sel), _) if !sel.match_labels.is_empty() => sel,
            (_, Object::AuthorizationPolicy(_)) => &empty,
            _ => continue,
        };
        let scope = if r.ns() == root { None } else { Some(r.ns()) };
        if cx
            .workloads_matching(scope, &sel.match_labels)
            .next()
            .is_none()
        {
            hits.push((r, selector_string(&sel.match_labels)));
        }
    }
    for (r, labels) in hits {
        cx.report_at(
            messages::NO_MATCHING_WORKLOADS_FOUND,
            r,
            "spec.selector",
            format!("No matching workloads for this resource with the following labels: {labels}"),
        );
    }
}

/// IST0101 for `source.namespaces` / `notNamespaces` values (exact, `*`, `prefix*`, `*suffix`)
/// matching no declared namespace. Only runs when the
/// inputs declare namespaces at all (otherwise nothing is known about them).
pub fn authz_namespaces(cx: &mut Context) {
    if cx.namespaces.is_empty() {
        return;
    }
    let known: BTreeSet<&str> = cx.namespaces.keys().copied().collect();
    let mut hits = Vec::new();
    for r in cx.resources {
        let Object::AuthorizationPolicy(p) = &r.object else {
            continue;
        };
        for (ri, rule) in p.rules.iter().enumerate() {
            for (fi, from) in rule.from.iter().enumerate() {
                let Some(src) = &from.source else { continue };
                for (field, list) in [
                    ("namespaces", &src.namespaces),
                    ("notNamespaces", &src.not_namespaces),
                ] {
                    for (ni, ns) in list.iter().enumerate() {
                        if known.iter().any(|k| namespace_pattern_matches(ns, k)) {
                            continue;
                        }
                        hits.push((
                            r,
                            format!("spec.rules[{ri}].from[{fi}].source.{field}[{ni}]"),
                            ns.clone(),
                        ));
                    }
                }
            }
        }
    }
    for (r, field, ns) in hits {
        cx.report_at(
            messages::REFERENCED_RESOURCE_NOT_FOUND,
            r,
            &field,
            format!("Referenced namespace not found: {ns:?}"),
        );
    }
}

/// An AuthorizationPolicy namespace value: exact, `*`, `prefix*` or `*suffix`.
fn namespace_pattern_matches(pattern: &str, ns: &str) -> bool {
    if pattern == "*" {
        true
    } else if let Some(p) = pattern.strip_suffix('*') {
        ns.starts_with(p)
    } else if let Some(p) = pattern.strip_prefix('*') {
        ns.ends_with(p)
    } else {
        pattern == ns
    }
}

/// IST0167 IneffectivePolicy: `portLevelMtls` on a port none of the selected workloads serves
/// (Istio applies port-level mTLS to workload target ports, not Service ports).
pub fn peer_authentication_ports(cx: &mut Context) {
    let mut hits = Vec::new();
    for r in cx.resources {
        let Object::PeerAuthentication(pa) = &r.object else {
            continue;
        };
        let Some(sel) = &pa.selector else { continue };
        if pa.port_level_mtls.is_empty() || sel.match_labels.is_empty() {
            continue;
        }
        let workloads: Vec<_> = cx
            .workloads_matching(Some(r.ns()), &sel.match_labels)
            .collect();
        if workloads.is_empty() {
            continue; // IST0127 covers it
        }
        let mut ports: BTreeSet<u32> = BTreeSet::new();
        for w in &workloads {
            ports.extend(w.ports.iter().map(|(p, _)| *p as u32));
            for svc in cx.services_selecting(w) {
                for p in &svc.ports {
                    if let Ok(n) = p.target_port.parse::<u32>() {
                        ports.insert(n);
                    }
                }
            }
        }
        if ports.is_empty() {
            continue; // nothing known about the workload's ports
        }
        let missing: Vec<String> = pa
            .port_level_mtls
            .keys()
            .filter(|p| !ports.contains(p))
            .map(|p| p.to_string())
            .collect();
        if !missing.is_empty() {
            hits.push((r, missing));
        }
    }
    for (r, missing) in hits {
        cx.report_at(
            messages::INEFFECTIVE_POLICY,
            r,
            "spec.portLevelMtls",
            format!(
                "The policy has no impact: portLevelMtls port(s) {} are not ports of any workload it selects (port-level mTLS applies to workload target ports).",
                missing.join(", ")
            ),
        );
    }
}
