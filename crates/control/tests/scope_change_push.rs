//! Pushes that are not a replay of the change list: when a proxy's scope changes (here: a
//! namespace stops exporting its Services, so proxies elsewhere lose them and their
//! endpoints), the control plane diffs what the proxy holds against the new snapshot. After
//! every push, what each proxy holds (as sync status counts it) must be exactly what its scope
//! admits, and proxies that lost visibility must have been sent the removals.

#[path = "scale_harness/mod.rs"]
mod scale_harness;

use std::time::{Duration, Instant};

use scale_harness::*;
use tokio::sync::mpsc;
use trellis_control::scope::Scope;
use trellis_control::{ControlPlane, ControlPlaneOptions, RunningControlPlane};
use trellis_protocol::ConfigType;

const TIMEOUT: Duration = Duration::from_secs(30);

/// Every proxy's resource counts in sync status equal what its scope admits.
async fn holdings_match_scopes(cp: &RunningControlPlane, proxies: &[ProxyIdentity]) {
    let snap = cp.snapshot();
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let status = cp.status();
        let mut wrong = Vec::new();
        for p in proxies {
            let scope = Scope::compute(&snap, &p.namespace, &p.name);
            let ps = status
                .proxies
                .iter()
                .find(|s| s.workload_namespace == p.namespace && s.workload_name == p.name)
                .expect("proxy connected");
            for ty in ConfigType::ALL {
                let want = snap
                    .entries
                    .values()
                    .filter(|e| e.ty == ty && scope.admits(e))
                    .count();
                let got = ps
                    .types
                    .iter()
                    .find(|t| t.type_name == ty.name())
                    .map(|t| t.resources);
                if got != Some(want) {
                    wrong.push(format!(
                        "{}/{} {ty}: holds {got:?}, scope admits {want} of v{}",
                        p.namespace, p.name, snap.version
                    ));
                }
            }
        }
        if wrong.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "{wrong:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scope_change_sends_removals_and_holdings_follow_scopes() {
    let dir = tempfile::tempdir().unwrap();
    let mut workload = Workload::new(WorkloadSize {
        namespaces: 3,
        services_per_namespace: 10,
        endpoints_per_service: 2,
        routed_per_namespace: 0,
        proxies: 9,
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
    .expect("control plane starts");
    let (tx, rx) = mpsc::unbounded_channel();
    let mut tracker = AckTracker::new(rx, proxies.len());
    let _tasks = spawn_proxies(cp.grpc_addr(), &proxies, 3, tx).await;
    let everyone: Vec<usize> = (0..proxies.len()).collect();
    for ty in ConfigType::ALL {
        tracker
            .wait(ty, cp.snapshot_version(), &everyone, TIMEOUT)
            .await
            .unwrap();
    }
    holdings_match_scopes(&cp, &proxies).await;

    // ns-01 stops exporting its Services: proxies of ns-00 and ns-02 lose them and every
    // workload of ns-01; ns-01's own proxies see their Services change.
    for private in [true, false] {
        workload.set_private(dir.path(), 1, private);
        let version = cp.reload_now().await.expect("change accepted");
        let elsewhere: Vec<usize> = everyone
            .iter()
            .copied()
            .filter(|&i| proxies[i].namespace != "ns-01")
            .collect();
        for (ty, who) in [
            (ConfigType::Resources, &everyone),
            (ConfigType::Endpoints, &elsewhere),
        ] {
            tracker
                .wait(ty, version, who, TIMEOUT)
                .await
                .unwrap_or_else(|e| panic!("private={private}: {e}"));
        }
        for (i, p) in proxies.iter().enumerate() {
            let acked: Vec<_> = tracker
                .log
                .iter()
                .filter(|e| e.proxy == i && e.version == version)
                .collect();
            let res = acked
                .iter()
                .find(|e| e.ty == ConfigType::Resources)
                .unwrap();
            let eps = acked.iter().find(|e| e.ty == ConfigType::Endpoints);
            assert!(!res.full);
            if p.namespace == "ns-01" {
                assert_eq!(
                    (res.resources, res.removed),
                    (10, 0),
                    "{p:?}: Services updated"
                );
                assert!(eps.is_none(), "{p:?}: its workloads did not change");
                continue;
            }
            let eps = eps.expect("an ENDPOINTS update");
            assert!(!eps.full);
            if private {
                assert_eq!(
                    (res.resources, res.removed),
                    (0, 10),
                    "{p:?}: Services gone"
                );
                // 10 EndpointSlices and ns-01's 3 proxy Pods.
                assert_eq!(
                    (eps.resources, eps.removed),
                    (0, 13),
                    "{p:?}: workloads gone"
                );
            } else {
                assert_eq!(
                    (res.resources, res.removed),
                    (10, 0),
                    "{p:?}: Services back"
                );
                assert_eq!(
                    (eps.resources, eps.removed),
                    (13, 0),
                    "{p:?}: workloads back"
                );
            }
        }
        tracker.clear_log();
        holdings_match_scopes(&cp, &proxies).await;
    }
    cp.shutdown().await;
}
