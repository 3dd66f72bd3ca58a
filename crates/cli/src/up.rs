//! `trellis up`: runs a whole mesh on this machine, no Kubernetes: the ingress gateway, one
//! sidecar per workload, the workloads' apps and local stand-ins for managed services, all on
//! loopback addresses, unprivileged. With no argument it runs the bundled Alphintra example
//! (dev overlay).
//!
//! How: the manifests are loaded and analyzed (Error-level findings refuse to start, as
//! `trellis analyze` would report them); `plan` decides what runs where (see its docs for the
//! local-mode rules) and writes the manifests the proxies compile to `<state>/mesh.yaml`;
//! every process is a child of this one (the same binary: `trellis proxy`, `trellis demo-app`,
//! or the command a workload names), each in its own process group and killed if `up` dies.
//! `up` waits for every proxy's `/ready` and every app's health, prints where everything is
//! and commands to try, then streams the logs (prefixed per workload).
//!
//! By default a `trellis control-plane` serves `mesh.yaml` and the mesh CA (`<state>/ca`):
//! every proxy follows it (`trellis proxy --control-plane`, bootstrap token in
//! `TRELLIS_TOKEN`) and gets its SPIFFE certificate from it; if it dies, `up` starts it again
//! on the same address and the proxies, which kept serving, resync. `--no-control-plane` runs
//! standalone proxies instead (each compiles `mesh.yaml`, certificates from the CA directory).
//!
//! Live change: the inputs are watched; a change is loaded and analyzed first: a broken edit
//! is reported with the analyzer's messages and nothing changes; a good one rewrites
//! `mesh.yaml`, which the control plane pushes (standalone proxies get a SIGHUP), applied
//! atomically, keeping listeners and connections. Ctrl-C (or SIGTERM) stops the gateway
//! first, then the sidecars, then the apps, then the control plane.

mod certs;
mod plan;
mod procs;

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::mpsc;
use trellis_analyze::{analyze, Level, Message};
use trellis_api::load::{LoadOptions, ResourceSet};
use trellis_api::MeshConfig;

use plan::{Allocations, Plan, PlanOptions, Role, StandInKind, WorkloadPlan};
use procs::{Logger, Proc, ProcKind};

#[derive(clap::Args, Debug)]
pub struct UpArgs {
    /// Manifests: a kustomization directory, a directory holding `overlays/<name>` (or
    /// `<name>`) kustomizations, files or directories. Default: the bundled Alphintra example
    /// (`examples/alphintra/local`, its `dev` overlay).
    pub path: Option<PathBuf>,

    /// Overlay to run: `<PATH>/overlays/<NAME>` or `<PATH>/<NAME>` (dev, staging, prod for the
    /// example). Default: dev, when PATH has one.
    #[arg(long, value_name = "NAME")]
    pub overlay: Option<String>,

    /// Where `up` keeps its files: the manifests the proxies run, the mesh CA, the demo JWT
    /// key, stand-in data, `up.json` (addresses and pids of what runs).
    #[arg(long = "state-dir", value_name = "DIR", default_value = ".trellis")]
    pub state_dir: PathBuf,

    /// Local port of the gateway's first HTTP server (default: the gateway Service's target
    /// port, 8080 in the example; 0: any free port).
    #[arg(long = "http-port", value_name = "PORT")]
    pub http_port: Option<u16>,

    /// Local port of the gateway's first HTTPS server (default: 8443 in the example).
    #[arg(long = "https-port", value_name = "PORT")]
    pub https_port: Option<u16>,

    /// Run every address in 127.N.0.0/16 instead of the manifests' (127.0.x.y): several
    /// meshes side by side.
    #[arg(long = "loopback-net", value_name = "N")]
    pub loopback_net: Option<u8>,

    /// Show the logs of this workload only (`service-gateway-canary`, or `ns/name`).
    #[arg(long, value_name = "WORKLOAD")]
    pub follow: Option<String>,

    /// Do not start local Redis / PostgreSQL stand-ins for managed services.
    #[arg(long = "no-standins")]
    pub no_standins: bool,

    /// Do not log every request (proxies' access logs).
    #[arg(long = "no-access-log")]
    pub no_access_log: bool,

    /// Run standalone proxies instead of a control plane: each proxy compiles `mesh.yaml`
    /// itself, gets its workload certificate from the local CA directory, and `up` reloads
    /// it (SIGHUP) on changes. By default a `trellis control-plane` serves the manifests and
    /// the mesh CA, and every proxy follows it.
    #[arg(long = "no-control-plane")]
    pub no_control_plane: bool,

    /// Run proxies from a control plane (the default; kept for compatibility).
    #[arg(
        long = "control-plane",
        hide = true,
        conflicts_with = "no_control_plane"
    )]
    pub control_plane: bool,

    /// How long to wait for everything to be ready.
    #[arg(long = "ready-timeout", default_value = "30s", value_parser = parse_duration)]
    pub ready_timeout: Duration,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((s, "s"), |i| s.split_at(i));
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: expected e.g. 30s, 500ms"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("invalid duration unit in {s:?}: use ms, s or m")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

/// The bundled example: `examples/alphintra/local` here, else in the source tree this binary
/// was built from.
fn bundled_example() -> anyhow::Result<PathBuf> {
    let here = PathBuf::from("examples/alphintra/local");
    if here.is_dir() {
        return Ok(here);
    }
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/alphintra/local");
    if built.is_dir() {
        return Ok(std::path::absolute(&built).unwrap_or(built));
    }
    bail!("the bundled example (examples/alphintra/local) is not here: run from the Trellis repository, or give the manifests to run: trellis up PATH")
}

/// The input to run: PATH (or the example), narrowed to an overlay.
fn resolve_input(path: Option<&Path>, overlay: Option<&str>) -> anyhow::Result<PathBuf> {
    let base = match path {
        Some(p) => p.to_path_buf(),
        None => bundled_example()?,
    };
    if !base.exists() {
        bail!("{}: no such file or directory", base.display());
    }
    let candidates = |o: &str| [base.join("overlays").join(o), base.join(o)];
    if let Some(o) = overlay {
        return candidates(o)
            .into_iter()
            .find(|c| c.is_dir())
            .ok_or_else(|| {
                anyhow!(
                    "no overlay {o:?}: expected {} or {}",
                    base.join("overlays").join(o).display(),
                    base.join(o).display()
                )
            });
    }
    if base.is_dir() && !trellis_api::kustomize::is_kustomization_dir(&base) {
        if let Some(dev) = candidates("dev")
            .into_iter()
            .find(|c| trellis_api::kustomize::is_kustomization_dir(c))
        {
            return Ok(dev);
        }
    }
    Ok(base)
}

/// Loads and analyzes the input.
struct Loaded {
    set: ResourceSet,
    mesh: MeshConfig,
    messages: Vec<Message>,
}

impl Loaded {
    fn errors(&self) -> Vec<&Message> {
        self.messages
            .iter()
            .filter(|m| m.level >= Level::Error)
            .collect()
    }
}

fn load(input: &Path) -> anyhow::Result<Loaded> {
    let opts = LoadOptions::default();
    let mut set = ResourceSet::default();
    set.add_path(input, &opts);
    let mut mesh = opts.mesh.clone();
    if let Some(m) = crate::mesh::mesh_config_from_resources(&set, &mesh.root_namespace)? {
        mesh = m;
    }
    let messages = analyze(&set, &mesh);
    Ok(Loaded {
        set,
        mesh,
        messages,
    })
}

/// The binary children run: this very one. On Linux `/proc/<pid>/exe` names it even when
/// its path is replaced while `up` runs (a rebuild), so every child runs the same build.
fn child_exe() -> anyhow::Result<PathBuf> {
    let proc_exe = PathBuf::from(format!("/proc/{}/exe", std::process::id()));
    if proc_exe.exists() {
        return Ok(proc_exe);
    }
    std::env::current_exe().context("cannot find the trellis binary")
}

/// `PATH` lookup.
fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// The PostgreSQL server binary: on PATH, else Debian's versioned directory.
fn find_postgres() -> Option<PathBuf> {
    which("postgres")
        .and_then(|p| std::fs::canonicalize(p).ok())
        .or_else(|| {
            let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
                .ok()?
                .filter_map(|e| e.ok())
                .map(|e| e.path().join("bin/postgres"))
                .filter(|p| p.is_file())
                .collect();
            found.sort();
            found.pop()
        })
        .filter(|p| p.with_file_name("initdb").is_file())
}

/// How to write this binary in commands a user pastes: `trellis` when that is on PATH.
fn display_exe(exe: &Path) -> String {
    let exe = &std::fs::read_link(exe).unwrap_or_else(|_| exe.to_path_buf());
    let exe = &PathBuf::from(
        exe.to_string_lossy()
            .trim_end_matches(" (deleted)")
            .to_string(),
    );
    match which("trellis").and_then(|p| std::fs::canonicalize(p).ok()) {
        Some(p) if std::fs::canonicalize(exe).ok().as_deref() == Some(p.as_path()) => {
            "trellis".to_string()
        }
        _ => shell_quote(&exe.display().to_string()),
    }
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-:=@%+,".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// A child's argv and extra environment.
type ChildCommand = (Vec<String>, Vec<(String, String)>);

/// How the proxies run.
#[derive(Clone, Copy, Debug)]
struct Features {
    /// `trellis proxy --ca-dir`: standalone proxies get certificates from the local CA
    /// directory (with a control plane, its CA signs them instead).
    ca_dir: bool,
    /// `trellis control-plane` and `trellis proxy --control-plane`.
    control_plane: bool,
}

/// A random bootstrap token for this run's control plane.
fn random_token() -> String {
    use std::io::Read as _;
    let mut bytes = [0u8; 16];
    let ok = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .is_ok();
    if !ok {
        let t = Instant::now().elapsed().as_nanos() ^ u128::from(std::process::id());
        bytes.copy_from_slice(&t.to_le_bytes());
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A free port on `ip` that is also free on 127.0.0.1 (sidecar inbound and app share it).
fn free_port(ip: IpAddr) -> std::io::Result<u16> {
    for _ in 0..64 {
        let l = std::net::TcpListener::bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0))?;
        let port = l.local_addr()?.port();
        if ip == IpAddr::V4(Ipv4Addr::LOCALHOST)
            || std::net::TcpListener::bind(SocketAddr::new(ip, port)).is_ok()
        {
            return Ok(port);
        }
    }
    Err(std::io::Error::other("no free port found"))
}

/// Whether `addr` can be bound now.
fn bindable(addr: SocketAddr) -> bool {
    addr.port() == 0 || std::net::TcpListener::bind(addr).is_ok()
}

/// A minimal HTTP/1.1 GET: status and body.
async fn http_get(addr: SocketAddr, host: &str, path: &str) -> std::io::Result<(u16, String)> {
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| std::io::Error::other("not an HTTP response"))?;
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Ok((status, body))
    };
    tokio::time::timeout(Duration::from_secs(2), fut)
        .await
        .unwrap_or_else(|_| Err(std::io::Error::other("timed out")))
}

/// Writes `text` to `path` by rename, so readers see the old or the new file.
fn write_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// TLS Secrets for cert-manager Certificates, and the files clients should trust.
fn add_gateway_certs(
    plan: &mut Plan,
    resources: &[trellis_api::Resource],
    state: &Path,
) -> anyhow::Result<()> {
    let certs = certs::gateway_certs(resources, state).context("gateway certificates")?;
    plan.documents.extend(certs.secrets);
    plan.notes.extend(certs.notes);
    plan.trust = certs
        .trust
        .into_iter()
        .map(|((ns, name), path)| (format!("{ns}/{name}"), path))
        .collect();
    Ok(())
}

/// Claims the state directory for this run (one `up` per state directory).
fn lock_state_dir(dir: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let pid_file = dir.join("up.pid");
    if let Ok(text) = std::fs::read_to_string(&pid_file) {
        if let Ok(pid) = text.trim().parse::<i32>() {
            // SAFETY: signal 0 only checks that the process exists.
            let alive = pid > 0 && unsafe { libc::kill(pid, 0) } == 0;
            if alive && pid != std::process::id() as i32 {
                bail!(
                    "another `trellis up` (pid {pid}) runs with state directory {}: stop it, or give this one --state-dir",
                    dir.display()
                );
            }
        }
    }
    std::fs::write(&pid_file, format!("{}\n", std::process::id()))?;
    Ok(pid_file)
}

pub fn run(args: UpArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run_async(args))
}

/// A command's program and arguments: `sh -c 'exec ...'`, with a leading `trellis` meaning
/// this binary.
fn app_command(command: &str, exe: &Path) -> (PathBuf, Vec<String>) {
    let trimmed = command.trim();
    let rewritten = match trimmed.strip_prefix("trellis ") {
        Some(rest) => format!("{} {rest}", shell_quote(&exe.display().to_string())),
        None if trimmed == "trellis" => shell_quote(&exe.display().to_string()),
        None => trimmed.to_string(),
    };
    (
        PathBuf::from("/bin/sh"),
        vec!["-c".to_string(), format!("exec {rewritten}")],
    )
}

/// Everything that runs, and where.
struct Running {
    procs: Vec<Proc>,
    /// The control plane's gRPC address, when one runs.
    control_plane: Option<SocketAddr>,
    /// The control plane's mTLS gRPC address (proxies move there once they hold a certificate).
    control_plane_mtls: Option<SocketAddr>,
    /// How to start the control plane again (argv, env) when it exits: same address, same CA.
    control_plane_cmd: Option<ChildCommand>,
    /// `ns/name` -> admin address of its proxy.
    admins: BTreeMap<String, SocketAddr>,
    /// Gateway listener port -> where it is bound, per gateway `ns/name`.
    gateway_bound: BTreeMap<(String, u16), SocketAddr>,
}

async fn run_async(args: UpArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let input = resolve_input(args.path.as_deref(), args.overlay.as_deref())?;
    let exe = child_exe()?;
    let state = std::path::absolute(&args.state_dir).unwrap_or(args.state_dir.clone());
    let pid_file = lock_state_dir(&state)?;

    let loaded = load(&input)?;
    let errors = loaded.errors();
    if !errors.is_empty() {
        eprintln!(
            "Error: the manifests in {} have problems; not starting:",
            input.display()
        );
        for m in errors {
            eprintln!("  {m}");
        }
        let _ = std::fs::remove_file(&pid_file);
        return Ok(ExitCode::from(crate::analyze::EXIT_ANALYZE_FAILURE));
    }
    let warnings: Vec<&Message> = loaded
        .messages
        .iter()
        .filter(|m| m.level == Level::Warning)
        .collect();

    let options = PlanOptions {
        net: args.loopback_net,
        http_port: args.http_port,
        https_port: args.https_port,
        redis_available: !args.no_standins && which("redis-server").is_some(),
        postgres_available: !args.no_standins && find_postgres().is_some(),
        standins_off: args.no_standins,
    };
    let mut keep = Allocations::default();
    let mut plan = plan::plan(&loaded.set.resources, &options, &mut keep, &mut free_port)
        .context("cannot allocate ports")?;
    // Gateway ports that are taken: any free port instead (said in the summary).
    let mut moved = Vec::new();
    for w in &mut plan.workloads {
        for b in &mut w.gateway_binds {
            if !bindable(b.bind) {
                moved.push(format!(
                    "{} is in use: the gateway's port {} listens on a free port instead (--{}-port to choose)",
                    b.bind,
                    b.port,
                    if matches!(b.protocol.as_str(), "HTTPS" | "TLS") { "https" } else { "http" }
                ));
                b.bind.set_port(0);
            }
        }
    }
    plan.notes.extend(moved);
    add_gateway_certs(&mut plan, &loaded.set.resources, &state)?;
    let mesh_file = state.join("mesh.yaml");
    write_atomic(&mesh_file, &plan::render(&plan.documents))
        .with_context(|| format!("cannot write {}", mesh_file.display()))?;

    let features = Features {
        ca_dir: args.no_control_plane,
        control_plane: !args.no_control_plane,
    };
    let ca_dir = state.join("ca");
    {
        trellis_identity::ca::CertificateAuthority::load_or_generate(
            &ca_dir,
            &loaded.mesh.trust_domain,
            "Trellis up",
        )
        .map_err(|e| anyhow!("mesh CA in {}: {e}", ca_dir.display()))?;
    }

    let width = plan
        .workloads
        .iter()
        .map(|w| w.name.len() + 9)
        .chain(plan.standins.iter().map(|s| s.host.len() + 9))
        .max()
        .unwrap_or(20);
    let log_dir = state.join("logs");
    let _ = std::fs::remove_dir_all(&log_dir);
    let logger = Logger::new(args.follow.clone(), width, Some(log_dir));
    if let Some(f) = &args.follow {
        if !plan.workloads.iter().any(|w| &w.name == f || &w.key() == f) {
            bail!(
                "--follow {f:?}: no such workload (have: {})",
                plan.workloads
                    .iter()
                    .map(|w| w.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    logger.info(&format!(
        "trellis up: {} ({} workloads{}{})",
        input.display(),
        plan.workloads.len(),
        if features.control_plane {
            ", control plane"
        } else {
            ", standalone proxies"
        },
        if features.ca_dir || features.control_plane {
            ", mTLS with a local CA"
        } else {
            ""
        }
    ));
    for n in &plan.notes {
        logger.info(&format!("  note: {n}"));
    }
    for w in &warnings {
        logger.info(&format!("  {w}"));
    }

    let mut running = Running {
        procs: Vec::new(),
        control_plane: None,
        control_plane_mtls: None,
        control_plane_cmd: None,
        admins: BTreeMap::new(),
        gateway_bound: BTreeMap::new(),
    };
    let outcome = start(
        &args,
        &exe,
        &state,
        &mesh_file,
        &loaded.mesh,
        &plan,
        features,
        &logger,
        &mut running,
    )
    .await;
    let outcome = match outcome {
        Ok(()) => wait_ready(&plan, &mut running, args.ready_timeout).await,
        Err(e) => Err(e),
    };
    if let Err(e) = outcome {
        logger.info(&format!("✗ {e:#}"));
        logger.info("stopping everything");
        procs::stop_all(&mut running.procs, Duration::from_secs(3)).await;
        let _ = std::fs::remove_file(&pid_file);
        return Ok(ExitCode::from(1));
    }
    let elapsed = started.elapsed();
    write_up_json(&state, &input, &mesh_file, &plan, &running)?;
    print_summary(
        &logger, &exe, &input, &plan, &running, features, elapsed, &state,
    );

    let code = serve(
        &args,
        &input,
        &state,
        &mesh_file,
        &options,
        &mut keep,
        plan,
        &logger,
        &mut running,
    )
    .await;
    logger.info("stopping: gateway, then sidecars, then apps");
    procs::stop_all(&mut running.procs, Duration::from_secs(6)).await;
    let _ = std::fs::remove_file(&pid_file);
    logger.info("stopped");
    Ok(code)
}

#[allow(clippy::too_many_arguments)]
async fn start(
    args: &UpArgs,
    exe: &Path,
    state: &Path,
    mesh_file: &Path,
    mesh: &MeshConfig,
    plan: &Plan,
    features: Features,
    logger: &Arc<Logger>,
    running: &mut Running,
) -> anyhow::Result<()> {
    let common_env = vec![("TRELLIS_STATE_DIR".to_string(), state.display().to_string())];
    let mut proxy_env = common_env.clone();
    if features.control_plane {
        let token = random_token();
        proxy_env.push(("TRELLIS_TOKEN".to_string(), token.clone()));
        // A fixed port: proxies reconnect to the same address when it is restarted.
        let port = free_port(IpAddr::V4(Ipv4Addr::LOCALHOST))
            .context("no free port for the control plane")?;
        let mtls_port = free_port(IpAddr::V4(Ipv4Addr::LOCALHOST))
            .context("no free port for the control plane")?;
        running.control_plane_mtls = Some(SocketAddr::from((Ipv4Addr::LOCALHOST, mtls_port)));
        let argv: Vec<String> = vec![
            "control-plane".into(),
            mesh_file.display().to_string(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--mtls-listen".into(),
            format!("127.0.0.1:{mtls_port}"),
            "--metrics".into(),
            "127.0.0.1:0".into(),
            "--ca-dir".into(),
            state.join("ca").display().to_string(),
            "--debounce".into(),
            "50ms".into(),
            "--id".into(),
            "trellis-up".into(),
        ];
        let mut env = common_env.clone();
        env.push(("TRELLIS_TOKEN".to_string(), token));
        running.control_plane_cmd = Some((argv.clone(), env.clone()));
        let cp = procs::spawn(
            logger,
            "control-plane",
            ProcKind::ControlPlane,
            exe,
            &argv,
            &env,
            None,
        )?;
        let mut grpc = cp.grpc.clone();
        running.procs.push(cp);
        let addr = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                if let Some(a) = *grpc.borrow_and_update() {
                    return Some(a);
                }
                if grpc.changed().await.is_err() {
                    return None;
                }
            }
        })
        .await
        .ok()
        .flatten();
        match addr {
            Some(a) => running.control_plane = Some(a),
            None => bail!("the control plane did not start (see its log lines above)"),
        }
    }
    for s in &plan.standins {
        let p = start_standin(s, state, logger).await?;
        running.procs.push(p);
    }
    for w in &plan.workloads {
        if let Some(app) = &w.app {
            let (program, argv) = app_command(&app.command, exe);
            let mut env = common_env.clone();
            env.extend(app.env.iter().cloned());
            running.procs.push(procs::spawn(
                logger,
                &w.key(),
                ProcKind::App,
                &program,
                &argv,
                &env,
                None,
            )?);
        }
    }
    // Apps first: the gateway fetches JWT keys from the auth service as soon as it starts.
    wait_ready(plan, running, args.ready_timeout).await?;
    for w in &plan.workloads {
        if w.role == Role::Plain {
            continue;
        }
        let mut argv: Vec<String> = vec!["proxy".into()];
        match running.control_plane {
            Some(cp) => {
                argv.extend(["--control-plane".into(), cp.to_string()]);
                if let Some(m) = running.control_plane_mtls {
                    argv.extend(["--control-plane-mtls".into(), m.to_string()]);
                }
            }
            None => argv.extend([
                "--config".into(),
                mesh_file.display().to_string(),
                "--no-watch".into(),
            ]),
        }
        argv.extend([
            "--workload".into(),
            w.key(),
            "--admin".into(),
            "127.0.0.1:0".into(),
            "--status".into(),
            "off".into(),
        ]);
        if !args.no_access_log {
            argv.extend(["--access-log".into(), "-".into()]);
        }
        if features.ca_dir {
            argv.extend(["--ca-dir".into(), state.join("ca").display().to_string()]);
        }
        match w.role {
            Role::Sidecar => {
                // One worker, as Linkerd's proxies: a local mesh runs many sidecars on a few
                // cores, and a single-threaded proxy is the cheapest per request.
                argv.extend(["--concurrency".into(), "1".into()]);
                if let Some(ip) = w.outbound_ip {
                    argv.extend(["--bind-ip".into(), ip.to_string()]);
                }
                if let Some(inbound) = w.inbound() {
                    argv.extend([
                        "--listen-remap".into(),
                        format!("{}={inbound}", mesh.proxy_inbound_listen_port),
                    ]);
                }
            }
            Role::Gateway => {
                argv.extend(["--bind-ip".into(), w.address.to_string()]);
                for b in &w.gateway_binds {
                    argv.extend(["--listen-remap".into(), format!("{}={}", b.port, b.bind)]);
                }
            }
            Role::Plain => {}
        }
        let kind = if w.role == Role::Gateway {
            ProcKind::Gateway
        } else {
            ProcKind::Sidecar
        };
        running.procs.push(procs::spawn(
            logger,
            &w.key(),
            kind,
            exe,
            &argv,
            &proxy_env,
            None,
        )?);
    }
    Ok(())
}

/// Starts a stand-in server.
async fn start_standin(
    s: &plan::StandIn,
    state: &Path,
    logger: &Arc<Logger>,
) -> anyhow::Result<Proc> {
    let label = s.host.clone();
    match s.kind {
        StandInKind::Redis => {
            let program = which("redis-server").ok_or_else(|| anyhow!("redis-server not found"))?;
            let argv: Vec<String> = [
                "--bind",
                &s.listen.ip().to_string(),
                "--port",
                &s.listen.port().to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            Ok(procs::spawn(
                logger,
                &label,
                ProcKind::StandIn,
                &program,
                &argv,
                &[],
                None,
            )?)
        }
        StandInKind::Postgres => {
            let postgres = find_postgres().ok_or_else(|| anyhow!("postgres not found"))?;
            let data = state.join("postgres").join(s.listen.ip().to_string());
            let (argv, user) = postgres_command(&postgres, &data, s.listen).await?;
            let mut p = procs::spawn(
                logger,
                &label,
                ProcKind::StandIn,
                &postgres,
                &argv,
                &[],
                user,
            )?;
            // Fast shutdown: end sessions, checkpoint, exit.
            p.stop_signal = libc::SIGINT;
            Ok(p)
        }
    }
}

/// `postgres` arguments for `listen` with its data in `data` (initialized on first use), and
/// the user to run it as: PostgreSQL refuses to run as root, so then it runs as the
/// `postgres` user, in a directory it owns.
async fn postgres_command(
    postgres: &Path,
    data: &Path,
    listen: SocketAddr,
) -> anyhow::Result<(Vec<String>, Option<(u32, u32)>)> {
    // SAFETY: getuid has no preconditions.
    let user = if unsafe { libc::getuid() } == 0 {
        Some(postgres_user()?)
    } else {
        None
    };
    if !data.join("PG_VERSION").exists() {
        std::fs::create_dir_all(data)?;
        if let Some((uid, gid)) = user {
            for dir in [Some(data), data.parent()].into_iter().flatten() {
                std::os::unix::fs::chown(dir, Some(uid), Some(gid)).with_context(|| {
                    format!("cannot give {} to the postgres user", dir.display())
                })?;
            }
        }
        let initdb = postgres.with_file_name("initdb");
        let mut cmd = tokio::process::Command::new(&initdb);
        cmd.args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(data);
        if let Some((uid, gid)) = user {
            cmd.uid(uid).gid(gid);
        }
        let out = cmd
            .output()
            .await
            .with_context(|| format!("cannot run {}", initdb.display()))?;
        if !out.status.success() {
            bail!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    let argv = [
        "-D",
        &data.display().to_string(),
        "-k",
        &data.display().to_string(),
        "-h",
        &listen.ip().to_string(),
        "-p",
        &listen.port().to_string(),
        "-c",
        "fsync=off",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    Ok((argv, user))
}

/// uid and gid of the `postgres` user.
fn postgres_user() -> anyhow::Result<(u32, u32)> {
    let name = std::ffi::CString::new("postgres")?;
    // SAFETY: getpwnam returns a pointer to static storage or null; read at once.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        bail!("PostgreSQL refuses to run as root and there is no `postgres` user");
    }
    // SAFETY: pw is non-null and points to a valid passwd.
    Ok(unsafe { ((*pw).pw_uid, (*pw).pw_gid) })
}

/// Waits until every proxy answers `/ready`, every app its health check and every stand-in
/// accepts connections; fails early when a process exits.
async fn wait_ready(plan: &Plan, running: &mut Running, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let mut pending: Vec<usize> = (0..running.procs.len()).collect();
    loop {
        let mut still = Vec::new();
        for i in pending {
            if let Ok(Some(status)) = running.procs[i].child.try_wait() {
                running.procs[i].exited = Some(status);
                let p = &running.procs[i];
                bail!(
                    "{} {} exited during start ({status}); see its log lines above",
                    p.workload,
                    p.kind.tag()
                );
            }
            if !ready(plan, running, i).await {
                still.push(i);
            }
        }
        if still.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            let names: Vec<String> = still
                .iter()
                .map(|i| {
                    format!(
                        "{} {}",
                        running.procs[*i].workload,
                        running.procs[*i].kind.tag()
                    )
                })
                .collect();
            bail!(
                "not ready after {}s: {}",
                timeout.as_secs(),
                names.join(", ")
            );
        }
        pending = still;
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn ready(plan: &Plan, running: &mut Running, i: usize) -> bool {
    let p = &running.procs[i];
    let workload = p.workload.clone();
    match p.kind {
        ProcKind::Gateway | ProcKind::Sidecar => {
            let Some(admin) = *p.admin.borrow() else {
                return false;
            };
            if !matches!(http_get(admin, "localhost", "/ready").await, Ok((200, _))) {
                return false;
            }
            running.admins.insert(workload.clone(), admin);
            if p.kind == ProcKind::Gateway {
                let Ok((200, body)) = http_get(admin, "localhost", "/server_info").await else {
                    return false;
                };
                let info: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                for l in info["listeners"].as_array().into_iter().flatten() {
                    let config_port = l["config_address"]
                        .as_str()
                        .and_then(|a| a.parse::<SocketAddr>().ok())
                        .map(|a| a.port());
                    let bound = l["bound_address"]
                        .as_str()
                        .and_then(|a| a.parse::<SocketAddr>().ok());
                    if let (Some(port), Some(bound)) = (config_port, bound) {
                        running
                            .gateway_bound
                            .insert((workload.clone(), port), bound);
                    }
                }
            }
            true
        }
        ProcKind::App => {
            let Some(w) = plan.workloads.iter().find(|w| w.key() == workload) else {
                return true;
            };
            let Some(app) = &w.app else { return true };
            match &app.health {
                Some(path) => matches!(
                    http_get(app.listen, &app.listen.to_string(), path).await,
                    Ok((s, _)) if (200..300).contains(&s)
                ),
                None => tokio::net::TcpStream::connect(app.listen).await.is_ok(),
            }
        }
        ProcKind::ControlPlane => p.grpc.borrow().is_some(),
        ProcKind::StandIn => {
            let Some(s) = plan.standins.iter().find(|s| s.host == workload) else {
                return true;
            };
            tokio::net::TcpStream::connect(s.listen).await.is_ok()
        }
    }
}

/// The gateway's local address for its listener on `port`.
fn gateway_addr(running: &Running, w: &WorkloadPlan, port: u16) -> Option<SocketAddr> {
    running
        .gateway_bound
        .get(&(w.key(), port))
        .copied()
        .or_else(|| {
            w.gateway_binds
                .iter()
                .find(|b| b.port == port)
                .map(|b| b.bind)
        })
}

fn write_up_json(
    state: &Path,
    input: &Path,
    mesh_file: &Path,
    plan: &Plan,
    running: &Running,
) -> anyhow::Result<()> {
    let workloads: Vec<serde_json::Value> = plan
        .workloads
        .iter()
        .map(|w| {
            let pids: BTreeMap<&str, u32> = running
                .procs
                .iter()
                .filter(|p| p.workload == w.key())
                .map(|p| (p.kind.tag(), p.pid))
                .collect();
            json!({
                "namespace": w.namespace,
                "name": w.name,
                "role": w.role,
                "source": w.source,
                "address": w.address.to_string(),
                "ports": w.ports.iter().map(|(n, p, l)| json!({"name": n, "port": p, "local": l})).collect::<Vec<_>>(),
                "inbound": w.inbound().map(|a| a.to_string()),
                "app": w.app.as_ref().map(|a| a.listen.to_string()),
                "outbound_ip": w.outbound_ip.map(|a| a.to_string()),
                "admin": running.admins.get(&w.key()).map(|a| a.to_string()),
                "gateway": w.gateway_binds.iter().map(|b| json!({
                    "port": b.port,
                    "protocol": b.protocol,
                    "hosts": b.hosts,
                    "address": gateway_addr(running, w, b.port).map(|a| a.to_string()),
                })).collect::<Vec<_>>(),
                "pids": pids,
            })
        })
        .collect();
    let doc = json!({
        "input": input.display().to_string(),
        "manifests": mesh_file.display().to_string(),
        "pid": std::process::id(),
        "control_plane": running.control_plane.map(|a| a.to_string()),
        "control_plane_pid": running
            .procs
            .iter()
            .find(|p| p.kind == ProcKind::ControlPlane && p.exited.is_none())
            .map(|p| p.pid),
        "workloads": workloads,
        "standins": plan.standins.iter().map(|s| json!({
            "kind": s.kind.name(),
            "service_entry": s.service_entry,
            "host": s.host,
            "port": s.port,
            "address": s.listen.to_string(),
            "pid": running.procs.iter().find(|p| p.workload == s.host).map(|p| p.pid),
        })).collect::<Vec<_>>(),
    });
    write_atomic(&state.join("up.json"), &serde_json::to_string_pretty(&doc)?)?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn print_summary(
    logger: &Logger,
    exe: &Path,
    input: &Path,
    plan: &Plan,
    running: &Running,
    features: Features,
    elapsed: Duration,
    state: &Path,
) {
    let trellis = display_exe(exe);
    let bold = |s: &str| {
        if logger.colored() {
            format!("\x1b[1m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    };
    let mut out = String::new();
    out.push('\n');
    out.push_str(&bold(&format!(
        "✔ Mesh ready in {:.1}s: {} workloads from {}",
        elapsed.as_secs_f64(),
        plan.workloads.len(),
        input.display()
    )));
    out.push_str("\n\n");

    // Gateways.
    let mut first_http: Option<(String, SocketAddr)> = None;
    let mut first_https: Option<(String, SocketAddr, PathBuf)> = None;
    for w in plan.workloads.iter().filter(|w| w.role == Role::Gateway) {
        out.push_str(&format!("Ingress gateway {}\n", w.key()));
        for b in &w.gateway_binds {
            let Some(addr) = gateway_addr(running, w, b.port) else {
                continue;
            };
            let tls = matches!(b.protocol.as_str(), "HTTPS" | "TLS");
            let scheme = if tls { "https" } else { "http" };
            let host = b
                .hosts
                .iter()
                .find(|h| !h.contains('*'))
                .cloned()
                .unwrap_or_else(|| addr.ip().to_string());
            out.push_str(&format!(
                "  {scheme}://{host}:{}  (port {} {}, listening on {addr}; hosts: {})\n",
                addr.port(),
                b.port,
                b.protocol,
                b.hosts.join(", ")
            ));
            let trust = b
                .credential
                .as_ref()
                .and_then(|c| plan.trust.get(&format!("{}/{c}", w.namespace)));
            if let (true, None, Some(t)) = (tls, &first_https, trust) {
                first_https = Some((host.clone(), addr, t.clone()));
            }
            if !tls && first_http.is_none() {
                first_http = Some((host, addr));
            }
        }
    }

    out.push_str("\nWorkloads\n");
    let mut rows: Vec<[String; 6]> = vec![[
        "NAME".into(),
        "ROLE".into(),
        "MESH ADDRESS".into(),
        "APP".into(),
        "SIDECAR OUTBOUND".into(),
        "ADMIN".into(),
    ]];
    for w in &plan.workloads {
        let mesh_addr = match w.role {
            Role::Gateway => w.address.to_string(),
            _ => w
                .ports
                .first()
                .map(|p| SocketAddr::new(w.address, p.2).to_string())
                .unwrap_or_else(|| w.address.to_string()),
        };
        rows.push([
            w.key(),
            match w.role {
                Role::Gateway => "gateway",
                Role::Sidecar => "sidecar",
                Role::Plain => "no mesh",
            }
            .to_string(),
            mesh_addr,
            w.app
                .as_ref()
                .map(|a| a.listen.to_string())
                .unwrap_or_else(|| "-".into()),
            w.outbound_ip
                .map(|ip| format!("{ip}:15001"))
                .unwrap_or_else(|| "-".into()),
            running
                .admins
                .get(&w.key())
                .map(|a| format!("http://{a}"))
                .unwrap_or_else(|| "-".into()),
        ]);
    }
    let widths: Vec<usize> = (0..6)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    for r in &rows {
        out.push_str("  ");
        for (i, cell) in r.iter().enumerate() {
            if i + 1 == r.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        out.push('\n');
    }
    if !plan.standins.is_empty() {
        out.push_str("\nStand-ins for managed services\n");
        for s in &plan.standins {
            out.push_str(&format!(
                "  {}:{} (ServiceEntry {}) -> local {} on {}\n",
                s.host,
                s.port,
                s.service_entry,
                s.kind.name(),
                s.listen
            ));
        }
    }
    let without: Vec<String> = running
        .procs
        .iter()
        .filter(|p| p.no_identity.load(std::sync::atomic::Ordering::Relaxed))
        .map(|p| {
            p.workload
                .rsplit('/')
                .next()
                .unwrap_or(&p.workload)
                .to_string()
        })
        .collect();
    out.push_str(&format!(
        "\nmTLS between sidecars: {}\n",
        if !without.is_empty() {
            format!(
                "✗ no workload certificate in {} (their mTLS connections fail; see their logs)",
                without.join(", ")
            )
        } else if features.ca_dir || running.control_plane.is_some() {
            format!("on (local CA in {})", state.join("ca").display())
        } else {
            "not in this build (plain text between sidecars)".to_string()
        }
    ));
    match running.control_plane {
        Some(cp) => out.push_str(&format!(
            "Control plane: {cp}{} (pushes every change of the manifests to the proxies)\n",
            running
                .control_plane_mtls
                .map(|m| format!(", mTLS {m}"))
                .unwrap_or_default()
        )),
        None => out.push_str(
            "Proxies: standalone (each compiles the manifests; `up` reloads them on changes)\n",
        ),
    }

    // Commands to try.
    if let Some((host, addr)) = first_http {
        let resolve = format!("--resolve {host}:{}:{}", addr.port(), addr.ip());
        let base = format!("http://{host}:{}", addr.port());
        let demo = |needle: &str| {
            plan.workloads
                .iter()
                .any(|w| w.app.as_ref().is_some_and(|a| a.command.contains(needle)))
        };
        out.push_str("\nTry it\n");
        out.push_str(&format!(
            "  # health check, anonymous\n  curl -s {resolve} {base}/actuator/health\n"
        ));
        if let Some((host, addr, trust)) = &first_https {
            out.push_str(&format!(
                "  # the same over HTTPS, trusting the gateway's certificate\n  curl -s --cacert {} --resolve {host}:{}:{} https://{host}:{}/actuator/health\n",
                shell_quote(&trust.display().to_string()),
                addr.port(),
                addr.ip(),
                addr.port()
            ));
        }
        if demo("demo-app auth-service") {
            out.push_str(&format!(
                "  # log in as a demo user (any name and password) and keep the token\n  TOKEN=$(curl -s {resolve} -X POST {base}/api/auth/login -H 'content-type: application/json' -d '{{\"username\":\"trader\",\"password\":\"trader\"}}' | sed -E 's/.*\"access_token\":\"([^\"]+)\".*/\\1/')\n"
            ));
        }
        if demo("demo-app service-gateway") {
            out.push_str(&format!(
                "  # an API call without a token (denied by the gateway's AuthorizationPolicy), then with it\n  curl -s -o /dev/null -w '%{{http_code}}\\n' {resolve} {base}/api/orders\n  curl -s {resolve} -H \"Authorization: Bearer $TOKEN\" {base}/api/orders\n  # the canary split: count the versions that answer 100 calls\n  for i in $(seq 100); do curl -s {resolve} -H \"Authorization: Bearer $TOKEN\" {base}/api/orders | grep -o '\"version\":\"[a-z]*\"'; done | sort | uniq -c\n"
            ));
        }
        out.push_str(&format!(
            "  # why a request goes where it goes (or is denied)\n  {trellis} explain -k {} GET http://{host}/api/orders\n",
            shell_quote(&input.display().to_string())
        ));
    }
    if let Some(cp) = running.control_plane {
        out.push_str(&format!(
            "  # are all proxies in sync with the control plane?\n  {trellis} proxy-status --control-plane {cp}\n"
        ));
    }
    if let Some(w) = plan.workloads.iter().find(|w| w.role == Role::Sidecar) {
        if let Some(f) = logger.file_of(&w.key()) {
            out.push_str(&format!(
                "  # the logs of one workload (app and sidecar); or start with --follow {}\n  tail -f {}\n",
                w.name,
                shell_quote(&f.display().to_string())
            ));
        }
    }
    out.push_str(&format!(
        "\nWatching {} for changes (they apply in under a second; a broken edit is refused). Ctrl-C stops everything.\n",
        input.display()
    ));
    logger.info(&out);
}

/// Files and directories whose changes matter: the input and everything its
/// kustomizations pull in.
fn watch_paths(input: &Path) -> Vec<PathBuf> {
    trellis_api::kustomize::watch_paths([&input.to_path_buf()])
}

type Debouncer = notify_debouncer_full::Debouncer<
    notify::RecommendedWatcher,
    notify_debouncer_full::RecommendedCache,
>;

/// Watches `paths` (not `ignore`); sends a unit per debounced change.
fn watch(
    paths: &[PathBuf],
    ignore: &Path,
    tx: mpsc::UnboundedSender<()>,
) -> anyhow::Result<Debouncer> {
    use notify::RecursiveMode;
    let ignore = ignore.to_path_buf();
    let roots: Vec<PathBuf> = paths
        .iter()
        .filter_map(|p| std::path::absolute(p).ok())
        .collect();
    let filter_roots = roots.clone();
    let mut debouncer = notify_debouncer_full::new_debouncer(
        Duration::from_millis(100),
        None,
        move |res: notify_debouncer_full::DebounceEventResult| {
            if let Ok(events) = res {
                let relevant = events.iter().any(|e| {
                    !matches!(e.kind, notify::EventKind::Access(_))
                        && e.paths.iter().any(|p| {
                            !p.starts_with(&ignore)
                                && filter_roots.iter().any(|r| p.starts_with(r) || r == p)
                                && !p
                                    .file_name()
                                    .and_then(|n| n.to_str())
                                    .is_some_and(|n| n.ends_with('~') || n.starts_with(".#"))
                        })
                });
                if relevant {
                    let _ = tx.send(());
                }
            }
        },
    )
    .map_err(|e| anyhow!("cannot watch the manifests: {e}"))?;
    let mut watched = HashSet::new();
    for r in &roots {
        let (dir, mode) = if r.is_dir() {
            (r.clone(), RecursiveMode::Recursive)
        } else {
            match r.parent() {
                Some(p) => (p.to_path_buf(), RecursiveMode::NonRecursive),
                None => continue,
            }
        };
        if watched.insert(dir.clone()) {
            debouncer
                .watch(&dir, mode)
                .map_err(|e| anyhow!("cannot watch {}: {e}", dir.display()))?;
        }
    }
    Ok(debouncer)
}

/// Runs until a signal: applies manifest changes, reports processes that exit.
#[allow(clippy::too_many_arguments)]
async fn serve(
    args: &UpArgs,
    input: &Path,
    state: &Path,
    mesh_file: &Path,
    options: &PlanOptions,
    keep: &mut Allocations,
    mut current: Plan,
    logger: &Arc<Logger>,
    running: &mut Running,
) -> ExitCode {
    let _ = args;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let _watcher = match watch(&watch_paths(input), state, tx) {
        Ok(w) => Some(w),
        Err(e) => {
            logger.info(&format!("warning: {e}: live changes are off"));
            None
        }
    };
    let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    else {
        return ExitCode::from(1);
    };
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return ExitCode::SUCCESS,
            _ = term.recv() => return ExitCode::SUCCESS,
            Some(()) = rx.recv() => {
                while rx.try_recv().is_ok() {}
                reload(input, state, mesh_file, options, keep, &mut current, logger, running).await;
            }
            _ = tick.tick() => {
                let mut restart_control_plane = false;
                for p in running.procs.iter_mut().filter(|p| p.exited.is_none()) {
                    if let Ok(Some(status)) = p.child.try_wait() {
                        p.exited = Some(status);
                        logger.info(&format!("✗ {} {} exited ({status})", p.workload, p.kind.tag()));
                        restart_control_plane |= p.kind == ProcKind::ControlPlane;
                    }
                }
                if restart_control_plane {
                    restart_the_control_plane(logger, running);
                }
            }
        }
    }
}

/// The control plane exited: the proxies keep serving their last config; start it again on
/// the same address with the same CA and token, and they resync.
fn restart_the_control_plane(logger: &Arc<Logger>, running: &mut Running) {
    let Some((argv, env)) = running.control_plane_cmd.clone() else {
        return;
    };
    let exe = match child_exe() {
        Ok(e) => e,
        Err(e) => {
            logger.info(&format!("✗ cannot restart the control plane: {e:#}"));
            return;
        }
    };
    match procs::spawn(
        logger,
        "control-plane",
        ProcKind::ControlPlane,
        &exe,
        &argv,
        &env,
        None,
    ) {
        Ok(p) => {
            logger.info("control plane restarted; proxies keep serving and resync");
            running.procs.push(p);
        }
        Err(e) => logger.info(&format!("✗ cannot restart the control plane: {e:#}")),
    }
}

/// A manifest change: analyze, refuse or apply.
#[allow(clippy::too_many_arguments)]
async fn reload(
    input: &Path,
    state: &Path,
    mesh_file: &Path,
    options: &PlanOptions,
    keep: &mut Allocations,
    current: &mut Plan,
    logger: &Arc<Logger>,
    running: &mut Running,
) {
    let t0 = Instant::now();
    let loaded = match load(input) {
        Ok(l) => l,
        Err(e) => {
            logger.info(&format!("✗ change refused, nothing changed: {e:#}"));
            return;
        }
    };
    let errors = loaded.errors();
    if !errors.is_empty() {
        let mut text = String::from("✗ change refused, nothing changed:");
        for m in errors {
            text.push_str(&format!("\n  {m}"));
        }
        logger.info(&text);
        return;
    }
    let mut next = match plan::plan(&loaded.set.resources, options, keep, &mut free_port) {
        Ok(p) => p,
        Err(e) => {
            logger.info(&format!("✗ change refused, nothing changed: {e}"));
            return;
        }
    };
    if let Err(e) = add_gateway_certs(&mut next, &loaded.set.resources, state) {
        logger.info(&format!("✗ change refused, nothing changed: {e:#}"));
        return;
    }
    // Gateway ports moved at start stay where they are.
    for w in &mut next.workloads {
        if let Some(old) = current.workloads.iter().find(|o| o.key() == w.key()) {
            for b in &mut w.gateway_binds {
                if let Some(ob) = old.gateway_binds.iter().find(|o| o.port == b.port) {
                    b.bind = ob.bind;
                }
            }
        }
    }
    if next.documents == current.documents {
        logger.info("change seen: nothing the proxies run is different");
        return;
    }
    for w in &next.workloads {
        if !current.workloads.iter().any(|o| o.key() == w.key()) {
            logger.info(&format!(
                "note: new workload {}: restart `trellis up` to run it",
                w.key()
            ));
        }
    }
    for w in &current.workloads {
        if !next.workloads.iter().any(|n| n.key() == w.key()) {
            logger.info(&format!(
                "note: workload {} is gone from the manifests: it keeps running until `trellis up` restarts",
                w.key()
            ));
        }
    }
    // The control plane's snapshot version before the change (to see it take it), on one
    // connection that the confirmation below polls.
    let mut cp_status = match running.control_plane {
        Some(cp) => crate::proxy_status::StatusClient::connect(&cp.to_string())
            .await
            .ok(),
        None => None,
    };
    let cp_version = match &mut cp_status {
        Some(c) => c.status().await.ok().map(|s| s.snapshot_version),
        None => None,
    };
    // What each proxy did with the change, from its log: applied, unchanged or rejected.
    let before: Vec<(usize, u64)> = running
        .procs
        .iter()
        .enumerate()
        .filter(|(_, p)| {
            matches!(p.kind, ProcKind::Gateway | ProcKind::Sidecar) && p.exited.is_none()
        })
        .map(|(i, p)| (i, p.reloads.borrow().0))
        .collect();
    if let Err(e) = write_atomic(mesh_file, &plan::render(&next.documents)) {
        logger.info(&format!("✗ cannot write {}: {e}", mesh_file.display()));
        return;
    }
    // Standalone proxies reload on SIGHUP; a control plane sees the file change and pushes.
    if running.control_plane.is_none() {
        for (i, _) in &before {
            procs::signal(running.procs[*i].pid, libc::SIGHUP);
        }
    }
    *current = next;
    let mut deadline = Instant::now() + Duration::from_secs(5);
    // A controlled proxy whose config does not change hears nothing: once the control plane
    // has the new snapshot and every proxy has ACKed (or NACKed) what it was sent, the
    // proxies that did not log a reload (give their log lines a moment) are unchanged.
    if let (Some(client), Some(v0)) = (&mut cp_status, cp_version) {
        while Instant::now() < deadline {
            if let Ok(st) = client.status().await {
                let settled = st.proxies.iter().all(|p| {
                    p.types.iter().all(|t| {
                        matches!(
                            t.state,
                            trellis_control::SyncState::Synced | trellis_control::SyncState::Nacked
                        )
                    })
                });
                if st.snapshot_version > v0 && settled {
                    deadline = Instant::now() + Duration::from_millis(300);
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let mut applied = Vec::new();
    let mut unchanged = Vec::new();
    let mut rejected = Vec::new();
    let mut pending = before;
    let mut done_at = t0.elapsed();
    while !pending.is_empty() && Instant::now() < deadline {
        pending.retain(|(i, seen)| {
            let p = &running.procs[*i];
            let (n, event) = p.reloads.borrow().clone();
            if n == *seen {
                return true;
            }
            done_at = t0.elapsed();
            match event {
                procs::Reload::Applied => applied.push(p.workload.clone()),
                procs::Reload::Unchanged => unchanged.push(p.workload.clone()),
                procs::Reload::Rejected(why) => rejected.push(format!("{}: {why}", p.workload)),
            }
            false
        });
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    unchanged.extend(
        pending
            .iter()
            .map(|(i, _)| running.procs[*i].workload.clone()),
    );
    let ms = done_at.as_millis();
    let short = |v: &[String]| {
        v.iter()
            .map(|w| w.rsplit('/').next().unwrap_or(w).to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut text = format!(
        "✔ change applied in {ms}ms: {}",
        if applied.is_empty() {
            "no proxy config changed".to_string()
        } else {
            format!("new config in {}", short(&applied))
        }
    );
    if !unchanged.is_empty() {
        text.push_str(&format!("; unchanged: {}", short(&unchanged)));
    }
    logger.info(&text);
    for r in rejected {
        logger.info(&format!(
            "✗ proxy refused the change (it keeps its last good config): {r}"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_resolve_to_overlays() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/alphintra/local");
        assert!(resolve_input(Some(&example), None)
            .unwrap()
            .ends_with("local/dev"));
        assert!(resolve_input(Some(&example), Some("prod"))
            .unwrap()
            .ends_with("local/prod"));
        assert!(resolve_input(Some(&example), Some("qa")).is_err());
        let infra = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../examples/alphintra/infra/kubernetes/istio");
        assert!(resolve_input(Some(&infra), Some("staging"))
            .unwrap()
            .ends_with("overlays/staging"));
    }

    #[test]
    fn commands_run_through_sh_with_this_binary() {
        let (prog, argv) = app_command(
            "trellis demo-app service-gateway --version stable",
            Path::new("/x y/trellis"),
        );
        assert_eq!(prog, PathBuf::from("/bin/sh"));
        assert_eq!(
            argv,
            [
                "-c",
                "exec '/x y/trellis' demo-app service-gateway --version stable"
            ]
        );
        let (_, argv) = app_command("./gradlew bootRun", Path::new("/t"));
        assert_eq!(argv[1], "exec ./gradlew bootRun");
    }

    #[test]
    fn the_example_watches_everything_it_reads() {
        let dev = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/alphintra/local/dev");
        let paths = watch_paths(&dev);
        let text: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        assert!(text.iter().any(|p| p.ends_with("overlays/dev")), "{text:?}");
        assert!(text.iter().any(|p| p.ends_with("base")), "{text:?}");
        assert!(text.iter().any(|p| p.ends_with("workloads")), "{text:?}");
        assert!(text.iter().any(|p| p.ends_with("tls.crt")), "{text:?}");
    }
}
