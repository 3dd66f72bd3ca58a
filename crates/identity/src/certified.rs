//! A workload's own credentials: its private key plus the certificate chain issued for it,
//! ready for rustls.
//!
//! Owns checking that a key and chain belong together and carry one SPIFFE id, and exposing them
//! as a rustls [`CertifiedKey`]. A [`CertifiedIdentity`] is a fixed credential; it implements
//! rustls's certificate resolvers so it can be handed to [`crate::tls`] builders directly
//! (rotating credentials come from [`crate::rotation::IdentityManager`] instead).

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use rcgen::{KeyPair, PublicKeyData};
use rustls::client::ResolvesClientCert;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::SignatureScheme;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};

use crate::bundle::TrustBundle;
use crate::ca::IssuedCert;
use crate::error::{Error, Result};
use crate::pem::{
    certs_from_pem, parse_cert, private_key_from_pem, serial_hex, spiffe_id_of, validity,
};
use crate::spiffe::SpiffeId;

/// A private key with its certificate chain and the SPIFFE id the leaf certifies.
pub struct CertifiedIdentity {
    id: SpiffeId,
    key: Arc<CertifiedKey>,
    not_before: SystemTime,
    not_after: SystemTime,
    serial: String,
}

impl CertifiedIdentity {
    /// Pair a DER chain (leaf first, then intermediates) with its private key. The leaf must
    /// carry exactly one URI SAN holding a valid SPIFFE id, and the key must be the leaf's.
    pub fn new(chain: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>) -> Result<Self> {
        let leaf = chain
            .first()
            .ok_or_else(|| Error::InvalidCertificate("empty certificate chain".into()))?;
        let parsed = parse_cert(leaf.as_ref(), "leaf certificate")?;
        let id = spiffe_id_of(&parsed)?;
        let (not_before, not_after) = validity(&parsed);
        let serial = serial_hex(&parsed);
        let rcgen_key = KeyPair::try_from(&key)
            .map_err(|e| Error::UnsupportedKey(format!("workload key: {e}")))?;
        if rcgen_key.subject_public_key_info() != parsed.public_key().raw {
            return Err(Error::KeyMismatch(format!(
                "the private key is not the key of the certificate for {id}"
            )));
        }
        let signing_key = crate::tls::provider()
            .key_provider
            .load_private_key(key)
            .map_err(|e| Error::UnsupportedKey(e.to_string()))?;
        Ok(CertifiedIdentity {
            id,
            key: Arc::new(CertifiedKey::new(chain, signing_key)),
            not_before,
            not_after,
            serial,
        })
    }

    /// Parse a PEM chain (leaf first) and a PEM private key.
    pub fn from_pem(chain_pem: &str, key_pem: &str) -> Result<Self> {
        let chain = certs_from_pem(chain_pem, "certificate chain")?;
        let key = private_key_from_pem(key_pem, "private key")?;
        Self::new(chain, key)
    }

    /// Combine the key a workload generated (see [`crate::csr`]) with what a CA issued for it.
    pub fn from_issued(key: &KeyPair, issued: &IssuedCert) -> Result<Self> {
        let chain = certs_from_pem(&issued.chain_pem, "issued certificate chain")?;
        let key_der = PrivateKeyDer::from(PrivatePkcs8KeyDer::from(key.serialize_der()));
        Self::new(chain, key_der)
    }

    /// Check the chain against `bundle` as a peer would, for both server and client use.
    pub fn verify(&self, bundle: &TrustBundle) -> Result<()> {
        let chain = &self.key.cert;
        let algorithms = crate::tls::provider().signature_verification_algorithms;
        for usage in [
            webpki::KeyUsage::server_auth(),
            webpki::KeyUsage::client_auth(),
        ] {
            crate::tls::verify_chain(
                &algorithms,
                bundle,
                &chain[0],
                &chain[1..],
                UnixTime::now(),
                usage,
            )
            .map_err(|e| {
                Error::InvalidCertificate(format!(
                    "certificate for {} does not verify against the trust bundle: {e}",
                    self.id
                ))
            })?;
        }
        Ok(())
    }

    /// The SPIFFE id the leaf certifies.
    pub fn id(&self) -> &SpiffeId {
        &self.id
    }

    /// The rustls form (chain + signing key).
    pub fn certified_key(&self) -> &Arc<CertifiedKey> {
        &self.key
    }

    /// The DER chain, leaf first.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.key.cert
    }

    /// Start of the leaf's validity.
    pub fn not_before(&self) -> SystemTime {
        self.not_before
    }

    /// End of the leaf's validity.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// The leaf's serial number, upper-case hex.
    pub fn serial_hex(&self) -> &str {
        &self.serial
    }
}

impl fmt::Debug for CertifiedIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertifiedIdentity")
            .field("id", &self.id.to_string())
            .field("serial", &self.serial)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .field("chain_len", &self.key.cert.len())
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for CertifiedIdentity {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.key.clone())
    }
}

impl ResolvesClientCert for CertifiedIdentity {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.key.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}
