//! Routing scenarios: a gateway with VirtualService-style rules, driven by real clients.

mod common;

use std::time::Duration;

use common::*;
use trellis_model::config::*;

fn header(name: &str, m: StringMatcher) -> RequestMatch {
    RequestMatch {
        headers: vec![(name.into(), m)],
        ..Default::default()
    }
}

#[tokio::test]
async fn routes_by_host_path_header_query_and_method() {
    let a = Upstream::echo("a").await;
    let b = Upstream::echo("b").await;
    let c = Upstream::echo("c").await;
    let cfg = Builder::new()
        .vhost(
            &["api.example.com"],
            vec![
                route(
                    "jason",
                    vec![header("end-user", StringMatcher::Exact("jason".into()))],
                    to("b"),
                ),
                route(
                    "debug",
                    vec![RequestMatch {
                        query_params: vec![("debug".into(), StringMatcher::Exact("1".into()))],
                        ..Default::default()
                    }],
                    to("c"),
                ),
                route(
                    "delete",
                    vec![RequestMatch {
                        method: Some(StringMatcher::Exact("DELETE".into())),
                        ..Default::default()
                    }],
                    to("c"),
                ),
                route("v2", vec![prefix("/v2/")], to("b")),
                route("default", vec![], to("a")),
            ],
        )
        .vhost(&["*.example.com"], vec![route("wild", vec![], to("c"))])
        .simple("a", &[a.addr])
        .simple("b", &[b.addr])
        .simple("c", &[c.addr])
        .build();
    let p = Proxy::start(cfg).await;
    let mut cl = H1Client::connect(p.addr).await;
    let up = |r: &Resp| r.echo("upstream").unwrap_or_default();
    assert_eq!(up(&cl.get("api.example.com", "/x", &[]).await), "a");
    assert_eq!(
        up(&cl
            .get("api.example.com", "/x", &[("end-user", "jason")])
            .await),
        "b"
    );
    assert_eq!(up(&cl.get("api.example.com", "/x?debug=1", &[]).await), "c");
    assert_eq!(up(&cl.get("api.example.com", "/x?debug=2", &[]).await), "a");
    assert_eq!(
        up(&cl.get("API.example.com:80", "/v2/users", &[]).await),
        "b"
    );
    assert_eq!(up(&cl.get("www.example.com", "/", &[]).await), "c");
    let r = cl
        .send(req("DELETE", "api.example.com", "/x", &[], ""))
        .await;
    assert_eq!(up(&r), "c");
    // Unknown host: no virtual host -> 404 (NR).
    let r = cl.get("other.org", "/", &[]).await;
    assert_eq!(r.status, 404);
    // The connection kept serving (keep-alive across all of the above).
    assert_eq!(up(&cl.get("api.example.com", "/x", &[]).await), "a");
}

#[tokio::test]
async fn forwarding_headers_and_path_reach_the_upstream() {
    let a = Upstream::echo("a").await;
    let cfg = Builder::new()
        .vhost(&["*"], vec![route("all", vec![], to("a"))])
        .simple("a", &[a.addr])
        .build();
    let p = Proxy::start(cfg).await;
    let r = get(
        p.addr,
        "svc.local",
        "/p/q?x=1&y=2",
        &[
            ("x-forwarded-for", "1.2.3.4"),
            ("connection", "keep-alive, x-drop"),
            ("x-drop", "1"),
            ("keep-alive", "timeout=5"),
        ],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.echo("path").unwrap(), "/p/q?x=1&y=2");
    assert_eq!(r.echo("h:x-forwarded-for").unwrap(), "1.2.3.4, 127.0.0.1");
    assert_eq!(r.echo("h:x-forwarded-proto").unwrap(), "http");
    assert_eq!(r.echo("h:host").unwrap(), "svc.local");
    assert_eq!(r.echo("h:x-envoy-attempt-count").unwrap(), "1");
    assert_eq!(r.echo("h:x-request-id").unwrap().len(), 36);
    assert!(
        r.echo("h:x-drop").is_none(),
        "Connection-named header stripped"
    );
    assert!(r.echo("h:keep-alive").is_none());
    assert!(r.header("x-envoy-upstream-service-time").is_some());
    assert_eq!(r.header("x-upstream"), Some("a"));
    // A client request id is kept.
    let r = get(p.addr, "svc.local", "/", &[("x-request-id", "abc")]).await;
    assert_eq!(r.echo("h:x-request-id").unwrap(), "abc");
}

#[tokio::test]
async fn weighted_split_80_20() {
    let stable = Upstream::echo("stable").await;
    let canary = Upstream::echo("canary").await;
    let cfg = Builder::new()
        .vhost(
            &["*"],
            vec![route(
                "canary",
                vec![],
                weighted(vec![dest("stable", 80), dest("canary", 20)]),
            )],
        )
        .simple("stable", &[stable.addr])
        .simple("canary", &[canary.addr])
        .build();
    let p = Proxy::start(cfg).await;
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let addr = p.addr;
        tasks.push(tokio::spawn(async move {
            let mut c = H1Client::connect(addr).await;
            for _ in 0..250 {
                assert_eq!(c.get("app", "/", &[]).await.status, 200);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (s, c) = (stable.hits(), canary.hits());
    assert_eq!(s + c, 1000);
    // 80/20 within ±5 points (binomial sd is 1.3 points at n=1000).
    assert!((750..=850).contains(&s), "stable got {s}, canary {c}");
}

#[tokio::test]
async fn direct_response_and_redirects() {
    let redirect = |r: Redirect| RouteAction::Redirect(r);
    let base = Redirect {
        uri: None,
        prefix_rewrite: None,
        authority: None,
        scheme: None,
        port: None,
        derive_port_from_request: false,
        code: 301,
    };
    let cfg = Builder::new()
        .vhost(
            &["*"],
            vec![
                route(
                    "direct",
                    vec![exact("/health")],
                    RouteAction::DirectResponse {
                        status: 503,
                        body: Some("down for maintenance".into()),
                    },
                ),
                route(
                    "uri",
                    vec![exact("/old")],
                    redirect(Redirect {
                        uri: Some("/new".into()),
                        ..base.clone()
                    }),
                ),
                route(
                    "prefix",
                    vec![prefix("/v1/")],
                    redirect(Redirect {
                        prefix_rewrite: Some("/v2/".into()),
                        code: 308,
                        ..base.clone()
                    }),
                ),
                route(
                    "elsewhere",
                    vec![prefix("/away")],
                    redirect(Redirect {
                        authority: Some("other.example.com".into()),
                        scheme: Some("https".into()),
                        port: Some(8443),
                        code: 302,
                        ..base.clone()
                    }),
                ),
                route(
                    "derive",
                    vec![prefix("/derive")],
                    redirect(Redirect {
                        authority: Some("b.example.com".into()),
                        derive_port_from_request: true,
                        ..base.clone()
                    }),
                ),
            ],
        )
        .build();
    let p = Proxy::start(cfg).await;
    let r = get(p.addr, "a.example.com", "/health", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (503, "down for maintenance"));
    let r = get(p.addr, "a.example.com", "/old?q=1", &[]).await;
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some("http://a.example.com/new?q=1"));
    let r = get(p.addr, "a.example.com:8080", "/v1/users/7", &[]).await;
    assert_eq!(r.status, 308);
    assert_eq!(
        r.header("location"),
        Some("http://a.example.com:8080/v2/users/7")
    );
    let r = get(p.addr, "a.example.com", "/away/x", &[]).await;
    assert_eq!(r.status, 302);
    assert_eq!(
        r.header("location"),
        Some("https://other.example.com:8443/away/x")
    );
    let r = get(p.addr, "a.example.com:9090", "/derive", &[]).await;
    assert_eq!(
        r.header("location"),
        Some("http://b.example.com:9090/derive")
    );
}

#[tokio::test]
async fn https_redirect_host_on_plaintext() {
    let cfg = Builder::new()
        .vhost_tls(
            &["secure.example.com"],
            vec![route(
                "x",
                vec![],
                RouteAction::DirectResponse {
                    status: 200,
                    body: None,
                },
            )],
        )
        .build();
    let p = Proxy::start(cfg).await;
    let r = get(p.addr, "secure.example.com", "/login?next=/", &[]).await;
    assert_eq!(r.status, 301);
    assert_eq!(
        r.header("location"),
        Some("https://secure.example.com/login?next=/")
    );
}

#[tokio::test]
async fn rewrites_and_header_ops() {
    let a = Upstream::echo("a").await;
    let mut api = route("api", vec![prefix("/api/")], to("a"));
    if let RouteAction::Forward(f) = &mut api.action {
        f.rewrite = Some(Rewrite {
            uri: Some("/".into()),
            uri_regex: None,
            authority: Some("backend.internal".into()),
        });
        f.clusters.clusters[0]
            .request_headers
            .set
            .push(("x-dest".into(), "a".into()));
        f.clusters.clusters[0]
            .response_headers
            .add
            .push(("x-dest-resp".into(), "a".into()));
    }
    api.request_headers = HeaderOps {
        set: vec![("x-route".into(), "api".into())],
        add: vec![("x-multi".into(), "2".into())],
        remove: vec!["x-secret".into()],
    };
    api.response_headers = HeaderOps {
        set: vec![("x-served-by".into(), "trellis-test".into())],
        add: vec![],
        remove: vec!["x-upstream".into()],
    };
    let mut re = route(
        "regex",
        vec![RequestMatch {
            uri: Some(StringMatcher::Regex(
                trellis_model::route::compile_full_match("/service/.*").unwrap(),
            )),
            ..Default::default()
        }],
        to("a"),
    );
    if let RouteAction::Forward(f) = &mut re.action {
        f.rewrite = Some(Rewrite {
            uri: None,
            uri_regex: Some((
                RegexHolder(regex::Regex::new("^/service/([^/]+)(/.*)$").unwrap()),
                "\\2/instance/\\1".into(),
            )),
            authority: None,
        });
    }
    let cfg = Builder::new()
        .vhost(&["*"], vec![api, re])
        .simple("a", &[a.addr])
        .build();
    let p = Proxy::start(cfg).await;
    let r = get(
        p.addr,
        "gw",
        "/api/users?id=3",
        &[("x-secret", "s"), ("x-multi", "1")],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.echo("path").unwrap(), "/users?id=3");
    assert_eq!(r.echo("h:host").unwrap(), "backend.internal");
    assert_eq!(r.echo("h:x-envoy-original-path").unwrap(), "/api/users");
    assert_eq!(r.echo("h:x-route").unwrap(), "api");
    assert_eq!(r.echo("h:x-dest").unwrap(), "a");
    assert!(r.echo("h:x-secret").is_none());
    let multi: Vec<_> = r
        .body
        .lines()
        .filter(|l| l.starts_with("h:x-multi="))
        .collect();
    assert_eq!(multi, vec!["h:x-multi=1", "h:x-multi=2"]);
    assert_eq!(r.header("x-served-by"), Some("trellis-test"));
    assert_eq!(r.header("x-dest-resp"), Some("a"));
    assert_eq!(r.header("x-upstream"), None, "route-level remove");
    let r = get(p.addr, "gw", "/service/foo/v1/api", &[]).await;
    assert_eq!(r.echo("path").unwrap(), "/v1/api/instance/foo");
}

#[tokio::test]
async fn cors_preflight_and_actual_requests() {
    let a = Upstream::echo("a").await;
    let mut r = route("cors", vec![], to("a"));
    r.cors = Some(CorsPolicy {
        allow_origins: vec![
            StringMatcher::Exact("https://app.example.com".into()),
            StringMatcher::Prefix("https://dev.".into()),
        ],
        allow_methods: vec!["GET".into(), "POST".into()],
        allow_headers: vec!["authorization".into()],
        expose_headers: vec!["x-trace".into()],
        max_age: Some(Duration::from_secs(600)),
        allow_credentials: Some(true),
        unmatched_preflights_forward: false,
    });
    let cfg = Builder::new()
        .vhost(&["*"], vec![r])
        .simple("a", &[a.addr])
        .build();
    let p = Proxy::start(cfg).await;
    let mut cl = H1Client::connect(p.addr).await;
    let pre = cl
        .send(req(
            "OPTIONS",
            "api",
            "/x",
            &[
                ("origin", "https://app.example.com"),
                ("access-control-request-method", "POST"),
            ],
            "",
        ))
        .await;
    assert_eq!(pre.status, 200);
    assert_eq!(
        pre.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(pre.header("access-control-allow-methods"), Some("GET,POST"));
    assert_eq!(
        pre.header("access-control-allow-headers"),
        Some("authorization")
    );
    assert_eq!(pre.header("access-control-max-age"), Some("600"));
    assert_eq!(pre.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(a.hits(), 0, "preflight answered by the proxy");
    let bad = cl
        .send(req(
            "OPTIONS",
            "api",
            "/x",
            &[
                ("origin", "https://evil.com"),
                ("access-control-request-method", "POST"),
            ],
            "",
        ))
        .await;
    assert_eq!(bad.header("access-control-allow-origin"), None);
    let actual = cl
        .get("api", "/x", &[("origin", "https://dev.example.com")])
        .await;
    assert_eq!(actual.status, 200);
    assert_eq!(
        actual.header("access-control-allow-origin"),
        Some("https://dev.example.com")
    );
    assert_eq!(
        actual.header("access-control-expose-headers"),
        Some("x-trace")
    );
    let other = cl.get("api", "/x", &[("origin", "https://evil.com")]).await;
    assert_eq!(other.status, 200);
    assert_eq!(other.header("access-control-allow-origin"), None);
}

#[tokio::test]
async fn curl_keepalive_chunked_and_post_bodies() {
    let a = Upstream::echo("a").await;
    let cfg = Builder::new()
        .vhost(&["*"], vec![route("all", vec![], to("a"))])
        .simple("a", &[a.addr])
        .build();
    let p = Proxy::start(cfg).await;
    // Two URLs on one curl invocation reuse the connection; a chunked POST body arrives whole.
    let (ok, out, err) = curl(vec![
        "-H".into(),
        "Transfer-Encoding: chunked".into(),
        "--data-binary".into(),
        "hello-chunked".into(),
        p.url("/one"),
        p.url("/two"),
    ])
    .await;
    assert!(ok, "{err}");
    assert!(out.contains("path=/one"), "{out}");
    assert!(out.contains("path=/two"), "{out}");
    assert_eq!(out.matches("body=hello-chunked").count(), 2, "{out}");
    // A large body (beyond the replay buffer) streams through.
    let big = "x".repeat(300_000);
    let r = H1Client::connect(p.addr)
        .await
        .send(req("POST", "a", "/big", &[], &big))
        .await;
    assert_eq!(r.status, 200);
    assert!(r.body.contains(&format!("body={big}")));
}

#[tokio::test]
async fn config_swap_keeps_serving_and_moves_traffic() {
    let a = Upstream::echo("a").await;
    let b = Upstream::echo("b").await;
    let mk = |w_a, w_b| {
        Builder::new()
            .vhost(
                &["*"],
                vec![route(
                    "split",
                    vec![],
                    weighted(vec![dest("a", w_a), dest("b", w_b)]),
                )],
            )
            .simple("a", &[a.addr])
            .simple("b", &[b.addr])
            .build()
    };
    let p = Proxy::start(mk(100, 0)).await;
    let mut cl = H1Client::connect(p.addr).await;
    for _ in 0..20 {
        assert_eq!(cl.get("x", "/", &[]).await.echo("upstream").unwrap(), "a");
    }
    p.state.swap(mk(0, 100));
    for _ in 0..20 {
        assert_eq!(cl.get("x", "/", &[]).await.echo("upstream").unwrap(), "b");
    }
}

/// `x_user` is `x-user` to CGI-style backends: a gateway drops request headers with `_` in
/// their names before judging or forwarding; a sidecar keeps them (Istio's default).
#[tokio::test]
async fn gateways_drop_underscore_headers_and_sidecars_keep_them() {
    let up = Upstream::echo("up").await;
    for (kind, kept) in [(ProxyKind::Gateway, false), (ProxyKind::Sidecar, true)] {
        let mut cfg = Builder::new()
            .vhost(&["*"], vec![route("all", vec![], to("up"))])
            .simple("up", &[up.addr])
            .build();
        cfg.node.kind = kind;
        let p = Proxy::start(cfg).await;
        let r = get(
            p.addr,
            "a",
            "/",
            &[
                ("x_user", "admin"),
                ("x-user", "guest"),
                ("x_jwt_sub", "root"),
            ],
        )
        .await;
        assert_eq!(r.status, 200, "{kind:?}: {}", r.body);
        assert_eq!(r.echo("h:x_user").is_some(), kept, "{kind:?}: {}", r.body);
        assert_eq!(
            r.echo("h:x_jwt_sub").is_some(),
            kept,
            "{kind:?}: {}",
            r.body
        );
        assert_eq!(r.echo("h:x-user").as_deref(), Some("guest"), "{kind:?}");
    }
}
