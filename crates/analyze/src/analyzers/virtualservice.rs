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
use crate::messages;

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
            let Some(ports) = cx.host_ports(&fqdn, r.ns()) else {
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
                None if ports.len() > 1 && !mirror => {
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
        }
    }
    for (kind, r, field, text) in reports {
        cx.report_at(kind, r, &field, text);
    }
}

/// Whether a DestinationRule visible from `from_ns` defines `subset` for `fqdn`.
pub fn subset_defined(cx: &Context, fqdn: &str, subset: &str, from_ns: &str) -> bool {
    cx.of_kind(Kind::DestinationRule).any(|r| {
        let Object::DestinationRule(dr) = &r.object else {
            return false;
        };
        let dr_host = cx.fqdn(&dr.host, r.ns());
        exported_to(&dr.export_to, r.ns(), from_ns)
            && trellis_api::host::host_matches(&dr_host, fqdn)
            && dr.subsets.iter().any(|s| s.name == subset)
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

/// IST0109: two VirtualServices bound to the mesh gateway claim the same host.
pub fn conflicting_mesh_hosts(cx: &mut Context) {
    let mut by_host: BTreeMap<String, Vec<&Resource>> = BTreeMap::new();
    for (r, vs) in virtual_services(cx) {
        if !vs.gateways_or_mesh().contains(&"mesh") || vs.is_delegate() {
            continue;
        }
        let scope = if vs.export_to.iter().any(|e| e == ".") {
            r.ns().to_string()
        } else {
            "*".to_string()
        };
        let mut seen = Vec::new();
        for h in &vs.hosts {
            let fqdn = cx.fqdn(h, r.ns());
            if seen.contains(&fqdn) {
                continue;
            }
            seen.push(fqdn.clone());
            by_host
                .entry(format!("{scope}|{fqdn}"))
                .or_default()
                .push(r);
        }
    }
    let mut reports = Vec::new();
    for (key, list) in by_host {
        if list.len() < 2 {
            continue;
        }
        let host = key
            .split_once('|')
            .map(|(_, h)| h)
            .unwrap_or(&key)
            .to_string();
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

/// IST0130 / IST0131: a catch-all rule before other rules, and matches repeated from an
/// earlier rule.
pub fn unreachable_rules(cx: &mut Context) {
    let mut reports = Vec::new();
    for (r, vs) in virtual_services(cx) {
        let mut seen: Vec<(serde_json::Value, String)> = Vec::new();
        let last = vs.http.len().saturating_sub(1);
        for (i, route) in vs.http.iter().enumerate() {
            let rule = route.name.clone().unwrap_or_else(|| format!("#{i}"));
            if route.matches.is_empty() {
                if i != last {
                    reports.push((
                        messages::VIRTUAL_SERVICE_UNREACHABLE_RULE,
                        r,
                        format!("spec.http[{i}]"),
                        format!("VirtualService rule {rule} not used (only the last rule can have no matches)."),
                    ));
                }
                continue;
            }
            let mut dups = Vec::new();
            for (j, m) in route.matches.iter().enumerate() {
                let mut key = m.clone();
                key.name = None;
                let key = serde_json::to_value(&key).unwrap_or_default();
                if let Some((_, earlier)) = seen.iter().find(|(k, _)| *k == key) {
                    let name = m.name.clone().unwrap_or_else(|| format!("#{j}"));
                    dups.push((j, name, earlier.clone()));
                } else {
                    seen.push((key, rule.clone()));
                }
            }
            if !dups.is_empty() && dups.len() == route.matches.len() {
                reports.push((
                    messages::VIRTUAL_SERVICE_UNREACHABLE_RULE,
                    r,
                    format!("spec.http[{i}]"),
                    format!(
                        "VirtualService rule {rule} not used (all matches used by prior rules)."
                    ),
                ));
            } else {
                for (j, name, earlier) in dups {
                    reports.push((
                        messages::VIRTUAL_SERVICE_INEFFECTIVE_MATCH,
                        r,
                        format!("spec.http[{i}].match[{j}]"),
                        format!("VirtualService rule {rule} match {name} is not used (duplicate/overlapping match in rule {earlier})."),
                    ));
                }
            }
        }
    }
    for (r, vs) in virtual_services(cx) {
        if let Some(first) = vs.tcp.iter().position(|t| t.matches.is_empty()) {
            if first + 1 < vs.tcp.len() {
                reports.push((
                    messages::VIRTUAL_SERVICE_UNREACHABLE_RULE,
                    r,
                    format!("spec.tcp[{first}]"),
                    format!("VirtualService rule tcp #{first} not used (only the last rule can have no matches)."),
                ));
            }
        }
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
