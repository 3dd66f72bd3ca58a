//! PeerAuthentication: the mutual TLS mode a workload accepts, per port. Pure.
//!
//! Istio's precedence, from the narrowest scope to the widest:
//!
//! 1. **workload**: a policy with `selector.matchLabels` matching the workload, in the
//!    workload's own namespace (selector policies in the root namespace are ignored, as in
//!    Istio: only the root namespace's *selector-less* policy applies mesh-wide);
//! 2. **namespace**: a policy without selector (or with empty `matchLabels`) in the workload's
//!    namespace;
//! 3. **mesh**: a policy without selector in the root namespace.
//!
//! Several candidates at one level: the oldest `creationTimestamp` wins, then the name (Istio
//! keeps the first of its creation-ordered list). `mtls.mode: UNSET` (or no `mtls`) inherits
//! from the next wider level; nothing set anywhere means `PERMISSIVE`. `portLevelMtls` is read
//! from the workload-level policy only, keyed by the workload's target (container) port; an
//! `UNSET` port inherits the workload's mode.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;
use trellis_api::resource::{Object, Resource};
use trellis_api::security::{MtlsMode, PeerAuthentication};

use crate::authz::{creation_order, PolicyId};

/// Where an effective mode came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum ModeSource {
    /// Nothing sets a mode: `PERMISSIVE`.
    Default,
    Mesh(PolicyId),
    Namespace(PolicyId),
    Workload(PolicyId),
    /// The workload policy's `portLevelMtls` entry for this port.
    Port(PolicyId, u32),
}

impl fmt::Display for ModeSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModeSource::Default => f.write_str("default (no PeerAuthentication sets a mode)"),
            ModeSource::Mesh(p) => write!(f, "mesh-wide PeerAuthentication {p}"),
            ModeSource::Namespace(p) => write!(f, "namespace PeerAuthentication {p}"),
            ModeSource::Workload(p) => write!(f, "workload PeerAuthentication {p}"),
            ModeSource::Port(p, port) => {
                write!(f, "workload PeerAuthentication {p} portLevelMtls {port}")
            }
        }
    }
}

/// The resolved PeerAuthentication of one workload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EffectivePeerAuthn {
    /// The workload-level mode (never `UNSET`).
    pub mode: MtlsMode,
    pub mode_source: ModeSource,
    /// Port-level overrides set explicitly (never `UNSET`), by target port.
    pub port_modes: BTreeMap<u32, MtlsMode>,
    /// The policy chosen at each level, if any (for explain).
    pub mesh_policy: Option<PolicyId>,
    pub namespace_policy: Option<PolicyId>,
    pub workload_policy: Option<PolicyId>,
}

impl Default for EffectivePeerAuthn {
    fn default() -> Self {
        EffectivePeerAuthn {
            mode: MtlsMode::Permissive,
            mode_source: ModeSource::Default,
            port_modes: BTreeMap::new(),
            mesh_policy: None,
            namespace_policy: None,
            workload_policy: None,
        }
    }
}

impl EffectivePeerAuthn {
    /// The mode on `port` (the workload's target port).
    pub fn mode_for_port(&self, port: u32) -> MtlsMode {
        self.port_modes.get(&port).copied().unwrap_or(self.mode)
    }

    /// Which policy decided the mode on `port`.
    pub fn source_for_port(&self, port: u32) -> ModeSource {
        match (&self.workload_policy, self.port_modes.contains_key(&port)) {
            (Some(p), true) => ModeSource::Port(p.clone(), port),
            _ => self.mode_source.clone(),
        }
    }

    /// True when `port` accepts only mutual TLS.
    pub fn is_strict(&self, port: u32) -> bool {
        self.mode_for_port(port) == MtlsMode::Strict
    }
}

/// Entry point: `PeerAuthnPolicy::resolve`.
pub struct PeerAuthnPolicy;

impl PeerAuthnPolicy {
    /// The effective PeerAuthentication of a workload in `namespace` with `labels`.
    pub fn resolve(
        resources: &[Resource],
        namespace: &str,
        labels: &BTreeMap<String, String>,
        root_namespace: &str,
    ) -> EffectivePeerAuthn {
        let mut mesh: Option<(&Resource, &PeerAuthentication)> = None;
        let mut ns_level: Option<(&Resource, &PeerAuthentication)> = None;
        let mut workload: Option<(&Resource, &PeerAuthentication)> = None;
        let older = |cand: &Resource, cur: &Option<(&Resource, &PeerAuthentication)>| {
            cur.is_none_or(|(c, _)| creation_order(cand) < creation_order(c))
        };
        for r in resources {
            let Object::PeerAuthentication(spec) = &r.object else {
                continue;
            };
            let ns = r.ns();
            let selector_labels = spec
                .selector
                .as_ref()
                .filter(|s| !s.match_labels.is_empty());
            let slot = match selector_labels {
                None if ns == root_namespace => &mut mesh,
                None if ns == namespace => &mut ns_level,
                None => continue,
                // Workload policies apply from the workload's namespace only; in the root
                // namespace they are ignored (even for workloads in the root namespace).
                Some(s) if ns == namespace && ns != root_namespace && s.matches(labels) => {
                    &mut workload
                }
                Some(_) => continue,
            };
            if older(r, slot) {
                *slot = Some((r, &**spec));
            }
        }

        let mut out = EffectivePeerAuthn::default();
        for (level, chosen) in [(0, mesh), (1, ns_level), (2, workload)] {
            let Some((r, spec)) = chosen else { continue };
            let id = PolicyId::of(r);
            match level {
                0 => out.mesh_policy = Some(id.clone()),
                1 => out.namespace_policy = Some(id.clone()),
                _ => out.workload_policy = Some(id.clone()),
            }
            if let Some(mode) = spec.mode() {
                out.mode = mode;
                out.mode_source = match level {
                    0 => ModeSource::Mesh(id),
                    1 => ModeSource::Namespace(id),
                    _ => ModeSource::Workload(id),
                };
            }
        }
        if let Some((_, spec)) = workload {
            // An UNSET port inherits the workload's mode: nothing to record.
            for (port, mtls) in &spec.port_level_mtls {
                if let Some(mode) = mtls.explicit_mode() {
                    out.port_modes.insert(*port, mode);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_permissive() {
        let e = PeerAuthnPolicy::resolve(&[], "foo", &BTreeMap::new(), "istio-system");
        assert_eq!(e.mode, MtlsMode::Permissive);
        assert_eq!(e.mode_for_port(8080), MtlsMode::Permissive);
        assert_eq!(e.source_for_port(8080), ModeSource::Default);
    }
}
