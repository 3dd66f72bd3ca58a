//! Shared by the `jwt_*` tests: tokens minted by PyJWT (`mint_jwt.py`), policies compiled from
//! real RequestAuthentication YAML, and a real JWKS server (HTTP or HTTPS with a test CA) on a
//! loopback ephemeral port that counts fetches and can fail on demand.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;
use trellis_api::load::{LoadOptions, ResourceSet};
use trellis_model::authn::JwtPolicy;
use trellis_proxy::security::{AuthnOutcome, JwksCache, JwksOptions, JwtAuthenticator};

/// What PyJWT produced.
pub struct Minted {
    pub jwks: HashMap<String, String>,
    pub tokens: HashMap<String, String>,
    pub public_pem: HashMap<String, String>,
}

impl Minted {
    pub fn token(&self, name: &str) -> &str {
        self.tokens
            .get(name)
            .unwrap_or_else(|| panic!("no token {name}"))
    }
    pub fn jwks(&self, name: &str) -> &str {
        self.jwks
            .get(name)
            .unwrap_or_else(|| panic!("no jwks {name}"))
    }
}

/// Runs `mint_jwt.py` on `spec` (see the script for its shape).
pub fn mint(spec: &Value) -> Minted {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/mint_jwt.py");
    let mut child = Command::new("python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 is needed to mint test tokens");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(spec.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "mint_jwt.py failed (needs `python3 -m pip install pyjwt cryptography`): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let map = |k: &str| -> HashMap<String, String> {
        v[k].as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
            .collect()
    };
    Minted {
        jwks: map("jwks"),
        tokens: map("tokens"),
        public_pem: map("public_pem"),
    }
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Compiles RequestAuthentication YAML for a workload `app: web` in namespace `foo`.
pub fn policy(yaml: &str) -> JwtPolicy {
    let mut set = ResourceSet::default();
    set.add_text("test.yaml", yaml, &LoadOptions::default());
    let errors: Vec<_> = set.diagnostics.iter().filter(|d| d.is_error()).collect();
    assert!(errors.is_empty(), "{errors:?}");
    let labels: BTreeMap<String, String> = [("app".to_string(), "web".to_string())].into();
    JwtPolicy::compile(&set.resources, "foo", &labels, "istio-system", None)
}

/// A RequestAuthentication in `foo` with the given `jwtRules` YAML (list items, 2-space indent).
pub fn ra(rules: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata:\n  name: jwt\n  namespace: foo\nspec:\n  jwtRules:\n{rules}"
    )
}

/// JSON, quoted for a YAML single-quoted scalar.
pub fn yaml_quote(json: &str) -> String {
    format!("'{}'", json.replace('\'', "''"))
}

/// Options for fast tests: short rate-limit window and retries.
pub fn fast_options() -> JwksOptions {
    JwksOptions {
        min_fetch_interval: Duration::from_millis(300),
        retry_min: Duration::from_millis(100),
        retry_max: Duration::from_millis(400),
        public_roots: false,
        ..JwksOptions::default()
    }
}

/// A request to authenticate: headers and URI, authenticated in place.
pub struct Req {
    pub headers: http::HeaderMap,
    pub uri: http::Uri,
}

impl Req {
    pub fn new(uri: &str) -> Req {
        Req {
            headers: http::HeaderMap::new(),
            uri: uri.parse().unwrap(),
        }
    }
    pub fn bearer(token: &str) -> Req {
        Req::new("/").header("authorization", &format!("Bearer {token}"))
    }
    pub fn header(mut self, name: &str, value: &str) -> Req {
        self.headers.append(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            http::HeaderValue::from_str(value).unwrap(),
        );
        self
    }
    pub async fn run(&mut self, auth: &JwtAuthenticator) -> AuthnOutcome {
        auth.authenticate(
            &mut self.headers,
            &mut self.uri,
            &["web.foo.svc.cluster.local"],
        )
        .await
    }
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

#[track_caller]
pub fn assert_authenticated(o: &AuthnOutcome) -> &trellis_proxy::security::JwtIdentity {
    match o {
        AuthnOutcome::Authenticated(id) => id,
        other => panic!("expected Authenticated, got {other:?}"),
    }
}

#[track_caller]
pub fn assert_invalid(o: &AuthnOutcome) -> &trellis_proxy::security::AuthnFailure {
    match o {
        AuthnOutcome::Invalid(f) => f,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// JWKS server
// ---------------------------------------------------------------------------------------------

/// What the server answers.
#[derive(Clone, Debug)]
pub enum Reply {
    /// 200 with this body.
    Body(String),
    /// This status, empty body.
    Status(u16),
    /// Wait this long, then 200 with the body.
    Slow(Duration, String),
}

struct ServerState {
    reply: Mutex<Reply>,
    fetches: AtomicUsize,
}

/// A JWKS server on 127.0.0.1. `/.well-known/openid-configuration` answers a discovery
/// document pointing at `/jwks`; every other path answers the current `Reply`.
pub struct JwksServer {
    pub addr: SocketAddr,
    scheme: &'static str,
    state: Arc<ServerState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl JwksServer {
    pub async fn start(body: &str) -> JwksServer {
        JwksServer::start_with(Reply::Body(body.to_string()), None).await
    }

    pub async fn start_with(reply: Reply, tls: Option<tokio_rustls::TlsAcceptor>) -> JwksServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let state = Arc::new(ServerState {
            reply: Mutex::new(reply),
            fetches: AtomicUsize::new(0),
        });
        let st = state.clone();
        let base = format!("{scheme}://{addr}");
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let st = st.clone();
                let tls = tls.clone();
                let base = base.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let st = st.clone();
                        let base = base.clone();
                        async move {
                            Ok::<_, std::convert::Infallible>(
                                answer(&st, &base, req.uri().path()).await,
                            )
                        }
                    });
                    let builder = hyper::server::conn::http1::Builder::new();
                    match tls {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(tcp).await {
                                let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                            }
                        }
                        None => {
                            let _ = builder.serve_connection(TokioIo::new(tcp), svc).await;
                        }
                    }
                });
            }
        });
        JwksServer {
            addr,
            scheme,
            state,
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{path}", self.scheme, self.addr)
    }

    pub fn set(&self, reply: Reply) {
        *self.state.reply.lock().unwrap() = reply;
    }

    pub fn set_body(&self, body: &str) {
        self.set(Reply::Body(body.to_string()));
    }

    /// Requests served so far (discovery documents included).
    pub fn fetches(&self) -> usize {
        self.state.fetches.load(Ordering::SeqCst)
    }
}

async fn answer(st: &ServerState, base: &str, path: &str) -> http::Response<Full<Bytes>> {
    st.fetches.fetch_add(1, Ordering::SeqCst);
    if path == "/.well-known/openid-configuration" {
        let doc = serde_json::json!({"issuer": base, "jwks_uri": format!("{base}/jwks")});
        return http::Response::new(Full::new(Bytes::from(doc.to_string())));
    }
    let reply = st.reply.lock().unwrap().clone();
    let (status, body) = match reply {
        Reply::Body(b) => (200, b),
        Reply::Status(s) => (s, String::new()),
        Reply::Slow(d, b) => {
            tokio::time::sleep(d).await;
            (200, b)
        }
    };
    let mut resp = http::Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = http::StatusCode::from_u16(status).unwrap();
    resp
}

/// A test CA and a server certificate for `localhost` / `127.0.0.1` signed by it.
pub struct TestPki {
    pub ca_pem: String,
    pub acceptor: tokio_rustls::TlsAcceptor,
}

pub fn test_pki() -> TestPki {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "trellis jwt test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf_params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(trellis_identity::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls_pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
        )
        .unwrap();
    TestPki {
        ca_pem: ca_cert.pem(),
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
    }
}

/// A cache with `fast_options()` and the given CA trusted.
pub fn cache_with_ca(ca_pem: Option<&str>) -> JwksCache {
    JwksCache::new(JwksOptions {
        ca_bundle_pem: ca_pem.map(|p| p.as_bytes().to_vec()),
        ..fast_options()
    })
    .unwrap()
}
