//! Opening a connection to one endpoint: TCP with the cluster's connect timeout, then TLS
//! origination when the cluster asks for it (`UpstreamTls::Tls`, DestinationRule SIMPLE or
//! MUTUAL). Istio mutual TLS is supplied by a [`MeshTlsProvider`] installed in `ProxyState`
//! (`security::mesh::MeshIdentity`); a proxy without one dials such clusters in plaintext (with
//! a warning), a proxy with one but no certificate yet fails the connection (fail closed).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use trellis_model::config::UpstreamTls;

/// Any bidirectional byte stream to an upstream.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

pub type BoxIo = Box<dyn Io>;

/// Supplies Istio mutual TLS: client configs for `UpstreamTls::IstioMutual` clusters (the
/// proxy's workload certificate and a verifier for the expected SPIFFE identities) and the
/// server config of inbound mesh mTLS chains. Implemented by `security::mesh::MeshIdentity`;
/// rotation is its business (configs resolve the current certificate per handshake).
pub trait MeshTlsProvider: Send + Sync {
    /// Client TLS to a destination presenting one of `expected_identities` (empty: any
    /// identity of the trust domain). `None` when no workload certificate is loaded yet: the
    /// connection must fail (no plaintext fallback).
    fn client_config(
        &self,
        expected_identities: &[String],
        alpn: Alpn,
    ) -> Option<Arc<ClientConfig>>;
    /// Server TLS terminating mesh mTLS (client certificate from the mesh CA required);
    /// `http` chains offer ALPN `h2`, `http/1.1`. Handshakes fail until a certificate is loaded.
    fn server_config(&self, http: bool) -> Arc<rustls::ServerConfig>;
    /// The proxy's own SPIFFE id (`spiffe://<td>/ns/<ns>/sa/<sa>`).
    fn identity(&self) -> String;
}

/// Which application protocol a connection will carry (selects ALPN).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Alpn {
    Http1,
    Http2,
    None,
}

/// TLS settings of a cluster, built once when its runtime is created.
pub struct TlsOrigination {
    server_name: ServerName<'static>,
    h1: Arc<ClientConfig>,
    h2: Arc<ClientConfig>,
    raw: Arc<ClientConfig>,
}

impl TlsOrigination {
    /// Builds the client configs for `UpstreamTls::Tls`; `default_sni` is the service host.
    pub fn from_config(tls: &UpstreamTls, default_sni: &str) -> Result<Option<Self>, String> {
        let UpstreamTls::Tls {
            sni,
            ca_certificates,
            client_certificate,
            private_key,
            subject_alt_names,
            insecure_skip_verify,
            // DestinationRule credentialName (client cert from a Secret): not read yet.
            credential: _,
        } = tls
        else {
            return Ok(None);
        };
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let verifier: Arc<dyn ServerCertVerifier> = if *insecure_skip_verify {
            Arc::new(NoVerify(provider.clone()))
        } else {
            let mut roots = rustls::RootCertStore::empty();
            match ca_certificates {
                Some(ca) => {
                    let pem = read_pem_or_path(ca)?;
                    for cert in parse_certs(&pem)? {
                        roots.add(cert).map_err(|e| e.to_string())?;
                    }
                }
                None => {
                    // No CA named: the system bundle, as Envoy uses when none is given.
                    for path in [
                        "/etc/ssl/certs/ca-certificates.crt",
                        "/etc/pki/tls/certs/ca-bundle.crt",
                    ] {
                        if let Ok(pem) = std::fs::read_to_string(path) {
                            for cert in parse_certs(&pem).unwrap_or_default() {
                                let _ = roots.add(cert);
                            }
                            break;
                        }
                    }
                }
            }
            let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                provider.clone(),
            )
            .build()
            .map_err(|e| e.to_string())?;
            if subject_alt_names.is_empty() {
                inner
            } else {
                let sans = subject_alt_names
                    .iter()
                    .map(|s| ServerName::try_from(s.clone()).map_err(|e| format!("SAN {s}: {e}")))
                    .collect::<Result<Vec<_>, _>>()?;
                Arc::new(SanVerifier { inner, sans })
            }
        };
        let builder = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let config = match (client_certificate, private_key) {
            (Some(c), Some(k)) => {
                let certs = parse_certs(&read_pem_or_path(c)?)?;
                use rustls::pki_types::pem::PemObject;
                let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(
                    read_pem_or_path(k)?.as_bytes(),
                )
                .map_err(|e| format!("client key: {e}"))?;
                builder
                    .with_client_auth_cert(certs, key)
                    .map_err(|e| e.to_string())?
            }
            _ => builder.with_no_client_auth(),
        };
        let name = sni.as_deref().unwrap_or(default_sni).to_string();
        let server_name =
            ServerName::try_from(name.clone()).map_err(|e| format!("SNI {name}: {e}"))?;
        let with_alpn = |alpn: &[&[u8]]| {
            let mut c = config.clone();
            c.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
            Arc::new(c)
        };
        Ok(Some(TlsOrigination {
            server_name,
            h1: with_alpn(&[b"http/1.1"]),
            h2: with_alpn(&[b"h2"]),
            raw: with_alpn(&[]),
        }))
    }

    fn config(&self, alpn: Alpn) -> Arc<ClientConfig> {
        match alpn {
            Alpn::Http1 => self.h1.clone(),
            Alpn::Http2 => self.h2.clone(),
            Alpn::None => self.raw.clone(),
        }
    }
}

fn read_pem_or_path(s: &str) -> Result<String, String> {
    if s.contains("-----BEGIN") {
        Ok(s.to_string())
    } else {
        std::fs::read_to_string(s).map_err(|e| format!("{s}: {e}"))
    }
}

fn parse_certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("certificates: {e}"))
}

/// Why a connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect timeout after {0:?}")]
    Timeout(Duration),
    #[error("connect: {0}")]
    Io(#[from] io::Error),
    #[error("tls handshake: {0}")]
    Tls(io::Error),
}

/// TCP connect with timeout (and TCP_NODELAY), then TLS when configured.
pub async fn connect(
    addr: SocketAddr,
    timeout: Duration,
    keepalive: Option<Duration>,
    tls: Option<(&TlsOrigination, Alpn)>,
    mesh: Option<Arc<ClientConfig>>,
    mesh_sni: Option<&str>,
) -> Result<BoxIo, ConnectError> {
    let timeout = if timeout.is_zero() {
        Duration::from_secs(10)
    } else {
        timeout
    };
    let tcp = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(ConnectError::Io(e)),
        Err(_) => return Err(ConnectError::Timeout(timeout)),
    };
    let _ = tcp.set_nodelay(true);
    if let Some(time) = keepalive.filter(|t| !t.is_zero()) {
        // DestinationRule tcp.tcpKeepalive.time.
        let ka = socket2::TcpKeepalive::new().with_time(time);
        let _ = socket2::SockRef::from(&tcp).set_tcp_keepalive(&ka);
    }
    if let Some(config) = mesh {
        let name = mesh_sni
            .and_then(|s| ServerName::try_from(s.to_string()).ok())
            .unwrap_or_else(|| ServerName::IpAddress(addr.ip().into()));
        let s = tokio::time::timeout(
            timeout,
            tokio_rustls::TlsConnector::from(config).connect(name, tcp),
        )
        .await
        .map_err(|_| ConnectError::Timeout(timeout))?
        .map_err(ConnectError::Tls)?;
        return Ok(Box::new(s));
    }
    match tls {
        None => Ok(Box::new(tcp)),
        Some((t, alpn)) => {
            let s = tokio::time::timeout(
                timeout,
                tokio_rustls::TlsConnector::from(t.config(alpn))
                    .connect(t.server_name.clone(), tcp),
            )
            .await
            .map_err(|_| ConnectError::Timeout(timeout))?
            .map_err(ConnectError::Tls)?;
            Ok(Box::new(s))
        }
    }
}

/// Verifies the chain with webpki, then the name against the configured SANs instead of
/// the SNI (DestinationRule `tls.subjectAltNames`).
#[derive(Debug)]
struct SanVerifier {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    sans: Vec<ServerName<'static>>,
}

impl ServerCertVerifier for SanVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut last = None;
        for san in &self.sans {
            match self
                .inner
                .verify_server_cert(end_entity, intermediates, san, ocsp, now)
            {
                Ok(v) => return Ok(v),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(rustls::Error::General("no SAN configured".into())))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// `insecureSkipVerify: true`: signatures are still checked, the chain and name are not.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
