//! Config sources: files, directories and kustomize overlays read with `trellis_api::load`,
//! the mesh config, and the verdict of validation + analysis on what was read.
//!
//! Owns deciding whether a load may replace the snapshot in force: load/schema errors
//! (IST0106) always reject; analyzer messages of level Error reject when they are new, i.e.
//! not already reported for the snapshot in force (so a mesh that starts with a known Error —
//! a credential Secret cert-manager has not created yet — can still take unrelated edits).
//! Does not watch (see `watch`) or build snapshots (see `snapshot`).

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use trellis_analyze::{Level, Message};
use trellis_api::load::{LoadOptions, ResourceSet};
use trellis_api::{MeshConfig, Resource};

/// Where config is read from.
#[derive(Clone, Debug, Default)]
pub struct Sources {
    pub inputs: Vec<PathBuf>,
    pub kustomize: Vec<PathBuf>,
    pub mesh_config: Option<PathBuf>,
    pub default_namespace: String,
}

/// One read of the sources.
pub struct Loaded {
    /// Deduplicated (the last definition of a kind/namespace/name wins, as `kubectl apply`).
    pub resources: Vec<Resource>,
    pub mesh: MeshConfig,
    /// Every analysis message (schema problems as IST0106 included).
    pub messages: Vec<Message>,
    /// A mesh config that could not be read (rejects the load).
    pub mesh_error: Option<String>,
    pub files: Vec<PathBuf>,
}

/// A change that was not taken: every reason, located.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConfigError {
    /// Unix seconds.
    pub at: u64,
    /// Version of the snapshot that stays in force.
    pub serving_version: u64,
    pub messages: Vec<RejectedMessage>,
}

/// One reason a change was rejected.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RejectedMessage {
    /// `IST0106`, ...; empty for problems without an Istio code (the mesh config file).
    pub code: String,
    pub level: String,
    /// `VirtualService ns/name`.
    pub resource: String,
    /// `file:line` or `file:line:column`.
    pub reference: String,
    pub text: String,
}

impl std::fmt::Display for RejectedMessage {
    /// `Error [IST0106] (VirtualService ns/name file:12:3) text`, as `istioctl analyze`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.level)?;
        if !self.code.is_empty() {
            write!(f, " [{}]", self.code)?;
        }
        match (self.resource.is_empty(), self.reference.is_empty()) {
            (false, false) => write!(f, " ({} {})", self.resource, self.reference)?,
            (false, true) => write!(f, " ({})", self.resource)?,
            (true, false) => write!(f, " ({})", self.reference)?,
            (true, true) => {}
        }
        write!(f, " {}", self.text)
    }
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "config change rejected (version {} stays in force):",
            self.serving_version
        )?;
        for m in &self.messages {
            write!(f, "\n  {m}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl From<&Message> for RejectedMessage {
    fn from(m: &Message) -> Self {
        RejectedMessage {
            code: m.kind.code.to_string(),
            level: m.level.to_string(),
            resource: m
                .resource
                .as_ref()
                .map(|r| r.to_string())
                .unwrap_or_default(),
            reference: m.reference().unwrap_or_default(),
            text: m.text.clone(),
        }
    }
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Identity of an Error message across edits (locations move when lines are added).
pub(crate) fn error_signature(m: &Message) -> String {
    format!(
        "{}|{}|{}",
        m.kind.code,
        m.resource
            .as_ref()
            .map(|r| r.to_string())
            .unwrap_or_default(),
        m.text
    )
}

/// Reads every source (blocking I/O: call from a blocking thread).
pub fn load(sources: &Sources) -> Loaded {
    let mut mesh_error = None;
    let mut mesh = match &sources.mesh_config {
        Some(f) => match MeshConfig::from_file(f) {
            Ok(m) => m,
            Err(d) => {
                mesh_error = Some(format!("invalid mesh config: {d}"));
                MeshConfig::default()
            }
        },
        None => MeshConfig::default(),
    };
    let opts = LoadOptions {
        default_namespace: if sources.default_namespace.is_empty() {
            "default".into()
        } else {
            sources.default_namespace.clone()
        },
        mesh: mesh.clone(),
    };
    let mut set = ResourceSet::default();
    for p in &sources.inputs {
        set.add_path(p, &opts);
    }
    for k in &sources.kustomize {
        set.add_kustomization(k, &opts);
    }
    if sources.mesh_config.is_none() {
        match MeshConfig::from_resources(&set.resources, &mesh.root_namespace) {
            None => {}
            Some(Ok(m)) => mesh = m,
            Some(Err(d)) => mesh_error = Some(format!("invalid mesh config: {d}")),
        }
    }
    let messages = trellis_analyze::analyze(&set, &mesh);
    let ResourceSet {
        resources, files, ..
    } = set;
    Loaded {
        resources: dedupe_last_wins(resources),
        mesh,
        messages,
        mesh_error,
        files,
    }
}

fn dedupe_last_wins(resources: Vec<Resource>) -> Vec<Resource> {
    let mut last = HashMap::new();
    for (i, r) in resources.iter().enumerate() {
        last.insert((r.kind, r.ns().to_string(), r.name.clone()), i);
    }
    if last.len() == resources.len() {
        return resources;
    }
    resources
        .into_iter()
        .enumerate()
        .filter(|(i, r)| last[&(r.kind, r.ns().to_string(), r.name.clone())] == *i)
        .map(|(_, r)| r)
        .collect()
}

impl Loaded {
    /// Error-level messages.
    pub fn errors(&self) -> impl Iterator<Item = &Message> {
        self.messages.iter().filter(|m| m.level == Level::Error)
    }

    /// Signatures of every Error-level message (the baseline later loads are compared to).
    pub fn error_signatures(&self) -> BTreeSet<String> {
        self.errors().map(error_signature).collect()
    }

    /// Whether this load may replace a snapshot whose Error messages are `baseline` (`None`
    /// at start: only load and schema errors reject then).
    pub fn verdict(
        &self,
        baseline: Option<&BTreeSet<String>>,
        serving_version: u64,
    ) -> Result<(), ConfigError> {
        let schema = trellis_analyze::messages::SCHEMA_VALIDATION_ERROR.code;
        let mut rejected: Vec<RejectedMessage> = self
            .errors()
            .filter(|m| {
                m.kind.code == schema || baseline.is_some_and(|b| !b.contains(&error_signature(m)))
            })
            .map(RejectedMessage::from)
            .collect();
        if let Some(e) = &self.mesh_error {
            rejected.push(RejectedMessage {
                code: String::new(),
                level: "Error".into(),
                resource: "MeshConfig".into(),
                reference: String::new(),
                text: e.clone(),
            });
        }
        if rejected.is_empty() {
            Ok(())
        } else {
            Err(ConfigError {
                at: unix_now(),
                serving_version,
                messages: rejected,
            })
        }
    }
}
