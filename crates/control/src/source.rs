//! Config sources: files, directories and kustomize overlays read with `trellis_api::load`,
//! the mesh config, and the verdict of validation + analysis on what was read.
//!
//! Owns deciding whether a load may replace the snapshot in force: load/schema errors
//! (IST0106) always reject; analyzer messages of level Error reject when they are new, i.e.
//! not already reported for the snapshot in force (so a mesh that starts with a known Error —
//! a credential Secret cert-manager has not created yet — can still take unrelated edits).
//!
//! Loads are incremental: a file whose bytes are unchanged since the last accepted load is
//! not parsed again (its resources come from the `ReadCache`, already in wire form), so a
//! change to one file of a large mesh costs reading and hashing the files, parsing that one,
//! and analysis. Kustomize overlays are rendered on every load. Resources taken from the
//! cache are analyzed without field locations: a message about them points at the document
//! (`file:line`), not at the field.
//!
//! Does not watch (see `watch`) or build snapshots (see `snapshot`).

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use trellis_analyze::{Level, Message};
use trellis_api::load::{map_in_parallel, Input, LoadOptions, ResourceSet};
use trellis_api::{Diagnostic, MeshConfig, Resource, Unrecognized};

use crate::snapshot::ReadResource;

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
    /// Deduplicated (the last definition of a kind/namespace/name wins, as `kubectl apply`),
    /// in load order.
    pub resources: Vec<Arc<ReadResource>>,
    pub mesh: MeshConfig,
    /// Every analysis message (schema problems as IST0106 included).
    pub messages: Vec<Message>,
    /// A mesh config that could not be read (rejects the load).
    pub mesh_error: Option<String>,
    pub files: Vec<PathBuf>,
    /// What every plain file held: the read cache once this load is accepted.
    read: HashMap<PathBuf, Arc<FileContents>>,
    /// The load options the files were parsed with (see `ReadCache::options`).
    options: String,
    /// Files parsed by this load (not taken from the cache).
    pub parsed_files: usize,
}

/// What one file held, as a load reads it.
pub struct FileContents {
    /// Hash of the file's bytes.
    bytes_hash: u64,
    resources: Vec<Arc<ReadResource>>,
    unrecognized: Vec<Unrecognized>,
    diagnostics: Vec<Diagnostic>,
    files: Vec<PathBuf>,
}

/// The files of the last accepted load, by path: a file whose bytes have not changed is not
/// parsed again.
#[derive(Default)]
pub struct ReadCache {
    files: HashMap<PathBuf, Arc<FileContents>>,
    /// The default namespace and root namespace the files were parsed and validated with: a
    /// change of either (the mesh config file) parses everything again.
    options: String,
}

impl ReadCache {
    /// Keeps what an accepted load read (and forgets files it no longer reads).
    pub fn commit(&mut self, loaded: &mut Loaded) {
        self.files = std::mem::take(&mut loaded.read);
        self.options = loaded.options.clone();
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
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

/// Reads every source (blocking I/O: call from a blocking thread), without a cache.
pub fn load(sources: &Sources) -> Loaded {
    load_with(sources, &ReadCache::default())
}

/// One input of a load: read again, or unchanged since the cached read.
enum InputRead {
    Parsed {
        /// What was read; its resources moved to `fresh`.
        set: ResourceSet,
        /// Its resources, with field locations until analysis is done.
        fresh: Vec<ReadResource>,
        /// Plain files: the path and the hash of the bytes parsed.
        file: Option<(PathBuf, u64)>,
    },
    Cached(PathBuf, Arc<FileContents>),
}

/// Reads every source, parsing only the files that changed since `cache` was committed
/// (blocking I/O: call from a blocking thread).
pub fn load_with(sources: &Sources, cache: &ReadCache) -> Loaded {
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
    let options = format!("{}|{}", opts.default_namespace, opts.mesh.root_namespace);
    let empty = ReadCache::default();
    let cache = if cache.options == options {
        cache
    } else {
        &empty
    };
    // Listing problems (a directory that cannot be read).
    let mut listing = ResourceSet::default();
    let mut inputs = Vec::new();
    for p in &sources.inputs {
        listing.list_inputs(p, &mut inputs);
    }
    inputs.extend(sources.kustomize.iter().cloned().map(Input::Kustomization));
    let reads = map_in_parallel(&inputs, |input| read_input(input, cache, &opts));

    let messages = {
        let mut all: Vec<&Resource> = Vec::new();
        let mut unrecognized: Vec<&Unrecognized> = Vec::new();
        let mut diagnostics: Vec<&Diagnostic> = listing.diagnostics.iter().collect();
        for r in &reads {
            match r {
                InputRead::Parsed { set, fresh, .. } => {
                    all.extend(fresh.iter().map(|f| &f.resource));
                    unrecognized.extend(&set.unrecognized);
                    diagnostics.extend(&set.diagnostics);
                }
                InputRead::Cached(_, c) => {
                    all.extend(c.resources.iter().map(|f| &f.resource));
                    unrecognized.extend(&c.unrecognized);
                    diagnostics.extend(&c.diagnostics);
                }
            }
        }
        if sources.mesh_config.is_none() {
            match MeshConfig::from_resources(all.iter().copied(), &mesh.root_namespace) {
                None => {}
                Some(Ok(m)) => mesh = m,
                Some(Err(d)) => mesh_error = Some(format!("invalid mesh config: {d}")),
            }
        }
        trellis_analyze::analyze_parts(&all, unrecognized, diagnostics, &mesh)
    };

    let mut resources = Vec::new();
    let mut files = listing.files;
    let mut read = HashMap::new();
    let mut parsed_files = 0;
    for r in reads {
        match r {
            InputRead::Parsed { set, fresh, file } => {
                parsed_files += 1;
                let contents = FileContents {
                    bytes_hash: file.as_ref().map(|(_, h)| *h).unwrap_or(0),
                    resources: fresh.into_iter().map(|f| Arc::new(f.slim())).collect(),
                    unrecognized: set.unrecognized,
                    diagnostics: set.diagnostics,
                    files: set.files,
                };
                resources.extend(contents.resources.iter().cloned());
                files.extend(contents.files.iter().cloned());
                if let Some((path, _)) = file {
                    read.insert(path, Arc::new(contents));
                }
            }
            InputRead::Cached(path, c) => {
                resources.extend(c.resources.iter().cloned());
                files.extend(c.files.iter().cloned());
                read.insert(path, c);
            }
        }
    }
    Loaded {
        resources: dedupe_last_wins(resources),
        mesh,
        messages,
        mesh_error,
        files,
        read,
        options,
        parsed_files,
    }
}

/// Reads one input: a plain file is hashed and taken from the cache when its bytes are those
/// of the cached read.
fn read_input(input: &Input, cache: &ReadCache, opts: &LoadOptions) -> InputRead {
    let parsed = |mut set: ResourceSet, file| {
        let fresh = std::mem::take(&mut set.resources)
            .into_iter()
            .map(ReadResource::new)
            .collect();
        InputRead::Parsed { set, fresh, file }
    };
    let mut set = ResourceSet::default();
    let Input::File(path) = input else {
        set.add_input(input, opts);
        return parsed(set, None);
    };
    match std::fs::read(path) {
        Ok(bytes) => {
            let mut h = DefaultHasher::new();
            bytes.hash(&mut h);
            let bytes_hash = h.finish();
            if let Some(c) = cache.files.get(path).filter(|c| c.bytes_hash == bytes_hash) {
                return InputRead::Cached(path.clone(), c.clone());
            }
            set.add_file_contents(path, bytes, opts);
            parsed(set, Some((path.clone(), bytes_hash)))
        }
        Err(e) => {
            set.io_error(path, &e);
            parsed(set, None)
        }
    }
}

fn dedupe_last_wins(resources: Vec<Arc<ReadResource>>) -> Vec<Arc<ReadResource>> {
    let mut last = HashMap::with_capacity(resources.len());
    for (i, r) in resources.iter().enumerate() {
        last.insert(r.id.as_str(), i);
    }
    if last.len() == resources.len() {
        return resources;
    }
    let keep: Vec<bool> = resources
        .iter()
        .enumerate()
        .map(|(i, r)| last[r.id.as_str()] == i)
        .collect();
    resources
        .into_iter()
        .zip(keep)
        .filter_map(|(r, k)| k.then_some(r))
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

#[cfg(test)]
mod tests {
    use super::*;

    const SERVICE: &str = "apiVersion: v1
kind: Service
metadata: {name: quotes, namespace: trading}
spec:
  selector: {app: quotes}
  ports: [{name: http, port: 8080}]
";
    const ROUTE: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: quotes, namespace: trading}
spec:
  hosts: [quotes]
  http:
  - timeout: 5s
    route:
    - destination: {host: quotes, subset: v1}
";
    const SUBSETS: &str = "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: quotes, namespace: trading}
spec:
  host: quotes
  subsets:
  - {name: v1, labels: {version: v1}}
";
    const WORKLOAD: &str = "apiVersion: v1
kind: Pod
metadata: {name: quotes-1, namespace: trading, labels: {app: quotes, version: v1}}
spec:
  containers: [{name: quotes, image: quotes, ports: [{containerPort: 8080}]}]
";
    const NO_SUBSETS: &str = "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: quotes, namespace: trading}
spec:
  host: quotes
";
    /// A ServiceEntry without addresses whose control plane allocated one (`status`):
    /// analysis must still see the status once the file is cached.
    const EXTERNAL: &str = "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: redis, namespace: trading}
spec:
  hosts: [redis.example.com]
  ports: [{number: 6379, name: tcp, protocol: TCP}]
  resolution: DNS
status:
  addresses: [{value: 240.240.0.1}]
";

    fn sources(dir: &std::path::Path) -> Sources {
        Sources {
            inputs: vec![dir.to_path_buf()],
            ..Sources::default()
        }
    }

    /// Code, resource and text of every message (locations differ by design: cached
    /// resources are located at their document).
    fn verdicts(l: &Loaded) -> Vec<String> {
        let mut v: Vec<String> = l.messages.iter().map(error_signature).collect();
        v.sort();
        v
    }

    fn contents(l: &Loaded) -> Vec<(String, u64, String, u32)> {
        l.resources
            .iter()
            .map(|r| (r.id.clone(), r.hash, r.wire.file.clone(), r.wire.line))
            .collect()
    }

    #[test]
    fn only_changed_files_are_parsed_and_the_result_equals_a_full_load() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a-service.yaml"), SERVICE).unwrap();
        std::fs::write(d.path().join("b-route.yaml"), ROUTE).unwrap();
        std::fs::write(d.path().join("c-subsets.yaml"), SUBSETS).unwrap();
        std::fs::write(d.path().join("d-external.yaml"), EXTERNAL).unwrap();
        let mut cache = ReadCache::default();

        let mut first = load_with(&sources(d.path()), &cache);
        assert_eq!(first.parsed_files, 4);
        assert!(first.verdict(None, 0).is_ok(), "{:?}", verdicts(&first));
        cache.commit(&mut first);
        assert_eq!(cache.len(), 4);

        let again = load_with(&sources(d.path()), &cache);
        assert_eq!(again.parsed_files, 0, "nothing changed: nothing parsed");
        for (a, b) in again.resources.iter().zip(&first.resources) {
            assert!(Arc::ptr_eq(a, b), "{} is shared, not re-read", a.id);
        }
        assert_eq!(verdicts(&again), verdicts(&first));

        // Same length, different bytes: the weight-edit case a size/mtime check can miss.
        std::fs::write(
            d.path().join("b-route.yaml"),
            ROUTE.replace("timeout: 5s", "timeout: 7s"),
        )
        .unwrap();
        let edited = load_with(&sources(d.path()), &cache);
        assert_eq!(edited.parsed_files, 1);
        let full = load(&sources(d.path()));
        assert_eq!(contents(&edited), contents(&full));
        assert_ne!(contents(&edited), contents(&first), "the edit is seen");
        assert_eq!(verdicts(&edited), verdicts(&full));
        assert!(
            !verdicts(&edited).iter().any(|m| m.starts_with("IST0134")),
            "the cached ServiceEntry's status still counts: {:?}",
            verdicts(&edited)
        );
    }

    #[test]
    fn an_edit_is_analyzed_against_the_cached_files_and_a_rejected_load_is_not_kept() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a-service.yaml"), SERVICE).unwrap();
        std::fs::write(d.path().join("b-route.yaml"), ROUTE).unwrap();
        std::fs::write(d.path().join("c-subsets.yaml"), SUBSETS).unwrap();
        std::fs::write(d.path().join("d-workload.yaml"), WORKLOAD).unwrap();
        let mut cache = ReadCache::default();
        let mut first = load_with(&sources(d.path()), &cache);
        let baseline = first.error_signatures();
        assert!(baseline.is_empty(), "{baseline:?}");
        cache.commit(&mut first);

        // Removing the subset breaks the VirtualService, a file that did not change.
        std::fs::write(d.path().join("c-subsets.yaml"), NO_SUBSETS).unwrap();
        let broken = load_with(&sources(d.path()), &cache);
        assert_eq!(broken.parsed_files, 1);
        let err = broken.verdict(Some(&baseline), 1).unwrap_err();
        let m = err
            .messages
            .iter()
            .find(|m| m.code == "IST0101")
            .unwrap_or_else(|| panic!("{err}"));
        assert_eq!(m.resource, "VirtualService trading/quotes");
        assert!(
            m.reference.contains("b-route.yaml:1"),
            "located at the cached document: {}",
            m.reference
        );

        // Not committed: the next load reads the broken file again, then the fixed one.
        let again = load_with(&sources(d.path()), &cache);
        assert_eq!(again.parsed_files, 1);
        std::fs::write(d.path().join("c-subsets.yaml"), SUBSETS).unwrap();
        let fixed = load_with(&sources(d.path()), &cache);
        assert_eq!(fixed.parsed_files, 0, "back to the committed bytes");
        assert!(fixed.verdict(Some(&baseline), 1).is_ok());
    }

    #[test]
    fn removed_files_leave_the_cache_and_their_resources_go() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a-service.yaml"), SERVICE).unwrap();
        std::fs::write(d.path().join("c-subsets.yaml"), SUBSETS).unwrap();
        let mut cache = ReadCache::default();
        let mut first = load_with(&sources(d.path()), &cache);
        cache.commit(&mut first);
        std::fs::remove_file(d.path().join("c-subsets.yaml")).unwrap();
        let mut second = load_with(&sources(d.path()), &cache);
        assert_eq!(second.parsed_files, 0);
        let ids: Vec<&str> = second.resources.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["Service/trading/quotes"]);
        cache.commit(&mut second);
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn a_different_root_namespace_parses_everything_again() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a-service.yaml"), SERVICE).unwrap();
        let mesh = d.path().join("mesh.yaml");
        std::fs::write(&mesh, "rootNamespace: istio-system\n").unwrap();
        let mut s = Sources {
            inputs: vec![d.path().join("a-service.yaml")],
            mesh_config: Some(mesh.clone()),
            ..Sources::default()
        };
        let mut cache = ReadCache::default();
        let mut first = load_with(&s, &cache);
        cache.commit(&mut first);
        assert_eq!(load_with(&s, &cache).parsed_files, 0);
        std::fs::write(&mesh, "rootNamespace: mesh-root\n").unwrap();
        assert_eq!(load_with(&s, &cache).parsed_files, 1);
        s.default_namespace = "other".into();
        std::fs::write(&mesh, "rootNamespace: istio-system\n").unwrap();
        assert_eq!(load_with(&s, &cache).parsed_files, 1);
    }
}
