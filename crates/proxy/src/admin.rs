//! The admin server (Envoy's `15000`, loopback by default) and the status server (Istio's
//! `15020`/`15021`): readiness, and the application's HTTP probes rewritten for mTLS, so
//! probes never need the admin port and keep working under PeerAuthentication STRICT.
//!
//! Status endpoints:
//! - `GET /healthz/ready`, `/ready`: the proxy's readiness.
//! - `GET /stats/prometheus`: Istio's standard metrics in Prometheus text format
//!   (`crate::metrics`), where `prometheus.io/port` annotations send scrapers.
//! - `GET /app-health/<container>/{livez,readyz,startupz}`: the container's `httpGet` probe
//!   (from the workload's Pod/Deployment, `SecurityConfig::probes`) sent by the proxy to
//!   `127.0.0.1:<port><path>`; the app's status is returned (connection failure: 500).
//!
//! Admin endpoints:
//! - `GET /ready`, `/healthz/ready`: `200 LIVE` once listeners are bound and a config is
//!   loaded; `503` with the phase otherwise (starting, draining).
//! - `GET /healthz`: `200` while the process serves at all.
//! - `GET /config_dump`: the config in force as JSON.
//! - `GET /listeners`: `name::bound_address` lines (`?format=json` for JSON).
//! - `GET /clusters`: `cluster::endpoint::weight::N` lines (`?format=json` for JSON).
//! - `GET /server_info`: version, node, config version, uptime, last rejected config.
//! - `GET /stats/prometheus`: the metrics, as on the status port.
//! - `POST /logging?level=LEVEL` (or `?filter=DIRECTIVES`): change the log filter.
//! - `POST /quitquitquit`: graceful shutdown (drain, then exit).

use std::convert::Infallible;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use tokio::net::TcpListener;

use crate::runtime::{Phase, RunningProxy};

/// Which server a socket runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Port {
    Admin,
    Status,
}

/// Serves `port` on `socket` until the proxy stops.
pub async fn serve(socket: TcpListener, proxy: RunningProxy, port: Port) {
    let hard_stop = proxy.hard_stop();
    loop {
        let (stream, _) = tokio::select! {
            _ = proxy.stopped() => break,
            accepted = socket.accept() => match accepted {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(?port, "admin accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let proxy = proxy.clone();
        let mut stop = hard_stop.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let proxy = proxy.clone();
                async move {
                    if port == Port::Status {
                        if let Some(probe) = req.uri().path().strip_prefix("/app-health/") {
                            let probe = probe.to_string();
                            return Ok::<_, Infallible>(app_health(&probe, &proxy).await);
                        }
                    }
                    Ok::<_, Infallible>(route(req, &proxy, port))
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), svc);
            tokio::select! {
                _ = conn => {}
                _ = crate::runtime::signalled(&mut stop) => {}
            }
        });
    }
}

/// `/app-health/<container>/<kind>`: runs the application's probe against the app on
/// loopback and returns its status.
async fn app_health(probe: &str, proxy: &RunningProxy) -> Response<Full<Bytes>> {
    let config = proxy.config();
    let Some(p) = config.security.probes.get(probe) else {
        return text(
            StatusCode::NOT_FOUND,
            format!("no application probe {probe:?}\n"),
        );
    };
    if !p.scheme.eq_ignore_ascii_case("HTTP") {
        return text(
            StatusCode::NOT_IMPLEMENTED,
            format!("probe {probe:?}: only HTTP probes are rewritten\n"),
        );
    }
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], p.port));
    let call = async {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(conn);
        let mut req = Request::get(p.path.as_str())
            .header(header::HOST, format!("127.0.0.1:{}", p.port))
            .header(header::USER_AGENT, "trellis-probe");
        for (k, v) in &p.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let req = req
            .body(http_body_util::Empty::<Bytes>::new())
            .map_err(std::io::Error::other)?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(std::io::Error::other)?;
        Ok::<_, std::io::Error>(resp.status())
    };
    match tokio::time::timeout(p.timeout, call).await {
        Ok(Ok(status)) => text(status, format!("{}\n", status.as_u16())),
        Ok(Err(e)) => {
            tracing::debug!(probe, %addr, "application probe failed: {e}");
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("probe {probe:?} to {addr}{}: {e}\n", p.path),
            )
        }
        Err(_) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!(
                "probe {probe:?} to {addr}{}: timed out after {:?}\n",
                p.path, p.timeout
            ),
        ),
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(body.into()))
        .unwrap_or_default()
}

fn json(value: &impl Serialize) -> Response<Full<Bytes>> {
    match serde_json::to_vec_pretty(value) {
        Ok(mut body) => {
            body.push(b'\n');
            Response::builder()
                .header(header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(body)))
                .unwrap_or_default()
        }
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot serialize: {e}\n"),
        ),
    }
}

fn query_param<'a>(req: &'a Request<Incoming>, name: &str) -> Option<&'a str> {
    req.uri().query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then_some(v)
    })
}

fn ready(proxy: &RunningProxy) -> Response<Full<Bytes>> {
    match proxy.phase() {
        Phase::Live => text(StatusCode::OK, "LIVE\n"),
        Phase::Starting => text(StatusCode::SERVICE_UNAVAILABLE, "PRE_INITIALIZING\n"),
        Phase::Draining => text(StatusCode::SERVICE_UNAVAILABLE, "DRAINING\n"),
        Phase::Stopped => text(StatusCode::SERVICE_UNAVAILABLE, "STOPPED\n"),
    }
}

const HELP: &str = "admin commands:
  /ready /healthz/ready   readiness (200 LIVE)
  /healthz                liveness
  /config_dump            the config in force (JSON)
  /listeners              bound listeners (?format=json)
  /clusters               clusters and endpoints (?format=json)
  /server_info            version, node, config version, uptime, last rejected config
  /stats/prometheus       Istio's standard metrics (Prometheus text format)
  /logging?level=LEVEL    change the log level (POST)
  /quitquitquit           graceful shutdown (POST)
";

fn route(req: Request<Incoming>, proxy: &RunningProxy, port: Port) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    if port == Port::Status {
        return match path {
            "/healthz/ready" | "/ready" => ready(proxy),
            "/stats/prometheus" => prometheus(proxy),
            _ => text(
                StatusCode::NOT_FOUND,
                "not found: the status port serves /healthz/ready, /stats/prometheus and /app-health/<container>/<livez|readyz|startupz>\n",
            ),
        };
    }
    let json_format = query_param(&req, "format") == Some("json");
    match (req.method(), path) {
        (_, "/ready" | "/healthz/ready") => ready(proxy),
        (_, "/healthz") => text(StatusCode::OK, "OK\n"),
        (&Method::GET, "/") => text(StatusCode::OK, HELP),
        (&Method::GET, "/config_dump") => json(&*proxy.config()),
        (&Method::GET, "/server_info") => json(&proxy.server_info()),
        (&Method::GET, "/stats/prometheus") => prometheus(proxy),
        (&Method::GET, "/listeners") => {
            let ls = proxy.listeners();
            if json_format {
                json(&ls)
            } else {
                let mut out = String::new();
                for l in ls {
                    out.push_str(&format!("{}::{}\n", l.name, l.bound_address));
                }
                text(StatusCode::OK, out)
            }
        }
        (&Method::GET, "/clusters") => clusters(proxy, json_format),
        (&Method::POST, "/logging") => logging(&req, proxy),
        (&Method::POST, "/quitquitquit") => {
            tracing::info!("shutdown requested through the admin port");
            proxy.request_shutdown();
            text(StatusCode::OK, "OK\n")
        }
        (_, "/logging" | "/quitquitquit") => {
            let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "use POST\n");
            r.headers_mut()
                .insert(header::ALLOW, header::HeaderValue::from_static("POST"));
            r
        }
        _ => text(StatusCode::NOT_FOUND, format!("not found: {path}\n{HELP}")),
    }
}

/// `/stats/prometheus` (admin and status ports).
fn prometheus(proxy: &RunningProxy) -> Response<Full<Bytes>> {
    let state = proxy.state();
    let body = state
        .metrics
        .render(&state.upstreams, Some(proxy.active_connections()));
    Response::builder()
        .header(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_default()
}

fn logging(req: &Request<Incoming>, proxy: &RunningProxy) -> Response<Full<Bytes>> {
    let Some(control) = &proxy.options().log_control else {
        return text(
            StatusCode::NOT_IMPLEMENTED,
            "this proxy was started without a changeable log level\n",
        );
    };
    let Some(filter) = query_param(req, "level").or_else(|| query_param(req, "filter")) else {
        return text(
            StatusCode::BAD_REQUEST,
            "give ?level=trace|debug|info|warn|error|off or ?filter=DIRECTIVES\n",
        );
    };
    match control(filter) {
        Ok(now) => text(StatusCode::OK, format!("log filter: {now}\n")),
        Err(e) => text(StatusCode::BAD_REQUEST, format!("{e}\n")),
    }
}

#[derive(Serialize)]
struct ClusterDump<'a> {
    name: &'a str,
    service: String,
    subset: Option<&'a str>,
    endpoints: Vec<EndpointDump>,
}

#[derive(Serialize)]
struct EndpointDump {
    address: String,
    weight: u32,
}

fn clusters(proxy: &RunningProxy, json_format: bool) -> Response<Full<Bytes>> {
    use trellis_model::config::EndpointAddress;
    let config = proxy.config();
    let dump: Vec<ClusterDump> = config
        .clusters
        .values()
        .map(|c| ClusterDump {
            name: &c.name,
            service: format!("{}:{}", c.service.host, c.service.port),
            subset: c.subset.as_deref(),
            endpoints: config
                .endpoints
                .get(&c.name)
                .map(|e| {
                    e.endpoints
                        .iter()
                        .map(|e| EndpointDump {
                            address: match &e.address {
                                EndpointAddress::Socket(a) => a.to_string(),
                                EndpointAddress::Dns { host, port } => format!("{host}:{port}"),
                            },
                            weight: e.weight,
                        })
                        .collect()
                })
                .unwrap_or_default(),
        })
        .collect();
    if json_format {
        return json(&dump);
    }
    let mut out = String::new();
    for c in &dump {
        if c.endpoints.is_empty() {
            out.push_str(&format!("{}::no_endpoints\n", c.name));
        }
        for e in &c.endpoints {
            out.push_str(&format!(
                "{}::{}::weight::{}\n",
                c.name, e.address, e.weight
            ));
        }
    }
    text(StatusCode::OK, out)
}
