//! `trellis proxy-config {listeners,routes,clusters,endpoints,secrets,all} <proxy>`: the
//! config a proxy runs, from its admin `/config_dump` (found through the control plane, or
//! given with `--admin`, or read from a saved dump with `--file`), as istioctl's tables.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use serde_json::{json, Map, Value};

use crate::proxy_status::table;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Section {
    Listeners,
    Listener,
    Routes,
    Route,
    Clusters,
    Cluster,
    Endpoints,
    Endpoint,
    Secrets,
    Secret,
    All,
}

#[derive(clap::Args, Debug)]
pub struct ProxyConfigArgs {
    /// What to show.
    #[arg(value_enum)]
    pub section: Section,

    /// The proxy (`name.namespace`, or `namespace/name` of its workload), found through the
    /// control plane. Not needed with --admin or --file.
    pub proxy: Option<String>,

    /// The proxy's admin address (instead of asking the control plane).
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<SocketAddr>,

    /// A saved `/config_dump` JSON file.
    #[arg(long, short = 'f', value_name = "FILE")]
    pub file: Option<PathBuf>,

    /// The control plane's gRPC address (to find the proxy's admin address).
    #[arg(
        long = "control-plane",
        value_name = "ADDR",
        default_value = "127.0.0.1:15010"
    )]
    pub control_plane: String,

    /// Only this service host (clusters, endpoints).
    #[arg(long)]
    pub fqdn: Option<String>,

    /// Only this port (listener port, cluster service port, endpoint port).
    #[arg(long)]
    pub port: Option<u16>,

    /// Only this subset (clusters, endpoints).
    #[arg(long)]
    pub subset: Option<String>,

    /// Only this direction: inbound or outbound (clusters, endpoints).
    #[arg(long)]
    pub direction: Option<String>,

    /// Only this name (route table, cluster, secret, listener).
    #[arg(long)]
    pub name: Option<String>,

    /// Only this address (listeners, endpoints).
    #[arg(long)]
    pub address: Option<String>,

    /// Output: short (tables), json or yaml.
    #[arg(short = 'o', long = "output", default_value = "short")]
    pub output: String,
}

/// A blocking HTTP/1.0 GET on a proxy's admin server: the body of a 200.
pub(crate) fn admin_get(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))
        .with_context(|| format!("cannot reach the proxy admin at {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("bad answer from {addr}{path}"))?;
    let status = head.split(' ').nth(1).unwrap_or("");
    if status != "200" {
        bail!("{addr}{path} answered {status}: {}", body.trim());
    }
    Ok(body.to_string())
}

fn load_dump(args: &ProxyConfigArgs) -> anyhow::Result<(Value, Option<SocketAddr>)> {
    if let Some(f) = &args.file {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?;
        return Ok((
            serde_json::from_str(&text).with_context(|| format!("{} is not JSON", f.display()))?,
            None,
        ));
    }
    let admin = match (args.admin, &args.proxy) {
        (Some(a), _) => a,
        (None, Some(q)) => {
            let st = crate::proxy_status::fetch_status(&args.control_plane)?;
            let p = crate::proxy_status::find_proxy(&st, q)?;
            p.admin_addr.parse().map_err(|_| {
                anyhow!(
                    "proxy {} did not tell the control plane its admin address: use --admin",
                    p.id
                )
            })?
        }
        (None, None) => bail!("give a proxy name, --admin ADDR or --file FILE"),
    };
    let body = admin_get(admin, "/config_dump")?;
    Ok((
        serde_json::from_str(&body).context("the proxy's /config_dump is not JSON")?,
        Some(admin),
    ))
}

pub fn run(args: ProxyConfigArgs) -> anyhow::Result<ExitCode> {
    let (dump, admin) = load_dump(&args)?;
    let health = admin.and_then(|a| admin_get(a, "/clusters?format=json").ok());
    let health: Option<Value> = health.and_then(|h| serde_json::from_str(&h).ok());
    let out = render(&args, &dump, health.as_ref())?;
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        v => v.to_string(),
    }
}

/// `ns/name` -> `name.ns` (istioctl's resource naming).
fn dotted(key: &str) -> String {
    key.split('+')
        .map(|k| match k.split_once('/') {
            Some((ns, name)) => format!("{name}.{ns}"),
            None => k.to_string(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn split_addr(a: &str) -> (String, String) {
    match a.rsplit_once(':') {
        Some((ip, port)) => (ip.trim_matches(['[', ']']).to_string(), port.to_string()),
        None => (a.to_string(), String::new()),
    }
}

fn weighted(v: &Value) -> String {
    v.get("clusters")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .map(|c| s(&c["cluster"]))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

fn listener_rows(dump: &Value, a: &ProxyConfigArgs) -> (Vec<Vec<String>>, Vec<Value>) {
    let mut rows = Vec::new();
    let mut raw = Vec::new();
    for l in dump["listeners"].as_array().into_iter().flatten() {
        let (ip, port) = split_addr(&s(&l["address"]));
        let name = s(&l["name"]);
        if a.port.is_some_and(|p| p.to_string() != port)
            || a.address.as_deref().is_some_and(|x| x != ip)
            || a.name.as_deref().is_some_and(|n| n != name)
        {
            continue;
        }
        raw.push(l.clone());
        for c in l["filter_chains"].as_array().into_iter().flatten() {
            let m = &c["filter_match"];
            let mut parts = Vec::new();
            if let Some(p) = m["destination_port"].as_u64() {
                parts.push(format!("Port: {p}"));
            }
            let sni: Vec<String> = m["server_names"]
                .as_array()
                .into_iter()
                .flatten()
                .map(s)
                .collect();
            if !sni.is_empty() {
                parts.push(format!("SNI: {}", sni.join(",")));
            }
            if m["tls_only"].as_bool() == Some(true) || !c["tls"].is_null() {
                parts.push("Trans: tls".into());
            } else if m["plaintext_only"].as_bool() == Some(true) {
                parts.push("Trans: raw_buffer".into());
            }
            let h = &c["handler"];
            let dest = if let Some(http) = h.get("Http") {
                parts.push("App: http/1.1,h2c".into());
                format!("Route: {}", s(&http["route_table"]))
            } else if let Some(tcp) = h.get("Tcp") {
                let cs: Vec<String> = tcp["routes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|r| weighted(&r["clusters"]))
                    .collect();
                format!("Cluster: {}", cs.join(";"))
            } else if let Some(sni) = h.get("TlsPassthrough") {
                let cs: Vec<String> = sni
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|r| weighted(&r["clusters"]))
                    .collect();
                format!("Cluster: {}", cs.join(";"))
            } else {
                "-".into()
            };
            rows.push(vec![
                ip.clone(),
                port.clone(),
                if parts.is_empty() {
                    "ALL".into()
                } else {
                    parts.join("; ")
                },
                dest,
            ]);
        }
    }
    (rows, raw)
}

fn matcher(m: &Value) -> Option<String> {
    let m = m.as_object()?;
    let (k, v) = m.iter().next()?;
    let v = s(v);
    Some(match k.as_str() {
        "Prefix" if v == "/" => "/*".into(),
        "Prefix" => format!("{v}*"),
        "Exact" => v,
        "Regex" => format!("{v} (regex)"),
        _ => v,
    })
}

fn route_rows(dump: &Value, a: &ProxyConfigArgs) -> (Vec<Vec<String>>, Vec<Value>) {
    let mut rows = Vec::new();
    let mut raw = Vec::new();
    for (name, t) in dump["routes"].as_object().into_iter().flatten() {
        if a.name.as_deref().is_some_and(|n| n != name) {
            continue;
        }
        raw.push(t.clone());
        for vh in t["virtual_hosts"].as_array().into_iter().flatten() {
            let domains: Vec<String> = vh["domains"]
                .as_array()
                .into_iter()
                .flatten()
                .map(s)
                .collect();
            let domains = match domains.len() {
                0 => String::new(),
                1 => domains[0].clone(),
                n => format!("{} + {} more...", domains[0], n - 1),
            };
            for r in vh["routes"].as_array().into_iter().flatten() {
                let matches: Vec<String> = r["matches"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|m| matcher(&m["uri"]).unwrap_or_else(|| "/*".into()))
                    .collect();
                let vs = s(&r["origin"]["virtual_service"]);
                rows.push(vec![
                    name.clone(),
                    s(&vh["name"]),
                    domains.clone(),
                    if matches.is_empty() {
                        "/*".into()
                    } else {
                        matches.join(",")
                    },
                    if vs.is_empty() {
                        s(&r["origin"]["rule"])
                    } else {
                        dotted(&vs)
                    },
                ]);
            }
        }
    }
    (rows, raw)
}

fn direction(cluster_name: &str) -> &str {
    match cluster_name.split('|').next() {
        Some(d @ ("outbound" | "inbound")) if cluster_name.contains('|') => d,
        _ => "-",
    }
}

fn cluster_selected(name: &str, c: &Value, a: &ProxyConfigArgs) -> bool {
    let host = s(&c["service"]["host"]);
    let port = c["service"]["port"].as_u64();
    let subset = s(&c["subset"]);
    !(a.fqdn.as_deref().is_some_and(|f| f != host)
        || a.subset.as_deref().is_some_and(|x| x != subset)
        || a.direction.as_deref().is_some_and(|d| d != direction(name))
        || a.name.as_deref().is_some_and(|n| n != name)
        || (a.port.is_some() && a.port.map(u64::from) != port))
}

fn cluster_rows(dump: &Value, a: &ProxyConfigArgs) -> (Vec<Vec<String>>, Vec<Value>) {
    let mut rows = Vec::new();
    let mut raw = Vec::new();
    for (name, c) in dump["clusters"].as_object().into_iter().flatten() {
        if !cluster_selected(name, c, a) {
            continue;
        }
        raw.push(c.clone());
        let host = s(&c["service"]["host"]);
        let ty = match s(&c["discovery"]).as_str() {
            "Eds" => "EDS",
            "Dns" => "STRICT_DNS",
            "OriginalDst" => "ORIGINAL_DST",
            other => other,
        }
        .to_string();
        rows.push(vec![
            if host.is_empty() { name.clone() } else { host },
            c["service"]["port"]
                .as_u64()
                .filter(|p| *p != 0)
                .map(|p| p.to_string())
                .unwrap_or_else(|| "-".into()),
            Some(s(&c["subset"]))
                .filter(|x| !x.is_empty())
                .unwrap_or_else(|| "-".into()),
            direction(name).to_string(),
            ty,
            dotted(&s(&c["destination_rule"])),
        ]);
    }
    (rows, raw)
}

fn endpoint_rows(
    dump: &Value,
    health: Option<&Value>,
    a: &ProxyConfigArgs,
) -> (Vec<Vec<String>>, Value) {
    let mut rows = Vec::new();
    let mut raw = Map::new();
    let clusters = &dump["clusters"];
    for (name, eps) in dump["endpoints"].as_object().into_iter().flatten() {
        let c = &clusters[name.as_str()];
        let by_cluster = ProxyConfigArgs {
            port: None,
            address: None,
            ..clone_filters(a)
        };
        if !c.is_null() && !cluster_selected(name, c, &by_cluster) {
            continue;
        }
        let mut kept = Vec::new();
        for e in eps["endpoints"].as_array().into_iter().flatten() {
            let addr = if let Some(sock) = e["address"].get("Socket") {
                s(sock)
            } else if let Some(d) = e["address"].get("Dns") {
                format!("{}:{}", s(&d["host"]), s(&d["port"]))
            } else {
                s(&e["address"])
            };
            let (ip, port) = split_addr(&addr);
            if a.port.is_some_and(|p| p.to_string() != port)
                || a.address.as_deref().is_some_and(|x| x != ip)
            {
                continue;
            }
            let (status, outlier) = endpoint_health(health, name, &addr);
            rows.push(vec![addr, status, outlier, name.clone()]);
            kept.push(e.clone());
        }
        if !kept.is_empty() {
            raw.insert(name.clone(), json!({ "endpoints": kept }));
        }
    }
    (rows, Value::Object(raw))
}

fn clone_filters(a: &ProxyConfigArgs) -> ProxyConfigArgs {
    ProxyConfigArgs {
        section: a.section,
        proxy: None,
        admin: None,
        file: None,
        control_plane: String::new(),
        fqdn: a.fqdn.clone(),
        port: a.port,
        subset: a.subset.clone(),
        direction: a.direction.clone(),
        name: a.name.clone(),
        address: a.address.clone(),
        output: String::new(),
    }
}

/// STATUS and OUTLIER CHECK from the admin `/clusters?format=json` when it reports them.
fn endpoint_health(health: Option<&Value>, cluster: &str, addr: &str) -> (String, String) {
    let found = health
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| s(&c["name"]) == cluster))
        .and_then(|c| c["endpoints"].as_array())
        .and_then(|es| es.iter().find(|e| s(&e["address"]) == addr));
    let status = found
        .and_then(|e| e.get("health").or_else(|| e.get("status")))
        .map(s)
        .filter(|x| !x.is_empty())
        .unwrap_or_else(|| "HEALTHY".into());
    let outlier = match found
        .and_then(|e| e.get("ejected"))
        .and_then(Value::as_bool)
    {
        Some(true) => "FAILED",
        _ => "OK",
    };
    (status, outlier.into())
}

/// Serial, validity of the first certificate in a PEM file.
fn cert_info(path: &str) -> Option<(String, bool, String, String)> {
    let bytes = std::fs::read(path).ok()?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(&bytes).ok()?;
    let cert = pem.parse_x509().ok()?;
    let v = cert.validity();
    Some((
        cert.raw_serial_as_string().replace(':', ""),
        v.is_valid(),
        v.not_after.to_string(),
        v.not_before.to_string(),
    ))
}

fn secret_rows(dump: &Value, a: &ProxyConfigArgs) -> (Vec<Vec<String>>, Value) {
    let mut rows = Vec::new();
    let mut raw = Map::new();
    for (name, sec) in dump["secrets"].as_object().into_iter().flatten() {
        if a.name.as_deref().is_some_and(|n| n != name) {
            continue;
        }
        raw.insert(name.clone(), sec.clone());
        let files = &sec["files"];
        let cert_file = s(&files["cert_chain"]);
        let ty = if files.is_object() && cert_file.is_empty() {
            "ROOTCA"
        } else {
            "Cert Chain"
        };
        let file = if cert_file.is_empty() {
            s(&files["ca"])
        } else {
            cert_file
        };
        let info = (!file.is_empty()).then(|| cert_info(&file)).flatten();
        let dash = || "-".to_string();
        rows.push(match info {
            Some((serial, valid, after, before)) => vec![
                name.clone(),
                ty.into(),
                "ACTIVE".into(),
                valid.to_string(),
                serial,
                after,
                before,
            ],
            None => vec![
                name.clone(),
                ty.into(),
                "ACTIVE".into(),
                dash(),
                dash(),
                dash(),
                dash(),
            ],
        });
    }
    (rows, Value::Object(raw))
}

const LISTENER_HEADERS: &[&str] = &["ADDRESSES", "PORT", "MATCH", "DESTINATION"];
const ROUTE_HEADERS: &[&str] = &["NAME", "VHOST NAME", "DOMAINS", "MATCH", "VIRTUAL SERVICE"];
const CLUSTER_HEADERS: &[&str] = &[
    "SERVICE FQDN",
    "PORT",
    "SUBSET",
    "DIRECTION",
    "TYPE",
    "DESTINATION RULE",
];
const ENDPOINT_HEADERS: &[&str] = &["ENDPOINT", "STATUS", "OUTLIER CHECK", "CLUSTER"];
const SECRET_HEADERS: &[&str] = &[
    "RESOURCE NAME",
    "TYPE",
    "STATUS",
    "VALID CERT",
    "SERIAL NUMBER",
    "NOT AFTER",
    "NOT BEFORE",
];

/// The output for `args` from a config dump (and the admin's cluster health when known).
pub(crate) fn render(
    args: &ProxyConfigArgs,
    dump: &Value,
    health: Option<&Value>,
) -> anyhow::Result<String> {
    let (rows, headers, raw): (Vec<Vec<String>>, &[&str], Value) = match args.section {
        Section::Listeners | Section::Listener => {
            let (r, raw) = listener_rows(dump, args);
            (r, LISTENER_HEADERS, Value::Array(raw))
        }
        Section::Routes | Section::Route => {
            let (r, raw) = route_rows(dump, args);
            (r, ROUTE_HEADERS, Value::Array(raw))
        }
        Section::Clusters | Section::Cluster => {
            let (r, raw) = cluster_rows(dump, args);
            (r, CLUSTER_HEADERS, Value::Array(raw))
        }
        Section::Endpoints | Section::Endpoint => {
            let (r, raw) = endpoint_rows(dump, health, args);
            (r, ENDPOINT_HEADERS, raw)
        }
        Section::Secrets | Section::Secret => {
            let (r, raw) = secret_rows(dump, args);
            (r, SECRET_HEADERS, raw)
        }
        Section::All => {
            return match args.output.as_str() {
                "json" => Ok(format!("{}\n", serde_json::to_string_pretty(dump)?)),
                "yaml" => Ok(serde_saphyr::to_string(dump)?),
                "short" | "table" => {
                    let mut out = String::new();
                    out.push_str(&table(LISTENER_HEADERS, &listener_rows(dump, args).0));
                    out.push('\n');
                    out.push_str(&table(ROUTE_HEADERS, &route_rows(dump, args).0));
                    out.push('\n');
                    out.push_str(&table(CLUSTER_HEADERS, &cluster_rows(dump, args).0));
                    out.push('\n');
                    out.push_str(&table(
                        ENDPOINT_HEADERS,
                        &endpoint_rows(dump, health, args).0,
                    ));
                    out.push('\n');
                    out.push_str(&table(SECRET_HEADERS, &secret_rows(dump, args).0));
                    Ok(out)
                }
                o => Err(anyhow!("invalid --output {o:?}: use short, json or yaml")),
            };
        }
    };
    match args.output.as_str() {
        "json" => Ok(format!("{}\n", serde_json::to_string_pretty(&raw)?)),
        "yaml" => Ok(serde_saphyr::to_string(&raw)?),
        "short" | "table" => Ok(table(headers, &rows)),
        o => Err(anyhow!("invalid --output {o:?}: use short, json or yaml")),
    }
}
