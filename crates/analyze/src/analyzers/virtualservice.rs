//! VirtualServices: references to gateways, hosts, ports and subsets (IST0101, IST0112),
//! mesh VirtualServices that claim the same host (IST0109), rules and matches that can never
//! fire (IST0130, IST0131), hosts the bound Gateway does not serve (IST0132), and JWT-claim
//! routing without a RequestAuthentication on the gateway (IST0149).

use std::collections::BTreeMap;

use trellis_api::host::{hosts_overlap, split_namespaced_host};
use trellis_api::networking::{Destination, VirtualService};
use trellis_api::resource::{Kind, Object};
use trellis_api::Resource;

use crate::context::{exported_to, Context};
use crate::messages::{self, MessageType};

fn virtual_services<'a>(cx: &Context<'a>) -> Vec<(&'a Resource, &'a VirtualService)> {
    cx.of_kind(Kind::VirtualService)
        .filter_map(|r| match &r.object {
            Object::VirtualService(vs) => Some((r, vs.as_ref())),
            _ => None,
        })
        .collect()
}

/// Every destination of a VirtualService with its field path, and whether it is a mirror.
fn destinations(vs: &VirtualService) -> Vec<(String, &Destination, bool)> {
    let mut out = Vec::new();
    for (i, h) in vs.http.iter().enumerate() {
        for (j, d) in h.route.iter().enumerate() {
            if let Some(dest) = &d.destination {
                out.push((
                    format!("spec.http[{i}].route[{j}].destination"),
                    dest,
                    false,
                ));
            }
        }
        if let Some(m) = &h.mirror {
            out.push((format!("spec.http[{i}].mirror"), m, true));
        }
        for (j, m) in h.mirrors.iter().enumerate() {
            if let Some(dest) = &m.destination {
                out.push((
                    format!("spec.http[{i}].mirrors[{j}].destination"),
                    dest,
                    true,
                ));
            }
        }
    }
    for (i, t) in vs.tcp.iter().enumerate() {
        for (j, d) in t.route.iter().enumerate() {
            if let Some(dest) = &d.destination {
                out.push((format!("spec.tcp[{i}].route[{j}].destination"), dest, false));
            }
        }
    }
    for (i, t) in vs.tls.iter().enumerate() {
        for (j, d) in t.route.iter().enumerate() {
            if let Some(dest) = &d.destination {
                out.push((format!("spec.tls[{i}].route[{j}].destination"), dest, false));
            }
        }
    }
    out
}

/// IST0101 (host, host:port, mirror host, subset) and IST0112.
pub fn destinations_exist(cx: &mut Context) {
    let mut reports = Vec::new();
    for (r, vs) in virtual_services(cx) {
        for (field, dest, mirror) in destinations(vs) {
            if dest.host.is_empty() || dest.host.contains('*') {
                continue;
            }
            let fqdn = cx.fqdn(&dest.host, r.ns());
            // The destination must be visible where the VirtualService is used: its own
            // namespace, or each namespace it is exported to.
            let visible_everywhere = export_namespaces(vs, r.ns())
                .iter()
                .all(|ns| cx.host_ports(&fqdn, ns).is_some());
            if let Some(subset) = &dest.subset {
                if !subset_defined(cx, &fqdn, subset, r.ns()) {
                    reports.push((
                        messages::REFERENCED_RESOURCE_NOT_FOUND,
                        r,
                        format!("{field}.subset"),
                        format!(
                            "Referenced host+subset in destinationrule not found: \"{}+{subset}\"",
                            dest.host
                        ),
                    ));
                }
            }
            let ports = cx.host_ports(&fqdn, r.ns()).filter(|_| visible_everywhere);
            let Some(ports) = ports else {
                let what = if mirror { "mirror host" } else { "host" };
                reports.push((
                    messages::REFERENCED_RESOURCE_NOT_FOUND,
                    r,
                    format!("{field}.host"),
                    format!("Referenced {what} not found: {:?}", dest.host),
                ));
                continue;
            };
            match dest.port.as_ref().map(|p| p.number).filter(|n| *n != 0) {
                None if ports.len() > 1 => {
                    let list: Vec<String> = ports.iter().map(|p| p.to_string()).collect();
                    reports.push((
                        messages::VIRTUAL_SERVICE_DESTINATION_PORT_SELECTOR_REQUIRED,
                        r,
                        field.clone(),
                        format!(
                            "This VirtualService routes to a service {:?} that exposes multiple ports [{}]. Specifying a port in the destination is required to disambiguate.",
                            dest.host,
                            list.join(" ")
                        ),
                    ));
                }
                Some(n) if !ports.contains(&n) => reports.push((
                    messages::REFERENCED_RESOURCE_NOT_FOUND,
                    r,
                    format!("{field}.port"),
                    format!("Referenced host:port not found: \"{}:{n}\"", dest.host),
                )),
                _ => {}
            }
        }
    }
    for (kind, r, field, text) in reports {
        cx.report_at(kind, r, &field, text);
    }
}

/// The namespaces a VirtualService applies in: its `exportTo` (`.` is its own namespace), or
/// its own namespace when exported everywhere.
fn export_namespaces(vs: &VirtualService, own: &str) -> Vec<String> {
    if vs.export_to.is_empty() || vs.export_to.iter().any(|e| e == "*") {
        return vec![own.to_string()];
    }
    vs.export_to
        .iter()
        .map(|e| if e == "." { own.to_string() } else { e.clone() })
        .collect()
}

/// IST0140: a gateway-bound VirtualService routes to a host without a subset while a mesh
/// VirtualService for that host routes by subset; the subset routing does not apply to the
/// gateway's requests.
pub fn ingress_subset_routing(cx: &mut Context) {
    let all = virtual_services(cx);
    let mut with_subsets: Vec<(&Resource, Vec<&str>)> = Vec::new();
    for (r, vs) in &all {
        let hosts: Vec<&str> = vs
            .http
            .iter()
            .flat_map(|h| h.route.iter())
            .filter_map(|d| d.destination.as_ref())
            .filter(|d| d.subset.as_deref().is_some_and(|s| !s.is_empty()))
            .filter(|d| vs.hosts.contains(&d.host))
            .map(|d| d.host.as_str())
            .collect();
        if !hosts.is_empty() {
            with_subsets.push((r, hosts));
        }
    }
    let mut reports = Vec::new();
    for (r, vs) in &all {
        if vs.gateways.is_empty() {
            continue;
        }
        for (i, h) in vs.http.iter().enumerate() {
            for (j, d) in h.route.iter().enumerate() {
                let Some(dest) = &d.destination else { continue };
                if dest.subset.as_deref().is_some_and(|s| !s.is_empty()) {
                    continue;
                }
                for (other, hosts) in &with_subsets {
                    if hosts.contains(&dest.host.as_str()) {
                        reports.push((
                            *r,
                            format!("spec.http[{i}].route[{j}].destination.host"),
                            format!(
                                "Subset in virtual service {} has no effect on ingress gateway {} requests",
                                other.key(),
                                r.key()
                            ),
                        ));
                    }
                }
            }
        }
    }
    for (r, field, text) in reports {
        cx.report_at(messages::INGRESS_ROUTE_RULES_NOT_AFFECTED, r, &field, text);
    }
}

/// Whether a DestinationRule visible from `from_ns` defines `subset` for `fqdn`.
pub fn subset_defined(cx: &Context, fqdn: &str, subset: &str, from_ns: &str) -> bool {
    if fqdn.starts_with('*') {
        return false; // a wildcard destination names no one service (and is not checked)
    }
    cx.destination_rules_for(fqdn).any(|r| {
        let Object::DestinationRule(dr) = &r.object else {
            return false;
        };
        exported_to(&dr.export_to, r.ns(), from_ns) && dr.subsets.iter().any(|s| s.name == subset)
    })
}

/// IST0101 for gateways that do not exist, IST0132 for hosts a bound gateway does not serve.
pub fn gateways(cx: &mut Context) {
    let mut reports = Vec::new();
    for (r, vs) in virtual_services(cx) {
        for (i, gw) in vs.gateways.iter().enumerate() {
            if gw == "mesh" {
                continue;
            }
            if is_internal_gateway_reference(gw) {
                reports.push((
                    messages::REFERENCED_INTERNAL_GATEWAY,
                    format!("spec.gateways[{i}]"),
                    format!(
                        "Gateway reference in VirtualService {} is to an implementation-generated internal Gateway: {gw}.",
                        r.key()
                    ),
                    r,
                ));
                continue;
            }
            let (ns, name) = match gw.split_once('/') {
                Some((ns, name)) => (ns, name),
                None => (r.ns(), gw.as_str()),
            };
            let Some(g) = cx.gateway(ns, name) else {
                reports.push((
                    messages::REFERENCED_RESOURCE_NOT_FOUND,
                    format!("spec.gateways[{i}]"),
                    format!("Referenced gateway not found: {gw:?}"),
                    r,
                ));
                // As Istio: a missing gateway serves none of the hosts either.
                if !vs.hosts.is_empty() {
                    reports.push((
                        messages::VIRTUAL_SERVICE_HOST_NOT_FOUND_IN_GATEWAY,
                        format!("spec.gateways[{i}]"),
                        format!(
                            "one or more host [{}] defined in VirtualService {} not found in Gateway {ns}/{name}.",
                            vs.hosts.join(" "),
                            r.key(),
                        ),
                        r,
                    ));
                }
                continue;
            };
            let Object::Gateway(gateway) = &g.object else {
                continue;
            };
            let served = gateway
                .servers
                .iter()
                .flat_map(|s| s.hosts.iter())
                .any(|gh| {
                    let (hns, h) = split_namespaced_host(gh);
                    let ns_ok = hns == "*" || (hns == "." && g.ns() == r.ns()) || hns == r.ns();
                    ns_ok && vs.hosts.iter().any(|vh| hosts_overlap(h, vh))
                });
            if !served && !vs.hosts.is_empty() {
                reports.push((
                    messages::VIRTUAL_SERVICE_HOST_NOT_FOUND_IN_GATEWAY,
                    format!("spec.gateways[{i}]"),
                    format!(
                        "one or more host [{}] defined in VirtualService {} not found in Gateway {}.",
                        vs.hosts.join(" "),
                        r.key(),
                        g.key()
                    ),
                    r,
                ));
            }
        }
    }
    for (kind, field, text, r) in reports {
        cx.report_at(kind, r, &field, text);
    }
}

/// Whether a VirtualService gateway names one of the Gateways Istio generates internally for a
/// Kubernetes Gateway API gateway (`<gateway>-istio-autogenerated-k8s-gateway-<listener>`, or
/// with `~` separators in newer releases). Those are implementation details, not references.
fn is_internal_gateway_reference(gateway: &str) -> bool {
    let name = gateway.split_once('/').map_or(gateway, |(_, n)| n);
    name.contains("-istio-autogenerated-k8s-gateway-")
        || name.contains("~istio-autogenerated-k8s-gateway~")
}

/// Where a VirtualService is visible: everywhere (`None`) or in the listed namespaces.
fn visibility(vs: &VirtualService, own: &str) -> Option<Vec<String>> {
    if vs.export_to.is_empty() || vs.export_to.iter().any(|e| e == "*") {
        return None;
    }
    Some(export_namespaces(vs, own))
}

/// IST0109: two VirtualServices bound to the mesh gateway, visible in a common namespace, claim
/// overlapping hosts (wildcards included).
pub fn conflicting_mesh_hosts(cx: &mut Context) {
    type MeshVs<'a> = (&'a Resource, Vec<String>, Option<Vec<String>>);
    let mesh: Vec<MeshVs> = virtual_services(cx)
        .into_iter()
        .filter(|(_, vs)| vs.gateways_or_mesh().contains(&"mesh") && !vs.is_delegate())
        .map(|(r, vs)| {
            let mut hosts: Vec<String> = vs.hosts.iter().map(|h| cx.fqdn(h, r.ns())).collect();
            hosts.dedup();
            (r, hosts, visibility(vs, r.ns()))
        })
        .collect();
    // host -> VirtualServices, in input order
    let mut conflicts: BTreeMap<String, Vec<&Resource>> = BTreeMap::new();
    for (i, (ra, ha, va)) in mesh.iter().enumerate() {
        for (rb, hb, vb) in mesh.iter().skip(i + 1) {
            let shared = match (va, vb) {
                (None, _) | (_, None) => true,
                (Some(a), Some(b)) => a.iter().any(|n| b.contains(n)),
            };
            if !shared {
                continue;
            }
            for h in ha {
                if let Some(other) = hb.iter().find(|o| hosts_overlap(h, o)) {
                    let host = if h.starts_with('*') {
                        other.clone()
                    } else {
                        h.clone()
                    };
                    let list = conflicts.entry(host).or_default();
                    for r in [*ra, *rb] {
                        if !list.iter().any(|x| std::ptr::eq(*x, r)) {
                            list.push(r);
                        }
                    }
                }
            }
        }
    }
    let mut reports = Vec::new();
    for (host, list) in conflicts {
        let names: Vec<String> = list.iter().map(|r| r.key()).collect();
        for r in list {
            reports.push((
                r,
                format!(
                    "The VirtualServices {} associated with mesh gateway define the same host {host} which can lead to undefined behavior. This can be fixed by merging the conflicting VirtualServices into a single resource.",
                    names.join(",")
                ),
            ));
        }
    }
    for (r, text) in reports {
        cx.report_at(
            messages::CONFLICTING_MESH_GATEWAY_VIRTUAL_SERVICE_HOSTS,
            r,
            "spec.hosts",
            text,
        );
    }
}

/// One route rule's matches, as JSON objects without their `name`.
struct RuleMatches {
    /// Rule label in messages: its name, else `#<index>`.
    label: String,
    field: String,
    matches: Vec<(String, serde_json::Map<String, serde_json::Value>)>,
}

fn without_name(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    let mut m = match v {
        serde_json::Value::Object(m) => m,
        _ => serde_json::Map::new(),
    };
    m.remove("name");
    m
}

/// An earlier `uri.prefix` match covers a later one with a longer prefix when the earlier
/// match's other conditions are all among the later one's.
fn prefix_covers(
    earlier: &serde_json::Map<String, serde_json::Value>,
    later: &serde_json::Map<String, serde_json::Value>,
) -> bool {
    let prefix = |m: &serde_json::Map<String, serde_json::Value>| {
        m.get("uri")?.get("prefix")?.as_str().map(str::to_string)
    };
    let (Some(p1), Some(p2)) = (prefix(earlier), prefix(later)) else {
        return false;
    };
    p1 != p2
        && p2.starts_with(&p1)
        && earlier
            .iter()
            .filter(|(k, _)| k.as_str() != "uri")
            .all(|(k, v)| later.get(k) == Some(v))
}

/// IST0130 / IST0131 over one route list (http, tcp or tls): a match-less rule before others,
/// rules all of whose matches repeat earlier ones, and matches repeating (or, for URI prefixes,
/// covered by) an earlier match.
fn unreachable_in(rules: &[RuleMatches], kind: &str, out: &mut Vec<(MessageType, String, String)>) {
    let mut seen: Vec<(serde_json::Map<String, serde_json::Value>, String)> = Vec::new();
    let last = rules.len().saturating_sub(1);
    for (i, rule) in rules.iter().enumerate() {
        if rule.matches.is_empty() {
            if i != last {
                out.push((
                    messages::VIRTUAL_SERVICE_UNREACHABLE_RULE,
                    rule.field.clone(),
                    format!(
                        "VirtualService rule {}{} not used (only the last rule can have no matches).",
                        kind, rule.label
                    ),
                ));
            }
            continue;
        }
        let mut dups = 0;
        let mut this_rule: Vec<&serde_json::Map<String, serde_json::Value>> = Vec::new();
        for (j, (name, m)) in rule.matches.iter().enumerate() {
            let exact = seen.iter().find(|(k, _)| k == m).map(|(_, l)| l.clone());
            let covered = exact.clone().or_else(|| {
                seen.iter()
                    .find(|(k, _)| prefix_covers(k, m))
                    .map(|(_, l)| l.clone())
                    .or_else(|| {
                        this_rule
                            .iter()
                            .any(|k| prefix_covers(k, m))
                            .then(|| rule.label.clone())
                    })
            });
            if exact.is_some() {
                dups += 1;
            }
            if let Some(earlier) = covered {
                out.push((
                    messages::VIRTUAL_SERVICE_INEFFECTIVE_MATCH,
                    format!("{}.match[{j}]", rule.field),
                    format!(
                        "VirtualService rule {}{} match {name} is not used (duplicate/overlapping match in rule {}{earlier}).",
                        kind, rule.label, kind
                    ),
                ));
            }
            this_rule.push(m);
        }
        if dups == rule.matches.len() {
            out.push((
                messages::VIRTUAL_SERVICE_UNREACHABLE_RULE,
                rule.field.clone(),
                format!(
                    "VirtualService rule {}{} not used (all matches used by prior rules).",
                    kind, rule.label
                ),
            ));
        }
        for (_, m) in &rule.matches {
            if !seen.iter().any(|(k, _)| k == m) {
                seen.push((m.clone(), rule.label.clone()));
            }
        }
    }
}

fn rule_matches<M: serde::Serialize>(
    field: String,
    label: String,
    matches: &[M],
    name: impl Fn(&M) -> Option<String>,
) -> RuleMatches {
    RuleMatches {
        label,
        field,
        matches: matches
            .iter()
            .enumerate()
            .map(|(j, m)| {
                let n = name(m).unwrap_or_else(|| format!("#{j}"));
                (n, without_name(serde_json::to_value(m).unwrap_or_default()))
            })
            .collect(),
    }
}

/// IST0130 / IST0131 for http, tcp and tls routes.
pub fn unreachable_rules(cx: &mut Context) {
    let mut reports = Vec::new();
    for (r, vs) in virtual_services(cx) {
        let mut out = Vec::new();
        let http: Vec<RuleMatches> = vs
            .http
            .iter()
            .enumerate()
            .map(|(i, h)| {
                rule_matches(
                    format!("spec.http[{i}]"),
                    h.name.clone().unwrap_or_else(|| format!("#{i}")),
                    &h.matches,
                    |m| m.name.clone(),
                )
            })
            .collect();
        unreachable_in(&http, "", &mut out);
        let tcp: Vec<RuleMatches> = vs
            .tcp
            .iter()
            .enumerate()
            .map(|(i, t)| {
                rule_matches(
                    format!("spec.tcp[{i}]"),
                    format!("#{i}"),
                    &t.matches,
                    |_| None,
                )
            })
            .collect();
        unreachable_in(&tcp, "tcp ", &mut out);
        let tls: Vec<RuleMatches> = vs
            .tls
            .iter()
            .enumerate()
            .map(|(i, t)| {
                rule_matches(
                    format!("spec.tls[{i}]"),
                    format!("#{i}"),
                    &t.matches,
                    |_| None,
                )
            })
            .collect();
        unreachable_in(&tls, "tls ", &mut out);
        reports.extend(out.into_iter().map(|(k, f, t)| (k, r, f, t)));
    }
    for (kind, r, field, text) in reports {
        cx.report_at(kind, r, &field, text);
    }
}

/// IST0149: routing on `@request.auth.claims.*` headers at a gateway whose pods no
/// RequestAuthentication covers (the claims would never be available).
pub fn jwt_claim_routing(cx: &mut Context) {
    let root = cx.mesh.root_namespace.clone();
    let mut reports = Vec::new();
    for (r, vs) in virtual_services(cx) {
        let Some(key) = vs
            .http
            .iter()
            .flat_map(|h| h.matches.iter())
            .flat_map(|m| m.headers.keys().chain(m.without_headers.keys()))
            .find(|k| k.starts_with("@request.auth.claims"))
        else {
            continue;
        };
        for gw in &vs.gateways {
            if gw == "mesh" {
                continue;
            }
            let (ns, name) = gw.split_once('/').unwrap_or((r.ns(), gw.as_str()));
            let Some(g) = cx.gateway(ns, name) else {
                continue;
            };
            let Object::Gateway(gateway) = &g.object else {
                continue;
            };
            for w in cx.workloads_matching(None, &gateway.selector) {
                let covered = cx.of_kind(Kind::RequestAuthentication).any(|ra| {
                    let Object::RequestAuthentication(p) = &ra.object else {
                        return false;
                    };
                    let in_scope = ra.ns() == w.namespace || ra.ns() == root;
                    in_scope && p.selector.as_ref().is_none_or(|s| s.matches(&w.labels))
                });
                if !covered {
                    reports.push((
                        r,
                        format!(
                            "The virtual service uses the JWT claim based routing (key: {key}) but found no request authentication for the gateway ({}) pod ({}). The request authentication must first be applied for the gateway pods to validate the JWT token and make the claims available for routing.",
                            g.key(),
                            w.resource.key()
                        ),
                    ));
                }
            }
        }
    }
    for (r, text) in reports {
        cx.report(
            messages::JWT_CLAIM_BASED_ROUTING_WITHOUT_REQUEST_AUTHN,
            r,
            text,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_gateway_references() {
        // Older releases join gateway, marker and listener with '-', newer ones with '~'.
        assert!(is_internal_gateway_reference(
            "istio-ingress/gateway-istio-autogenerated-k8s-gateway-foo"
        ));
        assert!(is_internal_gateway_reference(
            "gateway~istio-autogenerated-k8s-gateway~http"
        ));
        assert!(!is_internal_gateway_reference("istio-system/ingress"));
        assert!(!is_internal_gateway_reference("mesh"));
        // The marker must be a whole segment of the name, and only the name counts.
        assert!(!is_internal_gateway_reference(
            "istio-autogenerated-k8s-gateway/gw"
        ));
    }
}
