//! The mTLS channel (Istio's 15012): the same gRPC service as the plaintext port, over TLS 1.3
//! with a client certificate from the mesh CA required. A proxy moves here once the bootstrap
//! (token-authenticated, plaintext, loopback) has given it a workload certificate; on this
//! channel the certificate *is* the authentication: a proxy may only speak for a workload
//! whose service account is the one its certificate names (checked in `server`).
//!
//! Owns: the control plane's own serving certificate (`spiffe://<td>/ns/<root
//! ns>/sa/istiod`, issued by its CA, rotated at half-life), the TLS accept loop (a failed
//! handshake is logged and dropped, never stops the listener), and the peer identity handed
//! to the gRPC handlers as a request extension ([`MeshPeer`]).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tonic::transport::server::Connected;
use trellis_identity::{
    server_config, CertificateAuthority, ClientAuth, IdentityManager, LocalIssuer, RotationHandle,
    RotationOptions, SpiffeId,
};

/// The SPIFFE identity of a proxy on the mTLS channel (a request extension).
#[derive(Clone, Debug)]
pub(crate) struct MeshPeer(pub SpiffeId);

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A TLS connection and the identity its client certificate proved.
pub(crate) struct MeshConn {
    io: TlsStream<TcpStream>,
    peer: Option<MeshPeer>,
}

impl Connected for MeshConn {
    type ConnectInfo = Option<MeshPeer>;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.peer.clone()
    }
}

impl AsyncRead for MeshConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for MeshConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// The control plane's own certificate, renewed in the background while the handle lives.
pub(crate) struct ServingIdentity {
    pub manager: Arc<IdentityManager>,
    pub _rotation: RotationHandle,
}

/// Issues the control plane's serving certificate from its own CA (call within Tokio).
pub(crate) async fn serving_identity(
    ca: Arc<CertificateAuthority>,
    trust_domain: &str,
    root_namespace: &str,
) -> Result<ServingIdentity, trellis_identity::Error> {
    let id = SpiffeId::new(
        trust_domain,
        root_namespace,
        trellis_protocol::CONTROL_PLANE_SERVICE_ACCOUNT,
    )?;
    let manager = IdentityManager::new(id.clone(), ca.trust_bundle().clone());
    let issuer = LocalIssuer::new(ca, id, Duration::ZERO);
    manager.renew(&issuer).await?;
    let rotation = manager.spawn_rotation(issuer, RotationOptions::default())?;
    Ok(ServingIdentity {
        manager,
        _rotation: rotation,
    })
}

/// Accepts TLS connections on `listener` until `stop`; each handshake runs in its own task
/// and successful ones are yielded in order of completion.
pub(crate) fn incoming(
    listener: TcpListener,
    identity: &ServingIdentity,
    mut stop: watch::Receiver<bool>,
) -> Result<
    impl tokio_stream::Stream<Item = Result<MeshConn, std::io::Error>>,
    trellis_identity::Error,
> {
    let config = server_config(
        identity.manager.clone(),
        identity.manager.trust_bundle(),
        ClientAuth::Required,
        vec![b"h2".to_vec()],
    )?;
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let (tx, rx) = mpsc::channel::<Result<MeshConn, std::io::Error>>(64);
    tokio::spawn(async move {
        loop {
            let (tcp, from) = tokio::select! {
                _ = crate::core::stopped(&mut stop) => break,
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!("mTLS accept: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(io)) => {
                        let peer = trellis_identity::peer_identity(io.get_ref().1).map(MeshPeer);
                        let _ = tx.send(Ok(MeshConn { io, peer })).await;
                    }
                    Ok(Err(e)) => tracing::warn!(%from, "mTLS handshake refused: {e}"),
                    Err(_) => tracing::warn!(%from, "mTLS handshake timed out"),
                }
            });
        }
    });
    Ok(tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// Whether `peer` may speak for a workload whose service account is `sa` in `namespace`.
pub(crate) fn peer_is_workload(
    peer: &SpiffeId,
    trust_domain: &str,
    namespace: &str,
    sa: &str,
) -> bool {
    peer.trust_domain() == trust_domain
        && peer.namespace() == namespace
        && peer.service_account() == sa
}
