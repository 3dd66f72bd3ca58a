//! Downstream TLS termination: rustls `ServerConfig`s built from the config's secrets.
//!
//! A `ServerConfig` is built when a config is applied, never per connection, and reused across
//! applies while its inputs (the chain's TLS settings and the secrets' PEM) are unchanged, so
//! session resumption survives reloads. Building is also the validation of a secret: a config
//! whose certificate or key does not load is rejected before it is swapped in.
//!
//! Secrets come from the compiled config (`ProxyConfig::secrets`, e.g. gateway
//! `credentialName` Secrets) or from files named on the command line ([`SecretFiles`]), which
//! are read at apply time and take precedence.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig};
use trellis_model::config::{DownstreamTls, TlsSecret};

/// ALPN offered by HTTP chains whose config names none.
pub const DEFAULT_HTTP_ALPN: &[&str] = &["h2", "http/1.1"];

/// A TLS secret kept in files (certificate chain, private key, optional client CA bundle).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretFiles {
    pub cert_chain: PathBuf,
    pub private_key: PathBuf,
    pub ca: Option<PathBuf>,
}

impl SecretFiles {
    /// Parses `CERT,KEY[,CA]` (the CLI's `--secret NAME=CERT,KEY[,CA]` value).
    pub fn parse(spec: &str) -> Result<Self, String> {
        let parts: Vec<&str> = spec.split(',').collect();
        match parts.as_slice() {
            [cert, key] | [cert, key, _] if !cert.is_empty() && !key.is_empty() => {
                Ok(SecretFiles {
                    cert_chain: PathBuf::from(cert),
                    private_key: PathBuf::from(key),
                    ca: parts.get(2).filter(|c| !c.is_empty()).map(PathBuf::from),
                })
            }
            _ => Err(format!(
                "invalid secret files {spec:?}: expected CERT_PATH,KEY_PATH[,CA_PATH]"
            )),
        }
    }

    /// Reads the files into a secret (PEM is checked when the secret is used).
    pub fn load(&self) -> Result<TlsSecret, String> {
        let read = |p: &PathBuf, what: &str| {
            std::fs::read_to_string(p)
                .map_err(|e| format!("cannot read {what} {}: {e}", p.display()))
        };
        Ok(TlsSecret {
            cert_chain_pem: read(&self.cert_chain, "certificate chain")?,
            private_key_pem: read(&self.private_key, "private key")?,
            ca_pem: self.ca.as_ref().map(|c| read(c, "CA bundle")).transpose()?,
            source: format!(
                "files {} {}",
                self.cert_chain.display(),
                self.private_key.display()
            ),
            files: None,
        })
    }
}

/// Reads compiled secrets that name files (Gateway `serverCertificate`/`privateKey`,
/// DestinationRule file paths) into PEM, at apply time. Errors name the secret.
pub fn load_compiled_file_secrets(
    secrets: &mut BTreeMap<String, Arc<TlsSecret>>,
) -> Result<(), Vec<String>> {
    let mut errors = Vec::new();
    for (name, secret) in secrets.iter_mut() {
        let Some(f) = &secret.files else { continue };
        let read = |p: &str, what: &str| {
            std::fs::read_to_string(p)
                .map_err(|e| format!("secret {name:?}: cannot read {what} {p}: {e}"))
        };
        let cert = if f.cert_chain.is_empty() {
            Ok(String::new())
        } else {
            read(&f.cert_chain, "certificate chain")
        };
        let key = if f.private_key.is_empty() {
            Ok(String::new())
        } else {
            read(&f.private_key, "private key")
        };
        let ca = f.ca.as_deref().map(|c| read(c, "CA bundle")).transpose();
        match (cert, key, ca) {
            (Ok(cert_chain_pem), Ok(private_key_pem), Ok(ca_pem)) => {
                *secret = Arc::new(TlsSecret {
                    cert_chain_pem,
                    private_key_pem,
                    ca_pem,
                    source: secret.source.clone(),
                    files: secret.files.clone(),
                });
            }
            (c, k, a) => {
                errors.extend(c.err());
                errors.extend(k.err());
                errors.extend(a.err());
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Adds the file secrets to `secrets` (replacing same-named ones). Errors name the secret.
pub fn merge_secret_files(
    secrets: &mut BTreeMap<String, Arc<TlsSecret>>,
    files: &HashMap<String, SecretFiles>,
) -> Result<(), Vec<String>> {
    let mut errors = Vec::new();
    for (name, f) in files {
        match f.load() {
            Ok(s) => {
                secrets.insert(name.clone(), Arc::new(s));
            }
            Err(e) => errors.push(format!("secret {name:?}: {e}")),
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        errors.sort();
        Err(errors)
    }
}

/// Everything a `ServerConfig` is built from; equal inputs give an equivalent config.
#[derive(Clone, PartialEq, Eq)]
struct CacheKey {
    tls: DownstreamTls,
    default_alpn: bool,
    certificate: Arc<TlsSecret>,
    client_ca: Option<Arc<TlsSecret>>,
}

/// `ServerConfig`s of one applied config, reusable by the next apply.
#[derive(Clone, Default)]
pub struct ServerConfigCache {
    entries: Vec<(CacheKey, Arc<ServerConfig>)>,
}

impl ServerConfigCache {
    /// The `ServerConfig` for a chain: from this cache, else from `previous` (the cache of the
    /// config in force), else built. `http` chains get [`DEFAULT_HTTP_ALPN`] when the chain
    /// names no ALPN.
    pub fn get_or_build(
        &mut self,
        tls: &DownstreamTls,
        http: bool,
        secrets: &BTreeMap<String, Arc<TlsSecret>>,
        previous: &ServerConfigCache,
    ) -> Result<Arc<ServerConfig>, String> {
        let certificate = secrets.get(&tls.certificate).cloned().ok_or_else(|| {
            format!(
                "certificate secret {:?} not found (known secrets: {})",
                tls.certificate,
                known(secrets)
            )
        })?;
        let client_ca = match &tls.client_ca {
            Some(name) => Some(secrets.get(name).cloned().ok_or_else(|| {
                format!(
                    "client CA secret {name:?} not found (known secrets: {})",
                    known(secrets)
                )
            })?),
            None => None,
        };
        let key = CacheKey {
            tls: tls.clone(),
            default_alpn: http && tls.alpn.is_empty(),
            certificate,
            client_ca,
        };
        let found = self
            .entries
            .iter()
            .chain(previous.entries.iter())
            .find(|(k, _)| *k == key)
            .map(|(_, c)| c.clone());
        let config = match found {
            Some(c) => c,
            None => build(&key)?,
        };
        if !self.entries.iter().any(|(k, _)| *k == key) {
            self.entries.push((key, config.clone()));
        }
        Ok(config)
    }
}

fn known(secrets: &BTreeMap<String, Arc<TlsSecret>>) -> String {
    if secrets.is_empty() {
        return "none".into();
    }
    secrets.keys().cloned().collect::<Vec<_>>().join(", ")
}

/// The crypto provider every Trellis TLS config uses (aws-lc-rs).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn build(key: &CacheKey) -> Result<Arc<ServerConfig>, String> {
    let tls = &key.tls;
    let secret = &key.certificate;
    let what = format!("secret {:?} ({})", tls.certificate, secret.source);
    let certs = parse_certs(&secret.cert_chain_pem).map_err(|e| format!("{what}: {e}"))?;
    let private_key =
        PrivateKeyDer::from_pem_slice(secret.private_key_pem.as_bytes()).map_err(|e| match e {
            rustls::pki_types::pem::Error::NoItemsFound => {
                format!("{what}: no private key found in the key PEM")
            }
            e => format!("{what}: bad private key PEM: {e}"),
        })?;

    let versions: &[&rustls::SupportedProtocolVersion] = if tls.min_tls13 {
        &[&rustls::version::TLS13]
    } else {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    };
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .map_err(|e| format!("{what}: {e}"))?;

    let builder = match &key.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let ca_name = tls.client_ca.as_deref().unwrap_or_default();
            let ca_what = format!("client CA secret {ca_name:?} ({})", ca.source);
            // A CA bundle in the secret (`ca.crt`) wins; a CA-only secret keeps it as the chain.
            let pem = ca.ca_pem.as_deref().unwrap_or(&ca.cert_chain_pem);
            let mut roots = RootCertStore::empty();
            for c in parse_certs(pem).map_err(|e| format!("{ca_what}: {e}"))? {
                roots
                    .add(c)
                    .map_err(|e| format!("{ca_what}: unusable CA certificate: {e}"))?;
            }
            let mut vb = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
            if !tls.require_client_cert {
                vb = vb.allow_unauthenticated();
            }
            let verifier = vb.build().map_err(|e| format!("{ca_what}: {e}"))?;
            let verifier: Arc<dyn ClientCertVerifier> = if tls.client_san.is_empty() {
                verifier
            } else {
                Arc::new(SanVerifier {
                    inner: verifier,
                    allowed: tls.client_san.clone(),
                })
            };
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(certs, private_key)
        .map_err(|e| format!("{what}: certificate and key do not load: {e}"))?;
    config.alpn_protocols = if key.default_alpn {
        DEFAULT_HTTP_ALPN
            .iter()
            .map(|p| p.as_bytes().to_vec())
            .collect()
    } else {
        tls.alpn.iter().map(|p| p.as_bytes().to_vec()).collect()
    };
    Ok(Arc::new(config))
}

fn parse_certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("bad certificate PEM: {e}"))?;
    if certs.is_empty() {
        return Err("no CERTIFICATE block found".into());
    }
    for (i, c) in certs.iter().enumerate() {
        use x509_parser::prelude::FromDer;
        x509_parser::certificate::X509Certificate::from_der(c.as_ref())
            .map_err(|e| format!("certificate #{} does not parse: {e}", i + 1))?;
    }
    Ok(certs)
}

/// Subject alternative names of a certificate as text: DNS names, URIs, IPs, e-mail.
pub fn subject_alt_names(cert_der: &[u8]) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    use x509_parser::prelude::FromDer;
    let Ok((_, cert)) = x509_parser::certificate::X509Certificate::from_der(cert_der) else {
        return Vec::new();
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(s) | GeneralName::URI(s) | GeneralName::RFC822Name(s) => {
                Some(s.to_string())
            }
            GeneralName::IPAddress(b) => match b.len() {
                4 => Some(std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*b).ok()?).to_string()),
                16 => Some(std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*b).ok()?).to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// The peer's SPIFFE identity (first `spiffe://` URI SAN of its leaf certificate).
pub fn peer_spiffe_id(conn: &rustls::ServerConnection) -> Option<String> {
    let leaf = conn.peer_certificates()?.first()?;
    subject_alt_names(leaf.as_ref())
        .into_iter()
        .find(|s| s.starts_with("spiffe://"))
}

/// SHA-256 of the peer's leaf certificate (DER), lowercase hex.
pub fn peer_cert_sha256(conn: &rustls::ServerConnection) -> Option<Arc<str>> {
    use sha2::Digest;
    use std::fmt::Write;
    let leaf = conn.peer_certificates()?.first()?;
    let digest = sha2::Sha256::digest(leaf.as_ref());
    let mut hex = String::with_capacity(64);
    for b in digest {
        let _ = write!(hex, "{b:02x}");
    }
    Some(hex.into())
}

/// Client certificate verification plus Istio's `subjectAltNames`: the client certificate
/// must carry one of `allowed` among its SANs.
#[derive(Debug)]
struct SanVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    allowed: Vec<String>,
}

impl ClientCertVerifier for SanVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let sans = subject_alt_names(end_entity.as_ref());
        if sans.iter().any(|s| self.allowed.iter().any(|a| a == s)) {
            Ok(verified)
        } else {
            tracing::debug!(presented = ?sans, allowed = ?self.allowed, "client certificate SAN not allowed");
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName,
            ))
        }
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

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed(name: &str) -> TlsSecret {
        let ck = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
        TlsSecret {
            cert_chain_pem: ck.cert.pem(),
            private_key_pem: ck.signing_key.serialize_pem(),
            ca_pem: None,
            source: "test".into(),
            files: None,
        }
    }

    fn tls(cert: &str) -> DownstreamTls {
        DownstreamTls {
            certificate: cert.into(),
            client_ca: None,
            require_client_cert: false,
            alpn: vec![],
            min_tls13: false,
            client_san: vec![],
        }
    }

    #[test]
    fn builds_and_caches_across_applies() {
        let mut secrets = BTreeMap::new();
        secrets.insert("a".to_string(), Arc::new(self_signed("a.example.com")));
        let mut first = ServerConfigCache::default();
        let c1 = first
            .get_or_build(&tls("a"), true, &secrets, &ServerConfigCache::default())
            .unwrap();
        assert_eq!(
            c1.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        let mut second = ServerConfigCache::default();
        let c2 = second
            .get_or_build(&tls("a"), true, &secrets, &first)
            .unwrap();
        assert!(Arc::ptr_eq(&c1, &c2), "unchanged inputs reuse the config");
        // A new certificate under the same name builds a new config.
        secrets.insert("a".to_string(), Arc::new(self_signed("a.example.com")));
        let c3 = ServerConfigCache::default()
            .get_or_build(&tls("a"), true, &secrets, &second)
            .unwrap();
        assert!(!Arc::ptr_eq(&c1, &c3));
        // TCP chains get no default ALPN.
        let c4 = ServerConfigCache::default()
            .get_or_build(&tls("a"), false, &secrets, &second)
            .unwrap();
        assert!(c4.alpn_protocols.is_empty());
    }

    #[test]
    fn bad_secrets_are_explained() {
        let mut secrets = BTreeMap::new();
        let good = self_signed("a");
        let other = self_signed("b");
        secrets.insert(
            "garbage".to_string(),
            Arc::new(TlsSecret {
                cert_chain_pem: "not a pem".into(),
                ..good.clone()
            }),
        );
        secrets.insert(
            "mismatch".to_string(),
            Arc::new(TlsSecret {
                private_key_pem: other.private_key_pem.clone(),
                ..good.clone()
            }),
        );
        secrets.insert(
            "nokey".to_string(),
            Arc::new(TlsSecret {
                private_key_pem: String::new(),
                ..good.clone()
            }),
        );
        let none = ServerConfigCache::default();
        let err = |name: &str| {
            ServerConfigCache::default()
                .get_or_build(&tls(name), true, &secrets, &none)
                .err()
                .unwrap()
        };
        assert!(err("missing").contains("not found"), "{}", err("missing"));
        assert!(
            err("garbage").contains("no CERTIFICATE"),
            "{}",
            err("garbage")
        );
        assert!(
            err("mismatch").contains("do not load"),
            "{}",
            err("mismatch")
        );
        assert!(err("nokey").contains("no private key"), "{}", err("nokey"));
        let mut t = tls("garbage");
        t.certificate = "nokey".into();
        t.client_ca = Some("absent-ca".into());
        let e = ServerConfigCache::default()
            .get_or_build(&t, true, &secrets, &none)
            .err()
            .unwrap();
        assert!(
            e.contains("client CA secret \"absent-ca\" not found"),
            "{e}"
        );
    }

    #[test]
    fn secret_file_spec() {
        let s = SecretFiles::parse("/c.pem,/k.pem").unwrap();
        assert_eq!(s.ca, None);
        let s = SecretFiles::parse("/c.pem,/k.pem,/ca.pem").unwrap();
        assert_eq!(s.ca, Some(PathBuf::from("/ca.pem")));
        assert!(SecretFiles::parse("/c.pem").is_err());
        assert!(SecretFiles::parse(",/k.pem").is_err());
    }

    #[test]
    fn sans_as_text() {
        let mut p = rcgen::CertificateParams::new(vec!["a.example.com".to_string()]).unwrap();
        p.subject_alt_names.push(rcgen::SanType::URI(
            "spiffe://cluster.local/ns/a/sa/b".try_into().unwrap(),
        ));
        p.subject_alt_names
            .push(rcgen::SanType::IpAddress("10.0.0.1".parse().unwrap()));
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        assert_eq!(
            subject_alt_names(cert.der()),
            vec![
                "a.example.com".to_string(),
                "spiffe://cluster.local/ns/a/sa/b".to_string(),
                "10.0.0.1".to_string()
            ]
        );
    }
}
