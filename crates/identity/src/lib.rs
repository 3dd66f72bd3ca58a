//! Trellis identity: the mesh certificate authority and the SPIFFE mTLS building blocks.
//!
//! - [`spiffe`]: `spiffe://<td>/ns/<ns>/sa/<sa>` ids and Istio principals, strictly parsed.
//! - [`ca`]: a self-signed or Istio plug-in CA that signs workload CSRs.
//! - [`csr`]: workload key + CSR generation (the key never leaves the workload).
//! - [`bundle`]: trust bundles (one or more roots) and a swappable shared bundle.
//! - [`certified`]: a workload's key + issued chain, ready for rustls.
//! - [`tls`]: rustls client/server configs with SPIFFE peer verification (aws-lc-rs, TLS 1.3).
//! - [`rotation`]: an identity manager that renews certificates at half-life and serves the
//!   current one to configs built once.
//! - [`pem`]: PEM/X.509 helpers.
//!
//! Nothing here authenticates *who* asks for a certificate: the control plane's CA service
//! does, then calls [`CertificateAuthority::sign_csr`] with the identity it established.
//!
//! ```
//! use std::{sync::Arc, time::Duration};
//! use trellis_identity::*;
//!
//! # fn main() -> Result<()> {
//! let ca = CertificateAuthority::generate("cluster.local", "Example")?;
//! let gateway = SpiffeId::parse("spiffe://cluster.local/ns/default/sa/service-gateway")?;
//!
//! // The workload makes a key and CSR; the CA signs for the identity the caller vouches for.
//! let request = generate_key_and_csr(&gateway)?;
//! let issued = ca.sign_csr(&request.csr_pem, &gateway, Duration::ZERO)?;
//! let me = Arc::new(CertifiedIdentity::from_issued(&request.key, &issued)?);
//!
//! // Server side: mTLS required. Client side: only the destination's identities are accepted.
//! let _server = server_config(me.clone(), ca.trust_bundle(), ClientAuth::Required, vec![])?;
//! let _client = client_config(me, ca.trust_bundle(), vec![gateway.clone()], vec![])?;
//! assert_eq!(gateway.to_principal(), "cluster.local/ns/default/sa/service-gateway");
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

pub mod bundle;
pub mod ca;
pub mod certified;
pub mod csr;
pub mod error;
pub mod pem;
pub mod rotation;
pub mod spiffe;
pub mod tls;

pub use bundle::{SharedTrustBundle, TrustBundle};
pub use ca::{CaOptions, CertificateAuthority, IssuedCert};
pub use certified::CertifiedIdentity;
pub use csr::{generate_key_and_bare_csr, generate_key_and_csr, KeyAndCsr};
pub use error::{Error, Result};
pub use rotation::{
    CertificateIssuer, IdentityManager, LocalIssuer, RotationHandle, RotationOptions,
};
pub use spiffe::SpiffeId;
pub use tls::{client_config, peer_identity, server_config, ClientAuth};
