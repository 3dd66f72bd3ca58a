//! `trellis control-plane` + two `trellis proxy --control-plane` processes + echo upstreams:
//! sync, live route edits through real traffic, `proxy-status` and `proxy-config` output,
//! a rejected edit, and a control-plane restart.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TOKEN: &str = "cli-test-token";

fn write(dir: &Path, name: &str, text: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

const MESH: &str = "apiVersion: v1
kind: Namespace
metadata: {name: a}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: echo, namespace: a}
spec:
  hosts: [echo.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 8080, name: http, protocol: HTTP}
  workloadSelector:
    labels: {app: echo}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: echo, namespace: a}
spec:
  host: echo.local
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: public, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [\"*\"]
";

fn workloads(v1: SocketAddr, v2: SocketAddr) -> String {
    let we = |name: &str, version: &str, a: SocketAddr| {
        format!(
            "apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: {name}, namespace: a}}
spec:
  address: {}
  serviceAccount: echo
  ports: {{http: {}}}
  labels:
    app: echo
    version: {version}
    security.istio.io/tlsMode: disabled
---
",
            a.ip(),
            a.port()
        )
    };
    format!(
        "{}{}apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: client, namespace: a}}
spec:
  address: 127.0.0.1
  serviceAccount: client-sa
  labels: {{app: client}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: ingress, namespace: istio-system}}
spec:
  address: 127.0.0.1
  serviceAccount: ingress-sa
  labels: {{istio: ingressgateway}}
",
        we("echo-v1", "v1", v1),
        we("echo-v2", "v2", v2)
    )
}

fn routes(subset: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: edge, namespace: a}}
spec:
  hosts: [\"*\"]
  gateways: [istio-system/public]
  http:
  - match:
    - uri: {{prefix: /}}
    route:
    - destination: {{host: echo.local, port: {{number: 8080}}, subset: {subset}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: echo, namespace: a}}
spec:
  hosts: [echo.local]
  http:
  - route:
    - destination: {{host: echo.local, subset: {subset}}}
"
    )
}

/// A blocking HTTP server answering `body` to everything, closing each connection.
fn echo(body: &'static str) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut line = String::new();
                loop {
                    line.clear();
                    if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                }
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    a
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A blocking HTTP/1.0 GET: (status, body).
fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: echo.example\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

fn eventually(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A child process whose stderr is collected; killed on drop.
struct Proc {
    child: Child,
    stderr: Arc<Mutex<String>>,
}

impl Proc {
    fn spawn(args: &[&str]) -> Proc {
        let mut child = Command::new(env!("CARGO_BIN_EXE_trellis"))
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn trellis");
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let pipe = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        Proc { child, stderr }
    }

    fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits for a log line containing `marker` and returns the address after it.
    fn addr_after(&self, marker: &str) -> SocketAddr {
        let mut found = None;
        eventually(
            &format!("log line {marker:?}"),
            Duration::from_secs(20),
            || {
                let log = self.log();
                found = log.lines().find_map(|l| {
                    let rest = &l[l.find(marker)? + marker.len()..];
                    rest.trim_start()
                        .split(|c: char| c.is_whitespace() || c == ',')
                        .next()?
                        .parse()
                        .ok()
                });
                found.is_some()
            },
        );
        found.unwrap()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn trellis(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_trellis"))
        .args(args)
        .output()
        .expect("run trellis")
}

fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "status {:?}\n{}\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn start_cp(dir: &Path, listen: &str) -> (Proc, SocketAddr) {
    let cp = Proc::spawn(&[
        "control-plane",
        dir.to_str().unwrap(),
        "--listen",
        listen,
        "--metrics",
        "127.0.0.1:0",
        "--token",
        TOKEN,
        "--id",
        "cp-cli",
        "--debounce",
        "50ms",
    ]);
    let addr = cp.addr_after("gRPC on");
    (cp, addr)
}

fn columns(line: &str) -> Vec<&str> {
    line.split("   ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect()
}

/// Rows of a proxy-status table with both types SYNCED.
fn synced_rows(table: &str) -> usize {
    table
        .lines()
        .filter(|l| {
            let c = columns(l);
            c.len() >= 6 && c[4] == "SYNCED" && c[5] == "SYNCED"
        })
        .count()
}

#[test]
fn control_plane_proxies_status_and_config() {
    let v1 = echo("v1");
    let v2 = echo("v2");
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "mesh.yaml", MESH);
    write(dir.path(), "workloads.yaml", &workloads(v1, v2));
    write(dir.path(), "routes.yaml", &routes("v1"));
    let (cp, grpc) = start_cp(dir.path(), "127.0.0.1:0");
    let grpc_s = grpc.to_string();

    let gw_port = free_port();
    let remap = format!("80=127.0.0.1:{gw_port}");
    let gw = Proc::spawn(&[
        "proxy",
        "--control-plane",
        &grpc_s,
        "--token",
        TOKEN,
        "--workload",
        "istio-system/ingress",
        "--admin",
        "127.0.0.1:0",
        "--status",
        "off",
        "--listen-remap",
        &remap,
    ]);
    let side = Proc::spawn(&[
        "proxy",
        "--control-plane",
        &grpc_s,
        "--token",
        TOKEN,
        "--workload",
        "a/client",
        "--admin",
        "127.0.0.1:0",
        "--status",
        "off",
        "--listen-remap",
        "15001=127.0.0.1:0",
        "--listen-remap",
        "15006=127.0.0.1:0",
        "--listen-remap",
        "8080=127.0.0.1:0",
    ]);
    let gw_admin = gw.addr_after("admin listening on");
    let side_admin = side.addr_after("admin listening on");
    let gw_addr = SocketAddr::from(([127, 0, 0, 1], gw_port));
    assert_eq!(get(gw_addr, "/").unwrap(), (200, "v1".to_string()));

    // proxy-status: both proxies, SYNCED.
    let mut table = String::new();
    eventually(
        "proxy-status shows both SYNCED",
        Duration::from_secs(10),
        || {
            table = stdout(&trellis(&["proxy-status", "--control-plane", &grpc_s]));
            synced_rows(&table) == 2
        },
    );
    let mut lines = table.lines();
    assert_eq!(
        columns(lines.next().unwrap()),
        [
            "NAME",
            "CLUSTER",
            "CONTROL PLANE",
            "VERSION",
            "RESOURCES",
            "ENDPOINTS",
            "LAST ERROR"
        ]
    );
    let rows: Vec<Vec<&str>> = lines.map(columns).collect();
    assert_eq!(
        rows[0][..6],
        ["client.a", "local", "cp-cli", "0.1.0", "SYNCED", "SYNCED"]
    );
    assert_eq!(rows[1][0], "ingress.istio-system");

    // A route edit: through the gateway in under a second, on the sidecar too.
    let t0 = Instant::now();
    write(dir.path(), "routes.yaml", &routes("v2"));
    eventually("v2 through the gateway", Duration::from_secs(5), || {
        get(gw_addr, "/").is_ok_and(|r| r.1 == "v2")
    });
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(1), "took {took:?}");
    eventually("sidecar runs the v2 route", Duration::from_secs(5), || {
        let out = stdout(&trellis(&[
            "proxy-config",
            "routes",
            "--admin",
            &side_admin.to_string(),
            "-o",
            "json",
        ]));
        out.contains("outbound|8080|v2|echo.local")
    });

    // proxy-config through the control plane's knowledge of admin addresses.
    let out = stdout(&trellis(&[
        "proxy-config",
        "clusters",
        "ingress.istio-system",
        "--control-plane",
        &grpc_s,
    ]));
    let lines: Vec<Vec<&str>> = out.lines().map(columns).collect();
    assert_eq!(
        lines[0],
        [
            "SERVICE FQDN",
            "PORT",
            "SUBSET",
            "DIRECTION",
            "TYPE",
            "DESTINATION RULE"
        ]
    );
    assert!(
        lines.contains(&vec![
            "echo.local",
            "8080",
            "v2",
            "outbound",
            "EDS",
            "echo.a"
        ]),
        "{out}"
    );
    let out = stdout(&trellis(&[
        "pc",
        "routes",
        "ingress.istio-system",
        "--control-plane",
        &grpc_s,
    ]));
    let lines: Vec<Vec<&str>> = out.lines().map(columns).collect();
    assert_eq!(
        lines[0],
        ["NAME", "VHOST NAME", "DOMAINS", "MATCH", "VIRTUAL SERVICE"]
    );
    assert!(
        lines
            .iter()
            .any(|l| l.len() == 5 && l[3] == "/*" && l[4] == "edge.a"),
        "{out}"
    );
    let out = stdout(&trellis(&[
        "pc",
        "listeners",
        "--admin",
        &gw_admin.to_string(),
        "--port",
        "80",
    ]));
    let lines: Vec<Vec<&str>> = out.lines().map(columns).collect();
    assert_eq!(lines[0], ["ADDRESSES", "PORT", "MATCH", "DESTINATION"]);
    assert_eq!(
        lines[1],
        ["0.0.0.0", "80", "App: http/1.1,h2c", "Route: http.80"]
    );
    let out = stdout(&trellis(&[
        "pc",
        "endpoints",
        "ingress.istio-system",
        "--control-plane",
        &grpc_s,
        "--subset",
        "v2",
    ]));
    let lines: Vec<Vec<&str>> = out.lines().map(columns).collect();
    assert_eq!(lines[0], ["ENDPOINT", "STATUS", "OUTLIER CHECK", "CLUSTER"]);
    assert_eq!(
        lines[1],
        [
            v2.to_string().as_str(),
            "HEALTHY",
            "OK",
            "outbound|8080|v2|echo.local"
        ]
    );
    assert_eq!(lines.len(), 2, "{out}");
    let yaml = stdout(&trellis(&[
        "pc",
        "clusters",
        "--admin",
        &gw_admin.to_string(),
        "--subset",
        "v2",
        "-o",
        "yaml",
    ]));
    assert!(yaml.contains("name: outbound|8080|v2|echo.local"), "{yaml}");

    // A broken edit is rejected: proxy-status says where and why; traffic is unchanged.
    write(
        dir.path(),
        "routes.yaml",
        &routes("v1").replace("istio-system/public", "istio-system/missing"),
    );
    eventually(
        "rejection shown by proxy-status",
        Duration::from_secs(5),
        || stdout(&trellis(&["proxy-status", "--control-plane", &grpc_s])).contains("IST0101"),
    );
    let out = stdout(&trellis(&["proxy-status", "--control-plane", &grpc_s]));
    assert!(out.contains("config change rejected"), "{out}");
    assert!(out.contains("routes.yaml:"), "{out}");
    assert!(cp.log().contains("IST0101"), "{}", cp.log());
    assert_eq!(get(gw_addr, "/").unwrap().1, "v2");
    write(dir.path(), "routes.yaml", &routes("v2"));

    // Per-proxy detail.
    let out = stdout(&trellis(&[
        "proxy-status",
        "ingress.istio-system",
        "--control-plane",
        &grpc_s,
    ]));
    assert!(
        out.contains("Proxy:          ingress.istio-system (gateway)"),
        "{out}"
    );
    assert!(out.contains("RESOURCES  SYNCED"), "{out}");
    assert!(out.contains("ENDPOINTS  SYNCED"), "{out}");
    assert!(out.contains("Running:        config version"), "{out}");

    // Control-plane restart: the gateway keeps serving, then resyncs.
    drop(cp);
    for _ in 0..10 {
        assert_eq!(get(gw_addr, "/").unwrap().1, "v2");
    }
    let (_cp, _) = start_cp(dir.path(), &grpc_s);
    eventually("resynced after restart", Duration::from_secs(15), || {
        let t = trellis(&["proxy-status", "--control-plane", &grpc_s]);
        t.status.success() && synced_rows(&String::from_utf8_lossy(&t.stdout)) == 2
    });
    write(dir.path(), "routes.yaml", &routes("v1"));
    eventually("edits flow again", Duration::from_secs(5), || {
        get(gw_addr, "/").is_ok_and(|r| r.1 == "v1")
    });
    assert!(
        gw.log().contains("control plane unavailable"),
        "{}",
        gw.log()
    );
}

#[test]
fn proxy_status_without_a_control_plane_says_so() {
    let port = free_port();
    let o = trellis(&[
        "proxy-status",
        "--control-plane",
        &format!("127.0.0.1:{port}"),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("cannot reach the control plane"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn control_plane_refuses_to_start_on_schema_errors() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "bad.yaml",
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: x}\nspec:\n  hosts: [a]\n  bogus: 1\n",
    );
    let o = trellis(&[
        "control-plane",
        dir.path().to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--metrics",
        "off",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("not starting"), "{err}");
    assert!(err.contains("bad.yaml:6:"), "{err}");
}
