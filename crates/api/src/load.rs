//! Reading config from the outside world: files, directories (recursive), stdin (`-`) and
//! kustomize directories, into a `ResourceSet` of typed resources plus every problem found.
//!
//! Owns path walking and file decoding. A bad file or document is reported and skipped; the rest
//! still loads. Does not watch files (the control plane does) or analyze across resources.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::diag::{Diagnostic, Severity};
use crate::kustomize;
use crate::mesh::MeshConfig;
use crate::resource::{Parsed, Resource, Unrecognized};
use crate::source::Location;
use crate::yaml::{parse_documents, Document};

/// How to read config.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Namespace given to namespaced objects that name none (istioctl's `--namespace`).
    pub default_namespace: String,
    /// Mesh settings (root namespace for validation rules).
    pub mesh: MeshConfig,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            default_namespace: "default".to_string(),
            mesh: MeshConfig::default(),
        }
    }
}

/// Everything read from a set of inputs.
#[derive(Debug, Default)]
pub struct ResourceSet {
    pub resources: Vec<Resource>,
    /// Objects of kinds Trellis does not model: kept, reported as skipped.
    pub unrecognized: Vec<Unrecognized>,
    /// Load and schema problems, each located.
    pub diagnostics: Vec<Diagnostic>,
    /// Files read, in order.
    pub files: Vec<PathBuf>,
}

impl ResourceSet {
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }

    /// Adds documents read from one source.
    pub fn add_documents(&mut self, docs: &[Document], opts: &LoadOptions) {
        for doc in docs {
            if let Some(items) = list_items(doc) {
                self.add_documents(&items, opts);
                continue;
            }
            match Resource::from_document(doc, &opts.default_namespace) {
                Ok(Parsed::Resource(r)) => {
                    self.diagnostics
                        .extend(r.validate(&opts.mesh.root_namespace));
                    self.resources.push(*r);
                }
                Ok(Parsed::Unrecognized(u)) => self.unrecognized.push(*u),
                Err(diags) => self.diagnostics.extend(diags),
            }
        }
    }

    /// Adds a YAML/JSON text (one file's contents).
    pub fn add_text(&mut self, file: &str, text: &str, opts: &LoadOptions) {
        match parse_documents(file, text) {
            Ok(docs) => self.add_documents(&docs, opts),
            Err(e) => self.diagnostics.push(Diagnostic {
                severity: Severity::Error,
                location: Some(e.location),
                resource: None,
                field: String::new(),
                message: e.message,
            }),
        }
    }

    /// Reads one path: `-` (stdin), a file, a kustomize directory, or a directory (recursive;
    /// subdirectories holding a kustomization are rendered as kustomize).
    pub fn add_path(&mut self, path: &Path, opts: &LoadOptions) {
        let mut inputs = Vec::new();
        self.list_inputs(path, &mut inputs);
        let inputs: Vec<&Input> = inputs.iter().collect();
        for part in read_inputs(&inputs, opts) {
            self.extend(part);
        }
    }

    /// Renders a kustomize directory (`-k`) and adds its output.
    pub fn add_kustomization(&mut self, dir: &Path, opts: &LoadOptions) {
        self.files.push(dir.to_path_buf());
        match kustomize::render(dir) {
            Ok(docs) => self.add_documents(&docs, opts),
            Err(e) => self.diagnostics.push(e.into_diagnostic(dir)),
        }
    }

    /// Reads one input.
    pub fn add_input(&mut self, input: &Input, opts: &LoadOptions) {
        match input {
            Input::Stdin => {
                let mut text = String::new();
                match std::io::stdin().read_to_string(&mut text) {
                    Ok(_) => self.add_text("<stdin>", &text, opts),
                    Err(e) => self.io_error(Path::new("-"), &e),
                }
            }
            Input::File(p) => self.add_file(p, opts),
            Input::Kustomization(p) => self.add_kustomization(p, opts),
        }
    }

    /// Lists the inputs `path` stands for, in load order, as `add_path` reads them; a
    /// directory that cannot be read is reported here.
    pub fn list_inputs(&mut self, path: &Path, inputs: &mut Vec<Input>) {
        if path.as_os_str() == "-" {
            inputs.push(Input::Stdin);
        } else if path.is_dir() {
            if kustomize::is_kustomization_dir(path) {
                inputs.push(Input::Kustomization(path.to_path_buf()));
            } else {
                self.walk(path, inputs);
            }
        } else {
            inputs.push(Input::File(path.to_path_buf()));
        }
    }

    /// Lists config files and kustomization directories under `dir`, in path order.
    fn walk(&mut self, dir: &Path, items: &mut Vec<Input>) {
        let mut entries: Vec<PathBuf> = match std::fs::read_dir(dir) {
            Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
            Err(e) => return self.io_error(dir, &e),
        };
        entries.sort();
        for p in entries {
            let hidden = p
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'));
            if hidden {
                continue;
            }
            if p.is_dir() {
                if kustomize::is_kustomization_dir(&p) {
                    items.push(Input::Kustomization(p));
                } else {
                    self.walk(&p, items);
                }
            } else if is_config_file(&p) {
                items.push(Input::File(p));
            }
        }
    }

    /// Appends everything another set read.
    pub fn extend(&mut self, other: ResourceSet) {
        self.resources.extend(other.resources);
        self.unrecognized.extend(other.unrecognized);
        self.diagnostics.extend(other.diagnostics);
        self.files.extend(other.files);
    }

    fn add_file(&mut self, path: &Path, opts: &LoadOptions) {
        match std::fs::read(path) {
            Ok(bytes) => self.add_file_contents(path, bytes, opts),
            Err(e) => self.io_error(path, &e),
        }
    }

    /// Adds a file whose bytes the caller read (a reader that caches by content).
    pub fn add_file_contents(&mut self, path: &Path, bytes: Vec<u8>, opts: &LoadOptions) {
        self.files.push(path.to_path_buf());
        let name = path.display().to_string();
        match String::from_utf8(bytes) {
            Ok(text) => self.add_text(&name, &text, opts),
            Err(e) => self.diagnostics.push(
                Diagnostic::error(format!(
                    "file is not UTF-8 text (invalid byte at offset {})",
                    e.utf8_error().valid_up_to()
                ))
                .at(Location::new(name, 1, 1)),
            ),
        }
    }

    /// Reports a path that could not be read.
    pub fn io_error(&mut self, path: &Path, e: &std::io::Error) {
        self.diagnostics.push(
            Diagnostic::error(format!("cannot read: {e}")).at(Location::new(
                path.display().to_string(),
                1,
                1,
            )),
        );
    }
}

/// The items of a `v1 List` (`kind: List`, or `*List` with `items`, as kubectl accepts), each
/// as a document located where it is listed; `None` for any other document.
fn list_items(doc: &Document) -> Option<Vec<Document>> {
    let map = doc.value.as_object()?;
    let kind = map.get("kind")?.as_str()?;
    let items = map.get("items")?.as_array()?;
    if !kind.ends_with("List") || map.get("apiVersion").and_then(|v| v.as_str()) != Some("v1") {
        return None;
    }
    Some(
        items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let p = format!("/items/{i}");
                Document {
                    value: item.clone(),
                    spans: std::sync::Arc::new(kustomize::respan(&doc.spans, &p, item)),
                    location: doc.spans.locate(&p).unwrap_or_else(|| doc.location.clone()),
                }
            })
            .collect(),
    )
}

/// One config input, as `ResourceSet::list_inputs` finds them.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Input {
    /// `-`.
    Stdin,
    /// A YAML or JSON file.
    File(PathBuf),
    /// A directory holding a kustomization, rendered as a whole.
    Kustomization(PathBuf),
}

/// Reads inputs, one set per input in the same order. Several are parsed in parallel (one
/// contiguous chunk per core), so the result is deterministic.
pub fn read_inputs(inputs: &[&Input], opts: &LoadOptions) -> Vec<ResourceSet> {
    map_in_parallel(inputs, |input| {
        let mut part = ResourceSet::default();
        part.add_input(input, opts);
        part
    })
}

/// `items.iter().map(f).collect()`, on one thread per core, each taking a contiguous chunk:
/// results come back in item order.
pub fn map_in_parallel<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(items.len().max(1));
    if threads <= 1 {
        return items.iter().map(f).collect();
    }
    let chunk = items.len().div_ceil(threads);
    let f = &f;
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|c| scope.spawn(move || c.iter().map(f).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| match h.join() {
                Ok(v) => v,
                Err(panic) => std::panic::resume_unwind(panic),
            })
            .collect()
    })
}

/// `.yaml`, `.yml` and `.json` files are config.
pub fn is_config_file(p: &Path) -> bool {
    matches!(
        p.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

/// Reads every path in order.
pub fn load_paths(paths: &[PathBuf], opts: &LoadOptions) -> ResourceSet {
    let mut set = ResourceSet::default();
    for p in paths {
        set.add_path(p, opts);
    }
    set
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_recursion_and_bad_file_isolation() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        std::fs::write(
            d.path().join("a.yaml"),
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: b}\n",
        )
        .unwrap();
        std::fs::write(d.path().join("sub/bad.yaml"), "a: [1\n").unwrap();
        std::fs::write(
            d.path().join("sub/c.json"),
            r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"c"}}"#,
        )
        .unwrap();
        std::fs::write(d.path().join("notes.txt"), "ignored").unwrap();
        let set = load_paths(&[d.path().to_path_buf()], &LoadOptions::default());
        let names: Vec<_> = set.resources.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(set.diagnostics.len(), 1);
        let loc = set.diagnostics[0].location.as_ref().unwrap();
        assert!(loc.file.ends_with("sub/bad.yaml"), "{loc}");
    }

    #[test]
    fn v1_list_items_are_resources() {
        let mut set = ResourceSet::default();
        set.add_text(
            "l.yaml",
            "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Namespace\n  metadata: {name: a}\n- apiVersion: v1\n  kind: Namespace\n  metadata: {name: b}\n",
            &LoadOptions::default(),
        );
        let names: Vec<_> = set.resources.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(set.resources[1].origin.location.line, 7);
        assert!(set.unrecognized.is_empty() && set.diagnostics.is_empty());
    }

    #[test]
    fn missing_file_is_an_error_not_a_panic() {
        let set = load_paths(
            &[PathBuf::from("/nonexistent/x.yaml")],
            &LoadOptions::default(),
        );
        assert!(set.has_errors());
    }
}
