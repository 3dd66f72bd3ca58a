//! Reloads: file changes (debounced directory watches) and SIGHUP reach the running proxy; a
//! broken edit is rejected with its reason in `/server_info` and the logs while the previous
//! config keeps serving; unchanged inputs do not bump the version; manifests with schema
//! errors are rejected with file:line:col.

mod runtime_support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use runtime_support::*;
use trellis_model::config::{ProxyConfig, TlsSecret};
use trellis_proxy::reload::{ConfigLoader, LoadError, ManifestSource, ReloadOptions, Reloader};
use trellis_proxy::{ProxyRuntime, RunningProxy};

/// Log lines of this test binary (every test shares one global subscriber).
fn logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let w = buf.clone();
        let _ = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || LogWriter(w.clone()))
            .try_init();
        buf
    })
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);
impl Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn logged(needle: &str) -> bool {
    String::from_utf8_lossy(&logs().lock().unwrap()).contains(needle)
}

/// A loader over a one-word file: `a` or `b` picks the certificate served for
/// `svc.example.com`; `missing` names a secret that does not exist (apply rejects it);
/// anything else is a load error located in the file.
struct WordLoader {
    file: PathBuf,
    ca: TestCa,
    a: TlsSecret,
    b: TlsSecret,
}

impl WordLoader {
    fn new(dir: &Path) -> Arc<WordLoader> {
        let ca = TestCa::new("Reload CA");
        Arc::new(WordLoader {
            file: dir.join("proxy.conf"),
            a: ca.leaf(&["svc.example.com"], &[]),
            b: ca.leaf(&["svc.example.com"], &[]),
            ca,
        })
    }

    fn write(&self, word: &str) {
        // Replace by rename, as editors and ConfigMaps do.
        let tmp = self.file.with_extension("tmp");
        std::fs::write(&tmp, format!("{word}\n")).unwrap();
        std::fs::rename(&tmp, &self.file).unwrap();
    }
}

impl ConfigLoader for WordLoader {
    fn load(&self, version: &str) -> Result<ProxyConfig, LoadError> {
        let text =
            std::fs::read_to_string(&self.file).map_err(|e| LoadError::new(e.to_string()))?;
        let secret = match text.trim() {
            "a" => "cert-a",
            "b" => "cert-b",
            "missing" => "cert-missing",
            other => {
                return Err(LoadError::new(format!(
                    "{}:1:1: unknown certificate {other:?}",
                    self.file.display()
                )))
            }
        };
        Ok(config(
            version,
            vec![listener(
                "0.0.0.0_443",
                "0.0.0.0:443",
                vec![https_chain(&[], downstream_tls(secret), "https.443")],
            )],
            vec![("cert-a", self.a.clone()), ("cert-b", self.b.clone())],
        ))
    }

    fn watch_paths(&self) -> Vec<PathBuf> {
        vec![self.file.clone()]
    }
}

fn der(pem: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

async fn served_cert(proxy: &RunningProxy, loader: &WordLoader) -> Vec<u8> {
    let addr = proxy.listener_addr("0.0.0.0_443").unwrap();
    let tls = tls_connect(
        addr,
        "svc.example.com",
        client_config(&loader.ca.pem, None, &[]),
    )
    .await
    .expect("handshake");
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

async fn info(proxy: &RunningProxy) -> serde_json::Value {
    server_info(&get(proxy.admin_addr().unwrap(), "/server_info").await.1)
}

fn start(
    loader: &Arc<WordLoader>,
    word: &str,
    watch_files: bool,
    sighup: bool,
) -> (RunningProxy, Reloader) {
    install_provider();
    logs();
    loader.write(word);
    let cfg = loader.load("1").unwrap();
    let proxy =
        ProxyRuntime::start_with(cfg, options(&[(443, "127.0.0.1:0")]), TestDispatch).unwrap();
    let reloader = Reloader::spawn(
        loader.clone(),
        proxy.clone(),
        ReloadOptions {
            watch_files,
            sighup,
            debounce: Duration::from_millis(100),
            ..Default::default()
        },
    )
    .unwrap();
    (proxy, reloader)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_changes_reload_and_broken_edits_are_rejected_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let loader = WordLoader::new(dir.path());
    let (proxy, _reloader) = start(&loader, "a", true, false);
    wait_ready(proxy.admin_addr().unwrap()).await;
    assert_eq!(
        served_cert(&proxy, &loader).await,
        der(&loader.a.cert_chain_pem)
    );

    loader.write("b");
    eventually("version 2 applied", || async {
        info(&proxy).await["config_version"] == "2"
    })
    .await;
    assert_eq!(
        served_cert(&proxy, &loader).await,
        der(&loader.b.cert_chain_pem)
    );
    assert!(logged("config applied"));

    // A broken edit: rejected, located, visible; version 2 keeps serving.
    loader.write("bogus");
    eventually("rejection recorded", || async {
        !info(&proxy).await["last_error"].is_null()
    })
    .await;
    let i = info(&proxy).await;
    let msg = i["last_error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("proxy.conf:1:1: unknown certificate \"bogus\""),
        "{msg}"
    );
    assert_eq!(i["config_version"], "2");
    assert_eq!(i["configs_rejected"], 1);
    assert!(logged("config rejected: "), "logged");
    assert!(
        logged("unknown certificate \"bogus\""),
        "logged with the reason"
    );
    assert_eq!(
        served_cert(&proxy, &loader).await,
        der(&loader.b.cert_chain_pem)
    );

    // One that loads but fails validation at apply (missing secret): same treatment.
    loader.write("missing");
    eventually("second rejection", || async {
        info(&proxy).await["configs_rejected"] == 2
    })
    .await;
    let i = info(&proxy).await;
    assert!(
        i["last_error"]["message"]
            .as_str()
            .unwrap()
            .contains("certificate secret \"cert-missing\" not found"),
        "{i}"
    );
    assert_eq!(i["config_version"], "2");
    assert_eq!(
        served_cert(&proxy, &loader).await,
        der(&loader.b.cert_chain_pem)
    );

    // Fixed: applied, error cleared.
    loader.write("a");
    eventually("fixed config applied", || async {
        let i = info(&proxy).await;
        i["config_version"] != "2" && i["last_error"].is_null()
    })
    .await;
    assert_eq!(
        served_cert(&proxy, &loader).await,
        der(&loader.a.cert_chain_pem)
    );
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let loader = WordLoader::new(dir.path());
    // No file watching: only the signal can pick the edit up.
    let (proxy, _reloader) = start(&loader, "a", false, true);
    loader.write("b");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        info(&proxy).await["config_version"],
        "1",
        "no watch, no reload"
    );

    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    eventually("SIGHUP reload", || async {
        info(&proxy).await["config_version"] == "2"
    })
    .await;
    assert_eq!(
        served_cert(&proxy, &loader).await,
        der(&loader.b.cert_chain_pem)
    );
    assert!(logged("(SIGHUP)"));
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_inputs_do_not_bump_the_version() {
    let dir = tempfile::tempdir().unwrap();
    let loader = WordLoader::new(dir.path());
    let (proxy, reloader) = start(&loader, "a", false, false);
    reloader.trigger();
    eventually("reload processed", || async {
        logged("config unchanged (reload requested): version 1")
    })
    .await;
    let i = info(&proxy).await;
    assert_eq!(i["config_version"], "1");
    assert_eq!(i["configs_applied"], 1);
    proxy.shutdown(Duration::from_secs(1)).await;
}

const BAD_VS: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: default
spec:
  hosts: [\"a\"]
  http:
  - route:
    - destination:
        host: a
      weight: -5
";

const GATEWAY: &str = "apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: gw
  namespace: default
spec:
  selector:
    istio: ingressgateway
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [\"*\"]
";

fn manifests(dir: &Path) -> ManifestSource {
    ManifestSource {
        paths: vec![dir.to_path_buf()],
        kustomize: vec![],
        mesh_config_file: None,
        default_namespace: "default".into(),
        workload_namespace: "default".into(),
        workload_name: "no-such-workload".into(),
    }
}

#[test]
fn manifests_with_schema_errors_are_rejected_with_file_line_col() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("gw.yaml"), GATEWAY).unwrap();
    std::fs::write(dir.path().join("vs.yaml"), BAD_VS).unwrap();
    let err = manifests(dir.path()).load("1").unwrap_err();
    assert_eq!(err.problems.len(), 1, "{err}");
    let at = format!(
        "{}:12:7: VirtualService default/vs",
        dir.path().join("vs.yaml").display()
    );
    assert!(err.problems[0].starts_with(&at), "{err}");

    // Valid manifests: the workload is looked up (and compiled).
    std::fs::remove_file(dir.path().join("vs.yaml")).unwrap();
    let err = manifests(dir.path()).load("1").unwrap_err();
    assert!(
        err.to_string()
            .contains("workload default/no-such-workload not found"),
        "{err}"
    );
}

/// The real manifest pipeline behind a running proxy: an edit that breaks a manifest is
/// rejected with its location, in `/server_info`, and the proxy keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_manifest_edit_is_rejected_while_the_proxy_keeps_serving() {
    install_provider();
    logs();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("gw.yaml"), GATEWAY).unwrap();
    let cfg = config(
        "1",
        vec![listener(
            "0.0.0.0_80",
            "0.0.0.0:80",
            vec![plain_http_chain("http.80")],
        )],
        vec![],
    );
    let proxy =
        ProxyRuntime::start_with(cfg, options(&[(80, "127.0.0.1:0")]), TestDispatch).unwrap();
    let _reloader = Reloader::spawn(
        Arc::new(manifests(dir.path())),
        proxy.clone(),
        ReloadOptions {
            sighup: false,
            debounce: Duration::from_millis(100),
            ..Default::default()
        },
    )
    .unwrap();
    std::fs::write(dir.path().join("vs.yaml"), BAD_VS).unwrap();
    eventually("rejection with location", || async {
        info(&proxy).await["last_error"]["message"]
            .as_str()
            .is_some_and(|m| {
                m.contains("vs.yaml:12:7: VirtualService default/vs: spec.http[0].route[0].weight")
            })
    })
    .await;
    assert!(logged("vs.yaml:12:7"));
    let (status, body) = get(proxy.listener_addr("0.0.0.0_80").unwrap(), "/").await;
    assert_eq!(status, 200);
    assert!(body.contains("version=1"), "{body}");
    proxy.shutdown(Duration::from_secs(1)).await;
}
