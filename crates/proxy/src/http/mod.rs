//! One downstream HTTP connection (HTTP/1.1, HTTP/2, h2c; gRPC and WebSocket over them).
//! Scaffolding: the full request path is being written (issue 3).

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::state::{ConnectionInfo, ProxyState};

/// Serves HTTP on an accepted (and, if TLS, already terminated) connection until it closes.
pub async fn serve_connection<IO>(io: IO, conn: ConnectionInfo, state: Arc<ProxyState>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let _ = (io, conn, state);
}
