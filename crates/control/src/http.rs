//! The metrics and debug HTTP server (Istio's 15014):
//! - `GET /metrics`: Prometheus text.
//! - `GET /ready`: 200 once a snapshot is in force.
//! - `GET /debug/syncz`: the sync status of every proxy (JSON, what `proxy-status` reads).
//! - `GET /debug/config_errors`: the last rejected change (JSON, `null` when none).
//! - `GET /debug/resources`: the resources in force: id, type, location.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::core::Core;

pub(crate) async fn serve(socket: TcpListener, core: Arc<Core>, mut stop: watch::Receiver<bool>) {
    loop {
        let (stream, _) = tokio::select! {
            _ = crate::core::stopped(&mut stop) => break,
            accepted = socket.accept() => match accepted {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!("metrics accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let core = core.clone();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let core = core.clone();
                async move { Ok::<_, Infallible>(route(&req, &core)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), svc);
            tokio::select! {
                _ = conn => {}
                _ = crate::core::stopped(&mut stop) => {}
            }
        });
    }
}

fn text(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .body(Full::new(body.into()))
        .unwrap_or_default()
}

fn json(value: &impl Serialize) -> Response<Full<Bytes>> {
    match serde_json::to_vec_pretty(value) {
        Ok(mut b) => {
            b.push(b'\n');
            text(StatusCode::OK, "application/json", b)
        }
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            format!("cannot serialize: {e}\n"),
        ),
    }
}

#[derive(Serialize)]
struct ResourceInfo<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    ty: &'static str,
    location: String,
}

fn route(req: &Request<Incoming>, core: &Core) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "use GET\n");
    }
    match req.uri().path() {
        "/metrics" => text(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            core.metrics.encode(),
        ),
        "/ready" | "/healthz/ready" => {
            if core.current().version > 0 {
                text(StatusCode::OK, "text/plain", "READY\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "NO CONFIG\n")
            }
        }
        "/debug/syncz" => json(&core.status()),
        "/debug/config_errors" => json(&core.last_error()),
        "/debug/resources" => {
            let snap = core.current();
            let list: Vec<ResourceInfo> = snap
                .entries
                .values()
                .map(|e| ResourceInfo {
                    id: &e.id,
                    ty: e.ty.name(),
                    location: format!("{}:{}", e.wire.file, e.wire.line),
                })
                .collect();
            json(&list)
        }
        p => text(
            StatusCode::NOT_FOUND,
            "text/plain",
            format!("not found: {p}\nendpoints: /metrics /ready /debug/syncz /debug/config_errors /debug/resources\n"),
        ),
    }
}
