//! PEM and X.509 plumbing shared by the other modules: decoding certificate and key PEM with
//! `rustls-pki-types`, encoding DER back to PEM, and reading the parts of a parsed certificate
//! this crate cares about (SPIFFE URI SAN, validity, CA flag, public key).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use rustls_pki_types::pem::{PemObject, SectionKind};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

use crate::error::{Error, Result};
use crate::spiffe::SpiffeId;

/// Decode every `CERTIFICATE` block in `pem`, in order. Other PEM blocks are ignored; an empty
/// result or a corrupt block is an error. `what` names the input in error messages.
pub fn certs_from_pem(pem: &str, what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let mut certs = Vec::new();
    for item in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        certs.push(item.map_err(|e| Error::pem(what, e))?);
    }
    if certs.is_empty() {
        return Err(Error::pem(what, "no CERTIFICATE block found"));
    }
    Ok(certs)
}

/// Decode the first private key block (PKCS#8, PKCS#1 RSA or SEC1 EC) in `pem`.
pub fn private_key_from_pem(pem: &str, what: &str) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => {
            Error::pem(what, "no private key block found")
        }
        other => Error::pem(what, other),
    })
}

/// Encode DER certificates as consecutive `CERTIFICATE` PEM blocks.
pub fn certs_to_pem<'a>(certs: impl IntoIterator<Item = &'a CertificateDer<'a>>) -> String {
    let mut out = String::new();
    for cert in certs {
        out.push_str(&der_to_pem("CERTIFICATE", cert.as_ref()));
    }
    out
}

/// Encode a private key with the PEM label matching its format.
pub fn private_key_to_pem(key: &PrivateKeyDer<'_>) -> String {
    let label = match key {
        PrivateKeyDer::Pkcs1(_) => "RSA PRIVATE KEY",
        PrivateKeyDer::Sec1(_) => "EC PRIVATE KEY",
        _ => "PRIVATE KEY",
    };
    der_to_pem(label, key.secret_der())
}

pub(crate) fn der_to_pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        // base64 output is ASCII.
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Decode exactly one `CERTIFICATE REQUEST` block.
pub(crate) fn csr_der_from_pem(pem: &str) -> Result<Vec<u8>> {
    let mut found = None;
    for item in <(SectionKind, Vec<u8>)>::pem_slice_iter(pem.as_bytes()) {
        let (kind, der) = item.map_err(|e| Error::Csr(format!("bad PEM: {e}")))?;
        if kind == SectionKind::Csr {
            if found.is_some() {
                return Err(Error::Csr("more than one CERTIFICATE REQUEST block".into()));
            }
            found = Some(der);
        }
    }
    found.ok_or_else(|| Error::Csr("no CERTIFICATE REQUEST block found".into()))
}

/// Parse a DER certificate, rejecting trailing bytes.
pub(crate) fn parse_cert<'a>(der: &'a [u8], what: &str) -> Result<X509Certificate<'a>> {
    match X509Certificate::from_der(der) {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => Err(Error::InvalidCertificate(format!(
            "{what}: trailing bytes after certificate"
        ))),
        Err(e) => Err(Error::InvalidCertificate(format!("{what}: {e}"))),
    }
}

/// The URI SANs of a certificate (all of them, in order).
pub(crate) fn uri_sans<'a>(cert: &X509Certificate<'a>) -> Result<Vec<&'a str>> {
    let mut uris = Vec::new();
    let mut seen_san = false;
    for ext in cert.extensions() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext.parsed_extension() {
            if seen_san {
                return Err(Error::InvalidCertificate(
                    "duplicate subjectAltName extension".into(),
                ));
            }
            seen_san = true;
            for name in &san.general_names {
                if let GeneralName::URI(uri) = name {
                    uris.push(*uri);
                }
            }
        } else if ext.oid == x509_parser::oid_registry::OID_X509_EXT_SUBJECT_ALT_NAME {
            return Err(Error::InvalidCertificate(
                "unparseable subjectAltName extension".into(),
            ));
        }
    }
    Ok(uris)
}

/// The SPIFFE id of an X.509-SVID: its single URI SAN. Zero or several URI SANs, or a URI
/// that is not a valid SPIFFE id, are errors.
pub fn spiffe_id_from_cert(cert_der: &[u8]) -> Result<SpiffeId> {
    let cert = parse_cert(cert_der, "certificate")?;
    spiffe_id_of(&cert)
}

pub(crate) fn spiffe_id_of(cert: &X509Certificate<'_>) -> Result<SpiffeId> {
    let uris = uri_sans(cert)?;
    match uris.as_slice() {
        [uri] => SpiffeId::parse(uri),
        [] => Err(Error::InvalidCertificate(
            "certificate has no URI SAN (not a SPIFFE certificate)".into(),
        )),
        _ => Err(Error::InvalidCertificate(format!(
            "certificate has {} URI SANs; a SPIFFE certificate has exactly one",
            uris.len()
        ))),
    }
}

/// The validity window of a certificate as `SystemTime`s.
pub(crate) fn validity(cert: &X509Certificate<'_>) -> (SystemTime, SystemTime) {
    let to_system = |ts: i64| {
        if ts >= 0 {
            UNIX_EPOCH + Duration::from_secs(ts as u64)
        } else {
            UNIX_EPOCH
        }
    };
    (
        to_system(cert.validity().not_before.timestamp()),
        to_system(cert.validity().not_after.timestamp()),
    )
}

/// Whether the certificate says `CA:TRUE` in its basic constraints.
pub(crate) fn is_ca(cert: &X509Certificate<'_>) -> bool {
    matches!(cert.basic_constraints(), Ok(Some(bc)) if bc.value.ca)
}

/// Upper-case hex of the serial number.
pub(crate) fn serial_hex(cert: &X509Certificate<'_>) -> String {
    cert.raw_serial()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<String>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_pem_is_an_error_not_a_panic() {
        assert!(certs_from_pem("", "x").is_err());
        assert!(certs_from_pem("hello world", "x").is_err());
        assert!(certs_from_pem(
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
            "x"
        )
        .is_err());
        assert!(certs_from_pem("-----BEGIN CERTIFICATE-----\nAAAA\n", "x").is_err());
        assert!(private_key_from_pem("nothing", "k").is_err());
        assert!(csr_der_from_pem("nothing").is_err());
        // Valid base64 that is not a certificate parses as PEM but fails as X.509.
        let junk = certs_from_pem(
            "-----BEGIN CERTIFICATE-----\nAAECAwQ=\n-----END CERTIFICATE-----\n",
            "x",
        )
        .unwrap();
        assert!(spiffe_id_from_cert(junk[0].as_ref()).is_err());
    }

    #[test]
    fn pem_round_trip() {
        let der = CertificateDer::from(vec![1u8; 100]);
        let pem = certs_to_pem([&der]);
        assert!(pem.lines().all(|l| l.len() <= 64));
        assert_eq!(certs_from_pem(&pem, "x").unwrap(), vec![der]);
    }
}
