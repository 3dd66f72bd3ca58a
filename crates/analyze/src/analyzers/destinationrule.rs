//! DestinationRules: hosts that match no service (IST0174), subsets whose labels select no
//! pod (IST0173), and TLS origination without server verification (IST0128, IST0129).

use trellis_api::networking::{ClientTLSMode, ClientTLSSettings, DestinationRule};
use trellis_api::resource::{Kind, Object};
use trellis_api::Resource;

use crate::context::Context;
use crate::messages;

fn rules<'a>(cx: &Context<'a>) -> Vec<(&'a Resource, &'a DestinationRule)> {
    cx.of_kind(Kind::DestinationRule)
        .filter_map(|r| match &r.object {
            Object::DestinationRule(d) => Some((r, d.as_ref())),
            _ => None,
        })
        .collect()
}

/// IST0174 and IST0173.
pub fn hosts_and_subsets(cx: &mut Context) {
    let mut reports = Vec::new();
    for (r, dr) in rules(cx) {
        if dr.host.is_empty() {
            continue;
        }
        let fqdn = cx.fqdn(&dr.host, r.ns());
        let known = if fqdn.starts_with('*') {
            cx.services.iter().any(|s| {
                trellis_api::host::host_matches(
                    &fqdn,
                    &format!("{}.{}.{}", s.name, s.namespace, cx.domain_suffix()),
                )
            }) || cx.of_kind(Kind::ServiceEntry).any(|se| match &se.object {
                Object::ServiceEntry(e) => e
                    .hosts
                    .iter()
                    .any(|h| trellis_api::host::hosts_overlap(&fqdn, h)),
                _ => false,
            })
        } else {
            cx.host_exists(&fqdn, r.ns())
        };
        if !known {
            reports.push((
                messages::DESTINATION_RULE_HOST_NOT_FOUND,
                r,
                "spec.host".to_string(),
                format!(
                    "The host {} defined in the DestinationRule does not match any services in the mesh.",
                    dr.host
                ),
            ));
            continue;
        }
        // Subset pods: only checkable for Kubernetes Services with a selector.
        let Some(svc) = cx.service_by_fqdn(&fqdn) else {
            continue;
        };
        if svc.selector.is_empty() {
            continue;
        }
        for (i, subset) in dr.subsets.iter().enumerate() {
            let mut sel = svc.selector.clone();
            sel.extend(subset.labels.clone());
            let topology = subset.labels.keys().any(|k| k.starts_with("topology."));
            let selects = cx
                .workloads_in(svc.namespace)
                .filter(|w| {
                    !topology
                        || w.node_name
                            .as_ref()
                            .is_some_and(|n| cx.nodes.contains_key(n))
                })
                .any(|w| {
                    let labels = augmented_labels(cx, w);
                    sel.iter().all(|(k, v)| labels.get(k) == Some(v))
                });
            // Topology labels come from the pod's Node: without the Node in the inputs, a subset
            // selecting by topology cannot be checked.
            let unknown = topology
                && !cx.workloads_in(svc.namespace).any(|w| {
                    w.node_name
                        .as_ref()
                        .is_some_and(|n| cx.nodes.contains_key(n))
                });
            if !selects && !unknown {
                reports.push((
                    messages::DESTINATION_RULE_SUBSET_NOT_SELECT_PODS,
                    r,
                    format!("spec.subsets[{i}]"),
                    format!(
                        "The Subset {} defined in the DestinationRule does not select any pods, which may lead to 503 UH (NoHealthyUpstream).",
                        subset.name
                    ),
                ));
            }
        }
    }
    for (kind, r, field, text) in reports {
        cx.report_at(kind, r, &field, text);
    }
}

/// TLS origination without a CA to verify the server. A `credentialName` supplies one only
/// when the rule has a workloadSelector (sidecars read credentials only then), as Istio checks.
/// A workload's labels as Istio sees them: the pod's labels plus the locality labels of its
/// Node (region, zone, subzone when set) and its hostname.
fn augmented_labels(
    cx: &Context,
    w: &crate::context::Workload,
) -> std::collections::BTreeMap<String, String> {
    let mut labels = w.labels.clone();
    if let Some(node) = w.node_name.as_ref() {
        if let Some(n) = cx.nodes.get(node) {
            for k in [
                "topology.kubernetes.io/region",
                "topology.kubernetes.io/zone",
                "topology.istio.io/subzone",
            ] {
                if let Some(v) = n.get(k).filter(|v| !v.is_empty()) {
                    labels.insert(k.to_string(), v.clone());
                }
            }
        }
        labels.insert("kubernetes.io/hostname".to_string(), node.clone());
    }
    labels
}

fn lacks_verification(tls: &ClientTLSSettings, selector: bool) -> bool {
    matches!(tls.mode(), ClientTLSMode::Simple | ClientTLSMode::Mutual)
        && tls.ca_certificates.as_deref().unwrap_or("").is_empty()
        && (!selector || tls.credential_name.as_deref().unwrap_or("").is_empty())
        && !tls.insecure_skip_verify.unwrap_or(false)
}

/// IST0128 / IST0129.
pub fn tls_verification(cx: &mut Context) {
    let mut reports = Vec::new();
    for (r, dr) in rules(cx) {
        let mut policies = Vec::new();
        if let Some(tp) = &dr.traffic_policy {
            policies.push(("spec.trafficPolicy".to_string(), tp));
        }
        for (i, s) in dr.subsets.iter().enumerate() {
            if let Some(tp) = &s.traffic_policy {
                policies.push((format!("spec.subsets[{i}].trafficPolicy"), tp));
            }
        }
        for (field, tp) in policies {
            if let Some(tls) = &tp.tls {
                if lacks_verification(tls, dr.workload_selector.is_some()) {
                    reports.push((
                        messages::NO_SERVER_CERTIFICATE_VERIFICATION_DESTINATION_LEVEL,
                        r,
                        format!("{field}.tls"),
                        format!(
                            "DestinationRule {} in namespace {} has TLS mode set to {} but no caCertificates are set to validate server identity for host: {}",
                            r.name,
                            r.ns(),
                            tls.mode().as_str(),
                            dr.host
                        ),
                    ));
                }
            }
            for (j, p) in tp.port_level_settings.iter().enumerate() {
                let Some(tls) = &p.tls else { continue };
                if lacks_verification(tls, dr.workload_selector.is_some()) {
                    let port = p.port.as_ref().map(|p| p.number).unwrap_or_default();
                    reports.push((
                        messages::NO_SERVER_CERTIFICATE_VERIFICATION_PORT_LEVEL,
                        r,
                        format!("{field}.portLevelSettings[{j}].tls"),
                        format!(
                            "DestinationRule {} in namespace {} has TLS mode set to {} but no caCertificates are set to validate server identity for host: {} at port {port}",
                            r.name,
                            r.ns(),
                            tls.mode().as_str(),
                            dr.host
                        ),
                    ));
                }
            }
        }
    }
    for (kind, r, field, text) in reports {
        cx.report_at(kind, r, &field, text);
    }
}
