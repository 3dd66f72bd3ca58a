//! A small HTTP server for the demo apps: HTTP/1.1 and h2c (prior knowledge) on one port,
//! whole-body requests, JSON responses, stops on SIGTERM / Ctrl-C.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Method, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full, Limited};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// Largest request body the demo apps read.
const MAX_BODY: usize = 1 << 20;

/// One request, body read in full.
#[derive(Debug)]
pub struct Request {
    pub method: Method,
    pub path: String,
    pub query: Option<String>,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub peer: SocketAddr,
}

impl Request {
    /// A header as text (first value).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The bearer token of the `Authorization` header.
    pub fn bearer(&self) -> Option<&str> {
        let v = self.header("authorization")?;
        let (scheme, token) = v.split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then_some(token.trim())
            .filter(|t| !t.is_empty())
    }
}

pub type ResponseFuture = Pin<Box<dyn Future<Output = Response<Full<Bytes>>> + Send>>;

/// What answers requests.
pub trait App: Send + Sync + 'static {
    fn handle(self: Arc<Self>, req: Request) -> ResponseFuture;
}

/// A JSON response.
pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<Full<Bytes>> {
    // Compact, one line: easy to grep and to cut in shell commands.
    let mut body = serde_json::to_vec(value).unwrap_or_default();
    body.push(b'\n');
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

/// `{"error": ..., "message": ...}` with `status`.
pub fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    json(
        status,
        &serde_json::json!({
            "error": status.canonical_reason().unwrap_or(""),
            "message": message,
        }),
    )
}

pub fn version_name(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/?",
    }
}

async fn serve_one<A: App>(
    app: Arc<A>,
    peer: SocketAddr,
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return Ok(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request body unreadable or over 1 MiB",
            ))
        }
    };
    let request = Request {
        method: parts.method,
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(str::to_string),
        version: parts.version,
        headers: parts.headers,
        body,
        peer,
    };
    Ok(app.handle(request).await)
}

/// Serves `app` on `listener` until SIGTERM or Ctrl-C.
pub async fn serve<A: App>(listener: TcpListener, app: Arc<A>, name: &str) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    eprintln!("{name} listening on {addr}");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let accept = async {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let app = app.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| serve_one(app.clone(), peer, req));
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let _ = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    };
    tokio::select! {
        _ = accept => {}
        _ = term.recv() => eprintln!("{name}: SIGTERM, stopping"),
        _ = tokio::signal::ctrl_c() => eprintln!("{name}: interrupted, stopping"),
    }
    Ok(())
}

/// Binds `addr` and serves `app` on a new multi-thread runtime until a signal.
pub fn run<A: App>(addr: SocketAddr, app: A, name: &str) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
        serve(listener, Arc::new(app), name).await
    })
}
