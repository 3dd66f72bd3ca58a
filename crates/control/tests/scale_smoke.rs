//! A small run of the control-plane scale benchmark (`examples/scale.rs`): 50 lightweight
//! proxies against 200 services, every proxy must ACK an endpoint change and a route change
//! (as a delta of exactly that resource). Keeps the benchmark's generator and clients from
//! rotting; the figures come from the example.

#[path = "scale_harness/mod.rs"]
mod scale_harness;

use std::time::{Duration, Instant};

use scale_harness::*;
use tokio::sync::mpsc;
use trellis_control::{ControlPlane, ControlPlaneOptions, RunningControlPlane};
use trellis_protocol::ConfigType;

const TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_smoke_every_proxy_acks_endpoint_and_route_changes() {
    let dir = tempfile::tempdir().unwrap();
    let mut workload = Workload::new(WorkloadSize {
        namespaces: 5,
        services_per_namespace: 40,
        endpoints_per_service: 4,
        routed_per_namespace: 4,
        proxies: 50,
    });
    workload.write_all(dir.path());
    let proxies = workload.proxies();

    let cp = ControlPlane::start(ControlPlaneOptions {
        inputs: vec![dir.path().to_path_buf()],
        grpc_listen: "127.0.0.1:0".parse().unwrap(),
        metrics_listen: None,
        watch: false,
        ..ControlPlaneOptions::default()
    })
    .await
    .expect("control plane starts on the generated mesh");
    let snap = cp.snapshot();
    assert_eq!(
        snap.count(ConfigType::Endpoints),
        200 + 50 + 5 * 4 * 2,
        "slices, proxies' Pods, v1/v2 Deployments of routed services"
    );
    let loaded = trellis_control::source::load(&trellis_control::Sources {
        inputs: vec![dir.path().to_path_buf()],
        ..Default::default()
    });
    let errors: Vec<String> = loaded.errors().map(|m| m.to_string()).collect();
    assert!(
        errors.is_empty(),
        "the generated mesh analyzes clean: {errors:#?}"
    );

    let (tx, rx) = mpsc::unbounded_channel();
    let mut tracker = AckTracker::new(rx, proxies.len());
    let _tasks = spawn_proxies(cp.grpc_addr(), &proxies, 10, tx).await;
    let everyone: Vec<usize> = (0..proxies.len()).collect();
    let v0 = snap.version;
    for ty in ConfigType::ALL {
        tracker
            .wait(ty, v0, &everyone, TIMEOUT)
            .await
            .unwrap_or_else(|e| panic!("initial sync: {e}"));
    }
    synced(&cp).await;

    let mut changed: Vec<(u64, ConfigType)> = Vec::new();
    for round in 0..2 {
        for kind in [ConfigType::Endpoints, ConfigType::Resources] {
            let before = cp.snapshot();
            let change = match kind {
                ConfigType::Endpoints => workload.endpoint_change(dir.path(), round),
                _ => workload.route_change(dir.path(), round),
            };
            let expected = receivers(&before, &change.id, &proxies);
            // Services are exported everywhere (Istio's default): everyone needs both.
            assert_eq!(expected.len(), proxies.len(), "{}", change.what);
            let t0 = Instant::now();
            let version = cp.reload_now().await.expect("change accepted");
            assert_eq!(version, before.version + 1, "{}", change.what);
            assert_eq!(
                cp.snapshot().changes.of(kind),
                std::slice::from_ref(&change.id)
            );
            let f = tracker
                .wait(kind, version, &expected, TIMEOUT)
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", change.what));
            assert_eq!(f.unexpected, 0);
            assert_eq!(
                f.full_updates, 0,
                "{}: deltas, not full updates",
                change.what
            );
            assert_eq!(
                f.max_resources, 1,
                "{}: only the changed resource",
                change.what
            );
            assert!(f.last >= t0);
            changed.push((version, kind));
        }
    }
    // An endpoint change sent no RESOURCES update and a route change no ENDPOINTS update.
    for e in tracker.log.iter().filter(|e| e.version != v0) {
        assert!(changed.contains(&(e.version, e.ty)), "{e:?}");
    }
    synced(&cp).await;
    cp.shutdown().await;
}

/// Waits until the control plane has processed every ACK (the proxies report an ACK when
/// they send it).
async fn synced(cp: &RunningControlPlane) {
    let deadline = Instant::now() + TIMEOUT;
    while !cp.all_synced() {
        assert!(
            Instant::now() < deadline,
            "the control plane never saw every ACK"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
