//! The mesh certificate authority: a self-signed root or an Istio plug-in CA, and signing of
//! workload CSRs into SPIFFE X.509 certificates.
//!
//! Owns the CA key and certificate chain, the on-disk layout shared with Istio's plug-in CA
//! (`ca-cert.pem`, `ca-key.pem`, `root-cert.pem`, `cert-chain.pem`), the issuance policy
//! (exactly one URI SAN chosen by the caller, never by the CSR; leaf-only key usages; bounded
//! lifetimes) and the [`IssuedCert`] handed back to workloads. Authenticating who asked for a
//! certificate is the caller's job (the control plane's CA service); this module trusts the
//! identity it is given and nothing in the CSR except its public key.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber, SubjectPublicKeyInfo,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;

use crate::bundle::TrustBundle;
use crate::error::{Error, Result};
use crate::pem::{
    certs_from_pem, certs_to_pem, csr_der_from_pem, is_ca, parse_cert, private_key_from_pem,
    private_key_to_pem, validity,
};
use crate::spiffe::{validate_trust_domain, SpiffeId};

/// Istio plug-in CA file: the CA's signing certificate.
pub const CA_CERT_FILE: &str = "ca-cert.pem";
/// Istio plug-in CA file: the CA's private key.
pub const CA_KEY_FILE: &str = "ca-key.pem";
/// Istio plug-in CA file: the root certificate(s) workloads trust.
pub const ROOT_CERT_FILE: &str = "root-cert.pem";
/// Istio plug-in CA file: the chain from `ca-cert.pem` up to the root.
pub const CERT_CHAIN_FILE: &str = "cert-chain.pem";

/// Default workload certificate lifetime (Istio's default).
pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);
/// Default cap on workload certificate lifetimes.
pub const DEFAULT_MAX_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// Lifetime of a generated self-signed root.
pub const ROOT_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How far `notBefore` is back-dated to tolerate clock skew between peers.
pub const BACKDATE: Duration = Duration::from_secs(60);

/// Smallest RSA modulus accepted in a CSR.
const MIN_RSA_BITS: usize = 2048;
/// Largest RSA modulus accepted in a CSR (bounds verification cost).
const MAX_RSA_BITS: usize = 8192;

/// Issuance policy knobs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CaOptions {
    /// Lifetime used when a caller asks for [`Duration::ZERO`].
    pub default_ttl: Duration,
    /// Longer requested lifetimes are capped to this.
    pub max_ttl: Duration,
}

impl Default for CaOptions {
    fn default() -> Self {
        CaOptions {
            default_ttl: DEFAULT_TTL,
            max_ttl: DEFAULT_MAX_TTL,
        }
    }
}

/// A certificate issued to a workload, in the PEM forms Istio hands out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedCert {
    /// The leaf certificate alone.
    pub leaf_pem: String,
    /// The chain to present in TLS: the leaf, then any intermediates (not the root).
    pub chain_pem: String,
    /// The trust bundle: every root certificate workloads should trust.
    pub root_pem: String,
}

/// A certificate authority that signs workload certificates.
pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    /// The signing key as loaded (kept in its original encoding for [`Self::save`]).
    key_der: PrivateKeyDer<'static>,
    ca_cert: CertificateDer<'static>,
    /// `cert-chain.pem`: the signing cert first, up to (and possibly including) the root.
    cert_chain: Vec<CertificateDer<'static>>,
    /// The certificates sent after a leaf: `cert_chain` without the roots.
    intermediates: Vec<CertificateDer<'static>>,
    bundle: TrustBundle,
    ca_not_after: SystemTime,
    options: CaOptions,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let subject = parse_cert(self.ca_cert.as_ref(), "ca-cert")
            .map(|c| c.subject().to_string())
            .unwrap_or_default();
        f.debug_struct("CertificateAuthority")
            .field("subject", &subject)
            .field("intermediates", &self.intermediates.len())
            .field("bundle", &self.bundle)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// Generate a self-signed root CA: ECDSA P-256, `CA:TRUE`, keyCertSign + cRLSign, valid for
    /// ten years, subject `O=<org>, CN=Trellis root CA (<trust_domain>)`.
    pub fn generate(trust_domain: &str, org: &str) -> Result<Self> {
        validate_trust_domain(trust_domain)?;
        if org.is_empty() {
            return Err(Error::InvalidCa("organization must not be empty".into()));
        }
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| Error::Generate(e.to_string()))?;
        let now = SystemTime::now();
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::OrganizationName, org.to_string());
        params.distinguished_name.push(
            DnType::CommonName,
            format!("Trellis root CA ({trust_domain})"),
        );
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = (now - BACKDATE).into();
        params.not_after = (now + ROOT_VALIDITY).into();
        params.serial_number = Some(random_serial());
        let root = params
            .self_signed(&key)
            .map_err(|e| Error::Generate(e.to_string()))?;
        let root_der = root.der().clone();
        let key_der = PrivateKeyDer::from(rustls_pki_types::PrivatePkcs8KeyDer::from(
            key.serialize_der(),
        ));
        Self::assemble(
            key_der,
            root_der.clone(),
            vec![root_der.clone()],
            TrustBundle::new([root_der])?,
        )
    }

    /// Load an Istio plug-in CA directory: `ca-cert.pem` (the signing certificate),
    /// `ca-key.pem` (its key: PKCS#8, PKCS#1 RSA or SEC1 EC), `root-cert.pem` (one or more
    /// roots) and `cert-chain.pem` (from `ca-cert` up to the root; optional when `ca-cert` is
    /// signed directly by a root).
    ///
    /// Validates that the key matches the certificate, that the certificate is a CA allowed to
    /// sign certificates and currently valid, and, by issuing and verifying a probe leaf, that
    /// certificates it signs chain to `root-cert.pem`.
    pub fn load_plugin(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let ca_cert_pem = read(dir, CA_CERT_FILE)?;
        let ca_key_pem = read(dir, CA_KEY_FILE)?;
        let root_pem = read(dir, ROOT_CERT_FILE)?;
        let chain_path = dir.join(CERT_CHAIN_FILE);
        let chain_pem = match fs::read_to_string(&chain_path) {
            Ok(text) => Some(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io(chain_path, e)),
        };

        let mut ca_certs = certs_from_pem(&ca_cert_pem, CA_CERT_FILE)?;
        if ca_certs.len() != 1 {
            return Err(Error::InvalidCa(format!(
                "{CA_CERT_FILE} must hold exactly one certificate, found {}",
                ca_certs.len()
            )));
        }
        let ca_cert = ca_certs.remove(0);
        let key_der = private_key_from_pem(&ca_key_pem, CA_KEY_FILE)?;
        let bundle = TrustBundle::from_pem(&root_pem).map_err(|e| match e {
            Error::Pem { reason, .. } => Error::pem(ROOT_CERT_FILE, reason),
            Error::InvalidCertificate(m) => Error::InvalidCa(format!("{ROOT_CERT_FILE}: {m}")),
            other => other,
        })?;
        let cert_chain = match chain_pem {
            Some(text) => certs_from_pem(&text, CERT_CHAIN_FILE)?,
            None => vec![ca_cert.clone()],
        };
        if cert_chain.first() != Some(&ca_cert) {
            return Err(Error::InvalidCa(format!(
                "{CERT_CHAIN_FILE} must start with the certificate in {CA_CERT_FILE}"
            )));
        }
        Self::assemble(key_der, ca_cert, cert_chain, bundle)
    }

    /// Load the CA in `dir` if it holds one, otherwise generate a self-signed root (see
    /// [`Self::generate`]) and save it there, so a local mesh keeps its root across restarts.
    /// A directory holding only some of the files is an error rather than being overwritten.
    pub fn load_or_generate(dir: impl AsRef<Path>, trust_domain: &str, org: &str) -> Result<Self> {
        let dir = dir.as_ref();
        let present: Vec<&str> = [CA_CERT_FILE, CA_KEY_FILE, ROOT_CERT_FILE]
            .into_iter()
            .filter(|f| dir.join(f).exists())
            .collect();
        match present.len() {
            3 => Self::load_plugin(dir),
            0 => {
                let ca = Self::generate(trust_domain, org)?;
                ca.save(dir)?;
                tracing::info!(dir = %dir.display(), "generated a new self-signed mesh root CA");
                Ok(ca)
            }
            _ => Err(Error::InvalidCa(format!(
                "{} holds only {} of {CA_CERT_FILE}, {CA_KEY_FILE}, {ROOT_CERT_FILE}; \
                 refusing to overwrite a partial CA",
                dir.display(),
                present.join(", ")
            ))),
        }
    }

    /// Write the plug-in layout (`ca-cert.pem`, `ca-key.pem` with mode 0600, `root-cert.pem`,
    /// `cert-chain.pem`) into `dir`, creating it. Each file is written to a temporary name and
    /// renamed into place.
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        write_atomic(
            &dir.join(CA_KEY_FILE),
            &private_key_to_pem(&self.key_der),
            true,
        )?;
        write_atomic(
            &dir.join(CA_CERT_FILE),
            &certs_to_pem([&self.ca_cert]),
            false,
        )?;
        write_atomic(
            &dir.join(CERT_CHAIN_FILE),
            &certs_to_pem(self.cert_chain.iter()),
            false,
        )?;
        write_atomic(&dir.join(ROOT_CERT_FILE), &self.bundle.to_pem(), false)?;
        Ok(())
    }

    /// Replace the issuance policy.
    pub fn with_options(mut self, options: CaOptions) -> Result<Self> {
        if options.default_ttl.is_zero() || options.max_ttl.is_zero() {
            return Err(Error::InvalidTtl("TTLs must be positive".into()));
        }
        if options.default_ttl > options.max_ttl {
            return Err(Error::InvalidTtl(format!(
                "default TTL {:?} exceeds max TTL {:?}",
                options.default_ttl, options.max_ttl
            )));
        }
        self.options = options;
        Ok(self)
    }

    /// The issuance policy in force.
    pub fn options(&self) -> CaOptions {
        self.options
    }

    /// The trust bundle (`root-cert.pem`).
    pub fn trust_bundle(&self) -> &TrustBundle {
        &self.bundle
    }

    /// The trust bundle as PEM.
    pub fn root_pem(&self) -> String {
        self.bundle.to_pem()
    }

    /// The signing certificate (`ca-cert.pem`).
    pub fn ca_cert(&self) -> &CertificateDer<'static> {
        &self.ca_cert
    }

    /// `cert-chain.pem`: the signing certificate up to the root.
    pub fn cert_chain(&self) -> &[CertificateDer<'static>] {
        &self.cert_chain
    }

    /// When the signing certificate expires; issued leaves never outlive it.
    pub fn not_after(&self) -> SystemTime {
        self.ca_not_after
    }

    /// Replace the trust bundle, e.g. with old + new roots during a root rotation. The bundle
    /// must still verify what this CA signs.
    pub fn set_trust_bundle(&mut self, bundle: TrustBundle) -> Result<()> {
        let intermediates = strip_roots(&self.cert_chain, &bundle);
        self.probe(&bundle, &intermediates)?;
        self.bundle = bundle;
        self.intermediates = intermediates;
        Ok(())
    }

    /// Sign a workload CSR.
    ///
    /// The CSR's signature is verified (proof that the requester holds the key), and its public
    /// key is the only thing taken from it: any subject, SANs or extensions it asks for are
    /// ignored. The leaf gets exactly one URI SAN, `identity` (which the caller must have
    /// authenticated), an empty subject, `CA:FALSE`, digitalSignature + keyEncipherment,
    /// serverAuth + clientAuth, a random 128-bit serial and validity from one minute ago to
    /// `ttl` from now. `ttl` of zero means the default; longer than the maximum is capped, and
    /// the leaf never outlives the CA certificate.
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        identity: &SpiffeId,
        ttl: Duration,
    ) -> Result<IssuedCert> {
        let spki = verified_csr_public_key(csr_pem)?;
        let ttl = if ttl.is_zero() {
            self.options.default_ttl
        } else if ttl > self.options.max_ttl {
            tracing::debug!(requested = ?ttl, max = ?self.options.max_ttl, "capping certificate TTL");
            self.options.max_ttl
        } else {
            ttl
        };
        let leaf = self.issue_leaf(&spki, identity, ttl)?;
        Ok(self.issued(leaf))
    }

    fn issued(&self, leaf: CertificateDer<'static>) -> IssuedCert {
        let leaf_pem = certs_to_pem([&leaf]);
        let chain_pem = certs_to_pem(std::iter::once(&leaf).chain(self.intermediates.iter()));
        IssuedCert {
            leaf_pem,
            chain_pem,
            root_pem: self.bundle.to_pem(),
        }
    }

    fn issue_leaf(
        &self,
        public_key: &impl PublicKeyData,
        identity: &SpiffeId,
        ttl: Duration,
    ) -> Result<CertificateDer<'static>> {
        let now = SystemTime::now();
        if now >= self.ca_not_after {
            return Err(Error::InvalidCa("the CA certificate has expired".into()));
        }
        let not_after = (now + ttl).min(self.ca_not_after);
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        let uri = rcgen::string::Ia5String::try_from(identity.to_uri())
            .map_err(|e| Error::Generate(e.to_string()))?;
        params.subject_alt_names = vec![SanType::URI(uri)];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.not_before = (now - BACKDATE).into();
        params.not_after = not_after.into();
        params.serial_number = Some(random_serial());
        let cert = params
            .signed_by(public_key, &self.issuer)
            .map_err(|e| Error::Generate(e.to_string()))?;
        Ok(cert.der().clone())
    }

    /// Build a CA from its parts and prove it works: the key matches the signing certificate,
    /// which is a currently valid CA, and a probe leaf it signs verifies against `bundle`.
    fn assemble(
        key_der: PrivateKeyDer<'static>,
        ca_cert: CertificateDer<'static>,
        cert_chain: Vec<CertificateDer<'static>>,
        bundle: TrustBundle,
    ) -> Result<Self> {
        let key = KeyPair::try_from(&key_der).map_err(|e| {
            Error::UnsupportedKey(format!(
                "{CA_KEY_FILE}: {e} (supported: ECDSA P-256/P-384/P-521, Ed25519, RSA)"
            ))
        })?;
        let parsed = parse_cert(ca_cert.as_ref(), CA_CERT_FILE)?;
        if key.subject_public_key_info() != parsed.public_key().raw {
            return Err(Error::KeyMismatch(format!(
                "{CA_KEY_FILE} is not the key of {CA_CERT_FILE} ({})",
                parsed.subject()
            )));
        }
        if !is_ca(&parsed) {
            return Err(Error::InvalidCa(format!(
                "{CA_CERT_FILE} ({}) is not a CA certificate (basicConstraints CA:TRUE missing)",
                parsed.subject()
            )));
        }
        if let Ok(Some(ku)) = parsed.key_usage() {
            if !ku.value.key_cert_sign() {
                return Err(Error::InvalidCa(format!(
                    "{CA_CERT_FILE} ({}) lacks the keyCertSign key usage",
                    parsed.subject()
                )));
            }
        }
        let (not_before, ca_not_after) = validity(&parsed);
        let now = SystemTime::now();
        if now < not_before {
            return Err(Error::InvalidCa(format!(
                "{CA_CERT_FILE} ({}) is not valid yet",
                parsed.subject()
            )));
        }
        if now >= ca_not_after {
            return Err(Error::InvalidCa(format!(
                "{CA_CERT_FILE} ({}) has expired",
                parsed.subject()
            )));
        }
        // rcgen re-encodes the issuer name; it cannot represent multi-valued RDNs (and would
        // panic on an empty one), so refuse those up front.
        for rdn in parsed.subject().iter() {
            if rdn.iter().count() != 1 {
                return Err(Error::InvalidCa(format!(
                    "{CA_CERT_FILE} subject has a multi-valued or empty RDN, which is not supported"
                )));
            }
        }
        let issuer = Issuer::from_ca_cert_der(&ca_cert, key)
            .map_err(|e| Error::InvalidCa(format!("{CA_CERT_FILE}: {e}")))?;
        let intermediates = strip_roots(&cert_chain, &bundle);
        let ca = CertificateAuthority {
            issuer,
            key_der,
            ca_cert,
            cert_chain,
            intermediates,
            bundle,
            ca_not_after,
            options: CaOptions::default(),
        };
        ca.probe(&ca.bundle, &ca.intermediates)?;
        Ok(ca)
    }

    /// Issue a short-lived leaf for a throw-away key and check that it verifies against
    /// `bundle` with `intermediates`, exactly as a peer would check it.
    fn probe(&self, bundle: &TrustBundle, intermediates: &[CertificateDer<'static>]) -> Result<()> {
        let probe_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| Error::Generate(e.to_string()))?;
        let probe_id = SpiffeId::new("trellis.probe", "trellis-system", "ca-probe")?;
        let leaf = self.issue_leaf(&probe_key, &probe_id, Duration::from_secs(300))?;
        let leaf_parsed = parse_cert(leaf.as_ref(), "probe leaf")?;
        let ca_parsed = parse_cert(self.ca_cert.as_ref(), CA_CERT_FILE)?;
        if leaf_parsed.issuer().as_raw() != ca_parsed.subject().as_raw() {
            return Err(Error::InvalidCa(format!(
                "the subject of {CA_CERT_FILE} ({}) cannot be reproduced exactly as an issuer name \
                 (repeated attribute types are not supported)",
                ca_parsed.subject()
            )));
        }
        crate::tls::verify_chain(
            &crate::tls::provider().signature_verification_algorithms,
            bundle,
            &leaf,
            intermediates,
            UnixTime::now(),
            webpki::KeyUsage::client_auth(),
        )
        .map_err(|e| {
            Error::InvalidCa(format!(
                "certificates signed by {CA_CERT_FILE} do not verify against {ROOT_CERT_FILE} \
                 with {CERT_CHAIN_FILE}: {e}"
            ))
        })
    }
}

/// Parse a CSR, verify its self-signature and return its public key (checked to be of a
/// supported type and size).
fn verified_csr_public_key(csr_pem: &str) -> Result<SubjectPublicKeyInfo> {
    let der = csr_der_from_pem(csr_pem)?;
    let csr = match X509CertificationRequest::from_der(&der) {
        Ok(([], csr)) => csr,
        Ok(_) => return Err(Error::Csr("trailing bytes after the request".into())),
        Err(e) => return Err(Error::Csr(format!("malformed request: {e}"))),
    };
    csr.verify_signature()
        .map_err(|e| Error::Csr(format!("signature does not verify: {e}")))?;
    let spki = &csr.certification_request_info.subject_pki;
    match spki.parsed() {
        Ok(PublicKey::RSA(rsa)) => {
            let bits = rsa.key_size();
            if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
                return Err(Error::UnsupportedKey(format!(
                    "RSA key of {bits} bits (accepted: {MIN_RSA_BITS}..={MAX_RSA_BITS})"
                )));
            }
        }
        Ok(PublicKey::EC(_)) => {}
        Ok(_) if spki.algorithm.algorithm == x509_parser::oid_registry::OID_SIG_ED25519 => {}
        Ok(_) | Err(_) => {
            return Err(Error::UnsupportedKey(format!(
                "public key algorithm {} (accepted: ECDSA P-256/P-384, Ed25519, RSA)",
                spki.algorithm.algorithm
            )))
        }
    }
    SubjectPublicKeyInfo::from_der(spki.raw).map_err(|e| Error::UnsupportedKey(e.to_string()))
}

/// The chain without any certificate that is itself a trusted root.
fn strip_roots(
    chain: &[CertificateDer<'static>],
    bundle: &TrustBundle,
) -> Vec<CertificateDer<'static>> {
    chain
        .iter()
        .filter(|c| !bundle.contains(c))
        .cloned()
        .collect()
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    // Positive, and a non-zero first byte so the encoding is always 16 bytes.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    SerialNumber::from_slice(&bytes)
}

fn read(dir: &Path, name: &str) -> Result<String> {
    let path = dir.join(name);
    fs::read_to_string(&path).map_err(|e| Error::io(path, e))
}

fn write_atomic(path: &Path, contents: &str, secret: bool) -> Result<()> {
    let tmp: PathBuf = {
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(".tmp");
        path.with_file_name(name)
    };
    // A stale temporary file would keep its old permissions: start afresh.
    let _ = fs::remove_file(&tmp);
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(if secret { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut file = options.open(&tmp).map_err(|e| Error::io(&tmp, e))?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io(&tmp, e))?;
    drop(file);
    fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}
