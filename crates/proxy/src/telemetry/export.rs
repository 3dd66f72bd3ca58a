//! Sending spans to collectors: one background task per collector (Zipkin JSON v2 over HTTP,
//! OTLP over gRPC or HTTP), fed by a bounded queue. A full queue drops spans (counted and
//! logged) rather than slowing requests; a collector that is down loses the batch, is logged
//! at most once a minute per collector, and never affects traffic.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message;
use tokio::sync::mpsc;
use trellis_model::telemetry::{TraceExporter, TraceProtocol};

use crate::telemetry::span::{otlp_request, zipkin_json, FinishedSpan};

/// Spans waiting per collector before new ones are dropped.
const QUEUE: usize = 4096;
/// Most spans per export call.
const MAX_BATCH: usize = 512;
/// How long the first span of a batch waits for company.
const FLUSH_AFTER: Duration = Duration::from_millis(100);
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// The queue into one collector's export task (started with the first span).
pub struct SpanSender {
    tx: mpsc::Sender<FinishedSpan>,
    pending: Mutex<Option<(mpsc::Receiver<FinishedSpan>, TraceExporter)>>,
    started: AtomicBool,
    dropped: AtomicU64,
}

impl SpanSender {
    fn new(exporter: TraceExporter) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        SpanSender {
            tx,
            pending: Mutex::new(Some((rx, exporter))),
            started: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
        }
    }

    /// Queues a span; never waits.
    pub fn send(&self, span: FinishedSpan) {
        if !self.started.load(Ordering::Acquire) {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((rx, exporter)) = pending.take() {
                match tokio::runtime::Handle::try_current() {
                    Ok(h) => {
                        h.spawn(run(exporter, rx));
                        self.started.store(true, Ordering::Release);
                    }
                    Err(_) => {
                        *pending = Some((rx, exporter));
                        return;
                    }
                }
            }
        }
        if self.tx.try_send(span).is_err() {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!("tracing: span queue full, {n} spans dropped so far");
            }
        }
    }
}

/// Collector queues by exporter, shared by every config snapshot so a reload keeps them.
#[derive(Default)]
pub struct Exporters {
    senders: Mutex<Vec<(TraceExporter, Arc<SpanSender>)>>,
}

impl Exporters {
    /// The queue for `exporter`, created on first use.
    pub fn sender(&self, exporter: &TraceExporter) -> Arc<SpanSender> {
        let mut senders = self.senders.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, s)) = senders.iter().find(|(e, _)| e == exporter) {
            return s.clone();
        }
        let s = Arc::new(SpanSender::new(exporter.clone()));
        senders.push((exporter.clone(), s.clone()));
        s
    }
}

async fn run(exporter: TraceExporter, mut rx: mpsc::Receiver<FinishedSpan>) {
    let mut sink = Sink::new(exporter);
    let mut batch = Vec::with_capacity(64);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        let deadline = tokio::time::Instant::now() + FLUSH_AFTER;
        while batch.len() < MAX_BATCH {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(s)) => batch.push(s),
                _ => break,
            }
        }
        sink.export(&batch).await;
        batch.clear();
    }
}

/// One collector's connection state.
struct Sink {
    exporter: TraceExporter,
    grpc: Option<TraceServiceClient<tonic::transport::Channel>>,
    next: usize,
    last_error_log: Option<Instant>,
}

impl Sink {
    fn new(exporter: TraceExporter) -> Self {
        Sink {
            exporter,
            grpc: None,
            next: 0,
            last_error_log: None,
        }
    }

    async fn address(&mut self) -> Result<SocketAddr, String> {
        let e = &self.exporter;
        if !e.addresses.is_empty() {
            self.next = self.next.wrapping_add(1);
            return Ok(e.addresses[self.next % e.addresses.len()]);
        }
        tokio::net::lookup_host((e.host.as_str(), e.port))
            .await
            .map_err(|err| format!("resolve {}: {err}", e.host))?
            .next()
            .ok_or_else(|| format!("resolve {}: no address", e.host))
    }

    async fn export(&mut self, spans: &[FinishedSpan]) {
        let result = tokio::time::timeout(EXPORT_TIMEOUT, self.try_export(spans))
            .await
            .unwrap_or_else(|_| Err(format!("timed out after {EXPORT_TIMEOUT:?}")));
        match result {
            Ok(()) => tracing::debug!(
                "tracing: exported {} spans to {}:{}",
                spans.len(),
                self.exporter.host,
                self.exporter.port
            ),
            Err(e) => {
                self.grpc = None;
                if self
                    .last_error_log
                    .is_none_or(|t| t.elapsed() > Duration::from_secs(60))
                {
                    self.last_error_log = Some(Instant::now());
                    tracing::warn!(
                        "tracing: {} spans to {}:{} lost: {e}",
                        spans.len(),
                        self.exporter.host,
                        self.exporter.port
                    );
                }
            }
        }
    }

    async fn try_export(&mut self, spans: &[FinishedSpan]) -> Result<(), String> {
        match self.exporter.protocol.clone() {
            TraceProtocol::Zipkin { .. } => {
                let addr = self.address().await?;
                post(
                    addr,
                    &self.exporter.host,
                    "/api/v2/spans",
                    "application/json",
                    zipkin_json(spans),
                )
                .await
            }
            TraceProtocol::OtlpHttp { path } => {
                let addr = self.address().await?;
                let body = otlp_request(spans).encode_to_vec();
                post(
                    addr,
                    &self.exporter.host,
                    &path,
                    "application/x-protobuf",
                    body,
                )
                .await
            }
            TraceProtocol::OtlpGrpc => {
                if self.grpc.is_none() {
                    let addr = self.address().await?;
                    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                        .map_err(|e| e.to_string())?
                        .connect_timeout(EXPORT_TIMEOUT)
                        .connect_lazy();
                    self.grpc = Some(TraceServiceClient::new(channel));
                }
                let client = self.grpc.as_mut().expect("set above");
                client
                    .export(otlp_request(spans))
                    .await
                    .map(|_| ())
                    .map_err(|s| format!("OTLP export: {} {}", s.code(), s.message()))
            }
        }
    }
}

/// One HTTP/1.1 POST on a fresh connection; a non-2xx answer is an error.
async fn post(
    addr: SocketAddr,
    host: &str,
    path: &str,
    content_type: &'static str,
    body: Vec<u8>,
) -> Result<(), String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = http::Request::post(path)
        .header(http::header::HOST, host)
        .header(http::header::CONTENT_TYPE, content_type)
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let _ = resp.into_body().collect().await;
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("collector answered {status}"))
    }
}
