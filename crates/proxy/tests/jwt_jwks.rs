//! Remote key sets against a real JWKS server (hyper on a loopback ephemeral port, HTTP and
//! HTTPS with a test CA): fail closed before the first fetch, rate-limited refetch on an
//! unknown `kid` with one shared in-flight fetch, key rotation, outages and garbage answers
//! that keep the last good keys, timeouts, OpenID discovery, and keys surviving a reload.

#[path = "support/jwt_common.rs"]
mod common;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use trellis_proxy::security::{
    AuthnOutcome, FailureKind, JwksCache, JwksOptions, JwtAuthenticator,
};

const ISS: &str = "https://remote.test";

fn minted() -> &'static Minted {
    static M: OnceLock<Minted> = OnceLock::new();
    M.get_or_init(|| {
        let claims = json!({"iss": ISS, "sub": "carol", "aud": "api", "exp": now() + 3600});
        mint(&json!({
            "keys": {"k1": {"type": "RSA"}, "k2": {"type": "EC", "crv": "P-256"}},
            "jwks": {
                "k1": [{"key": "k1", "kid": "k1"}],
                "k2": [{"key": "k2", "kid": "k2"}],
            },
            "tokens": {
                "t1": {"key": "k1", "alg": "RS256", "claims": claims, "headers": {"kid": "k1"}},
                "t2": {"key": "k2", "alg": "ES256", "claims": claims, "headers": {"kid": "k2"}},
                "unknown_kid": {"key": "k1", "alg": "RS256", "claims": claims, "headers": {"kid": "zzz"}},
            },
        }))
    })
}

fn tok(name: &str) -> &'static str {
    minted().token(name)
}

fn jwks(name: &str) -> &'static str {
    minted().jwks(name)
}

fn remote_auth(cache: &JwksCache, uri: &str, extra: &str) -> JwtAuthenticator {
    JwtAuthenticator::new(
        &policy(&ra(&format!(
            "  - issuer: {ISS}\n    audiences: [api]\n    jwksUri: {uri}\n{extra}"
        ))),
        cache,
    )
}

async fn wait_for_keys(cache: &JwksCache) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while cache.status().iter().all(|s| s.keys == 0) {
        assert!(Instant::now() < deadline, "no keys: {:?}", cache.status());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn run(auth: &JwtAuthenticator, token: &str) -> AuthnOutcome {
    Req::bearer(token).run(auth).await
}

#[tokio::test]
async fn keys_fetched_over_http_and_status_reported() {
    let server = JwksServer::start(jwks("k1")).await;
    let cache = cache_with_ca(None);
    let auth = remote_auth(&cache, &server.url("/jwks"), "");
    let id = assert_authenticated(&run(&auth, tok("t1")).await).clone();
    assert_eq!(id.principal.as_deref(), Some("https://remote.test/carol"));
    let st = cache.status();
    assert_eq!(st.len(), 1);
    assert_eq!(st[0].url, server.url("/jwks"));
    assert_eq!(st[0].keys, 1);
    assert!(st[0].fetches >= 1 && st[0].last_success.is_some() && st[0].last_error.is_none());
}

#[tokio::test]
async fn keys_fetched_over_https_with_a_private_ca() {
    let pki = test_pki();
    let server =
        JwksServer::start_with(Reply::Body(jwks("k2").into()), Some(pki.acceptor.clone())).await;
    for host in ["localhost", "127.0.0.1"] {
        let url = format!("https://{host}:{}/jwks", server.addr.port());
        let cache = cache_with_ca(Some(&pki.ca_pem));
        let auth = remote_auth(&cache, &url, "");
        assert_authenticated(&run(&auth, tok("t2")).await);
    }
    // The same server is not trusted without the CA: fail closed.
    let untrusted = cache_with_ca(None);
    let auth = remote_auth(&untrusted, &server.url("/jwks"), "");
    let o = run(&auth, tok("t2")).await;
    let f = assert_invalid(&o);
    assert_eq!(f.kind, FailureKind::JwksFetchFailed);
    assert!(
        f.detail.contains("TLS") || f.detail.contains("certificate"),
        "{}",
        f.detail
    );
    assert!(JwksCache::new(JwksOptions {
        ca_bundle_pem: Some(b"not a pem".to_vec()),
        ..JwksOptions::default()
    })
    .is_err());
}

#[tokio::test]
async fn before_the_first_successful_fetch_tokens_are_rejected() {
    let server = JwksServer::start_with(Reply::Status(503), None).await;
    let cache = cache_with_ca(None);
    let auth = remote_auth(&cache, &server.url("/jwks"), "");
    let o = run(&auth, tok("t1")).await;
    let f = assert_invalid(&o);
    assert_eq!(f.kind, FailureKind::JwksFetchFailed);
    assert_eq!(f.body(), "Jwks remote fetch is failed");
    // Garbage is no better than an error.
    server.set_body("<html>login</html>");
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(
        assert_invalid(&run(&auth, tok("t1")).await).kind,
        FailureKind::JwksFetchFailed
    );
    // Once the JWKS is served, the next request (past the rate-limit window) fetches it.
    server.set_body(jwks("k1"));
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_authenticated(&run(&auth, tok("t1")).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_kid_refetches_once_for_a_burst() {
    // The server is slow so that the burst overlaps one in-flight fetch.
    let server = JwksServer::start(jwks("k1")).await;
    // A 1 s rate-limit window: wide enough that a slow machine still sends the whole burst
    // (and the requests after it) inside it.
    let cache = JwksCache::new(JwksOptions {
        min_fetch_interval: Duration::from_secs(1),
        ..fast_options()
    })
    .unwrap();
    let auth = Arc::new(remote_auth(&cache, &server.url("/jwks"), ""));
    assert_authenticated(&run(&auth, tok("t1")).await);
    tokio::time::sleep(Duration::from_millis(1100)).await; // past the rate-limit window
    server.set(Reply::Slow(Duration::from_millis(200), jwks("k1").into()));
    let before = server.fetches();
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let auth = auth.clone();
            tokio::spawn(async move { run(&auth, tok("unknown_kid")).await })
        })
        .collect();
    for t in tasks {
        let o = t.await.unwrap();
        assert_eq!(assert_invalid(&o).kind, FailureKind::KeyNotFound);
    }
    let burst = server.fetches() - before;
    assert_eq!(
        burst, 1,
        "a burst of 50 unknown-kid requests fetched {burst} times"
    );
    // Right after, more unknown kids do not fetch at all (rate limit), and known kids never do.
    for _ in 0..20 {
        run(&auth, tok("unknown_kid")).await;
        assert_authenticated(&run(&auth, tok("t1")).await);
    }
    assert_eq!(server.fetches() - before, 1);
}

#[tokio::test]
async fn key_rotation_is_picked_up_on_an_unknown_kid() {
    let server = JwksServer::start(jwks("k1")).await;
    let cache = cache_with_ca(None);
    let auth = remote_auth(&cache, &server.url("/jwks"), "");
    assert_authenticated(&run(&auth, tok("t1")).await);
    // The issuer rotates to k2 and drops k1.
    server.set_body(jwks("k2"));
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_authenticated(&run(&auth, tok("t2")).await);
    assert_eq!(
        assert_invalid(&run(&auth, tok("t1")).await).kind,
        FailureKind::KeyNotFound
    );
}

#[tokio::test]
async fn outages_and_garbage_keep_the_last_good_keys() {
    let server = JwksServer::start(jwks("k1")).await;
    let cache = JwksCache::new(JwksOptions {
        refresh_interval: Duration::from_millis(100),
        ..fast_options()
    })
    .unwrap();
    let auth = remote_auth(&cache, &server.url("/jwks"), "");
    wait_for_keys(&cache).await;
    assert_authenticated(&run(&auth, tok("t1")).await);

    let bad_answers = [
        Reply::Status(500),
        Reply::Status(404),
        Reply::Body("<html>oops</html>".into()),
        Reply::Body("{\"keys\": []}".into()),
        Reply::Body("{\"foo\": 1}".into()),
        Reply::Body("{\"keys\":[{\"kty\":\"oct\",\"k\":\"c2VjcmV0\"}]}".into()),
        Reply::Body("{\"keys\":[{\"kty\":\"RSA\",\"n\":\"AQAB\",\"e\":\"AQAB\"}]}".into()),
    ];
    for bad in bad_answers {
        let fetched = server.fetches();
        server.set(bad.clone());
        // The background refresh runs (and fails) at least twice.
        wait_until("background refetch", || server.fetches() >= fetched + 2).await;
        let st = &cache.status()[0];
        assert!(st.last_error.is_some(), "{bad:?} accepted: {st:?}");
        assert_eq!(st.keys, 1, "{bad:?}");
        assert_authenticated(&run(&auth, tok("t1")).await);
    }
    // The server disappears entirely.
    let url = server.url("/jwks");
    drop(server);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_authenticated(&run(&auth, tok("t1")).await);
    assert!(cache.status()[0]
        .last_error
        .as_deref()
        .unwrap()
        .contains(&url));
}

#[tokio::test]
async fn fetch_timeout_fails_closed_quickly() {
    let server =
        JwksServer::start_with(Reply::Slow(Duration::from_secs(3), jwks("k1").into()), None).await;
    let cache = cache_with_ca(None);
    let auth = remote_auth(&cache, &server.url("/jwks"), "    timeout: 300ms\n");
    let started = Instant::now();
    let o = run(&auth, tok("t1")).await;
    let f = assert_invalid(&o);
    assert_eq!(f.kind, FailureKind::JwksFetchFailed);
    assert!(f.detail.contains("timed out"), "{}", f.detail);
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn openid_discovery_when_no_jwks_is_configured() {
    let server = JwksServer::start("{}").await;
    let issuer = format!("http://{}", server.addr);
    let m = mint(&json!({
        "keys": {"k": {"type": "Ed25519"}},
        "jwks": {"k": [{"key": "k", "kid": "ed"}]},
        "tokens": {"t": {"key": "k", "alg": "EdDSA", "headers": {"kid": "ed"},
            "claims": {"iss": issuer, "sub": "dave", "aud": "api"}}},
    }));
    server.set_body(m.jwks("k"));
    let cache = cache_with_ca(None);
    let auth = JwtAuthenticator::new(
        &policy(&ra(&format!(
            "  - issuer: {issuer}\n    audiences: [api]\n"
        ))),
        &cache,
    );
    let o = Req::bearer(m.token("t")).run(&auth).await;
    assert_eq!(
        assert_authenticated(&o).principal.as_deref(),
        Some(format!("{issuer}/dave").as_str())
    );
    assert!(cache.status()[0]
        .url
        .ends_with("/.well-known/openid-configuration"));
}

#[tokio::test]
async fn keys_survive_a_config_reload() {
    let server = JwksServer::start(jwks("k1")).await;
    let cache = cache_with_ca(None);
    let url = server.url("/jwks");
    let old = remote_auth(&cache, &url, "");
    wait_for_keys(&cache).await;
    // The JWKS server goes down, then a new config (same jwksUri) is applied.
    drop(server);
    let new = remote_auth(&cache, &url, "    forwardOriginalToken: true\n");
    drop(old);
    assert_authenticated(&run(&new, tok("t1")).await);
    assert_eq!(cache.status().len(), 1, "one shared source");
    drop(new);
    assert!(
        cache.status().is_empty(),
        "sources end with the last rule using them"
    );
}

#[tokio::test]
async fn without_a_runtime_the_first_request_fetches() {
    // Authenticators built outside tokio (e.g. while compiling config on a plain thread)
    // start without a background task; the first request fetches and starts it.
    let server = JwksServer::start(jwks("k1")).await;
    let url = server.url("/jwks");
    let (auth, cache) = std::thread::spawn(move || {
        let cache = JwksCache::new(JwksOptions {
            refresh_interval: Duration::from_millis(100),
            ..fast_options()
        })
        .unwrap();
        (remote_auth(&cache, &url, ""), cache)
    })
    .join()
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(server.fetches(), 0);
    assert_authenticated(&run(&auth, tok("t1")).await);
    assert_eq!(cache.status()[0].fetches, 1);
    wait_until("periodic refresh", || server.fetches() >= 3).await;
}
