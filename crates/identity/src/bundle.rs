//! Trust bundles: the set of root certificates a workload trusts (`root-cert.pem`).
//!
//! Owns the list of roots and their pre-parsed webpki trust anchors, so verifiers can be built
//! per connection without re-parsing. A bundle may hold several roots, which is how a root
//! rotation is rolled out: first distribute old + new roots, then switch the signing CA, then
//! drop the old root. Also owns [`SharedTrustBundle`], a swappable handle the TLS verifiers read
//! on every handshake so a bundle update reaches configs that were built once.

use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls_pki_types::{CertificateDer, TrustAnchor};

use crate::error::{Error, Result};
use crate::pem::{certs_from_pem, certs_to_pem, is_ca, parse_cert};

/// An immutable, cheaply clonable set of trusted root certificates.
#[derive(Clone)]
pub struct TrustBundle {
    inner: Arc<Inner>,
}

struct Inner {
    roots: Vec<CertificateDer<'static>>,
    anchors: Vec<TrustAnchor<'static>>,
}

impl TrustBundle {
    /// Build a bundle from DER roots. Each must parse as an X.509 CA certificate
    /// (`CA:TRUE`); duplicates are dropped; an empty list is an error.
    pub fn new(roots: impl IntoIterator<Item = CertificateDer<'static>>) -> Result<Self> {
        let mut unique: Vec<CertificateDer<'static>> = Vec::new();
        for root in roots {
            if !unique.contains(&root) {
                unique.push(root);
            }
        }
        if unique.is_empty() {
            return Err(Error::InvalidCertificate(
                "trust bundle holds no root certificate".into(),
            ));
        }
        let mut anchors = Vec::with_capacity(unique.len());
        for (i, root) in unique.iter().enumerate() {
            let parsed = parse_cert(root.as_ref(), &format!("trust bundle root #{}", i + 1))?;
            if !is_ca(&parsed) {
                return Err(Error::InvalidCertificate(format!(
                    "trust bundle root #{} ({}) is not a CA certificate",
                    i + 1,
                    parsed.subject()
                )));
            }
            let anchor = webpki::anchor_from_trusted_cert(root).map_err(|e| {
                Error::InvalidCertificate(format!("trust bundle root #{}: {e}", i + 1))
            })?;
            anchors.push(anchor.to_owned());
        }
        Ok(TrustBundle {
            inner: Arc::new(Inner {
                roots: unique,
                anchors,
            }),
        })
    }

    /// Parse a bundle from PEM (one or more `CERTIFICATE` blocks).
    pub fn from_pem(pem: &str) -> Result<Self> {
        Self::new(certs_from_pem(pem, "trust bundle")?)
    }

    /// The bundle as consecutive PEM blocks (the content of `root-cert.pem`).
    pub fn to_pem(&self) -> String {
        certs_to_pem(self.inner.roots.iter())
    }

    /// The root certificates, in the order given.
    pub fn roots(&self) -> &[CertificateDer<'static>] {
        &self.inner.roots
    }

    /// Number of roots.
    pub fn len(&self) -> usize {
        self.inner.roots.len()
    }

    /// Always false: a bundle holds at least one root.
    pub fn is_empty(&self) -> bool {
        self.inner.roots.is_empty()
    }

    /// Whether `cert` is one of the roots (byte-identical).
    pub fn contains(&self, cert: &CertificateDer<'_>) -> bool {
        self.inner.roots.iter().any(|r| r.as_ref() == cert.as_ref())
    }

    /// The union of two bundles (this one's roots first), for root rotation.
    pub fn merged(&self, other: &TrustBundle) -> TrustBundle {
        let mut roots = self.inner.roots.clone();
        let mut anchors = self.inner.anchors.clone();
        for (root, anchor) in other.inner.roots.iter().zip(&other.inner.anchors) {
            if !roots.contains(root) {
                roots.push(root.clone());
                anchors.push(anchor.clone());
            }
        }
        TrustBundle {
            inner: Arc::new(Inner { roots, anchors }),
        }
    }

    pub(crate) fn anchors(&self) -> &[TrustAnchor<'static>] {
        &self.inner.anchors
    }
}

impl PartialEq for TrustBundle {
    fn eq(&self, other: &Self) -> bool {
        self.inner.roots == other.inner.roots
    }
}

impl Eq for TrustBundle {}

impl fmt::Debug for TrustBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let subjects: Vec<String> = self
            .inner
            .roots
            .iter()
            .map(|r| match parse_cert(r.as_ref(), "root") {
                Ok(c) => c.subject().to_string(),
                Err(_) => "<unparseable>".to_string(),
            })
            .collect();
        f.debug_struct("TrustBundle")
            .field("roots", &subjects)
            .finish()
    }
}

/// A trust bundle that can be replaced at run time; TLS verifiers built from it read the
/// current bundle on every handshake. Clones share the same slot.
#[derive(Clone)]
pub struct SharedTrustBundle {
    slot: Arc<ArcSwap<TrustBundle>>,
}

impl SharedTrustBundle {
    /// A shared slot holding `bundle`.
    pub fn new(bundle: TrustBundle) -> Self {
        SharedTrustBundle {
            slot: Arc::new(ArcSwap::from_pointee(bundle)),
        }
    }

    /// The current bundle.
    pub fn load(&self) -> Arc<TrustBundle> {
        self.slot.load_full()
    }

    /// Replace the bundle; handshakes that start afterwards use the new one.
    pub fn store(&self, bundle: TrustBundle) {
        self.slot.store(Arc::new(bundle));
    }
}

impl From<TrustBundle> for SharedTrustBundle {
    fn from(bundle: TrustBundle) -> Self {
        SharedTrustBundle::new(bundle)
    }
}

impl From<&TrustBundle> for SharedTrustBundle {
    fn from(bundle: &TrustBundle) -> Self {
        SharedTrustBundle::new(bundle.clone())
    }
}

impl fmt::Debug for SharedTrustBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SharedTrustBundle")
            .field(&*self.slot.load())
            .finish()
    }
}
