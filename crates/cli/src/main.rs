//! The `trellis` binary: thin subcommands over the library crates.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod analyze;
mod control_plane;
mod demo;
mod explain;
mod mesh;
mod proxy;
mod proxy_config;
mod proxy_status;
mod up;

#[derive(Parser)]
#[command(
    name = "trellis",
    version,
    about = "A service mesh that runs the Istio API unchanged"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Analyze Istio configuration and report problems (istioctl analyze).
    Analyze(analyze::AnalyzeArgs),
    /// Run a proxy (gateway or sidecar) compiled from manifests on disk, without a control
    /// plane; reloads on SIGHUP and file changes.
    Proxy(proxy::ProxyArgs),
    /// Run a control plane: serve manifests to proxies (watched, validated, per-proxy
    /// scoped), sign workload certificates, track sync status.
    #[command(name = "control-plane")]
    ControlPlane(control_plane::ControlPlaneArgs),
    /// Sync status of the proxies connected to a control plane (istioctl proxy-status).
    #[command(name = "proxy-status", alias = "ps")]
    ProxyStatus(proxy_status::ProxyStatusArgs),
    /// The config a proxy runs: listeners, routes, clusters, endpoints, secrets
    /// (istioctl proxy-config).
    #[command(name = "proxy-config", alias = "pc")]
    ProxyConfig(proxy_config::ProxyConfigArgs),
    /// Run a whole mesh on this machine (no Kubernetes): gateway, sidecars, apps, stand-ins.
    /// With no PATH: the bundled Alphintra example.
    Up(up::UpArgs),
    /// Run a demo workload of the Alphintra example (what `trellis up` starts).
    #[command(name = "demo-app")]
    DemoApp(demo::DemoArgs),
    /// Explain what the mesh does with one request, step by step, from the manifests: route,
    /// destinations, DestinationRule, JWT, AuthorizationPolicy, mTLS mode, final status.
    Explain(explain::ExplainArgs),
}

fn main() -> ExitCode {
    // One crypto provider for every TLS config in the process (aws-lc-rs); an error only
    // means one is installed already.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Analyze(args) => analyze::run(args),
        Command::Proxy(args) => proxy::run(args),
        Command::ControlPlane(args) => control_plane::run(args),
        Command::ProxyStatus(args) => proxy_status::run(args),
        Command::ProxyConfig(args) => proxy_config::run(args),
        Command::Up(args) => up::run(args),
        Command::DemoApp(args) => demo::run(args),
        Command::Explain(args) => explain::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::from(1)
        }
    }
}
