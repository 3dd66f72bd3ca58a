//! JSON Web Key Sets: parsing (`KeySet`), fetching over HTTP(S) and caching (`JwksCache`,
//! `KeySource`).
//!
//! Guarantees, each tested in `tests/jwt_jwks.rs`:
//! - **Fail closed.** A key source that never fetched successfully has no keys; tokens of its
//!   issuer are rejected (401). There is no fallback key.
//! - **Keep serving.** A failed fetch (connection error, timeout, non-200, a body that is not a
//!   JWKS, a JWKS without one usable key) never replaces the last good keys.
//! - **Bounded refetching.** Besides the periodic refresh (default 20 min, Istio's
//!   `PILOT_JWT_PUB_KEY_REFRESH_INTERVAL`), a request refetches when its token's `kid` is
//!   unknown or no keys are loaded yet: at most one fetch per source per `min_fetch_interval`
//!   (default 5 s), and concurrent requests wait for one shared in-flight fetch.
//! - Only signature keys of supported types are kept: RSA (>= 2048 bits; RS*/PS*), EC P-256
//!   (ES256), EC P-384 (ES384) and OKP Ed25519 (EdDSA). Symmetric (`oct`) keys are never
//!   loaded, so HMAC tokens cannot verify, whatever their header says.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwapOption;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use jsonwebtoken::{Algorithm, DecodingKey};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde::Serialize;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::task::AbortHandle;

/// Most keys read from one key set; the rest are ignored.
const MAX_KEYS: usize = 256;
/// Smallest RSA modulus accepted (bytes): 2048 bits, as NIST and aws-lc require.
const MIN_RSA_MODULUS_BYTES: usize = 256;

const RSA_ALGS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];

// ---------------------------------------------------------------------------------------------
// Key sets
// ---------------------------------------------------------------------------------------------

/// A parsed key set: the usable signature keys of a JWKS document.
#[derive(Debug)]
pub struct KeySet {
    keys: Vec<VerifyingKey>,
    /// Keys skipped while parsing, and why (for status and logs).
    skipped: Vec<String>,
}

/// One public key and the algorithms it may verify.
#[derive(Debug)]
pub struct VerifyingKey {
    pub kid: Option<String>,
    algs: &'static [Algorithm],
    key: DecodingKey,
}

impl VerifyingKey {
    /// The algorithms this key verifies (from its `kty`/`crv`, narrowed by its `alg`).
    pub fn algorithms(&self) -> &'static [Algorithm] {
        self.algs
    }

    pub(crate) fn decoding_key(&self) -> &DecodingKey {
        &self.key
    }
}

/// Why a key set (or one fetch of it) was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    #[error("JWKS is not a JSON object: {0}")]
    NotJson(String),
    #[error("JWKS has no \"keys\" array")]
    NoKeys,
    #[error("JWKS has no usable signature key ({0})")]
    NoUsableKeys(String),
    #[error("JWKS fetch from {url} failed: {reason}")]
    Fetch { url: String, reason: String },
    #[error("JWKS fetch from {url} answered HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("JWKS fetch from {url} timed out after {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    #[error("OpenID discovery at {url} failed: {reason}")]
    Discovery { url: String, reason: String },
    #[error("JWKS source has no keys yet (no successful fetch)")]
    NotFetched,
}

impl KeySet {
    /// Parses a JWKS document (`{"keys": [...]}`). Keys that are not usable for signature
    /// verification are skipped; a set with no usable key at all is an error.
    pub fn parse(json: &[u8]) -> Result<KeySet, JwksError> {
        let doc: Value =
            serde_json::from_slice(json).map_err(|e| JwksError::NotJson(e.to_string()))?;
        let Value::Object(doc) = doc else {
            return Err(JwksError::NotJson("not an object".into()));
        };
        let Some(Value::Array(raw)) = doc.get("keys") else {
            return Err(JwksError::NoKeys);
        };
        let mut keys = Vec::new();
        let mut skipped = Vec::new();
        for (i, k) in raw.iter().enumerate().take(MAX_KEYS) {
            match parse_key(k) {
                Ok(key) => keys.push(key),
                Err(why) => skipped.push(format!("keys[{i}]: {why}")),
            }
        }
        if raw.len() > MAX_KEYS {
            skipped.push(format!(
                "{} keys beyond {MAX_KEYS} ignored",
                raw.len() - MAX_KEYS
            ));
        }
        if keys.is_empty() {
            let why = if skipped.is_empty() {
                "the key list is empty".to_string()
            } else {
                skipped.join("; ")
            };
            return Err(JwksError::NoUsableKeys(why));
        }
        Ok(KeySet { keys, skipped })
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn keys(&self) -> &[VerifyingKey] {
        &self.keys
    }

    /// Keys skipped while parsing, and why.
    pub fn skipped(&self) -> &[String] {
        &self.skipped
    }

    /// True when some key carries `kid`.
    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }

    /// Keys that may verify a token with header `kid` and `alg`: keys with that `kid` (or
    /// without a `kid`, as Envoy) that support `alg`; without a token `kid`, every key that
    /// supports `alg`.
    pub fn candidates<'a>(
        &'a self,
        kid: Option<&'a str>,
        alg: Algorithm,
    ) -> impl Iterator<Item = &'a VerifyingKey> + 'a {
        self.keys.iter().filter(move |k| {
            k.algs.contains(&alg)
                && match (kid, k.kid.as_deref()) {
                    (Some(want), Some(have)) => want == have,
                    _ => true,
                }
        })
    }
}

fn parse_key(k: &Value) -> Result<VerifyingKey, String> {
    let Value::Object(k) = k else {
        return Err("not an object".into());
    };
    let text = |name: &str| -> Result<Option<&str>, String> {
        match k.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(format!("\"{name}\" is not a string")),
        }
    };
    let required = |name: &str| -> Result<&str, String> {
        text(name)?.ok_or_else(|| format!("\"{name}\" is missing"))
    };
    let b64 = |name: &str| -> Result<Vec<u8>, String> {
        let v = required(name)?;
        URL_SAFE_NO_PAD
            .decode(v.trim_end_matches('='))
            .map_err(|e| format!("\"{name}\" is not base64url: {e}"))
    };
    if let Some(u) = text("use")? {
        if u != "sig" {
            return Err(format!("use {u:?} is not \"sig\""));
        }
    }
    let kid = text("kid")?.map(str::to_string);
    let alg = match text("alg")? {
        None => None,
        Some(a) => Some(supported_alg(a).ok_or_else(|| format!("alg {a:?} is not supported"))?),
    };
    let kty = required("kty")?;
    let (family, key): (&'static [Algorithm], DecodingKey) = match kty {
        "RSA" => {
            let n = b64("n")?;
            let e = b64("e")?;
            let n_len = n.iter().skip_while(|b| **b == 0).count();
            if n_len < MIN_RSA_MODULUS_BYTES {
                return Err(format!(
                    "RSA modulus of {} bits is too small: at least 2048 required",
                    n_len * 8
                ));
            }
            if e.is_empty() {
                return Err("RSA exponent is empty".into());
            }
            (RSA_ALGS, DecodingKey::from_rsa_raw_components(&n, &e))
        }
        "EC" => {
            let (algs, len): (&'static [Algorithm], usize) = match required("crv")? {
                "P-256" => (&[Algorithm::ES256], 32),
                "P-384" => (&[Algorithm::ES384], 48),
                c => return Err(format!("EC curve {c:?} is not supported")),
            };
            let (x, y) = (b64("x")?, b64("y")?);
            if x.len() != len || y.len() != len {
                return Err("EC coordinates have the wrong length for the curve".into());
            }
            // The uncompressed SEC1 point aws-lc verifies with.
            let point: Vec<u8> = [&[0x04u8][..], &x, &y].concat();
            (algs, DecodingKey::from_ec_der(&point))
        }
        "OKP" => {
            match required("crv")? {
                "Ed25519" => {}
                c => return Err(format!("OKP curve {c:?} is not supported")),
            }
            let x = b64("x")?;
            if x.len() != 32 {
                return Err("Ed25519 key must be 32 bytes".into());
            }
            (&[Algorithm::EdDSA], DecodingKey::from_ed_der(&x))
        }
        "oct" => return Err("symmetric (oct) keys are never used".into()),
        other => return Err(format!("kty {other:?} is not supported")),
    };
    let algs = match alg {
        None => family,
        Some(a) if family.contains(&a) => single(a),
        Some(a) => return Err(format!("alg {a:?} does not fit kty {kty}")),
    };
    Ok(VerifyingKey { kid, algs, key })
}

/// The asymmetric algorithms Trellis verifies, by their JOSE names. `none` and HMAC are not
/// among them.
pub fn supported_alg(name: &str) -> Option<Algorithm> {
    Some(match name {
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        _ => return None,
    })
}

fn single(a: Algorithm) -> &'static [Algorithm] {
    match a {
        Algorithm::RS256 => &[Algorithm::RS256],
        Algorithm::RS384 => &[Algorithm::RS384],
        Algorithm::RS512 => &[Algorithm::RS512],
        Algorithm::PS256 => &[Algorithm::PS256],
        Algorithm::PS384 => &[Algorithm::PS384],
        Algorithm::PS512 => &[Algorithm::PS512],
        Algorithm::ES256 => &[Algorithm::ES256],
        Algorithm::ES384 => &[Algorithm::ES384],
        Algorithm::EdDSA => &[Algorithm::EdDSA],
        _ => &[],
    }
}

// ---------------------------------------------------------------------------------------------
// Options and the HTTP client
// ---------------------------------------------------------------------------------------------

/// How key sets are fetched and refreshed.
#[derive(Clone, Debug)]
pub struct JwksOptions {
    /// Periodic refresh of a key set that fetched fine (Istio: 20 min).
    pub refresh_interval: Duration,
    /// Request-triggered fetches (unknown `kid`, no keys yet) of one source happen at most this
    /// often.
    pub min_fetch_interval: Duration,
    /// After a failed fetch, the background retry waits this long, doubling up to
    /// `retry_max` (and never beyond `refresh_interval`).
    pub retry_min: Duration,
    pub retry_max: Duration,
    /// Largest JWKS (or discovery) body read.
    pub max_body_bytes: usize,
    /// Extra trust anchors (PEM) for `https` key sets, e.g. a private CA.
    pub ca_bundle_pem: Option<Vec<u8>>,
    /// Also trust Mozilla's public roots (`webpki-roots`) for `https` key sets.
    pub public_roots: bool,
}

impl Default for JwksOptions {
    fn default() -> Self {
        JwksOptions {
            refresh_interval: Duration::from_secs(20 * 60),
            min_fetch_interval: Duration::from_secs(5),
            retry_min: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
            max_body_bytes: 1 << 20,
            ca_bundle_pem: None,
            public_roots: true,
        }
    }
}

/// A minimal HTTP/1.1 GET client: one connection per fetch, TLS with rustls (aws-lc-rs).
struct HttpClient {
    tls: tokio_rustls::TlsConnector,
    max_body: usize,
}

impl HttpClient {
    fn new(opts: &JwksOptions) -> Result<HttpClient, String> {
        let mut roots = rustls::RootCertStore::empty();
        if opts.public_roots {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        }
        if let Some(pem) = &opts.ca_bundle_pem {
            let mut n = 0;
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| format!("JWKS CA bundle: {e}"))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("JWKS CA bundle: {e}"))?;
                n += 1;
            }
            if n == 0 {
                return Err("JWKS CA bundle holds no certificate".into());
            }
        }
        let config = rustls::ClientConfig::builder_with_provider(trellis_identity::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(HttpClient {
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
            max_body: opts.max_body_bytes,
        })
    }

    /// GET `url`; the body of a 200 answer.
    async fn get(&self, url: &str) -> Result<Bytes, JwksError> {
        let fail = |reason: String| JwksError::Fetch {
            url: url.to_string(),
            reason,
        };
        let uri: http::Uri = url.parse().map_err(|e| fail(format!("invalid URL: {e}")))?;
        let tls = match uri.scheme_str().map(str::to_ascii_lowercase).as_deref() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(fail("scheme must be http or https".into())),
        };
        let authority = uri
            .authority()
            .ok_or_else(|| fail("URL has no host".into()))?;
        // `user:pass@` never goes on the wire.
        let host_port = authority
            .as_str()
            .rsplit_once('@')
            .map_or(authority.as_str(), |(_, h)| h);
        let host = authority.host();
        let bare_host = host.trim_start_matches('[').trim_end_matches(']');
        let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let req = http::Request::get(path)
            .header(http::header::HOST, host_port)
            .header(http::header::ACCEPT, "application/json")
            .header(http::header::USER_AGENT, "trellis-proxy")
            .body(Empty::<Bytes>::new())
            .map_err(|e| fail(e.to_string()))?;

        let tcp = TcpStream::connect((bare_host, port))
            .await
            .map_err(|e| fail(format!("connect {host_port}: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let resp = if tls {
            let name = ServerName::try_from(bare_host.to_string())
                .map_err(|e| fail(format!("invalid TLS server name {bare_host:?}: {e}")))?;
            let stream = self
                .tls
                .connect(name, tcp)
                .await
                .map_err(|e| fail(format!("TLS handshake with {host_port}: {e}")))?;
            exchange(stream, req).await
        } else {
            exchange(tcp, req).await
        }
        .map_err(fail)?;

        let status = resp.status();
        if status != http::StatusCode::OK {
            return Err(JwksError::Status {
                url: url.to_string(),
                status: status.as_u16(),
            });
        }
        let body = Limited::new(resp.into_body(), self.max_body)
            .collect()
            .await
            .map_err(|e| fail(format!("reading body: {e}")))?;
        Ok(body.to_bytes())
    }
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("max_body", &self.max_body)
            .finish_non_exhaustive()
    }
}

async fn exchange<S>(
    io: S,
    req: http::Request<Empty<Bytes>>,
) -> Result<http::Response<hyper::body::Incoming>, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("HTTP handshake: {e}"))?;
    tokio::spawn(async move {
        // The connection ends with the response body; errors surface on the response.
        let _ = conn.await;
    });
    sender
        .send_request(req)
        .await
        .map_err(|e| format!("request: {e}"))
}

// ---------------------------------------------------------------------------------------------
// Key sources and the cache
// ---------------------------------------------------------------------------------------------

/// Where a remote key set lives.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Target {
    Uri(String),
    /// OpenID discovery from the issuer.
    Discovery(String),
}

impl Target {
    fn describe(&self) -> String {
        match self {
            Target::Uri(u) => u.clone(),
            Target::Discovery(iss) => discovery_url(iss),
        }
    }
}

fn discovery_url(issuer: &str) -> String {
    format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    )
}

/// What an operator sees about one key source (admin / config dump).
#[derive(Clone, Debug, Default, Serialize)]
pub struct SourceStatus {
    /// The `jwksUri`, or the discovery URL.
    pub url: String,
    /// Keys currently in use (0 before the first successful fetch).
    pub keys: usize,
    /// Fetch attempts, successful or not.
    pub fetches: u64,
    pub last_success: Option<SystemTime>,
    pub last_failure: Option<SystemTime>,
    /// Why the latest fetch failed; cleared by a successful one.
    pub last_error: Option<String>,
    /// Keys skipped in the current key set, and why.
    pub skipped_keys: Vec<String>,
}

/// One remote key set, shared by every rule that names it; refreshed in the background while
/// any rule holds it.
#[derive(Debug)]
pub struct KeySource {
    target: Target,
    keys: ArcSwapOption<KeySet>,
    /// Serializes fetches; holds when the last one started (for rate limiting).
    fetch: tokio::sync::Mutex<Option<Instant>>,
    /// Completed fetch attempts: a waiter that sees it move knows a fetch ran meanwhile.
    generation: AtomicU64,
    timeout_ms: AtomicU64,
    status: Mutex<SourceStatus>,
    client: Arc<HttpClient>,
    opts: Arc<JwksOptions>,
    task: Mutex<Option<AbortHandle>>,
}

impl Drop for KeySource {
    fn drop(&mut self) {
        if let Some(task) = self.task.get_mut().ok().and_then(|t| t.take()) {
            task.abort();
        }
    }
}

impl KeySource {
    /// The keys in use: `None` before the first successful fetch.
    pub fn keys(&self) -> Option<Arc<KeySet>> {
        self.keys.load_full()
    }

    pub fn status(&self) -> SourceStatus {
        let mut s = self
            .status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        s.keys = self.keys.load().as_ref().map_or(0, |k| k.len());
        s
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.load(Ordering::Relaxed))
    }

    /// Request-triggered refresh (unknown `kid`, no keys yet): fetches unless a fetch started
    /// within `min_fetch_interval`; waits for a fetch already in flight instead of starting
    /// another. Returns the keys in use afterwards. Starts the background refresh if the
    /// source was created outside a runtime.
    pub async fn refresh_on_demand(self: &Arc<Self>) -> Option<Arc<KeySet>> {
        let ok = self.refresh(true).await;
        let delay = if ok {
            self.opts.refresh_interval
        } else {
            self.opts.retry_min
        };
        self.start_background(delay);
        self.keys()
    }

    /// Fetches now (waiting for, and then reusing, a fetch already in flight). Returns whether
    /// the latest fetch succeeded.
    pub async fn refresh_now(&self) -> bool {
        self.refresh(false).await
    }

    /// Returns whether the latest fetch (ours, or the one we waited for) succeeded.
    async fn refresh(&self, rate_limited: bool) -> bool {
        let seen = self.generation.load(Ordering::Acquire);
        let mut last_start = self.fetch.lock().await;
        let skip = self.generation.load(Ordering::Acquire) != seen // a fetch completed while we waited: its result is ours
            || (rate_limited
                && last_start.is_some_and(|t| t.elapsed() < self.opts.min_fetch_interval));
        if skip {
            return self.last_ok();
        }
        *last_start = Some(Instant::now());
        let timeout = self.timeout();
        let result = match tokio::time::timeout(timeout, self.fetch_once()).await {
            Ok(r) => r,
            Err(_) => Err(JwksError::Timeout {
                url: self.target.describe(),
                timeout,
            }),
        };
        let ok = result.is_ok();
        {
            let mut st = self.status.lock().unwrap_or_else(|e| e.into_inner());
            st.fetches += 1;
            match result {
                Ok(set) => {
                    tracing::debug!(url = %st.url, keys = set.len(), "JWKS fetched");
                    st.last_success = Some(SystemTime::now());
                    st.last_error = None;
                    st.skipped_keys = set.skipped.clone();
                    self.keys.store(Some(Arc::new(set)));
                }
                Err(e) => {
                    let kept = self.keys.load().as_ref().map_or(0, |k| k.len());
                    tracing::warn!(url = %st.url, error = %e, kept_keys = kept,
                        "JWKS fetch failed; keeping the last good keys");
                    st.last_failure = Some(SystemTime::now());
                    st.last_error = Some(e.to_string());
                }
            }
        }
        self.generation.fetch_add(1, Ordering::Release);
        ok
    }

    fn last_ok(&self) -> bool {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .last_error
            .is_none()
            && self.keys.load().is_some()
    }

    /// Starts the background refresh (first run after `first_delay`) unless it runs already
    /// or there is no tokio runtime here.
    fn start_background(self: &Arc<Self>, first_delay: Duration) {
        let mut task = self.task.lock().unwrap_or_else(|e| e.into_inner());
        if task.is_some() {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let handle = rt.spawn(KeySource::run(Arc::downgrade(self), first_delay));
            *task = Some(handle.abort_handle());
        }
    }

    async fn fetch_once(&self) -> Result<KeySet, JwksError> {
        let url = match &self.target {
            Target::Uri(u) => u.clone(),
            Target::Discovery(issuer) => {
                let url = discovery_url(issuer);
                let body = self.client.get(&url).await?;
                let doc: Value =
                    serde_json::from_slice(&body).map_err(|e| JwksError::Discovery {
                        url: url.clone(),
                        reason: format!("not JSON: {e}"),
                    })?;
                match doc.get("jwks_uri") {
                    Some(Value::String(u)) => u.clone(),
                    _ => {
                        return Err(JwksError::Discovery {
                            url,
                            reason: "no \"jwks_uri\" string".into(),
                        })
                    }
                }
            }
        };
        let body = self.client.get(&url).await?;
        KeySet::parse(&body)
    }

    /// Background refresh: after `delay`, then every `refresh_interval`; after a failure,
    /// with a doubling back-off from `retry_min` to `retry_max`. Ends with the source.
    async fn run(weak: Weak<KeySource>, mut delay: Duration) {
        let mut failures: u32 = 0;
        loop {
            tokio::time::sleep(delay).await;
            let Some(src) = weak.upgrade() else { return };
            let o = &src.opts;
            delay = if src.refresh(false).await {
                failures = 0;
                o.refresh_interval
            } else {
                let backoff = o
                    .retry_min
                    .saturating_mul(1u32 << failures.min(16))
                    .min(o.retry_max)
                    .min(o.refresh_interval);
                failures = failures.saturating_add(1);
                backoff
            };
        }
    }
}

/// Remote key sets by URL, shared across rules and across config reloads (so a new config
/// starts with the keys the old one had). Cheap to clone.
#[derive(Clone, Debug)]
pub struct JwksCache {
    inner: Arc<CacheInner>,
}

#[derive(Debug)]
struct CacheInner {
    opts: Arc<JwksOptions>,
    client: Arc<HttpClient>,
    sources: Mutex<HashMap<Target, Weak<KeySource>>>,
}

impl Default for JwksCache {
    fn default() -> Self {
        JwksCache::new(JwksOptions::default()).expect("default JWKS options are valid")
    }
}

impl JwksCache {
    /// Fails only on an unusable `ca_bundle_pem`.
    pub fn new(opts: JwksOptions) -> Result<JwksCache, String> {
        let client = Arc::new(HttpClient::new(&opts)?);
        Ok(JwksCache {
            inner: Arc::new(CacheInner {
                opts: Arc::new(opts),
                client,
                sources: Mutex::new(HashMap::new()),
            }),
        })
    }

    pub fn options(&self) -> &JwksOptions {
        &self.inner.opts
    }

    /// The key source for `jwksUri` `url`. A new source starts fetching in the background
    /// right away when called inside a tokio runtime (else on the first request). `timeout`
    /// bounds each fetch; a source shared by rules uses the latest timeout given.
    pub fn remote(&self, url: &str, timeout: Duration) -> Arc<KeySource> {
        self.source(Target::Uri(url.to_string()), timeout)
    }

    /// The key source found by OpenID discovery from `issuer`.
    pub fn discovered(&self, issuer: &str, timeout: Duration) -> Arc<KeySource> {
        self.source(Target::Discovery(issuer.to_string()), timeout)
    }

    fn source(&self, target: Target, timeout: Duration) -> Arc<KeySource> {
        let timeout_ms = timeout.as_millis().clamp(1, u64::MAX as u128) as u64;
        let mut sources = self.inner.sources.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(src) = sources.get(&target).and_then(Weak::upgrade) {
            src.timeout_ms.store(timeout_ms, Ordering::Relaxed);
            return src;
        }
        sources.retain(|_, w| w.strong_count() > 0);
        let src = Arc::new(KeySource {
            status: Mutex::new(SourceStatus {
                url: target.describe(),
                ..SourceStatus::default()
            }),
            target: target.clone(),
            keys: ArcSwapOption::empty(),
            fetch: tokio::sync::Mutex::new(None),
            generation: AtomicU64::new(0),
            timeout_ms: AtomicU64::new(timeout_ms),
            client: self.inner.client.clone(),
            opts: self.inner.opts.clone(),
            task: Mutex::new(None),
        });
        src.start_background(Duration::ZERO);
        sources.insert(target, Arc::downgrade(&src));
        src
    }

    /// Status of every live key source, by URL.
    pub fn status(&self) -> Vec<SourceStatus> {
        let sources = self.inner.sources.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<SourceStatus> = sources
            .values()
            .filter_map(Weak::upgrade)
            .map(|s| s.status())
            .collect();
        out.sort_by(|a, b| a.url.cmp(&b.url));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_documents_that_are_not_key_sets() {
        assert!(matches!(
            KeySet::parse(b"<html>"),
            Err(JwksError::NotJson(_))
        ));
        assert!(matches!(KeySet::parse(b"[]"), Err(JwksError::NotJson(_))));
        assert_eq!(KeySet::parse(b"{}").unwrap_err(), JwksError::NoKeys);
        assert_eq!(
            KeySet::parse(br#"{"keys": {}}"#).unwrap_err(),
            JwksError::NoKeys
        );
        assert!(matches!(
            KeySet::parse(br#"{"keys": []}"#),
            Err(JwksError::NoUsableKeys(_))
        ));
        // Symmetric keys are never loaded.
        let oct = br#"{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}"#;
        assert!(matches!(KeySet::parse(oct), Err(JwksError::NoUsableKeys(w)) if w.contains("oct")));
    }

    #[test]
    fn ec_and_okp_keys_by_curve_and_alg() {
        let x = URL_SAFE_NO_PAD.encode([1u8; 32]);
        let doc = format!(
            r#"{{"keys": [
                {{"kty":"EC","crv":"P-256","kid":"a","x":"{x}","y":"{x}"}},
                {{"kty":"EC","crv":"P-256","kid":"b","alg":"ES384","x":"{x}","y":"{x}"}},
                {{"kty":"EC","crv":"P-521","kid":"c","x":"{x}","y":"{x}"}},
                {{"kty":"OKP","crv":"Ed25519","kid":"d","x":"{x}"}},
                {{"kty":"OKP","crv":"X25519","kid":"e","x":"{x}"}},
                {{"kty":"EC","crv":"P-256","kid":"f","use":"enc","x":"{x}","y":"{x}"}}
            ]}}"#
        );
        let set = KeySet::parse(doc.as_bytes()).unwrap();
        let kids: Vec<_> = set
            .keys()
            .iter()
            .map(|k| k.kid.as_deref().unwrap())
            .collect();
        assert_eq!(kids, ["a", "d"]);
        assert_eq!(set.keys()[0].algorithms(), [Algorithm::ES256]);
        assert_eq!(set.keys()[1].algorithms(), [Algorithm::EdDSA]);
        assert_eq!(set.skipped().len(), 4, "{:?}", set.skipped());
        assert_eq!(set.candidates(Some("a"), Algorithm::ES256).count(), 1);
        assert_eq!(set.candidates(Some("a"), Algorithm::ES384).count(), 0);
        assert_eq!(set.candidates(None, Algorithm::EdDSA).count(), 1);
        assert!(set.has_kid("d") && !set.has_kid("z"));
    }

    #[test]
    fn small_rsa_keys_are_skipped() {
        let n = URL_SAFE_NO_PAD.encode([0xffu8; 128]);
        let doc = format!(r#"{{"keys":[{{"kty":"RSA","n":"{n}","e":"AQAB"}}]}}"#);
        assert!(
            matches!(KeySet::parse(doc.as_bytes()), Err(JwksError::NoUsableKeys(w)) if w.contains("1024 bits"))
        );
        let n = URL_SAFE_NO_PAD.encode([0xffu8; 256]);
        let doc = format!(r#"{{"keys":[{{"kty":"RSA","n":"{n}","e":"AQAB","alg":"PS384"}}]}}"#);
        let set = KeySet::parse(doc.as_bytes()).unwrap();
        assert_eq!(set.keys()[0].algorithms(), [Algorithm::PS384]);
        let doc = format!(r#"{{"keys":[{{"kty":"RSA","n":"{n}","e":"AQAB","alg":"HS256"}}]}}"#);
        assert!(KeySet::parse(doc.as_bytes()).is_err());
    }

    #[test]
    fn supported_algorithms_exclude_none_and_hmac() {
        for a in ["none", "HS256", "HS384", "HS512", "ES512", "RSA-OAEP", ""] {
            assert!(supported_alg(a).is_none(), "{a}");
        }
        for a in [
            "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
        ] {
            assert!(supported_alg(a).is_some(), "{a}");
        }
    }
}
