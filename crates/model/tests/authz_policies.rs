//! AuthorizationPolicy scoping (namespace, root namespace, selector, targetRef) and what a
//! decision reports (policy, rule, dry-run, audit, diagnostics).

use std::collections::BTreeMap;

use http::HeaderMap;
use serde_json::json;
use trellis_api::load::{LoadOptions, ResourceSet};
use trellis_api::security::Action;
use trellis_api::Resource;
use trellis_model::authz::{
    AuthzPolicies, AuthzRequest, AuthzTarget, DecisionReason, Outcome, PolicyId, RBAC_DENIED_BODY,
    RBAC_DENIED_STATUS,
};

const ROOT: &str = "istio-system";

fn load(yaml: &str) -> Vec<Resource> {
    let mut set = ResourceSet::default();
    set.add_text("p.yaml", yaml, &LoadOptions::default());
    assert!(!set.resources.is_empty(), "{:#?}", set.diagnostics);
    set.resources
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn names(p: &AuthzPolicies) -> Vec<String> {
    p.policies().map(|c| c.id.to_string()).collect()
}

const SCOPES: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: mesh-wide, namespace: istio-system}
spec: {action: DENY, rules: [{to: [{operation: {paths: ["/mesh-deny"]}}]}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: mesh-selected, namespace: istio-system}
spec:
  selector: {matchLabels: {app: httpbin}}
  action: DENY
  rules: [{to: [{operation: {paths: ["/mesh-selected"]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ns-wide, namespace: foo}
spec: {action: DENY, rules: [{to: [{operation: {paths: ["/ns"]}}]}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: selected, namespace: foo}
spec:
  selector: {matchLabels: {app: httpbin, version: v1}}
  action: DENY
  rules: [{to: [{operation: {paths: ["/v1"]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: empty-selector, namespace: foo}
spec:
  selector: {}
  action: AUDIT
  rules: [{}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: other-ns, namespace: bar}
spec: {}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: gateway-attached, namespace: foo}
spec:
  targetRefs:
  - {group: gateway.networking.k8s.io, kind: Gateway, name: public}
  action: DENY
  rules: [{to: [{operation: {paths: ["/gw"]}}]}]
"#;

#[test]
fn scope_namespace_root_selector_and_target_refs() {
    let rs = load(SCOPES);
    let v1 = labels(&[("app", "httpbin"), ("version", "v1")]);
    let p = AuthzPolicies::compile(&rs, "foo", &v1, ROOT);
    // Grouped by action (CUSTOM, DENY, ALLOW, AUDIT), then oldest first, namespace, name.
    assert_eq!(
        names(&p),
        [
            "foo/ns-wide",
            "foo/selected",
            "istio-system/mesh-selected",
            "istio-system/mesh-wide",
            "foo/empty-selector"
        ]
    );

    let v2 = labels(&[("app", "httpbin"), ("version", "v2")]);
    let p = AuthzPolicies::compile(&rs, "foo", &v2, ROOT);
    assert!(!names(&p).contains(&"foo/selected".to_string()));

    let other = labels(&[("app", "sleep")]);
    let p = AuthzPolicies::compile(&rs, "baz", &other, ROOT);
    assert_eq!(names(&p), ["istio-system/mesh-wide"]);

    // A Gateway API gateway gets the targetRef policy (and selector-based ones).
    let gw = labels(&[("gateway.networking.k8s.io/gateway-name", "public")]);
    let p = AuthzPolicies::compile(&rs, "foo", &gw, ROOT);
    assert!(names(&p).contains(&"foo/gateway-attached".to_string()));
    let p = AuthzPolicies::compile_for(
        &rs,
        &AuthzTarget {
            namespace: "foo",
            labels: &BTreeMap::new(),
            gateway_name: Some("public"),
            trust_domains: &[],
        },
        ROOT,
    );
    assert!(names(&p).contains(&"foo/gateway-attached".to_string()));
    let p = AuthzPolicies::compile_for(
        &rs,
        &AuthzTarget {
            namespace: "foo",
            labels: &BTreeMap::new(),
            gateway_name: Some("internal"),
            trust_domains: &[],
        },
        ROOT,
    );
    assert!(!names(&p).contains(&"foo/gateway-attached".to_string()));
    // Another namespace's gateway of the same name does not get it.
    let p = AuthzPolicies::compile(&rs, "bar", &gw, ROOT);
    assert!(!names(&p).contains(&"foo/gateway-attached".to_string()));
}

#[test]
fn policies_are_ordered_oldest_first() {
    let rs = load(
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: a-new, namespace: foo, creationTimestamp: "2024-05-01T00:00:00Z"}
spec: {action: DENY, rules: [{}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: z-old, namespace: foo, creationTimestamp: "2023-05-01T00:00:00Z"}
spec: {action: DENY, rules: [{}]}
"#,
    );
    let p = AuthzPolicies::compile(&rs, "foo", &BTreeMap::new(), ROOT);
    let h = HeaderMap::new();
    let d = p.evaluate(&AuthzRequest::http(&h, "GET", "x", "/"));
    assert_eq!(d.rule().unwrap().policy.name, "z-old");
}

#[test]
fn decisions_name_policy_action_and_rule() {
    let rs = load(
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: foo}
spec:
  action: DENY
  rules:
  - to: [{operation: {methods: ["DELETE"]}}]
  - to: [{operation: {paths: ["/x"]}}]
  - to: [{operation: {paths: ["/admin*"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-get, namespace: foo}
spec:
  rules:
  - to: [{operation: {methods: ["GET"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-nothing, namespace: foo}
spec: {}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: audit-post, namespace: foo}
spec:
  action: AUDIT
  rules:
  - to: [{operation: {methods: ["POST"]}}]
"#,
    );
    let p = AuthzPolicies::compile(&rs, "foo", &BTreeMap::new(), ROOT);
    let h = HeaderMap::new();

    let d = p.evaluate(&AuthzRequest::http(&h, "GET", "x", "/admin/users"));
    assert!(!d.allowed);
    assert_eq!(d.outcome(), Outcome::Deny);
    let r = d.rule().unwrap();
    assert_eq!(
        (r.policy.to_string(), r.action, r.rule),
        ("foo/deny-admin".into(), Action::Deny, 2)
    );
    assert_eq!(d.to_string(), "denied by DENY policy foo/deny-admin rule 2");

    let d = p.evaluate(&AuthzRequest::http(&h, "GET", "x", "/ok"));
    assert!(d.allowed);
    assert_eq!(
        d.to_string(),
        "allowed by ALLOW policy foo/allow-get rule 0"
    );

    let d = p.evaluate(&AuthzRequest::http(&h, "POST", "x", "/ok"));
    assert!(!d.allowed);
    assert_eq!(
        d.reason,
        DecisionReason::NoAllowMatched {
            allow_policies: &[
                PolicyId {
                    namespace: "foo".into(),
                    name: "allow-get".into()
                },
                PolicyId {
                    namespace: "foo".into(),
                    name: "allow-nothing".into()
                },
            ]
        }
    );
    assert_eq!(
        d.to_string(),
        "denied: no ALLOW policy matched (foo/allow-get, foo/allow-nothing); audited by AUDIT policy foo/audit-post rule 0"
    );
    assert_eq!(d.audited_by.unwrap().policy.name, "audit-post");
    assert_eq!(
        (RBAC_DENIED_STATUS, RBAC_DENIED_BODY),
        (403, "RBAC: access denied")
    );
}

#[test]
fn no_policies_allows_everything() {
    let p = AuthzPolicies::compile(&[], "foo", &BTreeMap::new(), ROOT);
    assert!(p.is_empty());
    let h = HeaderMap::new();
    let d = p.evaluate(&AuthzRequest::http(&h, "GET", "x", "/"));
    assert_eq!(d.reason, DecisionReason::NoAllowPolicies);
    assert_eq!(d.outcome(), Outcome::Allow);
    assert!(d.dry_run_would.is_none());
    assert!(p.evaluate(&AuthzRequest::tcp(&h)).allowed);
}

/// An ALLOW rule with an invalid value is dropped on TCP as on HTTP: it never becomes a wider
/// rule (found by fuzzing: the TCP pass removed the bad value and kept the rule).
#[test]
fn invalid_values_drop_allow_rules_on_tcp_too() {
    for (field, rule) in [
        (
            "ipBlocks",
            "- from: [{source: {ipBlocks: [\"10.0.0.1/33\"]}}]",
        ),
        ("when", "- when: [{key: source.namespce, values: [foo]}]"),
    ] {
        let rs = load(&format!(
            "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: allow-admin-net, namespace: foo}}
spec:
  action: ALLOW
  rules:
  {rule}
"
        ));
        let p = AuthzPolicies::compile(&rs, "foo", &BTreeMap::new(), ROOT);
        let h = HeaderMap::new();
        let mut tcp = AuthzRequest::tcp(&h);
        tcp.source_ip = Some("192.168.7.7".parse().unwrap());
        let d = p.evaluate(&tcp);
        assert!(!d.allowed, "{field}: TCP allowed by a dropped rule: {d}");
        let mut http = AuthzRequest::http(&h, "GET", "x", "/");
        http.source_ip = Some("192.168.7.7".parse().unwrap());
        assert!(!p.evaluate(&http).allowed, "{field}: HTTP");
    }
}

#[test]
fn dry_run_reports_what_would_happen() {
    let rs = load(
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: deny-post
  namespace: foo
  annotations: {istio.io/dry-run: "true"}
spec:
  action: DENY
  rules: [{to: [{operation: {methods: ["POST"]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: allow-get
  namespace: foo
  annotations: {istio.io/dry-run: "True"}
spec:
  rules: [{to: [{operation: {methods: ["GET"]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: bad-annotation
  namespace: foo
  annotations: {istio.io/dry-run: "yes"}
spec:
  action: AUDIT
  rules: [{}]
"#,
    );
    let p = AuthzPolicies::compile(&rs, "foo", &BTreeMap::new(), ROOT);
    let h = HeaderMap::new();

    let d = p.evaluate(&AuthzRequest::http(&h, "POST", "x", "/"));
    assert!(d.allowed);
    let would = d.dry_run_would.unwrap();
    assert!(!would.allowed);
    assert_eq!(
        would.reason.to_string(),
        "denied by DENY policy foo/deny-post rule 0"
    );

    let d = p.evaluate(&AuthzRequest::http(&h, "PUT", "x", "/"));
    assert!(d.allowed);
    let would = d.dry_run_would.unwrap();
    assert_eq!(
        would.reason.to_string(),
        "denied: no ALLOW policy matched (foo/allow-get)"
    );

    let d = p.evaluate(&AuthzRequest::http(&h, "GET", "x", "/"));
    assert!(d.dry_run_would.unwrap().allowed);
    // An unparsable annotation enforces the policy and says so.
    assert!(d.audited_by.is_some());
    assert!(p
        .diagnostics()
        .iter()
        .any(|x| x.policy.name == "bad-annotation" && x.message.contains("istio.io/dry-run")));
}

#[test]
fn custom_check_names_provider_and_policy() {
    let rs = load(
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ext-authz, namespace: istio-system}
spec:
  selector: {matchLabels: {istio: ingressgateway}}
  action: CUSTOM
  provider: {name: my-ext-authz}
  rules:
  - to: [{operation: {paths: ["/admin/*"]}}]
"#,
    );
    let gw = labels(&[("istio", "ingressgateway")]);
    let p = AuthzPolicies::compile(&rs, "istio-system", &gw, ROOT);
    let h = HeaderMap::new();
    let d = p.evaluate(&AuthzRequest::http(&h, "GET", "x", "/admin/x"));
    match d.outcome() {
        Outcome::Custom {
            provider,
            policy,
            allowed,
        } => {
            assert!(allowed);
            assert_eq!(provider, "my-ext-authz");
            assert_eq!(
                policy.to_string(),
                "CUSTOM policy istio-system/ext-authz rule 0"
            );
        }
        o => panic!("{o:?}"),
    }
    assert!(d.to_string().contains("ext-authz my-ext-authz required"));
    let d = p.evaluate(&AuthzRequest::http(&h, "GET", "x", "/public"));
    assert_eq!(d.outcome(), Outcome::Allow);
    // Sidecars elsewhere are not selected.
    let p = AuthzPolicies::compile(&rs, "foo", &labels(&[("app", "x")]), ROOT);
    assert!(p.is_empty());
}

/// Istio's order CUSTOM → DENY → ALLOW: where a CUSTOM rule matches, the provider is asked
/// first even when a DENY rule (or no ALLOW rule) matches; the local verdict comes after.
#[test]
fn custom_is_asked_before_deny_and_allow() {
    let rs = load(
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ext, namespace: istio-system}
spec:
  action: CUSTOM
  provider: {name: ext}
  rules: [{to: [{operation: {paths: ["/api/*", "/internal/*"]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-secret, namespace: istio-system}
spec:
  action: DENY
  rules: [{to: [{operation: {paths: ["/api/secret", "/public/secret"]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-api, namespace: istio-system}
spec:
  rules: [{to: [{operation: {paths: ["/api/*", "/public/*"]}}]}]
"#,
    );
    let p = AuthzPolicies::compile(&rs, "istio-system", &labels(&[]), ROOT);
    let h = HeaderMap::new();
    let outcome = |path| {
        let d = p.evaluate(&AuthzRequest::http(&h, "GET", "x", path));
        match d.outcome() {
            Outcome::Custom {
                provider, allowed, ..
            } => format!(
                "custom {provider} then {}",
                if allowed { "allow" } else { "deny" }
            ),
            o => format!("{o:?}"),
        }
    };
    assert_eq!(outcome("/api/x"), "custom ext then allow");
    assert_eq!(outcome("/api/secret"), "custom ext then deny");
    assert_eq!(outcome("/internal/x"), "custom ext then deny");
    assert_eq!(outcome("/public/secret"), "Deny");
    assert_eq!(outcome("/public/x"), "Allow");
    assert_eq!(outcome("/other"), "Deny");
}

#[test]
fn diagnostics_report_invalid_values_and_unsupported_keys() {
    let rs = load(
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: bad, namespace: foo}
spec:
  rules:
  - from: [{source: {ipBlocks: ["10.0.0.300"]}}]
  - to: [{operation: {ports: ["http"], paths: ["/foo/{*}.txt"]}}]
  - when:
    - key: request.auth.claimz[x]
      values: ["1"]
"#,
    );
    let p = AuthzPolicies::compile(&rs, "foo", &BTreeMap::new(), ROOT);
    let msgs: Vec<String> = p.diagnostics().iter().map(ToString::to_string).collect();
    assert!(
        msgs.iter()
            .any(|m| m.starts_with("foo/bad rule 0: ipBlocks")),
        "{msgs:#?}"
    );
    assert!(
        msgs.iter().any(|m| m.contains("rule 1: ports")),
        "{msgs:#?}"
    );
    assert!(
        msgs.iter().any(|m| m.contains("rule 1: paths")),
        "{msgs:#?}"
    );
    assert!(
        msgs.iter()
            .any(|m| m.contains("rule 2: when request.auth.claimz[x]")),
        "{msgs:#?}"
    );
    // Every rule of this ALLOW policy was dropped: it allows nothing.
    let c = p.policies().next().unwrap();
    assert_eq!(c.http_rules().count(), 0);
    let h = HeaderMap::new();
    assert!(!p.evaluate(&AuthzRequest::http(&h, "GET", "x", "/")).allowed);
}

#[test]
fn tcp_rule_listing_for_explain() {
    let rs = load(
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: mixed, namespace: foo}
spec:
  rules:
  - to: [{operation: {paths: ["/a"]}}]
  - to: [{operation: {ports: ["5432"]}}]
"#,
    );
    let p = AuthzPolicies::compile(&rs, "foo", &BTreeMap::new(), ROOT);
    let c = p.policies().next().unwrap();
    assert_eq!(c.http_rules().collect::<Vec<_>>(), [0, 1]);
    assert_eq!(c.tcp_rules().collect::<Vec<_>>(), [1]);
    let h = HeaderMap::new();
    let req = AuthzRequest {
        destination_port: Some(5432),
        ..AuthzRequest::tcp(&h)
    };
    let d = p.evaluate(&req);
    assert_eq!(d.to_string(), "allowed by ALLOW policy foo/mixed rule 1");
}

#[test]
fn request_principal_from_principal_string_without_claims() {
    let rs = load(
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: jwt, namespace: foo}
spec:
  rules:
  - from: [{source: {requestPrincipals: ["https://issuer.example.com/*"]}}]
"#,
    );
    let p = AuthzPolicies::compile(&rs, "foo", &BTreeMap::new(), ROOT);
    let h = HeaderMap::new();
    let base = AuthzRequest::http(&h, "GET", "x", "/");
    let ok = AuthzRequest {
        request_principal: Some("https://issuer.example.com/alice"),
        ..base
    };
    assert!(p.evaluate(&ok).allowed);
    let claims = json!({"iss": "https://issuer.example.com", "sub": "a/b"});
    let with_claims = AuthzRequest {
        request_principal: Some("https://issuer.example.com/a/b"),
        claims: Some(&claims),
        ..base
    };
    assert!(p.evaluate(&with_claims).allowed);
    assert!(!p.evaluate(&base).allowed);
}

#[test]
fn compiled_policies_serialize_for_config_dump() {
    let rs = load(SCOPES);
    let p = AuthzPolicies::compile(&rs, "foo", &labels(&[("app", "httpbin")]), ROOT);
    let v = serde_json::to_value(&p).unwrap();
    assert!(v.to_string().contains("/mesh-deny"), "{v}");
}

#[test]
fn trust_domain_aliases_are_applied_to_principals() {
    let rs = load(
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-sleep, namespace: foo}
spec:
  rules:
  - from: [{source: {principals: ["cluster.local/ns/foo/sa/sleep"]}}]
  - from: [{source: {principals: ["other.td/ns/foo/sa/curl"]}}]
"#,
    );
    let h = HeaderMap::new();
    let from = |p: &AuthzPolicies, principal: &'static str| {
        p.evaluate(&AuthzRequest {
            source_principal: Some(principal),
            ..AuthzRequest::http(&h, "GET", "x", "/")
        })
        .allowed
    };
    let no_labels = BTreeMap::new();
    // Without trust domains: compared as written.
    let p = AuthzPolicies::compile(&rs, "foo", &no_labels, ROOT);
    assert!(from(&p, "cluster.local/ns/foo/sa/sleep"));
    assert!(!from(&p, "new.td/ns/foo/sa/sleep"));
    // Trust domain new.td with alias old.td: cluster.local means the local trust domains.
    let tds = ["new.td".to_string(), "old.td".to_string()];
    let target = AuthzTarget {
        trust_domains: &tds,
        ..AuthzTarget::new("foo", &no_labels)
    };
    let p = AuthzPolicies::compile_for(&rs, &target, ROOT);
    assert!(from(&p, "new.td/ns/foo/sa/sleep"));
    assert!(from(&p, "old.td/ns/foo/sa/sleep"));
    assert!(!from(&p, "cluster.local/ns/foo/sa/sleep"));
    assert!(!from(&p, "evil.td/ns/foo/sa/sleep"));
    // A foreign trust domain is kept as written.
    assert!(from(&p, "other.td/ns/foo/sa/curl"));
    assert!(!from(&p, "new.td/ns/foo/sa/curl"));
}
