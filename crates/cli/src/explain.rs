//! `trellis explain`: what the mesh does with one request, step by step, offline from the
//! manifests, with the same `model` code the proxies run: the listener and Gateway server,
//! the virtual host, which VirtualService rule matches (and why the ones before it do not),
//! the weighted destinations with their subsets, endpoints and DestinationRule policy, the
//! JWT verdict, which AuthorizationPolicy rule decides, the PeerAuthentication mode at the
//! destination, and the status the caller gets.
//!
//! Statuses follow the proxy's filter order: a path the normalizer refuses is 400; a JWT
//! that fails is 401; authorization (before routing, as Envoy's RBAC filter) 403; no virtual
//! host or route 404 (NR); a destination without endpoints 503 (UH); then the destination's
//! sidecar: mTLS mode, its own JWT rules and authorization.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context as _};
use base64::Engine as _;
use http::{HeaderMap, HeaderName, HeaderValue};
use serde::Serialize;
use serde_json::{json, Value};
use trellis_api::load::{LoadOptions, ResourceSet};
use trellis_api::security::MtlsMode;
use trellis_api::{MeshConfig, Object, Resource};
use trellis_model::authn::{JwksSource, JwtPolicy, TokenLocation};
use trellis_model::authz::{AuthzPolicies, AuthzRequest, AuthzTarget, Decision};
use trellis_model::cluster::DestinationRules;
use trellis_model::compile::{compile, find_target, ProxyTarget};
use trellis_model::config::{
    ChainHandler, Cluster, EndpointAddress, FilterChain, LbPolicy, Listener, ProxyConfig,
    ProxyKind, RequestMatch, RouteAction, StringMatcher, UpstreamTls,
};
use trellis_model::normalize::{normalize_path, Normalization};
use trellis_model::peer_authn::PeerAuthnPolicy;
use trellis_model::registry::{spiffe_id, ServiceRegistry};
use trellis_model::route::{request_matches, select_virtual_host, string_matches, RequestInfo};

#[derive(clap::Args, Debug)]
pub struct ExplainArgs {
    /// HTTP method (GET, POST, ...).
    pub method: String,
    /// The request URL: `http://dev.alphintra.local/api/orders`, `https://...`, or for a
    /// sidecar `http://auth-service.alphintra:8080/health`, `tcp://redis.alphintra.internal:6379`.
    pub url: String,

    /// Kustomize directories to render.
    #[arg(short = 'k', long = "kustomize", value_name = "DIR")]
    pub kustomize: Vec<PathBuf>,

    /// Manifest files or directories.
    #[arg(short = 'f', long = "filename", value_name = "PATH")]
    pub files: Vec<PathBuf>,

    /// The request leaves this workload through its sidecar (`ns/name` or `name`).
    #[arg(long, value_name = "WORKLOAD", conflicts_with = "external")]
    pub from: Option<String>,

    /// The request comes from outside the mesh, through the ingress gateway (the default).
    #[arg(long)]
    pub external: bool,

    /// The gateway it enters through: a Gateway resource or a gateway workload, `ns/name`.
    #[arg(long, value_name = "NS/NAME")]
    pub gateway: Option<String>,

    /// A request header, `name: value`. Repeatable.
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,

    /// A JWT, sent as `Authorization: Bearer <token>`.
    #[arg(long, value_name = "TOKEN")]
    pub jwt: Option<String>,

    /// A JSON Web Key Set to verify the token's signature with (offline, keys behind a
    /// `jwksUri` are not fetched).
    #[arg(long, value_name = "FILE")]
    pub jwks: Option<PathBuf>,

    /// Output: text or json.
    #[arg(short = 'o', long = "output", default_value = "text")]
    pub output: String,

    /// Namespace for namespaced resources that name none.
    #[arg(short = 'n', long = "namespace", default_value = "default")]
    pub namespace: String,
}

/// One step of the explanation.
#[derive(Debug, Serialize)]
struct Step {
    title: String,
    lines: Vec<String>,
    #[serde(skip_serializing_if = "Value::is_null")]
    data: Value,
}

/// The whole explanation (`-o json`).
#[derive(Debug, Serialize)]
struct Explanation {
    request: Value,
    proxy: Value,
    steps: Vec<Step>,
    status: u16,
    /// Envoy-style response flag (`NR`, `UH`) or the deciding filter (`RBAC`, `JWT`).
    #[serde(skip_serializing_if = "Option::is_none")]
    flag: Option<String>,
    result: String,
    warnings: Vec<String>,
}

struct Url {
    scheme: String,
    host: String,
    port: u16,
    /// Path and query.
    target: String,
}

fn parse_url(url: &str) -> anyhow::Result<Url> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| anyhow!("invalid URL {url:?}: expected http://host[:port]/path"))?;
    let scheme = scheme.to_ascii_lowercase();
    let (authority, target) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let default_port = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        "tcp" => 0,
        s => bail!("unsupported scheme {s:?}: use http, https or tcp"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => (
            h.to_string(),
            p.parse()
                .map_err(|_| anyhow!("invalid port {p:?} in {url:?}"))?,
        ),
        _ => (authority.to_string(), default_port),
    };
    if host.is_empty() {
        bail!("invalid URL {url:?}: no host");
    }
    if port == 0 {
        bail!("{url:?}: give the port (tcp://host:port)");
    }
    Ok(Url {
        scheme,
        host: host.to_ascii_lowercase(),
        port,
        target: target.to_string(),
    })
}

fn describe_matcher(m: &StringMatcher) -> String {
    match m {
        StringMatcher::Exact(e) => format!("exact {e:?}"),
        StringMatcher::Prefix(p) => format!("prefix {p:?}"),
        StringMatcher::Regex(r) => {
            let s = r.as_str();
            let inner = s
                .strip_prefix("^(?:")
                .and_then(|s| s.strip_suffix(")$"))
                .unwrap_or(s);
            format!("regex {inner:?}")
        }
        StringMatcher::Present => "present".to_string(),
    }
}

/// The first condition of `m` the request fails, in words.
fn why_not(m: &RequestMatch, req: &RequestInfo<'_>) -> String {
    if let Some(p) = m.port {
        if p != req.port {
            return format!("port {p} ≠ {}", req.port);
        }
    }
    if let Some(u) = &m.uri {
        if !string_matches(u, req.path_only(), m.ignore_uri_case) {
            return format!(
                "uri {} does not match {:?}",
                describe_matcher(u),
                req.path_only()
            );
        }
    }
    if let Some(s) = &m.scheme {
        if !string_matches(s, req.scheme, false) {
            return format!("scheme {} ≠ {:?}", describe_matcher(s), req.scheme);
        }
    }
    if let Some(s) = &m.method {
        if !string_matches(s, req.method, false) {
            return format!("method {} ≠ {:?}", describe_matcher(s), req.method);
        }
    }
    if let Some(s) = &m.authority {
        if !string_matches(s, req.authority, false) {
            return format!("authority {} ≠ {:?}", describe_matcher(s), req.authority);
        }
    }
    for (name, matcher) in &m.headers {
        let v = req.headers.get(name).and_then(|v| v.to_str().ok());
        match v {
            None => return format!("header {name} absent (wants {})", describe_matcher(matcher)),
            Some(v) if !string_matches(matcher, v, false) => {
                return format!("header {name} {} ≠ {v:?}", describe_matcher(matcher))
            }
            _ => {}
        }
    }
    for (name, matcher) in &m.without_headers {
        let v = req.headers.get(name).and_then(|v| v.to_str().ok());
        if v.is_some_and(|v| string_matches(matcher, v, false)) {
            return format!("header {name} must not match {}", describe_matcher(matcher));
        }
    }
    if !m.query_params.is_empty() {
        return "query parameters do not match".to_string();
    }
    if !m.source_labels.is_empty() {
        return format!(
            "sourceLabels {} (caller {})",
            labels_text(&m.source_labels),
            req.source_labels
                .map(labels_text)
                .unwrap_or_else(|| "unknown".into())
        );
    }
    if let Some(ns) = &m.source_namespace {
        return format!(
            "sourceNamespace {ns} ≠ {}",
            req.source_namespace.unwrap_or("unknown")
        );
    }
    "no match".to_string()
}

fn labels_text(l: &BTreeMap<String, String>) -> String {
    l.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn load(args: &ExplainArgs) -> anyhow::Result<(ResourceSet, MeshConfig)> {
    if args.kustomize.is_empty() && args.files.is_empty() {
        bail!("no manifests: give -k DIR (kustomize) or -f PATH (files, directories)");
    }
    let opts = LoadOptions {
        default_namespace: args.namespace.clone(),
        mesh: MeshConfig::default(),
    };
    let mut set = ResourceSet::default();
    for f in &args.files {
        set.add_path(f, &opts);
    }
    for k in &args.kustomize {
        set.add_kustomization(k, &opts);
    }
    let errors: Vec<String> = set
        .diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(|d| d.to_string())
        .collect();
    if !errors.is_empty() {
        bail!("the manifests have errors:\n  {}", errors.join("\n  "));
    }
    let mut mesh = opts.mesh.clone();
    if let Some(m) = crate::mesh::mesh_config_from_resources(&set, &mesh.root_namespace)? {
        mesh = m;
    }
    Ok((set, mesh))
}

/// Gateway workloads: those some Gateway selects (`ns/name`, deduplicated).
fn gateway_workloads(resources: &[Resource]) -> Vec<ProxyTarget> {
    let mut out: Vec<ProxyTarget> = Vec::new();
    for w in trellis_model::registry::workloads(resources) {
        if out
            .iter()
            .any(|t| t.namespace == w.namespace && t.name == w.name)
        {
            continue;
        }
        if let Ok(t) = find_target(resources, &w.namespace, &w.name) {
            if t.kind == ProxyKind::Gateway {
                out.push(t);
            }
        }
    }
    out
}

/// The proxy the request enters.
fn entry_proxy(args: &ExplainArgs, resources: &[Resource]) -> anyhow::Result<ProxyTarget> {
    if let Some(from) = &args.from {
        let workloads = trellis_model::registry::workloads(resources);
        let (ns, name) = match from.split_once('/') {
            Some((ns, name)) => (ns.to_string(), name.to_string()),
            None => {
                let found: Vec<_> = workloads.iter().filter(|w| &w.name == from).collect();
                match found.first() {
                    Some(w) => (w.namespace.clone(), w.name.clone()),
                    None => {
                        bail!("--from {from}: no Pod, Deployment or WorkloadEntry of that name")
                    }
                }
            }
        };
        return find_target(resources, &ns, &name).map_err(|e| anyhow!("--from {from}: {e}"));
    }
    let gateways = gateway_workloads(resources);
    if let Some(g) = &args.gateway {
        let (ns, name) = g
            .split_once('/')
            .ok_or_else(|| anyhow!("--gateway {g}: expected NAMESPACE/NAME"))?;
        // A Gateway resource: the workload it selects.
        for r in resources {
            if let Object::Gateway(gw) = &r.object {
                if r.ns() == ns && r.name == name {
                    return gateways
                        .iter()
                        .find(|t| {
                            !gw.selector.is_empty()
                                && gw.selector.iter().all(|(k, v)| t.labels.get(k) == Some(v))
                        })
                        .cloned()
                        .ok_or_else(|| {
                            anyhow!("Gateway {g} selects no workload in these manifests")
                        });
                }
            }
        }
        return find_target(resources, ns, name).map_err(|e| anyhow!("--gateway {g}: {e}"));
    }
    gateways.into_iter().next().ok_or_else(|| {
        anyhow!("no ingress gateway in these manifests (no workload that a Gateway selects): give --from WORKLOAD")
    })
}

fn select_chain<'c>(listener: &'c Listener, tls: bool, sni: &str) -> Option<&'c FilterChain> {
    listener.filter_chains.iter().find(|c| {
        let m = &c.filter_match;
        if tls && m.plaintext_only || !tls && m.tls_only {
            return false;
        }
        if tls && c.tls.is_none() && !m.tls_only && m.server_names.is_empty() {
            // A plaintext HTTP chain does not serve TLS.
            return matches!(c.handler, ChainHandler::TlsPassthrough(_));
        }
        if m.server_names.is_empty() {
            return true;
        }
        m.server_names.iter().any(|n| match n.strip_prefix('*') {
            Some(suffix) => sni.len() > suffix.len() && sni.ends_with(suffix),
            None => n.eq_ignore_ascii_case(sni),
        })
    })
}

/// JWT verdict.
#[derive(Debug, Clone)]
enum Jwt {
    /// No RequestAuthentication applies.
    NoPolicy,
    /// No token: passes without a request principal.
    Absent,
    Valid {
        principal: String,
        claims: Value,
        rule: String,
        signature: String,
    },
    Invalid(String),
}

fn b64_json(part: &str) -> Option<Value> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Finds the token where the policy's rules look for it.
fn find_token(policy: &JwtPolicy, headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    for loc in policy.locations() {
        match loc {
            TokenLocation::Header { name, prefix } => {
                if let Some(v) = headers.get(name.as_str()).and_then(|v| v.to_str().ok()) {
                    let v = v.trim();
                    match prefix {
                        Some(p) if v.len() >= p.len() && v[..p.len()].eq_ignore_ascii_case(p) => {
                            return Some(v[p.len()..].trim().to_string())
                        }
                        Some(_) => {}
                        None => return Some(v.to_string()),
                    }
                }
            }
            TokenLocation::Param(p) => {
                if let Some(v) = query.and_then(|q| {
                    q.split('&').find_map(|kv| {
                        let (k, v) = kv.split_once('=')?;
                        (k == p).then(|| v.to_string())
                    })
                }) {
                    return Some(v);
                }
            }
            TokenLocation::Cookie(c) => {
                if let Some(v) = headers
                    .get_all("cookie")
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .flat_map(|v| v.split(';'))
                    .find_map(|kv| {
                        let (k, v) = kv.trim().split_once('=')?;
                        (k == c).then(|| v.to_string())
                    })
                {
                    return Some(v);
                }
            }
        }
    }
    None
}

fn check_jwt(
    policy: &JwtPolicy,
    headers: &HeaderMap,
    query: Option<&str>,
    jwks: Option<&str>,
) -> Jwt {
    if policy.is_empty() {
        return Jwt::NoPolicy;
    }
    let Some(token) = find_token(policy, headers, query) else {
        return Jwt::Absent;
    };
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 {
        return Jwt::Invalid("not a JWT (expected header.payload.signature)".into());
    }
    let (Some(header), Some(claims)) = (b64_json(parts[0]), b64_json(parts[1])) else {
        return Jwt::Invalid("header or payload is not base64url JSON".into());
    };
    let iss = claims["iss"].as_str().unwrap_or("");
    let rules: Vec<_> = policy.rules.iter().filter(|r| r.issuer == iss).collect();
    if rules.is_empty() {
        return Jwt::Invalid(format!(
            "issuer {iss:?} is not configured (rules accept: {})",
            policy
                .rules
                .iter()
                .map(|r| r.issuer.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    if let Some(exp) = claims["exp"].as_u64() {
        if exp < now {
            return Jwt::Invalid(format!("expired {}s ago (exp {exp})", now - exp));
        }
    }
    if let Some(nbf) = claims["nbf"].as_u64() {
        if nbf > now + 60 {
            return Jwt::Invalid(format!("not valid before {nbf}"));
        }
    }
    let token_aud: Vec<&str> = match &claims["aud"] {
        Value::String(s) => vec![s.as_str()],
        Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let mut last = String::new();
    for rule in rules {
        if !rule.audiences.is_empty()
            && !rule
                .audiences
                .iter()
                .any(|a| token_aud.contains(&a.as_str()))
        {
            last = format!(
                "audience {token_aud:?} is not one of {:?} ({} jwtRules[{}])",
                rule.audiences, rule.policy, rule.index
            );
            continue;
        }
        let keys = match (&rule.jwks, jwks) {
            (_, Some(k)) => Some(("--jwks", k.to_string())),
            (JwksSource::Inline(k), None) => Some(("inline jwks", k.clone())),
            _ => None,
        };
        let signature = match keys {
            Some((from, k)) => match verify_signature(&token, &header, &k) {
                Ok(()) => format!("signature verified with the {from} keys"),
                Err(e) => {
                    last = format!("signature does not verify with the {from} keys: {e}");
                    continue;
                }
            },
            None => format!(
                "signature not verified offline (keys from {}; give --jwks FILE to check it)",
                match &rule.jwks {
                    JwksSource::Uri(u) => u.clone(),
                    JwksSource::Discovery(u) => format!("discovery at {u}"),
                    JwksSource::Inline(_) => "inline jwks".into(),
                }
            ),
        };
        let sub = claims["sub"].as_str().unwrap_or("");
        return Jwt::Valid {
            principal: format!("{iss}/{sub}"),
            claims: claims.clone(),
            rule: format!("{} jwtRules[{}]", rule.policy, rule.index),
            signature,
        };
    }
    Jwt::Invalid(last)
}

fn verify_signature(token: &str, header: &Value, jwks: &str) -> anyhow::Result<()> {
    let set: jsonwebtoken::jwk::JwkSet =
        serde_json::from_str(jwks).context("not a JSON Web Key Set")?;
    let kid = header["kid"].as_str();
    let alg: jsonwebtoken::Algorithm = serde_json::from_value(header["alg"].clone())
        .map_err(|_| anyhow!("unsupported alg {}", header["alg"]))?;
    let candidates: Vec<&jsonwebtoken::jwk::Jwk> = set
        .keys
        .iter()
        .filter(|k| kid.is_none() || k.common.key_id.as_deref() == kid)
        .collect();
    if candidates.is_empty() {
        bail!("no key with kid {kid:?}");
    }
    for k in candidates {
        let Ok(key) = jsonwebtoken::DecodingKey::from_jwk(k) else {
            continue;
        };
        let mut v = jsonwebtoken::Validation::new(alg);
        v.validate_aud = false;
        v.validate_exp = false;
        v.required_spec_claims.clear();
        if jsonwebtoken::decode::<Value>(token, &key, &v).is_ok() {
            return Ok(());
        }
    }
    bail!("no key verifies it")
}

fn jwt_step(jwt: &Jwt, where_: &str, policy: &JwtPolicy) -> Step {
    let rules: Vec<String> = policy
        .rules
        .iter()
        .map(|r| {
            format!(
                "{} jwtRules[{}]: issuer {}, audiences [{}]",
                r.policy,
                r.index,
                r.issuer,
                r.audiences.join(", ")
            )
        })
        .collect();
    let (lines, data) = match jwt {
        Jwt::NoPolicy => (
            vec!["no RequestAuthentication applies: tokens are not checked".to_string()],
            json!({"verdict": "no policy"}),
        ),
        Jwt::Absent => {
            let mut l = rules.clone();
            l.push("no token in the request: it passes authentication without a request principal (authorization decides)".into());
            (l, json!({"verdict": "absent"}))
        }
        Jwt::Valid {
            principal,
            rule,
            signature,
            ..
        } => {
            let mut l = rules.clone();
            l.push(format!(
                "token valid for {rule}: issuer, audience and expiry check; {signature}"
            ));
            l.push(format!("request principal {principal}"));
            (
                l,
                json!({"verdict": "valid", "principal": principal, "rule": rule, "signature": signature}),
            )
        }
        Jwt::Invalid(why) => {
            let mut l = rules.clone();
            l.push(format!("token rejected: {why} → 401"));
            (l, json!({"verdict": "invalid", "reason": why}))
        }
    };
    Step {
        title: format!("JWT at {where_}"),
        lines,
        data,
    }
}

fn authz_step(
    where_: &str,
    policies: &AuthzPolicies,
    decision: &Decision<'_>,
    resources: &[Resource],
) -> Step {
    let mut lines = Vec::new();
    if policies.is_empty() {
        lines.push("no AuthorizationPolicy applies: allowed".to_string());
    } else {
        for p in policies.policies() {
            lines.push(format!(
                "{} policy {} applies ({} rule{})",
                p.action,
                p.id,
                p.rule_count,
                if p.rule_count == 1 { "" } else { "s" }
            ));
            let raw = resources.iter().find(|r| {
                matches!(r.object, Object::AuthorizationPolicy(_))
                    && r.ns() == p.id.namespace
                    && r.name == p.id.name
            });
            if let Some(rules) = raw.and_then(|r| r.raw["spec"]["rules"].as_array()) {
                for (i, rule) in rules.iter().enumerate() {
                    lines.push(format!(
                        "  rule {i}: {}",
                        serde_json::to_string(rule).unwrap_or_default()
                    ));
                }
            }
        }
        lines.push(format!("→ {decision}"));
    }
    Step {
        title: format!("Authorization at {where_}"),
        lines,
        data: json!({
            "allowed": decision.allowed,
            "reason": decision.reason.to_string(),
            "policy": decision.rule().map(|r| r.policy.to_string()),
            "rule": decision.rule().map(|r| r.rule),
        }),
    }
}

fn cluster_policy(c: &Cluster) -> Vec<String> {
    let mut l = Vec::new();
    l.push(format!(
        "{}: tls {}, lb {}, connect timeout {:?}",
        c.destination_rule
            .as_deref()
            .map(|d| format!("DestinationRule {d}"))
            .unwrap_or_else(|| "no DestinationRule".to_string()),
        match &c.tls {
            UpstreamTls::None if c.auto_mtls => "auto mTLS (to sidecar endpoints)".to_string(),
            UpstreamTls::None => "none (plain text)".to_string(),
            UpstreamTls::IstioMutual { .. } => "ISTIO_MUTUAL".to_string(),
            UpstreamTls::Tls { sni, .. } => format!("TLS origination (sni {sni:?})"),
        },
        match &c.lb {
            LbPolicy::LeastRequest => "LEAST_REQUEST".to_string(),
            LbPolicy::RoundRobin => "ROUND_ROBIN".to_string(),
            LbPolicy::Random => "RANDOM".to_string(),
            LbPolicy::Passthrough => "PASSTHROUGH".to_string(),
            LbPolicy::ConsistentHash(h) => format!("consistent hash on {:?}", h.key),
        },
        c.connect_timeout
    ));
    let p = &c.pool;
    let lim = |v: u32| {
        if v == u32::MAX {
            "∞".to_string()
        } else {
            v.to_string()
        }
    };
    l.push(format!(
        "pool: maxConnections {}, http1MaxPendingRequests {}, http2MaxRequests {}, maxRequestsPerConnection {}",
        lim(p.max_connections),
        lim(p.http1_max_pending_requests),
        lim(p.http2_max_requests),
        if p.max_requests_per_connection == 0 {
            "∞".to_string()
        } else {
            p.max_requests_per_connection.to_string()
        }
    ));
    if let Some(o) = &c.outlier {
        l.push(format!(
            "outlier detection: {} consecutive 5xx, every {:?}, ejection {:?}, at most {}%",
            o.consecutive_5xx
                .map(|n| n.to_string())
                .unwrap_or_else(|| "-".into()),
            o.interval,
            o.base_ejection_time,
            o.max_ejection_percent
        ));
    }
    l
}

/// A destination workload (for PeerAuthentication and the destination's policies).
struct DestWorkload {
    name: String,
    namespace: String,
    labels: BTreeMap<String, String>,
    port: Option<u16>,
    /// Has a sidecar.
    mesh: bool,
}

fn destination_workloads(
    cluster: &Cluster,
    config: &ProxyConfig,
    registry: &ServiceRegistry,
    rules: &DestinationRules<'_>,
    proxy: &ProxyTarget,
) -> Vec<DestWorkload> {
    let Some(svc) = registry.lookup(&cluster.service.host, &proxy.namespace) else {
        return Vec::new();
    };
    let subset_labels = cluster.subset.as_ref().and_then(|s| {
        rules
            .lookup(
                &svc.host,
                &proxy.namespace,
                &proxy.labels,
                Some(&svc.namespace),
            )
            .and_then(|r| r.subset(s).map(|s| s.labels.clone()))
    });
    let _ = config;
    let mut instances: Vec<_> = svc.instances.iter().collect();
    // Instances with an address (running workloads) before templates (Deployments).
    instances.sort_by_key(|i| i.address.is_none());
    instances
        .into_iter()
        .filter(|i| {
            subset_labels
                .as_ref()
                .is_none_or(|l| l.iter().all(|(k, v)| i.labels.get(k) == Some(v)))
        })
        .map(|i| {
            let (kind_ns, name) = i.workload.rsplit_once('/').unwrap_or(("", &i.workload));
            let namespace = kind_ns
                .rsplit(' ')
                .next()
                .unwrap_or(&svc.namespace)
                .to_string();
            DestWorkload {
                name: format!("{} ({})", name, i.workload.split(' ').next().unwrap_or("")),
                namespace,
                labels: i.labels.clone(),
                port: i.ports.get(&cluster.service.port).copied(),
                mesh: i.mesh,
            }
        })
        .collect()
}

pub fn run(args: ExplainArgs) -> anyhow::Result<ExitCode> {
    if !matches!(args.output.as_str(), "text" | "json") {
        bail!("invalid --output {:?}: expected text or json", args.output);
    }
    let (set, mesh) = load(&args)?;
    let resources = &set.resources;
    let url = parse_url(&args.url)?;
    let method = args.method.to_ascii_uppercase();

    let mut headers = HeaderMap::new();
    for h in &args.headers {
        let (k, v) = h
            .split_once(':')
            .ok_or_else(|| anyhow!("invalid -H {h:?}: expected 'name: value'"))?;
        headers.append(
            HeaderName::from_bytes(k.trim().to_ascii_lowercase().as_bytes())
                .map_err(|_| anyhow!("invalid header name {k:?}"))?,
            HeaderValue::from_str(v.trim()).map_err(|_| anyhow!("invalid header value {v:?}"))?,
        );
    }
    if let Some(t) = &args.jwt {
        headers.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {t}")).map_err(|_| anyhow!("invalid --jwt"))?,
        );
    }
    let jwks = match &args.jwks {
        Some(f) => Some(
            std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?,
        ),
        None => None,
    };

    let proxy = entry_proxy(&args, resources)?;
    let config = compile(resources, &mesh, &proxy, "explain").map_err(|e| anyhow!("{e}"))?;
    let registry = ServiceRegistry::new(resources, &mesh);
    let drs = DestinationRules::new(resources, &mesh);
    let external = args.from.is_none();
    let proxy_name = format!("{}/{}", proxy.namespace, proxy.name);
    let where_entry = if proxy.kind == ProxyKind::Gateway {
        format!("the gateway {proxy_name}")
    } else {
        format!("the sidecar of {proxy_name} (outbound)")
    };

    let mut steps: Vec<Step> = Vec::new();
    let mut warnings: Vec<String> = config.warnings.clone();
    // (status, flag, result) — the first decision wins, later steps are still shown.
    let mut outcome: Option<(u16, Option<String>, String)> = None;
    let decide =
        |o: &mut Option<(u16, Option<String>, String)>, s: u16, f: Option<&str>, r: String| {
            if o.is_none() {
                *o = Some((s, f.map(str::to_string), r));
            }
        };

    // 1. Listener.
    let tls = url.scheme == "https";
    let mut port = url.port;
    let mut listener = config
        .listeners
        .iter()
        .find(|l| l.address.port() == port && l.name != "virtualInbound");
    let mut listener_note = None;
    if listener.is_none() && proxy.kind == ProxyKind::Gateway {
        // `trellis up` serves the gateway's 80/443 on local ports (8080/8443): map back.
        let fallback = if tls { 443 } else { 80 };
        if let Some(l) = config
            .listeners
            .iter()
            .find(|l| l.address.port() == fallback)
        {
            listener_note = Some(format!(
                "no listener on port {port}; port {fallback} is the gateway's {} port (locally served on {port} by `trellis up`)",
                url.scheme
            ));
            port = fallback;
            listener = Some(l);
        }
    }
    if listener.is_none() && proxy.kind == ProxyKind::Sidecar && url.scheme != "tcp" {
        listener = config
            .listeners
            .iter()
            .find(|l| l.name == "virtualOutbound");
        if listener.is_some() {
            listener_note = Some(format!(
                "no listener for port {port}: the app's HTTP proxy listener (virtualOutbound) handles it"
            ));
        }
    }
    let Some(listener) = listener else {
        let ports: Vec<String> = config.listeners.iter().map(|l| l.name.clone()).collect();
        steps.push(Step {
            title: format!("Listener on {where_entry}"),
            lines: vec![format!(
                "no listener for port {port} (listeners: {})",
                ports.join(", ")
            )],
            data: Value::Null,
        });
        let (status, result) = (
            0,
            "connection refused: nothing listens on that port".to_string(),
        );
        return finish(
            &args,
            &url,
            &method,
            &proxy,
            steps,
            (status, None, result),
            warnings,
        );
    };
    let mut lines = vec![format!("listener {}", listener.name)];
    if let Some(n) = listener_note {
        lines.push(n);
    }
    let chain = select_chain(listener, tls, &url.host);
    if proxy.kind == ProxyKind::Gateway {
        for r in resources {
            let Object::Gateway(g) = &r.object else {
                continue;
            };
            if g.selector.is_empty()
                || !g
                    .selector
                    .iter()
                    .all(|(k, v)| proxy.labels.get(k) == Some(v))
            {
                continue;
            }
            for (i, s) in g.servers.iter().enumerate() {
                let Some(p) = &s.port else { continue };
                if p.number != u32::from(port) {
                    continue;
                }
                let host_ok = s.hosts.iter().any(|h| {
                    let h = h.rsplit_once('/').map_or(h.as_str(), |(_, h)| h);
                    h == "*"
                        || h.eq_ignore_ascii_case(&url.host)
                        || h.strip_prefix('*')
                            .is_some_and(|suf| url.host.ends_with(suf))
                });
                lines.push(format!(
                    "Gateway {} servers[{i}]: port {} {}, hosts {}{}{}",
                    r.key(),
                    p.number,
                    p.protocol,
                    s.hosts.join(", "),
                    s.tls
                        .as_ref()
                        .and_then(|t| t.credential_name.as_ref())
                        .map(|c| format!(", TLS credential {c}"))
                        .unwrap_or_default(),
                    if host_ok { "" } else { " (host not listed)" }
                ));
            }
        }
    }
    match chain {
        Some(c) => lines.push(format!(
            "filter chain {}{}",
            c.name,
            if c.tls.is_some() {
                " (TLS terminated here)"
            } else {
                ""
            }
        )),
        None => {
            lines.push(format!(
                "no filter chain accepts a {} connection for {}",
                if tls { "TLS" } else { "plain-text" },
                url.host
            ));
            decide(
                &mut outcome,
                0,
                None,
                "connection reset: no filter chain matches".into(),
            );
        }
    }
    steps.push(Step {
        title: format!("Listener on {where_entry}"),
        lines,
        data: json!({"listener": listener.name, "chain": chain.map(|c| c.name.clone())}),
    });

    // 2. Path.
    let level = Normalization::from_mesh(mesh.path_normalization.normalization);
    let path = match normalize_path(&url.target, level) {
        Ok(_) if url.scheme == "tcp" => url.target.clone(),
        Ok(p) => {
            let p = p.into_owned();
            steps.push(Step {
                title: "Path".into(),
                lines: vec![if p == url.target {
                    format!("{p} (normalization {level}: unchanged)")
                } else {
                    format!("{} → {p} (normalization {level})", url.target)
                }],
                data: json!({"path": p}),
            });
            p
        }
        Err(e) => {
            steps.push(Step {
                title: "Path".into(),
                lines: vec![format!("{}: refused: {e} → 400", url.target)],
                data: Value::Null,
            });
            decide(&mut outcome, 400, None, format!("400: {e}"));
            url.target.clone()
        }
    };
    let query = path.split_once('?').map(|(_, q)| q.to_string());
    let path_only = path
        .split_once('?')
        .map_or(path.as_str(), |(p, _)| p)
        .to_string();
    let authority = if url.port == 80 || url.port == 443 {
        url.host.clone()
    } else {
        format!("{}:{}", url.host, url.port)
    };

    // 3. Authentication and authorization at the entry gateway (sidecar outbound has none).
    let mut principal: Option<String> = None;
    let mut claims: Option<Value> = None;
    if proxy.kind == ProxyKind::Gateway {
        let policy = JwtPolicy::compile(
            resources,
            &proxy.namespace,
            &proxy.labels,
            &mesh.root_namespace,
            None,
        );
        let jwt = check_jwt(&policy, &headers, query.as_deref(), jwks.as_deref());
        steps.push(jwt_step(&jwt, &where_entry, &policy));
        match &jwt {
            Jwt::Invalid(why) => decide(
                &mut outcome,
                401,
                Some("JWT"),
                format!("401 Jwt verification fails: {why}"),
            ),
            Jwt::Valid {
                principal: p,
                claims: c,
                ..
            } => {
                principal = Some(p.clone());
                claims = Some(c.clone());
            }
            _ => {}
        }
        let policies = AuthzPolicies::compile_for(
            resources,
            &AuthzTarget {
                namespace: &proxy.namespace,
                labels: &proxy.labels,
                gateway_name: None,
                trust_domains: &[],
            },
            &mesh.root_namespace,
        );
        let req = AuthzRequest {
            request_principal: principal.as_deref(),
            claims: claims.as_ref(),
            destination_port: Some(port),
            sni: tls.then_some(url.host.as_str()),
            ..AuthzRequest::http(&headers, &method, &authority, &path_only)
        };
        let decision = policies.evaluate(&req);
        steps.push(authz_step(&where_entry, &policies, &decision, resources));
        if !decision.allowed {
            decide(
                &mut outcome,
                403,
                Some("RBAC"),
                format!("403 RBAC: access denied ({})", decision.reason),
            );
        }
    }

    // 4. Routing.
    let mut destinations: Vec<(String, u32, u32)> = Vec::new();
    match chain.map(|c| &c.handler) {
        Some(ChainHandler::Http(m)) => {
            let table = config.routes.get(&m.route_table);
            let source_ns = (!external).then_some(proxy.namespace.as_str());
            let req = RequestInfo {
                authority: &authority,
                path: &path,
                method: &method,
                scheme: if tls { "https" } else { "http" },
                headers: &headers,
                port,
                source_labels: (!external).then_some(&proxy.labels),
                source_namespace: source_ns,
            };
            let vh = table.and_then(|t| select_virtual_host(t, &authority));
            let mut lines = vec![format!("route table {}", m.route_table)];
            match vh {
                None => {
                    lines.push(format!(
                        "no virtual host for {authority} (hosts: {})",
                        table
                            .map(|t| t
                                .virtual_hosts
                                .iter()
                                .map(|v| v.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", "))
                            .unwrap_or_default()
                    ));
                    decide(
                        &mut outcome,
                        404,
                        Some("NR"),
                        format!("404 NR: no route for host {authority}"),
                    );
                    steps.push(Step {
                        title: "Routing".into(),
                        lines,
                        data: Value::Null,
                    });
                }
                Some(vh) => {
                    lines.push(format!(
                        "virtual host {} (domains {})",
                        vh.name,
                        vh.domains.join(", ")
                    ));
                    let mut chosen = None;
                    for r in &vh.routes {
                        let origin = if r.origin.virtual_service.is_empty() {
                            format!("generated route {}", r.origin.rule)
                        } else {
                            r.origin.to_string()
                        };
                        if r.matches.is_empty() {
                            lines.push(format!("✔ {origin}: matches (no match conditions)"));
                            chosen = Some(r);
                            break;
                        }
                        if let Some(i) = r.matches.iter().position(|m| request_matches(m, &req)) {
                            let m = &r.matches[i];
                            lines.push(format!(
                                "✔ {origin}: matches match[{i}]{}",
                                m.uri
                                    .as_ref()
                                    .map(|u| format!(" (uri {})", describe_matcher(u)))
                                    .unwrap_or_default()
                            ));
                            chosen = Some(r);
                            break;
                        }
                        let why: Vec<String> = r.matches.iter().map(|m| why_not(m, &req)).collect();
                        lines.push(format!("✘ {origin}: {}", why.join("; ")));
                    }
                    let Some(route) = chosen else {
                        lines.push("no route matches".into());
                        decide(
                            &mut outcome,
                            404,
                            Some("NR"),
                            "404 NR: no route matches".into(),
                        );
                        steps.push(Step {
                            title: "Routing".into(),
                            lines,
                            data: Value::Null,
                        });
                        return finish(
                            &args,
                            &url,
                            &method,
                            &proxy,
                            steps,
                            outcome.unwrap_or((404, Some("NR".into()), String::new())),
                            warnings,
                        );
                    };
                    if let Some(t) = route.timeout {
                        lines.push(format!("timeout {t:?}"));
                    }
                    if let Some(rp) = &route.retry {
                        lines.push(format!(
                            "retries: {} attempts{} on {}",
                            rp.attempts,
                            rp.per_try_timeout
                                .map(|t| format!(", {t:?} per try"))
                                .unwrap_or_default(),
                            rp.retry_on.join(",")
                        ));
                    }
                    match &route.action {
                        RouteAction::Forward(f) => {
                            for c in &f.clusters.clusters {
                                destinations.push((
                                    c.cluster.clone(),
                                    c.weight,
                                    f.clusters.total_weight,
                                ));
                            }
                            if let Some(rw) = &f.rewrite {
                                if let Some(u) = &rw.uri {
                                    lines.push(format!("uri rewritten to {u}"));
                                }
                            }
                        }
                        RouteAction::Redirect(r) => {
                            lines.push(format!(
                                "redirect {} to {:?}{}",
                                r.code,
                                r.authority,
                                r.uri.clone().unwrap_or_default()
                            ));
                            decide(&mut outcome, r.code, None, format!("{} redirect", r.code));
                        }
                        RouteAction::DirectResponse { status, body } => {
                            lines.push(format!("direct response {status}"));
                            decide(
                                &mut outcome,
                                *status,
                                None,
                                format!(
                                    "{status} direct response{}",
                                    body.as_deref()
                                        .map(|b| format!(": {b}"))
                                        .unwrap_or_default()
                                ),
                            );
                        }
                    }
                    steps.push(Step {
                        title: "Routing".into(),
                        data: json!({
                            "virtual_host": vh.name,
                            "route": route.origin.to_string(),
                        }),
                        lines,
                    });
                }
            }
        }
        Some(ChainHandler::Tcp(t)) => {
            let mut lines = Vec::new();
            if let Some(r) = t.routes.first() {
                lines.push(format!("TCP route {}", r.origin));
                for c in &r.clusters.clusters {
                    destinations.push((c.cluster.clone(), c.weight, r.clusters.total_weight));
                }
            } else {
                lines.push("no TCP route: the connection is closed".into());
                decide(
                    &mut outcome,
                    0,
                    None,
                    "connection closed: no TCP route".into(),
                );
            }
            steps.push(Step {
                title: "Routing (TCP)".into(),
                lines,
                data: Value::Null,
            });
        }
        Some(ChainHandler::TlsPassthrough(routes)) => {
            let mut lines = Vec::new();
            let r = routes.iter().find(|r| {
                r.server_names.is_empty()
                    || r.server_names
                        .iter()
                        .any(|n| n.eq_ignore_ascii_case(&url.host))
            });
            match r {
                Some(r) => {
                    lines.push(format!("TLS passthrough by SNI: {}", r.origin));
                    for c in &r.clusters.clusters {
                        destinations.push((c.cluster.clone(), c.weight, r.clusters.total_weight));
                    }
                }
                None => {
                    lines.push(format!("no TLS route for SNI {}", url.host));
                    decide(
                        &mut outcome,
                        0,
                        None,
                        "connection closed: no TLS route".into(),
                    );
                }
            }
            steps.push(Step {
                title: "Routing (TLS passthrough)".into(),
                lines,
                data: Value::Null,
            });
        }
        None => {}
    }

    // 5. Destinations: clusters, endpoints, DestinationRule, then each destination sidecar.
    let mut any_endpoint = false;
    let mut dest_lines = Vec::new();
    let mut dest_data = Vec::new();
    let mut dest_checks: Vec<(String, Vec<DestWorkload>, bool)> = Vec::new();
    for (name, weight, total) in &destinations {
        let pct = if *total > 0 {
            f64::from(*weight) * 100.0 / f64::from(*total)
        } else {
            0.0
        };
        let Some(c) = config.clusters.get(name) else {
            dest_lines.push(format!("{pct:.0}% {name}: cluster not found"));
            continue;
        };
        let eps = config
            .endpoints
            .get(name)
            .map(|e| e.endpoints.as_slice())
            .unwrap_or_default();
        let dests = destination_workloads(c, &config, &registry, &drs, &proxy);
        let ep_text: Vec<String> = eps
            .iter()
            .map(|e| match &e.address {
                EndpointAddress::Socket(a) => a.to_string(),
                EndpointAddress::Dns { host, port } => format!("{host}:{port} (DNS)"),
            })
            .collect();
        dest_lines.push(format!(
            "{pct:.0}% → {name}{}",
            c.subset
                .as_ref()
                .map(|s| format!(" (subset {s})"))
                .unwrap_or_default()
        ));
        if !eps.is_empty() {
            any_endpoint = true;
            dest_lines.push(format!("    endpoints: {}", ep_text.join(", ")));
        } else if !dests.is_empty() {
            any_endpoint = true;
            dest_lines.push(format!(
                "    endpoints: the pods of {} (addresses known at run time)",
                dests
                    .iter()
                    .map(|d| d.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        } else if c.name == "PassthroughCluster" {
            any_endpoint = true;
            dest_lines
                .push("    the original destination (outbound traffic policy ALLOW_ANY)".into());
        } else {
            dest_lines.push("    no endpoints: no workload serves it".into());
        }
        for l in cluster_policy(c) {
            dest_lines.push(format!("    {l}"));
        }
        dest_data.push(json!({
            "cluster": name,
            "weight": weight,
            "percent": pct,
            "subset": c.subset,
            "endpoints": ep_text,
            "destination_rule": c.destination_rule,
            "tls": match &c.tls { UpstreamTls::IstioMutual{..} => "ISTIO_MUTUAL", UpstreamTls::None => "NONE", UpstreamTls::Tls{..} => "TLS" },
        }));
        if weight > &0 {
            dest_checks.push((
                name.clone(),
                dests,
                matches!(c.tls, UpstreamTls::IstioMutual { .. }) || c.auto_mtls,
            ));
        }
    }
    if !destinations.is_empty() {
        steps.push(Step {
            title: "Destinations".into(),
            lines: dest_lines,
            data: Value::Array(dest_data),
        });
        if !any_endpoint {
            decide(
                &mut outcome,
                503,
                Some("UH"),
                "503 UH: no healthy upstream (the destination has no endpoints)".into(),
            );
        }
    }

    // 6. At each destination sidecar: mTLS mode, JWT, authorization.
    let source_principal = match proxy.service_account.as_str() {
        "" => None,
        sa => Some(spiffe_id(&mesh.trust_domain, &proxy.namespace, sa)),
    };
    let mut seen = std::collections::BTreeSet::new();
    for (cluster, dests, mtls) in &dest_checks {
        for d in dests {
            if !seen.insert((d.namespace.clone(), labels_text(&d.labels))) {
                continue;
            }
            if !d.mesh {
                steps.push(Step {
                    title: format!("At {}/{}", d.namespace, d.name),
                    lines: vec![
                        "not in the mesh (no sidecar): no mTLS, no policy there; the connection goes to it as the cluster's TLS setting says".to_string(),
                    ],
                    data: json!({"mesh": false}),
                });
                continue;
            }
            let where_ = format!("the sidecar of {}/{}", d.namespace, d.name);
            let mut lines = Vec::new();
            let pa =
                PeerAuthnPolicy::resolve(resources, &d.namespace, &d.labels, &mesh.root_namespace);
            let target_port = u32::from(d.port.unwrap_or(0));
            let mode = pa.mode_for_port(target_port);
            let mode_name = format!("{mode:?}").to_ascii_uppercase();
            lines.push(format!(
                "mTLS mode {mode_name} ({}){}",
                pa.source_for_port(target_port),
                d.port.map(|p| format!(" on port {p}")).unwrap_or_default()
            ));
            let (accepted, peer) = match (mode, mtls) {
                (MtlsMode::Strict, false) => {
                    lines.push(format!(
                        "✘ {cluster} sends plain text but the destination accepts only mTLS: connection reset"
                    ));
                    decide(
                        &mut outcome,
                        503,
                        Some("UC"),
                        format!("503: {where_} refuses plain text (STRICT mTLS)"),
                    );
                    (false, None)
                }
                (MtlsMode::Disable, true) => {
                    lines.push(
                        "✘ the caller sends mTLS but mTLS is disabled here: handshake fails".into(),
                    );
                    decide(
                        &mut outcome,
                        503,
                        Some("UF"),
                        format!("503: {where_} does not accept mTLS (DISABLE)"),
                    );
                    (false, None)
                }
                (_, true) => {
                    lines.push(format!(
                        "✔ Istio mTLS from {}",
                        source_principal.as_deref().unwrap_or("the caller")
                    ));
                    (true, source_principal.clone())
                }
                (_, false) => {
                    lines.push("✔ plain text accepted".into());
                    (true, None)
                }
            };
            let mut data = json!({"mtls_mode": mode_name, "accepted": accepted});
            if accepted {
                let policy = JwtPolicy::compile(
                    resources,
                    &d.namespace,
                    &d.labels,
                    &mesh.root_namespace,
                    None,
                );
                if !policy.is_empty() {
                    let jwt = check_jwt(&policy, &headers, query.as_deref(), jwks.as_deref());
                    let step = jwt_step(&jwt, &where_, &policy);
                    lines.extend(step.lines.into_iter().map(|l| format!("JWT: {l}")));
                    data["jwt"] = step.data;
                    if let Jwt::Invalid(why) = &jwt {
                        decide(
                            &mut outcome,
                            401,
                            Some("JWT"),
                            format!("401 at {where_}: {why}"),
                        );
                    }
                }
                let policies = AuthzPolicies::compile_for(
                    resources,
                    &AuthzTarget {
                        namespace: &d.namespace,
                        labels: &d.labels,
                        gateway_name: None,
                        trust_domains: &[],
                    },
                    &mesh.root_namespace,
                );
                let req = AuthzRequest {
                    source_principal: peer.as_deref(),
                    request_principal: principal.as_deref(),
                    claims: claims.as_ref(),
                    destination_port: d.port,
                    ..AuthzRequest::http(&headers, &method, &authority, &path_only)
                };
                let decision = policies.evaluate(&req);
                let step = authz_step(&where_, &policies, &decision, resources);
                lines.extend(
                    step.lines
                        .into_iter()
                        .map(|l| format!("authorization: {l}")),
                );
                data["authorization"] = step.data;
                if !decision.allowed {
                    decide(
                        &mut outcome,
                        403,
                        Some("RBAC"),
                        format!("403 RBAC at {where_}: {}", decision.reason),
                    );
                }
            }
            steps.push(Step {
                title: format!("At {where_}"),
                lines,
                data,
            });
        }
    }
    warnings.retain(|w| !w.is_empty());

    let outcome = outcome.unwrap_or_else(|| {
        let split: Vec<String> = destinations
            .iter()
            .filter(|(_, w, _)| *w > 0)
            .map(|(c, w, t)| {
                let pct = f64::from(*w) * 100.0 / f64::from((*t).max(1));
                match config.clusters.get(c) {
                    Some(cl) => format!(
                        "{pct:.0}% {}:{}{}",
                        cl.service.host,
                        cl.service.port,
                        cl.subset
                            .as_ref()
                            .map(|s| format!(" subset {s}"))
                            .unwrap_or_default()
                    ),
                    None => format!("{pct:.0}% {c}"),
                }
            })
            .collect();
        if url.scheme == "tcp" {
            return (
                200,
                None,
                format!("connected: forwarded to {}", split.join(", ")),
            );
        }
        (
            200,
            None,
            format!(
                "200: routed to {} (the app's own answer decides the final status)",
                split.join(", ")
            ),
        )
    });
    finish(&args, &url, &method, &proxy, steps, outcome, warnings)
}

fn finish(
    args: &ExplainArgs,
    url: &Url,
    method: &str,
    proxy: &ProxyTarget,
    steps: Vec<Step>,
    (status, flag, result): (u16, Option<String>, String),
    warnings: Vec<String>,
) -> anyhow::Result<ExitCode> {
    let e = Explanation {
        request: json!({
            "method": method,
            "url": args.url,
            "host": url.host,
            "port": url.port,
            "path": url.target,
            "from": args.from.clone().unwrap_or_else(|| "external".into()),
            "headers": args.headers,
            "jwt": args.jwt.is_some(),
        }),
        proxy: json!({
            "kind": format!("{:?}", proxy.kind),
            "workload": format!("{}/{}", proxy.namespace, proxy.name),
        }),
        steps,
        status,
        flag,
        result,
        warnings,
    };
    if args.output == "json" {
        println!("{}", serde_json::to_string_pretty(&e)?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = String::new();
    out.push_str(&format!(
        "{method} {} from {}, entering {} {}\n",
        args.url,
        args.from.as_deref().unwrap_or("outside the mesh"),
        match proxy.kind {
            ProxyKind::Gateway => "gateway",
            ProxyKind::Sidecar => "the sidecar of",
        },
        format_args!("{}/{}", proxy.namespace, proxy.name)
    ));
    for (i, s) in e.steps.iter().enumerate() {
        out.push_str(&format!("\n{}. {}\n", i + 1, s.title));
        for l in &s.lines {
            out.push_str(&format!("   {l}\n"));
        }
    }
    out.push_str(&format!("\nResult: {}\n", e.result));
    for w in &e.warnings {
        out.push_str(&format!("warning: {w}\n"));
    }
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = parse_url("http://dev.alphintra.local/api/orders?x=1").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.target.as_str()),
            ("dev.alphintra.local", 80, "/api/orders?x=1")
        );
        let u = parse_url("https://A.example:8443").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.target.as_str()),
            ("a.example", 8443, "/")
        );
        assert!(parse_url("tcp://redis:6379").is_ok());
        assert!(parse_url("tcp://redis").is_err());
        assert!(parse_url("dev.alphintra.local/x").is_err());
    }
}
