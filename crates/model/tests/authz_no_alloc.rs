//! Evaluation allocates nothing: a counting global allocator around `AuthzPolicies::evaluate`.
//! (One test in this binary so no other test thread allocates meanwhile.)

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use http::{HeaderMap, HeaderValue};
use serde_json::json;
use trellis_api::load::{LoadOptions, ResourceSet};
use trellis_model::authz::{AuthzPolicies, AuthzRequest};

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const POLICIES: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ext, namespace: foo}
spec:
  action: CUSTOM
  provider: {name: ext-authz}
  rules: [{to: [{operation: {paths: ["/ext/*"]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny, namespace: foo}
spec:
  action: DENY
  rules:
  - to: [{operation: {paths: ["/admin*"], hosts: ["*.internal"]}}]
  - when:
    - {key: "request.headers[x-user]", values: ["admin"]}
    - {key: "request.auth.claims[realm][roles]", notValues: ["ops"]}
  - from: [{source: {notNamespaces: ["prod", "staging"], remoteIpBlocks: ["203.0.113.0/24"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: dry
  namespace: foo
  annotations: {istio.io/dry-run: "true"}
spec: {}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow, namespace: foo}
spec:
  rules:
  - from: [{source: {serviceAccounts: ["prod/api"], requestPrincipals: ["https://auth/*"]}}]
    to: [{operation: {methods: ["GET", "POST"], paths: ["/api/{*}/items", "/files/{**}"], hosts: ["api.example.com"]}}]
    when:
    - {key: "request.auth.claims[groups]", values: ["admin", "dev"]}
    - {key: request.auth.audiences, values: ["api"]}
    - {key: source.ip, values: ["10.0.0.0/8", "2001:db8::/32"]}
    - {key: "request.headers[x-tenant]", values: ["t-*"]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: audit, namespace: foo}
spec:
  action: AUDIT
  rules: [{to: [{operation: {methods: ["POST"]}}]}]
"#;

#[test]
fn evaluate_does_not_allocate() {
    let mut set = ResourceSet::default();
    set.add_text("p.yaml", POLICIES, &LoadOptions::default());
    assert_eq!(set.resources.len(), 5, "{:#?}", set.diagnostics);
    let policies = AuthzPolicies::compile(&set.resources, "foo", &BTreeMap::new(), "istio-system");
    let mut headers = HeaderMap::new();
    headers.append("x-tenant", HeaderValue::from_static("t-1"));
    headers.append("x-user", HeaderValue::from_static("alice"));
    let claims = json!({"iss": "https://auth", "sub": "alice", "aud": ["api"], "groups": ["dev"], "realm": {"roles": ["ops"]}});
    let req = AuthzRequest {
        source_principal: Some("cluster.local/ns/prod/sa/api"),
        source_ip: Some("10.1.2.3".parse().unwrap()),
        remote_ip: Some("198.51.100.7".parse().unwrap()),
        destination_port: Some(8080),
        request_principal: Some("https://auth/alice"),
        claims: Some(&claims),
        ..AuthzRequest::http(&headers, "GET", "API.example.com:443", "/api/7/items?x=1")
    };
    let tcp = AuthzRequest::tcp(&headers);
    // Warm up, and check the decisions are the interesting ones.
    assert!(policies.evaluate(&req).allowed);
    assert!(!policies.evaluate(&tcp).allowed);

    COUNTING.store(true, Ordering::SeqCst);
    let mut allowed = 0;
    for _ in 0..1000 {
        allowed += usize::from(policies.evaluate(&req).allowed);
        allowed += usize::from(policies.evaluate(&tcp).allowed);
    }
    COUNTING.store(false, Ordering::SeqCst);
    assert_eq!(allowed, 1000);
    assert_eq!(ALLOCS.load(Ordering::SeqCst), 0, "evaluate allocated");
}
