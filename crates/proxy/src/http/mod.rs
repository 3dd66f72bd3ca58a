//! One downstream HTTP connection (HTTP/1.1, HTTP/2, h2c; gRPC and WebSocket over them).
//!
//! Follow a request top to bottom:
//! - [`serve_connection`] (here): the codec. hyper-util's auto builder serves HTTP/1.1 and
//!   HTTP/2 (prior knowledge or TLS ALPN) on one connection, with header-read timeout and
//!   header-size limits armed.
//! - [`request::handle`]: the request life cycle: validate, normalize the path, sanitize
//!   `x-forwarded-client-cert`, JWT authentication, authorization (with ext-authz for CUSTOM)
//!   ([`security`]), route (`trellis_model::route`), CORS, fault injection, then the action:
//!   direct response, redirect or forward.
//! - [`forward`]: weighted cluster, header ops and rewrites, mirrors, the retry loop with
//!   timeouts over `upstream` (LB, pools, circuit breakers, outlier detection), WebSocket
//!   tunnels.
//! - [`body`]: request body recording for retries and mirrors; the response body that
//!   returns pooled connections and writes the access log ([`access_log`]).

pub mod access_log;
pub mod body;
pub mod cors;
pub mod error;
pub mod forward;
pub mod headers;
pub mod request;
pub mod rewrite;
pub mod security;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::state::{ConnectionInfo, ProxyState};

/// Largest request head accepted (request line and headers), as Envoy's 60 KiB default
/// `max_request_headers_kb`, rounded to hyper's buffer granularity. Larger heads get 431.
pub const MAX_REQUEST_HEADERS_BYTES: usize = 64 * 1024;
/// Most headers accepted in one request (Envoy: 100). This is hyper's built-in limit
/// (`DEFAULT_MAX_HEADERS`), so it is not set explicitly: setting it makes hyper build two
/// 100-slot vectors per request instead of using stack arrays (more than 1,000 instructions
/// a request). `tests/http_protocols.rs` checks that request 101 headers get 431.
pub const MAX_REQUEST_HEADERS: usize = 100;
/// Time allowed to receive a request head (slowloris bound, also the HTTP/1.1 keep-alive
/// idle limit between requests).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves HTTP on an accepted (and, if TLS, already terminated) connection until it closes.
pub async fn serve_connection<IO>(io: IO, conn: ConnectionInfo, state: Arc<ProxyState>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = Arc::new(conn);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_REQUEST_HEADERS_BYTES)
        .keep_alive(true)
        .half_close(false);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_REQUEST_HEADERS_BYTES as u32)
        .max_concurrent_streams(1024)
        .max_pending_accept_reset_streams(Some(100))
        .max_local_error_reset_streams(Some(1024))
        .keep_alive_interval(Some(Duration::from_secs(60)));
    let peer = conn.peer_addr;
    let svc_conn = conn.clone();
    let svc = service_fn(move |req| {
        let conn = svc_conn.clone();
        let state = state.clone();
        async move { Ok::<_, Infallible>(request::handle(req, conn, state).await) }
    });
    if let Err(e) = builder
        .serve_connection_with_upgrades(TokioIo::new(io), svc)
        .await
    {
        match e.downcast_ref::<hyper::Error>() {
            Some(he) if he.is_parse() || he.is_parse_too_large() || he.is_timeout() => {
                tracing::info!(
                    target: "access",
                    listener = %conn.listener,
                    "[{}] downstream protocol error from {peer}: {he} (DPE)",
                    access_log::rfc3339(std::time::SystemTime::now()),
                );
            }
            _ => tracing::debug!(listener = %conn.listener, "connection from {peer}: {e}"),
        }
    }
}
