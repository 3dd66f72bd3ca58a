//! Certificate rotation: keeping a workload's certificate fresh without rebuilding TLS configs.
//!
//! Owns [`IdentityManager`], which holds the current [`CertifiedIdentity`] in an `ArcSwap` and
//! implements rustls's server and client certificate resolvers, so a config built once serves
//! each new handshake with the certificate current at that moment (established connections are
//! unaffected). It also owns the renewal loop: a tokio task that, at half of the certificate's
//! lifetime ±10% jitter, generates a fresh key and CSR and asks a [`CertificateIssuer`] (the
//! local CA via [`LocalIssuer`], or a remote CA service) to sign it, retrying with capped
//! exponential backoff and keeping the old certificate until a new one is installed.
//!
//! Fail closed: until the first certificate is installed the resolvers return `None`, so
//! servers cannot complete handshakes and clients present no certificate.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use rand::Rng as _;
use rcgen::KeyPair;
use rustls::client::ResolvesClientCert;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::SignatureScheme;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::bundle::{SharedTrustBundle, TrustBundle};
use crate::ca::{CertificateAuthority, IssuedCert};
use crate::certified::CertifiedIdentity;
use crate::csr::generate_key_and_csr;
use crate::error::{Error, Result};
use crate::spiffe::SpiffeId;

/// Something that turns a CSR into a certificate: the local CA, or a client of a remote CA
/// service. The issuer decides the identity (it authenticated the requester); the manager
/// rejects a certificate for any identity other than its own.
pub trait CertificateIssuer: Send + Sync + 'static {
    /// Sign `csr_pem` (a PEM `CERTIFICATE REQUEST`).
    fn issue(&self, csr_pem: String) -> impl Future<Output = Result<IssuedCert>> + Send;
}

/// A [`CertificateIssuer`] that signs with an in-process [`CertificateAuthority`] for a fixed
/// identity (standalone and local modes).
#[derive(Clone, Debug)]
pub struct LocalIssuer {
    ca: Arc<CertificateAuthority>,
    identity: SpiffeId,
    ttl: Duration,
}

impl LocalIssuer {
    /// Issue certificates for `identity` with lifetime `ttl` (zero = the CA's default).
    pub fn new(ca: Arc<CertificateAuthority>, identity: SpiffeId, ttl: Duration) -> Self {
        LocalIssuer { ca, identity, ttl }
    }
}

impl CertificateIssuer for LocalIssuer {
    async fn issue(&self, csr_pem: String) -> Result<IssuedCert> {
        self.ca.sign_csr(&csr_pem, &self.identity, self.ttl)
    }
}

/// When and how to renew.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RotationOptions {
    /// Fraction of the certificate's lifetime after which it is renewed (default 0.5).
    pub renew_at: f64,
    /// Relative jitter applied to the renewal point (default 0.1, i.e. ±10%).
    pub jitter: f64,
    /// First retry delay after a failed renewal, and the least time between two renewals
    /// (default 1 s).
    pub retry_initial: Duration,
    /// Retry delays double up to this (default 60 s).
    pub retry_max: Duration,
}

impl Default for RotationOptions {
    fn default() -> Self {
        RotationOptions {
            renew_at: 0.5,
            jitter: 0.1,
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
        }
    }
}

/// Holds a workload's current certificate and trust bundle, and renews the certificate.
pub struct IdentityManager {
    identity: SpiffeId,
    current: ArcSwapOption<CertifiedIdentity>,
    bundle: SharedTrustBundle,
    generation: watch::Sender<u64>,
}

impl IdentityManager {
    /// A manager for `identity` trusting `bundle`, holding no certificate yet.
    pub fn new(identity: SpiffeId, bundle: TrustBundle) -> Arc<Self> {
        Arc::new(IdentityManager {
            identity,
            current: ArcSwapOption::empty(),
            bundle: SharedTrustBundle::new(bundle),
            generation: watch::Sender::new(0),
        })
    }

    /// The identity this manager holds certificates for.
    pub fn identity(&self) -> &SpiffeId {
        &self.identity
    }

    /// The current certificate, if one has been installed.
    pub fn current(&self) -> Option<Arc<CertifiedIdentity>> {
        self.current.load_full()
    }

    /// The trust bundle slot; pass it to [`crate::tls`] builders so bundle updates delivered
    /// with new certificates reach existing configs.
    pub fn trust_bundle(&self) -> SharedTrustBundle {
        self.bundle.clone()
    }

    /// A counter bumped every time a certificate is installed.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// Wait until a certificate is installed (readiness).
    pub async fn ready(&self) {
        let mut rx = self.generation.subscribe();
        // The sender lives in `self`, so this cannot fail while we borrow it.
        let _ = rx.wait_for(|_| self.current.load().is_some()).await;
    }

    /// Install a certificate issued for `key`. It must certify this manager's identity and
    /// verify against the trust bundle: the one delivered with it (`root_pem`) if any, which
    /// then replaces the current bundle, or else the current bundle.
    pub fn install(&self, key: &KeyPair, issued: &IssuedCert) -> Result<Arc<CertifiedIdentity>> {
        let certified = CertifiedIdentity::from_issued(key, issued)?;
        let bundle = if issued.root_pem.trim().is_empty() {
            None
        } else {
            Some(TrustBundle::from_pem(&issued.root_pem)?)
        };
        self.install_identity(Arc::new(certified), bundle)
    }

    /// Install an already assembled identity (e.g. loaded from files), optionally with a new
    /// trust bundle. Same checks as [`Self::install`].
    pub fn install_identity(
        &self,
        certified: Arc<CertifiedIdentity>,
        bundle: Option<TrustBundle>,
    ) -> Result<Arc<CertifiedIdentity>> {
        if certified.id() != &self.identity {
            return Err(Error::Issue(format!(
                "issued certificate is for {}, expected {}",
                certified.id(),
                self.identity
            )));
        }
        let current_bundle = self.bundle.load();
        let check_bundle = bundle.as_ref().unwrap_or(&current_bundle);
        certified.verify(check_bundle)?;
        if let Some(bundle) = bundle {
            if bundle != *current_bundle {
                tracing::info!(roots = bundle.len(), "trust bundle updated");
                self.bundle.store(bundle);
            }
        }
        self.current.store(Some(certified.clone()));
        self.generation.send_modify(|g| *g += 1);
        tracing::info!(
            identity = %self.identity,
            serial = certified.serial_hex(),
            not_after = ?certified.not_after(),
            "workload certificate installed"
        );
        Ok(certified)
    }

    /// Generate a fresh key and CSR, have `issuer` sign it and install the result.
    pub async fn renew<I: CertificateIssuer>(&self, issuer: &I) -> Result<Arc<CertifiedIdentity>> {
        let request = generate_key_and_csr(&self.identity)?;
        let issued = issuer.issue(request.csr_pem).await?;
        self.install(&request.key, &issued)
    }

    /// Start the renewal task on the current tokio runtime: it issues a first certificate at
    /// once if none is installed, then renews each one at `renew_at` of its lifetime (±jitter).
    /// The task stops when the returned handle is dropped or stopped.
    pub fn spawn_rotation<I: CertificateIssuer>(
        self: &Arc<Self>,
        issuer: I,
        options: RotationOptions,
    ) -> Result<RotationHandle> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| Error::Issue(format!("rotation needs a tokio runtime: {e}")))?;
        let manager = Arc::clone(self);
        let task = runtime.spawn(async move { manager.rotation_loop(issuer, options).await });
        Ok(RotationHandle { task })
    }

    async fn rotation_loop<I: CertificateIssuer>(
        self: Arc<Self>,
        issuer: I,
        options: RotationOptions,
    ) {
        loop {
            if let Some(current) = self.current() {
                // Never renew back to back, even if the CA hands out nearly expired
                // certificates (e.g. because its own certificate is about to expire).
                let delay =
                    renewal_delay(&current, SystemTime::now(), &options).max(options.retry_initial);
                tracing::debug!(identity = %self.identity, ?delay, "next certificate renewal");
                tokio::time::sleep(delay).await;
            }
            let mut backoff = options.retry_initial.max(Duration::from_millis(1));
            loop {
                match self.renew(&issuer).await {
                    Ok(_) => break,
                    Err(e) => {
                        let expired = self
                            .current()
                            .is_some_and(|c| c.not_after() <= SystemTime::now());
                        tracing::warn!(
                            identity = %self.identity,
                            error = %e,
                            retry_in = ?backoff,
                            current_expired = expired,
                            "certificate renewal failed; keeping the current certificate"
                        );
                        tokio::time::sleep(jittered(backoff, options.jitter)).await;
                        backoff = (backoff * 2).min(options.retry_max.max(backoff));
                    }
                }
            }
        }
    }
}

/// Time from `now` until `cert` should be renewed: `renew_at` of its lifetime after
/// `notBefore`, moved by up to ±`jitter` of that span.
pub fn renewal_delay(
    cert: &CertifiedIdentity,
    now: SystemTime,
    options: &RotationOptions,
) -> Duration {
    let lifetime = cert
        .not_after()
        .duration_since(cert.not_before())
        .unwrap_or_default();
    let fraction = options.renew_at.clamp(0.0, 1.0);
    let span = lifetime.mul_f64(fraction);
    let target = cert.not_before() + jittered(span, options.jitter);
    target.duration_since(now).unwrap_or_default()
}

fn jittered(d: Duration, jitter: f64) -> Duration {
    let jitter = jitter.clamp(0.0, 1.0);
    if jitter == 0.0 {
        return d;
    }
    let factor = rand::rng().random_range(1.0 - jitter..=1.0 + jitter);
    d.mul_f64(factor)
}

impl fmt::Debug for IdentityManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentityManager")
            .field("identity", &self.identity.to_string())
            .field(
                "current",
                &self
                    .current
                    .load()
                    .as_ref()
                    .map(|c| c.serial_hex().to_string()),
            )
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for IdentityManager {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current
            .load()
            .as_ref()
            .map(|c| c.certified_key().clone())
    }
}

impl ResolvesClientCert for IdentityManager {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.current
            .load()
            .as_ref()
            .map(|c| c.certified_key().clone())
    }

    fn has_certs(&self) -> bool {
        self.current.load().is_some()
    }
}

/// The running renewal task; dropping it stops the task.
#[derive(Debug)]
pub struct RotationHandle {
    task: JoinHandle<()>,
}

impl RotationHandle {
    /// Stop renewing (the current certificate stays installed).
    pub fn stop(self) {
        // Drop aborts.
    }

    /// Whether the task is still running.
    pub fn is_running(&self) -> bool {
        !self.task.is_finished()
    }
}

impl Drop for RotationHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}
