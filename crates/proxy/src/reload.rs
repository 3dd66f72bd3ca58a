//! Standalone mode: the proxy's config comes from manifests on disk (files, directories,
//! kustomize), compiled here with `trellis_model::compile`, and is reloaded on SIGHUP and
//! whenever an input changes.
//!
//! A reload is: load (schema errors reject) -> find the workload -> compile -> read file
//! secrets -> skip if nothing changed -> `RunningProxy::apply` (which validates TLS and
//! listeners). Any failure is logged as `config rejected: <reason>` and recorded for
//! `/server_info`; the config in force keeps serving.
//!
//! Watching: directories, never single files (editors and Kubernetes ConfigMaps replace files
//! by rename), debounced; kustomize directories are watched with the bases they reference.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::RecursiveMode;
use notify_debouncer_full::{new_debouncer, DebounceEventResult, Debouncer, RecommendedCache};
use tokio::sync::mpsc;
use trellis_api::load::{LoadOptions, ResourceSet};
use trellis_api::MeshConfig;
use trellis_model::compile::{compile, find_target};
use trellis_model::config::ProxyConfig;

use crate::runtime::RunningProxy;
use crate::tls::merge_secret_files;

/// A config that could not be loaded or compiled.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", problems.join("; "))]
pub struct LoadError {
    /// Each problem, located (`file:line:col: ...`) when it comes from a manifest.
    pub problems: Vec<String>,
}

impl LoadError {
    pub fn new(problem: impl Into<String>) -> Self {
        LoadError {
            problems: vec![problem.into()],
        }
    }
}

/// Produces the proxy's config; called at start and on every reload (on a blocking thread).
pub trait ConfigLoader: Send + Sync + 'static {
    /// Loads and compiles the config, stamped with `version`.
    fn load(&self, version: &str) -> Result<ProxyConfig, LoadError>;
    /// Files and directories whose changes trigger a reload.
    fn watch_paths(&self) -> Vec<PathBuf>;
}

/// Manifests on disk and the workload whose proxy this is (`trellis proxy`).
#[derive(Clone, Debug)]
pub struct ManifestSource {
    /// Files or directories (recursive; a directory holding a kustomization is rendered).
    pub paths: Vec<PathBuf>,
    /// Kustomize directories (`-k`).
    pub kustomize: Vec<PathBuf>,
    /// MeshConfig file; otherwise the `istio` ConfigMap among the manifests, otherwise defaults.
    pub mesh_config_file: Option<PathBuf>,
    /// Namespace of namespaced objects that name none.
    pub default_namespace: String,
    pub workload_namespace: String,
    pub workload_name: String,
}

impl ManifestSource {
    /// Reads and validates the manifests. Error diagnostics reject; warnings are logged.
    pub fn load_resources(&self) -> Result<(ResourceSet, MeshConfig), LoadError> {
        let mut mesh = match &self.mesh_config_file {
            Some(f) => MeshConfig::from_file(f)
                .map_err(|d| LoadError::new(format!("invalid mesh config: {d}")))?,
            None => MeshConfig::default(),
        };
        let opts = LoadOptions {
            default_namespace: self.default_namespace.clone(),
            mesh: mesh.clone(),
        };
        let mut set = ResourceSet::default();
        for p in &self.paths {
            set.add_path(p, &opts);
        }
        for k in &self.kustomize {
            set.add_kustomization(k, &opts);
        }
        let errors: Vec<String> = set
            .diagnostics
            .iter()
            .filter(|d| d.is_error())
            .map(|d| d.to_string())
            .collect();
        if !errors.is_empty() {
            return Err(LoadError { problems: errors });
        }
        for d in set.diagnostics.iter().filter(|d| !d.is_error()) {
            tracing::warn!("{d}");
        }
        for u in &set.unrecognized {
            tracing::debug!("skipped object of a kind Trellis does not model: {u:?}");
        }
        if self.mesh_config_file.is_none() {
            match MeshConfig::from_resources(&set.resources, &mesh.root_namespace) {
                None => {}
                Some(Ok(m)) => mesh = m,
                Some(Err(d)) => return Err(LoadError::new(format!("invalid mesh config: {d}"))),
            }
        }
        Ok((set, mesh))
    }
}

impl ConfigLoader for ManifestSource {
    fn load(&self, version: &str) -> Result<ProxyConfig, LoadError> {
        let (set, mesh) = self.load_resources()?;
        let target = find_target(
            &set.resources,
            &self.workload_namespace,
            &self.workload_name,
        )
        .map_err(|e| LoadError::new(e.to_string()))?;
        compile(&set.resources, &mesh, &target, version)
            .map_err(|e| LoadError::new(format!("compile failed: {e}")))
    }

    fn watch_paths(&self) -> Vec<PathBuf> {
        let mut v = trellis_api::kustomize::watch_paths(self.paths.iter().chain(&self.kustomize));
        v.extend(self.mesh_config_file.iter().cloned());
        v
    }
}

/// What a watch covers.
#[derive(Clone, Debug, PartialEq, Eq)]
enum WatchTarget {
    /// A directory and everything below it.
    Tree(PathBuf),
    /// One file, watched through its directory.
    File(PathBuf),
}

impl WatchTarget {
    fn new(p: &Path) -> Option<Self> {
        if p.as_os_str() == "-" {
            return None;
        }
        let p = std::path::absolute(p).ok()?;
        Some(if p.is_dir() {
            WatchTarget::Tree(p)
        } else {
            WatchTarget::File(p)
        })
    }

    fn covers(&self, changed: &Path) -> bool {
        match self {
            WatchTarget::Tree(dir) => changed.starts_with(dir),
            WatchTarget::File(f) => {
                changed == f
                    // Kubernetes ConfigMap volumes swap a `..data` symlink next to the file.
                    || (changed.parent() == f.parent()
                        && changed
                            .file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| n.starts_with("..")))
            }
        }
    }
}

/// How the reloader is triggered.
#[derive(Clone, Debug)]
pub struct ReloadOptions {
    /// Watch the loader's paths (and `extra_paths`) for changes.
    pub watch_files: bool,
    /// Reload on SIGHUP.
    pub sighup: bool,
    pub debounce: Duration,
    /// More files to watch (secret files, for example).
    pub extra_paths: Vec<PathBuf>,
    /// Version number of the config in force; reloads count up from it.
    pub current_version: u64,
}

impl Default for ReloadOptions {
    fn default() -> Self {
        ReloadOptions {
            watch_files: true,
            sighup: true,
            debounce: Duration::from_millis(200),
            extra_paths: Vec::new(),
            current_version: 1,
        }
    }
}

/// Reloads a running proxy's config from its loader. Dropping it stops watching.
pub struct Reloader {
    tx: mpsc::UnboundedSender<&'static str>,
    _watcher: Option<Debouncer<notify::RecommendedWatcher, RecommendedCache>>,
    task: tokio::task::JoinHandle<()>,
}

impl Reloader {
    /// Starts watching (and listening for SIGHUP). Must be called within a Tokio runtime.
    pub fn spawn<L: ConfigLoader>(
        loader: Arc<L>,
        proxy: RunningProxy,
        options: ReloadOptions,
    ) -> std::io::Result<Reloader> {
        let (tx, rx) = mpsc::unbounded_channel();
        let watcher = if options.watch_files {
            let targets: Vec<WatchTarget> = loader
                .watch_paths()
                .iter()
                .chain(&options.extra_paths)
                .filter_map(|p| WatchTarget::new(p))
                .collect();
            Some(watch(targets, options.debounce, tx.clone())?)
        } else {
            None
        };
        #[cfg(unix)]
        let sighup = if options.sighup {
            Some(tokio::signal::unix::signal(
                tokio::signal::unix::SignalKind::hangup(),
            )?)
        } else {
            None
        };
        #[cfg(not(unix))]
        let sighup: Option<()> = None;
        let fingerprint = config_fingerprint(&proxy.config());
        let task = tokio::spawn(run(
            loader,
            proxy,
            rx,
            sighup,
            options.current_version,
            fingerprint,
        ));
        Ok(Reloader {
            tx,
            _watcher: watcher,
            task,
        })
    }

    /// Asks for a reload now (as SIGHUP does).
    pub fn trigger(&self) {
        let _ = self.tx.send("reload requested");
    }
}

impl Drop for Reloader {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn watch(
    targets: Vec<WatchTarget>,
    debounce: Duration,
    tx: mpsc::UnboundedSender<&'static str>,
) -> std::io::Result<Debouncer<notify::RecommendedWatcher, RecommendedCache>> {
    let io = |e: notify::Error| std::io::Error::other(e.to_string());
    let filter = targets.clone();
    let mut debouncer = new_debouncer(debounce, None, move |res: DebounceEventResult| match res {
        Ok(events) => {
            let relevant = events.iter().any(|e| {
                !matches!(e.kind, notify::EventKind::Access(_))
                    && e.paths.iter().any(|p| filter.iter().any(|t| t.covers(p)))
            });
            if relevant {
                let _ = tx.send("file change");
            }
        }
        Err(errors) => {
            for e in errors {
                tracing::warn!("file watch error: {e}");
            }
        }
    })
    .map_err(io)?;
    let mut watched = HashSet::new();
    for t in &targets {
        let (dir, mode) = match t {
            WatchTarget::Tree(d) => (d.clone(), RecursiveMode::Recursive),
            WatchTarget::File(f) => match f.parent() {
                Some(p) => (p.to_path_buf(), RecursiveMode::NonRecursive),
                None => continue,
            },
        };
        if watched.insert((dir.clone(), mode == RecursiveMode::Recursive)) {
            debouncer.watch(&dir, mode).map_err(io)?;
            tracing::debug!(dir = %dir.display(), ?mode, "watching for config changes");
        }
    }
    Ok(debouncer)
}

#[cfg(unix)]
type Hangup = tokio::signal::unix::Signal;
#[cfg(not(unix))]
type Hangup = ();

async fn hangup(sig: &mut Option<Hangup>) {
    match sig {
        #[cfg(unix)]
        Some(s) => {
            if s.recv().await.is_none() {
                std::future::pending::<()>().await
            }
        }
        _ => std::future::pending().await,
    }
}

async fn run<L: ConfigLoader>(
    loader: Arc<L>,
    proxy: RunningProxy,
    mut rx: mpsc::UnboundedReceiver<&'static str>,
    mut sighup: Option<Hangup>,
    mut version: u64,
    mut fingerprint: u64,
) {
    loop {
        let reason = tokio::select! {
            _ = proxy.shutting_down() => return,
            r = rx.recv() => match r {
                Some(r) => r,
                None => return,
            },
            _ = hangup(&mut sighup) => "SIGHUP",
        };
        while rx.try_recv().is_ok() {}
        let candidate = (version + 1).to_string();
        tracing::info!(version = %candidate, "reloading config ({reason})");
        let l = loader.clone();
        let files = proxy.options().secret_files.clone();
        let v = candidate.clone();
        let loaded = tokio::task::spawn_blocking(move || {
            let mut config = l.load(&v)?;
            config.version = v;
            merge_secret_files(&mut config.secrets, &files)
                .map_err(|problems| LoadError { problems })?;
            Ok::<_, LoadError>(config)
        })
        .await
        .unwrap_or_else(|e| Err(LoadError::new(format!("config loader failed: {e}"))));
        version += 1;
        let config = match loaded {
            Ok(c) => c,
            Err(e) => {
                proxy.report_rejected(&candidate, &e.to_string());
                continue;
            }
        };
        let fp = config_fingerprint(&config);
        if fp == fingerprint {
            version -= 1;
            proxy.clear_last_error();
            tracing::info!("config unchanged ({reason}): version {version} stays in force");
            continue;
        }
        if proxy.apply(config).is_ok() {
            fingerprint = fp;
        }
    }
}

/// Identifies a config's content, ignoring its version: equal fingerprints, nothing to apply.
pub fn config_fingerprint(config: &ProxyConfig) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    match serde_json::to_value(config) {
        Ok(mut v) => {
            if let Some(o) = v.as_object_mut() {
                o.remove("version");
            }
            v.to_string().hash(&mut h);
        }
        Err(_) => config.version.hash(&mut h), // never equal to a real one by accident
    }
    for (name, s) in &config.secrets {
        (name, &s.cert_chain_pem, &s.private_key_pem, &s.ca_pem).hash(&mut h);
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_targets_cover_the_file_and_configmap_swaps_only() {
        let t = WatchTarget::File("/etc/trellis/gw.yaml".into());
        assert!(t.covers(Path::new("/etc/trellis/gw.yaml")));
        assert!(t.covers(Path::new("/etc/trellis/..data")));
        assert!(!t.covers(Path::new("/etc/trellis/other.yaml")));
        assert!(!t.covers(Path::new("/etc/other/gw.yaml")));
        let d = WatchTarget::Tree("/cfg".into());
        assert!(d.covers(Path::new("/cfg/a/b.yaml")));
        assert!(!d.covers(Path::new("/cfgx/a.yaml")));
    }

    #[test]
    fn kustomize_bases_are_watched() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::create_dir_all(root.join("base")).unwrap();
        std::fs::create_dir_all(root.join("overlays/dev")).unwrap();
        std::fs::create_dir_all(root.join("shared")).unwrap();
        std::fs::write(root.join("shared/patch.yaml"), "x: 1\n").unwrap();
        std::fs::write(
            root.join("base/kustomization.yaml"),
            "resources: [gw.yaml]\n",
        )
        .unwrap();
        std::fs::write(
            root.join("overlays/dev/kustomization.yaml"),
            "resources:\n- ../../base\n- https://example.com/x.yaml\npatches:\n- path: ../../shared/patch.yaml\n",
        )
        .unwrap();
        let src = ManifestSource {
            paths: vec![],
            kustomize: vec![root.join("overlays/dev")],
            mesh_config_file: None,
            default_namespace: "default".into(),
            workload_namespace: "a".into(),
            workload_name: "b".into(),
        };
        let paths = src.watch_paths();
        assert!(paths.contains(&root.join("overlays/dev")), "{paths:?}");
        assert!(
            paths.contains(&root.join("overlays/dev/../../base")),
            "{paths:?}"
        );
        assert!(
            paths.contains(&root.join("overlays/dev/../../shared/patch.yaml")),
            "{paths:?}"
        );
        assert_eq!(paths.len(), 3, "{paths:?}");
    }
}
