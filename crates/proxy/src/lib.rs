//! Trellis proxy: the data plane. Serves one `ProxyConfig` (gateway or sidecar) on real sockets.
//!
//! Layout (follow one request top to bottom):
//! - `runtime`: builds the live `ProxyState`, binds listeners, swaps configs on reload.
//! - `listener`: accepts connections, picks a filter chain (SNI, TLS or plaintext).
//! - `tls`: TLS termination with certificates from the config's secrets.
//! - `http`: one HTTP connection: request -> route (model::route) -> action (forward,
//!   redirect, direct response) with header ops, faults, retries, timeouts, mirrors, CORS.
//! - `upstream`: clusters at runtime: endpoint selection (load balancing), connection pools,
//!   circuit breaking, outlier detection.
//! - `tcp`: raw TCP and TLS passthrough forwarding.
//! - `admin`: config dump, readiness, server info, shutdown, `/stats/prometheus`; the status
//!   (readiness, metrics) port.
//! - `metrics`: Istio's standard metrics (`istio_requests_total`, ...) and their labels.
//! - `control_client`: control-plane mode: resources pushed by a control plane -> compile ->
//!   apply, ACK/NACK, reconnect with backoff.
//! - `reload`: standalone mode: manifests -> compile -> apply, on SIGHUP and file changes.
//!
//! Decisions (route matching, compile) live in `trellis-model`; this crate does the I/O.

pub mod admin;
pub mod control_client;
pub mod http;
pub mod listener;
pub mod memory;
pub mod metrics;
pub mod reload;
pub mod runtime;
pub mod security;
pub mod state;
pub mod tcp;
pub mod telemetry;
pub mod tls;
pub mod upstream;

pub use runtime::{ApplyError, ProxyRuntime, RunningProxy, RuntimeOptions};
pub use state::{ConnectionInfo, ProxyState};

#[cfg(test)]
pub(crate) fn test_config() -> trellis_model::config::ProxyConfig {
    use trellis_model::config::*;
    ProxyConfig {
        warnings: Vec::new(),
        version: "test".into(),
        node: NodeInfo {
            kind: ProxyKind::Gateway,
            id: "test.default".into(),
            namespace: "default".into(),
            labels: Default::default(),
            service_account: "default".into(),
            ip: None,
            locality: None,
        },
        mesh: MeshSettings {
            trust_domain: "cluster.local".into(),
            outbound_allow_any: true,
            access_log_file: String::new(),
            access_log_json: false,
        },
        listeners: vec![],
        routes: Default::default(),
        clusters: Default::default(),
        endpoints: Default::default(),
        secrets: Default::default(),
        security: Default::default(),
        tracing: Default::default(),
    }
}
