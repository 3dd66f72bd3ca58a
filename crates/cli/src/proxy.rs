//! `trellis proxy`: run one proxy (gateway or sidecar) compiled from manifests on disk, with no
//! control plane. Reloads on SIGHUP and when the inputs change; drains on SIGTERM, Ctrl-C or
//! `POST /quitquitquit`.

use std::collections::HashMap;
use std::io::{IsTerminal as _, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use tracing_subscriber::filter::EnvFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{fmt, reload, Layer as _};
use trellis_proxy::reload::{ConfigLoader, ManifestSource, ReloadOptions, Reloader};
use trellis_proxy::runtime::LogControl;
use trellis_proxy::security::mesh::RotationOptions;
use trellis_proxy::security::MeshIdentity;
use trellis_proxy::tls::SecretFiles;
use trellis_proxy::upstream::connect::MeshTlsProvider as _;
use trellis_proxy::{ProxyRuntime, RuntimeOptions};

#[derive(clap::Args, Debug)]
pub struct ProxyArgs {
    /// Manifests: files or directories (read recursively; a directory holding a
    /// kustomization is rendered with kustomize). Repeat or list several.
    #[arg(long = "config", short = 'c', value_name = "PATH", num_args = 1..)]
    pub config: Vec<PathBuf>,

    /// Get config from this control plane (`HOST:PORT`, `trellis control-plane`) instead of
    /// manifests: the proxy compiles what it is sent, keeps serving when the control plane
    /// is away and resyncs when it is back.
    #[arg(long = "control-plane", value_name = "ADDR", conflicts_with_all = ["config", "kustomize", "no_watch"])]
    pub control_plane: Option<String>,

    /// The control plane's mTLS address (its `--mtls-listen`, Istio's 15012). Once the
    /// proxy holds a workload certificate (bootstrapped with --token on --control-plane), its
    /// config stream and certificate renewals use this channel, authenticated by the
    /// certificate.
    #[arg(
        long = "control-plane-mtls",
        value_name = "ADDR",
        requires = "control_plane"
    )]
    pub control_plane_mtls: Option<String>,

    /// Bootstrap token for the control plane (ignored without --control-plane). With it the
    /// proxy also gets its SPIFFE workload certificate from the control plane's CA.
    #[arg(long, env = "TRELLIS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// Kustomize directories to render.
    #[arg(short = 'k', long = "kustomize", value_name = "DIR")]
    pub kustomize: Vec<PathBuf>,

    /// The workload this proxy runs for: a Pod, Deployment or WorkloadEntry in the manifests
    /// (a gateway is the workload its Gateway selects).
    #[arg(long, value_name = "NAMESPACE/NAME")]
    pub workload: String,

    /// Mesh config file (Istio MeshConfig YAML); otherwise the `istio` ConfigMap in the root
    /// namespace of the inputs, otherwise Istio's defaults.
    #[arg(
        long = "meshConfigFile",
        alias = "mesh-config-file",
        value_name = "FILE"
    )]
    pub mesh_config_file: Option<PathBuf>,

    /// Namespace for namespaced resources that name none.
    #[arg(short = 'n', long = "namespace", default_value = "default")]
    pub namespace: String,

    /// Bind the listener of config port PORT on ADDR instead (`80=127.0.0.1:8080`, or
    /// `80=8080` for that port on --bind-ip, else 127.0.0.1). Repeatable.
    #[arg(long = "listen-remap", value_name = "PORT=ADDR")]
    pub listen_remap: Vec<String>,

    /// Bind every listener on this IP instead of the config's (e.g. 127.0.0.1 for local use).
    #[arg(long = "bind-ip", value_name = "IP")]
    pub bind_ip: Option<IpAddr>,

    /// Admin server address, or `off`.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:15000")]
    pub admin: String,

    /// Readiness server address (`/healthz/ready`), or `off`. Default: port 15021 on
    /// --bind-ip, else on all interfaces.
    #[arg(long, value_name = "ADDR")]
    pub status: Option<String>,

    /// A TLS secret from files, overriding a same-named Secret of the manifests; reloaded
    /// when the files change. Repeatable.
    #[arg(long = "secret", value_name = "NAME=CERT,KEY[,CA]")]
    pub secrets: Vec<String>,

    /// Log level or filter directives (`RUST_LOG` wins when set).
    #[arg(long = "log-level", default_value = "info")]
    pub log_level: String,

    /// Access log destination: a file, or `-` for stdout. Default: the mesh config's
    /// `accessLogFile` (off when empty).
    #[arg(long = "access-log", value_name = "FILE|-")]
    pub access_log: Option<String>,

    /// How long a shutdown waits for connections to finish (`5s`, `500ms`).
    #[arg(long = "drain-timeout", default_value = "5s", value_parser = parse_duration)]
    pub drain_timeout: Duration,

    /// Do not watch the inputs for changes (SIGHUP still reloads).
    #[arg(long = "no-watch")]
    pub no_watch: bool,

    /// Worker threads (Istio's `concurrency`). 0: one per CPU this process may run on (its
    /// affinity mask, as `taskset` sets it). With 1 the proxy runs on a single-threaded
    /// runtime: no cross-thread wake-ups or work stealing, ~15% less CPU per request.
    #[arg(long = "concurrency", default_value_t = 0)]
    pub concurrency: usize,

    /// Mesh CA directory in Istio's plug-in layout (`ca-cert.pem`, `ca-key.pem`,
    /// `root-cert.pem`, `cert-chain.pem`); a new root CA is generated there when it holds none.
    /// The proxy gets its SPIFFE workload certificate from it (renewed at half-life) and
    /// speaks Istio mTLS: to ISTIO_MUTUAL / auto-mTLS upstreams, and on inbound ports as
    /// PeerAuthentication says. Without it, mTLS chains refuse every handshake. (With
    /// --control-plane the certificate comes from the control plane's CA instead: --token.)
    #[arg(long = "ca-dir", value_name = "DIR", conflicts_with = "control_plane")]
    pub ca_dir: Option<PathBuf>,

    /// Trust domain of the workload certificate. Default: the mesh config's `trustDomain`.
    #[arg(long = "trust-domain", value_name = "DOMAIN", requires = "ca_dir")]
    pub trust_domain: Option<String>,

    /// Lifetime of workload certificates (`24h` style units: ms, s, m, h).
    #[arg(long = "cert-ttl", default_value = "24h", value_parser = parse_duration)]
    pub cert_ttl: Duration,
}

pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((s, "s"), |i| s.split_at(i));
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: expected e.g. 5s, 500ms, 1m"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("invalid duration unit in {s:?}: use ms, s, m or h")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

fn parse_addr(what: &str, s: &str) -> anyhow::Result<Option<SocketAddr>> {
    if s == "off" || s == "none" {
        return Ok(None);
    }
    s.parse()
        .map(Some)
        .with_context(|| format!("invalid {what} address {s:?}: expected IP:PORT or off"))
}

fn parse_remap(spec: &str, bind_ip: Option<IpAddr>) -> anyhow::Result<(u16, SocketAddr)> {
    let err = || anyhow!("invalid --listen-remap {spec:?}: expected PORT=IP:PORT or PORT=PORT");
    let (port, to) = spec.split_once('=').ok_or_else(err)?;
    let port: u16 = port.trim().parse().map_err(|_| err())?;
    let to = to.trim();
    let addr = match to.parse::<SocketAddr>() {
        Ok(a) => a,
        Err(_) => SocketAddr::new(
            bind_ip.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            to.parse().map_err(|_| err())?,
        ),
    };
    Ok((port, addr))
}

/// Where access log lines go; switchable once the mesh config is known. Until a sink is set,
/// access events are disabled at the filter, so requests pay nothing for formatting lines
/// that would be thrown away.
#[derive(Clone, Default)]
struct AccessSink(
    Arc<Mutex<Option<Box<dyn Write + Send>>>>,
    Arc<std::sync::atomic::AtomicBool>,
);

impl AccessSink {
    fn set(&self, w: Box<dyn Write + Send>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(w);
        self.1.store(true, std::sync::atomic::Ordering::Release);
    }

    /// Whether access lines go anywhere.
    fn enabled(&self) -> bool {
        self.1.load(std::sync::atomic::Ordering::Acquire)
    }
    fn is_set(&self) -> bool {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).is_some()
    }
}

impl Write for AccessSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match &mut *self.0.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(w) => {
                w.write_all(buf)?;
                Ok(buf.len())
            }
            None => Ok(buf.len()),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match &mut *self.0.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(w) => w.flush(),
            None => Ok(()),
        }
    }
}

fn open_access_log(dest: &str) -> anyhow::Result<Box<dyn Write + Send>> {
    Ok(match dest {
        "-" | "/dev/stdout" => Box::new(std::io::stdout()),
        "/dev/stderr" => Box::new(std::io::stderr()),
        path => Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("cannot open access log {path}"))?,
        ),
    })
}

/// Logs to stderr (`RUST_LOG` or `--log-level`, changeable via admin `/logging`), access
/// lines (target `access`) to the access sink.
fn init_logging(level: &str, access: AccessSink) -> anyhow::Result<LogControl> {
    let base = std::env::var("RUST_LOG").unwrap_or_else(|_| level.to_string());
    let make = |directives: &str| -> Result<EnvFilter, String> {
        EnvFilter::builder()
            // rustls warns on every client that sends an IP address as SNI (curl, wrk with
            // https://127.0.0.1): noise any client can trigger. RUST_LOG=rustls=warn restores it.
            .parse(format!("rustls=error,{directives},access=off"))
            .map_err(|e| format!("invalid log filter {directives:?}: {e}"))
    };
    let filter = make(&base).map_err(|e| anyhow!(e))?;
    let (filter, handle) = reload::Layer::new(filter);
    let main = fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .with_filter(filter);
    let on = access.clone();
    let access_layer = fmt::layer()
        .with_ansi(false)
        .with_target(false)
        .with_level(false)
        .with_writer(move || access.clone())
        // Dynamic (checked per event, not cached per callsite): off until a sink is set.
        .with_filter(tracing_subscriber::filter::filter_fn(move |m| {
            m.target() == "access" && *m.level() <= tracing::Level::INFO && on.enabled()
        }));
    tracing_subscriber::registry()
        .with(main)
        .with(access_layer)
        .try_init()
        .map_err(|e| anyhow!("cannot initialise logging: {e}"))?;
    Ok(Arc::new(move |directives: &str| {
        let f = make(directives)?;
        handle
            .reload(f)
            .map_err(|e| format!("cannot change the log filter: {e}"))?;
        Ok(directives.to_string())
    }))
}

pub fn run(args: ProxyArgs) -> anyhow::Result<ExitCode> {
    let (ns, name) = args
        .workload
        .split_once('/')
        .filter(|(ns, name)| !ns.is_empty() && !name.is_empty() && !name.contains('/'))
        .ok_or_else(|| {
            anyhow!(
                "invalid --workload {:?}: expected NAMESPACE/NAME",
                args.workload
            )
        })?;
    if args.config.is_empty() && args.kustomize.is_empty() && args.control_plane.is_none() {
        bail!(
            "no config: give --config PATH (files or directories), -k DIR or --control-plane ADDR"
        );
    }
    let mut listen_remap = HashMap::new();
    for spec in &args.listen_remap {
        let (port, addr) = parse_remap(spec, args.bind_ip)?;
        listen_remap.insert(port, addr);
    }
    let mut secret_files = HashMap::new();
    for spec in &args.secrets {
        let (n, files) = spec
            .split_once('=')
            .ok_or_else(|| anyhow!("invalid --secret {spec:?}: expected NAME=CERT,KEY[,CA]"))?;
        secret_files.insert(
            n.to_string(),
            SecretFiles::parse(files).map_err(|e| anyhow!(e))?,
        );
    }
    let admin = parse_addr("--admin", &args.admin)?;
    let default_status = SocketAddr::new(
        args.bind_ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        15021,
    );
    let status = match &args.status {
        Some(s) => parse_addr("--status", s)?,
        None => Some(default_status),
    };

    let access = AccessSink::default();
    if let Some(dest) = &args.access_log {
        access.set(open_access_log(dest)?);
    }
    let log_control = init_logging(&args.log_level, access.clone())?;

    if let Some(cp) = args.control_plane.clone() {
        let options = RuntimeOptions {
            listen_remap,
            bind_ip: args.bind_ip,
            admin,
            status,
            secret_files,
            drain_timeout: args.drain_timeout,
            log_control: Some(log_control),
            release_startup_pages: true,
            ..RuntimeOptions::default()
        };
        return run_controlled(&args, cp, ns, name, options, access);
    }

    let source = ManifestSource {
        paths: args.config.clone(),
        kustomize: args.kustomize.clone(),
        mesh_config_file: args.mesh_config_file.clone(),
        default_namespace: args.namespace.clone(),
        workload_namespace: ns.to_string(),
        workload_name: name.to_string(),
    };
    let config = match source.load("1") {
        Ok(c) => c,
        Err(e) => {
            eprintln!("Error: config rejected, not starting:");
            for p in &e.problems {
                eprintln!("  {p}");
            }
            return Ok(ExitCode::from(1));
        }
    };
    if args.access_log.is_none() && !config.mesh.access_log_file.is_empty() {
        access.set(open_access_log(&config.mesh.access_log_file)?);
    }
    if access.is_set() {
        tracing::debug!("access log enabled");
    }

    let extra_paths: Vec<PathBuf> = secret_files
        .values()
        .flat_map(|f: &SecretFiles| {
            [
                Some(f.cert_chain.clone()),
                Some(f.private_key.clone()),
                f.ca.clone(),
            ]
        })
        .flatten()
        .collect();
    let mut options = RuntimeOptions {
        listen_remap,
        bind_ip: args.bind_ip,
        admin,
        status,
        secret_files,
        drain_timeout: args.drain_timeout,
        log_control: Some(log_control),
        release_startup_pages: true,
        ..RuntimeOptions::default()
    };
    let runtime = proxy_runtime(args.concurrency)?;
    runtime.block_on(async move {
        if let Some(dir) = &args.ca_dir {
            let td = args
                .trust_domain
                .clone()
                .unwrap_or_else(|| config.security.trust_domain.clone());
            let identity = match MeshIdentity::from_local_ca(
                dir,
                &td,
                &config.node.namespace,
                &config.node.service_account,
                args.cert_ttl,
                RotationOptions::default(),
            )
            .await
            {
                Ok(m) => m,
                Err(e) => {
                    eprintln!("Error: mesh identity: {e}");
                    return Ok(ExitCode::from(1));
                }
            };
            tracing::info!(
                identity = %identity.identity(),
                ca_dir = %dir.display(),
                "workload certificate issued by the local mesh CA"
            );
            options.mesh_tls = Some(identity);
        }
        let proxy = match ProxyRuntime::start(config, options) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("Error: {e}");
                return Ok(ExitCode::from(1));
            }
        };
        let info = proxy.server_info();
        tracing::info!(
            node = %info.node_id,
            version = %info.config_version,
            "proxy started for {}/{}",
            source.workload_namespace,
            source.workload_name
        );
        let watched = source.watch_paths();
        let reloader = Reloader::spawn(
            Arc::new(source),
            proxy.clone(),
            ReloadOptions {
                watch_files: !args.no_watch,
                extra_paths,
                ..ReloadOptions::default()
            },
        )
        .context("cannot watch the config")?;
        if !args.no_watch {
            tracing::info!(
                "watching {} input(s) for changes; SIGHUP reloads",
                watched.len()
            );
        }
        // Logged once everything (reload included) is in place: tests wait for this line.
        if let Some(a) = proxy.admin_addr() {
            tracing::info!("admin listening on {a}");
        }
        if let Some(a) = proxy.status_addr() {
            tracing::info!("status listening on {a}");
        }

        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("cannot listen for SIGTERM")?;
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: draining"),
            _ = tokio::signal::ctrl_c() => tracing::info!("interrupted: draining"),
            _ = proxy.shutting_down() => {}
        }
        drop(reloader);
        proxy.shutdown(args.drain_timeout).await;
        Ok(ExitCode::SUCCESS)
    })
}

/// `--control-plane`: config from a control plane (`trellis_proxy::control_client`).
fn run_controlled(
    args: &ProxyArgs,
    control_plane: String,
    ns: &str,
    name: &str,
    options: RuntimeOptions,
    access: AccessSink,
) -> anyhow::Result<ExitCode> {
    use trellis_proxy::control_client::{start_proxy, ControlClientOptions};
    let mut client = ControlClientOptions::new(control_plane.clone(), ns, name);
    client.token = args.token.clone().filter(|t| !t.is_empty());
    let runtime = proxy_runtime(args.concurrency)?;
    let drain = args.drain_timeout;
    let access_flag = args.access_log.is_some();
    let cert_ttl = args.cert_ttl;
    let mtls_address = args.control_plane_mtls.clone();
    let mut options = options;
    let mut client = client;
    runtime.block_on(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("cannot listen for SIGTERM")?;
        if client.token.is_some() {
            // The certificate first: the proxy serves mTLS from its first connection.
            let cp = trellis_proxy::control_client::ControlClient::new(client.clone());
            let identity = tokio::select! {
                i = cp.mesh_identity(cert_ttl, RotationOptions::default()) => i,
                _ = term.recv() => return Ok(ExitCode::SUCCESS),
                _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
            };
            match identity {
                Ok(m) => {
                    tracing::info!(
                        identity = %m.manager().identity(),
                        "workload certificate issued by the control plane's CA"
                    );
                    if let Some(address) = mtls_address {
                        let mtls = trellis_proxy::control_client::ControlPlaneMtls {
                            address: address.clone(),
                            identity: m.clone(),
                            root_namespace: trellis_api::MeshConfig::default().root_namespace,
                        };
                        // Renewals and the config stream both move to the mTLS channel.
                        cp.use_mtls(mtls.clone());
                        client.mtls = Some(mtls);
                        tracing::info!("control plane channel: mTLS to {address}");
                    }
                    options.mesh_tls = Some(m);
                }
                Err(e) => {
                    eprintln!("Error: mesh identity: {e}");
                    return Ok(ExitCode::from(1));
                }
            }
        } else {
            tracing::warn!("no bootstrap token (--token, TRELLIS_TOKEN): no workload certificate; mesh mTLS refuses every handshake");
        }
        tracing::info!("waiting for config from the control plane at {control_plane} for {ns}/{name}");
        let controlled = tokio::select! {
            c = start_proxy(client, options) => c,
            _ = term.recv() => return Ok(ExitCode::SUCCESS),
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
        };
        let proxy = controlled.proxy.clone();
        let config = proxy.config();
        if !access_flag && !config.mesh.access_log_file.is_empty() {
            access.set(open_access_log(&config.mesh.access_log_file)?);
        }
        let info = proxy.server_info();
        tracing::info!(node = %info.node_id, version = %info.config_version, "proxy started for {ns}/{name} from the control plane");
        // Logged once serving: tests wait for this line.
        if let Some(a) = proxy.admin_addr() {
            tracing::info!("admin listening on {a}");
        }
        if let Some(a) = proxy.status_addr() {
            tracing::info!("status listening on {a}");
        }
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: draining"),
            _ = tokio::signal::ctrl_c() => tracing::info!("interrupted: draining"),
            _ = proxy.shutting_down() => {}
        }
        controlled.shutdown(drain).await;
        Ok(ExitCode::SUCCESS)
    })
}

/// The proxy's async runtime: `concurrency` worker threads (0: one per CPU available to the
/// process); a single worker is a current-thread runtime.
fn proxy_runtime(concurrency: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    let workers = match concurrency {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let mut builder = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(workers);
        b
    };
    builder
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remap_forms() {
        assert_eq!(
            parse_remap("80=127.0.0.1:8080", None).unwrap(),
            (80, "127.0.0.1:8080".parse().unwrap())
        );
        assert_eq!(
            parse_remap("443=8443", None).unwrap(),
            (443, "127.0.0.1:8443".parse().unwrap())
        );
        assert_eq!(
            parse_remap("443=8443", Some("10.1.2.3".parse().unwrap())).unwrap(),
            (443, "10.1.2.3:8443".parse().unwrap())
        );
        assert!(parse_remap("80", None).is_err());
        assert!(parse_remap("x=1", None).is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("24h").unwrap(), Duration::from_secs(86_400));
        assert!(parse_duration("5d").is_err());
    }

    #[test]
    fn one_worker_is_a_current_thread_runtime() {
        use tokio::runtime::RuntimeFlavor;
        let one = proxy_runtime(1).unwrap();
        assert_eq!(one.handle().runtime_flavor(), RuntimeFlavor::CurrentThread);
        let two = proxy_runtime(2).unwrap();
        assert_eq!(two.handle().runtime_flavor(), RuntimeFlavor::MultiThread);
        assert_eq!(two.metrics().num_workers(), 2);
        // 0: the CPUs this process may use.
        let all = proxy_runtime(0).unwrap();
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(all.metrics().num_workers(), cpus);
    }
}
