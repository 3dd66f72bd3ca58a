//! Resilience scenarios: timeouts, retries, faults, mirrors, circuit breaking, outlier
//! detection and load balancing, against real upstream servers.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use trellis_model::config::*;

fn one_route(r: Route, clusters: Vec<(Cluster, Vec<std::net::SocketAddr>)>) -> ProxyConfig {
    let mut b = Builder::new().vhost(&["*"], vec![r]);
    for (c, eps) in clusters {
        b = b.cluster(c, &eps);
    }
    b.build()
}

/// Cluster `svc`, round robin, ejecting a host after `consecutive_5xx` 5xx for `ejection`.
fn round_robin_with_outlier_detection(
    consecutive_5xx: u32,
    ejection: Duration,
    max_ejection_percent: u32,
    min_health_percent: u32,
) -> Cluster {
    let mut c = cluster("svc");
    c.lb = LbPolicy::RoundRobin;
    c.outlier = Some(OutlierDetection {
        consecutive_5xx: Some(consecutive_5xx),
        consecutive_gateway_errors: None,
        interval: Duration::from_secs(1),
        base_ejection_time: ejection,
        max_ejection_percent,
        min_health_percent,
    });
    c
}

/// A proxy routing to `c` (cluster `svc`) over a failing (500) and a healthy upstream, and a
/// client that has sent the 4 requests round robin needs to eject the failing one after two
/// consecutive 5xx.
async fn failing_and_healthy(c: Cluster) -> (Upstream, Upstream, Proxy, H1Client) {
    let bad = Upstream::start("bad", Arc::new(|_: &Seen| Reply::status(500))).await;
    let good = Upstream::echo("good").await;
    let p = Proxy::start(one_route(
        route("r", vec![], to("svc")),
        vec![(c, vec![bad.addr, good.addr])],
    ))
    .await;
    let mut cl = H1Client::connect(p.addr).await;
    for _ in 0..4 {
        cl.get("x", "/", &[]).await;
    }
    (bad, good, p, cl)
}

/// An upstream that answers 503 to its first `fail` requests, then echoes.
async fn flaky(name: &str, fail: usize) -> Upstream {
    let n = name.to_string();
    Upstream::start(
        name,
        Arc::new(move |s: &Seen| {
            if s.n <= fail {
                Reply::status(503)
            } else {
                echo_reply(&n, s)
            }
        }),
    )
    .await
}

#[tokio::test]
async fn route_timeout_gives_504_ut() {
    let slow = Upstream::start(
        "slow",
        Arc::new(|_: &Seen| Reply::status(200).delayed(Duration::from_secs(3))),
    )
    .await;
    let mut r = route("t", vec![], to("slow"));
    r.timeout = Some(Duration::from_millis(200));
    let p = Proxy::start(one_route(r, vec![(cluster("slow"), vec![slow.addr])])).await;
    let t = Instant::now();
    let resp = get(p.addr, "x", "/", &[]).await;
    assert_eq!(resp.status, 504);
    assert_eq!(resp.body, "upstream request timeout");
    assert!(t.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn retries_503_until_success() {
    let up = flaky("up", 2).await;
    let mut r = route("r", vec![], to("up"));
    r.retry = Some(retry(3, &["5xx"]));
    let p = Proxy::start(one_route(r, vec![(cluster("up"), vec![up.addr])])).await;
    let resp = get(p.addr, "x", "/", &[]).await;
    assert_eq!(resp.status, 200);
    assert_eq!(up.hits(), 3);
    assert_eq!(resp.echo("h:x-envoy-attempt-count").unwrap(), "3");
}

#[tokio::test]
async fn retries_replay_small_request_bodies() {
    let up = flaky("up", 1).await;
    let mut r = route("r", vec![], to("up"));
    r.retry = Some(retry(2, &["gateway-error"]));
    let p = Proxy::start(one_route(r, vec![(cluster("up"), vec![up.addr])])).await;
    let resp = H1Client::connect(p.addr)
        .await
        .send(req("POST", "x", "/", &[], "payload-123"))
        .await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.echo("body").unwrap(), "payload-123");
    assert_eq!(up.hits(), 2);
}

#[tokio::test]
async fn retries_stop_when_exhausted_or_disabled() {
    let up = flaky("up", 1000).await;
    let mut r = route("r", vec![], to("up"));
    r.retry = Some(retry(2, &["5xx"]));
    let p = Proxy::start(one_route(r, vec![(cluster("up"), vec![up.addr])])).await;
    assert_eq!(get(p.addr, "x", "/", &[]).await.status, 503);
    assert_eq!(up.hits(), 3, "1 try + 2 retries");

    let up2 = flaky("up2", 1000).await;
    let mut r = route("r", vec![], to("up2"));
    r.retry = Some(retry(0, &["5xx"]));
    let p = Proxy::start(one_route(r, vec![(cluster("up2"), vec![up2.addr])])).await;
    assert_eq!(get(p.addr, "x", "/", &[]).await.status, 503);
    assert_eq!(up2.hits(), 1, "attempts: 0 means no retry");

    // Not a retriable status for the policy: no retry.
    let up3 = flaky("up3", 1000).await;
    let mut r = route("r", vec![], to("up3"));
    r.retry = Some(retry(3, &["retriable-4xx"]));
    let p = Proxy::start(one_route(r, vec![(cluster("up3"), vec![up3.addr])])).await;
    assert_eq!(get(p.addr, "x", "/", &[]).await.status, 503);
    assert_eq!(up3.hits(), 1);
}

#[tokio::test]
async fn per_try_timeout_retries_a_slow_attempt() {
    let up = Upstream::start(
        "up",
        Arc::new(|s: &Seen| {
            if s.n == 1 {
                Reply::status(200).delayed(Duration::from_secs(3))
            } else {
                echo_reply("up", s)
            }
        }),
    )
    .await;
    let mut r = route("r", vec![], to("up"));
    let mut policy = retry(2, &["5xx"]);
    policy.per_try_timeout = Some(Duration::from_millis(200));
    r.retry = Some(policy);
    let p = Proxy::start(one_route(r, vec![(cluster("up"), vec![up.addr])])).await;
    let t = Instant::now();
    let resp = get(p.addr, "x", "/", &[]).await;
    assert_eq!(resp.status, 200);
    assert_eq!(up.hits(), 2);
    assert!(t.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn retry_other_host_avoids_the_failed_endpoint() {
    let bad = flaky("bad", 1000).await;
    let good = Upstream::echo("good").await;
    let mut r = route("r", vec![], to("svc"));
    let mut policy = retry(1, &["5xx"]);
    policy.retry_other_host = true;
    r.retry = Some(policy);
    let mut c = cluster("svc");
    c.lb = LbPolicy::Random;
    let p = Proxy::start(one_route(r, vec![(c, vec![bad.addr, good.addr])])).await;
    let mut cl = H1Client::connect(p.addr).await;
    for _ in 0..30 {
        assert_eq!(cl.get("x", "/", &[]).await.status, 200);
    }
    assert_eq!(good.hits(), 30);
    assert!(
        bad.hits() > 0,
        "random LB sent some first tries to the bad host"
    );
}

#[tokio::test]
async fn connect_failures_ufs_and_no_healthy_upstream() {
    let dead = dead_addr().await;
    let good = Upstream::echo("good").await;
    // Only a dead endpoint: 503 UF.
    let p = Proxy::start(one_route(
        route("r", vec![], to("d")),
        vec![(cluster("d"), vec![dead])],
    ))
    .await;
    let resp = get(p.addr, "x", "/", &[]).await;
    assert_eq!(resp.status, 503);
    assert!(
        resp.body.contains("reset reason: connection failure"),
        "{}",
        resp.body
    );
    // connect-failure retried on another host.
    let mut r = route("r", vec![], to("mix"));
    let mut policy = retry(2, &["connect-failure"]);
    policy.retry_other_host = true;
    r.retry = Some(policy);
    let mut c = cluster("mix");
    c.lb = LbPolicy::RoundRobin;
    let p = Proxy::start(one_route(r, vec![(c, vec![dead, good.addr])])).await;
    for _ in 0..4 {
        assert_eq!(get(p.addr, "x", "/", &[]).await.status, 200);
    }
    // No endpoints: 503 no healthy upstream.
    let p = Proxy::start(one_route(
        route("r", vec![], to("empty")),
        vec![(cluster("empty"), vec![])],
    ))
    .await;
    let resp = get(p.addr, "x", "/", &[]).await;
    assert_eq!(
        (resp.status, resp.body.as_str()),
        (503, "no healthy upstream")
    );
    // A route to a cluster the config lacks: 503 (NC).
    let p = Proxy::start(one_route(route("r", vec![], to("missing")), vec![])).await;
    assert_eq!(get(p.addr, "x", "/", &[]).await.status, 503);
}

#[tokio::test]
async fn fault_delay_and_abort() {
    let up = Upstream::echo("up").await;
    let mut delayed = route("delay", vec![prefix("/delay")], to("up"));
    delayed.fault = Some(FaultInjection {
        delay: Some((Duration::from_millis(300), 100.0)),
        abort: None,
    });
    let mut abort = route("abort", vec![prefix("/abort")], to("up"));
    abort.fault = Some(FaultInjection {
        delay: None,
        abort: Some((FaultAbort::Http(418), 100.0)),
    });
    let mut never = route("never", vec![prefix("/never")], to("up"));
    never.fault = Some(FaultInjection {
        delay: Some((Duration::from_secs(5), 0.0)),
        abort: Some((FaultAbort::Http(500), 0.0)),
    });
    let mut grpc = route("grpc", vec![prefix("/grpc")], to("up"));
    grpc.fault = Some(FaultInjection {
        delay: None,
        abort: Some((FaultAbort::Grpc(14), 100.0)),
    });
    let cfg = Builder::new()
        .vhost(&["*"], vec![delayed, abort, never, grpc])
        .simple("up", &[up.addr])
        .build();
    let p = Proxy::start(cfg).await;
    let t = Instant::now();
    assert_eq!(get(p.addr, "x", "/delay", &[]).await.status, 200);
    assert!(t.elapsed() >= Duration::from_millis(300));
    let r = get(p.addr, "x", "/abort", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (418, "fault filter abort"));
    let t = Instant::now();
    assert_eq!(get(p.addr, "x", "/never", &[]).await.status, 200);
    assert!(t.elapsed() < Duration::from_secs(2));
    let r = get(p.addr, "x", "/grpc", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("grpc-status"), Some("14"));
    assert_eq!(up.hits(), 2, "aborted requests never reach the upstream");
}

#[tokio::test]
async fn mirror_gets_a_copy_and_never_slows_the_main_request() {
    let main = Upstream::echo("main").await;
    let shadow = Upstream::start(
        "shadow",
        Arc::new(|s: &Seen| echo_reply("shadow", s).delayed(Duration::from_secs(3))),
    )
    .await;
    let mut r = route("m", vec![], to("main"));
    r.mirrors = vec![Mirror {
        cluster: "shadow".into(),
        percentage: 100.0,
    }];
    let p = Proxy::start(one_route(
        r,
        vec![
            (cluster("main"), vec![main.addr]),
            (cluster("shadow"), vec![shadow.addr]),
        ],
    ))
    .await;
    let t = Instant::now();
    let resp = H1Client::connect(p.addr)
        .await
        .send(req(
            "POST",
            "orders.example.com:8080",
            "/orders",
            &[],
            "order-1",
        ))
        .await;
    assert_eq!(resp.echo("upstream").unwrap(), "main");
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "mirror did not delay the response"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while shadow.hits() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seen = shadow.last();
    assert_eq!(
        seen.headers.get("host").unwrap(),
        "orders.example.com-shadow:8080"
    );
    assert_eq!(&seen.body[..], b"order-1");
    assert_eq!(seen.path, "/orders");
}

#[tokio::test]
async fn circuit_breaker_overflows_with_uo() {
    let slow = Upstream::start(
        "slow",
        Arc::new(|s: &Seen| echo_reply("slow", s).delayed(Duration::from_millis(600))),
    )
    .await;
    let mut c = cluster("slow");
    c.pool.max_connections = 1;
    c.pool.http1_max_pending_requests = 1;
    let p = Proxy::start(one_route(
        route("r", vec![], to("slow")),
        vec![(c, vec![slow.addr])],
    ))
    .await;
    let mut tasks = Vec::new();
    for _ in 0..5 {
        let addr = p.addr;
        tasks.push(tokio::spawn(async move { get(addr, "x", "/", &[]).await }));
    }
    let mut ok = 0;
    let mut overflow = 0;
    for t in tasks {
        let r = t.await.unwrap();
        match r.status {
            200 => ok += 1,
            503 => {
                assert_eq!(r.header("x-envoy-overloaded"), Some("true"));
                overflow += 1;
            }
            s => panic!("unexpected {s}"),
        }
    }
    assert_eq!(
        (ok, overflow),
        (2, 3),
        "one active + one pending, the rest overflow"
    );
    // Capacity comes back.
    assert_eq!(get(p.addr, "x", "/", &[]).await.status, 200);
}

#[tokio::test]
async fn outlier_detection_ejects_and_returns() {
    let (bad, _good, p, mut cl) = failing_and_healthy(round_robin_with_outlier_detection(
        2,
        Duration::from_millis(1500),
        50,
        0,
    ))
    .await;
    assert_eq!(bad.hits(), 2, "ejected after the second consecutive 5xx");
    for _ in 0..10 {
        assert_eq!(cl.get("x", "/", &[]).await.status, 200);
    }
    assert_eq!(bad.hits(), 2);
    let status = &p.state.upstreams.clusters()[0].endpoint_status();
    assert!(status.iter().any(|e| e.address == bad.addr && e.ejected));
    // After the ejection time the host is back in rotation.
    let deadline = Instant::now() + Duration::from_secs(5);
    while bad.hits() == 2 && Instant::now() < deadline {
        cl.get("x", "/", &[]).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(bad.hits() > 2, "ejected host returned");
}

#[tokio::test]
async fn under_min_health_percent_ejected_hosts_get_traffic_again() {
    // Two endpoints, one ejected: 50% healthy. With minHealthPercent 60 the pool is in panic
    // and balances over both (Envoy's healthy_panic_threshold, as Istio maps it).
    let (bad, _good, p, mut cl) = failing_and_healthy(round_robin_with_outlier_detection(
        2,
        Duration::from_secs(60),
        100,
        60,
    ))
    .await;
    let status = &p.state.upstreams.clusters()[0].endpoint_status();
    assert!(
        status.iter().any(|e| e.address == bad.addr && e.ejected),
        "the failing host is ejected"
    );
    let before = bad.hits();
    for _ in 0..10 {
        cl.get("x", "/", &[]).await;
    }
    assert_eq!(
        bad.hits() - before,
        5,
        "panic mode: round robin over both hosts, the ejected one included"
    );
}

#[tokio::test]
async fn locality_failover_prefers_the_best_priority_and_spills_when_it_fails() {
    // Priorities as the model's locality failover assigns them: two local endpoints (0), one
    // remote (1). The remote one gets nothing while the local ones are healthy; when one
    // local endpoint is ejected (50% up: health 70) the remote level takes ~30%; with both
    // out, all of it.
    let local_a = Upstream::echo("local-a").await;
    let failing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let f = failing.clone();
    let local_b = Upstream::start(
        "local-b",
        Arc::new(move |s: &Seen| {
            if f.load(std::sync::atomic::Ordering::Relaxed) {
                Reply::status(500)
            } else {
                echo_reply("local-b", s)
            }
        }),
    )
    .await;
    let remote = Upstream::echo("remote").await;
    let c = round_robin_with_outlier_detection(1, Duration::from_secs(60), 100, 0);
    let mut cfg = one_route(
        route("r", vec![], to("svc")),
        vec![(c, vec![local_a.addr, local_b.addr, remote.addr])],
    );
    let eps = cfg.endpoints.get_mut("svc").unwrap();
    let eps = Arc::make_mut(eps);
    eps.endpoints[2].priority = 1;
    let p = Proxy::start(cfg).await;
    let mut cl = H1Client::connect(p.addr).await;
    for _ in 0..100 {
        assert_eq!(cl.get("x", "/", &[]).await.status, 200);
    }
    assert_eq!(
        remote.hits(),
        0,
        "healthy local level: nothing to the remote one"
    );
    // local-b fails: its first 500 ejects it.
    failing.store(true, std::sync::atomic::Ordering::Relaxed);
    let before = local_b.hits();
    while local_b.hits() == before {
        cl.get("x", "/", &[]).await;
    }
    let base = remote.hits();
    let n = 400;
    for _ in 0..n {
        assert_eq!(cl.get("x", "/", &[]).await.status, 200);
    }
    let spilled = remote.hits() - base;
    assert!(
        (80..=160).contains(&spilled),
        "~30% spills to the next priority with half the local level out: {spilled} of {n}"
    );
}

#[tokio::test]
async fn round_robin_alternates_and_hash_sticks() {
    let ups = [
        Upstream::echo("u0").await,
        Upstream::echo("u1").await,
        Upstream::echo("u2").await,
        Upstream::echo("u3").await,
    ];
    let addrs: Vec<_> = ups.iter().map(|u| u.addr).collect();
    let mut rr = cluster("rr");
    rr.lb = LbPolicy::RoundRobin;
    let mut ring = cluster("ring");
    ring.lb = LbPolicy::ConsistentHash(ConsistentHash {
        key: HashKey::Header("x-user".into()),
        maglev: false,
        minimum_ring_size: 1024,
    });
    let mut maglev = cluster("maglev");
    maglev.lb = LbPolicy::ConsistentHash(ConsistentHash {
        key: HashKey::Cookie {
            name: "session".into(),
            path: Some("/".into()),
            ttl: Some(Duration::from_secs(60)),
        },
        maglev: true,
        minimum_ring_size: 0,
    });
    let cfg = Builder::new()
        .vhost(
            &["*"],
            vec![
                route("rr", vec![prefix("/rr")], to("rr")),
                route("ring", vec![prefix("/ring")], to("ring")),
                route("maglev", vec![prefix("/maglev")], to("maglev")),
            ],
        )
        .cluster(rr, &addrs[..2])
        .cluster(ring, &addrs)
        .cluster(maglev, &addrs)
        .build();
    let p = Proxy::start(cfg).await;
    let mut cl = H1Client::connect(p.addr).await;
    let mut seq = Vec::new();
    for _ in 0..6 {
        seq.push(cl.get("x", "/rr", &[]).await.echo("upstream").unwrap());
    }
    for w in seq.windows(2) {
        assert_ne!(w[0], w[1], "round robin alternates: {seq:?}");
    }
    let mut owners = std::collections::HashSet::new();
    for user in ["alice", "bob", "carol", "dave", "erin", "frank"] {
        let first = cl
            .get("x", "/ring", &[("x-user", user)])
            .await
            .echo("upstream")
            .unwrap();
        for _ in 0..5 {
            assert_eq!(
                cl.get("x", "/ring", &[("x-user", user)])
                    .await
                    .echo("upstream")
                    .unwrap(),
                first
            );
        }
        owners.insert(first);
    }
    assert!(owners.len() >= 2, "keys spread over hosts");
    // Cookie hashing: the proxy sets the cookie, and the cookie pins the host.
    let r = cl.get("x", "/maglev", &[]).await;
    let cookie = r
        .header("set-cookie")
        .expect("cookie generated")
        .to_string();
    assert!(
        cookie.starts_with("session=\"")
            && cookie.contains("Max-Age=60")
            && cookie.contains("Path=/"),
        "{cookie}"
    );
    let value = cookie.split(';').next().unwrap().to_string();
    let first = cl.get("x", "/maglev", &[("cookie", &value)]).await;
    assert!(first.header("set-cookie").is_none());
    for _ in 0..5 {
        assert_eq!(
            cl.get("x", "/maglev", &[("cookie", &value)])
                .await
                .echo("upstream"),
            first.echo("upstream")
        );
    }
}

#[tokio::test]
async fn least_request_prefers_the_idle_endpoint() {
    let slow = Upstream::start(
        "slow",
        Arc::new(|s: &Seen| echo_reply("slow", s).delayed(Duration::from_millis(800))),
    )
    .await;
    let fast = Upstream::echo("fast").await;
    let p = Proxy::start(one_route(
        route("r", vec![], to("svc")),
        vec![(cluster("svc"), vec![slow.addr, fast.addr])],
    ))
    .await;
    // Keep two requests busy on the slow host, then measure where new ones go.
    let addr = p.addr;
    let mut busy = Vec::new();
    while slow.hits() < 2 {
        busy.push(tokio::spawn(async move { get(addr, "x", "/", &[]).await }));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = fast.hits();
    for _ in 0..10 {
        assert_eq!(
            get(p.addr, "x", "/", &[]).await.echo("upstream").unwrap(),
            "fast"
        );
    }
    assert_eq!(fast.hits() - before, 10);
    for b in busy {
        b.await.unwrap();
    }
}

#[tokio::test]
async fn upstream_connections_are_pooled_and_survive_an_equal_reload() {
    let up = Upstream::echo("up").await;
    let mk = || {
        one_route(
            route("r", vec![], to("up")),
            vec![(cluster("up"), vec![up.addr])],
        )
    };
    let p = Proxy::start(mk()).await;
    let mut cl = H1Client::connect(p.addr).await;
    for _ in 0..20 {
        assert_eq!(cl.get("x", "/", &[]).await.status, 200);
    }
    // Fresh client connections share the pool too.
    for _ in 0..5 {
        assert_eq!(get(p.addr, "x", "/", &[]).await.status, 200);
    }
    assert_eq!(
        up.conns.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one keep-alive upstream connection"
    );
    // A reload with an equal cluster keeps the runtime (and its pool).
    let before = Arc::as_ptr(&p.state.upstreams.clusters()[0]);
    p.state.swap(mk());
    assert_eq!(cl.get("x", "/", &[]).await.status, 200);
    assert_eq!(Arc::as_ptr(&p.state.upstreams.clusters()[0]), before);
    assert_eq!(up.conns.load(std::sync::atomic::Ordering::SeqCst), 1);
    // A changed cluster gets a new runtime; a removed one is dropped.
    let mut changed = mk();
    let mut c = cluster("up");
    c.lb = LbPolicy::RoundRobin;
    changed.clusters.insert("up".into(), Arc::new(c));
    p.state.swap(changed);
    assert!(p.state.upstreams.clusters().is_empty());
    assert_eq!(cl.get("x", "/", &[]).await.status, 200);
    assert_eq!(
        p.state.upstreams.clusters()[0].config.lb,
        LbPolicy::RoundRobin
    );
}

#[tokio::test]
async fn dns_clusters_resolve_their_endpoints() {
    let up = Upstream::echo("up").await;
    let mut c = cluster("ext");
    c.discovery = Discovery::Dns;
    let mut cfg = one_route(route("r", vec![], to("ext")), vec![(c, vec![])]);
    let mut ep = endpoint(up.addr);
    ep.address = EndpointAddress::Dns {
        host: "localhost".into(),
        port: up.addr.port(),
    };
    cfg.endpoints.insert(
        "ext".into(),
        Arc::new(ClusterEndpoints {
            endpoints: vec![ep],
        }),
    );
    // `localhost` may also resolve to ::1, where nothing listens: retry another host.
    let table = Arc::get_mut(cfg.routes.get_mut("http").unwrap()).unwrap();
    let mut policy = retry(2, &["connect-failure"]);
    policy.retry_other_host = true;
    table.virtual_hosts[0].routes[0].retry = Some(policy);
    let p = Proxy::start(cfg).await;
    for _ in 0..5 {
        let r = get(p.addr, "x", "/", &[]).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.echo("upstream").unwrap(), "up");
    }
}

#[tokio::test]
async fn http2_max_requests_overflows_with_uo() {
    let slow = Upstream::start(
        "slow",
        Arc::new(|s: &Seen| echo_reply("slow", s).delayed(Duration::from_millis(600))),
    )
    .await;
    let mut c = cluster("slow");
    c.protocol = UpstreamProtocol::Http2;
    c.pool.http2_max_requests = 1;
    let p = Proxy::start(one_route(
        route("r", vec![], to("slow")),
        vec![(c, vec![slow.addr])],
    ))
    .await;
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let addr = p.addr;
        tasks.push(tokio::spawn(async move {
            H2Client::connect(addr)
                .await
                .send("GET", "x", "/", &[], bytes::Bytes::new())
                .await
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        let r = t.await.unwrap();
        if r.status == 503 {
            assert_eq!(r.header("x-envoy-overloaded"), Some("true"));
        }
        statuses.push(r.status);
    }
    statuses.sort();
    assert_eq!(statuses, vec![200, 503, 503]);
    assert_eq!(slow.last().version, http::Version::HTTP_2);
}
