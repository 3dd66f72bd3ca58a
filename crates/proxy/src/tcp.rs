//! Raw TCP and TLS passthrough forwarding.
//! Placeholder: the real forwarding is being written (issue 3); these close the connection.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use trellis_model::config::{SniRoute, TcpRoute};

use crate::state::{ConnectionInfo, ProxyState};

/// Forwards a TCP connection to the cluster chosen by the first matching route.
pub async fn proxy_tcp<IO>(
    io: IO,
    conn: ConnectionInfo,
    routes: &[TcpRoute],
    state: Arc<ProxyState>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let _ = (io, conn, routes, state);
}

/// Forwards a TLS connection untouched (the ClientHello included) by SNI (`conn.sni`).
pub async fn proxy_tls_passthrough<IO>(
    io: IO,
    conn: ConnectionInfo,
    routes: &[SniRoute],
    state: Arc<ProxyState>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let _ = (io, conn, routes, state);
}
