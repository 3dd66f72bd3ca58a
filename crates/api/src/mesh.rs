//! `MeshConfig`: mesh-wide settings (Istio's `istio.mesh.v1alpha1.MeshConfig`), as found in
//! the `mesh` key of the `istio` ConfigMap in the root namespace or in a mesh config file.
//!
//! Owns the typed model with Istio's defaults (`MeshConfig::default()` is what istiod runs
//! with when nothing is configured), reading it from YAML text, files, ConfigMaps and loaded
//! resources with located errors, and its validation. Every top-level MeshConfig field of the
//! proto is accepted and unknown ones are rejected (as istioctl does); rarely used nested
//! messages are kept as JSON values. Fields absent from the input keep Istio's defaults, with
//! Istio's merge rules: `defaultConfig` merges over the default ProxyConfig, user
//! `extensionProviders` override the built-in ones by name, every other field is replaced
//! whole (so a present message's missing fields take proto zero values, e.g.
//! `outboundTrafficPolicy: {}` means `REGISTRY_ONLY`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration as StdDuration;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::diag::{Diagnostic, ResourceRef, Severity};
use crate::duration::Duration;
use crate::resource::{typed, Kind, Object, Resource};
use crate::source::{path_to_pointer, Location};
use crate::validate::{check_dns1123_label, FieldIssue, Validate, Validator};
use crate::yaml::parse_documents;

/// Istio's default retry conditions (`defaultHttpRetryPolicy.retryOn` when unset).
pub const DEFAULT_RETRY_ON: &str =
    "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes";
/// Istio's default retry attempts when no mesh retry policy is set.
pub const DEFAULT_RETRY_ATTEMPTS: i32 = 2;
/// Name of the ConfigMap holding the mesh config, in the root namespace.
pub const MESH_CONFIG_MAP: &str = "istio";
/// Data key of the mesh config in that ConfigMap.
pub const MESH_CONFIG_KEY: &str = "mesh";

fn secs(s: u64) -> Duration {
    Duration::from_std(StdDuration::from_secs(s))
}

/// Mesh-wide settings. See the module docs for default and merge semantics.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct MeshConfig {
    /// Outbound capture port (15001).
    pub proxy_listen_port: i32,
    /// Inbound capture port (15006).
    pub proxy_inbound_listen_port: i32,
    /// HTTP PROXY port, 0 when disabled.
    pub proxy_http_port: i32,
    /// Upstream connect timeout (10s).
    pub connect_timeout: Duration,
    /// Server-first protocol detection timeout (0s: none).
    pub protocol_detection_timeout: Duration,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_keepalive: Option<Value>,
    /// `kubernetes.io/ingress.class` handled by Istio ("istio").
    pub ingress_class: String,
    /// Service of the Ingress controller ("istio-ingressgateway").
    pub ingress_service: String,
    pub ingress_controller_mode: IngressControllerMode,
    /// `istio: <selector>` label of the gateway serving Ingress resources ("" = ingressgateway).
    pub ingress_selector: String,
    pub enable_tracing: bool,
    /// Access log path; empty disables access logging.
    pub access_log_file: String,
    pub access_log_format: String,
    pub access_log_encoding: AccessLogEncoding,
    pub enable_envoy_access_log_service: bool,
    pub disable_envoy_listener_log: bool,
    /// Default ProxyConfig for sidecars and gateways.
    pub default_config: ProxyConfig,
    pub outbound_traffic_policy: OutboundTrafficPolicy,
    pub inbound_traffic_policy: InboundTrafficPolicy,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub config_sources: Vec<Value>,
    pub enable_auto_mtls: bool,
    /// SPIFFE trust domain ("cluster.local").
    pub trust_domain: String,
    pub trust_domain_aliases: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ca_certificates: Vec<CertificateData>,
    pub default_service_export_to: Vec<String>,
    pub default_virtual_service_export_to: Vec<String>,
    pub default_destination_rule_export_to: Vec<String>,
    /// Administrative root namespace ("istio-system").
    pub root_namespace: String,
    /// Networking `LocalityLoadBalancerSetting` (default `{enabled: true}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locality_lb_setting: Option<Value>,
    /// Refresh rate of `STRICT_DNS` clusters (60s).
    pub dns_refresh_rate: Duration,
    pub h2_upgrade_policy: H2UpgradePolicy,
    pub inbound_cluster_stat_name: String,
    pub outbound_cluster_stat_name: String,
    /// Deprecated certificate provisioning.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<Value>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub service_settings: Vec<ServiceSettings>,
    pub enable_prometheus_merge: bool,
    /// Deprecated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verify_certificate_at_client: Option<bool>,
    /// External CA settings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca: Option<Value>,
    /// Extension providers (built-in: `prometheus`, `stackdriver`, `envoy`).
    pub extension_providers: Vec<ExtensionProvider>,
    pub default_providers: DefaultProviders,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub discovery_selectors: Vec<LabelSelector>,
    pub path_normalization: ProxyPathNormalization,
    /// Mesh default retry policy; Istio's default is 2 attempts on [`DEFAULT_RETRY_ON`].
    /// See [`MeshConfig::http_retry_policy`] for the policy in force.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_http_retry_policy: Option<HttpRetry>,
    /// TLS settings of `ISTIO_MUTUAL` traffic.
    #[serde(rename = "meshMTLS")]
    pub mesh_mtls: TlsConfig,
    /// TLS settings of all other TLS traffic.
    pub tls_defaults: TlsConfig,
    /// `""` or `fips-140-2`.
    pub compliance_policy: String,
    /// Ambient multicluster service scopes.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub service_scope_configs: Vec<Value>,
}

impl Default for MeshConfig {
    fn default() -> Self {
        MeshConfig {
            proxy_listen_port: 15001,
            proxy_inbound_listen_port: 15006,
            proxy_http_port: 0,
            connect_timeout: secs(10),
            protocol_detection_timeout: secs(0),
            tcp_keepalive: None,
            ingress_class: "istio".into(),
            ingress_service: "istio-ingressgateway".into(),
            ingress_controller_mode: IngressControllerMode::Strict,
            ingress_selector: String::new(),
            enable_tracing: true,
            access_log_file: String::new(),
            access_log_format: String::new(),
            access_log_encoding: AccessLogEncoding::Text,
            enable_envoy_access_log_service: false,
            disable_envoy_listener_log: false,
            default_config: ProxyConfig::default(),
            outbound_traffic_policy: OutboundTrafficPolicy {
                mode: OutboundTrafficMode::AllowAny,
                egress_proxy: None,
            },
            inbound_traffic_policy: InboundTrafficPolicy::default(),
            config_sources: Vec::new(),
            enable_auto_mtls: true,
            trust_domain: "cluster.local".into(),
            trust_domain_aliases: Vec::new(),
            ca_certificates: Vec::new(),
            default_service_export_to: vec!["*".into()],
            default_virtual_service_export_to: vec!["*".into()],
            default_destination_rule_export_to: vec!["*".into()],
            root_namespace: "istio-system".into(),
            locality_lb_setting: Some(serde_json::json!({"enabled": true})),
            dns_refresh_rate: secs(60),
            h2_upgrade_policy: H2UpgradePolicy::DoNotUpgrade,
            inbound_cluster_stat_name: String::new(),
            outbound_cluster_stat_name: String::new(),
            certificates: Vec::new(),
            service_settings: Vec::new(),
            enable_prometheus_merge: true,
            verify_certificate_at_client: None,
            ca: None,
            extension_providers: default_extension_providers(),
            default_providers: DefaultProviders::default(),
            discovery_selectors: Vec::new(),
            path_normalization: ProxyPathNormalization::default(),
            default_http_retry_policy: Some(HttpRetry {
                attempts: DEFAULT_RETRY_ATTEMPTS,
                retry_on: Some(DEFAULT_RETRY_ON.into()),
                ..HttpRetry::default()
            }),
            mesh_mtls: TlsConfig::default(),
            tls_defaults: TlsConfig::default(),
            compliance_policy: String::new(),
            service_scope_configs: Vec::new(),
        }
    }
}

/// The providers istiod always defines unless overridden by name.
fn default_extension_providers() -> Vec<ExtensionProvider> {
    vec![
        ExtensionProvider {
            name: "prometheus".into(),
            prometheus: Some(PrometheusMetricsProvider {}),
            ..Default::default()
        },
        ExtensionProvider {
            name: "stackdriver".into(),
            stackdriver: Some(serde_json::json!({})),
            ..Default::default()
        },
        ExtensionProvider {
            name: "envoy".into(),
            envoy_file_access_log: Some(EnvoyFileAccessLogProvider {
                path: "/dev/stdout".into(),
                log_format: None,
            }),
            ..Default::default()
        },
    ]
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum IngressControllerMode {
    #[default]
    Unspecified,
    Off,
    Default,
    Strict,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AccessLogEncoding {
    #[default]
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum H2UpgradePolicy {
    #[default]
    DoNotUpgrade,
    Upgrade,
}

/// `outboundTrafficPolicy`. The mesh default is `ALLOW_ANY`; a present message without
/// `mode` is `REGISTRY_ONLY` (the proto zero value), as in Istio.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutboundTrafficPolicy {
    #[serde(default)]
    pub mode: OutboundTrafficMode,
    /// Alpha: where `REGISTRY_ONLY` sends unknown traffic (a networking `Destination`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_proxy: Option<Value>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OutboundTrafficMode {
    #[default]
    RegistryOnly,
    AllowAny,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InboundTrafficPolicy {
    #[serde(default)]
    pub mode: InboundTrafficMode,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum InboundTrafficMode {
    #[default]
    Passthrough,
    Localhost,
}

/// `pathNormalization`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxyPathNormalization {
    #[serde(default)]
    pub normalization: NormalizationType,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum NormalizationType {
    /// Currently `BASE`.
    #[default]
    Default,
    None,
    Base,
    MergeSlashes,
    DecodeAndMergeSlashes,
}

impl NormalizationType {
    /// `DEFAULT` resolved to what it means today (`BASE`).
    pub fn effective(self) -> NormalizationType {
        match self {
            NormalizationType::Default => NormalizationType::Base,
            other => other,
        }
    }
}

/// `caCertificates` entry: extra trust anchors.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CertificateData {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pem: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spiffe_bundle_url: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cert_signers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trust_domains: Vec<String>,
}

/// `serviceSettings` entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceSettings {
    #[serde(default)]
    pub settings: ServiceSettingsValues,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceSettingsValues {
    #[serde(default)]
    pub cluster_local: bool,
}

/// `defaultProviders`: provider names used when a Telemetry resource names none.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DefaultProviders {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tracing: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access_logging: Vec<String>,
}

/// `meshMTLS` / `tlsDefaults`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsConfig {
    #[serde(default)]
    pub min_protocol_version: TlsProtocol,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ecdh_curves: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cipher_suites: Vec<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TlsProtocol {
    #[default]
    #[serde(rename = "TLS_AUTO")]
    TlsAuto,
    #[serde(rename = "TLSV1_2")]
    TlsV1_2,
    #[serde(rename = "TLSV1_3")]
    TlsV1_3,
}

/// `defaultHttpRetryPolicy` (networking `HTTPRetry`). Inside a present policy, missing fields
/// are proto zeros: `attempts` 0 disables retries, an empty `retryOn` means Istio's default.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HttpRetry {
    pub attempts: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_try_timeout: Option<Duration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_on: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_remote_localities: Option<bool>,
    /// HTTPRetry fields not modelled here (kept as written).
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

impl MeshConfig {
    /// The retry policy in force for routes without their own: `None` when retries are
    /// disabled (`attempts: 0`), else the policy with `retryOn` filled with Istio's default.
    pub fn http_retry_policy(&self) -> Option<HttpRetry> {
        let mut p = self.default_http_retry_policy.clone().unwrap_or(HttpRetry {
            attempts: DEFAULT_RETRY_ATTEMPTS,
            ..HttpRetry::default()
        });
        if p.attempts <= 0 {
            return None;
        }
        if p.retry_on.as_deref().is_none_or(str::is_empty) {
            p.retry_on = Some(DEFAULT_RETRY_ON.into());
        }
        Some(p)
    }

    /// The extension provider called `name`.
    pub fn extension_provider(&self, name: &str) -> Option<&ExtensionProvider> {
        self.extension_providers.iter().find(|p| p.name == name)
    }

    /// Every trust domain that identifies this mesh: `trustDomain` then its aliases.
    pub fn trust_domains(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.trust_domain.as_str())
            .chain(self.trust_domain_aliases.iter().map(String::as_str))
    }
}

// ---------------------------------------------------------------------------------------------
// ProxyConfig
// ---------------------------------------------------------------------------------------------

/// `defaultConfig`: the mesh-wide ProxyConfig. The commonly used fields are typed; every other
/// ProxyConfig field is kept as written in `other`. Missing fields keep Istio's defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProxyConfig {
    pub config_path: String,
    pub binary_path: String,
    /// Envoy `--service-cluster` (oneof with `tracingServiceName`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_cluster: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tracing_service_name: Option<TracingServiceName>,
    /// Hot-restart drain time (45s).
    pub drain_duration: Duration,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_shutdown_duration: Option<Duration>,
    /// Drain time on shutdown (5s).
    pub termination_drain_duration: Duration,
    /// istiod's xDS address ("istiod.istio-system.svc:15012").
    pub discovery_address: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub statsd_udp_address: Option<String>,
    /// Envoy admin port (15000).
    pub proxy_admin_port: i32,
    pub control_plane_auth_policy: AuthenticationPolicy,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub custom_config_file: Option<String>,
    /// Longest stat name (189).
    pub stat_name_length: i32,
    /// Worker threads; unset sizes to the CPU limit, 0 uses every core.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_bootstrap_template_path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interception_mode: Option<InterceptionMode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tracing: Option<Tracing>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub envoy_access_log_service: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub envoy_metrics_service: Option<Value>,
    /// Extra proxy environment (`ISTIO_META_*` is sent to istiod).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub proxy_metadata: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub runtime_values: BTreeMap<String, String>,
    /// Agent status/readiness port (15020).
    pub status_port: i32,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub extra_stat_tags: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway_topology: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mesh_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub readiness_probe: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_stats_matcher: Option<Value>,
    /// Start the application only once the proxy is ready (false).
    pub hold_application_until_proxy_starts: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ca_certificates_pem: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub private_key_provider: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_headers: Option<Value>,
    /// ProxyConfig fields not modelled above, as written.
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            config_path: "./etc/istio/proxy".into(),
            binary_path: "/usr/local/bin/envoy".into(),
            service_cluster: Some("istio-proxy".into()),
            tracing_service_name: None,
            drain_duration: secs(45),
            parent_shutdown_duration: None,
            termination_drain_duration: secs(5),
            discovery_address: "istiod.istio-system.svc:15012".into(),
            statsd_udp_address: None,
            proxy_admin_port: 15000,
            control_plane_auth_policy: AuthenticationPolicy::MutualTls,
            custom_config_file: None,
            stat_name_length: 189,
            concurrency: None,
            proxy_bootstrap_template_path: None,
            interception_mode: None,
            tracing: None,
            envoy_access_log_service: None,
            envoy_metrics_service: None,
            proxy_metadata: BTreeMap::new(),
            runtime_values: BTreeMap::new(),
            status_port: 15020,
            extra_stat_tags: Vec::new(),
            gateway_topology: None,
            mesh_id: None,
            readiness_probe: None,
            proxy_stats_matcher: None,
            hold_application_until_proxy_starts: false,
            ca_certificates_pem: Vec::new(),
            image: None,
            private_key_provider: None,
            proxy_headers: None,
            other: BTreeMap::new(),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TracingServiceName {
    #[default]
    AppLabelAndNamespace,
    CanonicalNameOnly,
    CanonicalNameAndNamespace,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AuthenticationPolicy {
    #[default]
    None,
    MutualTls,
    Inherit,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum InterceptionMode {
    #[default]
    Redirect,
    Tproxy,
    None,
}

/// `defaultConfig.tracing`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Tracing {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zipkin: Option<TracerAddress>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lightstep: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub datadog: Option<TracerAddress>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stackdriver: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub open_census_agent: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub custom_tags: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_path_tag_length: Option<u32>,
    /// Percentage of requests traced, 0-100; see [`Tracing::sampling`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sampling: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_settings: Option<Value>,
    /// Tracing fields not modelled above, as written.
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

impl Tracing {
    /// The sampling percentage in force: 1.0 when unset or 0 (Istio's default).
    pub fn sampling(&self) -> f64 {
        match self.sampling {
            Some(s) if s > 0.0 => s,
            _ => 1.0,
        }
    }
}

/// `zipkin` / `datadog` tracer: `{address: host:port}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TracerAddress {
    #[serde(default)]
    pub address: String,
}

// ---------------------------------------------------------------------------------------------
// Extension providers
// ---------------------------------------------------------------------------------------------

/// `extensionProviders` entry: a name and exactly one provider (proto oneof, modelled as
/// options).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExtensionProvider {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envoy_ext_authz_http: Option<EnvoyExtAuthzHttpProvider>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envoy_ext_authz_grpc: Option<EnvoyExtAuthzGrpcProvider>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zipkin: Option<ZipkinTracingProvider>,
    /// Deprecated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lightstep: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datadog: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stackdriver: Option<Value>,
    /// Deprecated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opencensus: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skywalking: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opentelemetry: Option<OpenTelemetryTracingProvider>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusMetricsProvider>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envoy_file_access_log: Option<EnvoyFileAccessLogProvider>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envoy_http_als: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envoy_tcp_als: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envoy_otel_als: Option<Value>,
}

impl ExtensionProvider {
    /// The YAML names of the provider kinds set (exactly one when valid).
    pub fn kinds(&self) -> Vec<&'static str> {
        [
            ("envoyExtAuthzHttp", self.envoy_ext_authz_http.is_some()),
            ("envoyExtAuthzGrpc", self.envoy_ext_authz_grpc.is_some()),
            ("zipkin", self.zipkin.is_some()),
            ("lightstep", self.lightstep.is_some()),
            ("datadog", self.datadog.is_some()),
            ("stackdriver", self.stackdriver.is_some()),
            ("opencensus", self.opencensus.is_some()),
            ("skywalking", self.skywalking.is_some()),
            ("opentelemetry", self.opentelemetry.is_some()),
            ("prometheus", self.prometheus.is_some()),
            ("envoyFileAccessLog", self.envoy_file_access_log.is_some()),
            ("envoyHttpAls", self.envoy_http_als.is_some()),
            ("envoyTcpAls", self.envoy_tcp_als.is_some()),
            ("envoyOtelAls", self.envoy_otel_als.is_some()),
        ]
        .into_iter()
        .filter_map(|(n, set)| set.then_some(n))
        .collect()
    }

    /// True for the providers an AuthorizationPolicy `CUSTOM` action can name.
    pub fn is_ext_authz(&self) -> bool {
        self.envoy_ext_authz_http.is_some() || self.envoy_ext_authz_grpc.is_some()
    }

    /// True for tracing providers.
    pub fn is_tracing(&self) -> bool {
        self.zipkin.is_some()
            || self.lightstep.is_some()
            || self.datadog.is_some()
            || self.stackdriver.is_some()
            || self.opencensus.is_some()
            || self.skywalking.is_some()
            || self.opentelemetry.is_some()
    }

    /// True for access logging providers.
    pub fn is_access_log(&self) -> bool {
        self.envoy_file_access_log.is_some()
            || self.envoy_http_als.is_some()
            || self.envoy_tcp_als.is_some()
            || self.envoy_otel_als.is_some()
            || self.stackdriver.is_some()
    }

    /// The `service` and `port` of providers that call a service.
    pub fn service_and_port(&self) -> Option<(&str, u32)> {
        fn from_value(v: &Option<Value>) -> Option<(&str, u32)> {
            v.as_ref().map(|v| {
                (
                    v.get("service").and_then(Value::as_str).unwrap_or(""),
                    u32::try_from(v.get("port").and_then(Value::as_u64).unwrap_or(0)).unwrap_or(0),
                )
            })
        }
        self.envoy_ext_authz_http
            .as_ref()
            .map(|p| (p.service.as_str(), p.port))
            .or_else(|| {
                self.envoy_ext_authz_grpc
                    .as_ref()
                    .map(|p| (p.service.as_str(), p.port))
            })
            .or_else(|| self.zipkin.as_ref().map(|p| (p.service.as_str(), p.port)))
            .or_else(|| {
                self.opentelemetry
                    .as_ref()
                    .map(|p| (p.service.as_str(), p.port))
            })
            .or_else(|| from_value(&self.lightstep))
            .or_else(|| from_value(&self.datadog))
            .or_else(|| from_value(&self.opencensus))
            .or_else(|| from_value(&self.skywalking))
            .or_else(|| from_value(&self.envoy_http_als))
            .or_else(|| from_value(&self.envoy_tcp_als))
            .or_else(|| from_value(&self.envoy_otel_als))
    }
}

/// `envoyExtAuthzHttp`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvoyExtAuthzHttpProvider {
    /// `[<namespace>/]<hostname>` of the authorization service.
    #[serde(default)]
    pub service: String,
    #[serde(default)]
    pub port: u32,
    /// Default 600s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_open: Option<bool>,
    /// HTTP status returned on network errors (default "403").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_on_error: Option<String>,
    /// Deprecated: use `includeRequestHeadersInCheck`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include_headers_in_check: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include_request_headers_in_check: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub include_additional_headers_in_check: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_request_body_in_check: Option<ExtAuthzRequestBody>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers_to_upstream_on_allow: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers_to_downstream_on_deny: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers_to_downstream_on_allow: Vec<String>,
}

/// `envoyExtAuthzGrpc`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvoyExtAuthzGrpcProvider {
    #[serde(default)]
    pub service: String,
    #[serde(default)]
    pub port: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_open: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_on_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_request_body_in_check: Option<ExtAuthzRequestBody>,
}

/// `includeRequestBodyInCheck`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExtAuthzRequestBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_request_bytes: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_partial_message: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pack_as_bytes: Option<bool>,
}

/// `zipkin` provider. Newer optional fields are kept in `other`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ZipkinTracingProvider {
    pub service: String,
    pub port: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tag_length: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enable_64bit_trace_id: Option<bool>,
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// `opentelemetry` provider. Newer optional fields are kept in `other`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct OpenTelemetryTracingProvider {
    pub service: String,
    pub port: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tag_length: Option<u32>,
    /// Export over HTTP (`{path, timeout, headers}`) instead of gRPC.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_detectors: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dynatrace_sampler: Option<Value>,
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// `prometheus: {}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrometheusMetricsProvider {}

/// `envoyFileAccessLog`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvoyFileAccessLogProvider {
    /// Default `/dev/stdout`.
    #[serde(default)]
    pub path: String,
    /// `{text: ...}` or `{labels: {...}}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_format: Option<Value>,
}

// ---------------------------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------------------------

// `Diagnostic` is the crate's located error; these readers return it by value like the rest
// of the API, so the size lint does not apply.
#[allow(clippy::result_large_err)]
impl MeshConfig {
    /// Reads mesh config YAML (or JSON). An empty text gives the defaults. A Kubernetes
    /// ConfigMap document is read from its `mesh` key. Errors are located in `file_name`.
    pub fn from_yaml(file_name: &str, text: &str) -> Result<MeshConfig, Diagnostic> {
        let docs = parse_documents(file_name, text)
            .map_err(|e| Diagnostic::error(e.message).at(e.location))?;
        let Some(doc) = docs.first() else {
            return Ok(MeshConfig::default());
        };
        if let Some(extra) = docs.get(1) {
            return Err(Diagnostic::error(
                "mesh config must be a single YAML document, found several",
            )
            .at(extra.location.clone()));
        }
        if !doc.value.is_object() {
            return Err(Diagnostic::error(
                "expected a mapping of MeshConfig fields (accessLogFile, defaultConfig, ...)",
            )
            .at(doc.location.clone()));
        }
        if doc.value.get("kind").and_then(Value::as_str) == Some("ConfigMap")
            && doc.value.get("apiVersion").is_some()
        {
            let cm: ConfigMap = typed(&doc.value).map_err(|(path, msg)| {
                let loc = doc
                    .spans
                    .locate(&path_to_pointer(&path))
                    .unwrap_or_else(|| doc.location.clone());
                field_error(loc, &path, msg)
            })?;
            let key = doc.spans.locate(&path_to_pointer("data.mesh"));
            return match cm.data.as_ref().and_then(|d| d.get(MESH_CONFIG_KEY)) {
                Some(mesh) => Self::from_embedded(mesh, file_name, key),
                None => Err(Diagnostic::error(format!(
                    "ConfigMap has no data.{MESH_CONFIG_KEY} key holding the mesh config"
                ))
                .at(doc.location.clone())),
            };
        }
        let mut mesh: MeshConfig = typed(&doc.value).map_err(|(path, msg)| {
            let loc = doc
                .spans
                .locate(&path_to_pointer(&path))
                .unwrap_or_else(|| doc.location.clone());
            field_error(loc, &path, msg)
        })?;
        mesh.apply_merge_rules(&doc.value);
        Ok(mesh)
    }

    /// Reads a mesh config file (mesh YAML or the `istio` ConfigMap).
    pub fn from_file(path: impl AsRef<Path>) -> Result<MeshConfig, Diagnostic> {
        let path = path.as_ref();
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| {
            Diagnostic::error(format!("cannot read mesh config: {e}")).at(Location::new(
                name.clone(),
                1,
                1,
            ))
        })?;
        Self::from_yaml(&name, &text)
    }

    /// Reads the `mesh` key of Istio's `istio` ConfigMap; `Ok(None)` when the key is absent.
    pub fn from_config_map(cm: &ConfigMap) -> Result<Option<MeshConfig>, Diagnostic> {
        let Some(text) = cm.data.as_ref().and_then(|d| d.get(MESH_CONFIG_KEY)) else {
            return Ok(None);
        };
        let name = format!(
            "ConfigMap {}/{} data.{MESH_CONFIG_KEY}",
            cm.metadata.namespace.as_deref().unwrap_or(""),
            cm.metadata.name.as_deref().unwrap_or("")
        );
        Self::from_yaml(&name, text).map(Some)
    }

    /// Finds ConfigMap `istio` in `root_namespace` among loaded resources and reads its mesh
    /// config, locating errors in the file the ConfigMap came from. `None` when there is no
    /// such ConfigMap or it has no `mesh` key.
    pub fn from_resources<'a>(
        resources: impl IntoIterator<Item = &'a Resource>,
        root_namespace: &str,
    ) -> Option<Result<MeshConfig, Diagnostic>> {
        let r = resources.into_iter().find(|r| {
            r.kind == Kind::ConfigMap && r.name == MESH_CONFIG_MAP && r.ns() == root_namespace
        })?;
        let Object::ConfigMap(cm) = &r.object else {
            return None;
        };
        let text = cm.data.as_ref()?.get(MESH_CONFIG_KEY)?;
        let key = r.origin.spans.locate(&path_to_pointer("data.mesh"));
        let file = r.origin.location.file.to_string();
        Some(Self::from_embedded(text, &file, key).map_err(|mut d| {
            d.resource = Some(ResourceRef {
                kind: "ConfigMap".into(),
                namespace: r.namespace.clone(),
                name: r.name.clone(),
            });
            d
        }))
    }

    /// Parses mesh YAML embedded as a string value whose key is at `key` in `file`, mapping
    /// error locations back into the file (a multi-line value is taken to be a block scalar
    /// indented two columns deeper than its key).
    fn from_embedded(text: &str, file: &str, key: Option<Location>) -> Result<Self, Diagnostic> {
        Self::from_yaml(file, text).map_err(|mut d| {
            if let (Some(k), Some(inner)) = (&key, &d.location) {
                d.location = Some(if text.contains('\n') {
                    Location::new(
                        k.file.clone(),
                        k.line + inner.line,
                        inner.column + k.column + 1,
                    )
                } else {
                    k.clone()
                });
            }
            if !d.field.is_empty() {
                d.message = format!("mesh config field {}: {}", d.field, d.message);
            }
            d.field = format!("data.{MESH_CONFIG_KEY}");
            d
        })
    }

    /// Istio's merge rules for fields present in the input (see the module docs).
    fn apply_merge_rules(&mut self, raw: &Value) {
        if raw.get("extensionProviders").is_some() {
            let have: BTreeSet<String> = self
                .extension_providers
                .iter()
                .map(|p| p.name.clone())
                .collect();
            for p in default_extension_providers() {
                if !have.contains(&p.name) {
                    self.extension_providers.push(p);
                }
            }
        }
        // `serviceCluster` and `tracingServiceName` are a oneof: setting one clears the other.
        if let Some(dc) = raw.get("defaultConfig") {
            if dc.get("tracingServiceName").is_some() && dc.get("serviceCluster").is_none() {
                self.default_config.service_cluster = None;
            }
        }
    }

    /// Validates this mesh config; paths are MeshConfig field paths (`defaultConfig.tracing`).
    pub fn check(&self) -> Vec<FieldIssue> {
        let mut v = Validator::new(&self.root_namespace, &self.root_namespace);
        self.validate(&mut v);
        v.issues
    }
}

fn field_error(location: Location, path: &str, message: String) -> Diagnostic {
    Diagnostic {
        severity: Severity::Error,
        location: Some(location),
        resource: None,
        field: path.to_string(),
        message,
    }
}

// ---------------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------------

/// Cipher suites Envoy (BoringSSL) accepts, as Istio lists them.
const VALID_CIPHER_SUITES: &[&str] = &[
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-CHACHA20-POLY1305",
    "ECDHE-ECDSA-AES128-SHA",
    "ECDHE-RSA-AES128-SHA",
    "ECDHE-ECDSA-AES256-SHA",
    "ECDHE-RSA-AES256-SHA",
    "AES128-GCM-SHA256",
    "AES256-GCM-SHA384",
    "AES128-SHA",
    "AES256-SHA",
    "DES-CBC3-SHA",
];

/// ECDH curves Envoy accepts, as Istio lists them.
const VALID_ECDH_CURVES: &[&str] = &[
    "P-224",
    "P-256",
    "P-521",
    "P-384",
    "X25519",
    "X25519Kyber768Draft00",
    "X25519MLKEM768",
];

fn check_port_field(v: &mut Validator, field: &str, port: i32, allow_zero: bool) {
    if allow_zero && port == 0 {
        return;
    }
    if !(1..=65535).contains(&port) {
        v.error_at(
            field,
            format!("port number {port} is out of range: expected 1-65535"),
        );
    }
}

/// `host:port` with a port 1-65535.
fn check_host_port(addr: &str) -> Result<(), String> {
    let Some((host, port)) = addr.rsplit_once(':') else {
        return Err(format!("invalid address {addr:?}: expected host:port"));
    };
    if host.is_empty() {
        return Err(format!("invalid address {addr:?}: missing host"));
    }
    match port.parse::<u32>() {
        Ok(1..=65535) => Ok(()),
        _ => Err(format!(
            "invalid address {addr:?}: port must be a number 1-65535"
        )),
    }
}

fn validate_tls_config(v: &mut Validator, field: &str, tls: &TlsConfig, mesh_mtls: bool) {
    v.at(field, |v| {
        if mesh_mtls && !tls.ecdh_curves.is_empty() {
            v.warn_at(
                "ecdhCurves",
                "meshMTLS does not support ecdhCurves: they are ignored for ISTIO_MUTUAL traffic",
            );
        }
        if tls.min_protocol_version == TlsProtocol::TlsV1_3 && !tls.cipher_suites.is_empty() {
            v.warn_at(
                "cipherSuites",
                "cipherSuites only apply to TLS 1.2 and below, but minProtocolVersion is TLSV1_3",
            );
        }
        let mut seen = BTreeSet::new();
        v.each("cipherSuites", &tls.cipher_suites, |v, c| {
            let operator = c
                .chars()
                .next()
                .is_some_and(|ch| !ch.is_ascii_alphanumeric());
            if !seen.insert(c.clone()) {
                v.warn(format!("duplicate cipher suite {c:?}"));
            } else if !(c.is_empty()
                || c == "ALL"
                || operator
                || VALID_CIPHER_SUITES.contains(&c.as_str()))
            {
                v.warn(format!("unsupported cipher suite {c:?}: it is ignored"));
            }
        });
        v.each("ecdhCurves", &tls.ecdh_curves, |v, c| {
            if !c.is_empty() && !VALID_ECDH_CURVES.contains(&c.as_str()) {
                v.warn(format!(
                    "unrecognized ECDH curve {c:?}: expected one of {}",
                    VALID_ECDH_CURVES.join(", ")
                ));
            }
        });
    });
}

trait WarnAt {
    fn warn_at(&mut self, field: &str, message: &str);
}

impl WarnAt for Validator {
    fn warn_at(&mut self, field: &str, message: &str) {
        let m = message.to_string();
        self.at(field, |v| v.warn(m));
    }
}

impl Validate for MeshConfig {
    fn validate(&self, v: &mut Validator) {
        check_port_field(v, "proxyListenPort", self.proxy_listen_port, true);
        check_port_field(
            v,
            "proxyInboundListenPort",
            self.proxy_inbound_listen_port,
            true,
        );
        check_port_field(v, "proxyHttpPort", self.proxy_http_port, true);
        v.duration_min_1ms("connectTimeout", &Some(self.connect_timeout.clone()));
        if self.root_namespace.is_empty() {
            v.error_at("rootNamespace", "rootNamespace must not be empty");
        } else if let Err(e) = check_dns1123_label(&self.root_namespace) {
            v.error_at("rootNamespace", e);
        }
        if self.trust_domain.is_empty() {
            v.error_at("trustDomain", "trustDomain must not be empty");
        }
        v.each("trustDomainAliases", &self.trust_domain_aliases, |v, a| {
            if a.is_empty() {
                v.error("empty trust domain alias");
            }
        });
        v.export_to("defaultServiceExportTo", &self.default_service_export_to);
        v.export_to(
            "defaultVirtualServiceExportTo",
            &self.default_virtual_service_export_to,
        );
        v.export_to(
            "defaultDestinationRuleExportTo",
            &self.default_destination_rule_export_to,
        );
        v.each("caCertificates", &self.ca_certificates, |v, c| {
            if c.pem.is_some() == c.spiffe_bundle_url.is_some() {
                v.error("exactly one of pem and spiffeBundleUrl must be set");
            }
        });
        if !matches!(self.compliance_policy.as_str(), "" | "fips-140-2") {
            v.error_at(
                "compliancePolicy",
                format!(
                    "unknown compliance policy {:?}: expected \"\" or \"fips-140-2\"",
                    self.compliance_policy
                ),
            );
        }
        v.at("defaultConfig", |v| self.default_config.validate(v));
        if let Some(r) = &self.default_http_retry_policy {
            v.at("defaultHttpRetryPolicy", |v| {
                if r.attempts < 0 {
                    v.error_at("attempts", "attempts must not be negative");
                }
                v.duration_min_1ms("perTryTimeout", &r.per_try_timeout);
            });
        }
        validate_tls_config(v, "meshMTLS", &self.mesh_mtls, true);
        validate_tls_config(v, "tlsDefaults", &self.tls_defaults, false);

        let mut names: BTreeMap<String, usize> = BTreeMap::new();
        let mut index = 0;
        v.each("extensionProviders", &self.extension_providers, |v, p| {
            if p.name.is_empty() {
                v.error_at("name", "extension provider name is required");
            } else if let Some(first) = names.get(p.name.as_str()) {
                v.error_at(
                    "name",
                    format!(
                        "duplicate extension provider name {:?} (also extensionProviders[{first}])",
                        p.name
                    ),
                );
            } else {
                names.insert(p.name.clone(), index);
            }
            index += 1;
            p.validate(v);
        });
        for (field, list) in [
            ("tracing", &self.default_providers.tracing),
            ("metrics", &self.default_providers.metrics),
            ("accessLogging", &self.default_providers.access_logging),
        ] {
            v.at("defaultProviders", |v| {
                v.each(field, list, |v, name| {
                    if self.extension_provider(name).is_none() {
                        v.error(format!(
                            "default provider {name:?} is not defined in extensionProviders"
                        ));
                    }
                })
            });
        }
    }
}

impl Validate for ExtensionProvider {
    fn validate(&self, v: &mut Validator) {
        let kinds = self.kinds();
        match kinds.len() {
            0 => v.error(format!(
                "extension provider {:?} sets no provider: expected one of envoyExtAuthzHttp, envoyExtAuthzGrpc, zipkin, datadog, stackdriver, skywalking, opentelemetry, prometheus, envoyFileAccessLog, envoyHttpAls, envoyTcpAls, envoyOtelAls",
                self.name
            )),
            1 => {}
            _ => v.error(format!(
                "extension provider {:?} sets several providers ({}): exactly one is allowed",
                self.name,
                kinds.join(", ")
            )),
        }
        if let Some(p) = &self.envoy_ext_authz_http {
            v.at("envoyExtAuthzHttp", |v| {
                check_service(v, &p.service, p.port);
                v.duration_min_1ms("timeout", &p.timeout);
                check_status(v, &p.status_on_error);
                if let Some(prefix) = &p.path_prefix {
                    if !prefix.is_empty() && !prefix.starts_with('/') {
                        v.error_at(
                            "pathPrefix",
                            format!("pathPrefix {prefix:?} must start with '/'"),
                        );
                    }
                }
                if !p.include_headers_in_check.is_empty() {
                    v.warn_at(
                        "includeHeadersInCheck",
                        "includeHeadersInCheck is deprecated: use includeRequestHeadersInCheck",
                    );
                }
            });
        }
        if let Some(p) = &self.envoy_ext_authz_grpc {
            v.at("envoyExtAuthzGrpc", |v| {
                check_service(v, &p.service, p.port);
                v.duration_min_1ms("timeout", &p.timeout);
                check_status(v, &p.status_on_error);
            });
        }
        if let Some(p) = &self.zipkin {
            v.at("zipkin", |v| check_service(v, &p.service, p.port));
        }
        if let Some(p) = &self.opentelemetry {
            v.at("opentelemetry", |v| check_service(v, &p.service, p.port));
        }
        for (field, value) in [
            ("datadog", &self.datadog),
            ("skywalking", &self.skywalking),
            ("envoyHttpAls", &self.envoy_http_als),
            ("envoyTcpAls", &self.envoy_tcp_als),
            ("envoyOtelAls", &self.envoy_otel_als),
        ] {
            if let Some(val) = value {
                let service = val.get("service").and_then(Value::as_str).unwrap_or("");
                let port = val.get("port").and_then(Value::as_u64).unwrap_or(0);
                v.at(field, |v| {
                    check_service(v, service, u32::try_from(port).unwrap_or(u32::MAX))
                });
            }
        }
    }
}

fn check_service(v: &mut Validator, service: &str, port: u32) {
    if service.is_empty() {
        v.error_at("service", "service is required");
    } else {
        let host = service.rsplit_once('/').map_or(service, |(_, h)| h);
        if let Err(e) = crate::validate::check_host(host) {
            v.error_at("service", e);
        }
    }
    if !(1..=65535).contains(&port) {
        v.error_at(
            "port",
            format!("port number {port} is out of range: expected 1-65535"),
        );
    }
}

fn check_status(v: &mut Validator, status: &Option<String>) {
    if let Some(s) = status {
        if !s.is_empty() && !matches!(s.parse::<u16>(), Ok(100..=599)) {
            v.error_at(
                "statusOnError",
                format!("statusOnError {s:?} must be an HTTP status code 100-599"),
            );
        }
    }
}

/// ProxyConfig fields modelled as typed fields (YAML names).
const PROXY_CONFIG_TYPED: &[&str] = &[
    "configPath",
    "binaryPath",
    "serviceCluster",
    "tracingServiceName",
    "drainDuration",
    "parentShutdownDuration",
    "terminationDrainDuration",
    "discoveryAddress",
    "statsdUdpAddress",
    "proxyAdminPort",
    "controlPlaneAuthPolicy",
    "customConfigFile",
    "statNameLength",
    "concurrency",
    "proxyBootstrapTemplatePath",
    "interceptionMode",
    "tracing",
    "envoyAccessLogService",
    "envoyMetricsService",
    "proxyMetadata",
    "runtimeValues",
    "statusPort",
    "extraStatTags",
    "gatewayTopology",
    "meshId",
    "readinessProbe",
    "proxyStatsMatcher",
    "holdApplicationUntilProxyStarts",
    "caCertificatesPem",
    "image",
    "privateKeyProvider",
    "proxyHeaders",
];
/// Other ProxyConfig fields Istio defines (kept in `other`).
const PROXY_CONFIG_OTHER: &[&str] = &[
    "discoveryRefreshDelay",
    "zipkinAddress",
    "envoyMetricsServiceAddress",
    "availabilityZone",
    "sds",
    "fileFlushInterval",
    "fileFlushMinSizeKb",
];
const TRACING_TYPED: &[&str] = &[
    "zipkin",
    "lightstep",
    "datadog",
    "stackdriver",
    "openCensusAgent",
    "customTags",
    "maxPathTagLength",
    "sampling",
    "tlsSettings",
];
const TRACING_OTHER: &[&str] = &["enableIstioTags"];

/// Warns about fields kept in an `other` map that Istio does not define either, suggesting
/// the closest known name (typos such as `discoveryAdress`).
fn warn_unknown_fields(
    v: &mut Validator,
    other: &BTreeMap<String, Value>,
    typed: &[&str],
    known_other: &[&str],
    what: &str,
) {
    for key in other.keys() {
        if known_other.contains(&key.as_str()) {
            continue;
        }
        let suggestion = typed
            .iter()
            .chain(known_other)
            .map(|k| {
                (
                    edit_distance(&key.to_ascii_lowercase(), &k.to_ascii_lowercase()),
                    k,
                )
            })
            .filter(|(d, _)| *d <= 2)
            .min()
            .map(|(_, k)| format!(" (did you mean {k:?}?)"))
            .unwrap_or_default();
        let m = format!(
            "unknown {what} field {key:?}{suggestion}: it is kept as written but Istio does not know it"
        );
        v.at(key, |v| v.warn(m));
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

impl Validate for ProxyConfig {
    fn validate(&self, v: &mut Validator) {
        warn_unknown_fields(
            v,
            &self.other,
            PROXY_CONFIG_TYPED,
            PROXY_CONFIG_OTHER,
            "ProxyConfig",
        );
        if self.drain_duration.as_std() < StdDuration::from_secs(1) {
            v.error_at("drainDuration", "drainDuration must be at least 1s");
        }
        if let Some(p) = &self.parent_shutdown_duration {
            if p.as_std() <= self.drain_duration.as_std() {
                v.warn_at(
                    "parentShutdownDuration",
                    "parentShutdownDuration should be longer than drainDuration",
                );
            }
        }
        if !self.discovery_address.is_empty() {
            if let Err(e) = check_host_port(&self.discovery_address) {
                v.error_at("discoveryAddress", e);
            }
        }
        if let Some(a) = &self.statsd_udp_address {
            if !a.is_empty() {
                if let Err(e) = check_host_port(a) {
                    v.error_at("statsdUdpAddress", e);
                }
            }
        }
        check_port_field(v, "proxyAdminPort", self.proxy_admin_port, false);
        check_port_field(v, "statusPort", self.status_port, false);
        if self.proxy_admin_port == self.status_port {
            v.error_at("statusPort", "statusPort must differ from proxyAdminPort");
        }
        if self.stat_name_length < 0 {
            v.error_at("statNameLength", "statNameLength must not be negative");
        }
        if let Some(c) = self.concurrency {
            if c < 0 {
                v.error_at("concurrency", "concurrency must not be negative");
            }
        }
        if self.service_cluster.is_some() && self.tracing_service_name.is_some() {
            v.warn_at(
                "tracingServiceName",
                "serviceCluster and tracingServiceName are alternatives: tracingServiceName wins",
            );
        }
        if let Some(t) = &self.tracing {
            v.at("tracing", |v| {
                warn_unknown_fields(v, &t.other, TRACING_TYPED, TRACING_OTHER, "tracing");
                if let Some(s) = t.sampling {
                    if !(0.0..=100.0).contains(&s) {
                        v.error_at(
                            "sampling",
                            format!("sampling {s} is out of range: expected a percentage 0-100"),
                        );
                    }
                }
                let tracers = [
                    t.zipkin.is_some(),
                    t.lightstep.is_some(),
                    t.datadog.is_some(),
                    t.stackdriver.is_some(),
                    t.open_census_agent.is_some(),
                ];
                if tracers.iter().filter(|s| **s).count() > 1 {
                    v.error("only one of zipkin, lightstep, datadog, stackdriver and openCensusAgent can be set");
                }
                for (field, tracer) in [("zipkin", &t.zipkin), ("datadog", &t.datadog)] {
                    if let Some(tr) = tracer {
                        if let Err(e) = check_host_port(&tr.address) {
                            v.error_at(&format!("{field}.address"), e);
                        }
                    }
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::Parsed;

    fn mesh(text: &str) -> MeshConfig {
        MeshConfig::from_yaml("mesh.yaml", text).unwrap()
    }

    #[test]
    fn defaults_are_istios() {
        let m = MeshConfig::default();
        assert_eq!(m.root_namespace, "istio-system");
        assert_eq!(m.trust_domain, "cluster.local");
        assert_eq!(m.connect_timeout.as_std(), StdDuration::from_secs(10));
        assert_eq!(
            m.outbound_traffic_policy.mode,
            OutboundTrafficMode::AllowAny
        );
        assert_eq!(m.default_service_export_to, ["*"]);
        assert!(m.enable_auto_mtls && m.enable_tracing && m.enable_prometheus_merge);
        assert_eq!(m.access_log_encoding, AccessLogEncoding::Text);
        assert_eq!(m.access_log_file, "");
        assert_eq!(
            m.path_normalization.normalization.effective(),
            NormalizationType::Base
        );
        assert_eq!(m.default_config.drain_duration.as_std().as_secs(), 45);
        assert_eq!(
            m.default_config.discovery_address,
            "istiod.istio-system.svc:15012"
        );
        let retry = m.http_retry_policy().unwrap();
        assert_eq!(
            (retry.attempts, retry.retry_on.as_deref()),
            (2, Some(DEFAULT_RETRY_ON))
        );
        let names: Vec<_> = m
            .extension_providers
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        assert_eq!(names, ["prometheus", "stackdriver", "envoy"]);
        assert!(m.check().is_empty(), "{:?}", m.check());
        // Empty input, comments only and `{}` all give the defaults.
        assert_eq!(mesh(""), m);
        assert_eq!(mesh("# nothing\n"), m);
        assert_eq!(mesh("{}"), m);
        // Serializing and reading back is lossless.
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(MeshConfig::from_yaml("m.json", &json).unwrap(), m);
    }

    #[test]
    fn partial_override_keeps_other_defaults() {
        let m = mesh("accessLogFile: /dev/stdout\naccessLogEncoding: JSON\ntrustDomain: example.org\ndefaultConfig:\n  holdApplicationUntilProxyStarts: true\n  proxyMetadata:\n    ISTIO_META_DNS_CAPTURE: \"true\"\n  tracing:\n    sampling: 10\n  concurrency: 2\n");
        assert_eq!(m.access_log_file, "/dev/stdout");
        assert_eq!(m.access_log_encoding, AccessLogEncoding::Json);
        assert_eq!(m.trust_domain, "example.org");
        assert_eq!(m.root_namespace, "istio-system");
        assert_eq!(m.connect_timeout.as_std().as_secs(), 10);
        let pc = &m.default_config;
        assert!(pc.hold_application_until_proxy_starts);
        assert_eq!(pc.concurrency, Some(2));
        assert_eq!(pc.proxy_metadata["ISTIO_META_DNS_CAPTURE"], "true");
        assert_eq!(pc.tracing.as_ref().unwrap().sampling(), 10.0);
        // ProxyConfig merges over its defaults.
        assert_eq!(pc.drain_duration.as_std().as_secs(), 45);
        assert_eq!(pc.discovery_address, "istiod.istio-system.svc:15012");
        assert_eq!(pc.status_port, 15020);
        assert_eq!(Tracing::default().sampling(), 1.0);
    }

    #[test]
    fn present_messages_take_proto_zero_values() {
        assert_eq!(
            mesh("outboundTrafficPolicy: {}\n")
                .outbound_traffic_policy
                .mode,
            OutboundTrafficMode::RegistryOnly
        );
        assert_eq!(
            mesh("outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n")
                .outbound_traffic_policy
                .mode,
            OutboundTrafficMode::RegistryOnly
        );
        let m = mesh("defaultHttpRetryPolicy: {retryOn: 5xx}\n");
        assert_eq!(m.http_retry_policy(), None, "attempts 0 disables retries");
        let m = mesh("defaultHttpRetryPolicy: {attempts: 3}\n");
        let r = m.http_retry_policy().unwrap();
        assert_eq!(
            (r.attempts, r.retry_on.as_deref()),
            (3, Some(DEFAULT_RETRY_ON))
        );
        let m = mesh("defaultConfig: {tracingServiceName: CANONICAL_NAME_ONLY}\n");
        assert_eq!(m.default_config.service_cluster, None);
    }

    #[test]
    fn extension_providers_merge_with_builtins() {
        let m = mesh("extensionProviders:\n- name: my-authz\n  envoyExtAuthzGrpc:\n    service: authz.foo.svc.cluster.local\n    port: 9000\n- name: envoy\n  envoyFileAccessLog:\n    path: /dev/stderr\n");
        let names: Vec<_> = m
            .extension_providers
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        assert_eq!(names, ["my-authz", "envoy", "prometheus", "stackdriver"]);
        assert_eq!(
            m.extension_provider("envoy")
                .unwrap()
                .envoy_file_access_log
                .as_ref()
                .unwrap()
                .path,
            "/dev/stderr"
        );
        let p = m.extension_provider("my-authz").unwrap();
        assert!(p.is_ext_authz());
        assert_eq!(
            p.service_and_port(),
            Some(("authz.foo.svc.cluster.local", 9000))
        );
        assert!(m.check().is_empty(), "{:?}", m.check());
    }

    /// A mesh config as Istio's installers write it.
    const REAL: &str = r#"accessLogFile: /dev/stdout
defaultConfig:
  discoveryAddress: istiod.istio-system.svc:15012
  proxyMetadata: {}
  tracing:
    zipkin:
      address: zipkin.istio-system:9411
  gatewayTopology:
    numTrustedProxies: 1
  proxyStatsMatcher:
    inclusionRegexps: [".*circuit_breakers.*"]
defaultProviders:
  metrics:
  - prometheus
enablePrometheusMerge: true
extensionProviders:
- name: otel
  opentelemetry:
    port: 4317
    service: opentelemetry-collector.observability.svc.cluster.local
    resourceDetectors:
      environment: {}
- name: oauth2-proxy
  envoyExtAuthzHttp:
    headersToDownstreamOnDeny: [content-type, set-cookie]
    headersToUpstreamOnAllow: [authorization, path, x-auth-request-user]
    includeRequestHeadersInCheck: [authorization, cookie]
    port: 4180
    service: oauth2-proxy.oauth2-proxy.svc.cluster.local
    timeout: 5s
rootNamespace: istio-system
trustDomain: cluster.local
outboundTrafficPolicy:
  mode: REGISTRY_ONLY
pathNormalization:
  normalization: MERGE_SLASHES
meshMTLS:
  minProtocolVersion: TLSV1_3
tlsDefaults:
  ecdhCurves: [P-256, X25519]
localityLbSetting:
  enabled: true
  failover:
  - from: us-east
    to: us-west
discoverySelectors:
- matchLabels:
    istio-discovery: enabled
"#;

    #[test]
    fn real_config_loads_and_validates() {
        let m = mesh(REAL);
        assert_eq!(m.mesh_mtls.min_protocol_version, TlsProtocol::TlsV1_3);
        assert_eq!(
            m.path_normalization.normalization,
            NormalizationType::MergeSlashes
        );
        assert_eq!(m.discovery_selectors.len(), 1);
        let authz = m.extension_provider("oauth2-proxy").unwrap();
        assert_eq!(
            authz
                .envoy_ext_authz_http
                .as_ref()
                .unwrap()
                .timeout
                .as_ref()
                .unwrap()
                .as_std()
                .as_secs(),
            5
        );
        let otel = m
            .extension_provider("otel")
            .unwrap()
            .opentelemetry
            .as_ref()
            .unwrap();
        assert_eq!(otel.port, 4317);
        assert!(otel.resource_detectors.is_some());
        assert!(m.default_config.gateway_topology.is_some());
        assert_eq!(
            m.default_config
                .tracing
                .as_ref()
                .unwrap()
                .zipkin
                .as_ref()
                .unwrap()
                .address,
            "zipkin.istio-system:9411"
        );
        assert!(m.check().is_empty(), "{:#?}", m.check());
    }

    #[test]
    fn unknown_and_mistyped_fields_are_located() {
        let e = MeshConfig::from_yaml(
            "mesh.yaml",
            "accessLogFile: /dev/stdout\ntrustDomian: foo\n",
        )
        .unwrap_err();
        assert_eq!(e.field, "trustDomian");
        assert!(
            e.message.contains("unknown field `trustDomian`"),
            "{}",
            e.message
        );
        let loc = e.location.unwrap();
        assert_eq!((&*loc.file, loc.line), ("mesh.yaml", 2));

        let e = MeshConfig::from_yaml(
            "m.yaml",
            "meshMTLS:\n  minProtocolVersion: TLSV1_3\n  bogus: 1\n",
        )
        .unwrap_err();
        assert_eq!(
            (e.field.as_str(), e.location.unwrap().line),
            ("meshMTLS.bogus", 3)
        );

        let e = MeshConfig::from_yaml(
            "m.yaml",
            "extensionProviders:\n- name: x\n  envoyExtAuthzHttp:\n    service: a\n    prot: 80\n",
        )
        .unwrap_err();
        assert_eq!(e.field, "extensionProviders[0].envoyExtAuthzHttp.prot");
        assert_eq!(e.location.unwrap().line, 5);

        let e = MeshConfig::from_yaml("m.yaml", "enableTracing: maybe\n").unwrap_err();
        assert_eq!(
            (e.field.as_str(), e.location.unwrap().line),
            ("enableTracing", 1)
        );

        let e = MeshConfig::from_yaml(
            "m.yaml",
            "accessLogFile: a\ndefaultConfig:\n  drainDuration: bogus\n",
        )
        .unwrap_err();
        assert_eq!(
            (e.field.as_str(), e.location.unwrap().line),
            ("defaultConfig.drainDuration", 3)
        );

        let e = MeshConfig::from_yaml("m.yaml", "a: [1\n").unwrap_err();
        assert!(e.message.contains("malformed YAML"), "{}", e.message);

        let e = MeshConfig::from_yaml("m.yaml", "- 1\n").unwrap_err();
        assert!(e.message.contains("expected a mapping"), "{}", e.message);
    }

    #[test]
    fn config_map_reading() {
        let mut cm = ConfigMap::default();
        cm.metadata.name = Some("istio".into());
        cm.metadata.namespace = Some("istio-system".into());
        assert_eq!(MeshConfig::from_config_map(&cm).unwrap(), None);
        cm.data = Some(BTreeMap::from([(
            "mesh".to_string(),
            "rootNamespace: mesh-root\nenableAutoMtls: false\n".to_string(),
        )]));
        let m = MeshConfig::from_config_map(&cm).unwrap().unwrap();
        assert_eq!(m.root_namespace, "mesh-root");
        assert!(!m.enable_auto_mtls);
        cm.data = Some(BTreeMap::from([(
            "mesh".to_string(),
            "nope: 1\n".to_string(),
        )]));
        let e = MeshConfig::from_config_map(&cm).unwrap_err();
        assert!(e.location.unwrap().file.contains("istio-system/istio"));
    }

    const CONFIG_MAP_FILE: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: istio\n  namespace: istio-system\ndata:\n  meshNetworks: 'networks: {}'\n  mesh: |-\n    accessLogFile: /dev/stdout\n    defaultConfig:\n      discoveryAddress: x:1\n    enableAutoMTLS: false\n";

    #[test]
    fn config_map_among_resources_and_files() {
        let ok = CONFIG_MAP_FILE.replace("enableAutoMTLS", "enableAutoMtls");
        let docs = parse_documents("cm.yaml", &ok).unwrap();
        let Ok(Parsed::Resource(r)) = Resource::from_document(&docs[0], "default") else {
            panic!()
        };
        let resources = vec![*r];
        assert!(MeshConfig::from_resources(&resources, "other").is_none());
        let m = MeshConfig::from_resources(&resources, "istio-system")
            .unwrap()
            .unwrap();
        assert_eq!(m.access_log_file, "/dev/stdout");
        assert_eq!(m.default_config.discovery_address, "x:1");

        // The error points into the ConfigMap's file, at the misspelt field.
        let docs = parse_documents("cm.yaml", CONFIG_MAP_FILE).unwrap();
        let Ok(Parsed::Resource(r)) = Resource::from_document(&docs[0], "default") else {
            panic!()
        };
        let e = MeshConfig::from_resources(&[*r], "istio-system")
            .unwrap()
            .unwrap_err();
        let loc = e.location.clone().unwrap();
        assert_eq!(
            (&*loc.file, loc.line, loc.column),
            ("cm.yaml", 12, 5),
            "{e}"
        );
        assert_eq!(e.field, "data.mesh");
        assert!(e.message.contains("enableAutoMTLS"), "{}", e.message);
        assert_eq!(e.resource.as_ref().unwrap().name, "istio");

        // Files: plain mesh YAML, the ConfigMap form, and a missing file.
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("mesh.yaml");
        std::fs::write(&plain, "rootNamespace: root\n").unwrap();
        assert_eq!(
            MeshConfig::from_file(&plain).unwrap().root_namespace,
            "root"
        );
        let cm = dir.path().join("cm.yaml");
        std::fs::write(&cm, &ok).unwrap();
        assert_eq!(
            MeshConfig::from_file(&cm).unwrap().access_log_file,
            "/dev/stdout"
        );
        std::fs::write(&cm, CONFIG_MAP_FILE).unwrap();
        let e = MeshConfig::from_file(&cm).unwrap_err();
        assert_eq!(e.location.unwrap().line, 12);
        assert!(MeshConfig::from_file(dir.path().join("none.yaml")).is_err());
    }

    #[test]
    fn validation_rules() {
        let issues = |text: &str| -> Vec<(Severity, String, String)> {
            mesh(text)
                .check()
                .into_iter()
                .map(|i| (i.severity, i.path, i.message))
                .collect()
        };
        let has = |text: &str, sev: Severity, path: &str, needle: &str| {
            let all = issues(text);
            assert!(
                all.iter()
                    .any(|(s, p, m)| *s == sev && p == path && m.contains(needle)),
                "expected {sev:?} at {path} containing {needle:?}, got {all:#?}"
            );
        };
        use Severity::{Error, Warning};
        has(
            "extensionProviders:\n- name: a\n  envoyExtAuthzHttp: {service: a.b}\n",
            Error,
            "extensionProviders[0].envoyExtAuthzHttp.port",
            "out of range",
        );
        has(
            "extensionProviders:\n- name: a\n  prometheus: {}\n- name: a\n  prometheus: {}\n",
            Error,
            "extensionProviders[1].name",
            "duplicate",
        );
        has(
            "extensionProviders:\n- name: a\n",
            Error,
            "extensionProviders[0]",
            "sets no provider",
        );
        has("extensionProviders:\n- name: a\n  prometheus: {}\n  zipkin: {service: z, port: 9411}\n", Error, "extensionProviders[0]", "several providers");
        has("extensionProviders:\n- name: a\n  envoyExtAuthzGrpc: {service: a, port: 1, statusOnError: nope}\n", Error, "extensionProviders[0].envoyExtAuthzGrpc.statusOnError", "HTTP status");
        has(
            "defaultProviders: {tracing: [nothere]}\n",
            Error,
            "defaultProviders.tracing[0]",
            "not defined",
        );
        has("connectTimeout: 0s\n", Error, "connectTimeout", "too short");
        has(
            "defaultServiceExportTo: [\".\", \"*\"]\n",
            Error,
            "defaultServiceExportTo[1]",
            "cannot be combined",
        );
        has(
            "rootNamespace: Bad_NS\n",
            Error,
            "rootNamespace",
            "DNS-1123",
        );
        has(
            "defaultConfig: {discoveryAddress: istiod}\n",
            Error,
            "defaultConfig.discoveryAddress",
            "host:port",
        );
        has(
            "defaultConfig: {tracing: {sampling: 101}}\n",
            Error,
            "defaultConfig.tracing.sampling",
            "out of range",
        );
        has(
            "defaultConfig: {drainDuration: 100ms}\n",
            Error,
            "defaultConfig.drainDuration",
            "at least 1s",
        );
        has(
            "meshMTLS: {ecdhCurves: [P-256]}\n",
            Warning,
            "meshMTLS.ecdhCurves",
            "does not support",
        );
        has(
            "tlsDefaults: {cipherSuites: [NOT-A-CIPHER]}\n",
            Warning,
            "tlsDefaults.cipherSuites[0]",
            "unsupported",
        );
        has(
            "tlsDefaults: {ecdhCurves: [P-999]}\n",
            Warning,
            "tlsDefaults.ecdhCurves[0]",
            "unrecognized",
        );
        has(
            "compliancePolicy: fips\n",
            Error,
            "compliancePolicy",
            "fips-140-2",
        );
        has(
            "defaultConfig: {discoveryAdress: x}\n",
            Warning,
            "defaultConfig.discoveryAdress",
            "did you mean \"discoveryAddress\"",
        );
        has(
            "defaultConfig: {tracing: {samplng: 1}}\n",
            Warning,
            "defaultConfig.tracing.samplng",
            "did you mean \"sampling\"",
        );
        assert!(issues("defaultConfig: {fileFlushInterval: 1s}\n").is_empty());
        has(
            "caCertificates:\n- certSigners: [a]\n",
            Error,
            "caCertificates[0]",
            "exactly one",
        );
    }
}
