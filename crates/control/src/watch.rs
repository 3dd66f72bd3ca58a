//! Watching the config sources: directories (never single files: editors and ConfigMaps
//! replace files by rename), debounced with notify-debouncer-full; kustomize overlays are
//! watched together with the bases, patches and generator files they reference.
//!
//! The same approach as the standalone proxy's reloader (`trellis_proxy::reload`), kept here
//! so the control plane does not depend on the data plane.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::RecursiveMode;
use notify_debouncer_full::{new_debouncer, DebounceEventResult, Debouncer, RecommendedCache};
use tokio::sync::mpsc;

use crate::source::Sources;

/// Keeps the watch alive; dropping it stops watching.
pub(crate) type Watcher = Debouncer<notify::RecommendedWatcher, RecommendedCache>;

/// Every path whose change should trigger a reload.
pub(crate) fn watch_paths(s: &Sources) -> Vec<PathBuf> {
    let mut v = trellis_api::kustomize::watch_paths(s.inputs.iter().chain(&s.kustomize));
    v.extend(s.mesh_config.iter().cloned());
    v
}

#[derive(Clone, Debug)]
enum Target {
    Tree(PathBuf),
    File(PathBuf),
}

impl Target {
    fn new(p: &Path) -> Option<Self> {
        if p.as_os_str() == "-" {
            return None;
        }
        let p = std::path::absolute(p).ok()?;
        Some(if p.is_dir() {
            Target::Tree(p)
        } else {
            Target::File(p)
        })
    }

    fn covers(&self, changed: &Path) -> bool {
        match self {
            Target::Tree(dir) => changed.starts_with(dir),
            Target::File(f) => {
                changed == f
                    || (changed.parent() == f.parent()
                        && changed
                            .file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| n.starts_with("..")))
            }
        }
    }
}

/// Starts watching `sources`; every relevant (debounced) change sends on `tx`.
pub(crate) fn watch(
    sources: &Sources,
    debounce: Duration,
    tx: mpsc::UnboundedSender<()>,
) -> std::io::Result<Watcher> {
    let targets: Vec<Target> = watch_paths(sources)
        .iter()
        .filter_map(|p| Target::new(p))
        .collect();
    let io = |e: notify::Error| std::io::Error::other(e.to_string());
    let filter = targets.clone();
    let mut debouncer = new_debouncer(debounce, None, move |res: DebounceEventResult| match res {
        Ok(events) => {
            let relevant = events.iter().any(|e| {
                !matches!(e.kind, notify::EventKind::Access(_))
                    && e.paths.iter().any(|p| filter.iter().any(|t| t.covers(p)))
            });
            if relevant {
                let _ = tx.send(());
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
            Target::Tree(d) => (d.clone(), RecursiveMode::Recursive),
            Target::File(f) => match f.parent() {
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
