//! The ingress gateway enforcing the Alphintra policies end to end, on real sockets: the
//! manifests are compiled by the real compiler, served by the real runtime, tokens are minted by
//! PyJWT and their keys served by a local JWKS server the gateway fetches (`jwksUri`).
//!
//! - anonymous requests reach only `/health*` and the public `/api/auth/*` endpoints; anything
//!   else needs a valid JWT (`requestPrincipals: ["*"]`);
//! - invalid tokens (expired, forged, `alg: none`) are 401 with `www-authenticate`;
//! - a DENY on `/admin*` holds against path tricks (normalized before authorization; the
//!   upstream gets the normalized path);
//! - `outputClaimToHeaders` reaches the upstream; client-sent copies and `x-forwarded-client-cert`
//!   do not;
//! - every denial names the policy and rule in the access log and the authz log;
//! - CUSTOM rules ask the ext-authz HTTP provider.

mod common;
#[path = "support/jwt_common.rs"]
mod jwt;
mod security_support;

use std::sync::Arc;

use common::{Reply, Seen, Upstream};
use jwt::{cache_with_ca, mint, now, JwksServer, Minted};
use security_support::*;
use serde_json::json;
use trellis_api::MeshConfig;
use trellis_proxy::RunningProxy;

const ISS: &str = "https://auth.alphintra.test";
const HOST: &str = "api.alphintra.test";

fn minted() -> Minted {
    let now = now();
    let claims = json!({
        "iss": ISS, "sub": "alice", "aud": "alphintra-api", "exp": now + 600,
        "email": "alice@alphintra.test"
    });
    let mut expired = claims.clone();
    expired["exp"] = json!(now - 3600);
    expired["iat"] = json!(now - 7200);
    let mut wrong_aud = claims.clone();
    wrong_aud["aud"] = json!("someone-else");
    let mut evil = claims.clone();
    evil["email"] = json!("x@y\r\nx-injected: 1");
    mint(&json!({
        "keys": {"auth": {"type": "RSA", "bits": 2048}, "attacker": {"type": "RSA", "bits": 2048}},
        "jwks": {"auth": [{"key": "auth", "kid": "k1", "alg": "RS256", "use": "sig"}]},
        "tokens": {
            "good": {"key": "auth", "alg": "RS256", "claims": claims, "headers": {"kid": "k1"}},
            "expired": {"key": "auth", "alg": "RS256", "claims": expired, "headers": {"kid": "k1"}},
            "forged": {"key": "attacker", "alg": "RS256", "claims": claims, "headers": {"kid": "k1"}},
            "none": {"alg": "none", "claims": claims},
            "hmac": {"key": "auth", "alg": "HS256", "claims": claims, "headers": {"kid": "k1"},
                     "hmac_with_public_pem": true},
            "wrong_aud": {"key": "auth", "alg": "RS256", "claims": wrong_aud, "headers": {"kid": "k1"}},
            "evil_claim": {"key": "auth", "alg": "RS256", "claims": evil, "headers": {"kid": "k1"}}
        }
    }))
}

/// The gateway manifests (Alphintra's RequestAuthentication + AuthorizationPolicy shapes),
/// with the JWKS at `jwks_url`, the backend at `backend_port` and the ext-authz provider's
/// service at `ext_port`.
fn manifests(jwks_url: &str, backend_port: u16, ext_port: u16) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: ingress, namespace: istio-system, labels: {{istio: ingressgateway}}}}
spec: {{serviceAccountName: ingress, containers: [{{name: istio-proxy, image: trellis}}]}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gw, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers: [{{port: {{number: 80, name: http, protocol: HTTP}}, hosts: ["*"]}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: api, namespace: istio-system}}
spec:
  hosts: ["*"]
  gateways: [gw]
  http: [{{route: [{{destination: {{host: backend.app.svc.cluster.local, port: {{number: 8080}}}}}}]}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: backend, namespace: app}}
spec:
  hosts: [backend.app.svc.cluster.local]
  location: MESH_INTERNAL
  ports: [{{number: 8080, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1, ports: {{http: {backend_port}}}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: ext-authz, namespace: istio-system}}
spec:
  hosts: [ext-authz.istio-system.svc.cluster.local]
  location: MESH_INTERNAL
  ports: [{{number: 9000, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1, ports: {{http: {ext_port}}}}}]
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: gateway-jwt, namespace: istio-system}}
spec:
  selector: {{matchLabels: {{istio: ingressgateway}}}}
  jwtRules:
    - issuer: {ISS}
      jwksUri: {jwks_url}
      audiences: [alphintra-api]
      outputClaimToHeaders:
        - {{header: x-jwt-sub, claim: sub}}
        - {{header: x-jwt-email, claim: email}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: gateway-authz, namespace: istio-system}}
spec:
  selector: {{matchLabels: {{istio: ingressgateway}}}}
  action: ALLOW
  rules:
    - to:
        - operation:
            paths: [/health, /healthz, /actuator/health, /api/auth/login, /api/auth/register, /api/auth/refresh, /.well-known/jwks.json]
    - from:
        - source:
            requestPrincipals: ["*"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: deny-admin, namespace: istio-system}}
spec:
  selector: {{matchLabels: {{istio: ingressgateway}}}}
  action: DENY
  rules:
    - to:
        - operation:
            paths: ["/admin*"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: ext-check, namespace: istio-system}}
spec:
  selector: {{matchLabels: {{istio: ingressgateway}}}}
  action: CUSTOM
  provider: {{name: ext}}
  rules:
    - to:
        - operation:
            paths: ["/ext/*"]
"#
    )
}

fn mesh() -> MeshConfig {
    MeshConfig {
        extension_providers: serde_json::from_value(json!([{
            "name": "ext",
            "envoyExtAuthzHttp": {
                "service": "ext-authz.istio-system.svc.cluster.local",
                "port": 9000,
                "pathPrefix": "/check",
                "includeRequestHeadersInCheck": ["x-ext-allow"],
                "headersToUpstreamOnAllow": ["x-ext-user"],
                "headersToDownstreamOnDeny": ["x-ext-reason"]
            }
        }]))
        .unwrap(),
        ..MeshConfig::default()
    }
}

struct Env {
    minted: Minted,
    backend: Upstream,
    ext: Upstream,
    _jwks: JwksServer,
    proxy: RunningProxy,
    addr: std::net::SocketAddr,
}

async fn env() -> Env {
    let minted = minted();
    let jwks = JwksServer::start(minted.jwks("auth")).await;
    let backend = Upstream::echo("backend").await;
    let ext = Upstream::start(
        "ext",
        Arc::new(|s: &Seen| {
            if s.headers.get("x-ext-allow").is_some_and(|v| v == "yes") {
                Reply {
                    headers: vec![("x-ext-user".into(), "bob".into())],
                    ..Reply::status(200)
                }
            } else {
                Reply {
                    headers: vec![("x-ext-reason".into(), "not allowed".into())],
                    body: "ext says no".into(),
                    ..Reply::status(403)
                }
            }
        }),
    )
    .await;
    let res = load(&manifests(
        &jwks.url("/.well-known/jwks.json"),
        backend.addr.port(),
        ext.addr.port(),
    ));
    let config = compile_for(&res, &mesh(), "istio-system/ingress");
    assert!(
        config.warnings.is_empty(),
        "compile warnings: {:?}",
        config.warnings
    );
    let proxy = start(
        config,
        Start {
            jwks: Some(cache_with_ca(None)),
            ..Start::default()
        },
    );
    let addr = proxy.listener_addr("0.0.0.0_80").unwrap();
    Env {
        minted,
        backend,
        ext,
        _jwks: jwks,
        proxy,
        addr,
    }
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[tokio::test]
async fn anonymous_requests_reach_only_health_and_public_auth_endpoints() {
    let e = env().await;
    for path in [
        "/health",
        "/healthz",
        "/api/auth/login",
        "/.well-known/jwks.json",
    ] {
        let (status, body) = get(e.addr, HOST, path, &[]).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(echo(&body, "path").as_deref(), Some(path));
    }
    let before = e.backend.hits();
    for path in [
        "/api/orders",
        "/",
        "/api/auth/loginx",
        "/health/../api/orders",
    ] {
        let (status, body) = get(e.addr, HOST, path, &[]).await;
        assert_eq!(status, 403, "{path}: {body}");
        assert!(body.ends_with("RBAC: access denied"), "{body}");
    }
    assert_eq!(
        e.backend.hits(),
        before,
        "denied requests never reach the backend"
    );
    // The denial names the policy: access log (flag RBAC and the decision) and authz log.
    let line = wait_log(&["\"GET /api/orders HTTP/1.1\" 403 RBAC"]).await;
    assert!(
        line[0].contains("denied: no ALLOW policy matched (istio-system/gateway-authz)"),
        "{line:?}"
    );
    e.proxy.shutdown(std::time::Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_valid_token_passes_and_its_claims_reach_the_upstream() {
    let e = env().await;
    let token = e.minted.token("good");
    let (status, body) = get(
        e.addr,
        HOST,
        "/api/orders?x=1",
        &[
            ("authorization", &bearer(token)),
            // Spoofed claim headers are replaced by the verified ones.
            ("x-jwt-sub", "mallory"),
            ("x-jwt-email", "mallory@evil.test"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(echo(&body, "path").as_deref(), Some("/api/orders?x=1"));
    assert_eq!(echo(&body, "h:x-jwt-sub").as_deref(), Some("alice"));
    assert_eq!(
        echo(&body, "h:x-jwt-email").as_deref(),
        Some("alice@alphintra.test")
    );
    // forwardOriginalToken is false: the token stays at the gateway.
    assert_eq!(echo(&body, "h:authorization"), None);
    let line = wait_log(&["\"GET /api/orders?x=1 HTTP/1.1\" 200"]).await;
    assert!(
        line[0].contains("allowed by ALLOW policy istio-system/gateway-authz rule 1"),
        "{line:?}"
    );

    // A claim value that would inject a header is not written (the request still passes).
    let (status, body) = get(
        e.addr,
        HOST,
        "/api/me",
        &[("authorization", &bearer(e.minted.token("evil_claim")))],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(echo(&body, "h:x-injected"), None);
    assert_eq!(echo(&body, "h:x-jwt-email"), None);
    e.proxy.shutdown(std::time::Duration::from_secs(1)).await;
}

#[tokio::test]
async fn invalid_tokens_are_401_with_www_authenticate() {
    let e = env().await;
    let before = e.backend.hits();
    for (name, message) in [
        ("expired", "Jwt is expired"),
        ("forged", "Jwt verification fails"),
        ("none", "Jwt header [alg] is not supported"),
        ("hmac", "Jwt header [alg] is not supported"),
        ("wrong_aud", "Audiences in Jwt are not allowed"),
    ] {
        let (status, text) = get(
            e.addr,
            HOST,
            "/api/orders?page=2",
            &[("authorization", &bearer(e.minted.token(name)))],
        )
        .await;
        assert_eq!(status, 401, "{name}: {text}");
        assert!(text.ends_with(message), "{name}: {text}");
        assert_eq!(
            header(&text, "www-authenticate").as_deref(),
            Some(
                format!("Bearer realm=\"http://{HOST}/api/orders\", error=\"invalid_token\"")
                    .as_str()
            ),
            "{name}"
        );
        // An invalid token is refused even on anonymous paths.
        let (status, _) = get(
            e.addr,
            HOST,
            "/health",
            &[("authorization", &bearer(e.minted.token(name)))],
        )
        .await;
        assert_eq!(status, 401, "{name} on /health");
    }
    assert_eq!(e.backend.hits(), before);
    assert!(!logs(&["JWT authentication failed: Jwt is expired"]).is_empty());
    e.proxy.shutdown(std::time::Duration::from_secs(1)).await;
}

/// DENY `/admin*` against path tricks, with a valid token (so only the DENY can stop them).
/// Trellis normalizes with `DECODE_AND_MERGE_SLASHES` by default (MeshConfig
/// `pathNormalization` DEFAULT), rejects `\` and `;` path parameters, and matches paths
/// case-sensitively as Istio does: `/ADMIN` is not `/admin` (an upstream that treats paths
/// case-insensitively needs a DENY for each spelling, or a `notPaths` ALLOW list).
#[tokio::test]
async fn deny_admin_holds_against_path_tricks() {
    let e = env().await;
    let auth = bearer(e.minted.token("good"));
    let h = [("authorization", auth.as_str())];
    let before = e.backend.hits();
    for path in [
        "/admin",
        "/admin/users",
        "/administrator",
        "//admin",
        "/./admin",
        "/public/../admin",
        "/public/%2e%2e/admin",
        "/%61dmin",
        "/%2Fadmin",
        "/x/..%2fadmin",
        "/admin?x=1",
        "///admin//",
        "/\\admin",
        "/x\\..\\admin",
    ] {
        let (status, text) = get(e.addr, HOST, path, &h).await;
        assert_eq!(status, 403, "{path}: {text}");
        assert!(text.ends_with("RBAC: access denied"), "{path}: {text}");
    }
    for path in ["/admin;x=y", "/user/..;p/admin", "/%00admin"] {
        let (status, text) = get(e.addr, HOST, path, &h).await;
        assert_eq!(status, 400, "{path}: {text}");
    }
    assert_eq!(e.backend.hits(), before, "no trick reached the backend");
    let line = wait_log(&["\"GET /%61dmin HTTP/1.1\" 403 RBAC"]).await;
    assert!(
        line[0].contains("denied by DENY policy istio-system/deny-admin rule 0"),
        "{line:?}"
    );
    let authz = logs(&[
        "trellis::authz",
        "GET /admin ",
        "denied by DENY policy istio-system/deny-admin rule 0",
    ]);
    assert!(!authz.is_empty(), "authz log names the policy and rule");

    // Case-sensitive, as Istio: /ADMIN is a different path (documented above).
    let (status, text) = get(e.addr, HOST, "/ADMIN", &h).await;
    assert_eq!(status, 200, "{text}");
    // The upstream receives the normalized path: what authorization judged.
    let (status, text) = get(e.addr, HOST, "/public/./x//y/../%7Ez", &h).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(echo(&text, "path").as_deref(), Some("/public/x/~z"));
    e.proxy.shutdown(std::time::Duration::from_secs(1)).await;
}

#[tokio::test]
async fn client_sent_forwarded_client_cert_is_stripped_at_the_gateway() {
    let e = env().await;
    let (status, body) = get(
        e.addr,
        HOST,
        "/health",
        &[(
            "x-forwarded-client-cert",
            "By=spiffe://cluster.local/ns/x/sa/y;URI=spiffe://cluster.local/ns/admin/sa/root",
        )],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(echo(&body, "h:x-forwarded-client-cert"), None, "{body}");
    e.proxy.shutdown(std::time::Duration::from_secs(1)).await;
}

#[tokio::test]
async fn custom_rules_ask_the_ext_authz_provider() {
    let e = env().await;
    let auth = bearer(e.minted.token("good"));
    // Allowed by the provider: its x-ext-user reaches the upstream.
    let (status, body) = get(
        e.addr,
        HOST,
        "/ext/report?q=1",
        &[("authorization", &auth), ("x-ext-allow", "yes")],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(echo(&body, "h:x-ext-user").as_deref(), Some("bob"));
    let check = e.ext.last();
    assert_eq!(check.path, "/check/ext/report?q=1");
    assert_eq!(check.method, "GET");
    assert!(
        check.headers.get("authorization").is_none(),
        "only the included headers"
    );

    // Denied by the provider: its status, body and allowed headers reach the client.
    let before = e.backend.hits();
    let (status, text) = get(e.addr, HOST, "/ext/report", &[("authorization", &auth)]).await;
    assert_eq!(status, 403, "{text}");
    assert!(text.ends_with("ext says no"), "{text}");
    assert_eq!(
        header(&text, "x-ext-reason").as_deref(),
        Some("not allowed")
    );
    assert_eq!(e.backend.hits(), before);
    let line = wait_log(&["\"GET /ext/report HTTP/1.1\" 403 UAEX"]).await;
    assert!(line[0].contains("ext-authz ext answered 403"), "{line:?}");

    // CUSTOM runs before DENY and ALLOW (Istio's order). Anonymous, the local ALLOW policy
    // would deny, yet the provider is asked first and its denial is the answer...
    let asked = e.ext.hits();
    let (status, text) = get(e.addr, HOST, "/ext/anonymous", &[]).await;
    assert_eq!(status, 403, "{text}");
    assert!(text.ends_with("ext says no"), "{text}");
    assert_eq!(
        header(&text, "x-ext-reason").as_deref(),
        Some("not allowed")
    );
    assert_eq!(e.ext.hits(), asked + 1, "the provider was asked first");
    assert_eq!(e.ext.last().path, "/check/ext/anonymous");
    wait_log(&[
        "\"GET /ext/anonymous HTTP/1.1\" 403 UAEX",
        "ext-authz ext answered 403",
    ])
    .await;
    // ... and when it allows, ALLOW still has to: no token, so RBAC denies.
    let (status, text) = get(e.addr, HOST, "/ext/anonymous2", &[("x-ext-allow", "yes")]).await;
    assert_eq!(status, 403, "{text}");
    assert!(text.ends_with("RBAC: access denied"), "{text}");
    assert_eq!(e.ext.hits(), asked + 2);
    assert_eq!(e.backend.hits(), before);
    wait_log(&[
        "\"GET /ext/anonymous2 HTTP/1.1\" 403 RBAC",
        "denied: no ALLOW policy matched",
    ])
    .await;
    e.proxy.shutdown(std::time::Duration::from_secs(1)).await;
}

#[tokio::test]
async fn an_unreachable_ext_authz_provider_fails_closed() {
    let minted = minted();
    let jwks = JwksServer::start(minted.jwks("auth")).await;
    let backend = Upstream::echo("backend").await;
    let dead = common::dead_addr().await;
    let res = load(&manifests(
        &jwks.url("/jwks"),
        backend.addr.port(),
        dead.port(),
    ));
    let proxy = start(
        compile_for(&res, &mesh(), "istio-system/ingress"),
        Start {
            jwks: Some(cache_with_ca(None)),
            ..Start::default()
        },
    );
    let addr = proxy.listener_addr("0.0.0.0_80").unwrap();
    let auth = bearer(minted.token("good"));
    let (status, text) = get(
        addr,
        HOST,
        "/ext/unreachable",
        &[("authorization", &auth), ("x-ext-allow", "yes")],
    )
    .await;
    assert_eq!(status, 403, "{text}");
    assert_eq!(backend.hits(), 0);
    let line = wait_log(&["\"GET /ext/unreachable HTTP/1.1\" 403 UAEX"]).await;
    assert!(line[0].contains("ext-authz ext unavailable"), "{line:?}");
    // Paths the CUSTOM rule does not match do not ask the provider.
    let (status, _) = get(addr, HOST, "/api/orders", &[("authorization", &auth)]).await;
    assert_eq!(status, 200);
    proxy.shutdown(std::time::Duration::from_secs(1)).await;
}
