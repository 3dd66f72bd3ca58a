//! Bad input is reported as an error, never a panic: garbage PEM, tampered or weak CSRs,
//! broken plug-in CA directories, mismatched keys.

mod common;

use std::fs;
use std::path::Path;
use std::time::Duration;

use common::{id, openssl, run_ok};
use rustls::client::danger::ServerCertVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use trellis_identity::ca::{CA_CERT_FILE, CA_KEY_FILE, CERT_CHAIN_FILE, ROOT_CERT_FILE};
use trellis_identity::pem::{certs_from_pem, certs_to_pem};
use trellis_identity::tls::{SpiffeClientVerifier, SpiffeServerVerifier};
use trellis_identity::{
    generate_key_and_csr, CertificateAuthority, CertifiedIdentity, ClientAuth, Error, TrustBundle,
};

fn ca() -> CertificateAuthority {
    CertificateAuthority::generate("cluster.local", "Trellis").unwrap()
}

fn csr_der(pem: &str) -> Vec<u8> {
    use rustls_pki_types::pem::PemObject as _;
    rustls_pki_types::CertificateSigningRequestDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .as_ref()
        .to_vec()
}

fn csr_pem(der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE REQUEST-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap());
        out.push('\n');
    }
    out + "-----END CERTIFICATE REQUEST-----\n"
}

#[test]
fn garbage_csrs_are_rejected() {
    let ca = ca();
    let me = id("default", "a");
    let req = generate_key_and_csr(&me).unwrap();
    let inputs = [
        String::new(),
        "garbage".to_string(),
        "-----BEGIN CERTIFICATE REQUEST-----\n@@@@\n-----END CERTIFICATE REQUEST-----\n".into(),
        "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n".into(),
        csr_pem(b"\x30\x00"),
        csr_pem(&[0u8; 300]),
        // A certificate is not a CSR.
        ca.root_pem(),
        // Two CSRs: ambiguous.
        format!("{}{}", req.csr_pem, req.csr_pem),
        // Trailing bytes after the request.
        csr_pem(&[csr_der(&req.csr_pem), vec![0, 0]].concat()),
    ];
    for input in inputs {
        let err = ca
            .sign_csr(&input, &me, Duration::ZERO)
            .expect_err(&format!("accepted {input:?}"));
        assert!(matches!(err, Error::Csr(_)), "{err}");
    }
}

#[test]
fn csr_with_a_bad_signature_is_rejected() {
    let ca = ca();
    let me = id("default", "a");
    let req = generate_key_and_csr(&me).unwrap();
    let der = csr_der(&req.csr_pem);
    // Flip a bit inside the signed part (the URI SAN's text) and inside the signature.
    let uri_at = der
        .windows(6)
        .position(|w| w == b"spiffe")
        .expect("SAN in CSR");
    let mut tampered_body = der.clone();
    tampered_body[uri_at + 10] ^= 0x01;
    let mut tampered_sig = der.clone();
    let last = tampered_sig.len() - 3;
    tampered_sig[last] ^= 0x01;
    for bad in [tampered_body, tampered_sig] {
        let err = ca
            .sign_csr(&csr_pem(&bad), &me, Duration::ZERO)
            .unwrap_err();
        assert!(matches!(err, Error::Csr(_)), "{err}");
        assert!(err.to_string().contains("signature"), "{err}");
    }
}

#[test]
fn mutated_inputs_never_panic() {
    let ca = ca();
    let me = id("default", "a");
    let req = generate_key_and_csr(&me).unwrap();
    let der = csr_der(&req.csr_pem);
    let issued = ca.sign_csr(&req.csr_pem, &me, Duration::ZERO).unwrap();
    let leaf = certs_from_pem(&issued.leaf_pem, "leaf").unwrap().remove(0);
    let server_verifier = SpiffeServerVerifier::new(ca.trust_bundle(), [me.clone()]).unwrap();
    let client_verifier = SpiffeClientVerifier::new(ca.trust_bundle(), ClientAuth::Required);
    let name = ServerName::try_from("a.default.svc").unwrap();

    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut accepted_csrs = 0;
    let mut accepted_leaves = 0;
    for _ in 0..400 {
        let mut csr = der.clone();
        let mut cert = leaf.as_ref().to_vec();
        for _ in 0..1 + next() % 3 {
            let i = (next() as usize) % csr.len();
            csr[i] = next() as u8;
            let j = (next() as usize) % cert.len();
            cert[j] = next() as u8;
        }
        if next() % 4 == 0 {
            let cut = (next() as usize) % csr.len();
            csr.truncate(cut);
            let cut = (next() as usize) % cert.len();
            cert.truncate(cut);
        }
        if ca.sign_csr(&csr_pem(&csr), &me, Duration::ZERO).is_ok() {
            accepted_csrs += 1;
        }
        let cert = CertificateDer::from(cert);
        let s = server_verifier.verify_server_cert(&cert, &[], &name, &[], UnixTime::now());
        let c = client_verifier.verify_client_cert(&cert, &[], UnixTime::now());
        if s.is_ok() || c.is_ok() {
            accepted_leaves += 1;
        }
        let _ = trellis_identity::pem::spiffe_id_from_cert(cert.as_ref());
        let _ = TrustBundle::new([cert]);
    }
    // A mutation can land on a byte that changes nothing (e.g. replaced by itself), but a
    // tampered certificate or request must essentially never verify.
    assert!(accepted_csrs < 10, "{accepted_csrs} mutated CSRs accepted");
    assert!(
        accepted_leaves < 10,
        "{accepted_leaves} mutated leaves accepted"
    );
}

#[test]
fn weak_or_unsupported_csr_keys_are_rejected() {
    let Some(openssl) = openssl() else { return };
    let ca = ca();
    let me = id("default", "a");
    let tmp = tempfile::tempdir().unwrap();
    let d = |n: &str| tmp.path().join(n).to_string_lossy().into_owned();
    for (name, keygen) in [
        (
            "rsa1024",
            vec![
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:1024",
            ],
        ),
        ("ed448", vec!["genpkey", "-algorithm", "ED448"]),
    ] {
        let key = d(&format!("{name}.key"));
        let csr = d(&format!("{name}.csr"));
        let mut args = keygen.clone();
        args.extend(["-out", &key]);
        run_ok(&openssl, &args);
        run_ok(
            &openssl,
            &["req", "-new", "-key", &key, "-subj", "/CN=x", "-out", &csr],
        );
        let err = ca
            .sign_csr(&fs::read_to_string(&csr).unwrap(), &me, Duration::ZERO)
            .unwrap_err();
        assert!(
            matches!(err, Error::UnsupportedKey(_) | Error::Csr(_)),
            "{name}: {err}"
        );
    }
    // An ECDSA P-384 CSR from openssl is fine.
    run_ok(
        &openssl,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-384",
            "-nodes",
            "-keyout",
            &d("p384.key"),
            "-subj",
            "/CN=x",
            "-out",
            &d("p384.csr"),
        ],
    );
    let issued = ca
        .sign_csr(
            &fs::read_to_string(d("p384.csr")).unwrap(),
            &me,
            Duration::ZERO,
        )
        .unwrap();
    let certified = CertifiedIdentity::from_pem(
        &issued.chain_pem,
        &fs::read_to_string(d("p384.key")).unwrap(),
    )
    .unwrap();
    assert_eq!(certified.id(), &me);
}

fn saved_ca(dir: &Path) -> CertificateAuthority {
    let ca = ca();
    ca.save(dir).unwrap();
    ca
}

fn load_err(dir: &Path) -> Error {
    CertificateAuthority::load_plugin(dir).expect_err("loaded a broken CA directory")
}

#[test]
fn broken_plugin_directories_are_rejected() {
    let tmp = tempfile::tempdir().unwrap();

    // Missing directory / missing file.
    assert!(matches!(
        load_err(&tmp.path().join("nope")),
        Error::Io { .. }
    ));

    // Key from another CA.
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    saved_ca(&a);
    saved_ca(&b);
    fs::copy(b.join(CA_KEY_FILE), a.join(CA_KEY_FILE)).unwrap();
    let err = load_err(&a);
    assert!(matches!(err, Error::KeyMismatch(_)), "{err}");

    // Garbage in each file.
    for file in [CA_CERT_FILE, CA_KEY_FILE, ROOT_CERT_FILE, CERT_CHAIN_FILE] {
        let dir = tmp.path().join(format!("garbage-{file}"));
        saved_ca(&dir);
        fs::write(dir.join(file), "this is not PEM\n").unwrap();
        let err = load_err(&dir);
        assert!(matches!(err, Error::Pem { .. }), "{file}: {err}");
        assert!(err.to_string().contains(file), "{file}: {err}");
    }

    // Two certificates in ca-cert.pem.
    let dir = tmp.path().join("two");
    let ca = saved_ca(&dir);
    fs::write(dir.join(CA_CERT_FILE), ca.root_pem().repeat(2)).unwrap();
    assert!(matches!(load_err(&dir), Error::InvalidCa(_)));

    // root-cert.pem of another CA: what it signs would not verify.
    let dir = tmp.path().join("wrong-root");
    saved_ca(&dir);
    fs::copy(b.join(ROOT_CERT_FILE), dir.join(ROOT_CERT_FILE)).unwrap();
    let err = load_err(&dir);
    assert!(matches!(err, Error::InvalidCa(_)), "{err}");
    assert!(err.to_string().contains(ROOT_CERT_FILE), "{err}");

    // cert-chain.pem that does not start with ca-cert.pem.
    let dir = tmp.path().join("wrong-chain");
    saved_ca(&dir);
    fs::copy(b.join(CA_CERT_FILE), dir.join(CERT_CHAIN_FILE)).unwrap();
    assert!(matches!(load_err(&dir), Error::InvalidCa(_)));

    // A workload (leaf) certificate and its key are not a CA.
    let dir = tmp.path().join("leaf-as-ca");
    let ca = saved_ca(&dir);
    let me = id("default", "a");
    let req = generate_key_and_csr(&me).unwrap();
    let issued = ca.sign_csr(&req.csr_pem, &me, Duration::ZERO).unwrap();
    fs::write(dir.join(CA_CERT_FILE), &issued.leaf_pem).unwrap();
    fs::write(dir.join(CERT_CHAIN_FILE), &issued.leaf_pem).unwrap();
    fs::write(dir.join(CA_KEY_FILE), req.key.serialize_pem()).unwrap();
    let err = load_err(&dir);
    assert!(matches!(err, Error::InvalidCa(_)), "{err}");
    assert!(err.to_string().contains("not a CA"), "{err}");

    // A leaf in root-cert.pem.
    let dir = tmp.path().join("leaf-as-root");
    saved_ca(&dir);
    fs::write(dir.join(ROOT_CERT_FILE), &issued.leaf_pem).unwrap();
    assert!(matches!(load_err(&dir), Error::InvalidCa(_)));

    // A partial directory is not silently overwritten by load_or_generate.
    let dir = tmp.path().join("partial");
    saved_ca(&dir);
    fs::remove_file(dir.join(CA_KEY_FILE)).unwrap();
    let before = fs::read_to_string(dir.join(CA_CERT_FILE)).unwrap();
    assert!(CertificateAuthority::load_or_generate(&dir, "cluster.local", "T").is_err());
    assert_eq!(fs::read_to_string(dir.join(CA_CERT_FILE)).unwrap(), before);
}

#[test]
fn unsupported_ca_key_type_is_rejected() {
    let Some(openssl) = openssl() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    saved_ca(dir);
    let key = dir.join(CA_KEY_FILE).to_string_lossy().into_owned();
    run_ok(&openssl, &["genpkey", "-algorithm", "ED448", "-out", &key]);
    let err = load_err(dir);
    assert!(matches!(err, Error::UnsupportedKey(_)), "{err}");
}

#[test]
fn mismatched_workload_key_and_bad_bundles_are_rejected() {
    let ca = ca();
    let me = id("default", "a");
    let req = generate_key_and_csr(&me).unwrap();
    let other = generate_key_and_csr(&me).unwrap();
    let issued = ca.sign_csr(&req.csr_pem, &me, Duration::ZERO).unwrap();
    let err = CertifiedIdentity::from_issued(&other.key, &issued).unwrap_err();
    assert!(matches!(err, Error::KeyMismatch(_)), "{err}");
    assert!(CertifiedIdentity::from_pem("junk", "junk").is_err());
    assert!(CertifiedIdentity::from_pem(&issued.chain_pem, "junk").is_err());
    assert!(CertifiedIdentity::from_pem(&ca.root_pem(), &req.key.serialize_pem()).is_err());

    // Bundles: empty, garbage, a leaf.
    assert!(TrustBundle::from_pem("").is_err());
    assert!(TrustBundle::from_pem("junk").is_err());
    assert!(TrustBundle::from_pem(&issued.leaf_pem).is_err());
    assert!(TrustBundle::new(Vec::new()).is_err());
    let root = certs_from_pem(&ca.root_pem(), "root").unwrap();
    let twice = TrustBundle::from_pem(&certs_to_pem(root.iter().chain(root.iter()))).unwrap();
    assert_eq!(twice.len(), 1, "duplicates dropped");

    // Bad trust domains and organizations for a generated CA.
    assert!(CertificateAuthority::generate("Cluster.Local", "x").is_err());
    assert!(CertificateAuthority::generate("cluster.local/x", "x").is_err());
    assert!(CertificateAuthority::generate("cluster.local", "").is_err());
}
