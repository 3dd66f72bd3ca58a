//! Adversarial corpus for authorization and path normalization: policy YAML + request →
//! expected outcome, as data. Every request goes through Trellis's default path normalization
//! first, as the proxy does; a normalization error is a 400.

use std::collections::BTreeMap;
use std::net::IpAddr;

use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{json, Value};
use trellis_api::load::{LoadOptions, ResourceSet};
use trellis_api::Resource;
use trellis_model::authz::{AuthzPolicies, AuthzRequest, Outcome};
use trellis_model::normalize::{normalize_path, normalize_path_with, Normalization, PathOptions};

const ROOT: &str = "istio-system";

fn load(yaml: &str) -> Vec<Resource> {
    let mut set = ResourceSet::default();
    let opts = LoadOptions {
        default_namespace: "foo".into(),
        ..LoadOptions::default()
    };
    set.add_text("policies.yaml", yaml, &opts);
    let docs = yaml.split("\n---").filter(|d| d.contains("kind:")).count();
    assert_eq!(
        set.resources.len(),
        docs,
        "some policy failed to load: {:#?}",
        set.diagnostics
    );
    set.resources
}

fn workload_labels() -> BTreeMap<String, String> {
    BTreeMap::from([("app".to_string(), "httpbin".to_string())])
}

/// A request as data.
#[derive(Clone, Debug)]
struct R {
    method: &'static str,
    host: &'static str,
    path: &'static str,
    headers: Vec<(&'static str, &'static str)>,
    principal: Option<&'static str>,
    source_ip: Option<&'static str>,
    remote_ip: Option<&'static str>,
    port: Option<u16>,
    sni: Option<&'static str>,
    jwt: Option<(&'static str, Value)>,
    tcp: bool,
}

fn get(path: &'static str) -> R {
    R {
        method: "GET",
        host: "httpbin.foo.svc.cluster.local",
        path,
        headers: Vec::new(),
        principal: None,
        source_ip: Some("10.0.0.9"),
        remote_ip: None,
        port: Some(8000),
        sni: None,
        jwt: None,
        tcp: false,
    }
}

fn tcp(port: u16) -> R {
    R {
        method: "",
        host: "",
        path: "",
        tcp: true,
        port: Some(port),
        ..get("/")
    }
}

impl R {
    fn method(mut self, m: &'static str) -> R {
        self.method = m;
        self
    }
    fn host(mut self, h: &'static str) -> R {
        self.host = h;
        self
    }
    fn header(mut self, k: &'static str, v: &'static str) -> R {
        self.headers.push((k, v));
        self
    }
    fn from(mut self, principal: &'static str) -> R {
        self.principal = Some(principal);
        self
    }
    fn ip(mut self, ip: &'static str) -> R {
        self.source_ip = Some(ip);
        self
    }
    fn remote(mut self, ip: &'static str) -> R {
        self.remote_ip = Some(ip);
        self
    }
    fn port(mut self, p: u16) -> R {
        self.port = Some(p);
        self
    }
    fn sni(mut self, s: &'static str) -> R {
        self.sni = Some(s);
        self
    }
    fn jwt(mut self, principal: &'static str, claims: Value) -> R {
        self.jwt = Some((principal, claims));
        self
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Exp {
    Allow,
    Deny,
    /// 400 from path normalization.
    Bad,
    /// The extension provider must be asked; if it allows, the request is allowed.
    Custom(&'static str),
    /// The extension provider must be asked first; if it allows, DENY/ALLOW deny.
    CustomThenDeny(&'static str),
}
use Exp::*;

/// Runs one request; returns the outcome and the decision's explanation.
fn run(policies: &AuthzPolicies, r: &R) -> (Exp, String) {
    let path = if r.tcp {
        String::new()
    } else {
        match normalize_path(r.path, Normalization::DecodeAndMergeSlashes) {
            Ok(p) => p.into_owned(),
            Err(e) => return (Bad, e.to_string()),
        }
    };
    let mut headers = HeaderMap::new();
    for (k, v) in &r.headers {
        headers.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    let ip = |s: Option<&str>| s.map(|s| s.parse::<IpAddr>().unwrap());
    let req = AuthzRequest {
        source_principal: r.principal,
        source_ip: ip(r.source_ip),
        remote_ip: ip(r.remote_ip),
        destination_ip: Some("10.0.0.1".parse().unwrap()),
        destination_port: r.port,
        sni: r.sni,
        request_principal: r.jwt.as_ref().map(|(p, _)| *p),
        claims: r.jwt.as_ref().map(|(_, c)| c),
        headers: &headers,
        host: r.host,
        method: r.method,
        path: &path,
        is_http: !r.tcp,
    };
    let d = policies.evaluate(&req);
    let exp = match d.outcome() {
        Outcome::Allow => Allow,
        Outcome::Deny => Deny,
        Outcome::Custom {
            provider, allowed, ..
        } => {
            let p = match provider {
                "ext-authz" => "ext-authz",
                "other" => "other",
                p => panic!("unexpected provider {p}"),
            };
            if allowed {
                Custom(p)
            } else {
                CustomThenDeny(p)
            }
        }
    };
    (exp, d.to_string())
}

struct Group {
    name: &'static str,
    yaml: &'static str,
    cases: Vec<(R, Exp)>,
}

fn check(groups: Vec<Group>) {
    let labels = workload_labels();
    let mut failures = Vec::new();
    let mut n = 0;
    for g in groups {
        let resources = load(g.yaml);
        let policies = AuthzPolicies::compile(&resources, "foo", &labels, ROOT);
        for (r, want) in &g.cases {
            n += 1;
            let (got, why) = run(&policies, r);
            if got != *want {
                failures.push(format!(
                    "[{}] {} {} {:?} (headers {:?}, from {:?}, jwt {:?}, tcp {}): want {:?}, got {:?}: {}",
                    g.name,
                    r.method,
                    r.host,
                    r.path,
                    r.headers,
                    r.principal,
                    r.jwt.as_ref().map(|j| j.0),
                    r.tcp,
                    want,
                    got,
                    why
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {n} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

const DENY_ADMIN_ALLOW_ALL: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: foo}
spec:
  action: DENY
  rules:
  - to:
    - operation:
        paths: ["/admin*"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-all-paths, namespace: foo}
spec:
  rules:
  - to:
    - operation:
        paths: ["*"]
"#;

#[test]
fn path_traversal_and_encoding_variants_of_admin_are_denied() {
    let denied = [
        "/admin",
        "/admin/",
        "/admin/users",
        "/adminx",
        "/admin?x=1",
        "/admin?",
        "/admin#frag",
        "/admin?x#y",
        "/admin/.",
        "/admin/./",
        "//admin",
        "///admin///",
        "/./admin",
        "/x/../admin",
        "/public/../admin",
        "/public/./../admin",
        "/public/../../../admin",
        "/../admin",
        "/public/%2e%2e/admin",
        "/public/%2E%2E/admin",
        "/public/.%2e/admin",
        "/public/%2e./admin",
        "/%2e%2e/admin",
        "/%2e/admin",
        "/%61dmin",
        "/%61%64%6d%69%6e",
        "/%41dmin/../admin",
        "/%2Fadmin",
        "/%2fadmin",
        "/admin%2F",
        "/admin%2fsecret",
        "/x/..%2fadmin",
        "/x%2f..%2fadmin",
        "/public%2F..%2Fadmin",
        "/public/%2e%2e%2fadmin",
        "/%5Cadmin",
        "/%5cadmin",
        "/public%5C..%5Cadmin",
        "/public/..%5cadmin",
        "/admin%2e",
        "/admin%7e",
        "/\\admin",
        "/x\\..\\admin",
    ];
    let rejected = [
        "/admin;x=y",
        "/user/..;p/admin",
        "/public/..;/admin",
        "/admin%00",
        "/admin\0",
        "/admin%zz",
        "/admin%2",
        "/admin\r\nx-injected: 1",
        "admin",
        "*",
        "http://evil/admin",
    ];
    let allowed = [
        "/public",
        "/",
        "/public/admin",
        "/pub/%2e%2e%2e/admin",
        // Paths are case-sensitive, as in Istio (a case-insensitive backend needs both cases
        // in the policy).
        "/Admin",
        // No double decoding: the upstream receives %252e too.
        "/%252e%252e/admin",
        "/public/..%252fadmin",
        "/public/%2e%2e%2e/admin",
        // RFC 3986 (and Envoy): `..` removes the empty segment, so this is `/public/admin`,
        // and that is what the upstream receives.
        "/public//..//admin",
    ];
    let mut cases = Vec::new();
    cases.extend(denied.iter().map(|p| (get(p), Deny)));
    cases.extend(rejected.iter().map(|p| (get(p), Bad)));
    cases.extend(allowed.iter().map(|p| (get(p), Allow)));
    // Every method, not only GET.
    cases.extend(
        ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]
            .iter()
            .map(|m| (get("//admin/").method(m), Deny)),
    );
    check(vec![Group {
        name: "deny /admin* + allow *",
        yaml: DENY_ADMIN_ALLOW_ALL,
        cases,
    }]);
}

#[test]
fn hosts_case_port_and_trailing_dot() {
    check(vec![
        Group {
            name: "allow example.com",
            yaml: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: hosts, namespace: foo}
spec:
  rules:
  - to:
    - operation:
        hosts: ["example.com", "*.api.example.com", "admin.example.com:8443"]
"#,
            cases: vec![
                (get("/").host("example.com"), Allow),
                (get("/").host("EXAMPLE.COM"), Allow),
                (get("/").host("Example.Com:8080"), Allow),
                (get("/").host("example.com."), Allow),
                (get("/").host("example.com.:443"), Allow),
                (get("/").host("v1.api.example.com:443"), Allow),
                (get("/").host("V1.API.EXAMPLE.COM."), Allow),
                (get("/").host("admin.example.com:8443"), Allow),
                (get("/").host("ADMIN.example.com.:8443"), Allow),
                (get("/").host("admin.example.com"), Deny),
                (get("/").host("admin.example.com:443"), Deny),
                (get("/").host("api.example.com"), Deny),
                (get("/").host("example.com.evil.org"), Deny),
                (get("/").host("evil-example.com"), Deny),
                (get("/").host("examplexcom"), Deny),
                (get("/").host(""), Deny),
            ],
        },
        Group {
            name: "deny admin host",
            yaml: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin-host, namespace: foo}
spec:
  action: DENY
  rules:
  - to:
    - operation:
        hosts: ["admin.example.com"]
"#,
            cases: vec![
                (get("/").host("admin.example.com"), Deny),
                (get("/").host("ADMIN.EXAMPLE.COM"), Deny),
                (get("/").host("admin.example.com."), Deny),
                (get("/").host("admin.example.com:443"), Deny),
                (get("/").host("Admin.Example.Com..:80"), Deny),
                (get("/").host("www.example.com"), Allow),
            ],
        },
    ]);
}

#[test]
fn duplicate_and_padded_headers() {
    check(vec![
        Group {
            name: "deny x-user admin",
            yaml: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin-user, namespace: foo}
spec:
  action: DENY
  rules:
  - when:
    - key: request.headers[X-User]
      values: ["admin"]
"#,
            cases: vec![
                (get("/").header("x-user", "admin"), Deny),
                (get("/").header("X-USER", "admin"), Deny),
                (get("/").header("x-user", " admin\t"), Deny),
                (
                    get("/").header("x-user", "guest").header("x-user", "admin"),
                    Deny,
                ),
                (
                    get("/").header("x-user", "admin").header("x-user", "guest"),
                    Deny,
                ),
                (get("/").header("x-user", "guest"), Allow),
                (get("/").header("x-user", "Admin"), Allow),
                (get("/").header("x-user", "guest, admin"), Allow),
                (get("/"), Allow),
            ],
        },
        Group {
            name: "allow x-role reader",
            yaml: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-reader, namespace: foo}
spec:
  rules:
  - when:
    - key: request.headers[x-role]
      values: ["reader"]
"#,
            cases: vec![
                (get("/").header("x-role", "reader"), Allow),
                (get("/").header("x-role", "  reader "), Allow),
                (
                    get("/")
                        .header("x-role", "reader")
                        .header("x-role", "reader"),
                    Allow,
                ),
                // Ambiguous: the app may read "admin". ALLOW needs every value to match.
                (
                    get("/")
                        .header("x-role", "reader")
                        .header("x-role", "admin"),
                    Deny,
                ),
                (
                    get("/")
                        .header("x-role", "admin")
                        .header("x-role", "reader"),
                    Deny,
                ),
                (get("/").header("x-role", "readers"), Deny),
                (get("/"), Deny),
            ],
        },
        Group {
            name: "deny unless x-env prod (notValues)",
            yaml: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-non-prod, namespace: foo}
spec:
  action: DENY
  rules:
  - when:
    - key: request.headers[x-env]
      notValues: ["prod"]
"#,
            cases: vec![
                (get("/").header("x-env", "prod"), Allow),
                (get("/").header("x-env", "dev"), Deny),
                (
                    get("/").header("x-env", "prod").header("x-env", "dev"),
                    Deny,
                ),
                (get("/"), Deny),
            ],
        },
        Group {
            name: "allow when header present (*)",
            yaml: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-with-token, namespace: foo}
spec:
  rules:
  - when:
    - key: request.headers[x-token]
      values: ["*"]
"#,
            cases: vec![
                (get("/").header("x-token", "abc"), Allow),
                (get("/").header("x-token", ""), Allow),
                (get("/"), Deny),
            ],
        },
        Group {
            name: "inline headers (comma lists)",
            yaml: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-inline, namespace: foo}
spec:
  action: DENY
  rules:
  - when:
    - key: request.experimental.inline.headers[x-groups]
      values: ["banned"]
"#,
            cases: vec![
                (get("/").header("x-groups", "a, banned ,c"), Deny),
                (
                    get("/")
                        .header("x-groups", "a")
                        .header("x-groups", "banned"),
                    Deny,
                ),
                (get("/").header("x-groups", "a,unbanned"), Allow),
            ],
        },
    ]);
}

#[test]
fn identities_are_segment_exact_and_metacharacter_safe() {
    check(vec![
        Group {
            name: "serviceAccounts",
            yaml: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-sa, namespace: foo}
spec:
  rules:
  - from:
    - source:
        serviceAccounts: ["cert-manager.io/controller", "sleep"]
"#,
            cases: vec![
                (
                    get("/").from("cluster.local/ns/cert-manager.io/sa/controller"),
                    Allow,
                ),
                (
                    get("/").from("spiffe://cluster.local/ns/cert-manager.io/sa/controller"),
                    Allow,
                ),
                (
                    get("/").from("other.td/ns/cert-manager.io/sa/controller"),
                    Allow,
                ),
                (
                    get("/").from("cluster.local/ns/cert-manager-io/sa/controller"),
                    Deny,
                ),
                (
                    get("/").from("cluster.local/ns/cert-managerXio/sa/controller"),
                    Deny,
                ),
                (
                    get("/").from("cluster.local/ns/cert-manager.io/sa/controller2"),
                    Deny,
                ),
                (
                    get("/").from("cluster.local/ns/cert-manager.io/sa/controller/x"),
                    Deny,
                ),
                (
                    get("/").from("cluster.local/ns/x/sa/y/ns/cert-manager.io/sa/controller"),
                    Deny,
                ),
                (get("/").from("cluster.local/ns/foo/sa/sleep"), Allow),
                (get("/").from("cluster.local/ns/foo/sa/sleep-v2"), Deny),
                (get("/").from("cluster.local/ns/foofoo/sa/sleep"), Deny),
                (get("/").from("cluster.local/ns/bar/sa/sleep"), Deny),
                (get("/"), Deny),
            ],
        },
        Group {
            name: "principals",
            yaml: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-principal, namespace: foo}
spec:
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/a.b/sa/c", "cluster.local/ns/team/sa/*"]
"#,
            cases: vec![
                (get("/").from("cluster.local/ns/a.b/sa/c"), Allow),
                (get("/").from("cluster.local/ns/aXb/sa/c"), Deny),
                (get("/").from("cluster.local/ns/a.b/sa/cc"), Deny),
                (get("/").from("cluster.local/ns/team/sa/anything"), Allow),
                (get("/").from("cluster.local/ns/team-b/sa/x"), Deny),
                (get("/"), Deny),
            ],
        },
        Group {
            name: "namespaces prod vs prod-staging",
            yaml: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-prod, namespace: foo}
spec:
  rules:
  - from:
    - source:
        namespaces: ["prod"]
    - source:
        namespaces: ["team-*"]
"#,
            cases: vec![
                (get("/").from("cluster.local/ns/prod/sa/x"), Allow),
                (get("/").from("cluster.local/ns/prod-staging/sa/x"), Deny),
                (get("/").from("cluster.local/ns/preprod/sa/x"), Deny),
                (get("/").from("cluster.local/ns/staging/sa/prod"), Deny),
                (get("/").from("cluster.local/ns/x/sa/y/ns/prod"), Deny),
                (get("/").from("cluster.local/ns/team-a/sa/x"), Allow),
                (get("/").from("cluster.local/ns/team/sa/x"), Deny),
                (get("/").header("x-namespace", "prod"), Deny),
                (get("/"), Deny),
            ],
        },
        Group {
            name: "source.* conditions",
            yaml: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-when-source, namespace: foo}
spec:
  rules:
  - when:
    - key: source.namespace
      values: ["prod"]
    - key: source.serviceAccount
      values: ["prod/api"]
    - key: source.principal
      notValues: ["cluster.local/ns/prod/sa/api-old"]
"#,
            cases: vec![
                (get("/").from("cluster.local/ns/prod/sa/api"), Allow),
                (get("/").from("cluster.local/ns/prod/sa/api-old"), Deny),
                (get("/").from("cluster.local/ns/prod.x/sa/api"), Deny),
                (get("/"), Deny),
            ],
        },
    ]);
}

#[test]
fn star_semantics_and_not_fields() {
    check(vec![
        Group {
            name: "principals *",
            yaml: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: mtls-only, namespace: foo}
spec:
  rules:
  - from:
    - source:
        principals: ["*"]
"#,
            cases: vec![
                (get("/").from("cluster.local/ns/x/sa/y"), Allow),
                (get("/"), Deny),
                (get("/").from(""), Deny),
            ],
        },
        Group {
            name: "requestPrincipals * requires a principal",
            yaml: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: require-jwt, namespace: foo}
spec:
  rules:
  - from:
    - source:
        requestPrincipals: ["*"]
"#,
            cases: vec![
                (
                    get("/").jwt(
                        "https://issuer/user",
                        json!({"iss": "https://issuer", "sub": "user"}),
                    ),
                    Allow,
                ),
                (
                    get("/").jwt(
                        "https://issuer/",
                        json!({"iss": "https://issuer", "sub": ""}),
                    ),
                    Deny,
                ),
                (
                    get("/").jwt("https://issuer", json!({"iss": "https://issuer"})),
                    Deny,
                ),
                (get("/"), Deny),
                (get("/").header("authorization", "Bearer forged"), Deny),
            ],
        },
        Group {
            name: "requestPrincipals issuer wildcard",
            yaml: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: require-issuer, namespace: foo}
spec:
  rules:
  - from:
    - source:
        requestPrincipals: ["https://auth.example.com/*"]
"#,
            cases: vec![
                (
                    get("/").jwt(
                        "https://auth.example.com/u1",
                        json!({"iss": "https://auth.example.com", "sub": "u1"}),
                    ),
                    Allow,
                ),
                (
                    get("/").jwt(
                        "https://auth.example.com/evil/u1",
                        json!({"iss": "https://auth.example.com/evil", "sub": "u1"}),
                    ),
                    Deny,
                ),
                (
                    get("/").jwt(
                        "https://auth.example.com.evil.org/u1",
                        json!({"iss": "https://auth.example.com.evil.org", "sub": "u1"}),
                    ),
                    Deny,
                ),
            ],
        },
        Group {
            name: "deny plaintext (notPrincipals *)",
            yaml: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-plaintext, namespace: foo}
spec:
  action: DENY
  rules:
  - from:
    - source:
        notPrincipals: ["*"]
"#,
            cases: vec![
                (get("/"), Deny),
                (get("/").from("cluster.local/ns/x/sa/y"), Allow),
                (tcp(5432), Deny),
                (tcp(5432).from("cluster.local/ns/x/sa/y"), Allow),
            ],
        },
        Group {
            name: "notIpBlocks / notPaths / notMethods / notPorts",
            yaml: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-outside, namespace: foo}
spec:
  action: DENY
  rules:
  - from:
    - source:
        notIpBlocks: ["10.0.0.0/8"]
  - to:
    - operation:
        notMethods: ["GET", "HEAD"]
        notPaths: ["/upload*"]
        notPorts: ["8080"]
"#,
            cases: vec![
                (get("/"), Allow),
                (get("/").ip("192.168.1.1"), Deny),
                (get("/").method("POST"), Deny),
                (get("/upload/x").method("POST"), Allow),
                (get("/").method("POST").port(8080), Allow),
                (get("/").method("HEAD"), Allow),
            ],
        },
        Group {
            name: "methods are case-sensitive",
            yaml: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: get-only, namespace: foo}
spec:
  rules:
  - to:
    - operation:
        methods: ["GET"]
"#,
            cases: vec![
                (get("/"), Allow),
                (get("/").method("get"), Deny),
                (get("/").method("POST"), Deny),
            ],
        },
    ]);
}

#[test]
fn empty_policies_dry_run_audit_and_custom_ordering() {
    check(vec![
        Group {
            name: "spec: {} allows nothing",
            yaml: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-nothing, namespace: foo}
spec: {}
"#,
            cases: vec![
                (get("/"), Deny),
                (get("/").from("cluster.local/ns/foo/sa/x"), Deny),
                (tcp(5432), Deny),
            ],
        },
        Group {
            name: "rules: [{}] allows everything",
            yaml: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-nothing, namespace: foo}
spec: {}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-all, namespace: foo}
spec:
  rules:
  - {}
"#,
            cases: vec![(get("/"), Allow), (tcp(5432), Allow)],
        },
        Group {
            name: "DENY without rules matches nothing",
            yaml: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-none, namespace: foo}
spec:
  action: DENY
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-tcp, namespace: foo}
spec:
  action: DENY
  rules:
  - to:
    - operation:
        ports: ["5432"]
"#,
            cases: vec![(get("/"), Allow), (tcp(5432), Deny), (tcp(6379), Allow)],
        },
        Group {
            name: "dry-run never enforces",
            yaml: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: deny-all-dry
  namespace: foo
  annotations: {istio.io/dry-run: "true"}
spec:
  action: DENY
  rules: [{}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: allow-nothing-dry
  namespace: foo
  annotations: {istio.io/dry-run: "true"}
spec: {}
"#,
            cases: vec![(get("/"), Allow), (tcp(1), Allow)],
        },
        Group {
            name: "AUDIT never decides",
            yaml: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: audit-all, namespace: foo}
spec:
  action: AUDIT
  rules: [{}]
"#,
            cases: vec![(get("/"), Allow), (tcp(1), Allow)],
        },
        Group {
            name: "CUSTOM then DENY then ALLOW",
            yaml: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ext, namespace: istio-system}
spec:
  action: CUSTOM
  provider: {name: ext-authz}
  rules:
  - to:
    - operation:
        paths: ["/api/*"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-secret, namespace: foo}
spec:
  action: DENY
  rules:
  - to:
    - operation:
        paths: ["/api/secret"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-api-and-public, namespace: foo}
spec:
  rules:
  - to:
    - operation:
        paths: ["/api/*", "/public"]
"#,
            cases: vec![
                (get("/api/x"), Custom("ext-authz")),
                (get("//api/./x"), Custom("ext-authz")),
                // CUSTOM first: the provider is asked even where DENY denies.
                (get("/api/secret"), CustomThenDeny("ext-authz")),
                (get("/api/%73ecret"), CustomThenDeny("ext-authz")),
                (get("/public"), Allow),
                (get("/other"), Deny),
            ],
        },
        Group {
            name: "CUSTOM with two providers fails closed",
            yaml: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ext-a, namespace: foo}
spec:
  action: CUSTOM
  provider: {name: ext-authz}
  rules:
  - to:
    - operation:
        paths: ["/a/*"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ext-b, namespace: foo}
spec:
  action: CUSTOM
  provider: {name: other}
  rules:
  - to:
    - operation:
        paths: ["/b/*"]
"#,
            cases: vec![(get("/a/x"), Deny), (get("/b/x"), Deny), (get("/c"), Allow)],
        },
        Group {
            name: "CUSTOM dry-run is not called",
            yaml: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: ext
  namespace: foo
  annotations: {istio.io/dry-run: "true"}
spec:
  action: CUSTOM
  provider: {name: ext-authz}
  rules: [{}]
"#,
            cases: vec![(get("/x"), Allow)],
        },
    ]);
}

#[test]
fn tcp_drops_allow_rules_and_widens_deny_rules() {
    check(vec![
        Group {
            name: "ALLOW with HTTP-only rule",
            yaml: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-mixed, namespace: foo}
spec:
  rules:
  - to:
    - operation:
        paths: ["/healthz"]
  - from:
    - source:
        principals: ["cluster.local/ns/db/sa/client"]
    to:
    - operation:
        ports: ["5432"]
  - from:
    - source:
        principals: ["cluster.local/ns/cache/sa/client"]
    when:
    - key: request.headers[x-a]
      values: ["1"]
"#,
            cases: vec![
                (get("/healthz"), Allow),
                (tcp(5432), Deny),
                (tcp(5432).from("cluster.local/ns/db/sa/client"), Allow),
                (tcp(6379).from("cluster.local/ns/db/sa/client"), Deny),
                // rule 2 uses a request header: dropped for TCP
                (tcp(6379).from("cluster.local/ns/cache/sa/client"), Deny),
                (
                    get("/x")
                        .from("cluster.local/ns/cache/sa/client")
                        .header("x-a", "1"),
                    Allow,
                ),
            ],
        },
        Group {
            name: "ALLOW whose rules all need HTTP allows no TCP",
            yaml: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-http, namespace: foo}
spec:
  rules:
  - to:
    - operation:
        methods: ["GET"]
  - from:
    - source:
        requestPrincipals: ["*"]
"#,
            cases: vec![(get("/"), Allow), (tcp(9000), Deny)],
        },
        Group {
            name: "DENY with HTTP-only fields is widened on TCP",
            yaml: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-post-9000, namespace: foo}
spec:
  action: DENY
  rules:
  - to:
    - operation:
        methods: ["POST"]
        ports: ["9000"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-no-jwt-9100, namespace: foo}
spec:
  action: DENY
  rules:
  - from:
    - source:
        notRequestPrincipals: ["*"]
    to:
    - operation:
        ports: ["9100"]
"#,
            cases: vec![
                (get("/").port(9000), Allow),
                (get("/").method("POST").port(9000), Deny),
                (tcp(9000), Deny),
                (tcp(9001), Allow),
                (tcp(9100), Deny),
                (
                    get("/")
                        .port(9100)
                        .jwt("iss/sub", json!({"iss": "iss", "sub": "sub"})),
                    Allow,
                ),
                (get("/").port(9100), Deny),
            ],
        },
        Group {
            name: "TCP attributes still apply",
            yaml: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-tcp, namespace: foo}
spec:
  rules:
  - from:
    - source:
        ipBlocks: ["10.0.0.0/8"]
    when:
    - key: connection.sni
      values: ["*.db.internal"]
    - key: destination.port
      values: ["5432"]
    - key: destination.ip
      values: ["10.0.0.0/24"]
"#,
            cases: vec![
                (tcp(5432).sni("pg.db.internal"), Allow),
                (tcp(5432).sni("pg.db.internal.evil"), Deny),
                (tcp(5432), Deny),
                (tcp(5433).sni("pg.db.internal"), Deny),
                (tcp(5432).sni("pg.db.internal").ip("172.16.0.1"), Deny),
            ],
        },
    ]);
}

#[test]
fn jwt_claims_nested_and_list_valued() {
    let tok = |claims: Value| get("/").jwt("https://auth/u", claims);
    check(vec![
        Group {
            name: "claims",
            yaml: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: claims, namespace: foo}
spec:
  rules:
  - when:
    - key: request.auth.claims[groups]
      values: ["admin"]
  - when:
    - key: request.auth.claims[realm_access][roles]
      values: ["ops-*"]
  - when:
    - key: request.auth.claims[scope]
      values: ["write"]
  - when:
    - key: request.auth.audiences
      values: ["api.example.com"]
    - key: request.auth.presenter
      values: ["web-app"]
  - when:
    - key: request.auth.principal
      values: ["https://auth/svc-*"]
"#,
            cases: vec![
                (
                    tok(json!({"iss": "https://auth", "sub": "u", "groups": ["dev", "admin"]})),
                    Allow,
                ),
                (
                    tok(json!({"iss": "https://auth", "sub": "u", "groups": "admin"})),
                    Allow,
                ),
                (
                    tok(json!({"iss": "https://auth", "sub": "u", "groups": ["dev"]})),
                    Deny,
                ),
                (
                    tok(json!({"iss": "https://auth", "sub": "u", "groups": ["administrators"]})),
                    Deny,
                ),
                (
                    tok(json!({"iss": "https://auth", "sub": "u", "groups": "dev admin"})),
                    Deny,
                ),
                (
                    tok(json!({"iss": "https://auth", "sub": "u", "groups": true})),
                    Deny,
                ),
                (
                    tok(json!({"iss": "https://auth", "sub": "u", "groups": {"admin": true}})),
                    Deny,
                ),
                (
                    tok(
                        json!({"iss": "https://auth", "sub": "u", "realm_access": {"roles": ["user", "ops-oncall"]}}),
                    ),
                    Allow,
                ),
                (
                    tok(
                        json!({"iss": "https://auth", "sub": "u", "realm_access": {"roles": ["user"]}}),
                    ),
                    Deny,
                ),
                (
                    tok(json!({"iss": "https://auth", "sub": "u", "realm_access": ["ops-oncall"]})),
                    Deny,
                ),
                (
                    tok(json!({"iss": "https://auth", "sub": "u", "scope": "read write"})),
                    Allow,
                ),
                (
                    tok(json!({"iss": "https://auth", "sub": "u", "scope": "read writer"})),
                    Deny,
                ),
                (
                    tok(json!({"iss": "https://auth", "sub": "u", "scope": ["read", "write"]})),
                    Allow,
                ),
                (
                    tok(
                        json!({"iss": "https://auth", "sub": "u", "aud": ["x", "api.example.com"], "azp": "web-app"}),
                    ),
                    Allow,
                ),
                (
                    tok(
                        json!({"iss": "https://auth", "sub": "u", "aud": "api.example.com", "azp": "cli"}),
                    ),
                    Deny,
                ),
                (
                    get("/").jwt(
                        "https://auth/svc-batch",
                        json!({"iss": "https://auth", "sub": "svc-batch"}),
                    ),
                    Allow,
                ),
                (get("/").header("groups", "admin"), Deny),
                (get("/"), Deny),
            ],
        },
        Group {
            name: "deny when claim notValues",
            yaml: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: employees-only, namespace: foo}
spec:
  action: DENY
  rules:
  - when:
    - key: request.auth.claims[groups]
      notValues: ["employees"]
"#,
            cases: vec![
                (
                    tok(json!({"iss": "https://auth", "sub": "u", "groups": ["a", "employees"]})),
                    Allow,
                ),
                (
                    tok(json!({"iss": "https://auth", "sub": "u", "groups": ["a"]})),
                    Deny,
                ),
                (tok(json!({"iss": "https://auth", "sub": "u"})), Deny),
                (get("/"), Deny),
            ],
        },
    ]);
}

#[test]
fn ip_blocks_v4_v6_and_remote() {
    check(vec![
        Group {
            name: "ipBlocks",
            yaml: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-ips, namespace: foo}
spec:
  rules:
  - from:
    - source:
        ipBlocks: ["10.0.0.0/8", "2001:db8::/32", "192.168.1.1", "172.16.5.4/12"]
"#,
            cases: vec![
                (get("/").ip("10.2.3.4"), Allow),
                (get("/").ip("::ffff:10.2.3.4"), Allow),
                (get("/").ip("11.0.0.1"), Deny),
                (get("/").ip("2001:db8::1"), Allow),
                (get("/").ip("2001:db8:ffff::1"), Allow),
                (get("/").ip("2001:db9::1"), Deny),
                (get("/").ip("192.168.1.1"), Allow),
                (get("/").ip("192.168.1.2"), Deny),
                (get("/").ip("172.31.255.255"), Allow),
                (get("/").ip("::1"), Deny),
                // remote.ip does not count for ipBlocks
                (get("/").ip("8.8.8.8").remote("10.0.0.1"), Deny),
            ],
        },
        Group {
            name: "remoteIpBlocks",
            yaml: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-remote, namespace: foo}
spec:
  action: DENY
  rules:
  - from:
    - source:
        remoteIpBlocks: ["203.0.113.0/24"]
  - when:
    - key: remote.ip
      values: ["2001:db8:bad::/48"]
"#,
            cases: vec![
                (get("/").ip("10.0.0.1").remote("203.0.113.5"), Deny),
                (get("/").ip("203.0.113.5"), Deny),
                (get("/").ip("203.0.113.5").remote("10.0.0.1"), Allow),
                (get("/").remote("2001:db8:bad::7"), Deny),
                (get("/").remote("2001:db8:b0d::7"), Allow),
            ],
        },
    ]);
}

#[test]
fn path_templates() {
    check(vec![Group {
        name: "templates",
        yaml: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: templates, namespace: foo}
spec:
  rules:
  - to:
    - operation:
        paths: ["/store/{*}/items", "/files/{**}", "/v1/{*}/docs/{**}/raw"]
"#,
        cases: vec![
            (get("/store/a/items"), Allow),
            (get("/store/a/items?page=2"), Allow),
            (get("/store/a/b/items"), Deny),
            (get("/store//items"), Deny),
            (get("/store/items"), Deny),
            (get("/store/a/items/"), Deny),
            (get("/store/%2e%2e/items"), Deny),
            (get("/store/a%2Fb/items"), Deny),
            (get("/files/"), Allow),
            (get("/files/a/b/c.txt"), Allow),
            (get("/files"), Deny),
            (get("/filesystem/x"), Deny),
            (get("/v1/x/docs/a/b/raw"), Allow),
            (get("/v1/x/docs//raw"), Deny),
            (get("/v1/x/docs/a/b/raw2"), Deny),
        ],
    }]);
}

#[test]
fn invalid_values_drop_allow_rules_and_skip_deny_values() {
    check(vec![Group {
        name: "invalid values",
        yaml: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-bad, namespace: foo}
spec:
  rules:
  - from:
    - source:
        ipBlocks: ["not-an-ip", "10.0.0.0/8"]
  - to:
    - operation:
        paths: ["/ok"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-bad, namespace: foo}
spec:
  action: DENY
  rules:
  - from:
    - source:
        ipBlocks: ["bogus"]
    to:
    - operation:
        paths: ["/secret"]
  - when:
    - key: experimental.envoy.filters.network.mysql_proxy[db.table]
      values: ["[update]"]
    - key: destination.port
      values: ["3306"]
"#,
        cases: vec![
            // ALLOW rule 0 is dropped (one invalid CIDR), rule 1 still allows /ok
            (get("/x").ip("10.1.1.1"), Deny),
            (get("/ok").ip("10.1.1.1"), Allow),
            // DENY: the field whose only value is invalid is ignored (wider)
            (get("/secret").ip("10.1.1.1"), Deny),
            // DENY: unsupported attribute ignored: everything on 3306 denied
            (get("/ok").port(3306), Deny),
            (tcp(3306), Deny),
        ],
    }]);
}

// ---------------------------------------------------------------------------------------------
// Normalization
// ---------------------------------------------------------------------------------------------

/// Istio's own normalization integration table (tests/integration/security/normalization_test.go),
/// with Envoy's behaviour reproduced by `PathOptions::istio`.
#[test]
fn istio_normalization_table() {
    use Normalization::*;
    let table: &[(Normalization, &[(&str, &str)])] = &[
        (
            None,
            &[
                ("/", "/"),
                ("/app#foo", "/app"),
                ("/app/", "/app/"),
                ("/app/../admin", "/app/../admin"),
                ("/app", "/app"),
                ("/app//", "/app//"),
                ("/app/%2f", "/app/%2f"),
                ("/app%2f/", "/app%2f/"),
                ("/xyz%30..//abc", "/xyz%30..//abc"),
                ("/app/%2E./admin", "/app/%2E./admin"),
                (r"/app\admin", r"/app\admin"),
                (r"/app/\/\/\admin", r"/app/\/\/\admin"),
                (r"/%2Fapp%5cadmin%5Cabc", r"/%2Fapp%5cadmin%5Cabc"),
                (
                    r"/%5Capp%2f%5c%2F%2e%2e%2fadmin%5c\abc",
                    r"/%5Capp%2f%5c%2F%2e%2e%2fadmin%5c\abc",
                ),
                ("/app//../admin", "/app//../admin"),
                ("/app//../../admin", "/app//../../admin"),
            ],
        ),
        (
            Base,
            &[
                ("/", "/"),
                ("/app#foo", "/app"),
                ("/app/", "/app/"),
                ("/app/../admin", "/admin"),
                ("/app", "/app"),
                ("/app//", "/app//"),
                ("/app/%2f", "/app/%2f"),
                ("/app%2f/", "/app%2f/"),
                ("/xyz%30..//abc", "/xyz0..//abc"),
                ("/app/%2E./admin", "/admin"),
                (r"/app\admin", "/app/admin"),
                (r"/app/\/\/\admin", "/app//////admin"),
                (r"/%2Fapp%5cadmin%5Cabc", r"/%2Fapp%5cadmin%5Cabc"),
                (
                    r"/%5Capp%2f%5c%2F%2e%2e%2fadmin%5c\abc",
                    "/%5Capp%2f%5c%2F..%2fadmin%5c/abc",
                ),
                ("/app//../admin", "/app/admin"),
                ("/app//../../admin", "/admin"),
            ],
        ),
        (
            MergeSlashes,
            &[
                ("/", "/"),
                ("/app#foo", "/app"),
                ("/app/", "/app/"),
                ("/app/../admin", "/admin"),
                ("/app", "/app"),
                ("/app//", "/app/"),
                ("/app/%2f", "/app/%2f"),
                ("/app%2f/", "/app%2f/"),
                ("/xyz%30..//abc", "/xyz0../abc"),
                ("/app/%2E./admin", "/admin"),
                (r"/app\admin", "/app/admin"),
                (r"/app/\/\/\admin", "/app/admin"),
                (r"/%2Fapp%5cadmin%5Cabc", r"/%2Fapp%5cadmin%5Cabc"),
                (
                    r"/%5Capp%2f%5c%2F%2e%2e%2fadmin%5c\abc",
                    "/%5Capp%2f%5c%2F..%2fadmin%5c/abc",
                ),
                ("/app//../admin", "/app/admin"),
                ("/app//../../admin", "/admin"),
            ],
        ),
        (
            DecodeAndMergeSlashes,
            &[
                ("/", "/"),
                ("/app#foo", "/app"),
                ("/app/", "/app/"),
                ("/app/../admin", "/admin"),
                ("/app", "/app"),
                ("/app//", "/app/"),
                ("/app/%2f", "/app/"),
                ("/app%2f/", "/app/"),
                ("/xyz%30..//abc", "/xyz0../abc"),
                ("/app/%2E./admin", "/admin"),
                (r"/app\admin", "/app/admin"),
                (r"/app/\/\/\admin", "/app/admin"),
                (r"/%2Fapp%5cadmin%5Cabc", "/app/admin/abc"),
                (r"/%5Capp%2f%5c%2F%2e%2e%2fadmin%5c\abc", "/app/admin/abc"),
                ("/app//../admin", "/app/admin"),
                ("/app//../../admin", "/admin"),
                ("/%c0%2e%c0%2e/admin", "/%c0.%c0./admin"),
                ("/%c0%2fadmin", "/%c0/admin"),
                // not normalized
                ("/0x2e0x2e/admin", "/0x2e0x2e/admin"),
                ("/0x2e0x2e0x2fadmin", "/0x2e0x2e0x2fadmin"),
                ("/0x2f0x2fadmin", "/0x2f0x2fadmin"),
                ("/%25c0%25ae%25c1%259cadmin", "/%25c0%25ae%25c1%259cadmin"),
                ("/%25c0%25ae%25c0%25ae/admin", "/%25c0%25ae%25c0%25ae/admin"),
                ("/%25c0%25afadmin", "/%25c0%25afadmin"),
                ("/%252e%252e/admin", "/%252e%252e/admin"),
                ("/%252e%252e%252fadmin", "/%252e%252e%252fadmin"),
                ("/%c1%9cadmin", "/%c1%9cadmin"),
                ("/%c0%ae%c0%ae/admin", "/%c0%ae%c0%ae/admin"),
                ("/%c0%afadmin", "/%c0%afadmin"),
                ("/.../admin", "/.../admin"),
                ("/..../admin", "/..../admin"),
                ("/..;/admin", "/..;/admin"),
                ("/;/admin", "/;/admin"),
                ("/admin;a=b", "/admin;a=b"),
                ("/admin;a=b/xyz", "/admin;a=b/xyz"),
                ("/admin,a=b/xyz", "/admin,a=b/xyz"),
                ("/Admin", "/Admin"),
                ("/ADMIN", "/ADMIN"),
            ],
        ),
    ];
    let mut failures = Vec::new();
    for (level, rows) in table {
        let opts = PathOptions::istio(*level);
        for (input, want) in *rows {
            match normalize_path_with(input, &opts) {
                Ok(got) if got == *want => {}
                other => failures.push(format!("{level} {input:?}: want {want:?}, got {other:?}")),
            }
        }
    }
    // %01..%ff at DECODE_AND_MERGE_SLASHES: unreserved and slashes decoded, the rest kept.
    for i in 1u32..=0xff {
        let input = format!("/admin%{i:02x}");
        let c = char::from_u32(i).unwrap();
        let want = if c.is_ascii_alphanumeric() || "-._~".contains(c) {
            format!("/admin{c}")
        } else if c == '/' || c == '\\' {
            "/admin/".to_string()
        } else {
            input.clone()
        };
        let got = normalize_path_with(&input, &PathOptions::istio(DecodeAndMergeSlashes));
        if got.as_deref() != Ok(want.as_str()) {
            failures.push(format!("{input}: want {want:?}, got {got:?}"));
        }
    }
    // Invalid
    assert!(normalize_path_with("/admin%00", &PathOptions::istio(DecodeAndMergeSlashes)).is_err());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Tiny deterministic generator (xorshift64*), no external crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[(self.next() % xs.len() as u64) as usize]
    }
}

fn assert_clean(level: Normalization, input: &str, out: &str) {
    let path = out.split_once('?').map_or(out, |(p, _)| p);
    assert!(path.starts_with('/'), "{level} {input:?} -> {out:?}");
    assert!(!out.contains('#'), "{level} {input:?} -> {out:?}");
    for seg in path.split('/').skip(1) {
        assert!(
            seg != "." && seg != "..",
            "{level} {input:?} -> {out:?}: dot segment"
        );
    }
    if level >= Normalization::MergeSlashes {
        assert!(!path.contains("//"), "{level} {input:?} -> {out:?}: //");
    }
    if level == Normalization::DecodeAndMergeSlashes {
        let lower = path.to_ascii_lowercase();
        assert!(
            !lower.contains("%2f") && !lower.contains("%5c") && !lower.contains("%2e"),
            "{level} {input:?} -> {out:?}: encoded slash or dot left"
        );
    }
}

#[test]
fn normalization_is_idempotent_and_leaves_no_dot_segments_or_double_slashes() {
    const TOKENS: &[&str] = &[
        "/", "/", "/", ".", "..", "%2e", "%2E", "%2e%2e", ".%2e", "%2f", "%2F", "%5c", "%5C", "a",
        "admin", "%61", "%41", "//", ";", ";x=1", "\\", "%25", "%252e", "%00", "?", "?a/../b", "#",
        "#frag", "%", "%z", "%zz", "~", "%7e", " ", "\u{e9}", "\t", "*", "%c0", "%ae", "{", "|",
        "@", ":", "=", "+", "&", "!", "'", "(", ")", ",", "$", "[", "]",
    ];
    let levels = [
        Normalization::None,
        Normalization::Base,
        Normalization::MergeSlashes,
        Normalization::DecodeAndMergeSlashes,
    ];
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let (mut ok, mut err) = (0, 0);
    for _ in 0..20_000 {
        let n = 1 + (rng.next() % 12) as usize;
        let mut input = String::from("/");
        for _ in 0..n {
            input.push_str(rng.pick(TOKENS));
        }
        for level in levels {
            for opts in [PathOptions::trellis(level), PathOptions::istio(level)] {
                match normalize_path_with(&input, &opts) {
                    Ok(out) => {
                        ok += 1;
                        let again = normalize_path_with(&out, &opts)
                            .unwrap_or_else(|e| panic!("{level} {input:?} -> {out:?} -> {e}"));
                        assert_eq!(again, out, "{level} not idempotent on {input:?}");
                        if level != Normalization::None {
                            assert_clean(level, &input, &out);
                            let path = out.split_once('?').map_or(&*out, |(p, _)| p);
                            assert!(path.is_ascii(), "{level} {input:?} -> {out:?}");
                        }
                    }
                    Err(_) => err += 1,
                }
            }
        }
    }
    assert!(ok > 10_000 && err > 1_000, "ok {ok} err {err}");
}

#[test]
fn default_normalization_matches_the_corpus_view() {
    // What the proxy forwards is what authz saw: one view.
    for (raw, want) in [
        ("//admin", "/admin"),
        ("/%2Fadmin", "/admin"),
        ("/a/b/../../admin?q=/../x", "/admin?q=/../x"),
        ("/admin#x", "/admin"),
    ] {
        assert_eq!(
            normalize_path(raw, Normalization::DecodeAndMergeSlashes).unwrap(),
            want
        );
    }
}
