//! rustls configurations for mesh mTLS with SPIFFE peer verification.
//!
//! Owns the crypto provider choice (aws-lc-rs, passed explicitly, never the process default),
//! the two certificate verifiers, and the config builders:
//!
//! - [`SpiffeServerVerifier`] (used by clients) validates the server's chain against the trust
//!   bundle with webpki for `serverAuth`, then requires the leaf's single URI SAN to be one of
//!   the SPIFFE ids expected for this destination. The TLS server name is not used for
//!   verification (SNI is still sent; the mesh routes on it). rustls's stock verifier cannot be
//!   used: it rejects certificates whose only SAN is a URI.
//! - [`SpiffeClientVerifier`] (used by servers) validates the client's chain for `clientAuth`
//!   and requires a single, valid SPIFFE URI SAN; which identities may do what is the
//!   authorization layer's decision, made on [`peer_identity`].
//!
//! Mesh mTLS is TLS 1.3 only.

use std::fmt;
use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::ResolvesClientCert;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::ResolvesServerCert;
use rustls::{
    CertificateError, ClientConfig, CommonState, DigitallySignedStruct, DistinguishedName,
    OtherError, ServerConfig, SignatureScheme,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::bundle::{SharedTrustBundle, TrustBundle};
use crate::error::{Error, Result};
use crate::pem::spiffe_id_from_cert;
use crate::spiffe::SpiffeId;

/// The crypto provider every config in this crate uses: rustls's aws-lc-rs provider.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .clone()
}

/// Install the aws-lc-rs provider as the process default, for libraries that build rustls
/// configs without naming a provider. Call it first thing in `main`. Returns `true` if this
/// call installed it, `false` if some provider was installed before (this crate's own configs
/// name aws-lc-rs explicitly either way).
pub fn install_default_provider() -> bool {
    CryptoProvider::install_default(rustls::crypto::aws_lc_rs::default_provider()).is_ok()
}

/// Whether a server requires clients to present a certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// mTLS: a handshake without a valid client certificate fails (PeerAuthentication STRICT).
    Required,
    /// A client certificate is requested and verified if sent, but may be absent
    /// (TLS without client identity, as under PERMISSIVE).
    Optional,
}

/// Validate `end_entity` + `intermediates` against `bundle` for `usage` with webpki, using the
/// provider's signature algorithms. Names are not checked.
pub(crate) fn verify_chain(
    algorithms: &WebPkiSupportedAlgorithms,
    bundle: &TrustBundle,
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    now: UnixTime,
    usage: webpki::KeyUsage,
) -> std::result::Result<(), webpki::Error> {
    let cert = webpki::EndEntityCert::try_from(end_entity)?;
    cert.verify_for_usage(
        algorithms.all,
        bundle.anchors(),
        intermediates,
        now,
        usage,
        None,
        None,
    )
    .map(|_| ())
}

/// The SPIFFE id of the peer of an established connection (a `ServerConnection` or
/// `ClientConnection` derefs to [`CommonState`]): the single URI SAN of its leaf certificate.
/// `None` when the peer sent no certificate, or its leaf has zero or several URI SANs or an
/// invalid SPIFFE id.
pub fn peer_identity(conn: &CommonState) -> Option<SpiffeId> {
    let leaf = conn.peer_certificates()?.first()?;
    spiffe_id_from_cert(leaf.as_ref()).ok()
}

/// Verifies a server's certificate chain against the trust bundle and its SPIFFE id against
/// the identities expected for the destination (or, built with
/// [`SpiffeServerVerifier::any_in_trust_domain`], any identity of one trust domain).
pub struct SpiffeServerVerifier {
    bundle: SharedTrustBundle,
    expected: Vec<SpiffeId>,
    /// Set when any identity of this trust domain is accepted (`expected` is empty then).
    trust_domain: Option<String>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl SpiffeServerVerifier {
    /// A verifier accepting servers that chain to `bundle` and present one of `expected`.
    /// An empty `expected` set is an error (it would reject every server).
    pub fn new(
        bundle: impl Into<SharedTrustBundle>,
        expected: impl IntoIterator<Item = SpiffeId>,
    ) -> Result<Self> {
        let mut expected: Vec<SpiffeId> = expected.into_iter().collect();
        expected.sort();
        expected.dedup();
        if expected.is_empty() {
            return Err(Error::Tls(rustls::Error::General(
                "no expected server identities: every server would be rejected".into(),
            )));
        }
        Ok(SpiffeServerVerifier {
            bundle: bundle.into(),
            expected,
            trust_domain: None,
            algorithms: provider().signature_verification_algorithms,
        })
    }

    /// A verifier accepting servers that chain to `bundle` and present any SPIFFE id of
    /// `trust_domain`: for destinations whose workload identities are not known (Istio's
    /// behaviour when a cluster has no `subjectAltNames`, narrowed to the trust domain).
    pub fn any_in_trust_domain(
        bundle: impl Into<SharedTrustBundle>,
        trust_domain: &str,
    ) -> Result<Self> {
        crate::spiffe::validate_trust_domain(trust_domain)?;
        Ok(SpiffeServerVerifier {
            bundle: bundle.into(),
            expected: Vec::new(),
            trust_domain: Some(trust_domain.to_string()),
            algorithms: provider().signature_verification_algorithms,
        })
    }

    /// The identities a server may present.
    pub fn expected(&self) -> &[SpiffeId] {
        &self.expected
    }
}

impl fmt::Debug for SpiffeServerVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpiffeServerVerifier")
            .field("expected", &self.expected)
            .field("trust_domain", &self.trust_domain)
            .finish_non_exhaustive()
    }
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let bundle = self.bundle.load();
        verify_chain(
            &self.algorithms,
            &bundle,
            end_entity,
            intermediates,
            now,
            webpki::KeyUsage::server_auth(),
        )
        .map_err(pki_error)?;
        let id = spiffe_id_from_cert(end_entity.as_ref()).map_err(other_error)?;
        if let Some(td) = &self.trust_domain {
            if id.trust_domain() != td {
                tracing::debug!(peer = %id, trust_domain = %td, "server identity outside the trust domain");
                return Err(other_error(Error::Tls(rustls::Error::General(format!(
                    "server identity {id} is not in trust domain {td}"
                )))));
            }
            return Ok(ServerCertVerified::assertion());
        }
        if self.expected.binary_search(&id).is_err() {
            tracing::debug!(peer = %id, expected = ?self.expected, "server identity not expected");
            return Err(other_error(Error::Tls(rustls::Error::General(format!(
                "server identity {id} is not one of the expected identities [{}]",
                self.expected
                    .iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )))));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Verifies a client's certificate chain against the trust bundle and requires a valid
/// SPIFFE id in it.
pub struct SpiffeClientVerifier {
    bundle: SharedTrustBundle,
    mandatory: bool,
    algorithms: WebPkiSupportedAlgorithms,
}

impl SpiffeClientVerifier {
    /// A verifier accepting clients that chain to `bundle`.
    pub fn new(bundle: impl Into<SharedTrustBundle>, client_auth: ClientAuth) -> Self {
        SpiffeClientVerifier {
            bundle: bundle.into(),
            mandatory: client_auth == ClientAuth::Required,
            algorithms: provider().signature_verification_algorithms,
        }
    }
}

impl fmt::Debug for SpiffeClientVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpiffeClientVerifier")
            .field("mandatory", &self.mandatory)
            .finish_non_exhaustive()
    }
}

impl ClientCertVerifier for SpiffeClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> std::result::Result<ClientCertVerified, rustls::Error> {
        let bundle = self.bundle.load();
        verify_chain(
            &self.algorithms,
            &bundle,
            end_entity,
            intermediates,
            now,
            webpki::KeyUsage::client_auth(),
        )
        .map_err(pki_error)?;
        spiffe_id_from_cert(end_entity.as_ref()).map_err(other_error)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A TLS 1.3 server config for mesh mTLS: presents the certificate `certs` resolves (a fixed
/// [`crate::CertifiedIdentity`] or a rotating [`crate::IdentityManager`]) and verifies client
/// certificates against `bundle`.
pub fn server_config(
    certs: Arc<dyn ResolvesServerCert>,
    bundle: impl Into<SharedTrustBundle>,
    client_auth: ClientAuth,
    alpn: Vec<Vec<u8>>,
) -> Result<ServerConfig> {
    let verifier = Arc::new(SpiffeClientVerifier::new(bundle, client_auth));
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(certs);
    config.alpn_protocols = alpn;
    Ok(config)
}

/// A TLS 1.3 client config for mesh mTLS: presents the certificate `certs` resolves and
/// accepts only servers that chain to `bundle` and present one of `expected` (the service
/// accounts of the destination's workloads).
pub fn client_config(
    certs: Arc<dyn ResolvesClientCert>,
    bundle: impl Into<SharedTrustBundle>,
    expected: Vec<SpiffeId>,
    alpn: Vec<Vec<u8>>,
) -> Result<ClientConfig> {
    let verifier = Arc::new(SpiffeServerVerifier::new(bundle, expected)?);
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(certs);
    config.alpn_protocols = alpn;
    Ok(config)
}

/// Like [`client_config`], with the server verifier given (e.g.
/// [`SpiffeServerVerifier::any_in_trust_domain`]).
pub fn client_config_with_verifier(
    certs: Arc<dyn ResolvesClientCert>,
    verifier: SpiffeServerVerifier,
    alpn: Vec<Vec<u8>>,
) -> Result<ClientConfig> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_cert_resolver(certs);
    config.alpn_protocols = alpn;
    Ok(config)
}

fn other_error(e: Error) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
}

/// webpki's errors in rustls's terms (the subset rustls itself maps; the rest as `Other`).
fn pki_error(error: webpki::Error) -> rustls::Error {
    use webpki::Error as W;
    let cert_error = match error {
        W::BadDer | W::BadDerTime | W::TrailingData(_) => CertificateError::BadEncoding,
        W::CertNotValidYet { time, not_before } => {
            CertificateError::NotValidYetContext { time, not_before }
        }
        W::CertExpired { time, not_after } => CertificateError::ExpiredContext { time, not_after },
        W::InvalidCertValidity => CertificateError::Expired,
        W::UnknownIssuer => CertificateError::UnknownIssuer,
        W::CertRevoked => CertificateError::Revoked,
        W::InvalidSignatureForPublicKey => CertificateError::BadSignature,
        #[allow(deprecated)]
        W::UnsupportedSignatureAlgorithm | W::UnsupportedSignatureAlgorithmForPublicKey => {
            CertificateError::UnsupportedSignatureAlgorithm
        }
        #[allow(deprecated)]
        W::RequiredEkuNotFound | W::RequiredEkuNotFoundContext(_) => {
            CertificateError::InvalidPurpose
        }
        other => CertificateError::Other(OtherError(Arc::new(other))),
    };
    rustls::Error::InvalidCertificate(cert_error)
}
