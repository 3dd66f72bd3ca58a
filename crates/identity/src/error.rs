//! The crate's error type: every fallible operation (parsing ids, PEM, CSRs, loading a CA,
//! signing, building TLS configs, rotation) reports one of these instead of panicking.

use std::path::PathBuf;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in `trellis-identity`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A SPIFFE id or Istio principal did not have the strict
    /// `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>` shape.
    #[error("invalid SPIFFE id {input:?}: {reason}")]
    InvalidSpiffeId {
        /// The rejected input (truncated to 256 characters).
        input: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// A trust domain name is not a lowercase DNS-like name.
    #[error("invalid trust domain {input:?}: {reason}")]
    InvalidTrustDomain {
        /// The rejected input (truncated to 256 characters).
        input: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// PEM text could not be decoded, or held no object of the expected kind.
    #[error("{what}: {reason}")]
    Pem {
        /// What was being read (for example `ca-cert.pem` or `CSR`).
        what: String,
        /// Why it failed.
        reason: String,
    },
    /// A certificate signing request is malformed, unsupported or its signature is invalid.
    #[error("certificate signing request rejected: {0}")]
    Csr(String),
    /// A key of an unsupported type or size.
    #[error("unsupported key: {0}")]
    UnsupportedKey(String),
    /// A private key does not belong to the certificate it is paired with.
    #[error("private key does not match certificate: {0}")]
    KeyMismatch(String),
    /// A certificate is malformed or lacks a property this crate requires.
    #[error("invalid certificate: {0}")]
    InvalidCertificate(String),
    /// A CA (generated, loaded or plug-in) is unusable.
    #[error("invalid CA: {0}")]
    InvalidCa(String),
    /// A requested certificate lifetime is unusable.
    #[error("invalid certificate lifetime: {0}")]
    InvalidTtl(String),
    /// Certificate generation failed inside the X.509 encoder.
    #[error("certificate generation failed: {0}")]
    Generate(String),
    /// Building a TLS configuration failed.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A certificate issuer (local CA or remote CA service) failed to issue a certificate.
    #[error("certificate issuance failed: {0}")]
    Issue(String),
}

impl Error {
    pub(crate) fn pem(what: impl Into<String>, reason: impl ToString) -> Self {
        Error::Pem {
            what: what.into(),
            reason: reason.to_string(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// Truncate attacker-controlled input before it is echoed in an error message.
pub(crate) fn truncate_for_error(input: &str) -> String {
    const MAX: usize = 256;
    if input.len() <= MAX {
        return input.to_string();
    }
    let mut end = MAX;
    while !input.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &input[..end])
}
