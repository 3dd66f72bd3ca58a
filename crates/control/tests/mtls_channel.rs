//! The control plane's mTLS channel (Istio's 15012), with real TLS on loopback:
//! - a proxy bootstraps its workload certificate with the token on the plaintext port, then
//!   streams its config over mTLS (no token needed there) and renews its certificate there;
//! - the control plane presents `spiffe://cluster.local/ns/istio-system/sa/istiod`;
//! - a certificate for one workload cannot stream config or get certificates for another
//!   (PERMISSION_DENIED), and a client without a certificate cannot connect at all.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use trellis_control::{ControlPlane, ControlPlaneOptions};
use trellis_proxy::control_client::{
    start_proxy, ControlClient, ControlClientOptions, ControlPlaneMtls,
};
use trellis_proxy::RuntimeOptions;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_move_to_mtls_and_may_only_speak_for_themselves() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let v1 = "127.0.0.1:9".parse().unwrap();
    fixture(dir.path(), v1, v1, "v1");
    let cp = ControlPlane::start(ControlPlaneOptions {
        inputs: vec![dir.path().to_path_buf()],
        grpc_listen: "127.0.0.1:0".parse().unwrap(),
        mtls_listen: Some("127.0.0.1:0".parse().unwrap()),
        metrics_listen: None,
        bootstrap_token: Some(TOKEN.into()),
        watch: false,
        ..ControlPlaneOptions::default()
    })
    .await
    .expect("control plane starts");
    let mtls_addr = cp.mtls_addr().expect("mTLS port bound");

    // Bootstrap: token on the plaintext port -> the workload's certificate.
    let mut opts = ControlClientOptions::new(cp.grpc_addr().to_string(), "a", "client");
    opts.token = Some(TOKEN.into());
    let bootstrap = ControlClient::new(opts.clone());
    let identity = bootstrap
        .mesh_identity(Duration::ZERO, Default::default())
        .await
        .expect("certificate from the control plane");
    assert_eq!(
        identity.manager().identity().to_uri(),
        "spiffe://cluster.local/ns/a/sa/client-sa"
    );
    let mtls = ControlPlaneMtls {
        address: mtls_addr.to_string(),
        identity: identity.clone(),
        root_namespace: "istio-system".into(),
    };

    // The config stream over mTLS, with no token at all.
    let mut over_mtls = ControlClientOptions::new("127.0.0.1:1", "a", "client");
    over_mtls.mtls = Some(mtls.clone());
    let proxy = tokio::time::timeout(
        Duration::from_secs(10),
        start_proxy(
            over_mtls,
            RuntimeOptions {
                // Ephemeral ports: other tests run proxies in parallel.
                listen_remap: [15001, 15006, 8080]
                    .into_iter()
                    .map(|p| (p, "127.0.0.1:0".parse().unwrap()))
                    .collect(),
                admin: None,
                status: None,
                ..RuntimeOptions::default()
            },
        ),
    )
    .await
    .expect("config over the mTLS channel");
    assert!(!proxy.proxy.config().version.is_empty());
    eventually("synced over mTLS", Duration::from_secs(5), || {
        cp.all_synced() && cp.status().proxies.len() == 1
    })
    .await;

    // Renewal over mTLS (no token): a new certificate for the same identity.
    bootstrap.use_mtls(mtls.clone());
    let renewed = bootstrap
        .sign_certificate(
            &trellis_identity::generate_key_and_csr(identity.manager().identity())
                .unwrap()
                .csr_pem,
            Duration::ZERO,
        )
        .await
        .expect("renewal over mTLS");
    assert_eq!(
        renewed.spiffe_id,
        "spiffe://cluster.local/ns/a/sa/client-sa"
    );

    // The client's certificate cannot speak for the ingress gateway (another account).
    let mut other = ControlClientOptions::new("127.0.0.1:1", "istio-system", "ingress");
    other.mtls = Some(mtls.clone());
    let impostor = ControlClient::new(other);
    let err = impostor
        .sign_certificate(
            &trellis_identity::generate_key_and_bare_csr()
                .unwrap()
                .csr_pem,
            Duration::ZERO,
        )
        .await
        .expect_err("a certificate for another workload");
    assert!(
        err.contains("PermissionDenied") || err.contains("permission"),
        "{err}"
    );
    let stream = tokio::time::timeout(
        Duration::from_millis(1500),
        start_proxy(
            ControlClientOptions {
                mtls: Some(mtls.clone()),
                ..ControlClientOptions::new("127.0.0.1:1", "istio-system", "ingress")
            },
            RuntimeOptions {
                listen_remap: [80]
                    .into_iter()
                    .map(|p| (p, "127.0.0.1:0".parse().unwrap()))
                    .collect(),
                admin: None,
                status: None,
                ..RuntimeOptions::default()
            },
        ),
    )
    .await;
    assert!(stream.is_err(), "an impostor's stream got a config");
    assert_eq!(cp.status().proxies.len(), 1, "{:?}", cp.status());

    // No client certificate: the TLS handshake itself fails.
    let tcp = tokio::net::TcpStream::connect(mtls_addr).await.unwrap();
    let config = rustls::ClientConfig::builder_with_provider(trellis_identity::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny))
        .with_no_client_auth();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect("istiod".try_into().unwrap(), tcp)
        .await
        .expect("TLS 1.3 client hello is answered");
    // TLS 1.3: the server's refusal of a missing client certificate arrives as an alert on
    // the first read.
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let _ = tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf))
        .await
        .expect("the server answers");
    assert!(
        matches!(read, Err(_) | Ok(0)),
        "a client without a certificate was served: {read:?}"
    );

    // The server is the control plane's identity.
    let chain = tls
        .get_ref()
        .1
        .peer_certificates()
        .expect("the server presented a certificate")
        .to_vec();
    let (_, cert) = x509_parser::parse_x509_certificate(&chain[0]).unwrap();
    let sans = format!(
        "{:?}",
        cert.subject_alternative_name().unwrap().unwrap().value
    );
    assert!(
        sans.contains("spiffe://cluster.local/ns/istio-system/sa/istiod"),
        "{sans}"
    );
    proxy.shutdown(Duration::from_millis(100)).await;
    cp.shutdown().await;
}

/// Accepts any server certificate (this test checks the server's identity itself).
#[derive(Debug)]
struct AcceptAny;

impl rustls::client::danger::ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &rustls_pki_types::CertificateDer<'_>,
        _: &[rustls_pki_types::CertificateDer<'_>],
        _: &rustls_pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls_pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls_pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        trellis_identity::tls::provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}
