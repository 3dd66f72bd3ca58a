//! Control-plane metrics (Prometheus text via prometheus-client). Counters are registered
//! without `_total`: the exposition adds it.
//!
//! | metric | what |
//! |---|---|
//! | `trellis_control_pushes_total{type}` | updates sent to proxies |
//! | `trellis_control_push_resources_total{type}` | resources carried by those updates |
//! | `trellis_control_acks_total{type}` / `trellis_control_nacks_total{type}` | proxy answers |
//! | `trellis_control_connected_proxies` | open config streams |
//! | `trellis_control_config_errors_total` | rejected config changes |
//! | `trellis_control_config_reloads_total` | accepted config changes |
//! | `trellis_control_snapshot_version` | version in force |
//! | `trellis_control_certificates_issued_total` / `trellis_control_certificate_errors_total` | CA |

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TypeLabel {
    pub r#type: String,
}

pub(crate) struct Metrics {
    registry: Registry,
    pub pushes: Family<TypeLabel, Counter>,
    pub push_resources: Family<TypeLabel, Counter>,
    pub acks: Family<TypeLabel, Counter>,
    pub nacks: Family<TypeLabel, Counter>,
    pub connected: Gauge,
    pub config_errors: Counter,
    pub reloads: Counter,
    pub snapshot_version: Gauge,
    pub certs_issued: Counter,
    pub cert_errors: Counter,
}

pub(crate) fn label(ty: trellis_protocol::ConfigType) -> TypeLabel {
    TypeLabel {
        r#type: ty.name().to_string(),
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("trellis_control");
        let m = Metrics {
            pushes: Family::default(),
            push_resources: Family::default(),
            acks: Family::default(),
            nacks: Family::default(),
            connected: Gauge::default(),
            config_errors: Counter::default(),
            reloads: Counter::default(),
            snapshot_version: Gauge::default(),
            certs_issued: Counter::default(),
            cert_errors: Counter::default(),
            registry: Registry::default(),
        };
        registry.register("pushes", "Config updates sent to proxies", m.pushes.clone());
        registry.register(
            "push_resources",
            "Resources carried by config updates",
            m.push_resources.clone(),
        );
        registry.register("acks", "Config versions proxies ACKed", m.acks.clone());
        registry.register("nacks", "Config versions proxies NACKed", m.nacks.clone());
        registry.register(
            "connected_proxies",
            "Proxies with an open config stream",
            m.connected.clone(),
        );
        registry.register(
            "config_errors",
            "Config changes rejected by validation or analysis",
            m.config_errors.clone(),
        );
        registry.register(
            "config_reloads",
            "Config changes accepted",
            m.reloads.clone(),
        );
        registry.register(
            "snapshot_version",
            "Version of the config snapshot in force",
            m.snapshot_version.clone(),
        );
        registry.register(
            "certificates_issued",
            "Workload certificates signed",
            m.certs_issued.clone(),
        );
        registry.register(
            "certificate_errors",
            "Certificate signing requests refused",
            m.cert_errors.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
