//! mTLS over real loopback TCP with tokio-rustls, and the SPIFFE verifiers against crafted
//! certificates.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{connect, echo, id, issue, Server};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::client::danger::ServerCertVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::{CertificateError, ClientConfig, ServerConfig};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use trellis_identity::tls::{provider, SpiffeClientVerifier, SpiffeServerVerifier};
use trellis_identity::{
    client_config, peer_identity, server_config, CertificateAuthority, ClientAuth, SpiffeId,
    TrustBundle,
};

const SNI: &str = "outbound_.8080_._.service-gateway.default.svc.cluster.local";

fn new_ca() -> CertificateAuthority {
    CertificateAuthority::generate("cluster.local", "Trellis").unwrap()
}

#[tokio::test]
async fn mutual_tls_between_two_identities_each_side_sees_the_other() {
    let ca = new_ca();
    let gw_id = id("default", "service-gateway");
    let auth_id = id("default", "auth-service");
    let gw = issue(&ca, &gw_id);
    let auth = issue(&ca, &auth_id);

    let server = Server::bind(
        server_config(
            gw.clone(),
            ca.trust_bundle(),
            ClientAuth::Required,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        )
        .unwrap(),
    )
    .await;
    let client_cfg = client_config(
        auth.clone(),
        ca.trust_bundle(),
        vec![id("default", "other"), gw_id.clone()],
        vec![b"h2".to_vec()],
    )
    .unwrap();

    let (server_side, client_side) =
        tokio::join!(server.accept(), connect(server.addr, client_cfg, SNI));
    let mut server_side = server_side.expect("server handshake");
    let mut client_side = client_side.expect("client handshake");

    let (_, server_conn) = server_side.get_ref();
    assert_eq!(peer_identity(server_conn), Some(auth_id.clone()));
    assert_eq!(server_conn.server_name(), Some(SNI), "SNI is still sent");
    assert_eq!(server_conn.alpn_protocol(), Some(&b"h2"[..]));
    assert_eq!(
        server_conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    let (_, client_conn) = client_side.get_ref();
    assert_eq!(peer_identity(client_conn), Some(gw_id.clone()));

    echo(&mut client_side, &mut server_side, b"hello mesh").await;
}

#[tokio::test]
async fn server_rejects_a_client_from_another_root() {
    let ca = new_ca();
    let other_ca = new_ca();
    let gw_id = id("default", "service-gateway");
    let gw = issue(&ca, &gw_id);
    let intruder = issue(&other_ca, &id("default", "auth-service"));

    let server =
        Server::bind(server_config(gw, ca.trust_bundle(), ClientAuth::Required, vec![]).unwrap())
            .await;
    // The client trusts both roots, so only the server's check can fail.
    let both = ca.trust_bundle().merged(other_ca.trust_bundle());
    let client_cfg = client_config(intruder, both, vec![gw_id], vec![]).unwrap();
    let (server_side, client_side) = tokio::join!(server.accept(), async {
        let mut tls = connect(server.addr, client_cfg, SNI).await?;
        // In TLS 1.3 the client learns of the rejection on its first read.
        use tokio::io::AsyncReadExt as _;
        let mut buf = [0u8; 1];
        tls.read(&mut buf).await
    });
    let err = server_side.expect_err("server must reject the client");
    // Both roots have the same subject, so webpki finds a candidate issuer whose signature
    // does not verify (BadSignature) rather than none at all (UnknownIssuer).
    let msg = err.to_string();
    assert!(
        msg.contains("invalid peer certificate")
            && (msg.contains("BadSignature") || msg.contains("UnknownIssuer")),
        "{msg}"
    );
    assert!(
        !matches!(client_side, Ok(n) if n > 0),
        "client got data from a server that rejected it"
    );
}

#[tokio::test]
async fn client_rejects_a_server_whose_identity_is_not_expected() {
    let ca = new_ca();
    let impostor = issue(&ca, &id("default", "impostor"));
    let client = issue(&ca, &id("default", "auth-service"));
    let server = Server::bind(
        server_config(impostor, ca.trust_bundle(), ClientAuth::Required, vec![]).unwrap(),
    )
    .await;
    let client_cfg = client_config(
        client,
        ca.trust_bundle(),
        vec![id("default", "service-gateway")],
        vec![],
    )
    .unwrap();
    let (server_side, client_side) =
        tokio::join!(server.accept(), connect(server.addr, client_cfg, SNI));
    let err = client_side.expect_err("client must reject the server");
    let msg = err.to_string();
    assert!(msg.contains("not one of the expected"), "{msg}");
    assert!(
        msg.contains("spiffe://cluster.local/ns/default/sa/impostor"),
        "{msg}"
    );
    assert!(server_side.is_err());
}

#[tokio::test]
async fn client_rejects_a_server_from_another_root() {
    let ca = new_ca();
    let other = new_ca();
    let gw_id = id("default", "service-gateway");
    let server = Server::bind(
        server_config(
            issue(&other, &gw_id),
            other.trust_bundle(),
            ClientAuth::Optional,
            vec![],
        )
        .unwrap(),
    )
    .await;
    let client_cfg = client_config(
        issue(&ca, &id("default", "auth-service")),
        ca.trust_bundle(),
        vec![gw_id],
        vec![],
    )
    .unwrap();
    let (_, client_side) = tokio::join!(server.accept(), connect(server.addr, client_cfg, SNI));
    let err = client_side.expect_err("client must reject the server");
    let msg = err.to_string();
    assert!(
        msg.contains("invalid peer certificate")
            && (msg.contains("BadSignature") || msg.contains("UnknownIssuer")),
        "{msg}"
    );
}

/// A client config presenting no certificate at all.
fn anonymous_client(bundle: &TrustBundle, expected: SpiffeId) -> ClientConfig {
    ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(
            SpiffeServerVerifier::new(bundle, [expected]).unwrap(),
        ))
        .with_no_client_auth()
}

#[tokio::test]
async fn required_client_auth_rejects_anonymous_clients_optional_admits_them() {
    let ca = new_ca();
    let gw_id = id("default", "service-gateway");
    let gw = issue(&ca, &gw_id);

    let strict = Server::bind(
        server_config(gw.clone(), ca.trust_bundle(), ClientAuth::Required, vec![]).unwrap(),
    )
    .await;
    let (server_side, _) = tokio::join!(
        strict.accept(),
        connect(
            strict.addr,
            anonymous_client(ca.trust_bundle(), gw_id.clone()),
            SNI
        )
    );
    assert!(
        server_side.is_err(),
        "STRICT server accepted a client without a certificate"
    );

    let permissive =
        Server::bind(server_config(gw, ca.trust_bundle(), ClientAuth::Optional, vec![]).unwrap())
            .await;
    let (server_side, client_side) = tokio::join!(
        permissive.accept(),
        connect(
            permissive.addr,
            anonymous_client(ca.trust_bundle(), gw_id.clone()),
            SNI
        )
    );
    let mut server_side = server_side.unwrap();
    let mut client_side = client_side.unwrap();
    assert_eq!(peer_identity(server_side.get_ref().1), None);
    assert_eq!(peer_identity(client_side.get_ref().1), Some(gw_id));
    echo(&mut client_side, &mut server_side, b"plain tls").await;
}

#[tokio::test]
async fn a_bundle_with_two_roots_trusts_both_during_root_rotation() {
    let old = new_ca();
    let new = new_ca();
    let bundle = old.trust_bundle().merged(new.trust_bundle());
    assert_eq!(bundle.len(), 2);
    let bundle = TrustBundle::from_pem(&bundle.to_pem()).unwrap();
    let gw_id = id("default", "service-gateway");
    let server = Server::bind(
        server_config(
            issue(&new, &gw_id),
            bundle.clone(),
            ClientAuth::Required,
            vec![],
        )
        .unwrap(),
    )
    .await;
    let client_id = id("default", "auth-service");
    let client_cfg = client_config(issue(&old, &client_id), bundle, vec![gw_id], vec![]).unwrap();
    let (s, c) = tokio::join!(server.accept(), connect(server.addr, client_cfg, SNI));
    let (mut s, mut c) = (s.unwrap(), c.unwrap());
    assert_eq!(peer_identity(s.get_ref().1), Some(client_id));
    echo(&mut c, &mut s, b"x").await;
}

/// A plug-in CA whose signing certificate is an intermediate: the leaf chain carries it.
#[tokio::test]
async fn handshake_through_an_intermediate_plugin_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let root_key = KeyPair::generate().unwrap();
    let root_params = ca_params("Test Root");
    let root = root_params.self_signed(&root_key).unwrap();
    let int_key = KeyPair::generate().unwrap();
    let int = ca_params("Test Intermediate")
        .signed_by(&int_key, &Issuer::from_params(&root_params, &root_key))
        .unwrap();
    std::fs::write(tmp.path().join("ca-cert.pem"), int.pem()).unwrap();
    std::fs::write(tmp.path().join("ca-key.pem"), int_key.serialize_pem()).unwrap();
    std::fs::write(tmp.path().join("root-cert.pem"), root.pem()).unwrap();
    std::fs::write(
        tmp.path().join("cert-chain.pem"),
        format!("{}{}", int.pem(), root.pem()),
    )
    .unwrap();
    let ca = CertificateAuthority::load_plugin(tmp.path()).unwrap();

    let gw_id = id("default", "service-gateway");
    let client_id = id("default", "auth-service");
    let gw = issue(&ca, &gw_id);
    assert_eq!(gw.chain().len(), 2, "leaf + intermediate");
    let server =
        Server::bind(server_config(gw, ca.trust_bundle(), ClientAuth::Required, vec![]).unwrap())
            .await;
    let client_cfg = client_config(
        issue(&ca, &client_id),
        ca.trust_bundle(),
        vec![gw_id.clone()],
        vec![],
    )
    .unwrap();
    let (s, c) = tokio::join!(server.accept(), connect(server.addr, client_cfg, SNI));
    let (mut s, mut c) = (s.unwrap(), c.unwrap());
    assert_eq!(peer_identity(s.get_ref().1), Some(client_id));
    assert_eq!(peer_identity(c.get_ref().1), Some(gw_id));
    echo(&mut c, &mut s, b"via intermediate").await;
}

fn ca_params(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let now = std::time::SystemTime::now();
    p.not_before = (now - Duration::from_secs(60)).into();
    p.not_after = (now + Duration::from_secs(3600)).into();
    p
}

/// A root of our own making, to craft leaves our CA would never issue.
struct RoguePki {
    params: CertificateParams,
    key: KeyPair,
    bundle: TrustBundle,
}

impl RoguePki {
    fn new() -> Self {
        let params = ca_params("Rogue Root");
        let key = KeyPair::generate().unwrap();
        let root = params.self_signed(&key).unwrap();
        RoguePki {
            bundle: TrustBundle::new([root.der().clone()]).unwrap(),
            params,
            key,
        }
    }

    fn leaf(
        &self,
        edit: impl FnOnce(&mut CertificateParams),
    ) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let now = std::time::SystemTime::now();
        p.not_before = (now - Duration::from_secs(60)).into();
        p.not_after = (now + Duration::from_secs(3600)).into();
        edit(&mut p);
        let cert = p
            .signed_by(&key, &Issuer::from_params(&self.params, &self.key))
            .unwrap();
        (
            cert.der().clone(),
            PrivateKeyDer::from(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
    }
}

fn uri(s: &str) -> SanType {
    SanType::URI(s.try_into().unwrap())
}

#[test]
fn verifiers_reject_leaves_without_exactly_one_valid_spiffe_uri() {
    let pki = RoguePki::new();
    let expected = id("default", "service-gateway");
    let server_verifier = SpiffeServerVerifier::new(&pki.bundle, [expected.clone()]).unwrap();
    let client_verifier = SpiffeClientVerifier::new(&pki.bundle, ClientAuth::Required);
    let name = ServerName::try_from("service-gateway.default.svc.cluster.local").unwrap();
    let check = |cert: &CertificateDer<'_>| {
        (
            server_verifier.verify_server_cert(cert, &[], &name, &[], UnixTime::now()),
            client_verifier.verify_client_cert(cert, &[], UnixTime::now()),
        )
    };

    let (good, _) = pki.leaf(|p| p.subject_alt_names = vec![uri(&expected.to_uri())]);
    let (s, c) = check(&good);
    assert!(s.is_ok() && c.is_ok(), "{s:?} {c:?}");

    // A DNS name matching the SNI is not an identity.
    let (dns_only, _) = pki.leaf(|p| {
        p.subject_alt_names = vec![SanType::DnsName(
            "service-gateway.default.svc.cluster.local"
                .try_into()
                .unwrap(),
        )]
    });
    let (s, c) = check(&dns_only);
    assert!(s.is_err() && c.is_err());

    let (two_uris, _) = pki.leaf(|p| {
        p.subject_alt_names = vec![
            uri(&expected.to_uri()),
            uri("spiffe://cluster.local/ns/default/sa/other"),
        ]
    });
    let (s, c) = check(&two_uris);
    assert!(s.is_err() && c.is_err(), "two URI SANs accepted");

    for bad_uri in [
        "spiffe://cluster.local/ns/default/sa/service-gateway/extra",
        "spiffe://cluster.local/ns/default/sa/service%2Dgateway",
        "SPIFFE://cluster.local/ns/default/sa/service-gateway",
        "https://cluster.local/ns/default/sa/service-gateway",
    ] {
        let (cert, _) = pki.leaf(|p| p.subject_alt_names = vec![uri(bad_uri)]);
        let (s, c) = check(&cert);
        assert!(s.is_err() && c.is_err(), "accepted {bad_uri}");
    }

    // Expired.
    let (expired, _) = pki.leaf(|p| {
        p.subject_alt_names = vec![uri(&expected.to_uri())];
        let now = std::time::SystemTime::now();
        p.not_before = (now - Duration::from_secs(7200)).into();
        p.not_after = (now - Duration::from_secs(3600)).into();
    });
    let (s, c) = check(&expired);
    assert!(
        matches!(
            s,
            Err(rustls::Error::InvalidCertificate(
                CertificateError::ExpiredContext { .. } | CertificateError::Expired
            ))
        ),
        "{s:?}"
    );
    assert!(c.is_err());

    // A client-only certificate cannot serve; a server-only one cannot be a client.
    let (client_only, _) = pki.leaf(|p| {
        p.subject_alt_names = vec![uri(&expected.to_uri())];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    });
    let (s, c) = check(&client_only);
    assert!(s.is_err() && c.is_ok(), "{s:?} {c:?}");
    let (server_only, _) = pki.leaf(|p| {
        p.subject_alt_names = vec![uri(&expected.to_uri())];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    });
    let (s, c) = check(&server_only);
    assert!(s.is_ok() && c.is_err(), "{s:?} {c:?}");

    // A CA certificate is not a leaf.
    let (ca_leaf, _) = pki.leaf(|p| {
        p.subject_alt_names = vec![uri(&expected.to_uri())];
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    });
    let (s, c) = check(&ca_leaf);
    assert!(s.is_err() && c.is_err());

    // Garbage bytes.
    let junk = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x00]);
    let (s, c) = check(&junk);
    assert!(s.is_err() && c.is_err());
}

#[tokio::test]
async fn server_rejects_a_client_presenting_two_uri_sans_over_tls() {
    let pki = RoguePki::new();
    let server_id = id("default", "service-gateway");
    let (server_cert, server_key) =
        pki.leaf(|p| p.subject_alt_names = vec![uri(&server_id.to_uri())]);
    let (client_cert, client_key) = pki.leaf(|p| {
        p.subject_alt_names = vec![
            uri("spiffe://cluster.local/ns/default/sa/a"),
            uri("spiffe://cluster.local/ns/default/sa/b"),
        ]
    });
    let server_cfg = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_client_cert_verifier(Arc::new(SpiffeClientVerifier::new(
            &pki.bundle,
            ClientAuth::Required,
        )))
        .with_single_cert(vec![server_cert], server_key)
        .unwrap();
    let client_cfg = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(
            SpiffeServerVerifier::new(&pki.bundle, [server_id]).unwrap(),
        ))
        .with_client_auth_cert(vec![client_cert], client_key)
        .unwrap();
    let server = Server::bind(server_cfg).await;
    let (s, _) = tokio::join!(server.accept(), connect(server.addr, client_cfg, SNI));
    assert!(s.is_err(), "server accepted a client with two URI SANs");
}

#[test]
fn empty_expected_set_is_refused() {
    let ca = new_ca();
    let me = issue(&ca, &id("default", "a"));
    assert!(client_config(me, ca.trust_bundle(), vec![], vec![]).is_err());
}

#[tokio::test]
async fn trust_domain_verifier_accepts_any_identity_of_the_domain_only() {
    use trellis_identity::tls::client_config_with_verifier;
    let ca = new_ca();
    let server_id = id("anything", "whoever");
    let server = Server::bind(
        server_config(
            issue(&ca, &server_id),
            ca.trust_bundle(),
            ClientAuth::Required,
            vec![],
        )
        .unwrap(),
    )
    .await;
    let me = issue(&ca, &id("default", "a"));
    let ok = client_config_with_verifier(
        me.clone(),
        SpiffeServerVerifier::any_in_trust_domain(ca.trust_bundle(), "cluster.local").unwrap(),
        vec![],
    )
    .unwrap();
    let (s, c) = tokio::join!(server.accept(), connect(server.addr, ok, SNI));
    assert!(s.is_ok() && c.is_ok(), "{s:?} {c:?}");

    let other_domain = client_config_with_verifier(
        me,
        SpiffeServerVerifier::any_in_trust_domain(ca.trust_bundle(), "example.org").unwrap(),
        vec![],
    )
    .unwrap();
    let (_, c) = tokio::join!(server.accept(), connect(server.addr, other_domain, SNI));
    let msg = c.expect_err("another trust domain").to_string();
    assert!(msg.contains("not in trust domain example.org"), "{msg}");
    assert!(SpiffeServerVerifier::any_in_trust_domain(ca.trust_bundle(), "bad domain/").is_err());
}
