//! A finished span and its encodings: Zipkin JSON v2 and the OTLP `ExportTraceServiceRequest`.
//!
//! Pure data and encoding (tested on their own); sending is `telemetry::export`'s business.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    span, status, ResourceSpans, ScopeSpans, Span, Status,
};

/// Which side of a call the span describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpanKind {
    /// The proxy calling an upstream (sidecar outbound, gateway).
    Client,
    /// The proxy receiving a call for its workload (sidecar inbound).
    Server,
}

/// One span, ready to export.
#[derive(Clone, Debug)]
pub struct FinishedSpan {
    pub trace_id: u128,
    pub span_id: u64,
    pub parent_id: Option<u64>,
    /// Operation name (`service-gateway.alphintra.svc.cluster.local:8080/*`).
    pub name: String,
    pub kind: SpanKind,
    pub start: SystemTime,
    pub duration: Duration,
    pub tags: Vec<(String, String)>,
    /// 5xx or a local failure (Envoy's `error=true`).
    pub error: bool,
    pub service_name: Arc<str>,
    /// The upstream (client spans) or the caller (server spans).
    pub remote: Option<SocketAddr>,
}

fn micros(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros() as u64
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64
}

fn trace_id_hex(id: u128) -> String {
    if id >> 64 == 0 {
        format!("{id:016x}")
    } else {
        format!("{id:032x}")
    }
}

/// Zipkin API v2 JSON (`POST /api/v2/spans` body).
pub fn zipkin_json(spans: &[FinishedSpan]) -> Vec<u8> {
    let list: Vec<serde_json::Value> = spans
        .iter()
        .map(|s| {
            let mut tags: serde_json::Map<String, serde_json::Value> = s
                .tags
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .collect();
            if s.error {
                tags.insert("error".into(), "true".into());
            }
            let mut o = serde_json::json!({
                "traceId": trace_id_hex(s.trace_id),
                "id": format!("{:016x}", s.span_id),
                "name": s.name,
                "kind": match s.kind { SpanKind::Client => "CLIENT", SpanKind::Server => "SERVER" },
                "timestamp": micros(s.start),
                "duration": s.duration.as_micros().max(1) as u64,
                "localEndpoint": { "serviceName": &*s.service_name },
                "tags": tags,
            });
            if let Some(p) = s.parent_id {
                o["parentId"] = format!("{p:016x}").into();
            }
            if let Some(r) = s.remote {
                let ip = match r.ip() {
                    std::net::IpAddr::V4(ip) => ("ipv4", ip.to_string()),
                    std::net::IpAddr::V6(ip) => ("ipv6", ip.to_string()),
                };
                o["remoteEndpoint"] = serde_json::json!({ ip.0: ip.1, "port": r.port() });
            }
            o
        })
        .collect();
    serde_json::to_vec(&list).unwrap_or_else(|_| b"[]".to_vec())
}

fn string_kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.to_string())),
        }),
        ..Default::default()
    }
}

/// The OTLP export request for `spans`, one `ResourceSpans` per service name.
pub fn otlp_request(spans: &[FinishedSpan]) -> ExportTraceServiceRequest {
    let mut resource_spans: Vec<ResourceSpans> = Vec::new();
    let mut services: Vec<&str> = Vec::new();
    for s in spans {
        let i = match services.iter().position(|n| *n == &*s.service_name) {
            Some(i) => i,
            None => {
                services.push(&s.service_name);
                resource_spans.push(ResourceSpans {
                    resource: Some(Resource {
                        attributes: vec![string_kv("service.name", &s.service_name)],
                        ..Default::default()
                    }),
                    scope_spans: vec![ScopeSpans {
                        scope: Some(InstrumentationScope {
                            name: "trellis-proxy".into(),
                            version: env!("CARGO_PKG_VERSION").into(),
                            ..Default::default()
                        }),
                        spans: Vec::new(),
                        schema_url: String::new(),
                    }],
                    schema_url: String::new(),
                });
                resource_spans.len() - 1
            }
        };
        let mut attributes: Vec<KeyValue> = s.tags.iter().map(|(k, v)| string_kv(k, v)).collect();
        if let Some(r) = s.remote {
            attributes.push(string_kv("net.peer.ip", &r.ip().to_string()));
        }
        let start = nanos(s.start);
        resource_spans[i].scope_spans[0].spans.push(Span {
            trace_id: s.trace_id.to_be_bytes().to_vec(),
            span_id: s.span_id.to_be_bytes().to_vec(),
            parent_span_id: s
                .parent_id
                .map_or_else(Vec::new, |p| p.to_be_bytes().to_vec()),
            name: s.name.clone(),
            kind: match s.kind {
                SpanKind::Client => span::SpanKind::Client,
                SpanKind::Server => span::SpanKind::Server,
            } as i32,
            start_time_unix_nano: start,
            end_time_unix_nano: start + s.duration.as_nanos() as u64,
            attributes,
            status: Some(Status {
                message: String::new(),
                code: if s.error {
                    status::StatusCode::Error
                } else {
                    status::StatusCode::Unset
                } as i32,
            }),
            ..Default::default()
        });
    }
    ExportTraceServiceRequest { resource_spans }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(kind: SpanKind, parent: Option<u64>) -> FinishedSpan {
        FinishedSpan {
            trace_id: 0x4bf92f3577b34da6a3ce929d0e0e4736,
            span_id: 0x00f067aa0ba902b7,
            parent_id: parent,
            name: "svc.ns.svc.cluster.local:80/*".into(),
            kind,
            start: SystemTime::UNIX_EPOCH + Duration::from_micros(1_700_000_000_000_123),
            duration: Duration::from_micros(1500),
            tags: vec![("http.status_code".into(), "503".into())],
            error: true,
            service_name: "gw.istio-system".into(),
            remote: Some("10.0.0.7:8080".parse().unwrap()),
        }
    }

    #[test]
    fn zipkin_v2_fields() {
        let body = zipkin_json(&[span(SpanKind::Client, Some(0xabc))]);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let s = &v[0];
        assert_eq!(s["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(s["id"], "00f067aa0ba902b7");
        assert_eq!(s["parentId"], "0000000000000abc");
        assert_eq!(s["kind"], "CLIENT");
        assert_eq!(s["timestamp"], 1_700_000_000_000_123u64);
        assert_eq!(s["duration"], 1500);
        assert_eq!(s["localEndpoint"]["serviceName"], "gw.istio-system");
        assert_eq!(s["remoteEndpoint"]["ipv4"], "10.0.0.7");
        assert_eq!(s["tags"]["error"], "true");
        assert_eq!(s["tags"]["http.status_code"], "503");
        let root = zipkin_json(&[span(SpanKind::Server, None)]);
        let v: serde_json::Value = serde_json::from_slice(&root).unwrap();
        assert!(v[0].get("parentId").is_none());
        assert_eq!(v[0]["kind"], "SERVER");
    }

    #[test]
    fn otlp_groups_by_service_and_keeps_ids() {
        let mut other = span(SpanKind::Server, None);
        other.service_name = "reviews.bookinfo".into();
        let req = otlp_request(&[
            span(SpanKind::Client, Some(7)),
            other,
            span(SpanKind::Client, None),
        ]);
        assert_eq!(req.resource_spans.len(), 2);
        let first = &req.resource_spans[0].scope_spans[0].spans;
        assert_eq!(first.len(), 2);
        assert_eq!(
            first[0].trace_id,
            0x4bf92f3577b34da6a3ce929d0e0e4736u128.to_be_bytes()
        );
        assert_eq!(first[0].parent_span_id, 7u64.to_be_bytes());
        assert!(first[1].parent_span_id.is_empty());
        assert_eq!(first[0].kind, span::SpanKind::Client as i32);
        assert_eq!(
            first[0].end_time_unix_nano - first[0].start_time_unix_nano,
            1_500_000
        );
        assert_eq!(
            first[0].status.as_ref().unwrap().code,
            status::StatusCode::Error as i32
        );
    }
}
