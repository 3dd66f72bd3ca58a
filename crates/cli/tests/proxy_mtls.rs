//! `trellis proxy --ca-dir` end to end: two real `trellis proxy` processes (sidecars A and B)
//! get their workload certificates from one local CA directory (created by the first), A calls
//! B over Istio mTLS, B is STRICT (plaintext refused) and forwards to an app that reports the
//! `x-forwarded-client-cert` it got; B's status port serves the app's rewritten probe.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A one-request-per-connection HTTP server on 127.0.0.1 echoing the request head.
fn app() -> SocketAddr {
    let l = loop {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        if TcpListener::bind(("127.0.0.2", port)).is_ok() {
            break l;
        }
    };
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let body = String::from_utf8_lossy(&head).into_owned();
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    addr
}

fn manifests(port: u16) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: b, namespace: apps, labels: {{app: b, sidecar.istio.io/inject: "true"}}}}
spec:
  serviceAccountName: b
  containers:
    - name: app
      image: echo
      ports: [{{name: http, containerPort: {port}}}]
      readinessProbe: {{httpGet: {{path: /ready, port: {port}}}}}
status: {{podIP: 127.0.0.2}}
---
apiVersion: v1
kind: Service
metadata: {{name: b, namespace: apps}}
spec:
  selector: {{app: b}}
  ports: [{{name: http, port: 8080, targetPort: {port}}}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: a, namespace: apps}}
spec: {{address: 127.0.0.3, labels: {{app: a}}, serviceAccount: a}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: default, namespace: istio-system}}
spec: {{mtls: {{mode: STRICT}}}}
"#
    )
}

struct Proxy {
    child: Child,
    admin: SocketAddr,
    status: Option<SocketAddr>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `trellis proxy` and waits for its "admin listening" line (logged once it serves).
fn proxy(config: &Path, ca: &Path, workload: &str, inbound: &str) -> Proxy {
    let mut child = Command::new(env!("CARGO_BIN_EXE_trellis"))
        .args(["proxy", "--config", config.to_str().unwrap()])
        .args(["--workload", workload, "--ca-dir", ca.to_str().unwrap()])
        .args(["--listen-remap", &format!("15006={inbound}")])
        .args(["--listen-remap", "15001=127.0.0.1:0"])
        .args(["--listen-remap", "8080=127.0.0.1:0"])
        .args([
            "--admin",
            "127.0.0.1:0",
            "--status",
            "127.0.0.1:0",
            "--no-watch",
        ])
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let pipe = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        let mut admin = None;
        let mut log = String::new();
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            log.push_str(&line);
            log.push('\n');
            if let Some(a) = line.split("admin listening on ").nth(1) {
                admin = a.trim().parse::<SocketAddr>().ok();
            }
            // Logged right after the admin line, once everything serves.
            if let Some(s) = line.split("status listening on ").nth(1) {
                let _ = tx.send(Ok((admin, s.trim().parse::<SocketAddr>().ok())));
            }
        }
        let _ = tx.send(Err(log));
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(Ok((Some(admin), status))) => Proxy {
            child,
            admin,
            status,
        },
        Ok(Ok((None, _))) => panic!("no admin address logged"),
        Ok(Err(log)) => panic!("trellis proxy {workload} exited:\n{log}"),
        Err(_) => panic!("trellis proxy {workload} did not start"),
    }
}

fn http(addr: SocketAddr, host: &str, path: &str) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return (0, String::new());
    };
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    );
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, out)
}

fn listener(admin: SocketAddr, name: &str) -> SocketAddr {
    let (_, body) = http(admin, "admin", "/listeners?format=json");
    let body = body.split_once("\r\n\r\n").unwrap().1;
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == name)
        .unwrap_or_else(|| panic!("no listener {name}: {v}"))["bound_address"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn two_proxies_from_one_ca_dir_speak_strict_mtls() {
    let app = app();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mesh.yaml"), manifests(app.port())).unwrap();
    let ca = dir.path().join("ca");
    let inbound = SocketAddr::from(([127, 0, 0, 2], app.port()));
    // B first: it creates the CA; A then loads the same one.
    let b = proxy(dir.path(), &ca, "apps/b", &inbound.to_string());
    for f in [
        "ca-cert.pem",
        "ca-key.pem",
        "root-cert.pem",
        "cert-chain.pem",
    ] {
        assert!(ca.join(f).exists(), "{f} created");
    }
    let a = proxy(dir.path(), &ca, "apps/a", "127.0.0.1:0");
    let a_out = listener(a.admin, "0.0.0.0_8080");

    let (status, body) = http(a_out, "b.apps.svc.cluster.local:8080", "/hello");
    assert_eq!(status, 200, "{body}");
    let xfcc = body
        .lines()
        .find_map(|l| l.strip_prefix("x-forwarded-client-cert: "))
        .unwrap_or_else(|| panic!("no XFCC: {body}"));
    assert!(
        xfcc.starts_with("By=spiffe://cluster.local/ns/apps/sa/b;Hash=")
            && xfcc.ends_with(";URI=spiffe://cluster.local/ns/apps/sa/a"),
        "{xfcc}"
    );

    // STRICT: plaintext straight to B's inbound is refused.
    let (status, out) = http(inbound, "b", "/plain");
    assert_eq!((status, out.as_str()), (0, ""));

    // The app's probe, rewritten to B's status port, still works.
    let status_addr = b.status.expect("status address logged");
    let (status, out) = http(status_addr, "b", "/app-health/app/readyz");
    assert_eq!(status, 200, "{out}");
}
