//! Gateways: selectors that match no workload (IST0101), ports the gateway's Service does not
//! expose (IST0162), credential secrets that do not exist (IST0101) or are not usable
//! (IST0161), gateways claiming the same port and hosts (IST0145), and one certificate shared
//! by several gateways (IST0138).

use std::collections::{BTreeMap, BTreeSet};

use trellis_api::host::{hosts_overlap, split_namespaced_host};
use trellis_api::networking::Gateway;
use trellis_api::resource::{Kind, Object};
use trellis_api::Resource;

use super::security::selector_string;
use crate::context::Context;
use crate::messages;

fn gateways<'a>(cx: &Context<'a>) -> Vec<(&'a Resource, &'a Gateway)> {
    cx.of_kind(Kind::Gateway)
        .filter_map(|r| match &r.object {
            Object::Gateway(g) => Some((r, g.as_ref())),
            _ => None,
        })
        .collect()
}

/// Credential names a server uses (credentialName and credentialNames).
fn credentials(g: &Gateway) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (i, s) in g.servers.iter().enumerate() {
        if let Some(tls) = &s.tls {
            if let Some(c) = &tls.credential_name {
                out.push((i, c.clone()));
            }
            out.extend(tls.credential_names.iter().map(|c| (i, c.clone())));
        }
    }
    out
}

/// IST0101 (selector, credentialName), IST0161 and IST0162.
pub fn gateway_workloads(cx: &mut Context) {
    let mut reports = Vec::new();
    for (r, g) in gateways(cx) {
        let pods: Vec<_> = cx.workloads_matching(None, &g.selector).collect();
        if pods.is_empty() {
            reports.push((
                messages::REFERENCED_RESOURCE_NOT_FOUND,
                r,
                "spec.selector".to_string(),
                format!(
                    "Referenced selector not found: {:?}",
                    selector_string(&g.selector)
                ),
            ));
            continue;
        }
        // Ports reachable through the Services that select the gateway's pods: the Service
        // port or its target port (Istio accepts either on the Gateway).
        let mut ports: BTreeSet<u32> = BTreeSet::new();
        let mut namespaces: BTreeSet<&str> = BTreeSet::new();
        for w in &pods {
            namespaces.insert(w.namespace);
            for svc in cx.services_selecting(w) {
                for p in svc.ports.iter().filter(|p| p.protocol == "TCP") {
                    ports.insert(p.port as u32);
                    if let Ok(t) = p.target_port.parse::<u32>() {
                        ports.insert(t);
                    } else if let Some((n, _)) =
                        w.ports.iter().find(|(_, name)| *name == p.target_port)
                    {
                        ports.insert(*n as u32);
                    }
                }
            }
        }
        // Istio reports every server port no selecting Service offers, also when no Service
        // selects the pods at all.
        for (i, s) in g.servers.iter().enumerate() {
            let Some(port) = &s.port else { continue };
            if !ports.contains(&port.number) {
                reports.push((
                    messages::GATEWAY_PORT_NOT_DEFINED_ON_SERVICE,
                    r,
                    format!("spec.servers[{i}].port"),
                    format!(
                        "The gateway is listening on a target port (port {}) that is not defined in the Service associated with its workload instances (Pod selector {}). If you need to access the gateway port through the gateway Service, it will not be available.",
                        port.number,
                        selector_string(&g.selector)
                    ),
                ));
            }
        }
        // Credentials live in the namespace of the gateway's pods.
        for (i, cred) in credentials(g) {
            if cred.contains("://") {
                continue; // sds:// or other provider references
            }
            let missing = namespaces
                .iter()
                .any(|ns| !cx.secrets.contains(&format!("{ns}/{cred}")));
            if missing {
                reports.push((
                    messages::REFERENCED_RESOURCE_NOT_FOUND,
                    r,
                    format!("spec.servers[{i}].tls.credentialName"),
                    format!("Referenced credentialName not found: {cred:?}"),
                ));
            } else if namespaces.iter().any(|ns| secret_unusable(cx, ns, &cred)) {
                reports.push((
                    messages::INVALID_GATEWAY_CREDENTIAL,
                    r,
                    format!("spec.servers[{i}].tls.credentialName"),
                    format!(
                        "The credential referenced by the Gateway {} in namespace {} is invalid, which can cause the traffic not to work as expected.",
                        r.name,
                        r.ns()
                    ),
                ));
            }
        }
    }
    for (kind, r, field, text) in reports {
        cx.report_at(kind, r, &field, text);
    }
}

/// A Secret that exists but holds no certificate and key in any layout Istio reads
/// (`tls.crt`/`tls.key`, `cert`/`key`), or whose certificate is not PEM.
fn secret_unusable(cx: &Context, ns: &str, name: &str) -> bool {
    let Some(r) = cx
        .resources
        .iter()
        .find(|r| r.kind == Kind::Secret && r.ns() == ns && r.name == name)
    else {
        return false; // produced by a cert-manager Certificate: nothing to check yet
    };
    let Object::Secret(s) = &r.object else {
        return false;
    };
    let mut keys: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for (k, v) in s.data.iter().flatten() {
        keys.insert(k.clone(), v.0.clone());
    }
    for (k, v) in s.string_data.iter().flatten() {
        keys.insert(k.clone(), v.clone().into_bytes());
    }
    let pair = [("tls.crt", "tls.key"), ("cert", "key")]
        .iter()
        .find(|(c, k)| keys.contains_key(*c) && keys.contains_key(*k));
    match pair {
        None => true,
        Some((c, k)) => {
            let key = String::from_utf8_lossy(&keys[*k]);
            !key.contains("PRIVATE KEY-----") || !certificate_valid_now(&keys[*c])
        }
    }
}

/// A PEM certificate that parses and whose validity period includes now.
fn certificate_valid_now(pem: &[u8]) -> bool {
    let Ok((_, pem)) = x509_parser::pem::parse_x509_pem(pem) else {
        return false;
    };
    let Ok(cert) = pem.parse_x509() else {
        return false;
    };
    cert.validity().is_valid()
}

/// IST0145: two Gateways selecting the same workloads that claim the same port with
/// overlapping hosts.
pub fn conflicting_gateways(cx: &mut Context) {
    let gws = gateways(cx);
    let mut reports = Vec::new();
    for (i, (ra, ga)) in gws.iter().enumerate() {
        for (j, (rb, gb)) in gws.iter().enumerate() {
            if i == j
                || !(is_subset(&ga.selector, &gb.selector) || is_subset(&gb.selector, &ga.selector))
            {
                continue;
            }
            for sa in &ga.servers {
                for sb in &gb.servers {
                    let (Some(pa), Some(pb)) = (&sa.port, &sb.port) else {
                        continue;
                    };
                    if pa.number != pb.number {
                        continue;
                    }
                    let mut overlap: Vec<String> = Vec::new();
                    for ha in &sa.hosts {
                        for hb in &sb.hosts {
                            let (_, ha2) = split_namespaced_host(ha);
                            let (_, hb2) = split_namespaced_host(hb);
                            if hosts_overlap(ha2, hb2) && !overlap.contains(&ha2.to_string()) {
                                overlap.push(ha2.to_string());
                            }
                        }
                    }
                    if !overlap.is_empty() {
                        reports.push((
                            *ra,
                            format!(
                                "Conflict with gateways {} (workload selector {}, port {}, hosts {}).",
                                rb.key(),
                                selector_string(&ga.selector),
                                pa.number,
                                overlap.join(", ")
                            ),
                        ));
                    }
                }
            }
        }
    }
    reports.dedup_by(|a, b| a.0.key() == b.0.key() && a.1 == b.1);
    for (r, text) in reports {
        cx.report_at(messages::CONFLICTING_GATEWAYS, r, "spec.servers", text);
    }
}

/// Whether every label of `a` is in `b` (`a` selects at least the pods `b` selects).
fn is_subset(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> bool {
    a.iter().all(|(k, v)| b.get(k) == Some(v))
}

/// IST0138: the same credential on several Gateways. As Istio, a Gateway is reported when
/// another Gateway uses one of its credential names and selects a subset of its pods (its
/// selector includes this Gateway's selector).
pub fn duplicate_certificates(cx: &mut Context) {
    let gws = gateways(cx);
    let creds: Vec<BTreeSet<String>> = gws
        .iter()
        .map(|(_, g)| credentials(g).into_iter().map(|(_, c)| c).collect())
        .collect();
    let mut reports = Vec::new();
    for (i, (ra, ga)) in gws.iter().enumerate() {
        let mut names: BTreeSet<String> = BTreeSet::new();
        for (j, (rb, gb)) in gws.iter().enumerate() {
            if i != j
                && is_subset(&ga.selector, &gb.selector)
                && creds[i].intersection(&creds[j]).next().is_some()
            {
                names.insert(rb.key());
            }
        }
        if !names.is_empty() {
            names.insert(ra.key());
            let names: Vec<String> = names.into_iter().collect();
            reports.push((
                *ra,
                format!(
                    "Duplicate certificate in multiple gateways [{}] may cause 404s if clients re-use HTTP2 connections.",
                    names.join(" ")
                ),
            ));
        }
    }
    for (r, text) in reports {
        cx.report(messages::GATEWAY_DUPLICATE_CERTIFICATE, r, text);
    }
}
