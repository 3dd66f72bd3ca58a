//! Child processes of `trellis up`: spawning (each in a process group of its own, killed with
//! its parent if `up` dies), prefixed and colored log lines, staged shutdown.

use std::collections::HashMap;
use std::io::{IsTerminal as _, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;

/// What a process is, for shutdown order and display.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum ProcKind {
    /// Stopped first: stops accepting new traffic.
    Gateway,
    Sidecar,
    App,
    StandIn,
    /// Stopped last: proxies keep their config without it, but stop before it anyway.
    ControlPlane,
}

impl ProcKind {
    pub fn tag(self) -> &'static str {
        match self {
            ProcKind::Gateway => "gateway",
            ProcKind::Sidecar => "proxy",
            ProcKind::App => "app",
            ProcKind::StandIn => "stand-in",
            ProcKind::ControlPlane => "control-plane",
        }
    }
}

const COLORS: &[&str] = &[
    "\x1b[36m", "\x1b[33m", "\x1b[35m", "\x1b[32m", "\x1b[34m", "\x1b[91m", "\x1b[96m", "\x1b[93m",
    "\x1b[95m", "\x1b[92m",
];

/// Where log lines go: prefixed with the workload (and process kind), colored per workload on
/// a terminal, optionally only one workload's.
pub struct Logger {
    color: bool,
    follow: Option<String>,
    width: usize,
    colors: Mutex<HashMap<String, &'static str>>,
    /// Every line of a workload also goes to `<dir>/<name>.log`.
    dir: Option<PathBuf>,
    files: Mutex<HashMap<String, std::fs::File>>,
}

impl Logger {
    pub fn new(follow: Option<String>, width: usize, dir: Option<PathBuf>) -> Arc<Logger> {
        let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        if let Some(d) = &dir {
            let _ = std::fs::create_dir_all(d);
        }
        Arc::new(Logger {
            color,
            follow,
            width,
            colors: Mutex::new(HashMap::new()),
            dir,
            files: Mutex::new(HashMap::new()),
        })
    }

    /// The file a workload's lines are copied to.
    pub fn file_of(&self, workload: &str) -> Option<PathBuf> {
        let short = workload.rsplit('/').next().unwrap_or(workload);
        self.dir.as_ref().map(|d| d.join(format!("{short}.log")))
    }

    fn to_file(&self, workload: &str, kind: ProcKind, text: &str) {
        let Some(path) = self.file_of(workload) else {
            return;
        };
        let mut files = self.files.lock().unwrap_or_else(|p| p.into_inner());
        if !files.contains_key(workload) {
            match std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
            {
                Ok(f) => {
                    files.insert(workload.to_string(), f);
                }
                Err(_) => return,
            }
        }
        if let Some(f) = files.get_mut(workload) {
            let _ = writeln!(f, "{:<8} | {text}", kind.tag());
        }
    }

    pub fn colored(&self) -> bool {
        self.color
    }

    fn color_of(&self, workload: &str) -> &'static str {
        let mut m = self.colors.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.len();
        m.entry(workload.to_string())
            .or_insert(COLORS[n % COLORS.len()])
    }

    /// Whether lines of `workload` are shown.
    pub fn shows(&self, workload: &str) -> bool {
        self.follow
            .as_deref()
            .is_none_or(|f| f == workload || workload.rsplit('/').next() == Some(f))
    }

    /// One line of a child's output.
    pub fn line(&self, workload: &str, kind: ProcKind, text: &str) {
        self.to_file(workload, kind, text);
        if !self.shows(workload) {
            return;
        }
        let short = workload.rsplit('/').next().unwrap_or(workload);
        let label = format!("{short} {}", kind.tag());
        let mut out = std::io::stdout().lock();
        let _ = if self.color {
            let c = self.color_of(workload);
            writeln!(
                out,
                "{c}{label:<w$}\x1b[0m \x1b[2m|\x1b[0m {text}",
                w = self.width
            )
        } else {
            writeln!(out, "{label:<w$} | {text}", w = self.width)
        };
    }

    /// A message of `up` itself.
    pub fn info(&self, text: &str) {
        let mut out = std::io::stdout().lock();
        let _ = if self.color {
            writeln!(out, "\x1b[1m{text}\x1b[0m")
        } else {
            writeln!(out, "{text}")
        };
        let _ = out.flush();
    }
}

/// One running child.
pub struct Proc {
    /// `ns/name` of the workload (or the stand-in's host).
    pub workload: String,
    pub kind: ProcKind,
    pub pid: u32,
    pub child: Child,
    /// The admin address a proxy logs once it is up (`admin listening on ...`).
    pub admin: watch::Receiver<Option<SocketAddr>>,
    /// The gRPC address a control plane logs once it is ready (`... gRPC on ...`).
    pub grpc: watch::Receiver<Option<SocketAddr>>,
    /// A proxy's config events, counted: what it did with the last config it was given.
    pub reloads: watch::Receiver<(u64, Reload)>,
    pub exited: Option<ExitStatus>,
    /// What asks it to stop (SIGTERM; PostgreSQL's fast shutdown is SIGINT).
    pub stop_signal: i32,
    /// A proxy said it has no workload certificate (its mTLS chains cannot work).
    pub no_identity: Arc<std::sync::atomic::AtomicBool>,
}

/// Starts `program args` with `env`, its output going to `logger`.
pub fn spawn(
    logger: &Arc<Logger>,
    workload: &str,
    kind: ProcKind,
    program: &Path,
    args: &[String],
    env: &[(String, String)],
    user: Option<(u32, u32)>,
) -> std::io::Result<Proc> {
    let mut cmd = Command::new(program);
    if let Some((uid, gid)) = user {
        cmd.uid(uid).gid(gid);
    }
    cmd.args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(false);
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            // Die with `up` (SIGTERM drains), whatever killed it.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| {
        std::io::Error::new(e.kind(), format!("cannot start {}: {e}", program.display()))
    })?;
    let pid = child.id().unwrap_or(0);
    let (admin_tx, admin) = watch::channel(None);
    let (grpc_tx, grpc) = watch::channel(None);
    let (reload_tx, reloads) = watch::channel((0, Reload::Unchanged));
    let no_identity = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let found = Arc::new(Found {
        admin: admin_tx,
        grpc: grpc_tx,
        reload: reload_tx,
        no_identity: no_identity.clone(),
    });
    if let Some(out) = child.stdout.take() {
        pump(
            logger.clone(),
            workload.to_string(),
            kind,
            out,
            found.clone(),
        );
    }
    if let Some(err) = child.stderr.take() {
        pump(logger.clone(), workload.to_string(), kind, err, found);
    }
    Ok(Proc {
        workload: workload.to_string(),
        kind,
        pid,
        child,
        admin,
        grpc,
        reloads,
        exited: None,
        stop_signal: libc::SIGTERM,
        no_identity,
    })
}

/// Addresses a child announces in its log.
struct Found {
    admin: watch::Sender<Option<SocketAddr>>,
    grpc: watch::Sender<Option<SocketAddr>>,
    reload: watch::Sender<(u64, Reload)>,
    no_identity: Arc<std::sync::atomic::AtomicBool>,
}

/// What a proxy did with a config (from its log).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reload {
    Applied,
    Unchanged,
    Rejected(String),
}

fn reload_event(line: &str) -> Option<Reload> {
    if line.contains("config applied") {
        Some(Reload::Applied)
    } else if line.contains("config unchanged") {
        Some(Reload::Unchanged)
    } else {
        line.split_once("config rejected: ")
            .map(|(_, why)| Reload::Rejected(why.trim().to_string()))
    }
}

/// The address right after `marker` in `line`.
fn address_after(line: &str, marker: &str) -> Option<SocketAddr> {
    let rest = line.split(marker).nth(1)?;
    rest.split(|c: char| c.is_whitespace() || c == ',')
        .next()?
        .parse()
        .ok()
}

fn pump<R: tokio::io::AsyncRead + Unpin + Send + 'static>(
    logger: Arc<Logger>,
    workload: String,
    kind: ProcKind,
    stream: R,
    found: Arc<Found>,
) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(a) = address_after(&line, "admin listening on ") {
                let _ = found.admin.send(Some(a));
            }
            if let Some(a) = address_after(&line, "gRPC on ") {
                let _ = found.grpc.send(Some(a));
            }
            if matches!(kind, ProcKind::Gateway | ProcKind::Sidecar) {
                if line.contains("no mesh identity") {
                    found
                        .no_identity
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                }
                if let Some(e) = reload_event(&line) {
                    found.reload.send_modify(|(n, last)| {
                        *n += 1;
                        *last = e;
                    });
                }
            }
            logger.line(&workload, kind, &line);
        }
    });
}

/// Sends `signal` to the process group of `pid`.
pub fn signal_group(pid: u32, signal: i32) {
    if let Ok(pid) = i32::try_from(pid) {
        if pid > 0 {
            // SAFETY: plain syscall; an exited group only yields ESRCH.
            unsafe {
                libc::kill(-pid, signal);
            }
        }
    }
}

/// Sends `signal` to `pid` itself.
pub fn signal(pid: u32, signal: i32) {
    if let Ok(pid) = i32::try_from(pid) {
        if pid > 0 {
            // SAFETY: plain syscall.
            unsafe {
                libc::kill(pid, signal);
            }
        }
    }
}

/// Stops every process: gateways first (they stop taking traffic and drain), then sidecars,
/// then apps, then stand-ins; each stage's processes get their stop signal (the process
/// itself, so a server shuts its workers down in order) and `grace` to exit, then SIGKILL to
/// their process group. Finally every process group is killed, so nothing a child started is
/// left behind.
pub async fn stop_all(procs: &mut [Proc], grace: Duration) {
    let mut kinds: Vec<ProcKind> = procs.iter().map(|p| p.kind).collect();
    kinds.sort();
    kinds.dedup();
    for kind in kinds {
        for p in procs
            .iter()
            .filter(|p| p.kind == kind && p.exited.is_none())
        {
            signal(p.pid, p.stop_signal);
        }
        for p in procs
            .iter_mut()
            .filter(|p| p.kind == kind && p.exited.is_none())
        {
            match tokio::time::timeout(grace, p.child.wait()).await {
                Ok(Ok(s)) => p.exited = Some(s),
                _ => {
                    signal_group(p.pid, libc::SIGKILL);
                    if let Ok(s) = p.child.wait().await {
                        p.exited = Some(s);
                    }
                }
            }
        }
    }
    for p in procs.iter() {
        signal_group(p.pid, libc::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn announced_addresses() {
        let l = "2026-01-01T00:00:00Z  INFO trellis::control_plane: control plane cp-1 ready: gRPC on 127.0.0.1:4000, metrics on 127.0.0.1:4001";
        assert_eq!(
            super::address_after(l, "gRPC on "),
            Some("127.0.0.1:4000".parse().unwrap())
        );
        let l = "INFO trellis::proxy: admin listening on 127.0.0.1:15000";
        assert_eq!(
            super::address_after(l, "admin listening on "),
            Some("127.0.0.1:15000".parse().unwrap())
        );
        assert_eq!(super::address_after("nothing", "gRPC on "), None);
    }
}
