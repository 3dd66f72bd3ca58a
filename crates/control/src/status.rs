//! Sync status: per connected proxy and config type, what was sent, what was ACKed or NACKed,
//! and which resource changes the proxy has not confirmed. Serialized as the JSON that
//! `trellis proxy-status` reads (gRPC `GetStatus`, HTTP `/debug/syncz`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::source::ConfigError;

/// Everything `proxy-status` shows.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ControlPlaneStatus {
    /// The control plane's id (the CONTROL PLANE column).
    pub id: String,
    pub trellis_version: String,
    /// Version of the snapshot in force.
    pub snapshot_version: u64,
    /// Resources of the snapshot per type.
    pub resources: BTreeMap<String, usize>,
    /// The last rejected change, cleared when a change is accepted (or the inputs go back to
    /// the snapshot in force).
    pub last_error: Option<ConfigError>,
    pub proxies: Vec<ProxyStatus>,
}

/// One connected proxy.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ProxyStatus {
    /// `name.namespace`.
    pub id: String,
    pub workload_namespace: String,
    pub workload_name: String,
    /// `local` or a cluster name.
    pub cluster: String,
    pub proxy_version: String,
    /// The proxy's admin server (`proxy-config` reads it), when it said.
    pub admin_addr: String,
    /// Peer address of the stream.
    pub peer: String,
    /// Unix seconds.
    pub connected_at: u64,
    /// `gateway` or `sidecar` (as scoping decided), `unknown` when its workload is missing.
    pub proxy_kind: String,
    pub types: Vec<TypeStatus>,
}

/// istioctl's per-type states.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncState {
    #[serde(rename = "SYNCED")]
    Synced,
    /// Sent, not (yet) ACKed.
    #[serde(rename = "STALE")]
    Stale,
    #[serde(rename = "NOT SENT")]
    NotSent,
    /// The latest version sent was NACKed.
    #[serde(rename = "NACKED")]
    Nacked,
}

impl SyncState {
    pub fn as_str(self) -> &'static str {
        match self {
            SyncState::Synced => "SYNCED",
            SyncState::Stale => "STALE",
            SyncState::NotSent => "NOT SENT",
            SyncState::Nacked => "NACKED",
        }
    }
}

/// One config type of one proxy.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TypeStatus {
    /// `RESOURCES` or `ENDPOINTS`.
    #[serde(rename = "type")]
    pub type_name: String,
    pub state: SyncState,
    pub sent_version: Option<String>,
    pub acked_version: Option<String>,
    pub nack: Option<NackInfo>,
    /// Resources of this type the proxy holds (as sent).
    pub resources: usize,
    /// Updates sent to this proxy.
    pub pushes: u64,
    /// Changes sent and not ACKed: what the proxy received but does not run.
    pub pending: Vec<PendingChange>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NackInfo {
    pub version: String,
    pub error: String,
    /// Unix seconds.
    pub at: u64,
}

/// One resource change of an unconfirmed update.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PendingChange {
    pub version: String,
    /// `added`, `updated`, `removed`.
    pub change: String,
    /// `Kind namespace/name`.
    pub resource: String,
    /// `file:line` where it was read (empty for removals).
    pub location: String,
}

/// Tracking of one type of one connection.
#[derive(Clone, Debug, Default)]
pub(crate) struct TypeTrack {
    pub sent_version: Option<u64>,
    pub acked_version: Option<u64>,
    pub nack: Option<NackInfo>,
    pub nack_version: Option<u64>,
    pub resources: usize,
    pub pushes: u64,
    /// Unconfirmed updates, oldest first (bounded).
    pub pending: Vec<(u64, Vec<PendingChange>)>,
}

/// Most unconfirmed updates kept for display per type.
const MAX_PENDING_UPDATES: usize = 16;
/// Most changes listed per unconfirmed update.
pub(crate) const MAX_PENDING_CHANGES: usize = 200;

impl TypeTrack {
    pub fn state(&self) -> SyncState {
        match (self.sent_version, self.acked_version) {
            (None, _) => SyncState::NotSent,
            (Some(s), _) if self.nack_version == Some(s) => SyncState::Nacked,
            (Some(s), Some(a)) if a >= s => SyncState::Synced,
            _ => SyncState::Stale,
        }
    }

    pub fn sent(&mut self, version: u64, resources: usize, mut changes: Vec<PendingChange>) {
        self.sent_version = Some(version);
        self.resources = resources;
        self.pushes += 1;
        changes.truncate(MAX_PENDING_CHANGES);
        self.pending.push((version, changes));
        if self.pending.len() > MAX_PENDING_UPDATES {
            self.pending.remove(0);
        }
    }

    pub fn acked(&mut self, version: u64) {
        if self.acked_version.is_none_or(|a| a < version) {
            self.acked_version = Some(version);
        }
        if self.nack_version.is_some_and(|n| n <= version) {
            self.nack = None;
            self.nack_version = None;
        }
        self.pending.retain(|(v, _)| *v > version);
    }

    pub fn nacked(&mut self, version: u64, error: String, at: u64) {
        self.nack_version = Some(version);
        self.nack = Some(NackInfo {
            version: version.to_string(),
            error,
            at,
        });
    }

    pub fn to_status(&self, type_name: &str) -> TypeStatus {
        TypeStatus {
            type_name: type_name.to_string(),
            state: self.state(),
            sent_version: self.sent_version.map(|v| v.to_string()),
            acked_version: self.acked_version.map(|v| v.to_string()),
            nack: self.nack.clone(),
            resources: self.resources,
            pushes: self.pushes,
            pending: self
                .pending
                .iter()
                .flat_map(|(_, c)| c.iter().cloned())
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states() {
        let mut t = TypeTrack::default();
        assert_eq!(t.state(), SyncState::NotSent);
        t.sent(1, 3, vec![]);
        assert_eq!(t.state(), SyncState::Stale);
        t.acked(1);
        assert_eq!(t.state(), SyncState::Synced);
        t.sent(2, 3, vec![]);
        t.nacked(2, "bad".into(), 0);
        assert_eq!(t.state(), SyncState::Nacked);
        assert_eq!(t.pending.len(), 1);
        t.sent(3, 3, vec![]);
        assert_eq!(t.state(), SyncState::Stale);
        t.acked(3);
        assert_eq!(t.state(), SyncState::Synced);
        assert!(t.nack.is_none() && t.pending.is_empty());
    }
}
