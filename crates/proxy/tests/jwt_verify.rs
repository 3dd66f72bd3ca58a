//! JWT verification against tokens minted by PyJWT: every accepted algorithm, every attack the
//! issue lists, claim checks, token locations, forwarding and output headers. Key sets are
//! inline here (`jwks:`); remote key sets are `jwt_jwks.rs`.

#[path = "support/jwt_common.rs"]
mod common;

use std::sync::OnceLock;

use base64::Engine;
use common::*;
use serde_json::json;
use trellis_proxy::security::{
    AuthnOptions, AuthnOutcome, EmptyAudiences, FailureKind, JwksCache, JwtAuthenticator,
};

const ISS: &str = "https://issuer.test";
const NOAUD_ISS: &str = "https://noaud.test";
const ALGS: [(&str, &str, &str); 9] = [
    ("RS256", "rsa", "rsa"),
    ("RS384", "rsa", "rsa"),
    ("RS512", "rsa", "rsa"),
    ("PS256", "rsa", "rsa"),
    ("PS384", "rsa", "rsa"),
    ("PS512", "rsa", "rsa"),
    ("ES256", "ec256", "ec256"),
    ("ES384", "ec384", "ec384"),
    ("EdDSA", "ed", "ed"),
];

/// One PyJWT run for the whole file: keys, key sets and every token.
fn minted() -> &'static Minted {
    static M: OnceLock<Minted> = OnceLock::new();
    M.get_or_init(|| {
        let now = now();
        let good = json!({"iss": ISS, "sub": "alice", "aud": "api", "exp": now + 600});
        let with = |extra: serde_json::Value| {
            let mut c = good.clone();
            for (k, v) in extra.as_object().unwrap() {
                if v.is_null() {
                    c.as_object_mut().unwrap().remove(k);
                } else {
                    c[k] = v.clone();
                }
            }
            c
        };
        let mut tokens = serde_json::Map::new();
        for (alg, key, kid) in ALGS {
            tokens.insert(
                format!("ok_{alg}"),
                json!({"key": key, "alg": alg, "claims": good, "headers": {"kid": kid}}),
            );
        }
        let t = |key: &str, alg: &str, claims: serde_json::Value, headers: serde_json::Value| {
            json!({"key": key, "alg": alg, "claims": claims, "headers": headers})
        };
        let rsa_kid = json!({"kid": "rsa"});
        let cases = [
            ("nokid_RS256", t("rsa", "RS256", good.clone(), json!({}))),
            ("nokid_ES384", t("ec384", "ES384", good.clone(), json!({}))),
            ("none", json!({"alg": "none", "claims": good, "headers": {"kid": "rsa"}})),
            (
                "hs256_pem",
                json!({"key": "rsa", "alg": "HS256", "hmac_with_public_pem": true, "claims": good, "headers": {"kid": "rsa"}}),
            ),
            (
                "hs512_pem",
                json!({"key": "rsa", "alg": "HS512", "hmac_with_public_pem": true, "claims": good}),
            ),
            ("hdr_jwk", t("evil", "RS256", good.clone(), json!({"jwk": "$jwk:evil"}))),
            (
                "hdr_jwk_kid",
                t("evil", "RS256", good.clone(), json!({"jwk": "$jwk:evil", "kid": "rsa"})),
            ),
            (
                "hdr_jku",
                t("evil", "RS256", good.clone(), json!({"jku": "http://127.0.0.1:9/jwks", "kid": "rsa"})),
            ),
            (
                "hdr_x5u",
                t("evil", "RS256", good.clone(), json!({"x5u": "http://127.0.0.1:9/cert.pem", "kid": "rsa"})),
            ),
            (
                "hdr_x5c",
                t("rsa", "RS256", good.clone(), json!({"x5c": ["MIIB"], "kid": "rsa"})),
            ),
            ("hdr_crit", t("rsa", "RS256", good.clone(), json!({"crit": ["exp"], "kid": "rsa"}))),
            ("wrong_key", t("evil", "RS256", good.clone(), rsa_kid.clone())),
            ("wrong_key_nokid", t("evil", "RS256", good.clone(), json!({}))),
            ("wrong_iss", t("rsa", "RS256", with(json!({"iss": "https://evil.test"})), rsa_kid.clone())),
            ("no_iss", t("rsa", "RS256", with(json!({"iss": null})), rsa_kid.clone())),
            ("aud_other", t("rsa", "RS256", with(json!({"aud": "other"})), rsa_kid.clone())),
            ("aud_list", t("rsa", "RS256", with(json!({"aud": ["x", "api"]})), rsa_kid.clone())),
            ("aud_absent", t("rsa", "RS256", with(json!({"aud": null})), rsa_kid.clone())),
            ("expired", t("rsa", "RS256", with(json!({"exp": now - 120})), rsa_kid.clone())),
            ("exp_in_skew", t("rsa", "RS256", with(json!({"exp": now - 30})), rsa_kid.clone())),
            ("nbf_future", t("rsa", "RS256", with(json!({"nbf": now + 120})), rsa_kid.clone())),
            ("nbf_in_skew", t("rsa", "RS256", with(json!({"nbf": now + 30})), rsa_kid.clone())),
            ("no_exp", t("rsa", "RS256", with(json!({"exp": null})), rsa_kid.clone())),
            ("exp_string", t("rsa", "RS256", with(json!({"exp": "tomorrow"})), rsa_kid.clone())),
            ("unknown_kid", t("rsa", "RS256", good.clone(), json!({"kid": "nope"}))),
            ("kid_alg_mismatch", t("ec256", "ES256", good.clone(), rsa_kid.clone())),
            ("ps256_for_rs256_key", t("rsa", "PS256", good.clone(), json!({"kid": "rsa-rs256"}))),
            ("rs256_for_rs256_key", t("rsa", "RS256", good.clone(), json!({"kid": "rsa-rs256"}))),
            (
                "claims",
                t(
                    "rsa",
                    "RS256",
                    with(json!({
                        "azp": "web-client",
                        "evil": "x\r\nx-injected: 1",
                        "nul": "a\u{0}b",
                        "org": {"id": "acme", "tier": 3},
                        "org.id": "flat-wins",
                        "deep": {"a": {"b": "c"}},
                        "roles": ["admin", "dev"],
                        "mixed": ["a", {"b": 1}],
                        "admin": true,
                        "level": 7,
                        "obj": {"k": "v"},
                        "scope": "read write  admin",
                        "groups": "g1 g2",
                        "permission": "p1 p2",
                        "aud": ["api", "other"],
                    })),
                    rsa_kid.clone(),
                ),
            ),
            ("noaud_absent", t("rsa", "RS256", json!({"iss": NOAUD_ISS, "sub": "bob"}), rsa_kid.clone())),
            (
                "noaud_host",
                t("rsa", "RS256", json!({"iss": NOAUD_ISS, "sub": "bob", "aud": "web.foo.svc.cluster.local"}), rsa_kid.clone()),
            ),
            (
                "noaud_other",
                t("rsa", "RS256", json!({"iss": NOAUD_ISS, "sub": "bob", "aud": "somebody-else"}), rsa_kid.clone()),
            ),
            ("nosub", t("rsa", "RS256", with(json!({"sub": null})), rsa_kid.clone())),
        ];
        for (name, spec) in cases {
            tokens.insert(name.to_string(), spec);
        }
        mint(&json!({
            "keys": {
                "rsa": {"type": "RSA", "bits": 2048},
                "evil": {"type": "RSA", "bits": 2048},
                "ec256": {"type": "EC", "crv": "P-256"},
                "ec384": {"type": "EC", "crv": "P-384"},
                "ed": {"type": "Ed25519"},
            },
            "jwks": {
                "main": [
                    {"key": "rsa", "kid": "rsa", "use": "sig"},
                    {"key": "ec256", "kid": "ec256"},
                    {"key": "ec384", "kid": "ec384"},
                    {"key": "ed", "kid": "ed"},
                    {"key": "rsa", "kid": "rsa-rs256", "alg": "RS256"},
                ],
            },
            "tokens": tokens,
        }))
    })
}

fn token(name: &str) -> &'static str {
    minted().token(name)
}

/// The main rule: issuer `ISS`, audience `api`, default locations, inline JWKS.
fn main_rules(extra: &str) -> String {
    let jwks = yaml_quote(minted().jwks("main"));
    format!(
        "  - issuer: {ISS}\n    audiences: [api]\n    jwks: {jwks}\n{extra}  - issuer: {NOAUD_ISS}\n    jwks: {jwks}\n"
    )
}

fn authenticator(rules: &str) -> JwtAuthenticator {
    JwtAuthenticator::new(&policy(&ra(rules)), &JwksCache::default())
}

fn main_auth() -> JwtAuthenticator {
    authenticator(&main_rules(""))
}

async fn outcome(auth: &JwtAuthenticator, token: &str) -> AuthnOutcome {
    Req::bearer(token).run(auth).await
}

async fn failure_kind(auth: &JwtAuthenticator, token: &str) -> FailureKind {
    assert_invalid(&outcome(auth, token).await).kind
}

#[tokio::test]
async fn every_supported_algorithm_verifies_with_its_key() {
    let auth = main_auth();
    assert!(auth.warnings().is_empty(), "{:?}", auth.warnings());
    for (alg, _, _) in ALGS {
        let o = outcome(&auth, token(&format!("ok_{alg}"))).await;
        let id = assert_authenticated(&o);
        assert_eq!(
            id.principal.as_deref(),
            Some("https://issuer.test/alice"),
            "{alg}"
        );
        assert_eq!(id.issuer, ISS);
        assert_eq!(id.subject.as_deref(), Some("alice"));
        assert_eq!(id.audiences, ["api"]);
        assert_eq!(id.policy, "foo/jwt");
        assert_eq!(id.rule_index, 0);
    }
    // Without a kid every key of a compatible type is tried.
    assert_authenticated(&outcome(&auth, token("nokid_RS256")).await);
    assert_authenticated(&outcome(&auth, token("nokid_ES384")).await);
    // A JWK's own `alg` narrows what it verifies.
    assert_authenticated(&outcome(&auth, token("rs256_for_rs256_key")).await);
    assert_eq!(
        failure_kind(&auth, token("ps256_for_rs256_key")).await,
        FailureKind::KeyNotFound
    );
}

#[tokio::test]
async fn algorithm_and_header_attacks_are_rejected() {
    let auth = main_auth();
    for (name, kind) in [
        ("none", FailureKind::UnsupportedAlgorithm),
        ("hs256_pem", FailureKind::UnsupportedAlgorithm),
        ("hs512_pem", FailureKind::UnsupportedAlgorithm),
        ("hdr_jwk", FailureKind::ForbiddenHeaderParameter),
        ("hdr_jwk_kid", FailureKind::ForbiddenHeaderParameter),
        ("hdr_jku", FailureKind::ForbiddenHeaderParameter),
        ("hdr_x5u", FailureKind::ForbiddenHeaderParameter),
        ("hdr_x5c", FailureKind::ForbiddenHeaderParameter),
        ("hdr_crit", FailureKind::ForbiddenHeaderParameter),
        ("wrong_key", FailureKind::VerificationFailed),
        ("wrong_key_nokid", FailureKind::VerificationFailed),
        ("unknown_kid", FailureKind::KeyNotFound),
        ("kid_alg_mismatch", FailureKind::KeyNotFound),
    ] {
        let o = outcome(&auth, token(name)).await;
        let f = assert_invalid(&o);
        assert_eq!(f.kind, kind, "{name}: {f:?}");
        assert_eq!(f.status(), http::StatusCode::UNAUTHORIZED);
    }
    // A valid token with its payload swapped for another's (admin) claims.
    let ok = token("ok_RS256");
    let mut parts: Vec<&str> = ok.split('.').collect();
    let forged = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(json!({"iss": ISS, "sub": "admin", "aud": "api"}).to_string());
    parts[1] = &forged;
    assert_eq!(
        failure_kind(&auth, &parts.join(".")).await,
        FailureKind::VerificationFailed
    );
    // Signature stripped (alg kept): rejected.
    let unsigned = format!("{}.{}.", parts[0], ok.split('.').nth(1).unwrap());
    assert_eq!(failure_kind(&auth, &unsigned).await, FailureKind::BadFormat);
    // Garbage.
    for bad in ["abc", "a.b", "a.b.c.d", "e30.e30.e30", "x y.z.w", "Bearer"] {
        let o = outcome(&auth, bad).await;
        assert!(matches!(o, AuthnOutcome::Invalid(_)), "{bad}: {o:?}");
    }
}

#[tokio::test]
async fn issuer_audience_and_time_claims() {
    let auth = main_auth();
    assert_eq!(
        failure_kind(&auth, token("wrong_iss")).await,
        FailureKind::UnknownIssuer
    );
    assert_eq!(
        failure_kind(&auth, token("no_iss")).await,
        FailureKind::UnknownIssuer
    );
    assert_eq!(
        failure_kind(&auth, token("aud_other")).await,
        FailureKind::AudienceNotAllowed
    );
    assert_eq!(
        failure_kind(&auth, token("aud_absent")).await,
        FailureKind::AudienceNotAllowed
    );
    assert_authenticated(&outcome(&auth, token("aud_list")).await);
    assert_eq!(
        failure_kind(&auth, token("expired")).await,
        FailureKind::Expired
    );
    assert_authenticated(&outcome(&auth, token("exp_in_skew")).await);
    assert_eq!(
        failure_kind(&auth, token("nbf_future")).await,
        FailureKind::NotYetValid
    );
    assert_authenticated(&outcome(&auth, token("nbf_in_skew")).await);
    assert_authenticated(&outcome(&auth, token("no_exp")).await);
    assert_eq!(
        failure_kind(&auth, token("exp_string")).await,
        FailureKind::BadPayload
    );
    // No `sub`: valid, but no request principal.
    let o = outcome(&auth, token("nosub")).await;
    assert_eq!(assert_authenticated(&o).principal, None);
    // Envoy's messages.
    let o = outcome(&auth, token("expired")).await;
    assert_eq!(assert_invalid(&o).body(), "Jwt is expired");
    let o = outcome(&auth, token("wrong_key")).await;
    assert_eq!(assert_invalid(&o).body(), "Jwt verification fails");
}

#[tokio::test]
async fn rule_without_audiences_accepts_absent_aud_or_the_destination() {
    let auth = main_auth();
    let id = assert_authenticated(&outcome(&auth, token("noaud_absent")).await).clone();
    assert_eq!(id.principal.as_deref(), Some("https://noaud.test/bob"));
    assert_eq!(id.rule_index, 1);
    assert_authenticated(&outcome(&auth, token("noaud_host")).await);
    assert_eq!(
        failure_kind(&auth, token("noaud_other")).await,
        FailureKind::AudienceNotAllowed
    );
    // Envoy's behaviour on request: any aud.
    let any = JwtAuthenticator::with_options(
        &policy(&ra(&main_rules(""))),
        &JwksCache::default(),
        AuthnOptions {
            empty_audiences: EmptyAudiences::Any,
            ..AuthnOptions::default()
        },
    );
    assert_authenticated(&outcome(&any, token("noaud_other")).await);
}

#[tokio::test]
async fn www_authenticate_and_missing_token() {
    let auth = main_auth();
    let o = outcome(&auth, token("expired")).await;
    let f = assert_invalid(&o);
    let realm = trellis_proxy::security::jwt::realm("https", "api.example.com", "/v1/x?q=1");
    assert_eq!(realm, "https://api.example.com/v1/x");
    assert_eq!(
        f.www_authenticate(&realm),
        "Bearer realm=\"https://api.example.com/v1/x\", error=\"invalid_token\""
    );
    // Injection through the realm is impossible.
    let v = f.www_authenticate("http://h/\"\r\nx-injected: 1");
    assert!(!v.to_str().unwrap().contains('\n'));

    // No token: passes with no principal (authorization decides).
    assert!(matches!(
        Req::new("/").run(&auth).await,
        AuthnOutcome::NoToken
    ));
    // A non-Bearer Authorization header is not a token.
    let mut r = Req::new("/").header("authorization", "Basic dXNlcjpwYXNz");
    assert!(matches!(r.run(&auth).await, AuthnOutcome::NoToken));
    assert_eq!(r.get("authorization"), Some("Basic dXNlcjpwYXNz"));

    // presence: REQUIRED turns a missing token into 401 "Jwt is missing".
    let required = authenticator(&main_rules("    presence: REQUIRED\n"));
    let o = Req::new("/").run(&required).await;
    let f = assert_invalid(&o);
    assert_eq!(f.kind, FailureKind::Missing);
    assert_eq!(f.body(), "Jwt is missing");
    assert_eq!(
        f.www_authenticate("http://h/p"),
        "Bearer realm=\"http://h/p\""
    );
}

fn locations_auth(forward: bool) -> JwtAuthenticator {
    let jwks = yaml_quote(minted().jwks("main"));
    authenticator(&format!(
        "  - issuer: {ISS}\n    audiences: [api]\n    jwks: {jwks}\n    forwardOriginalToken: {forward}\n    fromHeaders:\n    - name: x-jwt\n    - name: Authorization\n      prefix: \"Bearer \"\n    fromParams: [token]\n    fromCookies: [session]\n"
    ))
}

#[tokio::test]
async fn configured_locations_header_prefix_param_cookie() {
    let auth = locations_auth(false);
    let t = token("ok_ES256");

    let mut r = Req::new("/").header("x-jwt", t).header("x-other", "1");
    assert_authenticated(&r.run(&auth).await);
    assert_eq!(r.get("x-jwt"), None, "token header stripped");
    assert_eq!(r.get("x-other"), Some("1"));

    // Prefix matched case-insensitively; the header is removed.
    let mut r = Req::new("/").header("authorization", &format!("bearer {t}"));
    assert_authenticated(&r.run(&auth).await);
    assert_eq!(r.get("authorization"), None);

    // Query parameter: only the token pair is removed.
    let mut r = Req::new(&format!("/p?a=1&token={t}&b=2"));
    assert_authenticated(&r.run(&auth).await);
    assert_eq!(r.uri.to_string(), "/p?a=1&b=2");
    let mut r = Req::new(&format!("/p?token={t}"));
    assert_authenticated(&r.run(&auth).await);
    assert_eq!(r.uri.to_string(), "/p");

    // Cookie: only that cookie is removed.
    let mut r = Req::new("/").header("cookie", &format!("a=1; session={t}; b=2"));
    assert_authenticated(&r.run(&auth).await);
    assert_eq!(r.get("cookie"), Some("a=1; b=2"));
    let mut r = Req::new("/").header("cookie", &format!("session=\"{t}\""));
    assert_authenticated(&r.run(&auth).await);
    assert_eq!(r.get("cookie"), None);

    // Default locations are not read when locations are configured.
    let mut r = Req::new(&format!("/?access_token={t}"));
    assert!(matches!(r.run(&auth).await, AuthnOutcome::NoToken));
}

#[tokio::test]
async fn default_locations_and_forward_original_token() {
    let auth = main_auth();
    let t = token("ok_RS256");
    // Default header: stripped (forwardOriginalToken defaults to false).
    let mut r = Req::bearer(t);
    assert_authenticated(&r.run(&auth).await);
    assert_eq!(r.get("authorization"), None);
    // Default param `access_token`.
    let mut r = Req::new(&format!("/x?access_token={t}&y=1"));
    assert_authenticated(&r.run(&auth).await);
    assert_eq!(r.uri.to_string(), "/x?y=1");
    // A cookie is not a default location.
    let mut r = Req::new("/").header("cookie", &format!("access_token={t}"));
    assert!(matches!(r.run(&auth).await, AuthnOutcome::NoToken));

    // forwardOriginalToken: true keeps it everywhere.
    let fwd = locations_auth(true);
    let mut r = Req::new(&format!("/p?token={t}"))
        .header("authorization", &format!("Bearer {t}"))
        .header("cookie", &format!("session={t}"));
    assert_authenticated(&r.run(&fwd).await);
    assert!(r.get("authorization").is_some());
    assert!(r.get("cookie").is_some());
    assert!(r.uri.to_string().contains("token="));
}

#[tokio::test]
async fn every_token_must_be_valid() {
    let auth = locations_auth(false);
    let good = token("ok_ES256");
    let bad = token("expired");
    // Valid in the header, invalid in the param: 401.
    let mut r = Req::new(&format!("/?token={bad}")).header("x-jwt", good);
    let o = r.run(&auth).await;
    assert_eq!(assert_invalid(&o).kind, FailureKind::Expired);
    // Both valid (same token twice): fine.
    let mut r = Req::new(&format!("/?token={good}")).header("x-jwt", good);
    assert_authenticated(&r.run(&auth).await);
    assert_eq!(r.get("x-jwt"), None);
    assert_eq!(r.uri.to_string(), "/");
    // Two Authorization headers, one forged.
    let mut r =
        Req::bearer(good).header("authorization", &format!("Bearer {}", token("wrong_key")));
    assert!(matches!(r.run(&auth).await, AuthnOutcome::Invalid(_)));
}

#[tokio::test]
async fn output_headers_claims_and_injection_safety() {
    let auth = authenticator(&main_rules(
        "    forwardOriginalToken: true\n    outputPayloadToHeader: x-jwt-payload\n    spaceDelimitedClaims: [groups]\n    outputClaimToHeaders:\n    - {header: x-sub, claim: sub}\n    - {header: x-evil, claim: evil}\n    - {header: x-nul, claim: nul}\n    - {header: x-org, claim: org.id}\n    - {header: x-tier, claim: org.tier}\n    - {header: x-deep, claim: deep.a.b}\n    - {header: x-roles, claim: roles}\n    - {header: x-mixed, claim: mixed}\n    - {header: x-admin, claim: admin}\n    - {header: x-level, claim: level}\n    - {header: x-obj, claim: obj}\n    - {header: x-missing, claim: missing}\n    - {header: x-scope, claim: scope}\n",
    ));
    let t = token("claims");
    // Client-sent copies of output headers are removed, with or without a token.
    let mut r = Req::new("/")
        .header("x-sub", "admin")
        .header("x-jwt-payload", "e30");
    assert!(matches!(r.run(&auth).await, AuthnOutcome::NoToken));
    assert_eq!(r.get("x-sub"), None);
    assert_eq!(r.get("x-jwt-payload"), None);

    let mut r = Req::bearer(t)
        .header("x-sub", "admin")
        .header("x-missing", "spoof");
    let o = r.run(&auth).await;
    let id = assert_authenticated(&o);
    assert_eq!(r.get("x-sub"), Some("alice"));
    assert_eq!(r.get("x-evil"), None, "CR/LF claim never written");
    assert_eq!(r.get("x-injected"), None);
    assert_eq!(r.get("x-nul"), None);
    assert_eq!(
        r.get("x-org"),
        Some("flat-wins"),
        "a top-level dotted claim wins"
    );
    assert_eq!(r.get("x-tier"), Some("3"));
    assert_eq!(r.get("x-deep"), Some("c"));
    assert_eq!(r.get("x-roles"), Some("admin,dev"));
    assert_eq!(r.get("x-mixed"), None);
    assert_eq!(r.get("x-admin"), Some("true"));
    assert_eq!(r.get("x-level"), Some("7"));
    assert_eq!(r.get("x-obj"), None);
    assert_eq!(
        r.get("x-missing"),
        None,
        "spoofed copy removed, nothing written"
    );
    assert_eq!(r.get("x-scope"), Some("read,write,admin"));
    assert!(r.get("authorization").is_some(), "forwarded");
    // The payload header is the token's own payload segment (base64url).
    assert_eq!(r.get("x-jwt-payload"), Some(t.split('.').nth(1).unwrap()));

    // Claims for authorization: space-delimited claims split (scope and permission by default).
    assert_eq!(id.claims["scope"], json!(["read", "write", "admin"]));
    assert_eq!(id.claims["permission"], json!(["p1", "p2"]));
    assert_eq!(id.claims["groups"], json!(["g1", "g2"]));
    assert_eq!(id.claims["roles"], json!(["admin", "dev"]));
    assert_eq!(id.claim("deep.a.b"), Some(&json!("c")));
    assert_eq!(id.presenter.as_deref(), Some("web-client"));
    assert_eq!(id.audiences, ["api", "other"]);
}

#[tokio::test]
async fn rules_of_all_applicable_policies_are_ored() {
    let jwks = yaml_quote(minted().jwks("main"));
    let yaml = format!(
        "{}---\napiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata:\n  name: mesh\n  namespace: istio-system\nspec:\n  jwtRules:\n  - issuer: {NOAUD_ISS}\n    jwks: {jwks}\n",
        ra(&format!("  - issuer: {ISS}\n    audiences: [api]\n    jwks: {jwks}\n"))
    );
    let auth = JwtAuthenticator::new(&policy(&yaml), &JwksCache::default());
    let a = outcome(&auth, token("ok_RS256")).await;
    assert_eq!(assert_authenticated(&a).policy, "foo/jwt");
    let b = outcome(&auth, token("noaud_absent")).await;
    assert_eq!(assert_authenticated(&b).policy, "istio-system/mesh");
    assert_eq!(
        failure_kind(&auth, token("wrong_iss")).await,
        FailureKind::UnknownIssuer
    );
}

#[tokio::test]
async fn unusable_inline_jwks_fails_closed() {
    let auth = authenticator(&format!(
        "  - issuer: {ISS}\n    audiences: [api]\n    jwks: '{{\"keys\":[{{\"kty\":\"oct\",\"k\":\"c2VjcmV0\"}}]}}'\n"
    ));
    assert!(!auth.warnings().is_empty());
    let o = outcome(&auth, token("ok_RS256")).await;
    assert_eq!(assert_invalid(&o).kind, FailureKind::JwksNoValidKeys);
}

#[tokio::test]
async fn no_policy_means_no_token_and_no_work() {
    let auth = JwtAuthenticator::new(&policy(""), &JwksCache::default());
    assert!(auth.is_empty());
    assert!(matches!(
        outcome(&auth, token("ok_RS256")).await,
        AuthnOutcome::NoToken
    ));
}

#[tokio::test]
async fn cached_verifications_still_depend_on_location_and_destination() {
    let jwks = yaml_quote(minted().jwks("main"));
    // Same issuer twice: the header rule accepts `api`, the cookie rule only `other-api`.
    let auth = authenticator(&format!(
        "  - issuer: {ISS}\n    audiences: [api]\n    jwks: {jwks}\n    fromHeaders: [{{name: x-a}}]\n  - issuer: {ISS}\n    audiences: [other-api]\n    jwks: {jwks}\n    fromCookies: [c]\n  - issuer: {NOAUD_ISS}\n    jwks: {jwks}\n"
    ));
    let t = token("ok_PS256");
    for _ in 0..2 {
        let mut r = Req::new("/").header("x-a", t);
        assert_authenticated(&r.run(&auth).await);
    }
    // The verified (cached) token, presented where only the other rule reads: rejected.
    let mut r = Req::new("/").header("cookie", &format!("c={t}"));
    let o = r.run(&auth).await;
    assert_eq!(assert_invalid(&o).kind, FailureKind::AudienceNotAllowed);

    // A rule without audiences: the destination decides, cached or not.
    let t = token("noaud_host");
    let mut headers = http::HeaderMap::new();
    let bearer = http::HeaderValue::from_str(&format!("Bearer {t}")).unwrap();
    for _ in 0..2 {
        headers.insert("authorization", bearer.clone());
        let mut uri: http::Uri = "/".parse().unwrap();
        let o = auth
            .authenticate(&mut headers, &mut uri, &["web.foo.svc.cluster.local"])
            .await;
        assert_authenticated(&o);
    }
    headers.insert("authorization", bearer);
    let mut uri: http::Uri = "/".parse().unwrap();
    let o = auth
        .authenticate(&mut headers, &mut uri, &["db.foo.svc.cluster.local"])
        .await;
    assert_eq!(assert_invalid(&o).kind, FailureKind::AudienceNotAllowed);
}

#[tokio::test]
async fn too_many_tokens_in_one_request_are_refused() {
    let auth = main_auth();
    let mut r = Req::new("/");
    for i in 0..9 {
        r = r.header("authorization", &format!("Bearer a{i}.b.c"));
    }
    let o = r.run(&auth).await;
    assert_eq!(assert_invalid(&o).kind, FailureKind::BadFormat);
}

/// Per-request cost with cached keys: `cargo test --release -p trellis-proxy --test jwt_verify
/// -- --ignored --nocapture per_request_cost`.
#[tokio::test]
#[ignore]
async fn per_request_cost() {
    let auth = main_auth();
    for alg in ["RS256", "ES256", "EdDSA"] {
        let t = token(&format!("ok_{alg}"));
        let bearer = http::HeaderValue::from_str(&format!("Bearer {t}")).unwrap();
        let n = 20_000;
        let start = std::time::Instant::now();
        for _ in 0..n {
            let mut headers = http::HeaderMap::new();
            headers.insert("authorization", bearer.clone());
            headers.insert("user-agent", http::HeaderValue::from_static("bench"));
            let mut uri: http::Uri = "/api/v1/orders?x=1".parse().unwrap();
            let o = auth
                .authenticate(&mut headers, &mut uri, &["web.foo.svc.cluster.local"])
                .await;
            assert!(matches!(o, AuthnOutcome::Authenticated(_)));
        }
        let per = start.elapsed() / n;
        // The same token again and again: the verified-token cache answers.
        println!("{alg}: {per:?} per request (cached verification)");
        // A fresh authenticator each time: the signature is checked.
        let m = 200;
        let mut cold = std::time::Duration::ZERO;
        for _ in 0..m {
            let fresh = main_auth();
            let mut headers = http::HeaderMap::new();
            headers.insert("authorization", bearer.clone());
            let mut uri: http::Uri = "/".parse().unwrap();
            let start = std::time::Instant::now();
            let o = fresh
                .authenticate(&mut headers, &mut uri, &["web.foo.svc.cluster.local"])
                .await;
            cold += start.elapsed();
            assert!(matches!(o, AuthnOutcome::Authenticated(_)));
        }
        println!("{alg}: {:?} per request (signature verified)", cold / m);
    }
}
