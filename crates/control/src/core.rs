//! State shared by the gRPC service, the debug server, the watcher and the handle: the
//! snapshot in force (published on a watch channel), the last rejected change, connected
//! proxies, metrics and the CA. Owns `reload`: load -> verdict -> next snapshot -> publish.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use trellis_identity::CertificateAuthority;
use trellis_protocol::ConfigType;

use crate::metrics::Metrics;
use crate::snapshot::Snapshot;
use crate::source::{self, ConfigError, ReadCache, RejectedMessage, Sources};
use crate::status::{ControlPlaneStatus, ProxyStatus, TypeTrack};

pub(crate) struct ConnState {
    pub status: ProxyStatus,
    /// RESOURCES, ENDPOINTS.
    pub types: [TypeTrack; 2],
}

pub(crate) struct Core {
    pub id: String,
    pub sources: Sources,
    pub snapshot: watch::Sender<Arc<Snapshot>>,
    pub last_error: Mutex<Option<ConfigError>>,
    /// Reloads run one at a time.
    pub reload_lock: tokio::sync::Mutex<()>,
    /// The files of the snapshot in force, as read (see `source`).
    pub read_cache: Mutex<ReadCache>,
    pub conns: Mutex<BTreeMap<u64, ConnState>>,
    pub next_conn: AtomicU64,
    pub metrics: Metrics,
    pub ca: Option<Arc<CertificateAuthority>>,
    pub token: Option<String>,
    pub shutdown: watch::Sender<bool>,
}

impl Core {
    pub fn current(&self) -> Arc<Snapshot> {
        self.snapshot.borrow().clone()
    }

    pub fn last_error(&self) -> Option<ConfigError> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_last_error(&self, e: Option<ConfigError>) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = e;
    }

    /// Reads the sources again and publishes the result if it is accepted and changes
    /// something. Returns the version in force.
    pub async fn reload(self: &Arc<Self>, reason: &str) -> Result<u64, ConfigError> {
        let _one = self.reload_lock.lock().await;
        let sources = self.sources.clone();
        let current = self.current();
        let cache = std::mem::take(&mut *self.read_cache.lock().unwrap_or_else(|p| p.into_inner()));
        let started = std::time::Instant::now();
        let read = tokio::task::spawn_blocking(move || {
            let loaded = source::load_with(&sources, &cache);
            (loaded, cache)
        });
        let (mut loaded, mut cache) = match read.await {
            Ok(l) => l,
            Err(e) => {
                let err = ConfigError {
                    at: source::unix_now(),
                    serving_version: current.version,
                    messages: vec![RejectedMessage {
                        code: String::new(),
                        level: "Error".into(),
                        resource: String::new(),
                        reference: String::new(),
                        text: format!("config loader failed: {e}"),
                    }],
                };
                self.reject(&err);
                return Err(err);
            }
        };
        let verdict = loaded.verdict(Some(&current.baseline_errors), current.version);
        if verdict.is_ok() {
            cache.commit(&mut loaded);
        }
        *self.read_cache.lock().unwrap_or_else(|p| p.into_inner()) = cache;
        if let Err(e) = verdict {
            self.reject(&e);
            return Err(e);
        }
        self.set_last_error(None);
        let parsed_files = loaded.parsed_files;
        match Snapshot::next(&current, loaded) {
            None => {
                tracing::info!(
                    version = current.version,
                    parsed_files,
                    ms = started.elapsed().as_millis() as u64,
                    "config unchanged ({reason})"
                );
                Ok(current.version)
            }
            Some(next) => {
                let v = next.version;
                tracing::info!(
                    version = v,
                    resources_changed = next.changes.resources.len(),
                    endpoints_changed = next.changes.endpoints.len(),
                    mesh_changed = next.changes.mesh_changed,
                    parsed_files,
                    ms = started.elapsed().as_millis() as u64,
                    "config accepted ({reason})"
                );
                self.metrics.reloads.inc();
                self.metrics.snapshot_version.set(v as i64);
                self.snapshot.send_replace(Arc::new(next));
                Ok(v)
            }
        }
    }

    fn reject(&self, e: &ConfigError) {
        for m in &e.messages {
            tracing::error!(code = %m.code, location = %m.reference, "config change rejected: {m}");
        }
        tracing::error!(
            version = e.serving_version,
            "config change rejected: version {} stays in force",
            e.serving_version
        );
        self.metrics.config_errors.inc();
        self.set_last_error(Some(e.clone()));
    }

    pub fn status(&self) -> ControlPlaneStatus {
        let snap = self.current();
        let mut proxies: Vec<ProxyStatus> = self
            .conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|c| {
                let mut s = c.status.clone();
                s.types = ConfigType::ALL
                    .iter()
                    .zip(&c.types)
                    .map(|(ty, t)| t.to_status(ty.name()))
                    .collect();
                s
            })
            .collect();
        proxies.sort_by(|a, b| a.id.cmp(&b.id).then(a.connected_at.cmp(&b.connected_at)));
        ControlPlaneStatus {
            id: self.id.clone(),
            trellis_version: env!("CARGO_PKG_VERSION").to_string(),
            snapshot_version: snap.version,
            resources: ConfigType::ALL
                .iter()
                .map(|t| (t.name().to_string(), snap.count(*t)))
                .collect(),
            last_error: self.last_error(),
            proxies,
        }
    }
}

/// Resolves when `rx` turns true or its sender is gone.
pub(crate) async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}
