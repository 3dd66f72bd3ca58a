//! Fuzzes AuthorizationPolicy compilation and evaluation (`trellis_model::authz`).
//!
//! The input (via `arbitrary`) is a set of AuthorizationPolicies (actions, selectors, dry-run
//! annotations, providers, rules with `from`/`to`/`when`, every field drawn from a vocabulary
//! of interesting values — `*`, `prefix*`, `*suffix`, `{*}`/`{**}` templates, CIDRs, ports,
//! principals, hosts with ports and trailing dots, `when` keys — or an arbitrary string) and a
//! few requests (peer principal, addresses, port, SNI, JWT principal and claims, headers, host,
//! method, path; HTTP or TCP). Policies go through the real compile step
//! (`AuthzPolicies::compile_for` on `Resource`s), so arbitrary strings reach the path-template,
//! CIDR, port, host and `when`-key parsers.
//!
//! Invariants:
//! - nothing panics (compile, evaluate, `Display` of decisions and diagnostics);
//! - compiling and evaluating are deterministic (same input, equal results);
//! - with no policies every request is allowed (`NoAllowPolicies`);
//! - DENY beats ALLOW: a request that an enforced DENY policy's rule matches is never
//!   allowed; and when an ALLOW rule allowed a request, a DENY policy with the same spec
//!   denies it (DENY evaluation is never narrower than ALLOW: invalid values and HTTP-only
//!   attributes drop ALLOW rules but only widen DENY rules; repeated headers must all match for
//!   ALLOW, one is enough for DENY);
//! - an ALLOW policy with `spec: {}` allows nothing: alone it denies every request, and added
//!   to any set it leaves allowed exactly the requests an ALLOW rule allowed;
//! - the decision's reason is consistent: `Allowed(r)` names an enforced ALLOW policy whose
//!   first matching rule is `r`; `NoAllowPolicies` only when no enforced ALLOW policy applies;
//!   `NoAllowMatched` lists every enforced ALLOW policy and none of them matches;
//! - an ALLOW rule the compiler reported as dropped (invalid value, unknown `when` key) never
//!   allows a request, on HTTP and TCP (a TCP fail-open this target found is fixed: 6d73aa6);
//! - dry-run policies never decide: removing them changes neither `allowed`, nor the reason,
//!   nor the CUSTOM check, nor the audit rule;
//! - a path pattern the compiler accepts matches a path built from it (`{*}` -> one segment,
//!   `{**}` -> several, `*` -> text) and a host pattern (DNS name, optional trailing dot and
//!   port) matches the identical authority (hosts are case-, port- and
//!   trailing-dot-insensitive, also before a port: fixed in 6d73aa6 after this target found
//!   that such patterns matched nothing).
//!
//! `Decision::allowed` is the local (DENY/ALLOW) verdict; a matching CUSTOM rule only adds
//! `Decision::custom` (the provider is asked first), so the invariants hold for it unchanged.
//!
//! Run (from `fuzz/`): `cargo +nightly fuzz run authz_match --sanitizer none`.
#![no_main]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use arbitrary::Arbitrary;
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};
use trellis_api::common::WorkloadSelector;
use trellis_api::security::{
    Action, AuthorizationPolicy, Condition, ExtensionProvider, Operation, Rule, RuleFrom, RuleTo,
    Source,
};
use trellis_api::source::SpanMap;
use trellis_api::{Kind, Location, Object, Origin, Resource};
use trellis_model::authz::{AuthzPolicies, AuthzRequest, AuthzTarget, Decision, DecisionReason};

const ROOT: &str = "istio-system";
const WORKLOAD_NS: &str = "foo";
const NAMESPACES_OF_POLICIES: [&str; 3] = [WORKLOAD_NS, ROOT, "bar"];

const PATHS: &[&str] = &[
    "/admin",
    "/admin*",
    "*/admin",
    "/admin/*",
    "*",
    "/",
    "/api/{*}/items",
    "/api/{**}",
    "/{*}",
    "/{**}",
    "/store/{*}/x/{**}",
    "/a/{**}/b",
    "{*}",
    "/foo/{*}.txt",
    "/x/{**}/{*}",
    "/public*",
    "*.js",
    "/api/v1/users",
    "",
    "/admin/",
    "//admin",
    "/ADMIN",
    "/{**}/",
    "/a/{*}/{*}",
    "/%61dmin",
    "/a;b",
    "/{*}*",
];
const REQ_PATHS: &[&str] = &[
    "/admin",
    "/admin/x",
    "/api/v1/items",
    "/api/a/items",
    "/public/x",
    "/x.js",
    "/",
    "",
    "/admin?x=1",
    "/%61dmin",
    "/a//b",
    "/store/s/x/a/b",
    "/a/b",
    "/a/x/y/b",
    "/foo/bar.txt",
    "/ADMIN",
    "/api/",
    "/api/a*b/items",
    "/x/y/z",
];
const HOSTS: &[&str] = &[
    "example.com",
    "*.example.com",
    "api.*",
    "*",
    "example.com:8080",
    "EXAMPLE.COM.",
    "example.com.",
    "[::1]:80",
    "[::1]",
    "httpbin.foo.svc.cluster.local",
    "*:8080",
    "a.example.com:443",
    "example.com.:8080",
    "",
    "*.example.com:443",
    "a:b:c",
    "example.com:",
];
const REQ_HOSTS: &[&str] = &[
    "example.com",
    "EXAMPLE.com:8080",
    "example.com.",
    "a.example.com:443",
    "[::1]:80",
    "httpbin.foo.svc.cluster.local",
    "",
    "api.test",
    "example.com.:8080",
    "a.EXAMPLE.com.",
    "[::1]",
    "example.com:9090",
];
const METHODS: &[&str] = &["GET", "POST", "get", "*", "", "DELETE", "G*", "*T"];
const PRINCIPALS: &[&str] = &[
    "cluster.local/ns/foo/sa/bar",
    "cluster.local/ns/foo/sa/*",
    "*",
    "spiffe://cluster.local/ns/foo/sa/bar",
    "td.example/ns/foo/sa/bar",
    "*/ns/foo/sa/bar",
    "cluster.local/ns/bar/sa/baz",
    "",
    "cluster.local/ns//sa/x",
    "*.local/ns/foo/sa/bar",
    "old.td/ns/foo/sa/bar",
];
const REQ_PRINCIPALS: &[&str] = &[
    "https://issuer.test/alice",
    "https://issuer.test/*",
    "*",
    "*/alice",
    "https://issuer.test/al*",
    "*issuer.test/alice",
    "iss",
    "iss/",
    "/sub",
    "",
];
const NAMESPACES: &[&str] = &[
    "foo",
    "bar",
    "istio-system",
    "f*",
    "*o",
    "*",
    "",
    "cert-manager.io",
];
const SERVICE_ACCOUNTS: &[&str] = &["bar", "foo/bar", "bar/baz", "*", "a/b/c", "/x", "", "foo/"];
const IPS: &[&str] = &[
    "10.0.0.0/8",
    "10.0.0.9",
    "192.168.1.0/24",
    "::ffff:10.0.0.1",
    "2001:db8::/32",
    "0.0.0.0/0",
    "::/0",
    "10.0.0.9/33",
    "banana",
    "",
    "1.2.3.4/24",
    "fe80::1",
    "10.0.0.9/32",
];
const PORTS: &[&str] = &[
    "8000", "80", "443", "0", "65535", "65536", "-1", "", "80a", "008000",
];
const WHEN_KEYS: &[&str] = &[
    "source.ip",
    "remote.ip",
    "destination.ip",
    "destination.port",
    "source.namespace",
    "source.principal",
    "source.serviceAccount",
    "connection.sni",
    "request.auth.principal",
    "request.auth.audiences",
    "request.auth.presenter",
    "request.auth.claims[groups]",
    "request.auth.claims[scope]",
    "request.auth.claims[a][b]",
    "request.auth.claims[]",
    "request.auth.claims[a",
    "request.headers[x-user]",
    "request.headers[:authority]",
    "request.headers[Host]",
    "request.headers[:method]",
    "request.headers[:path]",
    "request.headers[]",
    "request.headers[bad header]",
    "request.experimental.inline.headers[x-user]",
    "experimental.envoy.filters.foo",
    "unknown.key",
    "request.regex.headers[x]",
];
const WHEN_VALUES: &[&str] = &[
    "10.0.0.0/8",
    "8000",
    "foo",
    "cluster.local/ns/foo/sa/bar",
    "admin",
    "read write",
    "read",
    "api",
    "https://issuer.test/alice",
    "GET",
    "*",
    "",
    "x*",
    "*y",
    "a, b",
    "example.com",
    "/admin",
    "bar",
    "group1",
];
const HEADER_NAMES: &[&str] = &[
    "x-user",
    "host",
    "x-forwarded-for",
    "authorization",
    "X-User",
];
const HEADER_VALUES: &[&str] = &[
    "admin", "alice", "a, b", " admin ", "", "*", "bob", "x", "y",
];
const CLAIM_STRINGS: &[&str] = &[
    "alice",
    "admin",
    "read write",
    "api",
    "https://issuer.test",
    "group1",
    "read",
    "",
];
const SNIS: &[&str] = &["example.com", "api.example.com", ""];
const LABEL_KEYS: &[&str] = &["app", "version", "gateway.networking.k8s.io/gateway-name"];
const LABEL_VALUES: &[&str] = &["httpbin", "v1", "v2", "gw"];
const PROVIDERS: &[&str] = &["ext-authz", "other", ""];
const DRY_RUN: &[&str] = &["true", "1", "True", "false", "0", "yes", ""];
const TRUST_DOMAINS: &[&str] = &["cluster.local", "td.example", "old.td", "*.td"];

/// A value from a vocabulary, or any string.
#[derive(Arbitrary, Debug, Clone)]
enum V {
    Pick(u8),
    Raw(String),
}

impl V {
    fn get(&self, vocab: &[&str]) -> String {
        match self {
            V::Pick(i) => vocab[*i as usize % vocab.len()].to_string(),
            V::Raw(s) => s.clone(),
        }
    }
}

fn list(vs: &[V], vocab: &[&str]) -> Vec<String> {
    vs.iter().take(4).map(|v| v.get(vocab)).collect()
}

#[derive(Arbitrary, Debug)]
struct SrcField {
    field: u8,
    value: V,
}

#[derive(Arbitrary, Debug)]
struct OpField {
    field: u8,
    value: V,
}

#[derive(Arbitrary, Debug)]
struct Cond {
    key: V,
    values: Vec<V>,
    not_values: Vec<V>,
}

#[derive(Arbitrary, Debug)]
struct ArbRule {
    from: Vec<Option<Vec<SrcField>>>,
    to: Vec<Option<Vec<OpField>>>,
    when: Vec<Cond>,
}

#[derive(Arbitrary, Debug)]
struct ArbPolicy {
    ns: u8,
    action: u8,
    provider: Option<V>,
    dry_run: Option<V>,
    selector: Option<Vec<(V, V)>>,
    created: Option<u8>,
    rules: Option<Vec<ArbRule>>,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum ArbIp {
    V4([u8; 4]),
    V6([u16; 8]),
    Mapped([u8; 4]),
    Known(u8),
}

impl ArbIp {
    fn get(self) -> IpAddr {
        const KNOWN: &[&str] = &[
            "10.0.0.9",
            "10.1.2.3",
            "192.168.1.7",
            "::ffff:10.0.0.1",
            "2001:db8::1",
            "1.2.3.4",
            "fe80::1",
            "127.0.0.1",
        ];
        match self {
            ArbIp::V4(o) => IpAddr::V4(Ipv4Addr::from(o)),
            ArbIp::V6(s) => IpAddr::V6(Ipv6Addr::from(s)),
            ArbIp::Mapped(o) => IpAddr::V6(Ipv4Addr::from(o).to_ipv6_mapped()),
            ArbIp::Known(i) => KNOWN[i as usize % KNOWN.len()].parse().unwrap(),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Aud {
    Str(V),
    List(Vec<V>),
    Number(i32),
}

#[derive(Arbitrary, Debug)]
struct Claims {
    iss: Option<V>,
    sub: Option<V>,
    aud: Option<Aud>,
    azp: Option<V>,
    groups: Option<Vec<V>>,
    scope: Option<V>,
    nested: Option<V>,
    other: Option<(V, V)>,
}

impl Claims {
    fn to_json(&self) -> Value {
        let mut m = serde_json::Map::new();
        let s = |v: &V| Value::String(v.get(CLAIM_STRINGS));
        if let Some(v) = &self.iss {
            m.insert(
                "iss".into(),
                Value::String(v.get(&["https://issuer.test", "iss"])),
            );
        }
        if let Some(v) = &self.sub {
            m.insert("sub".into(), s(v));
        }
        match &self.aud {
            Some(Aud::Str(v)) => {
                m.insert("aud".into(), s(v));
            }
            Some(Aud::List(vs)) => {
                m.insert(
                    "aud".into(),
                    Value::Array(vs.iter().take(4).map(s).collect()),
                );
            }
            Some(Aud::Number(n)) => {
                m.insert("aud".into(), json!(n));
            }
            None => {}
        }
        if let Some(v) = &self.azp {
            m.insert("azp".into(), s(v));
        }
        if let Some(vs) = &self.groups {
            m.insert(
                "groups".into(),
                Value::Array(vs.iter().take(4).map(s).collect()),
            );
        }
        if let Some(v) = &self.scope {
            m.insert("scope".into(), s(v));
        }
        if let Some(v) = &self.nested {
            m.insert("a".into(), json!({ "b": v.get(CLAIM_STRINGS) }));
        }
        if let Some((k, v)) = &self.other {
            m.insert(k.get(&["groups", "scope", "a"]), s(v));
        }
        Value::Object(m)
    }
}

#[derive(Arbitrary, Debug)]
struct ArbRequest {
    principal: Option<V>,
    source_ip: Option<ArbIp>,
    remote_ip: Option<ArbIp>,
    destination_ip: Option<ArbIp>,
    port: Option<(bool, u16)>,
    sni: Option<V>,
    request_principal: Option<V>,
    claims: Option<Claims>,
    headers: Vec<(V, V)>,
    host: V,
    method: V,
    path: V,
    tcp: bool,
}

#[derive(Arbitrary, Debug)]
struct Input {
    policies: Vec<ArbPolicy>,
    requests: Vec<ArbRequest>,
    trust_domains: Vec<V>,
    path_probes: Vec<V>,
    host_probes: Vec<V>,
}

fn source(fields: &[SrcField]) -> Source {
    let mut s = Source::default();
    for f in fields.iter().take(6) {
        let v = &f.value;
        match f.field % 12 {
            0 => s.principals.push(v.get(PRINCIPALS)),
            1 => s.not_principals.push(v.get(PRINCIPALS)),
            2 => s.request_principals.push(v.get(REQ_PRINCIPALS)),
            3 => s.not_request_principals.push(v.get(REQ_PRINCIPALS)),
            4 => s.namespaces.push(v.get(NAMESPACES)),
            5 => s.not_namespaces.push(v.get(NAMESPACES)),
            6 => s.service_accounts.push(v.get(SERVICE_ACCOUNTS)),
            7 => s.not_service_accounts.push(v.get(SERVICE_ACCOUNTS)),
            8 => s.ip_blocks.push(v.get(IPS)),
            9 => s.not_ip_blocks.push(v.get(IPS)),
            10 => s.remote_ip_blocks.push(v.get(IPS)),
            _ => s.not_remote_ip_blocks.push(v.get(IPS)),
        }
    }
    s
}

fn operation(fields: &[OpField]) -> Operation {
    let mut o = Operation::default();
    for f in fields.iter().take(6) {
        let v = &f.value;
        match f.field % 8 {
            0 => o.hosts.push(v.get(HOSTS)),
            1 => o.not_hosts.push(v.get(HOSTS)),
            2 => o.ports.push(v.get(PORTS)),
            3 => o.not_ports.push(v.get(PORTS)),
            4 => o.methods.push(v.get(METHODS)),
            5 => o.not_methods.push(v.get(METHODS)),
            6 => o.paths.push(v.get(PATHS)),
            _ => o.not_paths.push(v.get(PATHS)),
        }
    }
    o
}

fn rule(r: &ArbRule) -> Rule {
    Rule {
        from: r
            .from
            .iter()
            .take(3)
            .map(|f| RuleFrom {
                source: f.as_deref().map(source),
            })
            .collect(),
        to: r
            .to
            .iter()
            .take(3)
            .map(|t| RuleTo {
                operation: t.as_deref().map(operation),
            })
            .collect(),
        when: r
            .when
            .iter()
            .take(3)
            .map(|c| Condition {
                key: c.key.get(WHEN_KEYS),
                values: list(&c.values, WHEN_VALUES),
                not_values: list(&c.not_values, WHEN_VALUES),
            })
            .collect(),
    }
}

fn resource(
    ns: &str,
    name: String,
    annotations: BTreeMap<String, String>,
    created: Option<String>,
    spec: AuthorizationPolicy,
) -> Resource {
    Resource {
        kind: Kind::AuthorizationPolicy,
        api_version: "security.istio.io/v1".into(),
        name,
        namespace: Some(ns.to_string()),
        labels: BTreeMap::new(),
        annotations,
        creation_timestamp: created,
        object: Object::AuthorizationPolicy(Box::new(spec)),
        origin: Origin {
            location: Location::new("fuzz.yaml", 1, 1),
            spans: Arc::new(SpanMap::default()),
        },
        raw: Value::Null,
    }
}

fn policy_resource(i: usize, p: &ArbPolicy) -> Resource {
    let action = match p.action % 4 {
        0 => Action::Allow,
        1 => Action::Deny,
        2 => Action::Audit,
        _ => Action::Custom,
    };
    let spec = AuthorizationPolicy {
        selector: p.selector.as_ref().map(|labels| WorkloadSelector {
            match_labels: labels
                .iter()
                .take(2)
                .map(|(k, v)| (k.get(LABEL_KEYS), v.get(LABEL_VALUES)))
                .collect(),
        }),
        target_ref: None,
        target_refs: Vec::new(),
        rules: p.rules.iter().flatten().take(4).map(rule).collect(),
        action: Some(action),
        provider: p.provider.as_ref().map(|v| ExtensionProvider {
            name: v.get(PROVIDERS),
        }),
    };
    let mut annotations = BTreeMap::new();
    if let Some(d) = &p.dry_run {
        annotations.insert("istio.io/dry-run".to_string(), d.get(DRY_RUN));
    }
    let created = p
        .created
        .map(|s| format!("2024-01-01T00:00:{:02}Z", s % 60));
    let ns = NAMESPACES_OF_POLICIES[p.ns as usize % NAMESPACES_OF_POLICIES.len()];
    resource(ns, format!("p{i}"), annotations, created, spec)
}

fn with_spec(r: &Resource, name: &str, spec: AuthorizationPolicy) -> Resource {
    resource(
        r.ns(),
        name.to_string(),
        BTreeMap::new(),
        r.creation_timestamp.clone(),
        spec,
    )
}

fn spec_of(r: &Resource) -> &AuthorizationPolicy {
    match &r.object {
        Object::AuthorizationPolicy(p) => p,
        _ => unreachable!(),
    }
}

/// The parts of a decision that dry-run policies must not change.
fn enforced(d: &Decision<'_>) -> String {
    format!(
        "{} {:?} {:?} {:?}",
        d.allowed, d.reason, d.custom, d.audited_by
    )
}

fn check_reason(pols: &AuthzPolicies, req: &AuthzRequest<'_>, d: &Decision<'_>) {
    let enforced_allow = pols
        .policies()
        .filter(|p| p.action == Action::Allow && !p.dry_run)
        .count();
    for p in pols
        .policies()
        .filter(|p| p.action == Action::Deny && !p.dry_run)
    {
        if let Some(r) = p.first_match(req) {
            assert!(
                !d.allowed,
                "DENY rule {r} matched but the request is allowed: {d}"
            );
        }
    }
    match d.reason {
        DecisionReason::Allowed(r) => {
            assert!(d.allowed);
            assert_eq!(r.action, Action::Allow, "{d}");
            let p = pols
                .policies()
                .find(|p| &p.id == r.policy && p.action == Action::Allow && !p.dry_run)
                .unwrap_or_else(|| panic!("allowing policy not found: {d}"));
            assert_eq!(p.first_match(req), Some(r), "{d}");
            // Invalid values and unknown `when` keys drop ALLOW rules (module docs): a rule
            // reported in the diagnostics must never allow anything, on HTTP or TCP.
            if let Some(g) = pols
                .diagnostics()
                .iter()
                .find(|g| &g.policy == r.policy && g.rule == Some(r.rule))
            {
                panic!(
                    "ALLOW rule reported as dropped ({g}) allowed a {} request: {d}",
                    if req.is_http { "HTTP" } else { "TCP" }
                );
            }
        }
        DecisionReason::NoAllowPolicies => {
            assert!(d.allowed);
            assert_eq!(
                enforced_allow, 0,
                "NoAllowPolicies with ALLOW policies: {d}"
            );
        }
        DecisionReason::Denied(r) => {
            assert!(!d.allowed);
            assert_eq!(r.action, Action::Deny, "{d}");
        }
        DecisionReason::NoAllowMatched { allow_policies } => {
            assert!(!d.allowed);
            assert_eq!(allow_policies.len(), enforced_allow, "{d}");
            for p in pols
                .policies()
                .filter(|p| p.action == Action::Allow && !p.dry_run)
            {
                assert_eq!(p.first_match(req), None, "{d}");
            }
        }
        DecisionReason::CustomMisconfigured { rule, .. } => {
            assert!(!d.allowed);
            assert_eq!(rule.action, Action::Custom, "{d}");
        }
    }
}

/// A concrete path a path pattern must match, if the pattern is one we can instantiate.
fn instantiate_path(p: &str) -> Option<String> {
    if p.contains('?') {
        return None; // the query is not part of path matching
    }
    if p.contains("{*}") || p.contains("{**}") {
        return Some(p.replace("{**}", "a/b").replace("{*}", "seg"));
    }
    if p == "*" {
        return Some("/zz".into());
    }
    if let Some(rest) = p.strip_prefix('*') {
        return Some(format!("zz{rest}"));
    }
    if let Some(body) = p.strip_suffix('*') {
        return Some(format!("{body}zz"));
    }
    Some(p.to_string())
}

/// A DNS name with an optional trailing dot and port (`*.` or `*` wildcards at the ends), and
/// the authority it must match.
fn instantiate_host(h: &str) -> Option<String> {
    let (host, port) = match h.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (h, None),
    };
    if let Some(p) = port {
        if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
    }
    let (core, pre, post) = if let Some(rest) = host.strip_prefix("*.") {
        (rest, "zz.", "")
    } else if let Some(rest) = host.strip_suffix(".*") {
        if port.is_some() {
            return None;
        }
        (rest, "", ".zz")
    } else {
        (host, "", "")
    };
    let labels = core.strip_suffix('.').unwrap_or(core);
    let dns = !labels.is_empty()
        && labels
            .split('.')
            .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    if !dns {
        return None;
    }
    let mut out = format!("{pre}{core}{post}");
    if let Some(p) = port {
        out.push(':');
        out.push_str(p);
    }
    Some(out)
}

fn probe_path(pattern: &str, labels: &BTreeMap<String, String>) {
    let Some(path) = instantiate_path(pattern) else {
        return;
    };
    for action in [Action::Allow, Action::Deny] {
        let spec = AuthorizationPolicy {
            action: Some(action),
            rules: vec![Rule {
                to: vec![RuleTo {
                    operation: Some(Operation {
                        paths: vec![pattern.to_string()],
                        ..Operation::default()
                    }),
                }],
                ..Rule::default()
            }],
            ..AuthorizationPolicy::default()
        };
        let res = [resource(
            WORKLOAD_NS,
            "probe".into(),
            BTreeMap::new(),
            None,
            spec,
        )];
        let pols = AuthzPolicies::compile(&res, WORKLOAD_NS, labels, ROOT);
        if !pols.diagnostics().is_empty() {
            return; // pattern refused (reported); nothing to check
        }
        let headers = HeaderMap::new();
        let req = AuthzRequest::http(&headers, "GET", "example.com", &path);
        stat(Stat::PathProbe);
        let d = pols.evaluate(&req);
        assert_eq!(
            d.allowed,
            action == Action::Allow,
            "path pattern {pattern:?} ({action}) does not match {path:?}: {d}"
        );
    }
}

fn probe_host(pattern: &str, labels: &BTreeMap<String, String>) {
    let Some(authority) = instantiate_host(pattern) else {
        return;
    };
    for action in [Action::Allow, Action::Deny] {
        let spec = AuthorizationPolicy {
            action: Some(action),
            rules: vec![Rule {
                to: vec![RuleTo {
                    operation: Some(Operation {
                        hosts: vec![pattern.to_string()],
                        ..Operation::default()
                    }),
                }],
                ..Rule::default()
            }],
            ..AuthorizationPolicy::default()
        };
        let res = [resource(
            WORKLOAD_NS,
            "probe".into(),
            BTreeMap::new(),
            None,
            spec,
        )];
        let pols = AuthzPolicies::compile(&res, WORKLOAD_NS, labels, ROOT);
        let headers = HeaderMap::new();
        for auth in [authority.clone(), authority.to_ascii_uppercase()] {
            let req = AuthzRequest::http(&headers, "GET", &auth, "/");
            stat(Stat::HostProbe);
            let d = pols.evaluate(&req);
            assert_eq!(
                d.allowed,
                action == Action::Allow,
                "host pattern {pattern:?} ({action}) does not match authority {auth:?}: {d}"
            );
        }
    }
}

/// Counts of the checks that ran, printed every 65536 requests when `TRELLIS_FUZZ_STATS` is
/// set (to see that every invariant is reached).
#[derive(Clone, Copy)]
enum Stat {
    Request,
    Allowed,
    AllowedByRule,
    DeniedByDeny,
    DenyCopy,
    PathProbe,
    HostProbe,
}

fn stat(s: Stat) {
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    static C: [AtomicU64; 7] = [const { AtomicU64::new(0) }; 7];
    let n = C[s as usize].fetch_add(1, Relaxed) + 1;
    if matches!(s, Stat::Request)
        && n % 65536 == 0
        && std::env::var_os("TRELLIS_FUZZ_STATS").is_some()
    {
        let c: Vec<u64> = C.iter().map(|c| c.load(Relaxed)).collect();
        eprintln!(
            "authz_match: requests {} allowed {} (by an ALLOW rule {}) denied by DENY {} deny-copy checks {} path probes {} host probes {}",
            c[0], c[1], c[2], c[3], c[4], c[5], c[6]
        );
    }
}

fuzz_target!(|input: Input| {
    let labels: BTreeMap<String, String> = BTreeMap::from([
        ("app".to_string(), "httpbin".to_string()),
        ("version".to_string(), "v1".to_string()),
    ]);
    let trust_domains: Vec<String> = list(&input.trust_domains, TRUST_DOMAINS);
    let target = AuthzTarget {
        trust_domains: &trust_domains,
        ..AuthzTarget::new(WORKLOAD_NS, &labels)
    };
    let resources: Vec<Resource> = input
        .policies
        .iter()
        .take(6)
        .enumerate()
        .map(|(i, p)| policy_resource(i, p))
        .collect();

    let pols = AuthzPolicies::compile_for(&resources, &target, ROOT);
    assert_eq!(
        pols,
        AuthzPolicies::compile_for(&resources, &target, ROOT),
        "compile is not deterministic"
    );
    for d in pols.diagnostics() {
        let _ = d.to_string();
    }
    let _ = serde_json::to_string(&pols);

    // Variants: + an ALLOW policy with `spec: {}`; without the dry-run policies.
    let mut with_empty_allow = resources.clone();
    with_empty_allow.push(resource(
        WORKLOAD_NS,
        "allow-nothing".into(),
        BTreeMap::new(),
        None,
        AuthorizationPolicy::default(),
    ));
    let pols_empty_allow = AuthzPolicies::compile_for(&with_empty_allow, &target, ROOT);
    let only_empty_allow =
        AuthzPolicies::compile_for(&with_empty_allow[resources.len()..], &target, ROOT);
    let dry_run_ids: Vec<_> = pols
        .policies()
        .filter(|p| p.dry_run)
        .map(|p| p.id.clone())
        .collect();
    let without_dry_run: Vec<Resource> = resources
        .iter()
        .filter(|r| {
            !dry_run_ids
                .iter()
                .any(|id| id.namespace == r.ns() && id.name == r.name)
        })
        .cloned()
        .collect();
    let pols_no_dry_run = AuthzPolicies::compile_for(&without_dry_run, &target, ROOT);
    let none = AuthzPolicies::compile_for(&[], &target, ROOT);
    assert!(none.is_empty());

    for r in input.requests.iter().take(4) {
        let mut headers = HeaderMap::new();
        for (n, v) in r.headers.iter().take(4) {
            let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(n.get(HEADER_NAMES).as_bytes()),
                HeaderValue::from_bytes(v.get(HEADER_VALUES).as_bytes()),
            ) else {
                continue;
            };
            headers.append(n, v);
        }
        let principal = r.principal.as_ref().map(|v| v.get(PRINCIPALS));
        let sni = r.sni.as_ref().map(|v| v.get(SNIS));
        let request_principal = r.request_principal.as_ref().map(|v| v.get(REQ_PRINCIPALS));
        let claims = r.claims.as_ref().map(Claims::to_json);
        let host = r.host.get(REQ_HOSTS);
        let method = r.method.get(METHODS);
        let path = r.path.get(REQ_PATHS);
        let base = if r.tcp {
            AuthzRequest::tcp(&headers)
        } else {
            AuthzRequest::http(&headers, &method, &host, &path)
        };
        let req = AuthzRequest {
            source_principal: principal.as_deref(),
            source_ip: r.source_ip.map(ArbIp::get),
            remote_ip: r.remote_ip.map(ArbIp::get),
            destination_ip: r.destination_ip.map(ArbIp::get),
            destination_port: r.port.map(|(known, p)| {
                if known {
                    [8000, 80, 443][p as usize % 3]
                } else {
                    p
                }
            }),
            sni: sni.as_deref(),
            request_principal: request_principal.as_deref(),
            claims: claims.as_ref(),
            ..base
        };

        // No policies: allowed.
        for empty in [&none, &AuthzPolicies::default()] {
            let d = empty.evaluate(&req);
            assert!(
                d.allowed && d.reason == DecisionReason::NoAllowPolicies,
                "{d}"
            );
        }

        let d = pols.evaluate(&req);
        assert_eq!(d, pols.evaluate(&req), "evaluate is not deterministic");
        stat(Stat::Request);
        if d.allowed {
            stat(Stat::Allowed);
        }
        match d.reason {
            DecisionReason::Allowed(_) => stat(Stat::AllowedByRule),
            DecisionReason::Denied(_) => stat(Stat::DeniedByDeny),
            _ => {}
        }
        let _ = d.to_string();
        let _ = d.outcome();
        let _ = d.rule();
        let _ = serde_json::to_string(&d);
        check_reason(&pols, &req, &d);
        if let Some(dr) = &d.dry_run_would {
            let _ = dr.reason.to_string();
        }

        // `spec: {}` ALLOW policy: denies everything alone; with others, only ALLOW rules allow.
        let d_only = only_empty_allow.evaluate(&req);
        assert!(
            !d_only.allowed,
            "spec: {{}} ALLOW policy allowed a request: {d_only}"
        );
        let d_empty = pols_empty_allow.evaluate(&req);
        check_reason(&pols_empty_allow, &req, &d_empty);
        assert_eq!(
            d_empty.allowed,
            d.allowed && matches!(d.reason, DecisionReason::Allowed(_)),
            "adding spec: {{}} ALLOW: before {d}, after {d_empty}"
        );

        // Dry-run policies never decide.
        let d_no_dry = pols_no_dry_run.evaluate(&req);
        assert_eq!(
            enforced(&d),
            enforced(&d_no_dry),
            "dry-run policies changed the decision"
        );

        // A DENY policy with the spec of the ALLOW policy that allowed the request denies it.
        if let DecisionReason::Allowed(rr) = d.reason {
            let allowing = resources
                .iter()
                .find(|x| x.ns() == rr.policy.namespace && x.name == rr.policy.name)
                .expect("allowing policy is one of the inputs");
            let mut spec = spec_of(allowing).clone();
            spec.action = Some(Action::Deny);
            spec.provider = None;
            let mut with_deny = resources.clone();
            with_deny.push(with_spec(allowing, "deny-copy", spec));
            let pols_deny = AuthzPolicies::compile_for(&with_deny, &target, ROOT);
            let dd = pols_deny.evaluate(&req);
            stat(Stat::DenyCopy);
            assert!(
                !dd.allowed,
                "ALLOW rule {rr} allowed the request but a DENY copy of it does not deny it: {dd}"
            );
            check_reason(&pols_deny, &req, &dd);
        }
    }

    for p in input.path_probes.iter().take(2) {
        probe_path(&p.get(PATHS), &labels);
    }
    for h in input.host_probes.iter().take(2) {
        probe_host(&h.get(HOSTS), &labels);
    }
});
