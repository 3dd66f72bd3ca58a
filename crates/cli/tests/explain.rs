//! `trellis explain` on the Alphintra manifests: the real binary, JSON and text output.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn example(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/alphintra")
        .join(rel)
}

fn dev() -> String {
    example("infra/kubernetes/istio/overlays/dev")
        .display()
        .to_string()
}

fn explain(args: &[&str]) -> (String, String, Option<i32>) {
    let out = Command::new(env!("CARGO_BIN_EXE_trellis"))
        .arg("explain")
        .args(args)
        .output()
        .unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.code(),
    )
}

fn explain_json(args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    let (out, err, code) = explain(&all);
    assert_eq!(code, Some(0), "{out}\n{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn step<'v>(e: &'v Value, title_prefix: &str) -> &'v Value {
    e["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["title"].as_str().unwrap().starts_with(title_prefix))
        .unwrap_or_else(|| panic!("no step {title_prefix:?}: {e:#}"))
}

/// A token signed by a fresh demo auth-service key, and its JWKS file.
fn token(dir: &Path, audience: &str, ttl: u64) -> (String, PathBuf) {
    let (key, _) = trellis_demo::SigningKey::generate().unwrap();
    let jwks = dir.join("jwks.json");
    std::fs::write(&jwks, serde_json::json!({"keys": [key.jwk()]}).to_string()).unwrap();
    let auth = trellis_demo::AuthService::new(
        trellis_demo::AuthOptions {
            audience: audience.to_string(),
            ttl,
            ..Default::default()
        },
        key,
    )
    .unwrap();
    (auth.issue("trader").unwrap(), jwks)
}

#[test]
fn anonymous_health_is_allowed_by_the_gateway_policy_rule_0() {
    let e = explain_json(&[
        "-k",
        &dev(),
        "GET",
        "http://dev.alphintra.local/actuator/health",
    ]);
    assert_eq!(e["status"], 200, "{e:#}");
    let authz = step(&e, "Authorization at the gateway");
    assert_eq!(authz["data"]["allowed"], true);
    assert_eq!(authz["data"]["policy"], "istio-system/gateway-authz");
    assert_eq!(authz["data"]["rule"], 0);
    assert_eq!(step(&e, "JWT at the gateway")["data"]["verdict"], "absent");
    assert_eq!(step(&e, "Listener")["data"]["listener"], "0.0.0.0_80");
}

#[test]
fn an_anonymous_api_call_is_denied_because_no_allow_rule_matches() {
    let e = explain_json(&["-k", &dev(), "GET", "http://dev.alphintra.local/api/orders"]);
    assert_eq!(e["status"], 403, "{e:#}");
    assert_eq!(e["flag"], "RBAC");
    let result = e["result"].as_str().unwrap();
    assert!(result.contains("no ALLOW policy matched"), "{result}");
    assert!(result.contains("istio-system/gateway-authz"), "{result}");

    // The text form says the same, step by step.
    let (text, _, code) = explain(&["-k", &dev(), "GET", "http://dev.alphintra.local/api/orders"]);
    assert_eq!(code, Some(0));
    for needle in [
        "listener 0.0.0.0_80",
        "Gateway istio-system/alphintra-gateway servers[0]",
        "✘ VirtualService alphintra/service-gateway rule auth: uri prefix \"/api/auth/\"",
        "✔ VirtualService alphintra/service-gateway rule service-gateway",
        "denied: no ALLOW policy matched (istio-system/gateway-authz)",
        "Result: 403 RBAC",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
}

#[test]
fn the_canary_weights_subsets_and_destination_policy_are_shown() {
    let dir = tempfile::tempdir().unwrap();
    let (jwt, jwks) = token(dir.path(), "alphintra-api", 600);
    let e = explain_json(&[
        "-k",
        &dev(),
        "--jwt",
        &jwt,
        "--jwks",
        jwks.to_str().unwrap(),
        "GET",
        "http://dev.alphintra.local/api/orders",
    ]);
    assert_eq!(e["status"], 200, "{e:#}");
    let jwt_step = step(&e, "JWT at the gateway");
    assert_eq!(jwt_step["data"]["verdict"], "valid");
    assert_eq!(
        jwt_step["data"]["principal"],
        "https://auth.alphintra.com/trader"
    );
    assert!(jwt_step["data"]["signature"]
        .as_str()
        .unwrap()
        .contains("verified"));
    let authz = step(&e, "Authorization at the gateway");
    assert_eq!(
        authz["data"]["rule"], 1,
        "request principal rule: {authz:#}"
    );

    let dests = step(&e, "Destinations")["data"].as_array().unwrap().clone();
    let split: Vec<(String, f64, String)> = dests
        .iter()
        .map(|d| {
            (
                d["subset"].as_str().unwrap_or("").to_string(),
                d["percent"].as_f64().unwrap(),
                d["tls"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        split,
        [
            ("stable".to_string(), 80.0, "ISTIO_MUTUAL".to_string()),
            ("canary".to_string(), 20.0, "ISTIO_MUTUAL".to_string())
        ]
    );
    assert_eq!(dests[0]["destination_rule"], "alphintra/service-gateway");
    let at = step(&e, "At the sidecar of alphintra/service-gateway-stable");
    assert_eq!(at["data"]["mtls_mode"], "STRICT");

    // Without --jwks the signature is not checked offline, and says so.
    let e = explain_json(&[
        "-k",
        &dev(),
        "--jwt",
        &jwt,
        "GET",
        "http://dev.alphintra.local/api/orders",
    ]);
    assert_eq!(e["status"], 200);
    assert!(step(&e, "JWT at the gateway")["data"]["signature"]
        .as_str()
        .unwrap()
        .contains("not verified offline"));
}

#[test]
fn bad_tokens_are_401() {
    let dir = tempfile::tempdir().unwrap();
    let (wrong_aud, _) = token(dir.path(), "someone-else", 600);
    let e = explain_json(&[
        "-k",
        &dev(),
        "--jwt",
        &wrong_aud,
        "GET",
        "http://dev.alphintra.local/api/orders",
    ]);
    assert_eq!(e["status"], 401, "{e:#}");
    assert!(e["result"].as_str().unwrap().contains("audience"), "{e:#}");

    let e = explain_json(&[
        "-k",
        &dev(),
        "-H",
        "Authorization: Bearer not-a-jwt",
        "GET",
        "http://dev.alphintra.local/actuator/health",
    ]);
    assert_eq!(
        e["status"], 401,
        "an invalid token fails even on an open path: {e:#}"
    );

    // Signed by another key than the JWKS given.
    let (jwt, _) = token(dir.path(), "alphintra-api", 600);
    let other = tempfile::tempdir().unwrap();
    let (_, other_jwks) = token(other.path(), "alphintra-api", 600);
    let e = explain_json(&[
        "-k",
        &dev(),
        "--jwt",
        &jwt,
        "--jwks",
        other_jwks.to_str().unwrap(),
        "GET",
        "http://dev.alphintra.local/api/orders",
    ]);
    assert_eq!(e["status"], 401, "{e:#}");
}

#[test]
fn mesh_calls_from_a_sidecar_and_unknown_routes() {
    let local = example("local/dev").display().to_string();
    let e = explain_json(&[
        "-k",
        &local,
        "--from",
        "service-gateway-stable",
        "GET",
        "http://auth-service.alphintra:8080/health",
    ]);
    assert_eq!(e["status"], 200, "{e:#}");
    assert_eq!(e["proxy"]["kind"], "Sidecar");
    let dests = step(&e, "Destinations")["data"].as_array().unwrap().clone();
    assert_eq!(dests[0]["endpoints"][0], "127.0.10.3:8080");
    let at = step(&e, "At the sidecar of alphintra/auth-service");
    assert_eq!(at["data"]["mtls_mode"], "STRICT");
    assert!(
        at["lines"].as_array().unwrap().iter().any(|l| l
            .as_str()
            .unwrap()
            .contains("spiffe://cluster.local/ns/alphintra/sa/service-gateway")),
        "{at:#}"
    );

    // Redis through its ServiceEntry: plain TCP to a host outside the mesh.
    let e = explain_json(&[
        "-k",
        &local,
        "--from",
        "service-gateway-stable",
        "GET",
        "tcp://redis.alphintra.internal:6379",
    ]);
    assert_eq!(e["status"], 200, "{e:#}");
    assert!(e["result"]
        .as_str()
        .unwrap()
        .contains("redis.alphintra.internal:6379"));

    // A host no VirtualService serves, with a token (so authorization allows it): 404 NR.
    let dir = tempfile::tempdir().unwrap();
    let (jwt, _) = token(dir.path(), "alphintra-api", 600);
    let e = explain_json(&[
        "-k",
        &dev(),
        "--jwt",
        &jwt,
        "GET",
        "http://unknown.example/",
    ]);
    assert_eq!(e["status"], 404, "{e:#}");
    assert_eq!(e["flag"], "NR");
}

#[test]
fn bad_invocations_are_errors() {
    let (_, err, code) = explain(&["GET", "http://x/"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("no manifests"), "{err}");
    let (_, err, code) = explain(&["-k", &dev(), "GET", "dev.alphintra.local/x"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("invalid URL"), "{err}");
}
