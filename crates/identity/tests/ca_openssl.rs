//! Certificates issued by the CA, checked by the system `openssl` binary.

mod common;

use std::fs;
use std::time::Duration;

use common::{id, openssl, run, run_ok};
use rcgen::{CertificateParams, DnType, KeyPair, SanType};
use trellis_identity::ca::{CaOptions, CA_CERT_FILE, CERT_CHAIN_FILE, ROOT_CERT_FILE};
use trellis_identity::pem::spiffe_id_from_cert;
use trellis_identity::{
    generate_key_and_csr, CertificateAuthority, CertifiedIdentity, TrustBundle,
};

/// Write the issued files and return their paths (root, chain, leaf).
fn write_issued(
    dir: &std::path::Path,
    issued: &trellis_identity::IssuedCert,
) -> (String, String, String) {
    let p = |n: &str| dir.join(n).to_string_lossy().into_owned();
    fs::write(p("root.pem"), &issued.root_pem).unwrap();
    fs::write(p("chain.pem"), &issued.chain_pem).unwrap();
    fs::write(p("leaf.pem"), &issued.leaf_pem).unwrap();
    (p("root.pem"), p("chain.pem"), p("leaf.pem"))
}

#[test]
fn issued_leaf_passes_openssl_checks() {
    let Some(openssl) = openssl() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let ca = CertificateAuthority::generate("cluster.local", "Trellis").unwrap();
    let me = id("default", "service-gateway");
    let req = generate_key_and_csr(&me).unwrap();
    let issued = ca
        .sign_csr(&req.csr_pem, &me, Duration::from_secs(24 * 3600))
        .unwrap();
    let (root, chain, leaf) = write_issued(tmp.path(), &issued);

    let verify = run_ok(
        &openssl,
        &["verify", "-CAfile", &root, "-untrusted", &chain, &leaf],
    );
    assert!(verify.contains(": OK"), "{verify}");
    // Purpose checks: the leaf is good for both TLS server and client use.
    for purpose in ["sslserver", "sslclient"] {
        run_ok(
            &openssl,
            &[
                "verify",
                "-purpose",
                purpose,
                "-CAfile",
                &root,
                "-untrusted",
                &chain,
                &leaf,
            ],
        );
    }

    let san = run_ok(
        &openssl,
        &["x509", "-in", &leaf, "-noout", "-ext", "subjectAltName"],
    );
    let san_values: Vec<&str> = san.lines().skip(1).map(str::trim).collect();
    assert_eq!(
        san_values,
        vec!["URI:spiffe://cluster.local/ns/default/sa/service-gateway"],
        "{san}"
    );
    assert!(
        san.contains("critical"),
        "SAN must be critical with an empty subject: {san}"
    );

    let bc = run_ok(
        &openssl,
        &["x509", "-in", &leaf, "-noout", "-ext", "basicConstraints"],
    );
    assert!(bc.contains("CA:FALSE"), "{bc}");
    let ku = run_ok(
        &openssl,
        &["x509", "-in", &leaf, "-noout", "-ext", "keyUsage"],
    );
    assert!(
        ku.contains("Digital Signature") && ku.contains("Key Encipherment"),
        "{ku}"
    );
    assert!(!ku.contains("Certificate Sign"), "{ku}");
    let eku = run_ok(
        &openssl,
        &["x509", "-in", &leaf, "-noout", "-ext", "extendedKeyUsage"],
    );
    assert!(
        eku.contains("TLS Web Server Authentication")
            && eku.contains("TLS Web Client Authentication"),
        "{eku}"
    );

    // Validity ~24h: still valid 23.9h from now, expired 24.1h from now.
    let out = run(
        &openssl,
        &["x509", "-in", &leaf, "-noout", "-checkend", "86000"],
    );
    assert!(out.status.success(), "leaf expires too early");
    let out = run(
        &openssl,
        &["x509", "-in", &leaf, "-noout", "-checkend", "86800"],
    );
    assert!(!out.status.success(), "leaf lives longer than ~24h");

    // The root: CA:TRUE, keyCertSign + cRLSign, ~10 years.
    let bc = run_ok(
        &openssl,
        &["x509", "-in", &root, "-noout", "-ext", "basicConstraints"],
    );
    assert!(bc.contains("CA:TRUE"), "{bc}");
    let ku = run_ok(
        &openssl,
        &["x509", "-in", &root, "-noout", "-ext", "keyUsage"],
    );
    assert!(
        ku.contains("Certificate Sign") && ku.contains("CRL Sign"),
        "{ku}"
    );
    let text = run_ok(&openssl, &["x509", "-in", &root, "-noout", "-text"]);
    assert!(
        text.contains("prime256v1") || text.contains("P-256"),
        "root is not P-256"
    );
    let nine_years = (9 * 365 * 24 * 3600).to_string();
    let out = run(
        &openssl,
        &["x509", "-in", &root, "-noout", "-checkend", &nine_years],
    );
    assert!(out.status.success(), "root does not live ~10 years");
}

#[test]
fn ttl_default_cap_and_serials() {
    let ca = CertificateAuthority::generate("cluster.local", "Trellis")
        .unwrap()
        .with_options(CaOptions {
            default_ttl: Duration::from_secs(3600),
            max_ttl: Duration::from_secs(2 * 3600),
        })
        .unwrap();
    let me = id("default", "a");
    let req = generate_key_and_csr(&me).unwrap();
    let lifetime = |ttl| {
        let issued = ca.sign_csr(&req.csr_pem, &me, ttl).unwrap();
        let c = CertifiedIdentity::from_issued(&req.key, &issued).unwrap();
        let span = c.not_after().duration_since(c.not_before()).unwrap();
        (span, c.serial_hex().to_string())
    };
    let (zero, s1) = lifetime(Duration::ZERO);
    assert_eq!(
        zero,
        Duration::from_secs(3600 + 60),
        "default TTL plus 1 min backdate"
    );
    let (capped, s2) = lifetime(Duration::from_secs(30 * 24 * 3600));
    assert_eq!(
        capped,
        Duration::from_secs(2 * 3600 + 60),
        "capped at max TTL"
    );
    let (short, _) = lifetime(Duration::from_secs(600));
    assert_eq!(short, Duration::from_secs(660));
    assert_ne!(s1, s2, "serials are random");
    assert_eq!(s1.len(), 32, "128-bit serial");

    assert!(CertificateAuthority::generate("cluster.local", "x")
        .unwrap()
        .with_options(CaOptions {
            default_ttl: Duration::from_secs(10),
            max_ttl: Duration::from_secs(5),
        })
        .is_err());
}

#[test]
fn csr_asking_for_other_names_gets_the_callers_identity() {
    let ca = CertificateAuthority::generate("cluster.local", "Trellis").unwrap();
    // The requester asks for someone else's identity, extra names and a subject.
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, "admin");
    params.subject_alt_names = vec![
        SanType::URI(
            "spiffe://cluster.local/ns/istio-system/sa/istiod"
                .try_into()
                .unwrap(),
        ),
        SanType::URI("spiffe://evil.example/ns/a/sa/b".try_into().unwrap()),
        SanType::DnsName("istiod.istio-system.svc".try_into().unwrap()),
        SanType::IpAddress("10.0.0.1".parse().unwrap()),
    ];
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let csr_pem = params.serialize_request(&key).unwrap().pem().unwrap();

    let caller_says = id("payments", "worker");
    let issued = ca.sign_csr(&csr_pem, &caller_says, Duration::ZERO).unwrap();
    let leaf = trellis_identity::pem::certs_from_pem(&issued.leaf_pem, "leaf").unwrap();
    assert_eq!(spiffe_id_from_cert(leaf[0].as_ref()).unwrap(), caller_says);

    // And the same with a CSR built by openssl (RSA key, SANs, CA:TRUE, keyCertSign requested).
    let Some(openssl) = openssl() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let key_path = tmp.path().join("k.pem").to_string_lossy().into_owned();
    let csr_path = tmp.path().join("r.csr").to_string_lossy().into_owned();
    run_ok(
        &openssl,
        &[
            "req",
            "-new",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &key_path,
            "-out",
            &csr_path,
            "-subj",
            "/CN=root/O=evil",
            "-addext",
            "subjectAltName=URI:spiffe://cluster.local/ns/istio-system/sa/istiod,DNS:evil.example",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=keyCertSign",
        ],
    );
    let csr_pem = fs::read_to_string(&csr_path).unwrap();
    let issued = ca.sign_csr(&csr_pem, &caller_says, Duration::ZERO).unwrap();
    let (root, chain, leaf) = write_issued(tmp.path(), &issued);
    run_ok(
        &openssl,
        &["verify", "-CAfile", &root, "-untrusted", &chain, &leaf],
    );
    let text = run_ok(&openssl, &["x509", "-in", &leaf, "-noout", "-text"]);
    assert!(
        text.contains("URI:spiffe://cluster.local/ns/payments/sa/worker"),
        "{text}"
    );
    assert!(!text.contains("istiod") && !text.contains("evil"), "{text}");
    assert!(
        text.contains("CA:FALSE") && !text.contains("Certificate Sign"),
        "{text}"
    );
    // The workload's RSA key pairs with the issued chain.
    let key_pem = fs::read_to_string(&key_path).unwrap();
    let certified = CertifiedIdentity::from_pem(&issued.chain_pem, &key_pem).unwrap();
    assert_eq!(certified.id(), &caller_says);
}

#[test]
fn plugin_ca_round_trip_save_load_sign_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ca");
    let ca = CertificateAuthority::generate("cluster.local", "Trellis").unwrap();
    ca.save(&dir).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = fs::metadata(dir.join("ca-key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "ca-key.pem must be private");
    }
    let loaded = CertificateAuthority::load_plugin(&dir).unwrap();
    assert_eq!(loaded.root_pem(), ca.root_pem());
    assert_eq!(loaded.ca_cert(), ca.ca_cert());

    // load_or_generate reuses the saved CA instead of minting a new root.
    let again = CertificateAuthority::load_or_generate(&dir, "cluster.local", "Trellis").unwrap();
    assert_eq!(again.root_pem(), ca.root_pem());
    // ... and generates (and saves) one in an empty directory.
    let fresh_dir = tmp.path().join("fresh");
    let fresh = CertificateAuthority::load_or_generate(&fresh_dir, "cluster.local", "T").unwrap();
    assert_ne!(fresh.root_pem(), ca.root_pem());
    let fresh2 = CertificateAuthority::load_or_generate(&fresh_dir, "cluster.local", "T").unwrap();
    assert_eq!(fresh.root_pem(), fresh2.root_pem());

    let me = id("prod", "auth-service");
    let req = generate_key_and_csr(&me).unwrap();
    let issued = loaded.sign_csr(&req.csr_pem, &me, Duration::ZERO).unwrap();
    let certified = CertifiedIdentity::from_issued(&req.key, &issued).unwrap();
    certified.verify(ca.trust_bundle()).unwrap();

    let Some(openssl) = openssl() else { return };
    let (_, chain, leaf) = write_issued(tmp.path(), &issued);
    let root = dir.join(ROOT_CERT_FILE).to_string_lossy().into_owned();
    let verify = run_ok(
        &openssl,
        &["verify", "-CAfile", &root, "-untrusted", &chain, &leaf],
    );
    assert!(verify.contains(": OK"), "{verify}");
}

/// An Istio-style plug-in CA made with openssl: RSA root, RSA intermediate whose key is in
/// the traditional PKCS#1 format, cert-chain.pem = intermediate + root.
#[test]
fn openssl_made_intermediate_plugin_ca() {
    let Some(openssl) = openssl() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let d = |n: &str| tmp.path().join(n).to_string_lossy().into_owned();
    fs::write(
        d("root.cnf"),
        "[v3]\nbasicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n\
         subjectKeyIdentifier=hash\n",
    )
    .unwrap();
    fs::write(
        d("int.cnf"),
        "[v3]\nbasicConstraints=critical,CA:TRUE,pathlen:0\n\
         keyUsage=critical,keyCertSign,cRLSign,digitalSignature\n\
         subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid:always\n",
    )
    .unwrap();
    run_ok(&openssl, &["genrsa", "-out", &d("root-key.pem"), "2048"]);
    // A self-signed root with explicit v3 extensions.
    run_ok(
        &openssl,
        &[
            "req",
            "-new",
            "-key",
            &d("root-key.pem"),
            "-subj",
            "/O=Istio/CN=Root CA",
            "-out",
            &d("root.csr"),
        ],
    );
    run_ok(
        &openssl,
        &[
            "x509",
            "-req",
            "-in",
            &d("root.csr"),
            "-signkey",
            &d("root-key.pem"),
            "-days",
            "3650",
            "-extfile",
            &d("root.cnf"),
            "-extensions",
            "v3",
            "-out",
            &d(ROOT_CERT_FILE),
        ],
    );
    run_ok(
        &openssl,
        &[
            "genrsa",
            "-traditional",
            "-out",
            &d(CA_KEY_FILE_NAME),
            "2048",
        ],
    );
    run_ok(
        &openssl,
        &[
            "req",
            "-new",
            "-key",
            &d(CA_KEY_FILE_NAME),
            "-subj",
            "/O=Istio/CN=Intermediate CA/L=cluster1",
            "-out",
            &d("int.csr"),
        ],
    );
    run_ok(
        &openssl,
        &[
            "x509",
            "-req",
            "-in",
            &d("int.csr"),
            "-CA",
            &d(ROOT_CERT_FILE),
            "-CAkey",
            &d("root-key.pem"),
            "-CAcreateserial",
            "-days",
            "730",
            "-extfile",
            &d("int.cnf"),
            "-extensions",
            "v3",
            "-out",
            &d(CA_CERT_FILE),
        ],
    );
    let key_text = fs::read_to_string(d(CA_KEY_FILE_NAME)).unwrap();
    assert!(
        key_text.contains("BEGIN RSA PRIVATE KEY"),
        "expected a PKCS#1 key"
    );
    let chain = fs::read_to_string(d(CA_CERT_FILE)).unwrap()
        + &fs::read_to_string(d(ROOT_CERT_FILE)).unwrap();
    fs::write(d(CERT_CHAIN_FILE), chain).unwrap();

    let ca = CertificateAuthority::load_plugin(tmp.path()).unwrap();
    let me = id("default", "service-gateway");
    let req = generate_key_and_csr(&me).unwrap();
    let issued = ca.sign_csr(&req.csr_pem, &me, Duration::ZERO).unwrap();
    // The served chain is leaf + intermediate; the root travels separately.
    let chain = trellis_identity::pem::certs_from_pem(&issued.chain_pem, "chain").unwrap();
    assert_eq!(chain.len(), 2);
    assert_eq!(
        TrustBundle::from_pem(&issued.root_pem).unwrap(),
        TrustBundle::from_pem(&fs::read_to_string(d(ROOT_CERT_FILE)).unwrap()).unwrap()
    );
    let out = tmp.path().join("out");
    fs::create_dir(&out).unwrap();
    let (_, chain_path, leaf_path) = write_issued(&out, &issued);
    let verify = run_ok(
        &openssl,
        &[
            "verify",
            "-CAfile",
            &d(ROOT_CERT_FILE),
            "-untrusted",
            &chain_path,
            &leaf_path,
        ],
    );
    assert!(verify.contains(": OK"), "{verify}");
    let certified = CertifiedIdentity::from_issued(&req.key, &issued).unwrap();
    certified.verify(ca.trust_bundle()).unwrap();

    // Saving keeps the key in its original (PKCS#1) encoding and the files reload.
    let copy = tmp.path().join("copy");
    ca.save(&copy).unwrap();
    assert!(fs::read_to_string(copy.join(CA_KEY_FILE_NAME))
        .unwrap()
        .contains("BEGIN RSA PRIVATE KEY"));
    CertificateAuthority::load_plugin(&copy).unwrap();
}

const CA_KEY_FILE_NAME: &str = trellis_identity::ca::CA_KEY_FILE;
