//! `trellis control-plane`: serve manifests (files, directories, kustomize overlays) to
//! proxies, watching them for changes; sign workload certificates; report sync status
//! (`trellis proxy-status`) and metrics. Stops on SIGTERM or Ctrl-C.

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, Context as _};
use trellis_control::{ControlPlane, ControlPlaneOptions, StartError};

#[derive(clap::Args, Debug)]
pub struct ControlPlaneArgs {
    /// Manifests: files or directories (recursive; a directory holding a kustomization is
    /// rendered with kustomize).
    pub paths: Vec<PathBuf>,

    /// Kustomize directories to render.
    #[arg(short = 'k', long = "kustomize", value_name = "DIR")]
    pub kustomize: Vec<PathBuf>,

    /// Mesh config file; otherwise the `istio` ConfigMap of the root namespace, otherwise
    /// Istio's defaults.
    #[arg(
        long = "meshConfigFile",
        alias = "mesh-config-file",
        value_name = "FILE"
    )]
    pub mesh_config_file: Option<PathBuf>,

    /// Namespace for namespaced resources that name none.
    #[arg(short = 'n', long = "namespace", default_value = "default")]
    pub namespace: String,

    /// gRPC address proxies connect to (plaintext: keep it on loopback).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:15010")]
    pub listen: SocketAddr,

    /// mTLS gRPC address (Istio's 15012): the same service, for proxies that hold a workload
    /// certificate from this control plane's CA (they authenticate with it), or `off`.
    /// Default: 127.0.0.1:15012 when that port is free (a warning otherwise).
    #[arg(long = "mtls-listen", value_name = "ADDR")]
    pub mtls_listen: Option<String>,

    /// Metrics and debug HTTP address (`/metrics`, `/debug/syncz`), or `off`.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:15014")]
    pub metrics: String,

    /// CA directory: Istio plug-in CA files (ca-cert.pem, ca-key.pem, root-cert.pem,
    /// cert-chain.pem) are used when present, else a root is generated and saved there.
    /// Default: a root generated in memory for this run.
    #[arg(long = "ca-dir", value_name = "DIR")]
    pub ca_dir: Option<PathBuf>,

    /// Bootstrap token proxies present (config streams and certificate requests). Without
    /// one, streams are open and no certificate is issued.
    #[arg(long, env = "TRELLIS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// Quiet time after a file change before reloading (`100ms`, `1s`).
    #[arg(long, default_value = "100ms", value_parser = crate::proxy::parse_duration)]
    pub debounce: Duration,

    /// Do not watch the inputs.
    #[arg(long = "no-watch")]
    pub no_watch: bool,

    /// Control plane id shown by proxy-status (default: generated).
    #[arg(long)]
    pub id: Option<String>,

    /// Log level or filter directives (`RUST_LOG` wins when set).
    #[arg(long = "log-level", default_value = "info")]
    pub log_level: String,
}

pub fn run(args: ControlPlaneArgs) -> anyhow::Result<ExitCode> {
    if args.paths.is_empty() && args.kustomize.is_empty() {
        return Err(anyhow!(
            "no config: give PATHS (files or directories) or -k DIR"
        ));
    }
    let metrics = match args.metrics.as_str() {
        "off" | "none" => None,
        s => Some(s.parse::<SocketAddr>().with_context(|| {
            format!("invalid --metrics address {s:?}: expected IP:PORT or off")
        })?),
    };
    let default_mtls = SocketAddr::from(([127, 0, 0, 1], trellis_protocol::DEFAULT_MTLS_PORT));
    let mtls = match args.mtls_listen.as_deref() {
        None => Some(default_mtls),
        Some("off" | "none") => None,
        Some(s) => Some(s.parse::<SocketAddr>().with_context(|| {
            format!("invalid --mtls-listen address {s:?}: expected IP:PORT or off")
        })?),
    };
    let mtls_is_default = args.mtls_listen.is_none();
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| args.log_level.clone());
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::builder()
                .parse(&filter)
                .map_err(|e| anyhow!("invalid log filter {filter:?}: {e}"))?,
        )
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init()
        .map_err(|e| anyhow!("cannot initialise logging: {e}"))?;
    let options = ControlPlaneOptions {
        inputs: args.paths,
        kustomize: args.kustomize,
        mesh_config: args.mesh_config_file,
        default_namespace: args.namespace,
        grpc_listen: args.listen,
        mtls_listen: mtls,
        metrics_listen: metrics,
        ca_dir: args.ca_dir.unwrap_or_default(),
        bootstrap_token: args.token.filter(|t| !t.is_empty()),
        debounce: args.debounce,
        watch: !args.no_watch,
        id: args.id,
    };
    if options.bootstrap_token.is_none() {
        tracing::warn!("no bootstrap token (--token or TRELLIS_TOKEN): config streams are open to anyone who can reach {}, and no certificate is issued", options.grpc_listen);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let mut result = ControlPlane::start(options.clone()).await;
        if mtls_is_default {
            if let Err(StartError::Bind { what, addr, source }) = &result {
                if Some(*addr) == options.mtls_listen {
                    tracing::warn!("cannot bind the {what} server on {addr} ({source}): no mTLS channel; give --mtls-listen ADDR for one");
                    result = ControlPlane::start(ControlPlaneOptions {
                        mtls_listen: None,
                        ..options
                    })
                    .await;
                }
            }
        }
        let cp = match result {
            Ok(cp) => cp,
            Err(StartError::Config(e)) => {
                eprintln!("Error: the config has errors, not starting:");
                for m in &e.messages {
                    eprintln!("  {m}");
                }
                return Ok(ExitCode::from(1));
            }
            Err(e) => {
                eprintln!("Error: {e}");
                return Ok(ExitCode::from(1));
            }
        };
        // Tests and scripts wait for this line.
        tracing::info!(
            "control plane {} ready: gRPC on {}{}{}",
            cp.id(),
            cp.grpc_addr(),
            cp.mtls_addr()
                .map(|a| format!(", mTLS gRPC on {a}"))
                .unwrap_or_default(),
            cp.metrics_addr()
                .map(|a| format!(", metrics on {a}"))
                .unwrap_or_default()
        );
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("cannot listen for SIGTERM")?;
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: stopping"),
            _ = tokio::signal::ctrl_c() => tracing::info!("interrupted: stopping"),
        }
        cp.shutdown().await;
        Ok(ExitCode::SUCCESS)
    })
}
