//! Distributed tracing (Istio's Telemetry API `tracing`): every HTTP request through a proxy
//! that has a tracer gets this proxy's span. The caller's trace context is continued (or a
//! new trace started), the sampling decision is made once per trace (the caller's decision
//! wins; `x-envoy-force-trace` forces one), the next hop receives this span as its parent,
//! and sampled spans are exported when the response ends.
//!
//! - `context`: reading and writing B3 / W3C headers (pure);
//! - `span`: the finished span and its Zipkin / OTLP encodings (pure);
//! - `export`: the per-collector queues and export tasks.
//!
//! What a proxy traces is decided by `trellis_model::telemetry` at compile time; this module
//! does not read Telemetry resources.

pub mod context;
pub mod export;
pub mod span;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::SystemTime;

use http::HeaderMap;
use rand::Rng;
use trellis_model::config::ProxyConfig;
use trellis_model::telemetry::{SpanTag, TraceProtocol, Tracer};

use crate::http::access_log::AccessLog;
pub use context::Propagation;
use context::SpanContext;
pub use export::Exporters;
use export::SpanSender;
pub use span::{FinishedSpan, SpanKind};

/// The tracers of one config snapshot.
#[derive(Default)]
pub struct Tracers {
    client: Option<Arc<ActiveTracer>>,
    server: Option<Arc<ActiveTracer>>,
}

impl Tracers {
    /// Tracers for `config`, sending through `exporters` (shared across reloads).
    pub fn new(config: &ProxyConfig, exporters: &Exporters) -> Self {
        let make = |t: &Option<Tracer>, kind| {
            t.as_ref()
                .map(|t| Arc::new(ActiveTracer::new(t, kind, config, exporters)))
        };
        Tracers {
            client: make(&config.tracing.client, SpanKind::Client),
            server: make(&config.tracing.server, SpanKind::Server),
        }
    }

    /// The tracer for a request on an inbound (sidecar server side) or other listener.
    pub fn get(&self, inbound: bool) -> Option<&Arc<ActiveTracer>> {
        if inbound {
            self.server.as_ref()
        } else {
            self.client.as_ref()
        }
    }
}

/// One direction's tracer, with its tags resolved.
pub struct ActiveTracer {
    kind: SpanKind,
    propagation: Propagation,
    trace_id_64bit: bool,
    /// `sampling` percent as a fraction of `u32::MAX` (one integer compare per request).
    threshold: u64,
    sink: Option<Arc<SpanSender>>,
    service_name: Arc<str>,
    max_tag_length: usize,
    /// Literal and environment tags, and Istio's, resolved once.
    fixed_tags: Vec<(String, String)>,
    /// Header tags: (tag, lowercase header name, default).
    header_tags: Vec<(String, http::HeaderName, Option<String>)>,
}

impl ActiveTracer {
    fn new(t: &Tracer, kind: SpanKind, config: &ProxyConfig, exporters: &Exporters) -> Self {
        let (propagation, trace_id_64bit) = match t.exporter.protocol {
            TraceProtocol::Zipkin { trace_id_64bit } => (Propagation::B3, trace_id_64bit),
            _ => (Propagation::W3c, false),
        };
        let mut fixed_tags = vec![
            ("component".to_string(), "proxy".to_string()),
            ("node_id".to_string(), config.node.id.clone()),
        ];
        if t.istio_tags {
            let labels = &config.node.labels;
            let name = config.node.id.split('.').next().unwrap_or_default();
            let canonical = labels
                .get("service.istio.io/canonical-name")
                .or_else(|| labels.get("app.kubernetes.io/name"))
                .or_else(|| labels.get("app"))
                .map_or(name, String::as_str);
            let revision = labels
                .get("service.istio.io/canonical-revision")
                .or_else(|| labels.get("app.kubernetes.io/version"))
                .or_else(|| labels.get("version"))
                .map_or("latest", String::as_str);
            fixed_tags.extend([
                ("istio.canonical_service".into(), canonical.to_string()),
                ("istio.canonical_revision".into(), revision.to_string()),
                ("istio.namespace".into(), config.node.namespace.clone()),
                ("istio.mesh_id".into(), config.mesh.trust_domain.clone()),
            ]);
        }
        let mut header_tags = Vec::new();
        for (name, tag) in &t.custom_tags {
            match tag {
                SpanTag::Literal(v) => fixed_tags.push((name.clone(), v.clone())),
                SpanTag::Environment { name: var, default } => {
                    if let Some(v) = std::env::var(var).ok().or_else(|| default.clone()) {
                        fixed_tags.push((name.clone(), v));
                    }
                }
                SpanTag::Header { name: h, default } => {
                    if let Ok(h) = http::HeaderName::from_bytes(h.as_bytes()) {
                        header_tags.push((name.clone(), h, default.clone()));
                    }
                }
            }
        }
        ActiveTracer {
            kind,
            propagation,
            trace_id_64bit,
            threshold: (t.sampling.clamp(0.0, 100.0) / 100.0 * f64::from(u32::MAX)) as u64,
            sink: t.report.then(|| exporters.sender(&t.exporter)),
            service_name: t.service_name.as_str().into(),
            max_tag_length: t.max_tag_length.max(1),
            fixed_tags,
            header_tags,
        }
    }

    fn sample_new(&self) -> bool {
        let r: u32 = rand::rng().random();
        u64::from(r) < self.threshold
    }

    /// Starts this proxy's span for a request: continues the caller's trace (or starts one),
    /// decides sampling, and writes the context for the next hop into `headers`. Returns the
    /// span to finish when it is sampled and reported.
    pub fn start(
        self: &Arc<Self>,
        headers: &mut HeaderMap,
        request: &RequestFacts<'_>,
    ) -> Option<Box<ActiveSpan>> {
        let incoming = context::read(headers, self.propagation);
        let sampled = if context::forced(headers) {
            true
        } else {
            incoming
                .and_then(|c| c.sampled)
                .unwrap_or_else(|| self.sample_new())
        };
        let mut rng = rand::rng();
        let trace_id = match incoming {
            Some(c) if c.trace_id != 0 => c.trace_id,
            _ if self.trace_id_64bit => u128::from(rng.random::<u64>().max(1)),
            _ => rng.random::<u128>().max(1),
        };
        let ctx = SpanContext {
            trace_id,
            span_id: rng.random::<u64>().max(1),
            parent_id: incoming.and_then(|c| c.span_id),
            sampled,
        };
        context::write(headers, self.propagation, &ctx);
        if !sampled {
            return None;
        }
        self.sink.as_ref()?;
        let mut url = String::with_capacity(request.authority.len() + request.path.len() + 8);
        url.push_str(request.scheme);
        url.push_str("://");
        url.push_str(request.authority);
        url.push_str(request.path);
        truncate(&mut url, self.max_tag_length);
        let header_tags = self
            .header_tags
            .iter()
            .filter_map(|(tag, h, default)| {
                headers
                    .get(h)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
                    .or_else(|| default.clone())
                    .map(|v| (tag.clone(), v))
            })
            .collect();
        Some(Box::new(ActiveSpan {
            tracer: self.clone(),
            ctx,
            start: SystemTime::now(),
            url,
            peer: request.peer,
            listener_port: request.listener_port,
            header_tags,
        }))
    }
}

fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

/// What `ActiveTracer::start` needs to know of the request.
pub struct RequestFacts<'a> {
    pub scheme: &'a str,
    pub authority: &'a str,
    /// Path and query as the client sent them.
    pub path: &'a str,
    pub peer: IpAddr,
    pub listener_port: u16,
}

/// A sampled span in progress; finished with the access log line.
pub struct ActiveSpan {
    tracer: Arc<ActiveTracer>,
    ctx: SpanContext,
    start: SystemTime,
    url: String,
    peer: IpAddr,
    listener_port: u16,
    header_tags: Vec<(String, String)>,
}

impl ActiveSpan {
    /// Ends the span with what the access log recorded, and queues it for export.
    pub fn finish(&self, log: &AccessLog, bytes_in: u64) {
        let t = &*self.tracer;
        let Some(sink) = &t.sink else { return };
        let mut tags = Vec::with_capacity(t.fixed_tags.len() + self.header_tags.len() + 14);
        tags.extend(t.fixed_tags.iter().cloned());
        let hv = |v: &Option<http::HeaderValue>| {
            v.as_ref()
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_string()
        };
        let protocol = match log.version {
            http::Version::HTTP_10 => "HTTP/1.0",
            http::Version::HTTP_2 => "HTTP/2",
            _ => "HTTP/1.1",
        };
        let cluster = log.upstream_cluster.as_deref().unwrap_or("-");
        tags.extend([
            ("guid:x-request-id".to_string(), hv(&log.request_id)),
            ("http.url".to_string(), self.url.clone()),
            ("http.method".to_string(), log.method.to_string()),
            ("http.protocol".to_string(), protocol.to_string()),
            ("http.status_code".to_string(), log.status.to_string()),
            ("downstream_cluster".to_string(), "-".to_string()),
            ("user_agent".to_string(), hv(&log.user_agent)),
            ("peer.address".to_string(), self.peer.to_string()),
            ("request_size".to_string(), bytes_in.to_string()),
            ("response_size".to_string(), log.bytes_out.to_string()),
            ("response_flags".to_string(), log.flags.to_string()),
            ("upstream_cluster".to_string(), cluster.to_string()),
            ("upstream_cluster.name".to_string(), cluster.to_string()),
        ]);
        if let Some(a) = log.upstream_host {
            tags.push(("upstream_address".to_string(), a.to_string()));
        }
        tags.extend(self.header_tags.iter().cloned());
        for (_, v) in &mut tags {
            truncate(v, t.max_tag_length);
        }
        let duration = log.start.elapsed();
        sink.send(FinishedSpan {
            trace_id: self.ctx.trace_id,
            span_id: self.ctx.span_id,
            parent_id: self.ctx.parent_id,
            name: operation_name(
                log.upstream_cluster.as_deref(),
                &log.authority,
                self.listener_port,
            ),
            kind: t.kind,
            start: self.start,
            duration,
            tags,
            error: log.status >= 500 || log.status == 0,
            service_name: t.service_name.clone(),
            remote: match t.kind {
                SpanKind::Client => log.upstream_host,
                SpanKind::Server => Some(SocketAddr::new(self.peer, 0)),
            },
        });
    }
}

/// Istio's operation name: `<service host>:<port>/*` from the outbound cluster
/// (`outbound|8080|stable|svc.ns.svc.cluster.local`), else the request's host and the
/// listener's port.
fn operation_name(cluster: Option<&str>, authority: &str, port: u16) -> String {
    if let Some(c) = cluster {
        let mut parts = c.split('|');
        if let (Some("outbound"), Some(p), Some(_), Some(host)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        {
            if !host.is_empty() {
                return format!("{host}:{p}/*");
            }
        }
    }
    let host = match authority.rsplit_once(':') {
        Some((h, p))
            if !p.is_empty()
                && p.bytes().all(|b| b.is_ascii_digit())
                && (!h.contains(':') || h.ends_with(']')) =>
        {
            h
        }
        _ => authority,
    };
    format!("{host}:{port}/*")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_names() {
        assert_eq!(
            operation_name(
                Some("outbound|8080|stable|service-gateway.alphintra.svc.cluster.local"),
                "api.alphintra.com",
                80
            ),
            "service-gateway.alphintra.svc.cluster.local:8080/*"
        );
        assert_eq!(
            operation_name(Some("inbound|8080||"), "reviews:9080", 9080),
            "reviews:9080/*"
        );
        assert_eq!(operation_name(None, "[::1]:80", 80), "[::1]:80/*");
        assert_eq!(
            operation_name(None, "example.com", 443),
            "example.com:443/*"
        );
    }

    #[test]
    fn truncation_respects_char_boundaries() {
        let mut s = "aé".to_string();
        truncate(&mut s, 2);
        assert_eq!(s, "a");
    }
}
