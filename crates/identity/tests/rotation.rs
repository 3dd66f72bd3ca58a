//! Certificate rotation: configs built once serve renewed certificates, in-flight connections
//! survive a rotation, renewal happens at half-life, and nothing is served before the first
//! certificate (fail closed).

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{connect, echo, id, issue, Server};
use trellis_identity::pem::certs_from_pem;
use trellis_identity::rotation::renewal_delay;
use trellis_identity::{
    client_config, peer_identity, server_config, CertificateAuthority, CertificateIssuer,
    ClientAuth, Error, IdentityManager, IssuedCert, LocalIssuer, RotationOptions, SpiffeId,
};

const SNI: &str = "service-gateway.default.svc.cluster.local";

fn served_serial(conn: &rustls::ClientConnection) -> Vec<u8> {
    conn.peer_certificates().unwrap()[0].as_ref().to_vec()
}

#[tokio::test]
async fn nothing_is_served_before_the_first_certificate() {
    let ca = CertificateAuthority::generate("cluster.local", "Trellis").unwrap();
    let gw_id = id("default", "service-gateway");
    let manager = IdentityManager::new(gw_id.clone(), ca.trust_bundle().clone());
    assert!(manager.current().is_none());

    // A server whose manager has no certificate cannot complete a handshake.
    let server = Server::bind(
        server_config(
            manager.clone(),
            manager.trust_bundle(),
            ClientAuth::Required,
            vec![],
        )
        .unwrap(),
    )
    .await;
    let client = issue(&ca, &id("default", "auth-service"));
    let client_cfg = client_config(
        client.clone(),
        ca.trust_bundle(),
        vec![gw_id.clone()],
        vec![],
    )
    .unwrap();
    let (s, c) = tokio::join!(
        server.accept(),
        connect(server.addr, client_cfg.clone(), SNI)
    );
    assert!(
        s.is_err() && c.is_err(),
        "handshake completed without a certificate"
    );

    // A client whose manager has no certificate is refused by a STRICT server.
    let client_manager =
        IdentityManager::new(id("default", "auth-service"), ca.trust_bundle().clone());
    let strict = Server::bind(
        server_config(
            issue(&ca, &gw_id),
            ca.trust_bundle(),
            ClientAuth::Required,
            vec![],
        )
        .unwrap(),
    )
    .await;
    let cfg = client_config(
        client_manager.clone(),
        client_manager.trust_bundle(),
        vec![gw_id.clone()],
        vec![],
    )
    .unwrap();
    let (s, _) = tokio::join!(strict.accept(), connect(strict.addr, cfg, SNI));
    assert!(
        s.is_err(),
        "STRICT server admitted a client with no certificate"
    );

    // Once a certificate is installed, the very same server config works.
    let issuer = LocalIssuer::new(Arc::new(ca), gw_id.clone(), Duration::ZERO);
    manager.renew(&issuer).await.unwrap();
    manager.ready().await;
    let (s, c) = tokio::join!(server.accept(), connect(server.addr, client_cfg, SNI));
    let (mut s, mut c) = (s.unwrap(), c.unwrap());
    assert_eq!(peer_identity(c.get_ref().1), Some(gw_id));
    echo(&mut c, &mut s, b"ready").await;
}

#[tokio::test]
async fn rotation_changes_the_served_certificate_and_keeps_open_connections() {
    let ca = Arc::new(CertificateAuthority::generate("cluster.local", "Trellis").unwrap());
    let gw_id = id("default", "service-gateway");
    let manager = IdentityManager::new(gw_id.clone(), ca.trust_bundle().clone());
    let issuer = LocalIssuer::new(ca.clone(), gw_id.clone(), Duration::from_secs(3600));
    let first = manager.renew(&issuer).await.unwrap();

    let server = Server::bind(
        server_config(
            manager.clone(),
            manager.trust_bundle(),
            ClientAuth::Required,
            vec![],
        )
        .unwrap(),
    )
    .await;
    let client_id = id("default", "auth-service");
    let client_cfg = client_config(
        issue(&ca, &client_id),
        ca.trust_bundle(),
        vec![gw_id.clone()],
        vec![],
    )
    .unwrap();

    let (s, c) = tokio::join!(
        server.accept(),
        connect(server.addr, client_cfg.clone(), SNI)
    );
    let (mut old_s, mut old_c) = (s.unwrap(), c.unwrap());
    let first_leaf = served_serial(old_c.get_ref().1);
    assert_eq!(first_leaf, first.chain()[0].as_ref());
    echo(&mut old_c, &mut old_s, b"before").await;

    let second = manager.renew(&issuer).await.unwrap();
    assert_ne!(first.serial_hex(), second.serial_hex());
    assert_ne!(
        first.certified_key().key.public_key(),
        second.certified_key().key.public_key(),
        "each renewal uses a fresh key"
    );

    // The connection made before the rotation keeps working.
    echo(&mut old_c, &mut old_s, b"after rotation").await;
    // A client that kept a session ticket resumes the session authenticated before the
    // rotation: no certificate is exchanged, both identities carry over from the session.
    let (s, c) = tokio::join!(
        server.accept(),
        connect(server.addr, client_cfg.clone(), SNI)
    );
    let (resumed_s, resumed_c) = (s.unwrap(), c.unwrap());
    assert_eq!(
        resumed_c.get_ref().1.handshake_kind(),
        Some(rustls::HandshakeKind::Resumed)
    );
    assert_eq!(
        peer_identity(resumed_s.get_ref().1),
        Some(client_id.clone())
    );
    assert_eq!(peer_identity(resumed_c.get_ref().1), Some(gw_id.clone()));

    // A full handshake through the same server config gets the new certificate.
    let mut fresh_cfg = client_cfg;
    fresh_cfg.resumption = rustls::client::Resumption::disabled();
    let (s, c) = tokio::join!(server.accept(), connect(server.addr, fresh_cfg, SNI));
    let (mut new_s, mut new_c) = (s.unwrap(), c.unwrap());
    assert_eq!(
        new_c.get_ref().1.handshake_kind(),
        Some(rustls::HandshakeKind::Full)
    );
    assert_eq!(served_serial(new_c.get_ref().1), second.chain()[0].as_ref());
    echo(&mut new_c, &mut new_s, b"new").await;
    echo(&mut old_c, &mut old_s, b"old still fine").await;
}

/// With tokio's clock paused, the renewal task sleeps until half-life (±10%) and installs a
/// new certificate; an open connection is unaffected.
#[tokio::test(start_paused = true)]
async fn renewal_task_renews_at_half_life() {
    let ca = Arc::new(CertificateAuthority::generate("cluster.local", "Trellis").unwrap());
    let gw_id = id("default", "service-gateway");
    let manager = IdentityManager::new(gw_id.clone(), ca.trust_bundle().clone());
    let ttl = Duration::from_secs(3600);
    let mut changes = manager.subscribe();
    let handle = manager
        .spawn_rotation(
            LocalIssuer::new(ca.clone(), gw_id.clone(), ttl),
            RotationOptions::default(),
        )
        .unwrap();
    manager.ready().await;
    let first = manager.current().unwrap();
    changes.borrow_and_update();

    let server = Server::bind(
        server_config(
            manager.clone(),
            manager.trust_bundle(),
            ClientAuth::Required,
            vec![],
        )
        .unwrap(),
    )
    .await;
    let mut client_cfg = client_config(
        issue(&ca, &id("default", "auth-service")),
        ca.trust_bundle(),
        vec![gw_id.clone()],
        vec![],
    )
    .unwrap();
    // Full handshakes only, so each connection shows the certificate served at that moment.
    client_cfg.resumption = rustls::client::Resumption::disabled();
    let (s, c) = tokio::join!(
        server.accept(),
        connect(server.addr, client_cfg.clone(), SNI)
    );
    let (mut old_s, mut old_c) = (s.unwrap(), c.unwrap());
    assert_eq!(served_serial(old_c.get_ref().1), first.chain()[0].as_ref());

    let start = tokio::time::Instant::now();
    changes.changed().await.unwrap();
    let waited = start.elapsed();
    let second = manager.current().unwrap();
    assert_ne!(first.serial_hex(), second.serial_hex());
    // Lifetime is ttl + 1 min backdate; half of it from notBefore is ~29.5 min from issuance,
    // ±10% of 30.5 min.
    let lifetime = ttl + Duration::from_secs(60);
    let lo = lifetime.mul_f64(0.45) - Duration::from_secs(61);
    let hi = lifetime.mul_f64(0.55);
    assert!(
        waited >= lo && waited <= hi,
        "renewed after {waited:?}, expected {lo:?}..{hi:?}"
    );

    echo(&mut old_c, &mut old_s, b"still here").await;
    let (s, c) = tokio::join!(server.accept(), connect(server.addr, client_cfg, SNI));
    let (_s, c) = (s.unwrap(), c.unwrap());
    assert_eq!(served_serial(c.get_ref().1), second.chain()[0].as_ref());

    // And again for the next certificate.
    changes.changed().await.unwrap();
    assert_ne!(manager.current().unwrap().serial_hex(), second.serial_hex());
    assert!(handle.is_running());
    handle.stop();
}

#[test]
fn renewal_delay_is_half_life_with_bounded_jitter() {
    let ca = CertificateAuthority::generate("cluster.local", "Trellis").unwrap();
    let cert = issue(&ca, &id("default", "a")); // 24h + 1 min
    let lifetime = cert.not_after().duration_since(cert.not_before()).unwrap();
    let opts = RotationOptions::default();
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..200 {
        let d = renewal_delay(&cert, cert.not_before(), &opts);
        assert!(
            d >= lifetime.mul_f64(0.45) && d <= lifetime.mul_f64(0.55),
            "{d:?}"
        );
        seen.insert(d.as_secs());
    }
    assert!(seen.len() > 10, "no jitter");
    let no_jitter = RotationOptions {
        jitter: 0.0,
        ..opts
    };
    assert_eq!(
        renewal_delay(&cert, cert.not_before(), &no_jitter),
        lifetime / 2
    );
    // Past the renewal point: renew now.
    assert_eq!(
        renewal_delay(&cert, cert.not_after(), &opts),
        Duration::ZERO
    );
}

/// An issuer that fails a given number of times, then signs for a fixed identity.
struct FlakyIssuer {
    ca: Arc<CertificateAuthority>,
    identity: SpiffeId,
    failures_left: AtomicUsize,
    calls: Arc<AtomicUsize>,
}

impl CertificateIssuer for FlakyIssuer {
    async fn issue(&self, csr_pem: String) -> trellis_identity::Result<IssuedCert> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self
            .failures_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(Error::Issue("CA unavailable".into()));
        }
        self.ca
            .sign_csr(&csr_pem, &self.identity, Duration::from_secs(3600))
    }
}

#[tokio::test(start_paused = true)]
async fn failed_renewals_are_retried_and_the_old_certificate_is_kept() {
    let ca = Arc::new(CertificateAuthority::generate("cluster.local", "Trellis").unwrap());
    let gw_id = id("default", "service-gateway");
    let manager = IdentityManager::new(gw_id.clone(), ca.trust_bundle().clone());
    let calls = Arc::new(AtomicUsize::new(0));
    let issuer = FlakyIssuer {
        ca: ca.clone(),
        identity: gw_id.clone(),
        failures_left: AtomicUsize::new(3),
        calls: calls.clone(),
    };
    let _handle = manager
        .spawn_rotation(issuer, RotationOptions::default())
        .unwrap();
    manager.ready().await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        4,
        "three failures, then success"
    );
}

#[tokio::test]
async fn a_certificate_for_another_identity_is_refused() {
    let ca = Arc::new(CertificateAuthority::generate("cluster.local", "Trellis").unwrap());
    let gw_id = id("default", "service-gateway");
    let manager = IdentityManager::new(gw_id.clone(), ca.trust_bundle().clone());
    let good = manager
        .renew(&LocalIssuer::new(ca.clone(), gw_id.clone(), Duration::ZERO))
        .await
        .unwrap();
    // A confused issuer signs for someone else: the manager keeps its certificate.
    let wrong = LocalIssuer::new(ca.clone(), id("default", "other"), Duration::ZERO);
    let err = manager.renew(&wrong).await.unwrap_err();
    assert!(err.to_string().contains("expected"), "{err}");
    assert_eq!(manager.current().unwrap().serial_hex(), good.serial_hex());

    // A certificate from a CA outside the trust bundle is refused too.
    let other_ca = Arc::new(CertificateAuthority::generate("cluster.local", "Other").unwrap());
    struct NoRoots(LocalIssuer);
    impl CertificateIssuer for NoRoots {
        async fn issue(&self, csr: String) -> trellis_identity::Result<IssuedCert> {
            let mut issued = self.0.issue(csr).await?;
            issued.root_pem.clear();
            Ok(issued)
        }
    }
    let foreign = NoRoots(LocalIssuer::new(other_ca, gw_id.clone(), Duration::ZERO));
    assert!(manager.renew(&foreign).await.is_err());
    assert_eq!(manager.current().unwrap().serial_hex(), good.serial_hex());
}

/// A new root delivered with a certificate updates the trust bundle slot that configs built
/// earlier read, so peers with certificates from the new root are accepted.
#[tokio::test]
async fn trust_bundle_delivered_with_a_certificate_reaches_existing_configs() {
    let old = Arc::new(CertificateAuthority::generate("cluster.local", "Old").unwrap());
    let mut new_ca = CertificateAuthority::generate("cluster.local", "New").unwrap();
    let both = new_ca.trust_bundle().merged(old.trust_bundle());
    new_ca.set_trust_bundle(both.clone()).unwrap();
    let new_ca = Arc::new(new_ca);

    let client_id = id("default", "auth-service");
    let gw_id = id("default", "service-gateway");
    let manager = IdentityManager::new(client_id.clone(), old.trust_bundle().clone());
    manager
        .renew(&LocalIssuer::new(
            old.clone(),
            client_id.clone(),
            Duration::ZERO,
        ))
        .await
        .unwrap();
    let client_cfg = client_config(
        manager.clone(),
        manager.trust_bundle(),
        vec![gw_id.clone()],
        vec![],
    )
    .unwrap();

    // A server on the new root is not yet trusted...
    let server = Server::bind(
        server_config(issue(&new_ca, &gw_id), both, ClientAuth::Required, vec![]).unwrap(),
    )
    .await;
    let (_, c) = tokio::join!(
        server.accept(),
        connect(server.addr, client_cfg.clone(), SNI)
    );
    assert!(c.is_err());

    // ...until the client renews from the new CA, which hands out old + new roots.
    let issued = manager
        .renew(&LocalIssuer::new(
            new_ca.clone(),
            client_id.clone(),
            Duration::ZERO,
        ))
        .await
        .unwrap();
    assert_eq!(manager.trust_bundle().load().len(), 2);
    assert_eq!(
        certs_from_pem(&new_ca.root_pem(), "roots").unwrap().len(),
        2
    );
    let (s, c) = tokio::join!(server.accept(), connect(server.addr, client_cfg, SNI));
    let (s, c) = (s.unwrap(), c.unwrap());
    assert_eq!(peer_identity(c.get_ref().1), Some(gw_id));
    assert_eq!(peer_identity(s.get_ref().1), Some(client_id));
    assert_eq!(issued.id(), manager.identity());
}

#[test]
fn spawning_rotation_outside_a_runtime_is_an_error_not_a_panic() {
    let ca = Arc::new(CertificateAuthority::generate("cluster.local", "Trellis").unwrap());
    let me = id("default", "a");
    let manager = IdentityManager::new(me.clone(), ca.trust_bundle().clone());
    assert!(manager
        .spawn_rotation(
            LocalIssuer::new(ca, me, Duration::ZERO),
            RotationOptions::default()
        )
        .is_err());
}
