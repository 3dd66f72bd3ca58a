//! Tracing for one proxy: where its spans go, how many requests it samples, which tags spans
//! carry. Istio's Telemetry API merged from the least to the most specific level (root
//! namespace → the proxy's namespace → a Telemetry selecting the workload), then MeshConfig
//! `defaultProviders.tracing`, then the legacy `defaultConfig.tracing.zipkin.address`.
//!
//! Pure decision logic shared by the proxy (which creates, propagates and exports spans in
//! `trellis_proxy::telemetry`) and `proxy-config`. Does not open connections.
//!
//! Istio's rules followed here:
//! - one Telemetry per level counts (the oldest when several select the same proxy);
//! - a more specific level overrides `providers`, `randomSamplingPercentage`,
//!   `disableSpanReporting` and `useRequestIdForTraceSampling` when it sets them, and adds
//!   its `customTags` to the inherited ones;
//! - `match.mode` splits client (outbound, and gateways) from server (sidecar inbound) spans;
//! - only the first provider is used (Envoy has one tracer per listener); providers that are
//!   neither `zipkin` nor `opentelemetry` are reported and ignored;
//! - sampling defaults to `defaultConfig.tracing.sampling`, 1% when unset.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::Serialize;
use trellis_api::mesh::ExtensionProvider;
use trellis_api::telemetry::{CustomTag, Telemetry, TracingRule, WorkloadMode};
use trellis_api::{MeshConfig, Object, Resource};

use crate::authz::{creation_order, GATEWAY_NAME_LABEL};
use crate::compile::ProxyTarget;
use crate::config::EndpointAddress;
use crate::registry::ServiceRegistry;

/// Longest `http.url` tag when neither the provider nor the mesh sets one (Envoy's default).
const DEFAULT_MAX_TAG_LENGTH: usize = 256;

/// Tracing of one proxy, per direction. `None`: no spans and no trace headers generated.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TracingSettings {
    /// Outbound requests of sidecars, and every request of gateways (Istio's CLIENT mode).
    pub client: Option<Tracer>,
    /// Inbound requests of sidecars (SERVER mode).
    pub server: Option<Tracer>,
}

impl TracingSettings {
    pub fn is_empty(&self) -> bool {
        self.client.is_none() && self.server.is_none()
    }
}

/// How one direction traces.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Tracer {
    /// The extension provider's name.
    pub provider: String,
    pub exporter: TraceExporter,
    /// Percentage (0-100) of new traces sampled; an incoming sampling decision is kept.
    pub sampling: f64,
    /// `disableSpanReporting`: trace headers are still propagated, no span is sent.
    pub report: bool,
    pub custom_tags: BTreeMap<String, SpanTag>,
    /// The `localEndpoint` / `service.name` of spans (Istio's APP_LABEL_AND_NAMESPACE).
    pub service_name: String,
    /// Longest tag value (`http.url` in particular).
    pub max_tag_length: usize,
    /// Istio's own tags (`istio.canonical_service`, `istio.namespace`, ...).
    pub istio_tags: bool,
}

/// Where and how spans are sent.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TraceExporter {
    pub protocol: TraceProtocol,
    /// The provider's `service` (without a `namespace/` prefix) and port.
    pub host: String,
    pub port: u16,
    /// Endpoints from the service registry when the service is known there; empty means the
    /// host is resolved by DNS when spans are sent.
    pub addresses: Vec<SocketAddr>,
}

/// The collector protocol, which also decides the propagation headers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum TraceProtocol {
    /// Zipkin JSON v2 (`POST /api/v2/spans`); B3 headers (`x-b3-*`).
    Zipkin {
        /// `enable64bitTraceId`: new trace ids are 64-bit.
        trace_id_64bit: bool,
    },
    /// OTLP over gRPC (`TraceService/Export`); W3C `traceparent`.
    OtlpGrpc,
    /// OTLP over HTTP (protobuf `POST path`); W3C `traceparent`.
    OtlpHttp { path: String },
}

/// A custom span tag's value source.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum SpanTag {
    Literal(String),
    /// The proxy's environment variable, read once when the tracer starts.
    Environment {
        name: String,
        default: Option<String>,
    },
    /// A request header.
    Header {
        name: String,
        default: Option<String>,
    },
}

impl SpanTag {
    /// The tag a Telemetry `customTags` entry describes (`None` when it sets no source).
    fn from_custom(t: &CustomTag) -> Option<SpanTag> {
        if let Some(l) = &t.literal {
            Some(SpanTag::Literal(l.value.clone()))
        } else if let Some(e) = &t.environment {
            Some(SpanTag::Environment {
                name: e.name.clone(),
                default: e.default_value.clone(),
            })
        } else {
            t.header.as_ref().map(|h| SpanTag::Header {
                name: h.name.to_ascii_lowercase(),
                default: h.default_value.clone(),
            })
        }
    }
}

/// The Telemetry resources that apply to `target`, least specific first (mesh, namespace,
/// workload), one per level (the oldest).
fn levels<'a>(
    resources: &'a [Resource],
    root: &str,
    target: &ProxyTarget,
) -> Vec<(&'a Resource, &'a Telemetry)> {
    let mut mesh: Option<(&Resource, &Telemetry)> = None;
    let mut namespace: Option<(&Resource, &Telemetry)> = None;
    let mut workload: Option<(&Resource, &Telemetry)> = None;
    let older = |cur: &Option<(&Resource, &Telemetry)>, r: &Resource| {
        cur.is_none_or(|(c, _)| creation_order(r) < creation_order(c))
    };
    for r in resources {
        let Object::Telemetry(t) = &r.object else {
            continue;
        };
        let labels = t
            .selector
            .as_ref()
            .map(|s| &s.match_labels)
            .filter(|l| !l.is_empty());
        let gateway_refs: Vec<&str> = t
            .target_ref
            .iter()
            .chain(&t.target_refs)
            .filter(|r| r.kind == "Gateway")
            .map(|r| r.name.as_str())
            .collect();
        let targeted = t.target_ref.is_some() || !t.target_refs.is_empty();
        let slot = if targeted {
            // targetRefs select Kubernetes Gateways by their generated workload label.
            let gateway = target.labels.get(GATEWAY_NAME_LABEL).map(String::as_str);
            if r.ns() == target.namespace && gateway.is_some_and(|g| gateway_refs.contains(&g)) {
                &mut workload
            } else {
                continue;
            }
        } else if let Some(labels) = labels {
            if r.ns() == target.namespace
                && labels.iter().all(|(k, v)| target.labels.get(k) == Some(v))
            {
                &mut workload
            } else {
                continue;
            }
        } else if r.ns() == root {
            &mut mesh
        } else if r.ns() == target.namespace {
            &mut namespace
        } else {
            continue;
        };
        if older(slot, r) {
            *slot = Some((r, t.as_ref()));
        }
    }
    [mesh, namespace, workload].into_iter().flatten().collect()
}

/// What the merged rules say for one direction.
#[derive(Default)]
struct Merged<'a> {
    providers: Option<&'a [trellis_api::telemetry::ProviderRef]>,
    sampling: Option<f64>,
    disable_reporting: Option<bool>,
    istio_tags: Option<bool>,
    custom_tags: BTreeMap<String, &'a CustomTag>,
}

fn merge<'a>(levels: &[(&Resource, &'a Telemetry)], mode: WorkloadMode) -> Merged<'a> {
    let mut m = Merged::default();
    let rules = levels
        .iter()
        .flat_map(|(_, t)| t.tracing.iter())
        .filter(|r: &&TracingRule| r.applies_to(mode));
    for rule in rules {
        if !rule.providers.is_empty() {
            m.providers = Some(&rule.providers);
        }
        if rule.random_sampling_percentage.is_some() {
            m.sampling = rule.random_sampling_percentage;
        }
        if rule.disable_span_reporting.is_some() {
            m.disable_reporting = rule.disable_span_reporting;
        }
        if rule.enable_istio_tags.is_some() {
            m.istio_tags = rule.enable_istio_tags;
        }
        for (k, v) in &rule.custom_tags {
            m.custom_tags.insert(k.clone(), v);
        }
    }
    m
}

/// Resolves the tracing of `target`. Problems (unknown or unsupported providers) are passed
/// to `warn`; they disable tracing for that direction rather than failing the compile.
pub fn resolve(
    resources: &[Resource],
    mesh: &MeshConfig,
    target: &ProxyTarget,
    registry: &ServiceRegistry,
    warn: &mut dyn FnMut(String),
) -> TracingSettings {
    let levels = levels(resources, &mesh.root_namespace, target);
    let legacy = mesh.default_config.tracing.as_ref();
    let mut resolve_mode = |mode: WorkloadMode| -> Option<Tracer> {
        let m = merge(&levels, mode);
        let named: Vec<String> = match m.providers {
            Some(p) => p.iter().map(|p| p.name.clone()).collect(),
            None => mesh.default_providers.tracing.clone(),
        };
        let (provider, exporter, max_tag) = if let Some(name) = named.first() {
            if named.len() > 1 {
                warn(format!(
                    "Telemetry tracing names {} providers; only the first ({name}) is used",
                    named.len()
                ));
            }
            let Some(p) = mesh.extension_provider(name) else {
                warn(format!(
                    "tracing provider {name:?} is not an extensionProvider of the mesh config: no spans are reported"
                ));
                return None;
            };
            let (exporter, max_tag) = exporter_of(p, registry, &target.namespace, warn)?;
            (name.clone(), exporter, max_tag)
        } else {
            // No Telemetry provider: MeshConfig's legacy tracer, when tracing is enabled.
            let addr = legacy
                .and_then(|t| t.zipkin.as_ref())
                .map(|z| z.address.as_str())
                .filter(|a| !a.is_empty() && mesh.enable_tracing)?;
            let (host, port) = addr.rsplit_once(':')?;
            let port: u16 = port.parse().ok()?;
            (
                "zipkin".to_string(),
                exporter_for_host(
                    TraceProtocol::Zipkin {
                        trace_id_64bit: false,
                    },
                    host,
                    port,
                    registry,
                    &target.namespace,
                ),
                None,
            )
        };
        let sampling = m
            .sampling
            .unwrap_or_else(|| legacy.map_or(1.0, |t| t.sampling()));
        let custom_tags = m
            .custom_tags
            .iter()
            .filter_map(|(k, v)| SpanTag::from_custom(v).map(|t| (k.clone(), t)))
            .collect();
        Some(Tracer {
            provider,
            exporter,
            sampling: sampling.clamp(0.0, 100.0),
            report: !m.disable_reporting.unwrap_or(false),
            custom_tags,
            service_name: service_name(target),
            max_tag_length: max_tag
                .or_else(|| {
                    legacy
                        .and_then(|t| t.max_path_tag_length)
                        .map(|l| l as usize)
                })
                .unwrap_or(DEFAULT_MAX_TAG_LENGTH),
            istio_tags: m.istio_tags.unwrap_or(true),
        })
    };
    let client = resolve_mode(WorkloadMode::Client);
    let server = resolve_mode(WorkloadMode::Server);
    TracingSettings { client, server }
}

/// The exporter of a zipkin or opentelemetry provider, and its `maxTagLength`.
fn exporter_of(
    p: &ExtensionProvider,
    registry: &ServiceRegistry,
    namespace: &str,
    warn: &mut dyn FnMut(String),
) -> Option<(TraceExporter, Option<usize>)> {
    let (protocol, service, port, max_tag) = if let Some(z) = &p.zipkin {
        (
            TraceProtocol::Zipkin {
                trace_id_64bit: z.enable_64bit_trace_id.unwrap_or(false),
            },
            &z.service,
            z.port,
            z.max_tag_length,
        )
    } else if let Some(o) = &p.opentelemetry {
        let protocol = match &o.http {
            Some(http) => TraceProtocol::OtlpHttp {
                path: http
                    .get("path")
                    .and_then(|p| p.as_str())
                    .filter(|p| !p.is_empty())
                    .map_or_else(
                        || "/v1/traces".to_string(),
                        |p| {
                            if p.starts_with('/') {
                                p.to_string()
                            } else {
                                format!("/{p}")
                            }
                        },
                    ),
            },
            None => TraceProtocol::OtlpGrpc,
        };
        (protocol, &o.service, o.port, o.max_tag_length)
    } else {
        let kind = p.kinds().first().copied().unwrap_or("unknown");
        warn(format!(
            "tracing provider {:?} is a {kind} provider, which Trellis does not export to (zipkin and opentelemetry are supported): no spans are reported",
            p.name
        ));
        return None;
    };
    let Ok(port) = u16::try_from(port) else {
        warn(format!(
            "tracing provider {:?}: port {port} is out of range",
            p.name
        ));
        return None;
    };
    // `service` may be written `namespace/host`.
    let host = service
        .rsplit_once('/')
        .map_or(service.as_str(), |(_, h)| h);
    Some((
        exporter_for_host(protocol, host, port, registry, namespace),
        max_tag.map(|l| l as usize),
    ))
}

fn exporter_for_host(
    protocol: TraceProtocol,
    host: &str,
    port: u16,
    registry: &ServiceRegistry,
    namespace: &str,
) -> TraceExporter {
    let host = host.to_ascii_lowercase();
    let addresses = registry
        .lookup(&host, namespace)
        .or_else(|| registry.services().iter().find(|s| s.host == host))
        .map(|s| {
            s.endpoints(port, None)
                .into_iter()
                .filter_map(|e| match e.address {
                    EndpointAddress::Socket(a) => Some(a),
                    EndpointAddress::Dns { .. } => None,
                })
                .collect()
        })
        .unwrap_or_default();
    TraceExporter {
        protocol,
        host,
        port,
        addresses,
    }
}

/// `<app label or workload name>.<namespace>`, Istio's default `tracingServiceName`.
fn service_name(target: &ProxyTarget) -> String {
    let app = target
        .labels
        .get("app")
        .or_else(|| target.labels.get("app.kubernetes.io/name"))
        .map_or(target.name.as_str(), String::as_str);
    format!("{app}.{}", target.namespace)
}
