//! The runtime on real loopback sockets: binding (remaps, bind IP), the admin and status
//! ports, listener changes on apply, graceful drain.

mod runtime_support;

use std::time::Duration;

use runtime_support::*;
use tokio::net::TcpStream;
use trellis_proxy::runtime::Phase;
use trellis_proxy::{ProxyRuntime, RuntimeOptions};

fn two_listeners(version: &str) -> trellis_model::config::ProxyConfig {
    config(
        version,
        vec![
            listener(
                "0.0.0.0_80",
                "0.0.0.0:80",
                vec![plain_http_chain("http.80")],
            ),
            listener(
                "0.0.0.0_8081",
                "0.0.0.0:8081",
                vec![plain_http_chain("http.8081")],
            ),
        ],
        vec![],
    )
}

#[tokio::test]
async fn starts_on_remapped_ports_and_the_admin_endpoints_answer() {
    install_provider();
    let mut opts = options(&[(80, "127.0.0.1:0"), (8081, "127.0.0.1:0")]);
    opts.status = Some("127.0.0.1:0".parse().unwrap());
    let proxy = ProxyRuntime::start_with(two_listeners("1"), opts, TestDispatch).unwrap();
    let admin = proxy.admin_addr().unwrap();
    wait_ready(admin).await;

    // Bound where the remap says; the connection still knows the config port.
    let l80 = proxy.listener_addr("0.0.0.0_80").unwrap();
    assert!(l80.ip().is_loopback() && l80.port() != 80 && l80.port() != 0);
    let (status, body) = get(l80, "/").await;
    assert_eq!(status, 200);
    assert!(
        body.contains("version=1 listener=0.0.0.0_80 port=80 route_table=http.80 scheme=Http"),
        "{body}"
    );
    let (_, body) = get(proxy.listener_addr("0.0.0.0_8081").unwrap(), "/").await;
    assert!(body.contains("port=8081 route_table=http.8081"), "{body}");

    assert_eq!(get(admin, "/ready").await, (200, "LIVE\n".into()));
    assert_eq!(get(admin, "/healthz/ready").await.0, 200);
    assert_eq!(get(admin, "/healthz").await.0, 200);

    let (status, dump) = get(admin, "/config_dump").await;
    assert_eq!(status, 200);
    let dump: serde_json::Value = serde_json::from_str(&dump).unwrap();
    assert_eq!(dump["version"], "1");
    assert_eq!(dump["listeners"][0]["name"], "0.0.0.0_80");
    assert_eq!(dump["node"]["id"], "ingressgateway.istio-system");

    let (_, listeners) = get(admin, "/listeners").await;
    assert!(
        listeners.contains(&format!("0.0.0.0_80::{l80}\n")),
        "{listeners}"
    );
    let (_, json) = get(admin, "/listeners?format=json").await;
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json[0]["config_address"], "0.0.0.0:80");

    let (_, clusters) = get(admin, "/clusters").await;
    assert!(
        clusters
            .contains("outbound|8080||echo.default.svc.cluster.local::10.0.0.7:8080::weight::1"),
        "{clusters}"
    );
    let (_, clusters) = get(admin, "/clusters?format=json").await;
    assert!(
        clusters.contains("\"service\": \"echo.default.svc.cluster.local:8080\""),
        "{clusters}"
    );

    let (status, info) = get(admin, "/server_info").await;
    assert_eq!(status, 200);
    let info = server_info(&info);
    assert_eq!(info["config_version"], "1");
    assert_eq!(info["node_id"], "ingressgateway.istio-system");
    assert_eq!(info["state"], "Live");
    assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));
    assert!(info["uptime_seconds"].is_u64());
    assert!(info["last_error"].is_null());
    assert_eq!(info["listeners"].as_array().unwrap().len(), 2);

    assert_eq!(get(admin, "/nope").await.0, 404);
    assert_eq!(get(admin, "/quitquitquit").await.0, 405);
    assert_eq!(http("POST", admin, "/logging?level=debug").await.0, 501);

    // The status port answers readiness only.
    let status_addr = proxy.status_addr().unwrap();
    assert_eq!(
        get(status_addr, "/healthz/ready").await,
        (200, "LIVE\n".into())
    );
    assert_eq!(get(status_addr, "/config_dump").await.0, 404);

    // POST /quitquitquit drains and stops; the listeners close.
    assert_eq!(http("POST", admin, "/quitquitquit").await.0, 200);
    tokio::time::timeout(Duration::from_secs(10), proxy.stopped())
        .await
        .expect("stopped after /quitquitquit");
    assert_eq!(proxy.phase(), Phase::Stopped);
    assert!(TcpStream::connect(l80).await.is_err(), "listener closed");
}

#[tokio::test]
async fn bind_ip_binds_every_listener_there() {
    install_provider();
    let cfg = config(
        "1",
        vec![listener("any", "0.0.0.0:0", vec![plain_http_chain("r")])],
        vec![],
    );
    let opts = RuntimeOptions {
        bind_ip: Some("127.0.0.1".parse().unwrap()),
        ..options(&[])
    };
    let proxy = ProxyRuntime::start_with(cfg, opts, TestDispatch).unwrap();
    let addr = proxy.listener_addr("any").unwrap();
    assert_eq!(addr.ip().to_string(), "127.0.0.1");
    assert_eq!(get(addr, "/").await.0, 200);
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn log_level_changes_through_the_admin_port() {
    install_provider();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let s = seen.clone();
    let mut opts = options(&[(80, "127.0.0.1:0"), (8081, "127.0.0.1:0")]);
    opts.log_control = Some(std::sync::Arc::new(move |f: &str| {
        if f == "bogus[" {
            return Err("invalid log filter".to_string());
        }
        s.lock().unwrap().push(f.to_string());
        Ok(f.to_string())
    }));
    let proxy = ProxyRuntime::start_with(two_listeners("1"), opts, TestDispatch).unwrap();
    let admin = proxy.admin_addr().unwrap();
    assert_eq!(
        http("POST", admin, "/logging?level=debug").await,
        (200, "log filter: debug\n".into())
    );
    assert_eq!(http("POST", admin, "/logging?filter=bogus[").await.0, 400);
    assert_eq!(http("POST", admin, "/logging").await.0, 400);
    assert_eq!(*seen.lock().unwrap(), vec!["debug".to_string()]);
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn apply_adds_removes_and_keeps_listeners_without_dropping_connections() {
    install_provider();
    let opts = options(&[
        (80, "127.0.0.1:0"),
        (8081, "127.0.0.1:0"),
        (9090, "127.0.0.1:0"),
    ]);
    let proxy = ProxyRuntime::start_with(two_listeners("1"), opts, TestDispatch).unwrap();
    let l80 = proxy.listener_addr("0.0.0.0_80").unwrap();
    let l8081 = proxy.listener_addr("0.0.0.0_8081").unwrap();

    // Keep-alive connections on a listener that stays and on one about to be removed.
    let mut stays = KeepAlive::connect(l80).await;
    let mut removed = KeepAlive::connect(l8081).await;
    assert!(stays.get("/").await.unwrap().1.contains("version=1"));
    assert!(removed.get("/").await.unwrap().1.contains("version=1"));

    // v2: 80 stays (its route table changes), 8081 goes, 9090 comes.
    let v2 = config(
        "2",
        vec![
            listener(
                "0.0.0.0_80",
                "0.0.0.0:80",
                vec![plain_http_chain("http.80.v2")],
            ),
            listener(
                "0.0.0.0_9090",
                "0.0.0.0:9090",
                vec![plain_http_chain("http.9090")],
            ),
        ],
        vec![],
    );
    proxy.apply(v2).unwrap();
    assert_eq!(proxy.listener_addr("0.0.0.0_80"), Some(l80), "same socket");
    assert_eq!(proxy.listener_addr("0.0.0.0_8081"), None);
    let l9090 = proxy.listener_addr("0.0.0.0_9090").unwrap();

    // Open connections keep working and see the new config on their next request.
    let (_, body) = stays.get("/").await.unwrap();
    assert!(body.contains("version=2"), "{body}");
    // The connection keeps the chain it was accepted with; new connections get the new one.
    assert!(body.contains("route_table=http.80 "), "{body}");
    assert!(get(l80, "/").await.1.contains("route_table=http.80.v2"));
    let (_, body) = removed.get("/").await.unwrap();
    assert!(body.contains("version=2 listener=0.0.0.0_8081"), "{body}");
    // The removed listener accepts no more; the added one serves.
    eventually("removed listener closed", || async {
        TcpStream::connect(l8081).await.is_err()
    })
    .await;
    assert!(get(l9090, "/").await.1.contains("port=9090"));
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn inconsistent_configs_are_rejected_and_change_nothing() {
    install_provider();
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let free = free.to_string();
    // 9001 and 9002 are remapped onto the address 80 uses: a conflict if both are configured.
    let opts = options(&[
        (80, &free),
        (8081, "127.0.0.1:0"),
        (9001, &free),
        (9002, &free),
    ]);
    let proxy = ProxyRuntime::start_with(two_listeners("1"), opts, TestDispatch).unwrap();
    let admin = proxy.admin_addr().unwrap();

    // Two listeners on one address, in the config or after remapping.
    let mut dup = two_listeners("2");
    dup.listeners[1].address = "0.0.0.0:80".parse().unwrap();
    let err = proxy.apply(dup).unwrap_err();
    assert!(
        err.to_string().contains("have the same address 0.0.0.0:80"),
        "{err}"
    );
    let mut dup = two_listeners("2");
    dup.listeners[0].address = "0.0.0.0:9001".parse().unwrap();
    dup.listeners[1].address = "0.0.0.0:9002".parse().unwrap();
    let err = proxy.apply(dup).unwrap_err();
    assert!(
        err.to_string().contains(&format!(
            "would both bind {}",
            proxy.listener_addr("0.0.0.0_80").unwrap()
        )),
        "{err}"
    );

    // A chain naming a route table that does not exist.
    let mut missing = two_listeners("3");
    missing.routes.clear();
    let err = proxy.apply(missing).unwrap_err();
    assert!(
        err.to_string()
            .contains("route table \"http.80\" does not exist"),
        "{err}"
    );

    // A port that cannot be bound (taken by someone else).
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut v4 = two_listeners("4");
    v4.listeners.push(listener(
        "taken",
        &taken.local_addr().unwrap().to_string(),
        vec![plain_http_chain("http.80")],
    ));
    let err = proxy.apply(v4).unwrap_err();
    assert!(err.to_string().contains("cannot bind"), "{err}");
    assert_eq!(err.version, "4");

    assert_eq!(proxy.config().version, "1");
    let info = server_info(&get(admin, "/server_info").await.1);
    assert_eq!(info["config_version"], "1");
    assert_eq!(info["configs_rejected"], 4);
    assert_eq!(info["last_error"]["version"], "4");
    assert!(info["last_error"]["message"]
        .as_str()
        .unwrap()
        .contains("cannot bind"));
    assert!(get(proxy.listener_addr("0.0.0.0_80").unwrap(), "/")
        .await
        .1
        .contains("version=1"));

    // A good config clears the error.
    proxy.apply(two_listeners("5")).unwrap();
    let info = server_info(&get(admin, "/server_info").await.1);
    assert_eq!(info["config_version"], "5");
    assert!(info["last_error"].is_null());
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn drain_lets_in_flight_requests_finish() {
    install_provider();
    let opts = options(&[(80, "127.0.0.1:0"), (8081, "127.0.0.1:0")]);
    let proxy = ProxyRuntime::start_with(two_listeners("1"), opts, TestDispatch).unwrap();
    let addr = proxy.listener_addr("0.0.0.0_80").unwrap();
    let admin = proxy.admin_addr().unwrap();
    let mut client = KeepAlive::connect(addr).await;
    let slow = tokio::spawn(async move { client.get("/?delay_ms=700").await });
    eventually("request in flight", || async {
        proxy.active_connections() == 1
    })
    .await;

    let p = proxy.clone();
    let shutdown = tokio::spawn(async move { p.shutdown(Duration::from_secs(10)).await });
    eventually("draining", || async { proxy.phase() == Phase::Draining }).await;
    assert_eq!(get(admin, "/ready").await, (503, "DRAINING\n".into()));
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "no new connections while draining"
    );

    let (status, body) = slow.await.unwrap().expect("in-flight request completes");
    assert_eq!(status, 200);
    assert!(body.contains("draining=true"), "{body}");
    // The client still holds its keep-alive connection; the drain ends at the deadline or when
    // the client goes. Here the client task is gone, so the connection closes.
    tokio::time::timeout(Duration::from_secs(12), shutdown)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(proxy.phase(), Phase::Stopped);
}

#[tokio::test]
async fn drain_deadline_closes_connections_that_do_not_finish() {
    install_provider();
    let opts = options(&[(80, "127.0.0.1:0"), (8081, "127.0.0.1:0")]);
    let proxy = ProxyRuntime::start_with(two_listeners("1"), opts, TestDispatch).unwrap();
    let addr = proxy.listener_addr("0.0.0.0_80").unwrap();
    let mut client = KeepAlive::connect(addr).await;
    let stuck = tokio::spawn(async move { client.get("/?delay_ms=60000").await });
    eventually("request in flight", || async {
        proxy.active_connections() == 1
    })
    .await;
    let started = std::time::Instant::now();
    proxy.shutdown(Duration::from_millis(300)).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(proxy.active_connections(), 0);
    let r = tokio::time::timeout(Duration::from_secs(5), stuck)
        .await
        .unwrap()
        .unwrap();
    assert!(r.is_err(), "the stuck request was cut: {r:?}");
}

#[tokio::test]
async fn a_taken_admin_port_fails_the_start_before_listeners_open() {
    install_provider();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let opts = RuntimeOptions {
        admin: Some(taken.local_addr().unwrap()),
        ..options(&[(80, "127.0.0.1:0"), (8081, "127.0.0.1:0")])
    };
    let err = ProxyRuntime::start_with(two_listeners("1"), opts, TestDispatch)
        .err()
        .expect("start fails");
    assert!(
        err.to_string().contains("cannot bind the admin server"),
        "{err}"
    );
}
