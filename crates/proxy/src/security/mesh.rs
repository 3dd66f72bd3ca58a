//! The proxy's mesh identity: its SPIFFE workload certificate (issued from a CSR whose key never
//! leaves the process, renewed at half-life) and the rustls configs built on it.
//!
//! [`MeshIdentity`] is the [`MeshTlsProvider`] installed in `ProxyState::mesh_tls`:
//! - outbound (`UpstreamTls::IstioMutual` clusters): TLS 1.3 client configs presenting the
//!   workload certificate and accepting only servers that chain to the mesh roots and present one
//!   of the cluster's expected SPIFFE identities (any identity of the trust domain when the
//!   cluster names none); ALPN `h2` or `http/1.1` per the upstream protocol;
//! - inbound (chains naming the mesh certificate, `trellis_model::security::mesh_downstream_tls`):
//!   a TLS 1.3 server config requiring a client certificate from the mesh CA.
//!
//! Certificates are resolved per handshake from the `IdentityManager`, so rotation needs no
//! config rebuild. Fail closed: before the first certificate is installed, client configs are
//! not handed out (the connection fails) and server handshakes fail (no certificate).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::{ClientConfig, ServerConfig};
use trellis_identity::tls::{client_config_with_verifier, SpiffeServerVerifier};
use trellis_identity::{
    server_config, CertificateAuthority, ClientAuth, IdentityManager, LocalIssuer, RotationHandle,
    SpiffeId,
};

pub use trellis_identity::RotationOptions;

use crate::tls::DEFAULT_HTTP_ALPN;
use crate::upstream::connect::{Alpn, MeshTlsProvider};

/// Organization written into a generated root CA.
pub const CA_ORGANIZATION: &str = "Trellis";

/// Expected server identities and ALPN of a client config.
type ClientKey = (Vec<String>, Alpn);

/// A workload identity and the mTLS configs built on it.
pub struct MeshIdentity {
    manager: Arc<IdentityManager>,
    server_http: Arc<ServerConfig>,
    server_raw: Arc<ServerConfig>,
    /// Client configs by (expected identities, ALPN): built on first use, reused after.
    clients: Mutex<HashMap<ClientKey, Arc<ClientConfig>>>,
    rotation: Mutex<Option<RotationHandle>>,
}

impl std::fmt::Debug for MeshIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshIdentity")
            .field("identity", &self.manager.identity().to_string())
            .field("has_certificate", &self.manager.current().is_some())
            .finish_non_exhaustive()
    }
}

impl MeshIdentity {
    /// Configs over `manager` (which may not hold a certificate yet).
    pub fn new(manager: Arc<IdentityManager>) -> Result<Arc<MeshIdentity>, String> {
        let server = |alpn: Vec<Vec<u8>>| {
            server_config(
                manager.clone(),
                manager.trust_bundle(),
                ClientAuth::Required,
                alpn,
            )
            .map(Arc::new)
            .map_err(|e| format!("mesh mTLS server config: {e}"))
        };
        Ok(Arc::new(MeshIdentity {
            server_http: server(
                DEFAULT_HTTP_ALPN
                    .iter()
                    .map(|p| p.as_bytes().to_vec())
                    .collect(),
            )?,
            server_raw: server(Vec::new())?,
            clients: Mutex::new(HashMap::new()),
            rotation: Mutex::new(None),
            manager,
        }))
    }

    /// Standalone mode: the local CA in `ca_dir` (Istio's plug-in layout, generated there when
    /// the directory holds none) issues the certificate of `spiffe://<td>/ns/<ns>/sa/<sa>`;
    /// rotation at half-life runs in the background (call inside a tokio runtime). Returns
    /// once the first certificate is installed.
    pub async fn from_local_ca(
        ca_dir: &Path,
        trust_domain: &str,
        namespace: &str,
        service_account: &str,
        ttl: Duration,
        options: RotationOptions,
    ) -> Result<Arc<MeshIdentity>, String> {
        let id = SpiffeId::new(trust_domain, namespace, service_account)
            .map_err(|e| format!("workload identity: {e}"))?;
        let ca = CertificateAuthority::load_or_generate(ca_dir, trust_domain, CA_ORGANIZATION)
            .map_err(|e| format!("mesh CA in {}: {e}", ca_dir.display()))?;
        let ca = Arc::new(ca);
        let manager = IdentityManager::new(id.clone(), ca.trust_bundle().clone());
        let me = MeshIdentity::new(manager.clone())?;
        // The first certificate now, so the proxy serves mTLS from its first connection.
        manager
            .renew(&LocalIssuer::new(ca.clone(), id.clone(), ttl))
            .await
            .map_err(|e| format!("workload certificate for {id}: {e}"))?;
        let handle = manager
            .spawn_rotation(LocalIssuer::new(ca, id, ttl), options)
            .map_err(|e| e.to_string())?;
        *me.rotation.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
        Ok(me)
    }

    /// A certificate from a remote CA that chose the identity itself: `request` holds the key
    /// the first CSR was made with, `issued` the answer and `spiffe_id` the identity it names. The
    /// trust bundle is the one delivered with it; rotation through `issuer` then runs in the
    /// background (call inside a tokio runtime).
    pub fn from_first_issuance<I: trellis_identity::CertificateIssuer>(
        request: &trellis_identity::KeyAndCsr,
        issued: &trellis_identity::IssuedCert,
        spiffe_id: &str,
        issuer: I,
        options: RotationOptions,
    ) -> Result<Arc<MeshIdentity>, String> {
        let id = SpiffeId::parse(spiffe_id)
            .map_err(|e| format!("identity {spiffe_id:?} from the CA: {e}"))?;
        let bundle = trellis_identity::TrustBundle::from_pem(&issued.root_pem)
            .map_err(|e| format!("trust bundle from the CA: {e}"))?;
        let manager = IdentityManager::new(id.clone(), bundle);
        manager
            .install(&request.key, issued)
            .map_err(|e| format!("workload certificate for {id}: {e}"))?;
        let me = MeshIdentity::new(manager.clone())?;
        let handle = manager
            .spawn_rotation(issuer, options)
            .map_err(|e| e.to_string())?;
        *me.rotation.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
        Ok(me)
    }

    pub fn manager(&self) -> &Arc<IdentityManager> {
        &self.manager
    }

    /// Whether a workload certificate is installed.
    pub fn is_ready(&self) -> bool {
        self.manager.current().is_some()
    }

    fn build_client(&self, expected: &[String], alpn: Alpn) -> Result<ClientConfig, String> {
        let mut ids = Vec::with_capacity(expected.len());
        for e in expected {
            match SpiffeId::parse(e) {
                Ok(id) => ids.push(id),
                // A non-SPIFFE name (DestinationRule subjectAltNames with a DNS name) can never
                // match a mesh certificate.
                Err(err) => tracing::debug!("expected identity {e:?} ignored: {err}"),
            }
        }
        let bundle = self.manager.trust_bundle();
        let verifier = if expected.is_empty() {
            SpiffeServerVerifier::any_in_trust_domain(
                bundle,
                self.manager.identity().trust_domain(),
            )
        } else if ids.is_empty() {
            return Err(format!(
                "none of the expected identities {expected:?} is a SPIFFE id: no server can match"
            ));
        } else {
            SpiffeServerVerifier::new(bundle, ids)
        }
        .map_err(|e| e.to_string())?;
        let alpn = match alpn {
            Alpn::Http1 => vec![b"http/1.1".to_vec()],
            Alpn::Http2 => vec![b"h2".to_vec()],
            Alpn::None => Vec::new(),
        };
        client_config_with_verifier(self.manager.clone(), verifier, alpn).map_err(|e| e.to_string())
    }
}

impl MeshTlsProvider for MeshIdentity {
    fn client_config(
        &self,
        expected_identities: &[String],
        alpn: Alpn,
    ) -> Option<Arc<ClientConfig>> {
        if !self.is_ready() {
            return None;
        }
        let key = (expected_identities.to_vec(), alpn);
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = clients.get(&key) {
            return Some(c.clone());
        }
        match self.build_client(expected_identities, alpn) {
            Ok(c) => {
                let c = Arc::new(c);
                clients.insert(key, c.clone());
                Some(c)
            }
            Err(e) => {
                tracing::warn!("mesh mTLS client config: {e}");
                None
            }
        }
    }

    fn server_config(&self, http: bool) -> Arc<ServerConfig> {
        if http {
            self.server_http.clone()
        } else {
            self.server_raw.clone()
        }
    }

    fn identity(&self) -> String {
        self.manager.identity().to_uri()
    }
}

/// A server config whose handshakes always fail (no certificate): mesh mTLS chains of a proxy
/// that has no mesh identity. Fail closed rather than fall back to plaintext.
pub fn no_identity_server_config() -> Arc<ServerConfig> {
    static CONFIG: std::sync::OnceLock<Arc<ServerConfig>> = std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            #[derive(Debug)]
            struct NoCert;
            impl rustls::server::ResolvesServerCert for NoCert {
                fn resolve(
                    &self,
                    _: rustls::server::ClientHello<'_>,
                ) -> Option<Arc<rustls::sign::CertifiedKey>> {
                    None
                }
            }
            Arc::new(
                ServerConfig::builder_with_provider(crate::tls::provider())
                    .with_protocol_versions(&[&rustls::version::TLS13])
                    .expect("TLS 1.3 is supported")
                    .with_no_client_auth()
                    .with_cert_resolver(Arc::new(NoCert)),
            )
        })
        .clone()
}
