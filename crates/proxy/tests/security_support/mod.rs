//! Shared by the `security_*` tests: manifests compiled with the real compiler, proxies started
//! with the real runtime on loopback, and the proxy's logs captured so tests can check what a
//! denial says.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use trellis_api::load::{LoadOptions, ResourceSet};
use trellis_api::{MeshConfig, Resource};
use trellis_model::compile::{compile, find_target};
use trellis_model::config::ProxyConfig;
use trellis_proxy::security::JwksCache;
use trellis_proxy::upstream::connect::MeshTlsProvider;
use trellis_proxy::{ProxyRuntime, RunningProxy, RuntimeOptions};

pub fn load(yaml: &str) -> Vec<Resource> {
    let mut set = ResourceSet::default();
    set.add_text("test.yaml", yaml, &LoadOptions::default());
    let errors: Vec<_> = set.diagnostics.iter().filter(|d| d.is_error()).collect();
    assert!(errors.is_empty(), "{errors:?}");
    set.resources
}

/// Compiles the config of workload `ns/name`.
pub fn compile_for(res: &[Resource], mesh: &MeshConfig, workload: &str) -> ProxyConfig {
    let (ns, name) = workload.split_once('/').unwrap();
    let target = find_target(res, ns, name).unwrap();
    compile(res, mesh, &target, "1").unwrap()
}

/// How to start a proxy for a test.
#[derive(Default)]
pub struct Start {
    /// Config port -> bind address (`127.0.0.1:0` for ephemeral).
    pub remap: Vec<(u16, SocketAddr)>,
    pub mesh: Option<Arc<dyn MeshTlsProvider>>,
    pub status: Option<SocketAddr>,
    pub jwks: Option<JwksCache>,
}

pub fn loopback0() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// Starts the real runtime (listeners, TLS, HTTP engine) for `config`.
pub fn start(config: ProxyConfig, s: Start) -> RunningProxy {
    capture_logs();
    let remap: HashMap<u16, SocketAddr> = s.remap.into_iter().collect();
    // Every listener not remapped explicitly goes to an ephemeral loopback port.
    let mut listen_remap = HashMap::new();
    for l in &config.listeners {
        let port = l.address.port();
        listen_remap.insert(port, *remap.get(&port).unwrap_or(&loopback0()));
    }
    let options = RuntimeOptions {
        listen_remap,
        admin: None,
        status: s.status,
        mesh_tls: s.mesh,
        jwks: s.jwks,
        ..RuntimeOptions::default()
    };
    ProxyRuntime::start(config, options).expect("proxy starts")
}

// ---------------------------------------------------------------------------------------------
// Logs

static LOGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct Capture;

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Captures the proxy's logs (access log included) for [`logs`].
pub fn capture_logs() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::try_new("info,access=info").unwrap())
            .with_ansi(false)
            .with_writer(|| Capture)
            .try_init();
    });
}

/// Log lines containing every one of `needles`.
pub fn logs(needles: &[&str]) -> Vec<String> {
    let text = String::from_utf8_lossy(&LOGS.lock().unwrap()).into_owned();
    text.lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .map(str::to_string)
        .collect()
}

/// Waits (bounded) until a log line with every needle appears: the access log line is
/// written when the response body ends, which may be just after the client read it.
pub async fn wait_log(needles: &[&str]) -> Vec<String> {
    for _ in 0..200 {
        let found = logs(needles);
        if !found.is_empty() {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no log line with {needles:?}");
}

// ---------------------------------------------------------------------------------------------
// Clients

/// A raw HTTP/1.1 exchange: `request` as written (so paths reach the proxy byte for byte),
/// `Connection: close` expected; returns (status, whole response text). Status 0 when the
/// proxy closed without answering.
pub async fn raw_http(addr: SocketAddr, request: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// `GET <path>` with `Host: <host>` and extra header lines.
pub async fn get(
    addr: SocketAddr,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    raw_http(addr, &req).await
}

/// A field of an echo body (`path`, `h:x-foo`, ...).
pub fn echo(text: &str, key: &str) -> Option<String> {
    let prefix = format!("{key}=");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix).map(str::to_string))
}

/// A response header (case-insensitive name).
pub fn header(text: &str, name: &str) -> Option<String> {
    let head = text.split("\r\n\r\n").next()?;
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
    })
}

/// Runs a command to completion off the runtime; returns (success, stdout, stderr).
pub async fn run(cmd: &str, args: Vec<String>, stdin: Option<String>) -> (bool, String, String) {
    let cmd = cmd.to_string();
    tokio::task::spawn_blocking(move || {
        use std::process::{Command, Stdio};
        let mut child = Command::new(&cmd)
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{cmd} is needed: {e}"));
        let mut input = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            let _ = input.write_all(s.as_bytes());
        }
        // EOF on stdin (with `s_client -ign_eof`, it then waits for the server to close).
        drop(input);
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}
