//! `trellis proxy-status`: the sync status of every proxy connected to a control plane, in
//! `istioctl proxy-status`'s habit; with a proxy name, what the control plane sent it versus
//! what it ACKed and runs (versions, and the resource changes it has not confirmed).
//!
//! Types: RESOURCES carries what istioctl splits into CDS, LDS and RDS (proxies compile their
//! own listeners, routes and clusters from it), ENDPOINTS is EDS.

use std::process::ExitCode;

use anyhow::{anyhow, Context as _};
use trellis_control::{ControlPlaneStatus, ProxyStatus};
use trellis_protocol::{MeshConfigClient, StatusRequest};

#[derive(clap::Args, Debug)]
pub struct ProxyStatusArgs {
    /// A proxy (`name.namespace`, or `namespace/name` of its workload): show what it was
    /// sent versus what it runs.
    pub proxy: Option<String>,

    /// The control plane's gRPC address.
    #[arg(
        long = "control-plane",
        value_name = "ADDR",
        default_value = "127.0.0.1:15010"
    )]
    pub control_plane: String,

    /// Output: table, or json.
    #[arg(short = 'o', long = "output", default_value = "table")]
    pub output: String,
}

/// Reads the status from a control plane's gRPC `GetStatus`.
pub(crate) fn fetch_status(addr: &str) -> anyhow::Result<ControlPlaneStatus> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(fetch_status_async(addr))
}

/// [`fetch_status`] within a runtime.
pub(crate) async fn fetch_status_async(addr: &str) -> anyhow::Result<ControlPlaneStatus> {
    StatusClient::connect(addr).await?.status().await
}

/// One connection to a control plane's `GetStatus`, for callers that poll it.
pub(crate) struct StatusClient {
    addr: String,
    client: MeshConfigClient<tonic::transport::Channel>,
}

impl StatusClient {
    pub(crate) async fn connect(addr: &str) -> anyhow::Result<StatusClient> {
        let uri = if addr.contains("://") {
            addr.to_string()
        } else {
            format!("http://{addr}")
        };
        let channel = tonic::transport::Endpoint::from_shared(uri)
            .map_err(|e| anyhow!("invalid control plane address {addr:?}: {e}"))?
            .connect_timeout(std::time::Duration::from_secs(3))
            .connect()
            .await
            .map_err(|e| anyhow!("cannot reach the control plane at {addr}: {e}"))?;
        Ok(StatusClient {
            addr: addr.to_string(),
            client: MeshConfigClient::new(channel),
        })
    }

    pub(crate) async fn status(&mut self) -> anyhow::Result<ControlPlaneStatus> {
        let json = self
            .client
            .get_status(StatusRequest {})
            .await
            .map_err(|s| anyhow!("control plane at {}: {}", self.addr, s.message()))?
            .into_inner()
            .json;
        serde_json::from_str(&json).context("unreadable status from the control plane")
    }
}

/// Columns padded to their widest cell, three spaces apart (istioctl's tab writer).
pub(crate) fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let n = cells.len();
        let mut l = String::new();
        for (i, c) in cells.into_iter().enumerate() {
            l.push_str(c);
            if i + 1 < n {
                l.push_str(&" ".repeat(widths[i] - c.chars().count() + 3));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(headers.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
    out
}

/// Finds `name.namespace` (or `namespace/name`, or a unique prefix).
pub(crate) fn find_proxy<'a>(
    st: &'a ControlPlaneStatus,
    q: &str,
) -> anyhow::Result<&'a ProxyStatus> {
    let exact: Vec<&ProxyStatus> = st
        .proxies
        .iter()
        .filter(|p| p.id == q || format!("{}/{}", p.workload_namespace, p.workload_name) == q)
        .collect();
    if let Some(p) = exact.first() {
        return Ok(p);
    }
    let prefix: Vec<&ProxyStatus> = st.proxies.iter().filter(|p| p.id.starts_with(q)).collect();
    match prefix.len() {
        1 => Ok(prefix[0]),
        0 => Err(anyhow!(
            "no proxy {q:?} is connected to control plane {}; connected: {}",
            st.id,
            if st.proxies.is_empty() {
                "none".to_string()
            } else {
                st.proxies
                    .iter()
                    .map(|p| p.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        )),
        _ => Err(anyhow!(
            "{q:?} matches several proxies: {}",
            prefix
                .iter()
                .map(|p| p.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

fn one_line(s: &str, max: usize) -> String {
    let s = s.replace('\n', " ");
    if s.chars().count() <= max {
        s
    } else {
        format!("{}...", s.chars().take(max).collect::<String>())
    }
}

pub fn run(args: ProxyStatusArgs) -> anyhow::Result<ExitCode> {
    let st = fetch_status(&args.control_plane)?;
    match (&args.proxy, args.output.as_str()) {
        (None, "json") => println!("{}", serde_json::to_string_pretty(&st)?),
        (Some(q), "json") => println!("{}", serde_json::to_string_pretty(find_proxy(&st, q)?)?),
        (None, "table" | "short") => print!("{}", render_table(&st)),
        (Some(q), "table" | "short") => print!("{}", render_detail(&st, find_proxy(&st, q)?)),
        (_, o) => return Err(anyhow!("invalid --output {o:?}: use table or json")),
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn render_table(st: &ControlPlaneStatus) -> String {
    let rows: Vec<Vec<String>> = st
        .proxies
        .iter()
        .map(|p| {
            let mut r = vec![
                p.id.clone(),
                p.cluster.clone(),
                st.id.clone(),
                p.proxy_version.clone(),
            ];
            for ty in ["RESOURCES", "ENDPOINTS"] {
                r.push(
                    p.types
                        .iter()
                        .find(|t| t.type_name == ty)
                        .map(|t| t.state.as_str().to_string())
                        .unwrap_or_else(|| "NOT SENT".into()),
                );
            }
            r.push(
                p.types
                    .iter()
                    .find_map(|t| t.nack.as_ref())
                    .map(|n| one_line(&n.error, 80))
                    .unwrap_or_default(),
            );
            r
        })
        .collect();
    let mut out = table(
        &[
            "NAME",
            "CLUSTER",
            "CONTROL PLANE",
            "VERSION",
            "RESOURCES",
            "ENDPOINTS",
            "LAST ERROR",
        ],
        &rows,
    );
    if let Some(e) = &st.last_error {
        out.push_str(&format!("\n{e}\n",));
    }
    out
}

pub(crate) fn render_detail(st: &ControlPlaneStatus, p: &ProxyStatus) -> String {
    let mut out = String::new();
    out.push_str(&format!("Proxy:          {} ({})\n", p.id, p.proxy_kind));
    out.push_str(&format!(
        "Workload:       {}/{}\n",
        p.workload_namespace, p.workload_name
    ));
    out.push_str(&format!(
        "Control plane:  {} (snapshot version {})\n",
        st.id, st.snapshot_version
    ));
    out.push_str(&format!(
        "Connected from: {}{}\n",
        p.peer,
        if p.admin_addr.is_empty() {
            String::new()
        } else {
            format!(" (admin {})", p.admin_addr)
        }
    ));
    if let Some(running) = running_version(&p.admin_addr) {
        out.push_str(&format!(
            "Running:        config version {running} (RESOURCES/ENDPOINTS, from the proxy's admin)\n"
        ));
    }
    for t in &p.types {
        out.push_str(&format!(
            "\n{:<10} {:<9} sent {}, acked {}; {} resources, {} updates\n",
            t.type_name,
            t.state.as_str(),
            t.sent_version.as_deref().unwrap_or("-"),
            t.acked_version.as_deref().unwrap_or("-"),
            t.resources,
            t.pushes
        ));
        if let Some(n) = &t.nack {
            out.push_str(&format!("  NACK of version {}: {}\n", n.version, n.error));
        }
        if !t.pending.is_empty() {
            out.push_str("  Sent but not ACKed (the proxy does not run these):\n");
            let rows: Vec<Vec<String>> = t
                .pending
                .iter()
                .map(|c| {
                    vec![
                        format!("v{}", c.version),
                        c.change.clone(),
                        c.resource.clone(),
                        c.location.clone(),
                    ]
                })
                .collect();
            for l in table(&["VERSION", "CHANGE", "RESOURCE", "SOURCE"], &rows).lines() {
                out.push_str(&format!("    {l}\n"));
            }
        }
    }
    out
}

/// The config version the proxy reports on its admin `/server_info`.
fn running_version(admin: &str) -> Option<String> {
    let addr = admin.parse().ok()?;
    let body = crate::proxy_config::admin_get(addr, "/server_info").ok()?;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    v.get("config_version")?.as_str().map(str::to_string)
}
