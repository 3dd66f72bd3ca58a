//! Shared test support: a CA with workload identities, real TLS over loopback TCP, openssl.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use rustls::{ClientConfig, ServerConfig};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{client, server, TlsAcceptor, TlsConnector};
use trellis_identity::{generate_key_and_csr, CertificateAuthority, CertifiedIdentity, SpiffeId};

pub const TD: &str = "cluster.local";

pub fn id(ns: &str, sa: &str) -> SpiffeId {
    SpiffeId::new(TD, ns, sa).unwrap()
}

/// A workload identity issued by `ca` through the real CSR path.
pub fn issue(ca: &CertificateAuthority, id: &SpiffeId) -> Arc<CertifiedIdentity> {
    let req = generate_key_and_csr(id).unwrap();
    let issued = ca.sign_csr(&req.csr_pem, id, Duration::ZERO).unwrap();
    Arc::new(CertifiedIdentity::from_issued(&req.key, &issued).unwrap())
}

/// The system openssl binary, or `None` (with a message) so the caller can skip.
pub fn openssl() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("openssl"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        eprintln!("SKIPPED: the `openssl` binary is not installed; install it to run this check");
    }
    found
}

pub fn run(cmd: &Path, args: &[&str]) -> Output {
    Command::new(cmd).args(args).output().expect("run openssl")
}

pub fn run_ok(cmd: &Path, args: &[&str]) -> String {
    let out = run(cmd, args);
    assert!(
        out.status.success(),
        "openssl {args:?} failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A TLS server on an ephemeral loopback port accepting connections with `config`.
pub struct Server {
    pub addr: std::net::SocketAddr,
    listener: TcpListener,
    acceptor: TlsAcceptor,
}

impl Server {
    pub async fn bind(config: ServerConfig) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Server {
            addr: listener.local_addr().unwrap(),
            listener,
            acceptor: TlsAcceptor::from(Arc::new(config)),
        }
    }

    /// Accept one TCP connection and run the TLS handshake on it.
    pub async fn accept(&self) -> std::io::Result<server::TlsStream<TcpStream>> {
        let (tcp, _) = self.listener.accept().await?;
        self.acceptor.accept(tcp).await
    }
}

/// Connect to `addr` with `config`, sending `sni` as the server name.
pub async fn connect(
    addr: std::net::SocketAddr,
    config: ClientConfig,
    sni: &str,
) -> std::io::Result<client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(sni.to_string()).unwrap(), tcp)
        .await
}

/// Echo one message: the client writes `msg`, the server reads it and writes it back.
pub async fn echo<C, S>(client: &mut C, server: &mut S, msg: &[u8])
where
    C: AsyncReadExt + AsyncWriteExt + Unpin,
    S: AsyncReadExt + AsyncWriteExt + Unpin,
{
    client.write_all(msg).await.unwrap();
    client.flush().await.unwrap();
    let mut buf = vec![0; msg.len()];
    server.read_exact(&mut buf).await.unwrap();
    server.write_all(&buf).await.unwrap();
    server.flush().await.unwrap();
    let mut back = vec![0; msg.len()];
    client.read_exact(&mut back).await.unwrap();
    assert_eq!(back, msg);
}
