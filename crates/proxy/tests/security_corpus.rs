//! The adversarial security corpus: every YAML file under `tests/security/` (see its README)
//! holds one or more suites (YAML documents), each a policy set (Istio manifests + mesh config + PyJWT-minted
//! tokens) and the cases to run against it. For each suite a real proxy is compiled from the
//! manifests and started on loopback ephemeral ports in front of an echo upstream that
//! records what it received; every case is sent byte for byte over a raw TCP socket (or as
//! HTTP/2, or through `openssl s_client` with a chosen client certificate), and the status,
//! response and what the upstream saw are compared with the case's expectations.
//!
//! Every failure of every file is collected into one report before the test fails, so one
//! run shows everything. Cases marked `known_bug` are run and reported but never fail the
//! run (they record a real proxy bug, with the expectation left as it should be).

mod common;
#[path = "support/jwt_common.rs"]
mod jwt;
mod security_support;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{echo_reply, Reply, Seen, Upstream};
use jwt::{cache_with_ca, mint, now, JwksServer, Minted};
use security_support::{logs, raw_http, run, start, Start};
use serde::Deserialize;
use serde_json::Value;
use sha2::Digest;
use tokio::net::TcpListener;
use trellis_api::load::{LoadOptions, ResourceSet};
use trellis_api::MeshConfig;
use trellis_model::compile::{compile, find_target};
use trellis_model::config::ProxyConfig;
use trellis_proxy::security::mesh::RotationOptions;
use trellis_proxy::security::MeshIdentity;
use trellis_proxy::upstream::connect::MeshTlsProvider;
use trellis_proxy::RunningProxy;

const CORPUS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/security");
const MIN_CASES: usize = 150;
const TRUST_DOMAIN: &str = "cluster.local";
/// What a client waits for a whole response (the request says `Connection: close`).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an expected log line may take to appear (access log lines are written when the
/// response body ends, which can be just after the client read it).
const LOG_TIMEOUT: Duration = Duration::from_secs(3);

// ---------------------------------------------------------------------------------------------
// The case format (documented in tests/security/README.md)

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Suite {
    setup: Setup,
    cases: Vec<Case>,
}

#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "lowercase")]
enum Kind {
    /// The ingress gateway `istio-system/ingress` (listener port 80).
    #[default]
    Gateway,
    /// Sidecar `apps/b` on 127.0.0.2: cases reach its inbound (`virtualInbound`) listener.
    Sidecar,
}

#[derive(Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct Setup {
    /// A label for the report (e.g. the normalization mode).
    name: String,
    kind: Kind,
    /// Omit the built-in scaffold (the workload, the Gateway, the backend and ext-authz
    /// ServiceEntries): `manifests` must then declare everything.
    no_scaffold: bool,
    /// MeshConfig YAML.
    mesh: String,
    /// Istio manifests: one multi-document YAML string, or a list of manifests.
    manifests: Value,
    /// `Host` sent when a case names none.
    host: Option<String>,
    /// The `mint_jwt.py` spec (keys, jwks, tokens); `"${now+N}"` / `"${now-N}"` strings
    /// become numbers.
    tokens: Option<Value>,
    /// Which minted JWKS the JWKS server (`${JWKS_URL}`) serves (default: the only one).
    jwks: Option<String>,
    /// Compiler warnings the setup expects (substrings); any other warning fails the suite.
    warnings: Vec<String>,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    #[serde(default)]
    note: Option<String>,
    request: Request,
    expect: Expect,
    /// A real proxy bug this case exposes: the case is run and reported, never failed.
    #[serde(default)]
    known_bug: Option<String>,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Request {
    method: String,
    /// The request-target, sent as written.
    target: String,
    /// `HTTP/1.1` (default), `HTTP/1.0`, or `HTTP/2` (h2c prior knowledge).
    version: String,
    /// `Host` (HTTP/1) or `:authority` (HTTP/2); default: the setup's host.
    host: Option<String>,
    /// Send no `Host` header (HTTP/1).
    no_host: bool,
    /// Header lines, written verbatim (duplicates, padding and case kept).
    headers: Vec<String>,
    /// `Authorization: Bearer <the minted token of this name>`.
    token: Option<String>,
    body: String,
    /// The whole HTTP/1 request as bytes to send (line endings and all); `method`, `target`,
    /// `host`, `headers`, `token` and `body` are then ignored.
    raw: Option<String>,
    /// Sidecar suites: `plaintext` (default), `none` (TLS without a certificate), `valid`,
    /// `foreign`, `expired`, `not_yet_valid`, `two_uri_sans`.
    client_cert: Option<String>,
}

impl Default for Request {
    fn default() -> Self {
        Request {
            method: "GET".into(),
            target: "/".into(),
            version: "HTTP/1.1".into(),
            host: None,
            no_host: false,
            headers: Vec::new(),
            token: None,
            body: String::new(),
            raw: None,
            client_cert: None,
        }
    }
}

#[derive(Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct Expect {
    /// 0: no HTTP response at all (connection closed, TLS handshake refused). A list: any of
    /// these (for behaviours with more than one acceptable fix, e.g. drop or refuse).
    /// Required (checked when the corpus is loaded).
    status: Option<Statuses>,
    body: Option<String>,
    body_contains: Option<String>,
    response_headers: BTreeMap<String, Value>,
    /// Whether the request reached the upstream (default: exactly when `status` is 2xx).
    upstream: Option<bool>,
    /// How many requests the upstream received.
    upstream_count: Option<usize>,
    upstream_path: Option<String>,
    upstream_method: Option<String>,
    upstream_body: Option<String>,
    /// The status of every response on the connection, in order (pipelining, smuggling).
    responses: Option<Vec<u16>>,
    upstream_host: Option<String>,
    upstream_headers: BTreeMap<String, Value>,
    /// Whether the ext-authz provider was asked.
    ext_authz: Option<bool>,
    /// A new log line containing every one of these.
    log: Vec<String>,
    /// `openssl s_client` output (stdout + stderr) contains this.
    tls_error: Option<String>,
    /// `openssl verify -CAfile <mesh root>` of the client certificate: `OK`, or a substring of
    /// its error.
    cert_verify: Option<String>,
    /// Substrings of `openssl x509 -noout -ext subjectAltName -dates` of the client certificate.
    cert_x509: Vec<String>,
}

#[derive(Clone, Deserialize)]
#[serde(untagged)]
enum Statuses {
    One(u16),
    AnyOf(Vec<u16>),
}

impl Statuses {
    fn list(&self) -> Vec<u16> {
        match self {
            Statuses::One(s) => vec![*s],
            Statuses::AnyOf(v) => v.clone(),
        }
    }
}

impl std::fmt::Display for Statuses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Statuses::One(s) => write!(f, "{s}"),
            Statuses::AnyOf(v) => write!(f, "any of {v:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Loading

struct LoadedSuite {
    file: String,
    index: usize,
    suite: Suite,
}

impl LoadedSuite {
    fn label(&self) -> String {
        if self.suite.setup.name.is_empty() {
            format!("{}#{}", self.file, self.index)
        } else {
            format!("{}#{} ({})", self.file, self.index, self.suite.setup.name)
        }
    }
}

fn load_corpus(failures: &mut Vec<String>) -> Vec<LoadedSuite> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(CORPUS_DIR)
        .unwrap_or_else(|e| panic!("{CORPUS_DIR}: {e}"))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no case files in {CORPUS_DIR}");
    let mut suites = Vec::new();
    for path in files {
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        let docs = match trellis_api::yaml::parse_documents(&file, &text) {
            Ok(d) => d,
            Err(e) => {
                failures.push(format!("{file}: not YAML: {e}"));
                continue;
            }
        };
        for (index, doc) in docs.into_iter().enumerate() {
            match serde_json::from_value::<Suite>(doc.value) {
                Ok(suite) => {
                    let mut names = std::collections::HashSet::new();
                    let mut invalid = Vec::new();
                    for c in &suite.cases {
                        if !names.insert(c.name.as_str()) {
                            invalid.push(format!("duplicate case name {:?}", c.name));
                        }
                        if c.expect.status.as_ref().is_none_or(|s| s.list().is_empty()) {
                            invalid.push(format!("{}: `expect.status` is required", c.name));
                        }
                    }
                    if invalid.is_empty() {
                        suites.push(LoadedSuite {
                            file: file.clone(),
                            index,
                            suite,
                        });
                    } else {
                        failures.extend(
                            invalid
                                .into_iter()
                                .map(|why| format!("{file}#{index}: invalid suite: {why}")),
                        );
                    }
                }
                Err(e) => failures.push(format!(
                    "{file}#{index} ({}): invalid suite: {e}",
                    doc.location
                )),
            }
        }
    }
    suites
}

// ---------------------------------------------------------------------------------------------
// Environments

const GATEWAY_SCAFFOLD: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: ingress, namespace: istio-system, labels: {istio: ingressgateway}}
spec: {serviceAccountName: ingress, containers: [{name: istio-proxy, image: trellis}]}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: backend, namespace: app}
spec:
  hosts: [backend.app.svc.cluster.local]
  location: MESH_INTERNAL
  ports: [{number: 8080, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1, ports: {http: ${BACKEND_PORT}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext-authz, namespace: istio-system}
spec:
  hosts: [ext-authz.istio-system.svc.cluster.local]
  location: MESH_INTERNAL
  ports: [{number: 9000, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1, ports: {http: ${EXT_PORT}}}]
"#;

const SIDECAR_SCAFFOLD: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: apps, labels: {app: b, sidecar.istio.io/inject: "true"}}
spec:
  serviceAccountName: b
  containers:
    - name: app
      image: echo
      ports: [{name: http, containerPort: ${APP_PORT}}]
status: {podIP: 127.0.0.2}
---
apiVersion: v1
kind: Service
metadata: {name: b, namespace: apps}
spec:
  selector: {app: b}
  ports: [{name: http, port: 8080, targetPort: ${APP_PORT}}]
"#;

/// One started suite: the proxy, its upstreams, tokens and client certificates.
struct Env {
    kind: Kind,
    host: String,
    addr: SocketAddr,
    backend: Upstream,
    ext: Upstream,
    minted: Option<Minted>,
    certs: Option<ClientCerts>,
    proxy: RunningProxy,
    _jwks: Option<JwksServer>,
    _mesh_dir: Option<tempfile::TempDir>,
}

/// Binds 127.0.0.1:<port> with the same port free on 127.0.0.2 (the sidecar's inbound
/// address, as in `security_mtls`).
async fn bind_app_port() -> TcpListener {
    loop {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.2", port)).is_ok() {
            return l;
        }
    }
}

fn ext_authz_stub() -> common::Handler {
    Arc::new(|s: &Seen| {
        if s.headers.get("x-ext-allow").is_some_and(|v| v == "yes") {
            Reply {
                headers: vec![("x-ext-user".into(), "bob".into())],
                ..Reply::status(200)
            }
        } else {
            Reply {
                headers: vec![("x-ext-reason".into(), "not allowed".into())],
                body: "ext says no".into(),
                ..Reply::status(403)
            }
        }
    })
}

/// `"${now}"`, `"${now+N}"`, `"${now-N}"` anywhere in `v` become numbers.
fn resolve_times(v: &mut Value, now: i64) {
    match v {
        Value::String(s) => {
            if let Some(expr) = s.strip_prefix("${now").and_then(|r| r.strip_suffix('}')) {
                let offset = match expr.as_bytes().first() {
                    None => Some(0),
                    Some(b'+') => expr[1..].parse::<i64>().ok(),
                    Some(b'-') => expr[1..].parse::<i64>().ok().map(|n| -n),
                    _ => None,
                };
                if let Some(o) = offset {
                    *v = Value::from(now + o);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| resolve_times(x, now)),
        Value::Object(m) => m.values_mut().for_each(|x| resolve_times(x, now)),
        _ => {}
    }
}

fn manifests_text(v: &Value) -> Result<String, String> {
    match v {
        Value::Null => Ok(String::new()),
        Value::String(s) => Ok(s.clone()),
        Value::Array(items) => Ok(items
            .iter()
            .map(|i| match i {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n---\n")),
        _ => Err("manifests must be a YAML string or a list of manifests".into()),
    }
}

fn compile_config(
    text: &str,
    mesh: &MeshConfig,
    workload: &str,
    allowed_warnings: &[String],
) -> Result<ProxyConfig, String> {
    let mut set = ResourceSet::default();
    set.add_text("suite.yaml", text, &LoadOptions::default());
    let errors: Vec<String> = set
        .diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(|d| d.to_string())
        .collect();
    if !errors.is_empty() {
        return Err(format!("manifests do not load: {}", errors.join("; ")));
    }
    let (ns, name) = workload.split_once('/').unwrap();
    let target =
        find_target(&set.resources, ns, name).map_err(|e| format!("workload {workload}: {e:?}"))?;
    let config =
        compile(&set.resources, mesh, &target, "corpus").map_err(|e| format!("compile: {e:?}"))?;
    let unexpected: Vec<String> = config
        .warnings
        .iter()
        .map(|w| format!("{w:?}"))
        .filter(|w| !allowed_warnings.iter().any(|a| w.contains(a.as_str())))
        .collect();
    if !unexpected.is_empty() {
        return Err(format!("unexpected compile warnings: {unexpected:?}"));
    }
    Ok(config)
}

async fn start_env(setup: &Setup) -> Result<Env, String> {
    let ext = Upstream::start("ext-authz", ext_authz_stub()).await;
    let (backend, app_listener) = match setup.kind {
        Kind::Gateway => (Upstream::echo("backend").await, None),
        Kind::Sidecar => {
            let l = bind_app_port().await;
            let port = l.local_addr().unwrap().port();
            let b = Upstream::serve("app", l, Arc::new(|s: &Seen| echo_reply("app", s)));
            (b, Some(port))
        }
    };

    let minted = setup.tokens.as_ref().map(|spec| {
        let mut spec = spec.clone();
        resolve_times(&mut spec, now());
        mint(&spec)
    });
    let jwks = match &minted {
        Some(m) if !m.jwks.is_empty() => {
            let name = match &setup.jwks {
                Some(n) => n.clone(),
                None if m.jwks.len() == 1 => m.jwks.keys().next().unwrap().clone(),
                None => return Err("several JWKS minted: say which one `jwks` serves".into()),
            };
            let body = m
                .jwks
                .get(&name)
                .ok_or_else(|| format!("no minted JWKS named {name}"))?;
            Some(JwksServer::start(body).await)
        }
        _ => None,
    };

    let mut text = match (setup.no_scaffold, setup.kind) {
        (true, _) => String::new(),
        (false, Kind::Gateway) => GATEWAY_SCAFFOLD.to_string(),
        (false, Kind::Sidecar) => SIDECAR_SCAFFOLD.to_string(),
    };
    text.push_str("\n---\n");
    text.push_str(&manifests_text(&setup.manifests)?);
    let mut text = text
        .replace("${BACKEND_PORT}", &backend.addr.port().to_string())
        .replace("${EXT_PORT}", &ext.addr.port().to_string());
    if let Some(port) = app_listener {
        text = text.replace("${APP_PORT}", &port.to_string());
    }
    if let Some(j) = &jwks {
        text = text.replace("${JWKS_URL}", &j.url("/jwks"));
    }
    if text.contains("${") {
        let at = text.find("${").unwrap();
        return Err(format!(
            "unresolved placeholder in manifests: {}",
            &text[at..text.len().min(at + 30)]
        ));
    }
    let mesh =
        MeshConfig::from_yaml("mesh.yaml", &setup.mesh).map_err(|e| format!("mesh config: {e}"))?;

    let host = setup.host.clone().unwrap_or_else(|| "example.com".into());
    match setup.kind {
        Kind::Gateway => {
            let config = compile_config(&text, &mesh, "istio-system/ingress", &setup.warnings)?;
            let proxy = start(
                config,
                Start {
                    jwks: Some(cache_with_ca(None)),
                    ..Start::default()
                },
            );
            if !proxy.is_ready() {
                return Err("the gateway is not live after start".into());
            }
            let addr = proxy
                .listener_addr("0.0.0.0_80")
                .ok_or("the gateway has no listener 0.0.0.0_80")?;
            Ok(Env {
                kind: Kind::Gateway,
                host,
                addr,
                backend,
                ext,
                minted,
                certs: None,
                proxy,
                _jwks: jwks,
                _mesh_dir: None,
            })
        }
        Kind::Sidecar => {
            let port = app_listener.unwrap();
            let dir = tempfile::tempdir().unwrap();
            trellis_identity::CertificateAuthority::load_or_generate(
                dir.path(),
                TRUST_DOMAIN,
                "Trellis corpus",
            )
            .map_err(|e| format!("mesh CA: {e}"))?;
            let identity = MeshIdentity::from_local_ca(
                dir.path(),
                TRUST_DOMAIN,
                "apps",
                "b",
                Duration::ZERO,
                RotationOptions::default(),
            )
            .await?;
            let certs = ClientCerts::generate(dir.path())?;
            let config = compile_config(&text, &mesh, "apps/b", &setup.warnings)?;
            let addr = SocketAddr::from(([127, 0, 0, 2], port));
            let mesh_tls: Arc<dyn MeshTlsProvider> = identity;
            let proxy = start(
                config,
                Start {
                    remap: vec![(15006, addr)],
                    mesh: Some(mesh_tls),
                    jwks: Some(cache_with_ca(None)),
                    ..Start::default()
                },
            );
            if !proxy.is_ready() {
                return Err("the sidecar is not live after start".into());
            }
            Ok(Env {
                kind: Kind::Sidecar,
                host,
                addr,
                backend,
                ext,
                minted,
                certs: Some(certs),
                proxy,
                _jwks: jwks,
                _mesh_dir: Some(dir),
            })
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Client certificates (sidecar suites)

struct ClientCert {
    cert: PathBuf,
    key: PathBuf,
    sha256: String,
}

struct ClientCerts {
    root: PathBuf,
    certs: HashMap<&'static str, ClientCert>,
    _dir: tempfile::TempDir,
}

/// The SPIFFE id every corpus client certificate claims (the two-SAN one adds a second).
const CLIENT_ID: &str = "spiffe://cluster.local/ns/apps/sa/client";
const SECOND_ID: &str = "spiffe://cluster.local/ns/apps/sa/admin";

impl ClientCerts {
    /// Client certificates made with rcgen (not with the mesh CA code under test): signed by
    /// the mesh CA's key (`valid`, `expired`, `not_yet_valid`, `two_uri_sans`) or by a
    /// foreign CA (`foreign`).
    fn generate(ca_dir: &Path) -> Result<ClientCerts, String> {
        use rcgen::{
            date_time_ymd, BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa,
            Issuer, KeyPair, KeyUsagePurpose, SanType,
        };
        let e = |e: rcgen::Error| e.to_string();
        let read =
            |f: &str| std::fs::read_to_string(ca_dir.join(f)).map_err(|e| format!("{f}: {e}"));
        let mesh_issuer = Issuer::from_ca_cert_pem(
            &read("ca-cert.pem")?,
            KeyPair::from_pem(&read("ca-key.pem")?).map_err(e)?,
        )
        .map_err(e)?;
        let foreign_key = KeyPair::generate().map_err(e)?;
        let mut foreign = CertificateParams::new(Vec::<String>::new()).map_err(e)?;
        foreign.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        foreign
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Foreign CA");
        foreign.not_before = date_time_ymd(2024, 1, 1);
        foreign.not_after = date_time_ymd(2099, 1, 1);
        let foreign_issuer = Issuer::new(foreign, foreign_key);

        let dir = tempfile::tempdir().unwrap();
        let mut certs = HashMap::new();
        // (name, signed by the mesh CA, URI SANs, valid from year, until year)
        type Spec = (&'static str, bool, &'static [&'static str], i32, i32);
        let specs: [Spec; 5] = [
            ("valid", true, &[CLIENT_ID], 2024, 2099),
            ("foreign", false, &[CLIENT_ID], 2024, 2099),
            ("expired", true, &[CLIENT_ID], 2020, 2021),
            ("not_yet_valid", true, &[CLIENT_ID], 2098, 2099),
            ("two_uri_sans", true, &[CLIENT_ID, SECOND_ID], 2024, 2099),
        ];
        for (name, mesh, uris, from, to) in specs {
            let key = KeyPair::generate().map_err(e)?;
            let mut p = CertificateParams::new(Vec::<String>::new()).map_err(e)?;
            p.subject_alt_names = uris
                .iter()
                .map(|u| SanType::URI((*u).try_into().unwrap()))
                .collect();
            p.is_ca = IsCa::ExplicitNoCa;
            p.key_usages = vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ];
            p.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ClientAuth,
                ExtendedKeyUsagePurpose::ServerAuth,
            ];
            p.use_authority_key_identifier_extension = true;
            p.not_before = date_time_ymd(from, 1, 1);
            p.not_after = date_time_ymd(to, 1, 1);
            let issuer = if mesh { &mesh_issuer } else { &foreign_issuer };
            let cert = p.signed_by(&key, issuer).map_err(e)?;
            let cert_path = dir.path().join(format!("{name}-cert.pem"));
            let key_path = dir.path().join(format!("{name}-key.pem"));
            std::fs::write(&cert_path, cert.pem()).unwrap();
            std::fs::write(&key_path, key.serialize_pem()).unwrap();
            let sha256 = sha2::Sha256::digest(cert.der().as_ref())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            certs.insert(
                name,
                ClientCert {
                    cert: cert_path,
                    key: key_path,
                    sha256,
                },
            );
        }
        Ok(ClientCerts {
            root: ca_dir.join("root-cert.pem"),
            certs,
            _dir: dir,
        })
    }

    fn get(&self, name: &str) -> Result<&ClientCert, String> {
        self.certs
            .get(name)
            .ok_or_else(|| format!("unknown client_cert {name:?}"))
    }
}

fn path_arg(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

// ---------------------------------------------------------------------------------------------
// Sending a case

/// What came back.
#[derive(Default)]
struct Got {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
    /// Everything a TLS client printed (s_client cases).
    tls_output: String,
    /// The status of every response on the connection, in order.
    responses: Vec<u16>,
}

impl Got {
    fn header_values(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .collect()
    }
    fn summary(&self) -> String {
        let body: String = self.body.chars().take(160).collect();
        format!("status {} body {:?}", self.status, body)
    }
}

fn find(b: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    b.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

/// Parses every HTTP/1.x response read off one connection, in order (bodies framed by
/// `Content-Length` or chunked encoding; `head`: answers to HEAD have no body). The first
/// one is the case's response; `responses` lists every status.
fn parse_responses(text: &str, head: bool) -> Got {
    let b = text.as_bytes();
    let mut all: Vec<Got> = Vec::new();
    let mut at = 0;
    while let Some(start) = find(b, at, b"HTTP/1.") {
        let Some(head_end) = find(b, start, b"\r\n\r\n") else {
            break;
        };
        let head_text = String::from_utf8_lossy(&b[start..head_end]);
        let mut lines = head_text.split("\r\n");
        let status: u16 = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let value = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let mut pos = head_end + 4;
        let mut body = Vec::new();
        if head || status < 200 || status == 204 || status == 304 {
            // no body
        } else if value("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            while let Some(eol) = find(b, pos, b"\r\n") {
                let size = String::from_utf8_lossy(&b[pos..eol]);
                let n =
                    usize::from_str_radix(size.split(';').next().unwrap().trim(), 16).unwrap_or(0);
                pos = eol + 2;
                if n == 0 {
                    // Trailers (none expected) end with an empty line.
                    pos = find(b, pos, b"\r\n").map_or(b.len(), |e| e + 2);
                    break;
                }
                let end = (pos + n).min(b.len());
                body.extend_from_slice(&b[pos..end]);
                pos = (end + 2).min(b.len());
            }
        } else if let Some(n) = value("content-length").and_then(|v| v.parse::<usize>().ok()) {
            let end = (pos + n).min(b.len());
            body.extend_from_slice(&b[pos..end]);
            pos = end;
        } else {
            body.extend_from_slice(&b[pos..]);
            pos = b.len();
        }
        all.push(Got {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
            ..Got::default()
        });
        at = pos;
    }
    let responses = all.iter().map(|g| g.status).collect();
    let mut first = if all.is_empty() {
        Got::default()
    } else {
        all.swap_remove(0)
    };
    first.responses = responses;
    first
}

/// `${token:NAME}` becomes the minted token NAME; `${token:NAME:I}` its I-th dot-separated
/// part (0 header, 1 payload, 2 signature), to splice tokens together.
fn substitute(s: &str, env: &Env) -> Result<String, String> {
    let mut out = s.to_string();
    while let Some(at) = out.find("${token:") {
        let end = out[at..]
            .find('}')
            .ok_or_else(|| format!("unterminated placeholder in {s:?}"))?;
        let spec = &out[at + 8..at + end];
        let (name, part) = match spec.split_once(':') {
            Some((n, p)) => (
                n,
                Some(p.parse::<usize>().map_err(|e| format!("{spec}: {e}"))?),
            ),
            None => (spec, None),
        };
        let token = env
            .minted
            .as_ref()
            .and_then(|m| m.tokens.get(name))
            .ok_or_else(|| format!("no minted token {name:?}"))?;
        let value = match part {
            None => token.clone(),
            Some(i) => token
                .split('.')
                .nth(i)
                .ok_or_else(|| format!("token {name} has no part {i}"))?
                .to_string(),
        };
        out.replace_range(at..at + end + 1, &value);
    }
    Ok(out)
}

fn header_name(line: &str) -> &str {
    line.split(':').next().unwrap_or("").trim()
}

/// The HTTP/1.x request bytes of a case.
fn http1_request(env: &Env, r: &Request) -> Result<String, String> {
    if let Some(raw) = &r.raw {
        return substitute(raw, env);
    }
    let headers: Vec<String> = r
        .headers
        .iter()
        .map(|h| substitute(h, env))
        .collect::<Result<_, _>>()?;
    let has = |name: &str| {
        headers
            .iter()
            .any(|l| header_name(l).eq_ignore_ascii_case(name))
    };
    let target = substitute(&r.target, env)?;
    let mut req = format!("{} {} {}\r\n", r.method, target, r.version);
    if !r.no_host && !has("host") {
        let host = r.host.as_deref().unwrap_or(&env.host);
        let _ = write!(req, "Host: {host}\r\n");
    }
    if let Some(t) = &r.token {
        let token = substitute(&format!("${{token:{t}}}"), env)?;
        let _ = write!(req, "Authorization: Bearer {token}\r\n");
    }
    for h in &headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    if !has("connection") {
        req.push_str("Connection: close\r\n");
    }
    if !r.body.is_empty() && !has("content-length") && !has("transfer-encoding") {
        let _ = write!(req, "Content-Length: {}\r\n", r.body.len());
    }
    req.push_str("\r\n");
    req.push_str(&r.body);
    Ok(req)
}

async fn send_http2(env: &Env, r: &Request) -> Result<Got, String> {
    let mut headers = Vec::new();
    for line in &r.headers {
        let line = substitute(line, env)?;
        let (k, v) = line
            .split_once(':')
            .ok_or_else(|| format!("header line without ':': {line:?}"))?;
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    if let Some(t) = &r.token {
        let token = substitute(&format!("${{token:{t}}}"), env)?;
        headers.push(("authorization".into(), format!("Bearer {token}")));
    }
    let refs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let authority = r.host.as_deref().unwrap_or(&env.host);
    let target = substitute(&r.target, env)?;
    let mut client = common::H2Client::connect(env.addr).await;
    let resp = tokio::time::timeout(
        RESPONSE_TIMEOUT,
        client.send(
            &r.method,
            authority,
            &target,
            &refs,
            Bytes::from(r.body.clone()),
        ),
    )
    .await
    .map_err(|_| "HTTP/2 request timed out".to_string())?;
    Ok(Got {
        status: resp.status,
        headers: resp
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    v.to_str().unwrap_or("?").to_string(),
                )
            })
            .collect(),
        responses: vec![resp.status],
        body: resp.body,
        tls_output: String::new(),
    })
}

async fn send(env: &Env, r: &Request) -> Result<Got, String> {
    if r.version == "HTTP/2" {
        if r.client_cert.is_some() {
            return Err("HTTP/2 cases cannot use client_cert".into());
        }
        return send_http2(env, r).await;
    }
    let request = http1_request(env, r)?;
    match r.client_cert.as_deref() {
        None | Some("plaintext") => {
            let (_, text) = raw_http(env.addr, &request).await;
            Ok(parse_responses(&text, r.method == "HEAD"))
        }
        Some(cert) => {
            if env.kind != Kind::Sidecar {
                return Err("client_cert is for sidecar suites".into());
            }
            let mut args = vec![
                "s_client".to_string(),
                "-connect".into(),
                env.addr.to_string(),
                // Data only on stdout; waits for the server to close (`Connection: close`).
                "-quiet".into(),
            ];
            if cert != "none" {
                let c = env.certs.as_ref().unwrap().get(cert)?;
                args.extend([
                    "-cert".into(),
                    path_arg(&c.cert),
                    "-key".into(),
                    path_arg(&c.key),
                ]);
            }
            let (_, out, err) =
                tokio::time::timeout(RESPONSE_TIMEOUT, run("openssl", args, Some(request)))
                    .await
                    .map_err(|_| "openssl s_client timed out".to_string())?;
            let mut got = parse_responses(&out, r.method == "HEAD");
            got.tls_output = format!("{out}\n{err}");
            Ok(got)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Checking a case

/// A header expectation: `null` absent, a string exactly one equal value, a list every value
/// in order, `{contains: s}` one value containing `s`, `{present: true}` at least one value.
fn check_header(
    what: &str,
    name: &str,
    want: &Value,
    values: &[String],
    subst: &dyn Fn(&str) -> String,
) -> Option<String> {
    let ok = match want {
        Value::Null => values.is_empty(),
        Value::String(s) => values.len() == 1 && values[0] == subst(s),
        Value::Array(list) => {
            let list: Vec<String> = list
                .iter()
                .map(|v| subst(v.as_str().unwrap_or_default()))
                .collect();
            values == list.as_slice()
        }
        Value::Object(m) => {
            if let Some(s) = m.get("contains").and_then(Value::as_str) {
                values.iter().any(|v| v.contains(&subst(s)))
            } else if let Some(p) = m.get("present").and_then(Value::as_bool) {
                values.is_empty() != p
            } else {
                return Some(format!("{what} {name}: unknown expectation {want}"));
            }
        }
        _ => return Some(format!("{what} {name}: unknown expectation {want}")),
    };
    (!ok).then(|| format!("{what} {name}: expected {want}, got {values:?}"))
}

async fn run_case(env: &Env, case: &Case) -> Vec<String> {
    let mut problems = Vec::new();
    let e = &case.expect;
    let log_before = (!e.log.is_empty()).then(|| {
        let needles: Vec<&str> = e.log.iter().map(String::as_str).collect();
        logs(&needles).len()
    });
    let hits = env.backend.hits();
    let ext_hits = env.ext.hits();
    let got = match send(env, &case.request).await {
        Ok(g) => g,
        Err(why) => return vec![format!("could not send: {why}")],
    };
    let cert = case
        .request
        .client_cert
        .as_deref()
        .filter(|c| !matches!(*c, "plaintext" | "none"))
        .and_then(|c| env.certs.as_ref()?.get(c).ok());
    let subst = |s: &str| -> String {
        match cert {
            Some(c) => s.replace("${CERT_SHA256}", &c.sha256),
            None => s.to_string(),
        }
    };

    let status_want = e.status.as_ref().expect("checked at load");
    let statuses = status_want.list();
    if !statuses.contains(&got.status) {
        problems.push(format!(
            "status: expected {}, got {}",
            status_want,
            got.summary()
        ));
    }
    if let Some(b) = &e.body {
        if got.body != *b {
            problems.push(format!("body: expected {b:?}, got {:?}", got.body));
        }
    }
    if let Some(b) = &e.body_contains {
        if !got.body.contains(b.as_str()) {
            problems.push(format!(
                "body: expected to contain {b:?}, got {:?}",
                got.body
            ));
        }
    }
    for (name, want) in &e.response_headers {
        problems.extend(check_header(
            "response header",
            name,
            want,
            &got.header_values(name),
            &subst,
        ));
    }

    let reached = env.backend.hits() - hits;
    // The status that decides: the one received when it is an expected one.
    let status = if statuses.contains(&got.status) {
        got.status
    } else {
        statuses[0]
    };
    let want_reached = e.upstream.unwrap_or((200..300).contains(&status));
    if (reached > 0) != want_reached {
        problems.push(format!(
            "upstream: expected the request {} the upstream, it {} ({reached} requests)",
            if want_reached {
                "to reach"
            } else {
                "not to reach"
            },
            if reached > 0 { "did" } else { "did not" },
        ));
    }
    if let Some(n) = e.upstream_count {
        if reached != n {
            problems.push(format!("upstream: expected {n} requests, got {reached}"));
        }
    }
    if let Some(want) = &e.responses {
        if got.responses != *want {
            problems.push(format!(
                "responses on the connection: expected {want:?}, got {:?}",
                got.responses
            ));
        }
    }
    let wants_upstream = e.upstream_path.is_some()
        || e.upstream_host.is_some()
        || e.upstream_method.is_some()
        || e.upstream_body.is_some()
        || !e.upstream_headers.is_empty();
    if wants_upstream && reached > 0 {
        let seen = env.backend.last();
        if let Some(p) = &e.upstream_path {
            if seen.path != *p {
                problems.push(format!(
                    "upstream path: expected {p:?}, got {:?}",
                    seen.path
                ));
            }
        }
        if let Some(want) = &e.upstream_body {
            let body = String::from_utf8_lossy(&seen.body);
            if body != *want {
                problems.push(format!("upstream body: expected {want:?}, got {body:?}"));
            }
        }
        if let Some(m) = &e.upstream_method {
            if seen.method != *m {
                problems.push(format!(
                    "upstream method: expected {m:?}, got {:?}",
                    seen.method
                ));
            }
        }
        let values = |name: &str| -> Vec<String> {
            seen.headers
                .get_all(name)
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect()
        };
        if let Some(h) = &e.upstream_host {
            let got_host = values("host");
            if got_host != [h.clone()] {
                problems.push(format!("upstream host: expected {h:?}, got {got_host:?}"));
            }
        }
        for (name, want) in &e.upstream_headers {
            problems.extend(check_header(
                "upstream header",
                name,
                want,
                &values(name),
                &subst,
            ));
        }
    }
    if let Some(want) = e.ext_authz {
        let asked = env.ext.hits() > ext_hits;
        if asked != want {
            problems.push(format!(
                "ext-authz: expected {}asked, it was {}asked",
                if want { "" } else { "not " },
                if asked { "" } else { "not " }
            ));
        }
    }
    if let Some(t) = &e.tls_error {
        if !got.tls_output.contains(t.as_str()) {
            problems.push(format!(
                "TLS client output: expected {t:?}, got {:?}",
                got.tls_output.trim()
            ));
        }
    }
    if e.cert_verify.is_some() || !e.cert_x509.is_empty() {
        match cert {
            None => problems.push("cert_verify/cert_x509 need a client_cert".into()),
            Some(c) => problems.extend(check_cert(env, c, e).await),
        }
    }
    if let Some(before) = log_before {
        let needles: Vec<&str> = e.log.iter().map(String::as_str).collect();
        let deadline = Instant::now() + LOG_TIMEOUT;
        while logs(&needles).len() <= before && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if logs(&needles).len() <= before {
            // The latest lines with the first needle, to show what was logged instead.
            let near = logs(&needles[..1]);
            let near = &near[near.len().saturating_sub(2)..];
            problems.push(format!(
                "log: no new line containing {:?}; latest with {:?}: {near:#?}",
                e.log, needles[0]
            ));
        }
    }
    if !problems.is_empty() && reached > 0 && !wants_upstream {
        let seen = env.backend.last();
        problems.push(format!(
            "(the upstream saw {} {} host {:?})",
            seen.method,
            seen.path,
            seen.headers.get("host")
        ));
    }
    problems
}

/// `openssl verify` and `openssl x509` on the case's client certificate.
async fn check_cert(env: &Env, c: &ClientCert, e: &Expect) -> Vec<String> {
    let mut problems = Vec::new();
    let root = &env.certs.as_ref().unwrap().root;
    if let Some(want) = &e.cert_verify {
        let (ok, out, err) = run(
            "openssl",
            vec![
                "verify".into(),
                "-CAfile".into(),
                path_arg(root),
                path_arg(&c.cert),
            ],
            None,
        )
        .await;
        let text = format!("{out}{err}");
        let good = if want == "OK" {
            ok && out.trim_end().ends_with(": OK")
        } else {
            !ok && text.contains(want.as_str())
        };
        if !good {
            problems.push(format!(
                "openssl verify: expected {want:?}, got {:?}",
                text.trim()
            ));
        }
    }
    if !e.cert_x509.is_empty() {
        let (_, out, err) = run(
            "openssl",
            vec![
                "x509".into(),
                "-noout".into(),
                "-ext".into(),
                "subjectAltName".into(),
                "-dates".into(),
                "-in".into(),
                path_arg(&c.cert),
            ],
            None,
        )
        .await;
        for want in &e.cert_x509 {
            if !out.contains(want.as_str()) {
                problems.push(format!(
                    "openssl x509: expected {want:?} in {:?}",
                    format!("{out}{err}").trim()
                ));
            }
        }
    }
    problems
}

// ---------------------------------------------------------------------------------------------
// The test

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_corpus() {
    let started = Instant::now();
    let mut failures: Vec<String> = Vec::new();
    let suites = load_corpus(&mut failures);
    let mut known = Vec::new();
    let mut per_file: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut total = 0;
    for s in &suites {
        let label = s.label();
        total += s.suite.cases.len();
        let counts = per_file.entry(s.file.clone()).or_default();
        counts.0 += s.suite.cases.len();
        // Setups and cases run as tasks: a panic (a runner bug, a missing tool) is reported
        // with the case instead of ending the run.
        let setup = s.suite.setup.clone();
        let env = match tokio::spawn(async move { start_env(&setup).await }).await {
            Ok(Ok(env)) => Arc::new(env),
            Ok(Err(why)) => {
                failures.push(format!("{label}: setup failed: {why}"));
                continue;
            }
            Err(panic) => {
                failures.push(format!("{label}: setup panicked: {panic}"));
                continue;
            }
        };
        for case in &s.suite.cases {
            let (task_env, task_case) = (env.clone(), case.clone());
            let problems = tokio::spawn(async move { run_case(&task_env, &task_case).await })
                .await
                .unwrap_or_else(|panic| vec![format!("the case panicked: {panic}")]);
            match (&case.known_bug, problems.is_empty()) {
                (Some(bug), false) => known.push(format!(
                    "{label} / {}: {bug}\n      {}",
                    case.name,
                    problems.join("\n      ")
                )),
                (Some(bug), true) => known.push(format!(
                    "{label} / {}: NOW PASSES, remove `known_bug` ({bug})",
                    case.name
                )),
                (None, false) => {
                    counts.1 += 1;
                    let note = case
                        .note
                        .as_deref()
                        .map(|n| format!("\n      note: {n}"))
                        .unwrap_or_default();
                    let r = &case.request;
                    let request = match &r.raw {
                        Some(raw) => format!("{raw:?}"),
                        None => format!("{} {} {}", r.method, r.target, r.version),
                    };
                    failures.push(format!(
                        "{label} / {}\n      request: {request}{note}\n      {}",
                        case.name,
                        problems.join("\n      ")
                    ));
                }
                (None, true) => {}
            }
        }
        env.proxy.shutdown(Duration::from_secs(1)).await;
    }

    let mut report = format!(
        "security corpus: {total} cases in {} suites, {} failed, {} known bugs, {:.1?}\n",
        suites.len(),
        failures.len(),
        known.len(),
        started.elapsed()
    );
    for (file, (n, failed)) in &per_file {
        let _ = writeln!(report, "  {file}: {n} cases, {failed} failed");
    }
    if !known.is_empty() {
        let _ = writeln!(report, "known bugs (reported, not failed):");
        for k in &known {
            let _ = writeln!(report, "  - {k}");
        }
    }
    eprintln!("{report}");
    if total < MIN_CASES {
        failures.push(format!(
            "only {total} cases; the corpus must have at least {MIN_CASES}"
        ));
    }
    assert!(
        failures.is_empty(),
        "{report}{} failures:\n  - {}",
        failures.len(),
        failures.join("\n  - ")
    );
}
