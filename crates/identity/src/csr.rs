//! Workload-side key generation and certificate signing requests.
//!
//! Owns creating a fresh ECDSA P-256 key and a CSR naming the workload's SPIFFE id as its URI
//! SAN (what Istio's agent sends). The private key never leaves the caller: only the CSR is
//! sent to a CA, which takes nothing from it but the public key.

use rcgen::{CertificateParams, DistinguishedName, KeyPair, SanType};

use crate::error::{Error, Result};
use crate::spiffe::SpiffeId;

/// A freshly generated workload key and the PEM CSR for it.
pub struct KeyAndCsr {
    /// The private key (ECDSA P-256). Keep it; never send it.
    pub key: KeyPair,
    /// The PEM `CERTIFICATE REQUEST` to send to a CA.
    pub csr_pem: String,
}

impl std::fmt::Debug for KeyAndCsr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyAndCsr")
            .field("key", &"<redacted>")
            .field("csr_pem", &self.csr_pem)
            .finish()
    }
}

/// Generate an ECDSA P-256 key and a CSR asking for `identity` as the URI SAN.
pub fn generate_key_and_csr(identity: &SpiffeId) -> Result<KeyAndCsr> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| Error::Generate(e.to_string()))?;
    let csr_pem = csr_for_key(&key, identity)?;
    Ok(KeyAndCsr { key, csr_pem })
}

/// An ECDSA P-256 key and a CSR that names no identity: the first request to a CA that decides
/// the identity itself (the control plane, from the workload it authenticated), when the
/// workload does not know its service account yet. The CA takes only the public key.
pub fn generate_key_and_bare_csr() -> Result<KeyAndCsr> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| Error::Generate(e.to_string()))?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    let csr_pem = params
        .serialize_request(&key)
        .and_then(|c| c.pem())
        .map_err(|e| Error::Generate(e.to_string()))?;
    Ok(KeyAndCsr { key, csr_pem })
}

/// A PEM CSR for an existing key, asking for `identity` as the URI SAN.
pub fn csr_for_key(key: &KeyPair, identity: &SpiffeId) -> Result<String> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    let uri = rcgen::string::Ia5String::try_from(identity.to_uri())
        .map_err(|e| Error::Generate(e.to_string()))?;
    params.subject_alt_names = vec![SanType::URI(uri)];
    let csr = params
        .serialize_request(key)
        .map_err(|e| Error::Generate(e.to_string()))?;
    csr.pem().map_err(|e| Error::Generate(e.to_string()))
}
